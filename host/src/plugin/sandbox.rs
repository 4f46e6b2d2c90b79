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
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::engine::{engine, TICK};
use super::manifest::Manifest;
use super::output::{CappedOutput, OUTPUT_CAP};

/// How long past its deadline a call blocked in the host may take before it is abandoned.
const BLOCKED_GRACE: Duration = Duration::from_millis(500);
/// Tables, instances and memories a plugin may create.
const TABLE_ELEMENTS: usize = 100_000;
const INSTANCES: usize = 64;
const TABLES: usize = 64;
const MEMORIES: usize = 16;
/// Open handles a plugin may hold at once: files, directories, streams, pollables. Each
/// open file is a descriptor in vmguest's own process, so this bounds what a plugin can
/// take from the host.
pub const MAX_HANDLES: usize = 256;

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
struct Limiter {
    memory: usize,
    hit: Option<String>,
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

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            let why = format!(
                "exceeded its memory limit of {} (asked for {})",
                mib(self.memory),
                mib(desired)
            );
            self.hit = Some(why.clone());
            // An error (not `Ok(false)`) traps: the plugin cannot catch it and go on.
            return Err(wasmtime::Error::msg(why));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > TABLE_ELEMENTS {
            let why = format!("exceeded its table limit of {TABLE_ELEMENTS} elements");
            self.hit = Some(why.clone());
            return Err(wasmtime::Error::msg(why));
        }
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
        let message = crate::vm::channel::truncate(message, 4096);
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
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
#[derive(Debug)]
pub struct CallFailure(pub String);

/// A loaded, admitted plugin, ready to be called.
pub struct Sandbox {
    pub manifest: Arc<Manifest>,
    pub pre: InstancePre<State>,
    pub poisoned: AtomicBool,
}

impl Sandbox {
    /// Instantiate in a fresh Store and run `f`, within the plugin's deadline and caps.
    ///
    /// The epoch deadline stops a plugin that computes too long, but not one blocked in
    /// the host, in `wasi:io/poll` (a sleep). So the call runs on its own thread, and a
    /// call that has not returned shortly after its deadline is abandoned: the plugin is
    /// poisoned and the thread is left asleep until the process ends.
    pub fn call<R: Send + 'static>(
        &self,
        what: &str,
        f: impl FnOnce(&mut Store<State>, &Instance) -> wasmtime::Result<R> + Send + 'static,
    ) -> Result<(R, Duration), CallFailure> {
        if !super::engine::clock_runs() {
            return Err(CallFailure(format!(
                "{what} not run: the plugin clock could not start, so no deadline would hold"
            )));
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(CallFailure(format!(
                "{what} not run: the plugin failed earlier in this process"
            )));
        }
        let started = Instant::now();
        let (stdout, stderr) = (CappedOutput::default(), CappedOutput::default());
        let wasi = self.wasi(stdout.clone(), stderr.clone())?;
        let limits = self.manifest.limits.clone();
        let timeout = Duration::from_millis(limits.timeout_ms());
        let state = State {
            wasi,
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_HANDLES);
                table
            },
            limits: Limiter {
                memory: limits.memory_bytes(),
                hit: None,
            },
            plugin: self.manifest.clone(),
        };
        let pre = self.pre.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = std::thread::Builder::new()
            .name(format!("plugin-{}", self.manifest.name))
            .spawn(move || {
                let mut store = Store::new(engine(), state);
                store.limiter(|s| &mut s.limits);
                let ticks = (timeout.as_millis() / TICK.as_millis()).max(1) as u64;
                store.set_epoch_deadline(ticks);
                store.epoch_deadline_trap();
                let result = pre
                    .instantiate(&mut store)
                    .and_then(|instance| f(&mut store, &instance));
                let limit_hit = store.data().limits.hit.clone();
                // Everything the call opened is closed before its answer is used.
                drop(store);
                let _ = tx.send(result.map_err(|e| explain(e, limit_hit, timeout)));
            });
        if let Err(e) = worker {
            return Err(CallFailure(format!("{what} could not start: {e}")));
        }
        let answer = rx.recv_timeout(timeout + BLOCKED_GRACE);
        self.forward_output(&stdout, &stderr);
        let elapsed = started.elapsed();
        let result = match answer {
            Ok(r) => r,
            Err(_) => Err(format!(
                "did not return within its {} ms deadline (blocked outside WebAssembly, \
                 for example sleeping in wasi:io/poll) and was abandoned",
                timeout.as_millis()
            )),
        };
        result.map(|r| (r, elapsed)).map_err(|why| {
            self.poisoned.store(true, Ordering::SeqCst);
            CallFailure(format!("{what} {why}"))
        })
    }

    /// WASI with no environment, arguments, network or inherited stdio; only the grants.
    fn wasi(&self, stdout: CappedOutput, stderr: CappedOutput) -> Result<WasiCtx, CallFailure> {
        let mut b = WasiCtxBuilder::new();
        b.stdout(stdout)
            .stderr(stderr)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for g in self.manifest.grants() {
            let perms = if g.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            b.preopened_dir(&g.host, &g.guest, perms).map_err(|e| {
                CallFailure(format!("cannot open grant {}: {e:#}", g.host.display()))
            })?;
        }
        Ok(b.build())
    }

    fn forward_output(&self, stdout: &CappedOutput, stderr: &CappedOutput) {
        let plugin = self.manifest.name.as_str();
        for (stream, pipe) in [("stdout", stdout), ("stderr", stderr)] {
            let (bytes, dropped) = pipe.contents();
            for line in String::from_utf8_lossy(&bytes).lines() {
                tracing::info!(plugin, stream, "{line}");
            }
            if dropped > 0 {
                tracing::warn!(
                    plugin,
                    stream,
                    "output truncated: {dropped} bytes past the {} KiB cap were dropped",
                    OUTPUT_CAP / 1024
                );
            }
        }
    }
}

/// Turn a failed call into a sentence naming what went wrong.
fn explain(e: wasmtime::Error, limit_hit: Option<String>, timeout: Duration) -> String {
    if let Some(limit) = limit_hit {
        return limit;
    }
    let full = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<wasmtime::component::ResourceTableError>(),
            Some(wasmtime::component::ResourceTableError::Full)
        )
    });
    if full {
        return format!(
            "exceeded its limit of {MAX_HANDLES} open handles (files, directories, streams)"
        );
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => format!(
            "ran past its {} ms deadline and was stopped",
            timeout.as_millis()
        ),
        Some(Trap::StackOverflow) => "overflowed its stack".to_owned(),
        Some(Trap::UnreachableCodeReached) => {
            "trapped (unreachable: a panic or abort in the plugin)".to_owned()
        }
        Some(t) => format!("trapped: {t}"),
        None => format!("failed: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: "exceeded its memory limit of 1 MiB (asked for 1 MiB)".
    #[test]
    fn the_memory_message_gives_both_figures_exactly() {
        let mut limiter = Limiter {
            memory: 1 << 20,
            hit: None,
        };
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
}
