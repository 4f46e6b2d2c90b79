//! Sandboxed WebAssembly plugins: ISO location policy and pre/post-install hooks.
//!
//! ```text
//! manifest.rs  find *.toml manifests; admit: ownership and modes, SHA-256 pin, grants
//! engine.rs    the shared wasmtime engine, its epoch clock, the compiled-component cache
//! versions.rs  every supported WIT version: bindings, host shims, export dispatch
//! sandbox.rs   one call: fresh Store, WASI with only the grants, memory cap, deadline
//! limits.rs    every bound on a plugin (time, memory, handles, output), once, with why
//! stdio.rs     a plugin's stdout and stderr, kept up to a cap
//! runtime.rs   the per-thread executor that calls run on (wasmtime's async path)
//! context.rs   vmguest's types to and from the WIT types
//! policy.rs    iso-policy: defer, choose, provide or refuse, each answer checked
//! hooks.rs     install-hooks: pre-install veto, post-install with the outcome
//! probe.rs     Test-Plugin: a component or manifest on samples, a directory or a live VM
//! install.rs   Install-Plugin: check, copy, pin, write the manifest, precompile
//! skeleton.rs  New-Plugin: buildable skeletons in Rust, Python and JavaScript
//! errors.rs    what goes wrong with a plugin, as types
//! ```
//!
//! Whatever a plugin does (trap, loop, exhaust memory, answer out of range, point
//! outside its grants), the result is DISP_E_EXCEPTION naming the plugin, or the
//! documented outcome it chose from the closed `contract-error` enum. The host never
//! crashes: the component model checks every value crossing the boundary, and
//! `sandbox.rs` bounds time and memory.

pub mod context;
pub mod engine;
mod errors;
pub(crate) mod hooks;
pub mod install;
pub(crate) mod limits;
pub mod manifest;
pub(crate) mod policy;
pub mod probe;
pub(crate) mod runtime;
pub mod sandbox;
pub mod skeleton;
pub(crate) mod stdio;
#[cfg(test)]
mod testing;
pub(crate) mod versions;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;

use crate::hresult::{Failure, HResult};
pub use crate::report::PluginRecord;
use crate::settings::Settings;
use engine::CacheState;
use errors::{cause, check_len};
pub use errors::{BadAnswer, Choice, ComponentError, Fault, Misbehaved};
use manifest::{Found, Grant, Refused};
use sandbox::Sandbox;
pub use versions::{types, HooksExport, PolicyExport, WitVersion};

/// The interfaces a plugin may export.
pub const ISO_POLICY: &str = "iso-policy";
pub const INSTALL_HOOKS: &str = "install-hooks";

/// Whether a plugin may run.
#[derive(Clone, Debug)]
pub enum Status {
    Admitted,
    Refused(Refused),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Admitted => f.write_str("admitted"),
            Status::Refused(why) => write!(f, "refused: {why}"),
        }
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What `Get-Plugin` shows about one plugin.
#[derive(Clone, Debug, Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: Option<String>,
    pub wit: Option<String>,
    pub implements: Vec<&'static str>,
    pub grants: Vec<Grant>,
    pub sha256: Option<String>,
    pub cache: Option<CacheState>,
    pub manifest: PathBuf,
    /// The plugin directory it was found in, and the rule that made vmguest look there.
    pub directory: PathBuf,
    pub directory_from: String,
    pub component: Option<PathBuf>,
    pub order: i64,
    /// Serialised as "admitted", or "refused: why".
    pub status: Status,
    /// Time to admit and compile or deserialize the component.
    pub load_ms: f64,
}

/// A plugin ready to run.
pub struct Plugin {
    pub info: PluginInfo,
    pub(crate) sandbox: Sandbox,
    pub(crate) policy: Option<PolicyExport>,
    pub(crate) hooks: Option<HooksExport>,
}

/// The plugins of one run, in order, and those refused at load time.
#[derive(Default)]
pub struct PluginSet {
    pub plugins: Vec<Plugin>,
    pub refused: Vec<PluginInfo>,
}

impl std::fmt::Debug for PluginSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginSet")
            .field(
                "plugins",
                &self
                    .plugins
                    .iter()
                    .map(|p| &p.info.name)
                    .collect::<Vec<_>>(),
            )
            .field(
                "refused",
                &self.refused.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl PluginSet {
    /// Find and load the plugins of the settings' plugin directories.
    pub fn discover(settings: &Settings) -> PluginSet {
        let mut set = PluginSet::load(
            &manifest::discover(&settings.plugin_dirs),
            settings.plugin_cache(),
        );
        let infos = set.plugins.iter_mut().map(|p| &mut p.info);
        for info in infos.chain(set.refused.iter_mut()) {
            info.directory_from = settings.plugin_dirs_from.clone();
        }
        set
    }

    /// Load plugins, with compiled components cached in `cache` (none: compile each time).
    pub fn load(found: &[Found], cache: Option<&Path>) -> PluginSet {
        let mut set = PluginSet::default();
        let cache = engine::usable_cache(cache);
        for f in found {
            match load_one(f, true, cache) {
                Ok(p) => set.plugins.push(p),
                Err(info) => {
                    tracing::warn!(plugin = %info.name, "{}", info.status);
                    set.refused.push(*info)
                }
            }
        }
        set.plugins
            .sort_by(|a, b| (a.info.order, &a.info.name).cmp(&(b.info.order, &b.info.name)));
        set
    }

    /// The plugins that export what `export` picks, in order, with that export.
    fn with<'a, E>(
        &'a self,
        export: impl Fn(&Plugin) -> Option<E> + 'a,
    ) -> impl Iterator<Item = (&'a Plugin, E)> + 'a {
        self.plugins
            .iter()
            .filter_map(move |p| export(p).map(|e| (p, e)))
    }

    /// Every plugin, admitted or refused, for `Get-Plugin`.
    pub fn infos(&self) -> Vec<PluginInfo> {
        let mut all: Vec<PluginInfo> = self.plugins.iter().map(|p| p.info.clone()).collect();
        all.extend(self.refused.iter().cloned());
        all
    }

    /// Installing with a refused plugin would silently drop a site's policy: fail closed.
    pub fn check_admitted(&self) -> Result<(), Failure> {
        match self.refused.first() {
            None => Ok(()),
            Some(p) => Err(Failure::msg(
                HResult::DispException,
                format!(
                    "plugin {:?} was refused at load time: {} (use -NoPlugins to install without plugins)",
                    p.name,
                    p.refusal().map(ToString::to_string).unwrap_or_default()
                ),
            )),
        }
    }
}

impl PluginInfo {
    /// Why the plugin was refused, if it was.
    pub fn refusal(&self) -> Option<&Refused> {
        match &self.status {
            Status::Admitted => None,
            Status::Refused(why) => Some(why),
        }
    }
}

fn directory_of(f: &Found) -> PathBuf {
    f.manifest_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn refused(f: &Found, name: String, why: Refused, started: Instant) -> PluginInfo {
    let m = f.manifest.as_ref().ok();
    PluginInfo {
        name,
        version: m.map(|m| m.version.clone()),
        wit: m.map(|m| m.wit.clone()),
        implements: Vec::new(),
        grants: m.map(|m| m.grants()).unwrap_or_default(),
        sha256: None,
        cache: None,
        manifest: f.manifest_path.clone(),
        directory: directory_of(f),
        directory_from: String::new(),
        component: None,
        order: m.map_or(0, |m| m.order),
        status: Status::Refused(why),
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
    }
}

/// Each function of the component's `iface` export beside the WIT's signature for it.
fn export_signatures(component: &Component, iface: &str, wit: WitVersion) -> String {
    let engine = engine::engine();
    let name = format!("vmguest:plugin/{iface}@{wit}");
    let ty = component.component_type();
    let Some((_, item)) = ty.exports(engine).find(|(n, _)| *n == name) else {
        return String::new();
    };
    let ComponentItem::ComponentInstance(instance) = item.ty else {
        return String::new();
    };
    let mut lines = Vec::new();
    for (function, item) in instance.exports(engine) {
        let ComponentItem::ComponentFunc(f) = item.ty else {
            continue;
        };
        let params: Vec<String> = f
            .params()
            .map(|(n, t)| format!("{n}: {}", kind(&t)))
            .collect();
        let results: Vec<String> = f.results().map(|t| kind(&t)).collect();
        let arrow = match results.as_slice() {
            [] => String::new(),
            [one] => format!(" -> {one}"),
            many => format!(" -> ({})", many.join(", ")),
        };
        let wit_says = wit
            .signature(function)
            .unwrap_or_else(|| format!("no function {function}"));
        lines.push(format!(
            "the component exports {function}: func({}){arrow}, the WIT says {wit_says}",
            params.join(", ")
        ));
    }
    lines.join("; ")
}

/// A component-model type, by kind: enough to show how two signatures differ.
fn kind(t: &wasmtime::component::Type) -> String {
    use wasmtime::component::Type;
    match t {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", kind(&l.ty())),
        Type::Option(o) => format!("option<{}>", kind(&o.ty())),
        Type::Record(_) => "record".into(),
        Type::Tuple(_) => "tuple".into(),
        Type::Variant(_) => "variant".into(),
        Type::Enum(_) => "enum".into(),
        Type::Result(_) => "result".into(),
        Type::Flags(_) => "flags".into(),
        _ => "resource".into(),
    }
}

/// The version of `vmguest:plugin` a component was built against, and what it exports.
pub fn exported_interfaces(component: &Component) -> (Vec<(String, String)>, Vec<String>) {
    let engine = engine::engine();
    let ty = component.component_type();
    let mut ours = Vec::new();
    let mut names = Vec::new();
    for (name, item) in ty.exports(engine) {
        names.push(name.to_owned());
        if let (Some(rest), ComponentItem::ComponentInstance(_)) =
            (name.strip_prefix("vmguest:plugin/"), item.ty)
        {
            if let Some((iface, version)) = rest.split_once('@') {
                ours.push((iface.to_owned(), version.to_owned()));
            }
        }
    }
    (ours, names)
}

/// Load one plugin. `strict` applies admission (ownership and modes, SHA-256 pin, grants);
/// `Test-Plugin` loads an arbitrary component without it, still sandboxed.
pub(crate) fn load_one(
    f: &Found,
    strict: bool,
    cache: Option<&Path>,
) -> Result<Plugin, Box<PluginInfo>> {
    let started = Instant::now();
    let fallback_name = f
        .manifest_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = f
        .manifest
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or(fallback_name);
    let refuse = |why: Refused| Box::new(refused(f, name.clone(), why, started));
    let fail = |why: ComponentError| refuse(Refused::Component(why));
    // Its digests vouch for pins and its entries are native code: only a cache that
    // passes the ownership rule is used, for either.
    let cache = engine::usable_cache(cache);
    let manifest::Admitted {
        manifest,
        component,
    } = if strict {
        manifest::admit(f, cache).map_err(refuse)?
    } else {
        manifest::read_unchecked(f, cache).map_err(refuse)?
    };
    let cache_dir = cache;
    let (component_path, sha256) = (component.path().to_owned(), component.sha256().to_owned());
    // The bytes compiled are those just hashed, through the same descriptor.
    let (component, cache) =
        engine::load(component, cache).map_err(|e| fail(ComponentError::Load(Arc::new(e))))?;
    let (exports, names) = exported_interfaces(&component);
    let version = match exports.first() {
        None => return Err(fail(ComponentError::NoInterface { exports: names })),
        Some((_, v)) => v.clone(),
    };
    let Some(wit) = WitVersion::parse(&version) else {
        return Err(fail(ComponentError::UnknownWit { version }));
    };
    if exports.iter().any(|(_, v)| *v != version) {
        return Err(fail(ComponentError::MixedWit));
    }
    if strict && WitVersion::parse(&manifest.wit) != Some(wit) {
        return Err(fail(ComponentError::ManifestWit {
            manifest: manifest.wit.clone(),
            component: wit,
        }));
    }
    let linker = wit.linker().map_err(|e| fail(ComponentError::Linker(e)))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| fail(ComponentError::Link(cause(e))))?;
    let has = |iface: &str| exports.iter().any(|(i, _)| i == iface);
    let export_error = |iface: &'static str| {
        move |e: wasmtime::Error| {
            fail(ComponentError::Export {
                iface,
                source: cause(e),
            })
        }
    };
    let policy = match has(ISO_POLICY) {
        true => Some(wit.policy(&pre).map_err(export_error(ISO_POLICY))?),
        false => None,
    };
    let hooks = match has(INSTALL_HOOKS) {
        true => Some(wit.hooks(&pre).map_err(export_error(INSTALL_HOOKS))?),
        false => None,
    };
    if policy.is_none() && hooks.is_none() {
        return Err(fail(ComponentError::NoExport));
    }
    let implements = [ISO_POLICY, INSTALL_HOOKS]
        .into_iter()
        .filter(|i| has(i))
        .collect();
    let info = PluginInfo {
        name: manifest.name.clone(),
        version: Some(manifest.version.clone()),
        wit: Some(wit.as_str().to_owned()),
        implements,
        grants: manifest.grants(),
        sha256: Some(sha256.clone()),
        cache: Some(cache),
        manifest: f.manifest_path.clone(),
        directory: directory_of(f),
        directory_from: String::new(),
        component: Some(component_path),
        order: manifest.order,
        status: Status::Admitted,
        load_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    let plugin = Plugin {
        info,
        sandbox: Sandbox {
            manifest: Arc::new(manifest),
            pre,
            poisoned: AtomicBool::new(false),
        },
        policy,
        hooks,
    };
    // A cache hit was checked when it was compiled; only checked entries are kept.
    if cache != CacheState::Hit {
        if let Err(why) = plugin.typecheck(&component, wit) {
            engine::evict(cache_dir, &sha256);
            return Err(fail(why));
        }
    }
    Ok(plugin)
}

impl Plugin {
    /// Instantiate once, in the sandbox, and bind every export with the WIT's types, so
    /// that a component that lies about its WIT is refused before it is ever called. The
    /// refusal names the export and both signatures.
    fn typecheck(&self, component: &Component, wit: WitVersion) -> Result<(), ComponentError> {
        let (policy, hooks) = (self.policy.clone(), self.hooks.clone());
        // One instantiation checks both interfaces; a mismatch is an answer, not a trap.
        let checked = self
            .sandbox
            .call("admission check", move |store, instance| {
                Box::pin(async move {
                    let mismatch = |iface: &'static str, e: wasmtime::Error| (iface, cause(e));
                    if let Some(p) = &policy {
                        if let Err(e) = p.typecheck(store, &instance) {
                            return Ok(Err(mismatch(ISO_POLICY, e)));
                        }
                    }
                    if let Some(h) = &hooks {
                        if let Err(e) = h.typecheck(store, &instance) {
                            return Ok(Err(mismatch(INSTALL_HOOKS, e)));
                        }
                    }
                    Ok(Ok(()))
                })
            });
        match checked {
            Ok((Ok(()), _)) => Ok(()),
            Ok((Err((iface, source)), _)) => Err(ComponentError::Mismatch {
                iface,
                wit,
                source,
                signatures: export_signatures(component, iface, wit),
            }),
            Err(e) => Err(ComponentError::Call(e)),
        }
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    fn record(&self, stage: &'static str, decision: String, ms: f64) -> PluginRecord {
        PluginRecord {
            plugin: self.info.name.clone(),
            version: self.info.version.clone().unwrap_or_default(),
            stage,
            decision,
            ms,
        }
    }

    /// One sandboxed call; a failure is recorded and becomes DISP_E_EXCEPTION naming
    /// the plugin. Returns the answer and the milliseconds it took.
    fn run<R: Send>(
        &self,
        stage: &'static str,
        records: &mut Vec<PluginRecord>,
        f: impl for<'a> FnOnce(
                &'a mut wasmtime::Store<sandbox::State>,
                wasmtime::component::Instance,
            ) -> sandbox::CallFuture<'a, R>
            + Send,
    ) -> Result<(R, f64), Failure> {
        match self.sandbox.call(stage, f) {
            Ok((r, took)) => Ok((r, took.as_secs_f64() * 1000.0)),
            Err(e) => {
                records.push(self.record(stage, format!("failed: {e}"), 0.0));
                Err(self.failure(e))
            }
        }
    }

    /// A failure of this plugin: always DISP_E_EXCEPTION, always naming it, and a
    /// [`Misbehaved`] inside, so it is told apart from a refusal or veto by its type.
    fn failure(&self, fault: impl Into<Fault>) -> Failure {
        Failure::new(
            HResult::DispException,
            Misbehaved {
                plugin: self.info.name.clone(),
                fault: fault.into(),
            },
        )
    }
}
