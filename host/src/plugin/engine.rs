//! The wasmtime engine every plugin shares, its epoch clock, and the compiled-component
//! cache.
//!
//! **Deadlines.** The engine uses epoch interruption. One background thread bumps the
//! epoch every `EPOCH_TICK`, and at each tick a call compares the monotonic clock with its
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
//! recompiled and rewritten, never trusted.
//!
//! An entry is native code that the process maps and runs, so the rule for who may have
//! written it is the one of `trust.rs`: the cache directory, every directory above it and
//! the entry itself must be owned by root or the effective user and writable by nobody
//! else. Under `sudo -E` root would otherwise use the user's cache; a cache that fails
//! the rule is not used at all (components are compiled afresh, with a warning), and an
//! entry that fails it is recompiled and replaced. The entry that is checked, hashed and
//! mapped is one open descriptor.
//!
//! The compiled bytes are those admission hashed for the pin (`manifest::ComponentFile`),
//! never a second read of the path; a cache hit is found by that SHA-256 and reads no
//! byte of the component.

use std::fs::File;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use anyhow::Context;

use super::manifest::{Changed, ComponentFile};
use crate::iso::digest;
use crate::trust;
use serde::Serialize;
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use super::limits::{EPOCH_TICK, MAX_WASM_STACK};

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
                    std::thread::sleep(EPOCH_TICK);
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

/// The cache directory, if it may be used: it exists (or can be made) and it and every
/// directory above it pass the ownership rule (`trust.rs`). `digest::trusted` makes it
/// and checks it, warning once per directory; the rule is checked again here because
/// the entries' safety below rests on it.
pub fn usable_cache(cache: Option<&Path>) -> Option<&Path> {
    let dir = digest::trusted(cache?)?;
    match trust::check(dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::warn!("not using plugin cache {}: {e}", dir.display());
            None
        }
    }
}

/// The entry, opened, if it passes the ownership rule and its SHA-256 matches the
/// sidecar written with it. The digest comes from the digest cache while the open
/// descriptor's `fstat` key is unchanged, so a warm check reads no more than two small
/// files; a changed entry is hashed again.
fn verified(entry: &Path, cache: &Path) -> Result<File, String> {
    let file = File::open(entry).map_err(|e| e.to_string())?;
    trust::check(entry).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    trust::check_metadata(entry, &meta, true).map_err(|e| e.to_string())?;
    let want = std::fs::read_to_string(sidecar(entry)).map_err(|e| e.to_string())?;
    let digests = super::manifest::digests(cache);
    match digest::sha256(&file, Some(&digests)) {
        Ok((sha, _)) if sha == want.trim() => Ok(file),
        Ok(_) => Err("it fails its checksum".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Its bytes are not those admitted: it changed on disk since.
    #[error(transparent)]
    Changed(#[from] Changed),
    #[error("not a valid WebAssembly component: {0:#}")]
    Invalid(anyhow::Error),
}

fn invalid(e: wasmtime::Error) -> LoadError {
    LoadError::Invalid(anyhow::Error::from(e))
}

/// Load the compiled form of the admitted component from the cache, mapping the entry;
/// or compile the bytes admission hashed and store them. `cache` must have passed
/// [`usable_cache`].
pub fn load(
    component: ComponentFile,
    cache: Option<&Path>,
) -> Result<(Component, CacheState), LoadError> {
    let engine = engine();
    let compile = |component: ComponentFile| -> Result<Vec<u8>, LoadError> {
        let bytes = component.into_bytes()?;
        engine
            .precompile_component(&bytes)
            .map_err(anyhow::Error::from)
            .context("compiling the component")
            .map_err(LoadError::Invalid)
    };
    let Some(dir) = cache else {
        let compiled = compile(component)?;
        // SAFETY: just produced by this engine.
        let c = unsafe { Component::deserialize(engine, &compiled) };
        return Ok((c.map_err(invalid)?, CacheState::Uncached));
    };
    let entry = cache_entry(dir, component.sha256());
    let existed = entry.exists();
    match verified(&entry, dir) {
        Ok(file) => {
            // The descriptor that was checked and hashed, by its /proc name, so the file
            // wasmtime maps is that one, whatever became of the entry's name since.
            // Without /proc this fails, and the component is compiled instead.
            let by_fd = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            // SAFETY: the file is the output of `precompile_component` by this engine
            // configuration (its name says so), its SHA-256 matches the sidecar written
            // with it, so it is not truncated or altered since, and it and its
            // directories are owned by root or this user and writable by nobody else
            // (`trust.rs`), so nobody else wrote either.
            match unsafe { Component::deserialize_file(engine, &by_fd) } {
                Ok(c) => return Ok((c, CacheState::Hit)),
                Err(e) => tracing::warn!("plugin cache entry {} unusable: {e:#}", entry.display()),
            }
        }
        Err(why) if existed => {
            tracing::warn!(
                "plugin cache entry {} not used ({why}); recompiling",
                entry.display()
            );
        }
        Err(_) => {}
    }
    let compiled = compile(component)?;
    // SAFETY: just produced by this engine.
    let component = unsafe { Component::deserialize(engine, &compiled) }.map_err(invalid)?;
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
/// never sees half an entry. Mode 0644 whatever the umask: a group-writable entry would
/// fail the rule and be compiled again every time.
fn store(entry: &Path, compiled: &[u8]) -> std::io::Result<()> {
    let write = |path: &Path, bytes: &[u8]| -> std::io::Result<()> {
        let _ = std::fs::remove_file(path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(path)?
            .write_all(bytes)
    };
    let tmp = entry.with_extension(format!("tmp{}", std::process::id()));
    write(&tmp, compiled)?;
    std::fs::rename(&tmp, entry)?;
    let tmp_sum = tmp.with_extension("sum");
    write(&tmp_sum, crate::iso::sha256_bytes(compiled).as_bytes())?;
    std::fs::rename(&tmp_sum, sidecar(entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::testing::two_memories;

    fn exports(c: &Component) -> Vec<String> {
        let ty = c.component_type();
        ty.exports(engine()).map(|(n, _)| n.to_owned()).collect()
    }

    /// Replace `path` with other bytes under the same name (a new inode).
    fn swap(path: &Path, bytes: &[u8]) {
        let tmp = path.with_extension("swap");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Whatever happens to the path between admission and compile, the bytes compiled
    /// are the ones admission hashed, with the digest cache cold (the bytes are kept)
    /// and warm (they are read later, through the admitted descriptor).
    #[test]
    fn a_component_swapped_after_admission_is_not_what_gets_compiled() {
        let admitted = two_memories(["grow-a", "grow-b"]);
        let planted = two_memories(["planted-a", "planted-b"]);
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let path = dir.path().join("p.wasm");
        for warm in [false, true] {
            std::fs::write(&path, &admitted).unwrap();
            let digests = warm.then_some(cache.as_path());
            if warm {
                // Hashed once, so the next open takes its SHA-256 from the digest cache.
                ComponentFile::open(&path, digests, true).unwrap();
            }
            let file = ComponentFile::open(&path, digests, true).unwrap();
            assert_eq!(file.sha256(), crate::iso::sha256_bytes(&admitted));
            swap(&path, &planted);
            let (c, state) = load(file, None).unwrap();
            assert_eq!(state, CacheState::Uncached);
            assert_eq!(exports(&c), ["grow-a", "grow-b"], "warm: {warm}");
        }
        // Rewritten in place (the same inode) after a warm admission: refused, never
        // compiled.
        std::fs::write(&path, &admitted).unwrap();
        ComponentFile::open(&path, Some(&cache), true).unwrap();
        let file = ComponentFile::open(&path, Some(&cache), true).unwrap();
        std::fs::write(&path, &planted).unwrap();
        let err = load(file, None).map(|_| ()).unwrap_err();
        assert!(
            matches!(err, LoadError::Changed(Changed::Bytes { .. })),
            "{err:?}"
        );
    }
}
