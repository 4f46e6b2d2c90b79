//! The configuration files: `/etc/vmguest/config.toml` for the system and
//! `$XDG_CONFIG_HOME/vmguest/config.toml` (else `~/.config/...`) for the user. The user's
//! file overrides the system's key by key.
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

use crate::iso::Family;

pub const SYSTEM_CONFIG: &str = "/etc/vmguest/config.toml";

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

/// `$VAR` if set and not empty, else `$HOME/home_rel`: the XDG base directory rule.
pub fn xdg_base(var: &str, home_rel: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(home_rel)))
}

pub fn user_config_path() -> Option<PathBuf> {
    Some(xdg_base("XDG_CONFIG_HOME", ".config")?.join("vmguest/config.toml"))
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
    /// Read the user's file, then the system's. A broken file is reported, not fatal.
    pub fn load() -> Effective {
        let mut eff = Effective::default();
        let paths = user_config_path()
            .into_iter()
            .chain(std::iter::once(PathBuf::from(SYSTEM_CONFIG)));
        for path in paths {
            match load(&path) {
                Ok(Some(config)) => eff.files.push(Loaded { path, config }),
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

/// What the location policy needs to know about the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Linux,
    Windows,
    Unknown,
}

impl GuestKind {
    /// QEMU guests: virtio-win for Windows, this project's own format for Linux.
    pub fn default_families(self) -> &'static [Family] {
        match self {
            GuestKind::Linux => &[Family::Vmguest],
            GuestKind::Windows => &[Family::VirtioWin],
            GuestKind::Unknown => &[Family::Vmguest, Family::VirtioWin],
        }
    }

    pub fn of(info: Option<&crate::vm::GuestOsInfo>) -> GuestKind {
        match info {
            Some(i) if i.is_windows() => GuestKind::Windows,
            Some(_) => GuestKind::Linux,
            None => GuestKind::Unknown,
        }
    }

    pub fn parse(s: &str) -> Option<GuestKind> {
        match s.to_ascii_lowercase().as_str() {
            "linux" => Some(GuestKind::Linux),
            "windows" | "mswindows" => Some(GuestKind::Windows),
            "unknown" => Some(GuestKind::Unknown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Linux => "Linux",
            GuestKind::Windows => "Windows",
            GuestKind::Unknown => "unknown",
        }
    }
}
