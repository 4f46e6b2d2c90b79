//! Which files vmguest may act on: OpenSSH's `StrictModes` rule.
//!
//! vmguest usually runs as root, and several of its inputs are files whose content
//! decides what root runs or hands to a VM: compiled plugins (native code), digest
//! caches (they vouch for pins), config files (they name IC paths and plugin
//! directories), plugin manifests and components, and IC ISOs (their own-format
//! manifests name the command run in every guest). Such a file is trusted only when it,
//! and every directory up its path, is owned by root or by the effective user and is
//! not writable by group or others. A directory with the sticky bit (`/tmp`) may be
//! writable by others: they can add entries there but not rename or remove ours.
//!
//! Both the path as named and the path it resolves to are checked, so a symlink in a
//! directory someone else controls cannot be pointed elsewhere later.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Why a file is not trusted. Every variant names the path that failed the rule, which
/// may be the file itself or one of its directories.
#[derive(Debug, thiserror::Error)]
pub enum Untrusted {
    #[error("{path} is owned by uid {uid}, not by root or the effective user (uid {euid})")]
    Owner { path: PathBuf, uid: u32, euid: u32 },
    #[error("{path} is writable by group or others (mode {mode:o})")]
    Writable { path: PathBuf, mode: u32 },
    #[error("cannot check {path}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Untrusted {
    /// The path that failed the rule.
    pub fn path(&self) -> &Path {
        match self {
            Untrusted::Owner { path, .. }
            | Untrusted::Writable { path, .. }
            | Untrusted::Unreadable { path, .. } => path,
        }
    }
}

/// The effective user id: with root, the two owners whose files are trusted.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// One entry's owner and mode against the rule; `leaf` is false for the directories
/// above it, where the sticky bit allows writers other than the owner.
pub fn check_metadata(path: &Path, meta: &std::fs::Metadata, leaf: bool) -> Result<(), Untrusted> {
    let euid = euid();
    let uid = meta.uid();
    if uid != 0 && uid != euid {
        return Err(Untrusted::Owner {
            path: path.to_owned(),
            uid,
            euid,
        });
    }
    let mode = meta.mode() & 0o7777;
    let sticky_dir = !leaf && meta.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky_dir {
        return Err(Untrusted::Writable {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// `path` (a file or a directory) and every directory above it, both as named and as
/// resolved through symlinks.
pub fn check(path: &Path) -> Result<(), Untrusted> {
    check_as(path, true)
}

/// A path vmguest may create (a cache or config directory): the path itself if it
/// exists, else its nearest existing ancestor, as the directory that will hold what is
/// created. What is then created there is root's or the effective user's own.
pub fn check_nearest(path: &Path) -> Result<(), Untrusted> {
    let named = absolute(path).map_err(|e| unreadable(path, e))?;
    let mut existing = named.as_path();
    loop {
        match std::fs::symlink_metadata(existing) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => match existing.parent() {
                Some(up) => existing = up,
                None => return Err(unreadable(&named, e)),
            },
            Err(e) => return Err(unreadable(existing, e)),
        }
    }
    check_as(existing, existing == named)
}

fn unreadable(path: &Path, source: io::Error) -> Untrusted {
    Untrusted::Unreadable {
        path: path.to_owned(),
        source,
    }
}

/// The resolved entry (as a leaf, or as a directory when `leaf` is false), the resolved
/// directories above it, and every directory that holds a name on the way as written:
/// whoever can write one of those can re-point a symlink or swap the entry, even when
/// the path today resolves through trusted directories only.
fn check_as(path: &Path, leaf: bool) -> Result<(), Untrusted> {
    let named = absolute(path).map_err(|e| unreadable(path, e))?;
    let real = std::fs::canonicalize(&named).map_err(|e| unreadable(path, e))?;
    let meta = std::fs::metadata(&real).map_err(|e| unreadable(&real, e))?;
    check_metadata(&real, &meta, leaf)?;
    let mut seen = HashSet::new();
    if let Some(dir) = real.parent() {
        check_dir_chain(dir, &mut seen)?;
    }
    for name in named.ancestors() {
        let Some(dir) = name.parent() else {
            continue;
        };
        let dir = std::fs::canonicalize(dir).map_err(|e| unreadable(dir, e))?;
        check_dir_chain(&dir, &mut seen)?;
    }
    Ok(())
}

/// A resolved directory and every one above it, as directories (the sticky exception
/// applies); those in `seen` were checked already.
fn check_dir_chain(dir: &Path, seen: &mut HashSet<PathBuf>) -> Result<(), Untrusted> {
    let mut prefix = PathBuf::new();
    let mut chain = Vec::new();
    for c in dir.components() {
        prefix.push(c);
        if !matches!(c, Component::CurDir) {
            chain.push(prefix.clone());
        }
    }
    for p in chain.into_iter().rev() {
        if seen.contains(&p) {
            continue;
        }
        let meta = std::fs::metadata(&p).map_err(|e| unreadable(&p, e))?;
        check_metadata(&p, &meta, false)?;
        seen.insert(p);
    }
    Ok(())
}

fn absolute(path: &Path) -> io::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn own_files_are_trusted_and_group_writable_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.iso");
        std::fs::write(&f, b"x").unwrap();
        chmod(&f, 0o644);
        check(&f).unwrap();
        chmod(&f, 0o664);
        assert!(matches!(check(&f), Err(Untrusted::Writable { path, .. }) if path == f));
        chmod(&f, 0o644);
        // A writable directory above the file taints it, unless it is sticky.
        chmod(dir.path(), 0o777);
        assert!(matches!(check(&f), Err(Untrusted::Writable { .. })));
        chmod(dir.path(), 0o1777);
        check(&f).unwrap();
        // A sticky leaf directory is still refused as a leaf.
        assert!(matches!(check(dir.path()), Err(Untrusted::Writable { .. })));
    }

    #[test]
    fn a_link_is_checked_where_it_points_and_where_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let open = dir.path().join("open");
        std::fs::create_dir(&real).unwrap();
        std::fs::create_dir(&open).unwrap();
        chmod(&real, 0o755);
        chmod(&open, 0o777);
        let target = real.join("t");
        std::fs::write(&target, b"x").unwrap();
        chmod(&target, 0o644);
        // The link stands in a directory anyone can write: it could be re-pointed.
        let link = open.join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(check(&link), Err(Untrusted::Writable { path, .. }) if path == open));
        // A trusted link to an untrusted place is refused where it points.
        let link2 = real.join("l2");
        let planted = open.join("p");
        std::fs::write(&planted, b"x").unwrap();
        std::os::unix::fs::symlink(&planted, &link2).unwrap();
        assert!(check(&link2).is_err());
    }

    #[test]
    fn a_link_in_the_middle_of_the_path_is_checked_where_it_stands() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        let open = dir.path().join("open");
        std::fs::create_dir(&real).unwrap();
        std::fs::create_dir(&open).unwrap();
        chmod(&real, 0o755);
        chmod(&open, 0o777);
        std::fs::write(real.join("t"), b"x").unwrap();
        chmod(&real.join("t"), 0o644);
        // open/link/t resolves to real/t, through trusted directories only; but anyone
        // can re-point open/link.
        std::os::unix::fs::symlink(&real, open.join("link")).unwrap();
        let via = open.join("link").join("t");
        assert!(matches!(check(&via), Err(Untrusted::Writable { path, .. }) if path == open));
        check(&real.join("t")).unwrap();
    }

    #[test]
    fn a_path_not_made_yet_is_judged_by_its_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let to_be = dir.path().join("a/b/c");
        check_nearest(&to_be).unwrap();
        chmod(dir.path(), 0o775);
        assert!(
            matches!(check_nearest(&to_be), Err(Untrusted::Writable { path, .. }) if path == dir.path())
        );
        chmod(dir.path(), 0o700);
        // A sticky directory may hold what vmguest creates; as the entry itself it may not.
        let sticky = dir.path().join("s");
        std::fs::create_dir(&sticky).unwrap();
        chmod(&sticky, 0o1777);
        check_nearest(&sticky.join("new")).unwrap();
        assert!(check_nearest(&sticky).is_err());
    }

    #[test]
    fn another_users_file_is_refused_for_root() {
        if euid() != 0 {
            return; // Only root can give a file away; the rule itself is the same.
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, b"x").unwrap();
        std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
        assert!(matches!(
            check(&f),
            Err(Untrusted::Owner { uid: 65534, .. })
        ));
    }
}
