//! Every supported version of `vmguest:plugin`, in one place, as Zed's extension host
//! keeps its `since_vX` shims: the bindings of each frozen WIT folder, the enum that
//! names them, and the dispatch of every call to the version a component was built for.
//!
//! Adding 0.3.0 touches this module and the folder `wit/since_v0.3.0`: a bindgen module,
//! a [`WitVersion`] variant, its host shim, and one arm per export below.
//!
//! The shared `types` interface has not changed since 0.1.0, so older versions reuse the
//! current types (bindgen `with`) and only their `host` import needs a shim.

use std::sync::{Arc, OnceLock};

use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};
use wasmtime::Store;

use super::engine::engine;
use super::sandbox::State;

/// `wit/since_v0.2.0`, the current version ([`WitVersion::CURRENT`]).
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.2.0",
        world: "plugin",
        exports: { default: async },
    });
}

/// The first release, `wit/since_v0.1.0` (frozen).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "plugin",
        exports: { default: async },
        with: {
            "vmguest:plugin/types": super::v0_2::vmguest::plugin::types,
        },
    });
}

/// The types every version shares.
pub use v0_2::vmguest::plugin::types;

/// A version of `vmguest:plugin` this host loads. The discriminant indexes per-version
/// tables (the linkers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WitVersion {
    V0_2 = 0,
    V0_1 = 1,
}

impl WitVersion {
    /// The version new plugins are written against (`New-Plugin`): the newest folder
    /// in `wit/`, which is where `scripts/build-plugins.sh` reads it from.
    pub const CURRENT: WitVersion = WitVersion::V0_2;

    /// Newest first.
    pub const ALL: [WitVersion; 2] = [WitVersion::V0_2, WitVersion::V0_1];

    pub fn parse(s: &str) -> Option<WitVersion> {
        WitVersion::ALL.into_iter().find(|v| v.as_str() == s.trim())
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_2 => "0.2.0",
            WitVersion::V0_1 => "0.1.0",
        }
    }

    /// "0.2.0, 0.1.0", for messages.
    pub fn supported() -> String {
        WitVersion::ALL.map(WitVersion::as_str).join(", ")
    }

    /// The linker with WASI p2 and this version's `host` import, built once per process:
    /// linking all of WASI costs more than loading a cached plugin.
    pub fn linker(self) -> Result<&'static Linker<State>, LinkerError> {
        static LINKERS: [OnceLock<Result<Linker<State>, LinkerError>>; 2] =
            [OnceLock::new(), OnceLock::new()];
        let slot = &LINKERS[self as usize];
        slot.get_or_init(|| {
            self.build_linker().map_err(|e| LinkerError {
                version: self,
                source: Arc::new(e),
            })
        })
        .as_ref()
        .map_err(Clone::clone)
    }

    fn build_linker(self) -> anyhow::Result<Linker<State>> {
        let mut linker = Linker::new(engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        type D = HasSelf<State>;
        match self {
            WitVersion::V0_2 => {
                v0_2::vmguest::plugin::host::add_to_linker::<State, D>(&mut linker, |s| s)?
            }
            WitVersion::V0_1 => {
                v0_1::vmguest::plugin::host::add_to_linker::<State, D>(&mut linker, |s| s)?
            }
        }
        Ok(linker)
    }

    /// The WIT text of this version: quoted in messages, copied into skeletons.
    pub const fn wit_text(self) -> &'static str {
        match self {
            WitVersion::V0_2 => include_str!("../../../wit/since_v0.2.0/plugin.wit"),
            WitVersion::V0_1 => include_str!("../../../wit/since_v0.1.0/plugin.wit"),
        }
    }

    /// `name: func(...) -> ...` as this version's WIT writes it.
    pub fn signature(self, function: &str) -> Option<String> {
        let head = format!("{function}: func(");
        self.wit_text()
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&head))
            .map(|l| l.trim_end_matches(';').to_owned())
    }

    /// The `iso-policy` export of a component built against this version.
    pub fn policy(self, pre: &InstancePre<State>) -> wasmtime::Result<PolicyExport> {
        Ok(match self {
            WitVersion::V0_2 => PolicyExport::V0_2(
                v0_2::exports::vmguest::plugin::iso_policy::GuestIndices::new(pre)?,
            ),
            WitVersion::V0_1 => PolicyExport::V0_1(
                v0_1::exports::vmguest::plugin::iso_policy::GuestIndices::new(pre)?,
            ),
        })
    }

    /// The `install-hooks` export of a component built against this version.
    pub fn hooks(self, pre: &InstancePre<State>) -> wasmtime::Result<HooksExport> {
        Ok(match self {
            WitVersion::V0_2 => HooksExport::V0_2(
                v0_2::exports::vmguest::plugin::install_hooks::GuestIndices::new(pre)?,
            ),
            WitVersion::V0_1 => HooksExport::V0_1(
                v0_1::exports::vmguest::plugin::install_hooks::GuestIndices::new(pre)?,
            ),
        })
    }
}

/// This build could not link WASI p2 and a version's `host` import; kept for the process
/// like the linker it stands for.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{source:#}")]
pub struct LinkerError {
    pub version: WitVersion,
    #[source]
    pub source: Arc<anyhow::Error>,
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A component's `iso-policy` export, of whichever version it was built against.
#[derive(Clone)]
pub enum PolicyExport {
    V0_2(v0_2::exports::vmguest::plugin::iso_policy::GuestIndices),
    V0_1(v0_1::exports::vmguest::plugin::iso_policy::GuestIndices),
}

impl PolicyExport {
    /// Bind every function with its typed signature, as a call does: a component whose
    /// export has another type fails here, at admission.
    pub fn typecheck(&self, store: &mut Store<State>, instance: &Instance) -> wasmtime::Result<()> {
        match self {
            PolicyExport::V0_2(ix) => ix.load(store, instance).map(drop),
            PolicyExport::V0_1(ix) => ix.load(store, instance).map(drop),
        }
    }

    pub async fn choose(
        &self,
        store: &mut Store<State>,
        instance: &Instance,
        ctx: &types::PolicyContext,
    ) -> wasmtime::Result<types::PolicyDecision> {
        match self {
            PolicyExport::V0_2(ix) => {
                let f = ix.load(&mut *store, instance)?;
                f.call_choose(store, ctx).await
            }
            PolicyExport::V0_1(ix) => {
                let f = ix.load(&mut *store, instance)?;
                f.call_choose(store, ctx).await
            }
        }
    }
}

/// A component's `install-hooks` export, of whichever version it was built against.
#[derive(Clone)]
pub enum HooksExport {
    V0_2(v0_2::exports::vmguest::plugin::install_hooks::GuestIndices),
    V0_1(v0_1::exports::vmguest::plugin::install_hooks::GuestIndices),
}

impl HooksExport {
    /// As [`PolicyExport::typecheck`].
    pub fn typecheck(&self, store: &mut Store<State>, instance: &Instance) -> wasmtime::Result<()> {
        match self {
            HooksExport::V0_2(ix) => ix.load(store, instance).map(drop),
            HooksExport::V0_1(ix) => ix.load(store, instance).map(drop),
        }
    }

    pub async fn pre_install(
        &self,
        store: &mut Store<State>,
        instance: &Instance,
        ctx: &types::InstallContext,
    ) -> wasmtime::Result<Result<(), types::Refusal>> {
        match self {
            HooksExport::V0_2(ix) => {
                let f = ix.load(&mut *store, instance)?;
                f.call_pre_install(store, ctx).await
            }
            HooksExport::V0_1(ix) => {
                let f = ix.load(&mut *store, instance)?;
                f.call_pre_install(store, ctx).await
            }
        }
    }

    pub async fn post_install(
        &self,
        store: &mut Store<State>,
        instance: &Instance,
        ctx: &types::InstallContext,
        outcome: &types::InstallOutcome,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            HooksExport::V0_2(ix) => {
                let f = ix.load(&mut *store, instance)?;
                f.call_post_install(store, ctx, outcome).await
            }
            HooksExport::V0_1(ix) => {
                let f = ix.load(&mut *store, instance)?;
                f.call_post_install(store, ctx, outcome).await
            }
        }
    }
}

fn level(l: types::Level) -> tracing::Level {
    match l {
        types::Level::Trace => tracing::Level::TRACE,
        types::Level::Debug => tracing::Level::DEBUG,
        types::Level::Info => tracing::Level::INFO,
        types::Level::Warn => tracing::Level::WARN,
        types::Level::Error => tracing::Level::ERROR,
    }
}

/// The `host` import of 0.2.0.
impl v0_2::vmguest::plugin::host::Host for State {
    fn log(&mut self, l: types::Level, message: String) {
        State::log(self, level(l), &message)
    }

    fn setting(&mut self, key: String) -> Option<String> {
        State::setting(self, &key)
    }

    fn granted_dirs(&mut self) -> Vec<String> {
        State::granted_dirs(self)
    }
}

/// The `host` import of 0.1.0: 0.2.0's without `granted-dirs`.
impl v0_1::vmguest::plugin::host::Host for State {
    fn log(&mut self, l: types::Level, message: String) {
        State::log(self, level(l), &message)
    }

    fn setting(&mut self, key: String) -> Option<String> {
        State::setting(self, &key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_quoted_from_each_versions_wit() {
        assert_eq!(
            WitVersion::V0_2.signature("choose").as_deref(),
            Some("choose: func(ctx: policy-context) -> policy-decision")
        );
        assert!(WitVersion::V0_1.signature("pre-install").is_some());
        assert_eq!(WitVersion::V0_2.signature("nonesuch"), None);
    }

    /// The scripts take the current version from the newest `wit/since_vX.Y.Z` folder.
    #[test]
    fn the_current_version_is_the_newest_and_the_newest_wit_folder() {
        assert_eq!(WitVersion::ALL[0], WitVersion::CURRENT);
        let wit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let newest = std::fs::read_dir(wit)
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().into_string().unwrap();
                let v = name.strip_prefix("since_v")?.to_owned();
                let key: Vec<u64> = v.split('.').map(|n| n.parse().unwrap()).collect();
                Some((key, v))
            })
            .max()
            .map(|(_, v)| v);
        assert_eq!(newest.as_deref(), Some(WitVersion::CURRENT.as_str()));
    }

    #[test]
    fn versions_parse_and_print_the_same() {
        for v in WitVersion::ALL {
            assert_eq!(WitVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(WitVersion::parse("9.9.0"), None);
        assert_eq!(WitVersion::supported(), "0.2.0, 0.1.0");
    }
}
