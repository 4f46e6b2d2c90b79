//! The configuration files' schema and how they merge: the user's file overrides the
//! system's key by key. Where the files are is decided in `settings/`.
//!
//! ```toml
//! # Always use this ISO (a pin: nothing else is considered).
//! default_iso = "/srv/ic/vmguest-ic-2.1.0.iso"
//! # Files and directories to search, before $VMGUEST_IC_PATH and the well-known places.
//! ic_path = ["/srv/ic"]
//! # Also look in the families' well-known install locations (default true).
//! search_well_known = true
//! # Which families serve which guests, in order of preference.
//! [families]
//! linux = ["vmguest"]
//! windows = ["virtio-win"]
//! unknown = ["vmguest", "virtio-win"]
//! ```
//!
//! `plugin_dirs = ["/etc/vmguest/plugins"]` sets where plugins are found.
//!
//! A Proxmox VE host (`-ConnectionUri pve://HOST[:PORT]`) has a table keyed by the URI's
//! authority as written (`"HOST:PORT"`, or `"HOST"` when no port was given):
//!
//! ```toml
//! [pve."pve1.example.com:8006"]
//! token_file = "/etc/vmguest/pve.token"   # USER@REALM!TOKENID=SECRET; mode 0600
//! ca_file = "/etc/vmguest/pve-root-ca.pem"
//! fingerprint = "AA:BB:...:FF"            # SHA-256 of the API's certificate
//! storage = "local"                       # the ISO storage to use and upload to
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::kinds::{Family, GuestKind};

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub default_iso: Option<PathBuf>,
    pub ic_path: Option<Vec<PathBuf>>,
    pub search_well_known: Option<bool>,
    #[serde(default)]
    pub families: Families,
    /// Directories of plugin manifests (see `plugin::manifest`).
    pub plugin_dirs: Option<Vec<PathBuf>>,
    /// Proxmox VE hosts, by the authority of their `pve://` URI as written.
    #[serde(default)]
    pub pve: BTreeMap<String, PveHost>,
}

/// One Proxmox VE host's table. The environment's `$PVE_*` variables win over it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PveHost {
    /// A file holding `USER@REALM!TOKENID=SECRET`: owned by root or the effective user,
    /// mode 0600.
    pub token_file: Option<PathBuf>,
    /// The CA that signed the API's certificate, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The SHA-256 of the API's certificate, as `pvenode cert info` prints it.
    pub fingerprint: Option<String>,
    /// The ISO storage to find and upload the IC ISO on.
    pub storage: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Families {
    pub linux: Option<Vec<String>>,
    pub windows: Option<Vec<String>>,
    pub unknown: Option<Vec<String>>,
}

/// A config file as read: where it is, and the config or why it could not be used.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub path: PathBuf,
    pub config: Config,
}

/// Both files merged, with what happened to each for error records.
#[derive(Clone, Debug, Default)]
pub struct Effective {
    pub files: Vec<Loaded>,
    pub problems: Vec<String>,
}

/// Why a config file was not used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// It, or a directory above it, fails the ownership rule: whoever could write it
    /// would choose the ISOs and plugins that root runs.
    #[error("{}: not used, not trusted", .path.display())]
    Untrusted {
        path: PathBuf,
        #[source]
        why: crate::trust::Untrusted,
    },
    #[error("{}: invalid config: {message}", .path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn load(path: &Path) -> Result<Option<Config>, LoadError> {
    let io = |source| LoadError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
        Ok(_) => {}
    }
    crate::trust::check(path).map_err(|why| LoadError::Untrusted {
        path: path.to_owned(),
        why,
    })?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| LoadError::Invalid {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
}

impl Effective {
    /// Read the files in order of precedence. A broken file is reported, not fatal.
    pub fn load(paths: &[PathBuf]) -> Effective {
        let mut eff = Effective::default();
        for path in paths {
            match load(path) {
                Ok(Some(config)) => eff.files.push(Loaded {
                    path: path.clone(),
                    config,
                }),
                Ok(None) => {}
                Err(e) => {
                    let problem = crate::hresult::chain(&e);
                    tracing::warn!("{problem}");
                    eff.problems.push(problem);
                }
            }
        }
        eff
    }

    /// The first file (user before system) that sets a key, with its path.
    pub fn first<T>(&self, get: impl Fn(&Config) -> Option<T>) -> Option<(T, &Path)> {
        self.files
            .iter()
            .find_map(|l| get(&l.config).map(|v| (v, l.path.as_path())))
    }

    /// A Proxmox VE host's table, by the authority of its URI (compared without case),
    /// from the first file (user before system) that has one, with its path. Tables are
    /// not merged key by key: a host's token, CA and pin belong together.
    pub fn pve_host(&self, authority: &str) -> Option<(PveHost, &Path)> {
        self.first(|c| {
            c.pve
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(authority))
                .map(|(_, v)| v.clone())
        })
    }

    pub fn search_well_known(&self) -> bool {
        self.first(|c| c.search_well_known).is_none_or(|(v, _)| v)
    }

    /// Families for a kind of guest, in preference order; unknown names are reported.
    pub fn families(&self, kind: GuestKind) -> (Vec<Family>, Vec<String>) {
        let configured = self.first(|c| match kind {
            GuestKind::Linux => c.families.linux.clone(),
            GuestKind::Windows => c.families.windows.clone(),
            GuestKind::Unknown => c.families.unknown.clone(),
        });
        let Some((names, path)) = configured else {
            return (kind.default_families().to_vec(), Vec::new());
        };
        let mut families = Vec::new();
        let mut problems = Vec::new();
        for n in names {
            match Family::parse(&n) {
                Some(f) => families.push(f),
                None => problems.push(format!(
                    "{}: unknown family {n:?} (known: {})",
                    path.display(),
                    Family::ALL.map(|f| f.as_str()).join(", ")
                )),
            }
        }
        (families, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pve_host_table_is_found_by_its_authority() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[pve.\"PVE1:8006\"]\ntoken_file = \"/etc/vmguest/pve.token\"\n\
             fingerprint = \"aa:bb\"\nstorage = \"local\"\n[pve.other]\nca_file = \"/ca.pem\"\n",
        )
        .unwrap();
        let eff = Effective::load(std::slice::from_ref(&path));
        assert!(eff.problems.is_empty(), "{:?}", eff.problems);
        let (host, from) = eff.pve_host("pve1:8006").unwrap();
        assert_eq!(host.storage.as_deref(), Some("local"));
        assert_eq!(host.fingerprint.as_deref(), Some("aa:bb"));
        assert_eq!(from, path);
        assert!(eff.pve_host("pve1").is_none());
        assert_eq!(
            eff.pve_host("other").unwrap().0.ca_file,
            Some(PathBuf::from("/ca.pem"))
        );
        std::fs::write(&path, "[pve.h]\ninsecure = true\n").unwrap();
        assert_eq!(
            Effective::load(std::slice::from_ref(&path)).problems.len(),
            1
        );
    }

    #[test]
    fn a_config_file_of_another_user_is_not_loaded_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "default_iso = \"/srv/planted.iso\"\n").unwrap();
        let eff = Effective::load(std::slice::from_ref(&path));
        assert_eq!(eff.files.len(), 1);
        std::os::unix::fs::chown(&path, Some(65534), None)
            .expect("chown to uid 65534 (these tests run as root)");
        let eff = Effective::load(std::slice::from_ref(&path));
        assert!(eff.files.is_empty(), "{:?}", eff.files);
        assert_eq!(eff.problems.len(), 1);
        assert!(
            eff.problems[0].contains("not trusted") && eff.problems[0].contains("uid 65534"),
            "{:?}",
            eff.problems
        );
        // A missing file is no problem.
        let eff = Effective::load(&[dir.path().join("none.toml")]);
        assert!(eff.files.is_empty() && eff.problems.is_empty());
    }
}
