//! The configuration files' schema and how they merge: the user's file overrides the
//! system's key by key. Where the files are is decided in `settings.rs`.
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

fn load(path: &Path) -> Result<Option<Config>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: invalid config: {}", path.display(), e.message())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
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
                Err(problem) => {
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
