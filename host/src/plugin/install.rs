//! `Install-Plugin`: put a component into a plugin directory with a manifest that pins
//! its SHA-256, after checking its world and WIT version, and pay the compile now
//! (once) rather than at the first VM install.
//!
//! Nothing half-written is left: the component and the manifest are written to temporary
//! names and renamed into place, the manifest last, so discovery (which reads manifests)
//! never sees a manifest without its component. An existing plugin of the same name is
//! replaced only with `force`, or updated with `update`: a new component and pin under
//! the site's own configuration (`scripts/install-plugins.sh` re-runs this way).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::manifest::{Found, Manifest};
use super::{load_one, PluginInfo};
use crate::hresult::{Failure, HResult, OrHResult};

/// What to install, and where.
pub struct Request {
    pub component: PathBuf,
    /// The plugin directory (a scope's: the user's or the system's).
    pub dir: PathBuf,
    /// Default: the component's file stem.
    pub name: Option<String>,
    pub version: String,
    pub order: i64,
    pub settings: BTreeMap<String, String>,
    pub grants: BTreeMap<String, PathBuf>,
    pub force: bool,
    /// An installed plugin of the same name gets the new component, its pin and WIT
    /// version, and keeps the rest of its manifest (settings, grants, limits, order,
    /// version); without one, the plugin is installed as the request says.
    pub update: bool,
}

fn fail(why: String) -> Failure {
    Failure::msg(HResult::DispException, why)
}

/// Install the component; the result is the plugin as `Get-Plugin` will show it.
pub fn install(req: &Request, cache: Option<&Path>) -> Result<PluginInfo, Failure> {
    let name = match &req.name {
        Some(n) => n.clone(),
        None => req
            .component
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(plain) {
        return Err(fail(format!(
            "{name:?} is not a plugin name (letters, digits, '-', '_' and '.')"
        )));
    }
    let manifest_path = req.dir.join(format!("{name}.toml"));
    // What an update keeps: the installed manifest, as the site configured it.
    let kept = match req.update && manifest_path.exists() {
        true => Some(
            super::manifest::read(manifest_path.clone())
                .manifest
                .map_err(|why| fail(format!("plugin {name:?} cannot be updated: {why}")))?,
        ),
        false => None,
    };
    let configured = |wit: String, component: PathBuf| match &kept {
        Some(m) => Manifest {
            wit,
            component,
            sha256: String::new(),
            ..m.clone()
        },
        None => manifest(&name, req, wit, component),
    };
    // The component's world and WIT version, as its exports say; refused here, not later.
    // This load compiles into the cache, so the admission below and the first VM install
    // find it there: a big component compiles once.
    let (wit, compiled) = {
        let probe = Found {
            manifest_path: req.component.clone(),
            manifest: Ok(configured(String::new(), req.component.clone())),
        };
        let loaded = load_one(&probe, false, cache).map_err(|info| {
            let why = info.refusal().map(ToString::to_string).unwrap_or_default();
            fail(format!(
                "{} cannot be installed: {why}",
                req.component.display()
            ))
        })?;
        (
            loaded.info.wit.clone().unwrap_or_default(),
            loaded.info.cache,
        )
    };
    if manifest_path.exists() && !req.force && !req.update {
        return Err(fail(format!(
            "a plugin named {name:?} is already installed ({}); -Force replaces it",
            manifest_path.display()
        )));
    }
    let wasm_name = format!("{name}.wasm");
    let written = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(&req.dir)
            .with_context(|| format!("creating {}", req.dir.display()))?;
        let bytes = std::fs::read(&req.component)
            .with_context(|| format!("reading {}", req.component.display()))?;
        write_then_rename(&req.dir.join(&wasm_name), &bytes)?;
        let mut m = configured(wit, PathBuf::from(&wasm_name));
        // The pin is of the bytes written, not of a later read of the file.
        m.sha256 = crate::iso::sha256_bytes(&bytes);
        let text = toml::to_string(&m).context("writing the manifest")?;
        write_then_rename(&manifest_path, text.as_bytes())
    })();
    written
        .with_context(|| format!("installing plugin {name:?} into {}", req.dir.display()))
        .or_hresult(HResult::DispException)?;
    // Loaded as an install will: admission (ownership and modes, the pin) and the cache.
    match load_one(&super::manifest::read(manifest_path.clone()), true, cache) {
        // Shown as what this install did: compiled, unless it was cached already.
        Ok(p) => Ok(PluginInfo {
            cache: compiled,
            ..p.info
        }),
        Err(info) => {
            let why = info.refusal().map(ToString::to_string).unwrap_or_default();
            Err(fail(format!(
                "plugin {name:?} was written to {} but is refused: {why}",
                manifest_path.display()
            )))
        }
    }
}

fn manifest(name: &str, req: &Request, wit: String, component: PathBuf) -> Manifest {
    let mut m = Manifest::for_component(
        name.to_owned(),
        req.version.clone(),
        component,
        req.settings.clone(),
        req.grants.clone(),
    );
    m.wit = wit;
    m.order = req.order;
    m
}

/// Write beside the target and rename over it, so a reader sees the old file or the new.
fn write_then_rename(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    // 0644 whatever the umask: a group-writable plugin file is refused at load.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("writing {}", path.display()))
}
