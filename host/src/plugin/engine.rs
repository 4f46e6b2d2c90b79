//! The wasmtime engine every plugin shares, its epoch clock, and the compiled-component
//! cache.
//!
//! **Deadlines.** The engine uses epoch interruption. One background thread bumps the
//! epoch every [`TICK`], and at each tick a call compares the monotonic clock with its
//! deadline (`sandbox.rs`). Ticks only say when to look, never how much time passed, so
//! a tick that a busy host delays delays the stop by that much and no more; it never
//! stretches the deadline itself.
//!
//! **Cache.** Compiling a component with Cranelift takes tens of milliseconds;
//! deserializing a compiled one takes microseconds. Compiled components are kept in
//! `$VMGUEST_PLUGIN_CACHE`, else `$XDG_CACHE_HOME/vmguest/plugins`, else
//! `~/.cache/vmguest/plugins`. An entry's name is derived from the component's SHA-256
//! and a hash of the wasmtime version and engine configuration, so an upgrade or
//! configuration change never loads a stale entry. Each entry has a `.sha256` sidecar of
//! its own bytes, checked before wasmtime maps it. The check takes the entry's digest
//! from the digest cache (`iso/digest.rs`) while the entry's device, inode, size, mtime
//! and ctime are those it was hashed with, so a warm load reads two small files and maps
//! the entry; a changed entry is hashed again, and a corrupt or tampered one is
//! recompiled and rewritten, never trusted. A cache directory writable by others is not
//! used.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;

use crate::iso::digest;
use serde::Serialize;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

pub const TICK: Duration = Duration::from_millis(10);
/// The deepest wasm stack a plugin may use.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Whether the epoch thread runs. Without it no deadline would ever fire, so
/// `sandbox.rs` refuses to call plugins.
static CLOCK_RUNS: AtomicBool = AtomicBool::new(false);

pub fn clock_runs() -> bool {
    engine();
    CLOCK_RUNS.load(Ordering::SeqCst)
}

/// The process-wide engine; the epoch thread starts with it.
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(MAX_WASM_STACK);
        // The configuration is a constant of this build; every plugin test exercises it.
        let engine = Engine::new(&config).expect("a valid static wasmtime configuration");
        let ticker = engine.weak();
        let spawned = std::thread::Builder::new()
            .name("vmguest-plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            });
        match spawned {
            Ok(_) => CLOCK_RUNS.store(true, Ordering::SeqCst),
            Err(e) => tracing::error!("cannot start the plugin clock: {e}; plugins will not run"),
        }
        engine
    })
}

/// How a component was obtained, for `Get-Plugin` and the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheState {
    /// Loaded from the cache.
    Hit,
    /// Compiled, and stored in the cache.
    Compiled,
    /// The entry was corrupt: compiled again and rewritten.
    Recompiled,
    /// Compiled; no usable cache directory.
    Uncached,
}

/// The cache entry for a component: SHA-256 + wasmtime version and engine config.
pub fn cache_entry(dir: &Path, component_sha256: &str) -> PathBuf {
    // Hashing the engine's configuration costs more than the digest checks: once is enough.
    static ENGINE_HASH: OnceLock<u64> = OnceLock::new();
    let engine_hash = ENGINE_HASH.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine().precompile_compatibility_hash().hash(&mut h);
        // Admission checks run before an entry is kept (`plugin/mod.rs`); a new vmguest
        // checks again.
        env!("CARGO_PKG_VERSION").hash(&mut h);
        h.finish()
    });
    dir.join(format!("{component_sha256}-{engine_hash:016x}.cwasm"))
}

fn sidecar(entry: &Path) -> PathBuf {
    entry.with_extension("cwasm.sha256")
}

/// Drop a component's cache entry: it failed a check after it was compiled.
pub fn evict(cache: Option<&Path>, component_sha256: &str) {
    if let Some(dir) = cache {
        let entry = cache_entry(dir, component_sha256);
        let _ = std::fs::remove_file(sidecar(&entry));
        let _ = std::fs::remove_file(entry);
    }
}

/// Does the entry's SHA-256 match the sidecar written with it? The digest comes from the
/// digest cache while the entry's `fstat` key is unchanged, so a warm check reads no
/// more than two small files; a changed entry is hashed again.
fn verified(entry: &Path, cache: &Path) -> bool {
    let (Ok(file), Ok(want)) = (
        std::fs::File::open(entry),
        std::fs::read_to_string(sidecar(entry)),
    ) else {
        return false;
    };
    let digests = super::manifest::digests(cache);
    matches!(digest::sha256(&file, Some(&digests)), Ok((sha, _)) if sha == want.trim())
}

/// Load the compiled form of the component at `path` (whose SHA-256 the caller checked)
/// from the cache, mapping the file; or compile it and store it.
pub fn load(
    path: &Path,
    sha256: &str,
    cache: Option<&Path>,
) -> anyhow::Result<(Component, CacheState)> {
    let engine = engine();
    let bytes = || std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let dir = cache.and_then(digest::trusted);
    let Some(dir) = dir else {
        return Ok((Component::new(engine, bytes()?)?, CacheState::Uncached));
    };
    let entry = cache_entry(dir, sha256);
    let existed = entry.exists();
    if verified(&entry, dir) {
        // SAFETY: the file is the output of `precompile_component` by this engine
        // configuration (its name says so), and its SHA-256 matches the sidecar written
        // with it, so it is not truncated or altered since. The cache directory is
        // writable by its owner only (`digest::trusted`).
        match unsafe { Component::deserialize_file(engine, &entry) } {
            Ok(c) => return Ok((c, CacheState::Hit)),
            Err(e) => tracing::warn!("plugin cache entry {} unusable: {e:#}", entry.display()),
        }
    } else if existed {
        tracing::warn!(
            "plugin cache entry {} fails its checksum; recompiling",
            entry.display()
        );
    }
    let compiled = engine
        .precompile_component(&bytes()?)
        .map_err(anyhow::Error::from)
        .context("compiling the component")?;
    // SAFETY: just produced by this engine.
    let component = unsafe { Component::deserialize(engine, &compiled)? };
    if let Err(e) = store(&entry, &compiled) {
        tracing::warn!("cannot write plugin cache {}: {e:#}", entry.display());
    }
    let state = if existed {
        CacheState::Recompiled
    } else {
        CacheState::Compiled
    };
    Ok((component, state))
}

/// Write the entry and its checksum through temporary files and renames, so a reader
/// never sees half an entry.
fn store(entry: &Path, compiled: &[u8]) -> std::io::Result<()> {
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, compiled)?;
    std::fs::rename(&tmp, entry)?;
    let tmp_sum = tmp.with_extension("sum");
    std::fs::write(&tmp_sum, crate::iso::sha256_bytes(compiled))?;
    std::fs::rename(&tmp_sum, sidecar(entry))
}
