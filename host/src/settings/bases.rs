//! The XDG base directories of the effective user, and root's refusal of another user's.

use std::path::{Path, PathBuf};

use etcetera::base_strategy::{BaseStrategy, Xdg};

use super::is_root;

/// The XDG base directories of this user, if there is a home directory.
pub(super) struct Bases {
    pub(super) config: Option<PathBuf>,
    pub(super) data: Option<PathBuf>,
    pub(super) cache: Option<PathBuf>,
    pub(super) state: Option<PathBuf>,
    pub(super) runtime: Option<PathBuf>,
}

impl Bases {
    fn from_env() -> Bases {
        match Xdg::new() {
            Ok(x) => Bases {
                config: Some(x.config_dir()),
                data: Some(x.data_dir()),
                cache: Some(x.cache_dir()),
                state: x.state_dir(),
                runtime: x.runtime_dir(),
            },
            // No home directory: only the system-wide places remain.
            Err(_) => Bases {
                config: None,
                data: None,
                cache: None,
                state: None,
                runtime: std::env::var_os("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute()),
            },
        }
    }
}

impl Bases {
    /// The environment's base directories, except that root does not take another
    /// user's: under `sudo -E`, `HOME` still names the user's home, whose config, cache
    /// and data that user can write. Each base that fails the ownership rule
    /// (`trust.rs`) is replaced by its default under root's home from the passwd entry.
    pub(super) fn for_effective_user() -> Bases {
        let env = Bases::from_env();
        if !is_root() {
            return env;
        }
        env.trusted_or(passwd_home().as_deref())
    }

    fn trusted_or(self, home: Option<&Path>) -> Bases {
        let pick = |what: &str, base: Option<PathBuf>, default: &str| {
            let dir = base?;
            let why = match crate::trust::check_nearest(&dir) {
                Ok(()) => return Some(dir),
                Err(why) => crate::hresult::chain(&why),
            };
            let own = home
                .map(|h| h.join(default))
                .filter(|d| crate::trust::check_nearest(d).is_ok());
            tracing::warn!(
                "running as root: not using the {what} directory {} from the environment \
                 ({why}); using {} from root's own home instead",
                dir.display(),
                own.as_ref()
                    .map_or_else(|| "none".into(), |d| d.display().to_string())
            );
            own
        };
        Bases {
            config: pick("config", self.config, ".config"),
            data: pick("data", self.data, ".local/share"),
            cache: pick("cache", self.cache, ".cache"),
            state: pick("state", self.state, ".local/state"),
            // The runtime directory holds the default VM directory, whose `NAME.toml`
            // files name the sockets root connects to. Root has no runtime directory of
            // its own to fall back on: the system default (`/run/vmguest`) applies.
            runtime: self
                .runtime
                .filter(|dir| match crate::trust::check_nearest(dir) {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::warn!(
                            "running as root: not using the runtime directory {} from the \
                         environment ({}); using the system defaults instead",
                            dir.display(),
                            crate::hresult::chain(&why)
                        );
                        false
                    }
                }),
        }
    }
}

/// The effective user's home directory from the passwd entry, not from `$HOME`.
fn passwd_home() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids) to be filled in.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwuid_r writes into `pw` and `buf` (of the length given) only, and
        // points `found` at `pw` or null; geteuid cannot fail.
        let rc = unsafe {
            libc::getpwuid_r(
                libc::geteuid(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pw.pw_dir.is_null() {
            return None;
        }
        // SAFETY: pw_dir points to a NUL-terminated string inside `buf`, alive here.
        let dir = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) };
        let dir = Path::new(std::ffi::OsStr::from_bytes(dir.to_bytes()));
        return dir.is_absolute().then(|| dir.to_owned());
    }
}

#[cfg(test)]
mod bases_tests {
    use super::*;

    #[test]
    fn another_users_base_directories_give_way_to_roots_own_home() {
        let dir = tempfile::tempdir().unwrap();
        let alice = dir.path().join("alice");
        let root = dir.path().join("root");
        std::fs::create_dir_all(alice.join(".cache")).unwrap();
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::chown(&alice, Some(65534), None)
            .expect("chown to uid 65534 (these tests run as root)");
        let env = Bases {
            config: Some(alice.join(".config")),
            data: Some(alice.join(".local/share")),
            cache: Some(alice.join(".cache")),
            state: Some(root.join("state")),
            runtime: Some(alice.join("run")),
        };
        let b = env.trusted_or(Some(&root));
        assert_eq!(
            b.runtime, None,
            "no VM directory under another user's runtime"
        );
        assert_eq!(b.config, Some(root.join(".config")));
        assert_eq!(b.data, Some(root.join(".local/share")));
        assert_eq!(b.cache, Some(root.join(".cache")));
        // A base that passes the rule stays as the environment says.
        assert_eq!(b.state, Some(root.join("state")));
    }
}
