//! Plugin manifests, discovery and admission.
//!
//! A plugin is a TOML manifest beside its component:
//!
//! ```toml
//! name = "pin-versions"
//! version = "1.0.0"
//! wit = "0.2.0"                      # the vmguest:plugin version it was built against
//! component = "pin_versions.wasm"    # relative to the manifest
//! sha256 = "…"                       # the component's SHA-256; a mismatch is refused
//! order = 10                         # lower runs first (then by name)
//! [grants]                           # guest path = host directory, read-only
//! "/mirror" = "/srv/ic-mirror"
//! [grants_rw]                        # read-write grants, for audit logs and the like
//! "/audit" = "/var/log/vmguest"
//! [settings]                         # values the plugin reads with host.setting
//! deny = "virtio-win@0.1.217"        # a string is passed as it is
//! mirrors = ["/mirror/a", "/mirror/b"] # any other TOML value as its JSON text
//! [limits]
//! timeout_ms = 1000                  # per call (default 1000, at most 60000)
//! memory_mb = 64                     # linear memory (default 64, at most 1024)
//! ```
//!
//! Plugin directories come from `--plugin-dir`, else `$VMGUEST_PLUGIN_PATH`
//! (colon-separated), else `plugin_dirs` in the config file, else
//! `$XDG_CONFIG_HOME/vmguest/plugins` and `/etc/vmguest/plugins`. Every `*.toml` in them
//! is a manifest. Like sshd's StrictModes, a manifest, component, plugin directory or
//! grant that is group- or world-writable is refused: anyone who could write it could
//! run code in every install.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_TIMEOUT_MS: u64 = 1000;
pub const MAX_TIMEOUT_MS: u64 = 60_000;
pub const DEFAULT_MEMORY_MB: u64 = 64;
pub const MAX_MEMORY_MB: u64 = 1024;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub wit: String,
    pub component: PathBuf,
    pub sha256: String,
    #[serde(default)]
    pub order: i64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants_rw: BTreeMap<String, PathBuf>,
    /// Each value as the plugin receives it from `host.setting`: see [`setting_text`].
    #[serde(
        default,
        deserialize_with = "settings_as_text",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub settings: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Limits::is_default")]
    pub limits: Limits,
}

impl Manifest {
    /// A manifest for a component that has none yet (`Install-Plugin` before it writes
    /// one, `Test-Plugin -Path`): no pin, no read-write grants, default limits.
    pub fn for_component(
        name: String,
        version: String,
        component: PathBuf,
        settings: BTreeMap<String, String>,
        grants: BTreeMap<String, PathBuf>,
    ) -> Manifest {
        Manifest {
            name,
            version,
            wit: String::new(),
            component,
            sha256: String::new(),
            order: 0,
            grants,
            grants_rw: BTreeMap::new(),
            settings,
            limits: Limits::default(),
        }
    }
}

fn settings_as_text<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let values = BTreeMap::<String, toml::Value>::deserialize(d)?;
    Ok(values
        .into_iter()
        .map(|(k, v)| (k, setting_text(v)))
        .collect())
}

/// A setting as the WIT's `setting(key) -> option<string>` hands it over, so every WIT
/// version reads any TOML value: a string as it is, a datetime as TOML writes it, and
/// anything else (numbers, booleans, arrays, tables) as JSON text, which every plugin
/// language parses.
pub fn setting_text(v: toml::Value) -> String {
    fn json(v: toml::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            toml::Value::String(s) => J::String(s),
            toml::Value::Integer(i) => J::from(i),
            toml::Value::Float(f) => {
                serde_json::Number::from_f64(f).map_or_else(|| J::String(f.to_string()), J::Number)
            }
            toml::Value::Boolean(b) => J::Bool(b),
            toml::Value::Datetime(d) => J::String(d.to_string()),
            toml::Value::Array(a) => J::Array(a.into_iter().map(json).collect()),
            toml::Value::Table(t) => J::Object(t.into_iter().map(|(k, v)| (k, json(v))).collect()),
        }
    }
    match v {
        toml::Value::String(s) => s,
        toml::Value::Datetime(d) => d.to_string(),
        other => json(other).to_string(),
    }
}

/// A TOML error with the line it is on, so it names the key that is wrong.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count();
            let shown = text.lines().nth(line).unwrap_or("").trim();
            format!("line {} (`{shown}`): {}", line + 1, e.message())
        }
        None => e.message().to_owned(),
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
}

impl Limits {
    fn is_default(&self) -> bool {
        self.timeout_ms.is_none() && self.memory_mb.is_none()
    }

    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
            .unwrap_or(DEFAULT_TIMEOUT_MS)
            .clamp(1, MAX_TIMEOUT_MS)
    }

    pub fn memory_bytes(&self) -> usize {
        (self
            .memory_mb
            .unwrap_or(DEFAULT_MEMORY_MB)
            .clamp(1, MAX_MEMORY_MB) as usize)
            << 20
    }
}

/// A directory granted to a plugin.
#[derive(Clone, Debug, Serialize)]
pub struct Grant {
    /// As the plugin sees it.
    pub guest: String,
    pub host: PathBuf,
    pub writable: bool,
}

impl Manifest {
    pub fn grants(&self) -> Vec<Grant> {
        let ro = self.grants.iter().map(|(g, h)| (g, h, false));
        let rw = self.grants_rw.iter().map(|(g, h)| (g, h, true));
        ro.chain(rw)
            .map(|(g, h, writable)| Grant {
                guest: g.clone(),
                host: h.clone(),
                writable,
            })
            .collect()
    }
}

/// Why a plugin was refused before any of its code ran, or while loading it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("invalid manifest {}: {why}", path.display())]
    InvalidManifest { path: PathBuf, why: String },
    #[error("{what} {}: {why}", path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("{what} {} is group- or world-writable (mode {mode:o}); refusing it", path.display())]
    WritableByOthers {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error("component {} has SHA-256 {actual}, but the manifest pins {pinned}", path.display())]
    PinMismatch {
        path: PathBuf,
        actual: String,
        pinned: String,
    },
    #[error("grant {0:?} must be an absolute path without ..")]
    BadGrant(String),
    #[error("granted {} is not a directory", .0.display())]
    GrantNotDir(PathBuf),
    /// The component itself: not a component, wrong WIT, cannot be linked, …
    #[error("{0}")]
    Component(String),
}

fn unreadable(what: &'static str, path: &Path, e: std::io::Error) -> Refused {
    Refused::Unreadable {
        what,
        path: path.to_owned(),
        why: e.to_string(),
    }
}

/// A manifest found on disk, before admission.
#[derive(Clone, Debug)]
pub struct Found {
    pub manifest_path: PathBuf,
    pub manifest: Result<Manifest, Refused>,
}

/// Every `*.toml` manifest in the directories, sorted by path.
pub fn discover(dirs: &[PathBuf]) -> Vec<Found> {
    let mut found = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        found.extend(paths.into_iter().map(read));
    }
    found
}

/// One manifest file, parsed or refused with the line that is wrong.
pub fn read(manifest_path: PathBuf) -> Found {
    let invalid = |why: String| Refused::InvalidManifest {
        path: manifest_path.clone(),
        why,
    };
    let manifest = std::fs::read_to_string(&manifest_path)
        .map_err(|e| invalid(e.to_string()))
        .and_then(|t| toml::from_str::<Manifest>(&t).map_err(|e| invalid(toml_error(&t, &e))));
    Found {
        manifest_path,
        manifest,
    }
}

/// Refuse paths that someone other than their owner could write (sshd's StrictModes).
pub fn check_not_writable_by_others(path: &Path, what: &'static str) -> Result<(), Refused> {
    let meta = std::fs::metadata(path).map_err(|e| unreadable(what, path, e))?;
    let mode = meta.mode();
    if mode & 0o022 != 0 {
        return Err(Refused::WritableByOthers {
            what,
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// The manifest, the component's path and its SHA-256.
pub type Admitted = (Manifest, PathBuf, String);

/// Where the digests of components and compiled entries are kept, keyed by `fstat`
/// (`iso/digest.rs`), under the compiled-component cache.
pub fn digests(cache: &Path) -> PathBuf {
    cache.join("digests")
}

/// The component's SHA-256, from the digest cache under `cache` while the file is
/// unchanged (`iso/digest.rs`).
fn component_sha256(path: &Path, cache: Option<&Path>) -> Result<String, Refused> {
    let file = std::fs::File::open(path).map_err(|e| unreadable("component", path, e))?;
    let digests = cache.map(digests);
    crate::iso::digest::sha256(&file, digests.as_deref())
        .map(|(sha, _)| sha)
        .map_err(|e| unreadable("component", path, e))
}

/// The checks before any byte of the component runs: permissions, pin, grants.
pub fn admit(found: &Found, cache: Option<&Path>) -> Result<Admitted, Refused> {
    let manifest = found.manifest.clone()?;
    let dir = found
        .manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned();
    check_not_writable_by_others(&dir, "plugin directory")?;
    check_not_writable_by_others(&found.manifest_path, "manifest")?;
    let component = dir.join(&manifest.component);
    check_not_writable_by_others(&component, "component")?;
    let sha256 = component_sha256(&component, cache)?;
    if !sha256.eq_ignore_ascii_case(manifest.sha256.trim()) {
        return Err(Refused::PinMismatch {
            path: component,
            actual: sha256,
            pinned: manifest.sha256.trim().to_owned(),
        });
    }
    for g in manifest.grants() {
        if !g.guest.starts_with('/') || g.guest.split('/').any(|p| p == "..") {
            return Err(Refused::BadGrant(g.guest));
        }
        check_not_writable_by_others(&g.host, "granted directory")?;
        if !g.host.is_dir() {
            return Err(Refused::GrantNotDir(g.host));
        }
    }
    Ok((manifest, component, sha256))
}

/// For `Test-Plugin`: read the component named by the manifest without admission checks.
pub fn read_unchecked(found: &Found, cache: Option<&Path>) -> Result<Admitted, Refused> {
    let manifest = found.manifest.clone()?;
    let sha256 = component_sha256(&manifest.component, cache)?;
    Ok((manifest.clone(), manifest.component.clone(), sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "name = \"p\"\nversion = \"1.0.0\"\nwit = \"0.2.0\"\n\
                        component = \"p.wasm\"\nsha256 = \"00\"\n";

    /// Issue 15: a TOML list in `[settings]` was refused ("invalid type: sequence,
    /// expected a string") without naming the key.
    #[test]
    fn any_toml_value_is_a_setting_and_non_strings_arrive_as_json() {
        let text = format!(
            "{HEAD}[settings]\nplain = \"a b\"\nlist = [\"x\", 2]\nn = 3\nf = 1.5\nyes = true\n\
             when = 1979-05-27T07:32:00Z\n[settings.table]\nk = \"v\"\n"
        );
        let m: Manifest = toml::from_str(&text).unwrap();
        let got: Vec<(&str, &str)> = m
            .settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("f", "1.5"),
                ("list", r#"["x",2]"#),
                ("n", "3"),
                ("plain", "a b"),
                ("table", r#"{"k":"v"}"#),
                ("when", "1979-05-27T07:32:00Z"),
                ("yes", "true"),
            ]
        );
    }

    #[test]
    fn a_manifest_error_names_its_line_and_key() {
        let text = format!("{HEAD}order = \"first\"\n");
        let e = toml::from_str::<Manifest>(&text).unwrap_err();
        let shown = toml_error(&text, &e);
        assert!(
            shown.starts_with("line 6 (`order = \"first\"`): "),
            "{shown}"
        );
    }
}
