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
//! is a manifest. Like sshd's StrictModes (`trust.rs`), a manifest, component, plugin
//! directory or grant is refused unless it and every directory above it is owned by root
//! or the effective user and is not group- or world-writable: anyone else who could
//! write it could run code in every install, as root under `sudo`.
//!
//! Admission opens the component once ([`ComponentFile`]): the descriptor whose owner and
//! mode are checked is the one whose bytes are hashed for the pin, and the one whose
//! bytes are compiled (`engine.rs`), so a swap of the file after admission changes
//! nothing that runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::iso::digest::Key;

use super::limits::{DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_MS, MAX_MEMORY_MB, MAX_TIMEOUT_MS};

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
#[derive(Clone, Debug, thiserror::Error)]
pub enum Refused {
    #[error("invalid manifest {}: {why}", path.display())]
    InvalidManifest { path: PathBuf, why: String },
    #[error("{what} {}: {why}", path.display())]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    /// The file, or a directory above it, fails the ownership and mode rule (`trust.rs`).
    #[error("{what} {} is not trusted: {}; refusing it", path.display(), distrust(source))]
    Untrusted {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<crate::trust::Untrusted>,
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
    Component(#[source] super::ComponentError),
}

/// The rule a file broke, in the words `Get-Plugin` has always used for a writable one.
fn distrust(why: &crate::trust::Untrusted) -> String {
    match why {
        crate::trust::Untrusted::Writable { path, mode } => format!(
            "{} is group- or world-writable (mode {mode:o})",
            path.display()
        ),
        other => other.to_string(),
    }
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

/// Refuse a path unless it and every directory above it are owned by root or the
/// effective user and writable by nobody else (sshd's StrictModes, `trust.rs`).
pub fn check_trusted(path: &Path, what: &'static str) -> Result<(), Refused> {
    crate::trust::check(path).map_err(|e| untrusted(what, path, e))
}

fn untrusted(what: &'static str, path: &Path, e: crate::trust::Untrusted) -> Refused {
    Refused::Untrusted {
        what,
        path: path.to_owned(),
        source: Arc::new(e),
    }
}

/// An admitted plugin: its manifest and its component, open.
pub struct Admitted {
    pub manifest: Manifest,
    pub component: ComponentFile,
}

/// Where the digests of components and compiled entries are kept, keyed by `fstat`
/// (`iso/digest.rs`), under the compiled-component cache.
pub fn digests(cache: &Path) -> PathBuf {
    cache.join("digests")
}

/// A component opened once: its SHA-256 and its bytes both come from this descriptor.
///
/// The SHA-256 comes from the digest cache while the descriptor's `fstat` key (device,
/// inode, size, mtime, ctime) is the one it was hashed with, so a warm load reads no
/// component byte; otherwise the bytes are read once, hashed, and kept for the compile.
/// [`ComponentFile::into_bytes`] never reads the path again: it hands over the bytes
/// that were hashed, or reads this descriptor and checks them against the SHA-256.
#[derive(Debug)]
pub struct ComponentFile {
    path: PathBuf,
    file: File,
    sha256: String,
    bytes: Option<Vec<u8>>,
}

/// The component's bytes no longer match the SHA-256 it was admitted with.
#[derive(Debug, thiserror::Error)]
pub enum Changed {
    #[error("cannot read component {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("component {} changed after it was admitted (SHA-256 {admitted}, now {now})", path.display())]
    Bytes {
        path: PathBuf,
        admitted: String,
        now: String,
    },
}

impl ComponentFile {
    /// Open `path` and take its SHA-256, from the digest cache under `cache` while the
    /// file is unchanged. `strict` also checks the file and its directories with the
    /// ownership rule, and the open descriptor's own owner and mode, so the file
    /// checked is the file read.
    pub fn open(path: &Path, cache: Option<&Path>, strict: bool) -> Result<Self, Refused> {
        let file = File::open(path).map_err(|e| unreadable("component", path, e))?;
        if strict {
            check_trusted(path, "component")?;
            let meta = file
                .metadata()
                .map_err(|e| unreadable("component", path, e))?;
            crate::trust::check_metadata(path, &meta, true)
                .map_err(|e| untrusted("component", path, e))?;
        }
        let digests = cache.map(digests);
        if let Some(sha256) = crate::iso::digest::sha256_cached(&file, digests.as_deref()) {
            return Ok(ComponentFile {
                path: path.to_owned(),
                file,
                sha256,
                bytes: None,
            });
        }
        let before = Key::of(&file).map_err(|e| unreadable("component", path, e))?;
        let bytes = read_all(&file).map_err(|e| unreadable("component", path, e))?;
        let sha256 = crate::iso::sha256_bytes(&bytes);
        // Remember the digest for the next load, from the bytes just read; a file whose
        // size, times or inode moved meanwhile gives no trustworthy digest at all.
        if !crate::iso::digest::remember(&file, digests.as_deref(), before, &sha256) {
            return Err(Refused::Unreadable {
                what: "component",
                path: path.to_owned(),
                why: format!("changed while it was read (SHA-256 {sha256} of what was read)"),
            });
        }
        Ok(ComponentFile {
            path: path.to_owned(),
            file,
            sha256,
            bytes: Some(bytes),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The bytes whose SHA-256 is [`Self::sha256`]: those hashed when the file was
    /// opened, or read now through the same descriptor and hashed again.
    pub fn into_bytes(self) -> Result<Vec<u8>, Changed> {
        if let Some(bytes) = self.bytes {
            return Ok(bytes);
        }
        let bytes = read_all(&self.file).map_err(|source| Changed::Read {
            path: self.path.clone(),
            source,
        })?;
        let now = crate::iso::sha256_bytes(&bytes);
        if !now.eq_ignore_ascii_case(&self.sha256) {
            return Err(Changed::Bytes {
                path: self.path,
                admitted: self.sha256,
                now,
            });
        }
        Ok(bytes)
    }
}

/// The whole file from its start, through this descriptor (positional reads).
fn read_all(file: &File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize));
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read_at(&mut buf, bytes.len() as u64) {
            Ok(0) => return Ok(bytes),
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The checks before any byte of the component runs: ownership and modes, pin, grants.
/// `cache` must already have passed the rule (`engine::usable_cache`): its digests
/// vouch for the pin.
pub fn admit(found: &Found, cache: Option<&Path>) -> Result<Admitted, Refused> {
    let manifest = found.manifest.clone()?;
    let dir = found
        .manifest_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_owned();
    check_trusted(&dir, "plugin directory")?;
    check_trusted(&found.manifest_path, "manifest")?;
    let path = dir.join(&manifest.component);
    let component = ComponentFile::open(&path, cache, true)?;
    if !component
        .sha256()
        .eq_ignore_ascii_case(manifest.sha256.trim())
    {
        return Err(Refused::PinMismatch {
            path,
            actual: component.sha256().to_owned(),
            pinned: manifest.sha256.trim().to_owned(),
        });
    }
    for g in manifest.grants() {
        if !g.guest.starts_with('/') || g.guest.split('/').any(|p| p == "..") {
            return Err(Refused::BadGrant(g.guest));
        }
        check_trusted(&g.host, "granted directory")?;
        if !g.host.is_dir() {
            return Err(Refused::GrantNotDir(g.host));
        }
    }
    Ok(Admitted {
        manifest,
        component,
    })
}

/// For `Test-Plugin`: read the component named by the manifest without admission checks.
pub fn read_unchecked(found: &Found, cache: Option<&Path>) -> Result<Admitted, Refused> {
    let manifest = found.manifest.clone()?;
    let component = ComponentFile::open(&manifest.component, cache, false)?;
    Ok(Admitted {
        manifest,
        component,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "name = \"p\"\nversion = \"1.0.0\"\nwit = \"0.2.0\"\n\
                        component = \"p.wasm\"\nsha256 = \"00\"\n";

    /// Regression: a TOML list in `[settings]` was refused ("invalid type: sequence,
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
