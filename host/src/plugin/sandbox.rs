//! One sandboxed call: a fresh `Store` from the plugin's `InstancePre`, WASI with nothing
//! granted but the manifest's directories, a memory cap, an epoch deadline, and the
//! plugin's stdout/stderr turned into `tracing` events tagged with its name.
//!
//! A Store never outlives its call, so a trapped instance can never be used again; the
//! plugin itself is marked poisoned for the rest of the process (`Loaded::poisoned`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Instance, InstancePre, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::engine::engine;
use super::limits::{
    INSTANCES, LOG_MESSAGE_BYTES, MAX_HANDLES, MEMORIES, OUTPUT_CAP, STDERR_TAIL_BYTES,
    STDERR_TAIL_LINES, TABLES, TABLE_ELEMENTS,
};
use super::manifest::Manifest;
use super::runtime;
use super::stdio::CappedOutput;

/// What a call does with the fresh instance: a future that borrows the Store.
pub type CallFuture<'a, R> =
    std::pin::Pin<Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// Per-call state inside the Store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    plugin: Arc<Manifest>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Memory and table caps that remember which one was hit, for the error message.
///
/// wasmtime asks the limiter about each linear memory and each table on its own, and a
/// component may have several of each (multi-memory, one core instance per module), so
/// each cap is on the total: every allowed growth adds `desired - current` to a running
/// sum. A growth past a memory's or table's own declared maximum is refused here (as
/// wasmtime would refuse it next) so that it is never counted; one that wasmtime then
/// fails for another reason stays counted, which only makes the cap stricter.
struct Limiter {
    memory: usize,
    hit: Option<LimitHit>,
    /// Bytes of all the Store's linear memories.
    memory_used: usize,
    /// Elements of all the Store's tables.
    table_used: usize,
}

impl Limiter {
    fn new(memory: usize) -> Limiter {
        Limiter {
            memory,
            hit: None,
            memory_used: 0,
            table_used: 0,
        }
    }
}

/// The total after one memory or table goes from `current` to `desired`: what the others
/// hold plus `desired`. `used` includes `current` whenever every growth went through the
/// limiter; the saturation only matters for one that did not.
fn total_after(used: usize, current: usize, desired: usize) -> usize {
    used.saturating_sub(current).saturating_add(desired)
}

/// "32 MiB", "1.06 MiB": whole MiB as such, others to two places, so that two different
/// sizes never print the same.
fn mib(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.2} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// A cap a call reached, told apart from any other trap.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitHit {
    #[error(
        "exceeded its memory limit of {} (asked for {}{})",
        mib(*limit),
        mib(*asked),
        if *all { ", all its memories together" } else { "" }
    )]
    Memory {
        limit: usize,
        asked: usize,
        /// The total is of several memories, not one.
        all: bool,
    },
    #[error("exceeded its table limit of {TABLE_ELEMENTS} elements")]
    Table,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = total_after(self.memory_used, current, desired);
        if total > self.memory {
            let hit = LimitHit::Memory {
                limit: self.memory,
                asked: total,
                all: total > desired,
            };
            self.hit = Some(hit.clone());
            // An error (not `Ok(false)`) traps: the plugin cannot catch it and go on.
            return Err(wasmtime::Error::msg(hit));
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let total = total_after(self.table_used, current, desired);
        if total > TABLE_ELEMENTS {
            self.hit = Some(LimitHit::Table);
            return Err(wasmtime::Error::msg(LimitHit::Table));
        }
        self.table_used = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        INSTANCES
    }
    fn tables(&self) -> usize {
        TABLES
    }
    fn memories(&self) -> usize {
        MEMORIES
    }
}

/// What the `host` import does, the same for every WIT version (`versions.rs` shims).
impl State {
    pub(crate) fn log(&self, level: tracing::Level, message: &str) {
        let plugin = self.plugin.name.as_str();
        let message = crate::vm::channel::truncate(message, LOG_MESSAGE_BYTES);
        match level {
            tracing::Level::TRACE => tracing::trace!(target: LOG_TARGET, plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(target: LOG_TARGET, plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(target: LOG_TARGET, plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: LOG_TARGET, plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(target: LOG_TARGET, plugin, "{message}"),
        }
    }

    pub(crate) fn setting(&self, key: &str) -> Option<String> {
        self.plugin.settings.get(key).cloned()
    }

    pub(crate) fn granted_dirs(&self) -> Vec<String> {
        self.plugin.grants().into_iter().map(|g| g.guest).collect()
    }
}

/// Why a call failed. Every variant becomes DISP_E_EXCEPTION naming the plugin.
///
/// As the other plugin errors, each Display is the whole sentence a user sees (it follows
/// the plugin's name); `source()` gives the typed cause to code that needs it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    #[error("{what} not run: the plugin clock could not start, so no deadline would hold")]
    NoClock { what: String },
    /// A plugin that failed once is not called again in this process.
    #[error("{what} not run: the plugin failed earlier in this process")]
    Poisoned { what: String },
    #[error("cannot open grant {}: {source:#}", path.display())]
    Grant {
        path: std::path::PathBuf,
        #[source]
        source: Arc<wasmtime::Error>,
    },
    /// The call ran and was stopped, or failed; the plugin is poisoned.
    #[error("{what} {stop}{}", stderr_said(stderr))]
    Stopped {
        what: String,
        #[source]
        stop: Stop,
        /// The last lines of its stderr (`last_lines`), if it wrote any.
        stderr: String,
    },
}

fn stderr_said(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its stderr ended with: {tail}")
    }
}

/// How a call that ran ended without an answer.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Stop {
    #[error("could not run: {0}")]
    Executor(#[source] Arc<runtime::RuntimeError>),
    /// Blocked in a host function past the deadline, and dropped by the timer.
    #[error(
        "did not return within its {timeout_ms} ms deadline (blocked outside WebAssembly, \
         for example sleeping in wasi:io/poll) and was stopped"
    )]
    Blocked { timeout_ms: u128 },
    /// Computing past the deadline, interrupted at an epoch tick.
    #[error("ran past its {timeout_ms} ms deadline and was stopped")]
    Deadline { timeout_ms: u128 },
    #[error("{0}")]
    Limit(#[source] LimitHit),
    #[error("exceeded its limit of {MAX_HANDLES} open handles (files, directories, streams)")]
    Handles,
    #[error("overflowed its stack")]
    StackOverflow,
    #[error("trapped (unreachable: a panic or abort in the plugin)")]
    Unreachable,
    #[error("trapped: {0}")]
    Trap(Trap),
    #[error("failed: {source:#}")]
    Failed {
        #[source]
        source: Arc<wasmtime::Error>,
    },
}

/// A loaded, admitted plugin, ready to be called.
pub struct Sandbox {
    pub manifest: Arc<Manifest>,
    pub pre: InstancePre<State>,
    pub poisoned: AtomicBool,
}

impl Sandbox {
    /// Instantiate in a fresh Store and run `f`, within the plugin's deadline and caps.
    ///
    /// The call runs on wasmtime's async path, on this thread. The deadline is an
    /// [`Instant`], so it holds however late the epoch ticks arrive on a busy host: the
    /// epoch callback stops computing WebAssembly at the first tick past it, and a call
    /// blocked in a host function (a sleep in `wasi:io/poll`) is a pending future that
    /// the timer drops at the deadline. Either way the Store, and every descriptor the
    /// plugin opened, is gone before the answer is used, and no thread is left behind.
    pub fn call<R, F>(&self, what: &str, f: F) -> Result<(R, Duration), CallError>
    where
        F: for<'a> FnOnce(&'a mut Store<State>, Instance) -> CallFuture<'a, R> + Send,
        R: Send,
    {
        if !super::engine::clock_runs() {
            return Err(CallError::NoClock { what: what.into() });
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(CallError::Poisoned { what: what.into() });
        }
        let started = Instant::now();
        let (stdout, stderr) = (CappedOutput::default(), CappedOutput::default());
        let wasi = self.wasi(stdout.clone(), stderr.clone())?;
        let limits = self.manifest.limits.clone();
        let timeout = Duration::from_millis(limits.timeout_ms());
        let deadline = started + timeout;
        let state = State {
            wasi,
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_HANDLES);
                table
            },
            limits: Limiter::new(limits.memory_bytes()),
            plugin: self.manifest.clone(),
        };
        let mut store = Store::new(engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        let pre = &self.pre;
        let answer = runtime::block_on(async {
            let run = async {
                let instance = pre.instantiate_async(&mut store).await?;
                f(&mut store, instance).await
            };
            tokio::time::timeout_at(deadline.into(), run).await
        });
        let limit_hit = store.data_mut().limits.hit.take();
        // Everything the call opened is closed before its answer is used.
        drop(store);
        self.forward_output(&stdout, &stderr);
        let elapsed = started.elapsed();
        let result = match answer {
            Err(why) => Err(Stop::Executor(Arc::new(why))),
            Ok(Err(_elapsed)) => Err(Stop::Blocked {
                timeout_ms: timeout.as_millis(),
            }),
            Ok(Ok(r)) => r.map_err(|e| explain(e, limit_hit, timeout)),
        };
        result.map(|r| (r, elapsed)).map_err(|stop| {
            self.poisoned.store(true, Ordering::SeqCst);
            CallError::Stopped {
                what: what.into(),
                stop,
                stderr: last_lines(&stderr.contents().0),
            }
        })
    }

    /// WASI with no environment, arguments, network or inherited stdio; only the grants.
    fn wasi(&self, stdout: CappedOutput, stderr: CappedOutput) -> Result<WasiCtx, CallError> {
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout)
            .stderr(stderr)
            // File calls stay on the runtime's blocking pool (the default), where the
            // deadline can cancel one that blocks (`runtime.rs`).
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for g in self.manifest.grants() {
            let perms = if g.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            b.preopened_dir(&g.host, &g.guest, perms)
                .map_err(|e| CallError::Grant {
                    path: g.host.clone(),
                    source: Arc::new(e),
                })?;
        }
        Ok(b.build())
    }

    fn forward_output(&self, stdout: &CappedOutput, stderr: &CappedOutput) {
        let plugin = self.manifest.name.as_str();
        for (stream, pipe) in [("stdout", stdout), ("stderr", stderr)] {
            let (bytes, dropped) = pipe.contents();
            for line in String::from_utf8_lossy(&bytes).lines() {
                tracing::info!(target: LOG_TARGET, plugin, stream, "{line}");
            }
            if dropped > 0 {
                tracing::warn!(
                    target: LOG_TARGET,
                    plugin,
                    stream,
                    "output truncated: {dropped} bytes past the {} KiB cap were dropped",
                    OUTPUT_CAP / 1024
                );
            }
        }
    }
}

/// The `tracing` target of what plugins say (`host.log`, stdout, stderr), so a filter
/// can show it alone: `Test-Plugin` shows it at INFO, `RUST_LOG=vmguest::plugin::log=info`
/// does for any cmdlet.
pub const LOG_TARGET: &str = "vmguest::plugin::log";

/// The last few non-empty lines of a failed call's stderr (a panic message, the end of a
/// Python traceback), at most 1 KiB, joined with " | " for one error record.
fn last_lines(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join(" | ");
    if tail.len() <= STDERR_TAIL_BYTES {
        return tail;
    }
    let start = (tail.len() - STDERR_TAIL_BYTES..)
        .find(|&i| tail.is_char_boundary(i))
        .unwrap_or(tail.len());
    format!("…{}", &tail[start..])
}

/// What stopped a failed call.
fn explain(e: wasmtime::Error, limit_hit: Option<LimitHit>, timeout: Duration) -> Stop {
    if let Some(limit) = limit_hit {
        return Stop::Limit(limit);
    }
    let full = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    });
    if full {
        return Stop::Handles;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Stop::Deadline {
            timeout_ms: timeout.as_millis(),
        },
        Some(Trap::StackOverflow) => Stop::StackOverflow,
        Some(Trap::UnreachableCodeReached) => Stop::Unreachable,
        Some(t) => Stop::Trap(*t),
        None => Stop::Failed {
            source: Arc::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failures_record_ends_with_the_last_stderr_lines() {
        let err = b"Traceback (most recent call last):\n  File \"app.py\", line 3\n\n    \
                    raise ValueError\nValueError: no mirror\n";
        assert_eq!(
            last_lines(err),
            "Traceback (most recent call last): | File \"app.py\", line 3 | raise ValueError \
             | ValueError: no mirror"
        );
        assert_eq!(last_lines(b"1\n2\n3\n4\n5\n6\n"), "3 | 4 | 5 | 6");
        let long = "é".repeat(2000);
        let cut = last_lines(long.as_bytes());
        assert!(
            cut.starts_with('…') && cut.len() <= 1024 + '…'.len_utf8(),
            "{}",
            cut.len()
        );
        assert_eq!(last_lines(b""), "");
    }

    /// The message names the cap and the request: "exceeded its memory limit of 1 MiB (asked for 1 MiB)".
    #[test]
    fn the_memory_message_gives_both_figures_exactly() {
        let mut limiter = Limiter::new(1 << 20);
        let err = limiter
            .memory_growing(1 << 20, (1 << 20) + (64 << 10), None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "exceeded its memory limit of 1 MiB (asked for 1.06 MiB)"
        );
        assert!(limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert_eq!(mib(32 << 20), "32 MiB");
    }

    /// A plugin with a 1 MiB cap and a component with two memories: 768 KiB in each is
    /// fine alone, and together they trap, through the Store setup every call uses.
    #[test]
    fn the_memory_cap_holds_for_all_memories_together() {
        let bytes = super::super::testing::two_memories(["grow-a", "grow-b"]);
        let component = wasmtime::component::Component::new(engine(), &bytes).unwrap();
        let linker = wasmtime::component::Linker::<State>::new(engine());
        let mut manifest = Manifest::for_component(
            "two-memories".into(),
            "1.0.0".into(),
            Default::default(),
            Default::default(),
            Default::default(),
        );
        manifest.limits.memory_mb = Some(1);
        let sandbox = Sandbox {
            manifest: Arc::new(manifest),
            pre: linker.instantiate_pre(&component).unwrap(),
            poisoned: AtomicBool::new(false),
        };
        // 12 pages of 64 KiB: 768 KiB. Each call grows the named memories in turn.
        fn grow(
            names: &'static [&'static str],
        ) -> impl for<'a> FnOnce(&'a mut Store<State>, Instance) -> CallFuture<'a, Vec<i32>> + Send
        {
            move |store, instance| {
                Box::pin(async move {
                    let mut old = Vec::new();
                    for name in names {
                        let f = instance.get_typed_func::<(u32,), (i32,)>(&mut *store, name)?;
                        old.push(f.call_async(&mut *store, (12,)).await?.0);
                    }
                    Ok(old)
                })
            }
        }
        for alone in [&["grow-a"][..], &["grow-b"][..]] {
            let (old, _) = sandbox.call("growing one memory", grow(alone)).unwrap();
            assert_eq!(old, [0], "{alone:?}");
        }
        let err = sandbox
            .call("growing both memories", grow(&["grow-a", "grow-b"]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "growing both memories exceeded its memory limit of 1 MiB \
             (asked for 1.50 MiB, all its memories together)"
        );
    }
}
