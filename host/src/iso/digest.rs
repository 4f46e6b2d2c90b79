//! SHA-256 of IC ISOs for the audit field `iso_sha256`, cached so that an install costs
//! the same whatever the ISO's size.
//!
//! An entry is keyed by what proves the file unchanged since it was hashed: device,
//! inode, size, and modification and change times in nanoseconds, all from `fstat` of
//! the very descriptor that is hashed. The change time cannot be set by a user, so a
//! rewrite that restores the modification time is still caught. An entry whose key does
//! not match is ignored and replaced; a file that changed while it was hashed is not
//! cached at all.
//!
//! Entries live in `DIR/DEV-INO` (one per file), written through a temporary file and a
//! rename, so concurrent writers never leave half an entry and the last one wins. The
//! directory is vmguest's cache directory (`settings/`); without one, nothing is cached.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What proves a file unchanged since it was hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Key {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

impl Key {
    pub fn of(file: &File) -> std::io::Result<Key> {
        let m = file.metadata()?;
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        Ok(Key {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: ns(m.mtime(), m.mtime_nsec()),
            ctime_ns: ns(m.ctime(), m.ctime_nsec()),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct Entry {
    key: Key,
    sha256: String,
}

/// Where the SHA-256 came from, for the record and the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// A cache entry whose key matched.
    Cache,
    /// Hashed now (and cached, where there is a cache).
    Hashed,
}

/// A cache directory is used only when it passes the ownership rule (`trust.rs`): it
/// and every directory above it are root's or the effective user's, and nobody else can
/// write them. An entry planted by someone else could vouch for a file's digest (plugin
/// pins rest on these digests) or be loaded as compiled code. A missing directory is
/// made (owner-only) only where what holds it passes the rule, so root never creates
/// its cache inside another user's home.
pub fn trusted(dir: &Path) -> Option<&Path> {
    use std::os::unix::fs::DirBuilderExt;
    let made = crate::trust::check_nearest(dir)
        .map_err(|e| crate::hresult::chain(&e))
        .and_then(|()| {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create it: {e}"))
        })
        .and_then(|()| crate::trust::check(dir).map_err(|e| crate::hresult::chain(&e)));
    match made {
        Ok(()) => Some(dir),
        Err(why) => {
            refused(dir, &why);
            None
        }
    }
}

/// Warn once per directory and run: every hash and plugin load asks again.
fn refused(dir: &Path, why: &str) {
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let mut warned = WARNED.lock().unwrap_or_else(|p| p.into_inner());
    if warned.iter().any(|d| d == dir) {
        tracing::debug!("not using cache directory {}: {why}", dir.display());
    } else {
        tracing::warn!("not using cache directory {}: {why}", dir.display());
        warned.push(dir.to_owned());
    }
}

fn entry(dir: &Path, key: &Key) -> PathBuf {
    dir.join(format!("{}-{}", key.dev, key.ino))
}

/// The cached SHA-256 of an open file, if `dir` has an entry whose key matches.
pub fn sha256_cached(file: &File, dir: Option<&Path>) -> Option<String> {
    let key = Key::of(file).ok()?;
    lookup(&entry(trusted(dir?)?, &key), &key)
}

/// The SHA-256 of an open file, from the cache in `dir` or by hashing it.
pub fn sha256(file: &File, dir: Option<&Path>) -> std::io::Result<(String, Source)> {
    let key = Key::of(file)?;
    let entry = dir.and_then(trusted).map(|d| entry(d, &key));
    if let Some(hit) = entry.as_deref().and_then(|e| lookup(e, &key)) {
        return Ok((hit, Source::Cache));
    }
    let sha256 = hash(file)?;
    // A file that changed while it was read has no trustworthy digest to keep.
    if let Some(entry) = entry.filter(|_| Key::of(file).ok() == Some(key)) {
        if let Err(e) = store(&entry, key, &sha256) {
            tracing::debug!("cannot cache the digest in {}: {e}", entry.display());
        }
    }
    Ok((sha256, Source::Hashed))
}

/// Keep a digest the caller computed from `file`'s bytes, read after `before` was taken,
/// so the file need not be read a second time to be cached. False when the file's key
/// is no longer `before`: it changed while it was read, and nothing is kept.
pub fn remember(file: &File, dir: Option<&Path>, before: Key, sha256: &str) -> bool {
    if Key::of(file).ok() != Some(before) {
        return false;
    }
    if let Some(entry) = dir.and_then(trusted).map(|d| entry(d, &before)) {
        if let Err(e) = store(&entry, before, sha256) {
            tracing::debug!("cannot cache the digest in {}: {e}", entry.display());
        }
    }
    true
}

fn lookup(entry: &Path, key: &Key) -> Option<String> {
    let text = std::fs::read_to_string(entry).ok()?;
    let e: Entry = serde_json::from_str(&text).ok()?;
    let valid = e.key == *key && e.sha256.len() == 64;
    valid.then_some(e.sha256)
}

fn store(entry: &Path, key: Key, sha256: &str) -> std::io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    if let Some(dir) = entry.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = PathBuf::from(format!(
        "{}.tmp{}-{}",
        entry.display(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let text = serde_json::to_string(&Entry {
        key,
        sha256: sha256.to_owned(),
    })?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, entry).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Hash from the start, through this descriptor: positional reads leave its offset alone.
fn hash(file: &File) -> std::io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buf, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hex(&hasher.finalize()))
}

pub fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// SHA-256 of a file by path, uncached: pins and tests.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    hash(&File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sha256sum(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn a_warm_entry_is_used_and_a_changed_file_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let path = dir.path().join("ic.iso");
        std::fs::write(&path, b"first").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(
            sha256(&f, Some(&cache)).unwrap(),
            (sha256sum(b"first"), Source::Hashed)
        );
        assert_eq!(
            sha256(&f, Some(&cache)).unwrap(),
            (sha256sum(b"first"), Source::Cache)
        );
        // Same size, rewritten in place: ctime (and mtime) move, so the entry is stale.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"other")
            .unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(
            sha256(&f, Some(&cache)).unwrap(),
            (sha256sum(b"other"), Source::Hashed)
        );
    }

    #[test]
    fn an_entry_with_a_wrong_key_or_garbage_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ic.iso");
        std::fs::write(&path, b"data").unwrap();
        let f = File::open(&path).unwrap();
        let key = Key::of(&f).unwrap();
        let entry = dir.path().join(format!("{}-{}", key.dev, key.ino));
        let lie = Entry {
            key: Key {
                size: key.size + 1,
                ..key
            },
            sha256: "0".repeat(64),
        };
        std::fs::write(&entry, serde_json::to_string(&lie).unwrap()).unwrap();
        assert_eq!(sha256(&f, Some(dir.path())).unwrap().1, Source::Hashed);
        std::fs::write(&entry, "not json").unwrap();
        assert_eq!(
            sha256(&f, Some(dir.path())).unwrap(),
            (sha256sum(b"data"), Source::Hashed)
        );
    }

    #[test]
    fn a_cache_directory_writable_by_others_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("ic.iso");
        std::fs::write(&path, b"x").unwrap();
        let f = File::open(&path).unwrap();
        // A planted entry with the right key and a false digest is never read…
        let key = Key::of(&f).unwrap();
        let planted = Entry {
            key,
            sha256: "f".repeat(64),
        };
        std::fs::write(
            entry(&cache, &key),
            serde_json::to_string(&planted).unwrap(),
        )
        .unwrap();
        assert_eq!(sha256_cached(&f, Some(&cache)), None);
        assert_eq!(
            sha256(&f, Some(&cache)).unwrap(),
            (sha256sum(b"x"), Source::Hashed)
        );
        // …while the same entry in an owner-only directory would be.
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(sha256_cached(&f, Some(&cache)), Some("f".repeat(64)));
    }

    /// A planted entry with the right key and a false digest, in `cache`.
    fn plant(cache: &Path, f: &File) {
        let key = Key::of(f).unwrap();
        let planted = Entry {
            key,
            sha256: "f".repeat(64),
        };
        std::fs::write(entry(cache, &key), serde_json::to_string(&planted).unwrap()).unwrap();
    }

    #[test]
    fn a_cache_directory_of_another_user_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("ic.iso");
        std::fs::write(&path, b"x").unwrap();
        let f = File::open(&path).unwrap();
        plant(&cache, &f);
        assert_eq!(sha256_cached(&f, Some(&cache)), Some("f".repeat(64)));
        std::os::unix::fs::chown(&cache, Some(65534), None)
            .expect("chown to uid 65534 (these tests run as root)");
        assert_eq!(trusted(&cache), None);
        assert_eq!(sha256_cached(&f, Some(&cache)), None);
        assert_eq!(
            sha256(&f, Some(&cache)).unwrap(),
            (sha256sum(b"x"), Source::Hashed)
        );
    }

    #[test]
    fn a_cache_is_not_made_where_others_can_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let cache = open.join("vmguest/digests");
        assert_eq!(trusted(&cache), None);
        assert!(!open.join("vmguest").exists());
        // Where the rule holds, a missing cache is made, for its owner only.
        let mine = dir.path().join("mine/vmguest/digests");
        assert_eq!(trusted(&mine), Some(mine.as_path()));
        let mode = std::fs::metadata(&mine).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn without_a_cache_directory_it_always_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ic.iso");
        std::fs::write(&path, b"x").unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(sha256(&f, None).unwrap().1, Source::Hashed);
        assert_eq!(sha256(&f, None).unwrap().1, Source::Hashed);
        assert_eq!(sha256_file(&path).unwrap(), sha256sum(b"x"));
    }
}
