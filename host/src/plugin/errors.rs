//! What goes wrong with a plugin, as types: a component refused at load, a plugin that
//! misbehaved in a call, an answer out of range. Each Display is the sentence users see.

use std::sync::Arc;

use std::path::PathBuf;

use super::limits::MAX_ANSWER;
use super::{engine, sandbox, versions, WitVersion};

/// A wasmtime error as a shareable cause (the errors that carry it are cloned with the
/// plugin's record).
pub(super) fn cause(e: wasmtime::Error) -> Arc<wasmtime::Error> {
    Arc::new(e)
}

/// Why a component was refused at load time (`Refused::Component`).
#[derive(Clone, Debug, thiserror::Error)]
pub enum ComponentError {
    #[error("{0}")]
    Load(#[source] Arc<engine::LoadError>),
    #[error("exports no vmguest:plugin interface (exports: {})", exports.join(", "))]
    NoInterface { exports: Vec<String> },
    #[error(
        "built against vmguest:plugin@{version}; this vmguest supports {}",
        WitVersion::supported()
    )]
    UnknownWit { version: String },
    #[error("exports interfaces of several WIT versions")]
    MixedWit,
    #[error(
        "the manifest says wit = {manifest:?}, but the component was built against {component}"
    )]
    ManifestWit {
        manifest: String,
        component: WitVersion,
    },
    /// This vmguest could not build the linker for the version (WASI and `host`).
    #[error("{0}")]
    Linker(#[source] versions::LinkerError),
    #[error("cannot be linked (imports outside WASI p2 and vmguest:plugin/host?): {0:#}")]
    Link(#[source] Arc<wasmtime::Error>),
    /// An export's functions are missing or not the WIT's, found when binding them.
    #[error("{iface} does not match the WIT: {source:#}")]
    Export {
        iface: &'static str,
        #[source]
        source: Arc<wasmtime::Error>,
    },
    #[error("implements neither iso-policy nor install-hooks")]
    NoExport,
    /// The admission check: an export's types are not those of the WIT it claims.
    #[error("{iface} does not match vmguest:plugin@{wit} ({source:#}); {signatures}")]
    Mismatch {
        iface: &'static str,
        wit: WitVersion,
        #[source]
        source: Arc<wasmtime::Error>,
        /// Each function of the export beside the WIT's signature for it.
        signatures: String,
    },
    /// The admission check could not run the component.
    #[error("{0}")]
    Call(#[source] sandbox::CallError),
}

/// What a plugin did wrong in a call.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    #[error("{0}")]
    Call(#[from] sandbox::CallError),
    #[error("{0}")]
    Answer(#[from] BadAnswer),
    /// `post-install` answered `err(text)`.
    #[error("post-install failed: {0}")]
    PostInstall(String),
}

/// A plugin misbehaved: DISP_E_EXCEPTION naming it. It has no `source()` on purpose: an
/// error record lists every cause of its chain, and this one is a single line.
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin:?} {fault}")]
pub struct Misbehaved {
    pub plugin: String,
    pub fault: Fault,
}

/// An answer that breaks the rules of the WIT contract's documentation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    #[error("answered with a {what} of {len} bytes (limit {MAX_ANSWER})")]
    TooLong { what: &'static str, len: usize },
    #[error("provided {0:?}, which is outside its granted directories")]
    OutsideGrants(String),
    #[error("provided {0:?}, which does not exist")]
    Missing(String),
    #[error("chose candidate {index}, but there are only {count} (0..{count})")]
    NoSuchCandidate { index: u32, count: usize },
    #[error("chose candidate {index} ({}), which is not usable: {reason}", path.display())]
    UnusableCandidate {
        index: u32,
        path: PathBuf,
        reason: String,
    },
    #[error("provided {path}, which is not a usable IC ISO: {reason}")]
    NotAnIso { path: String, reason: String },
    /// The choice has no installer for the guest's OS, and the media is not left for
    /// autorun.
    #[error(
        "{choice}, a {family} ISO with no install for {guest} guest (only autorun mode takes \
         any ISO)"
    )]
    NoInstall {
        choice: Choice,
        family: &'static str,
        /// The guest's kind with its article: "a Linux".
        guest: &'static str,
    },
}

/// What a plugin chose, as its failure messages name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Candidate { index: u32, path: PathBuf },
    Provided(String),
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Choice::Candidate { index, path } => {
                write!(f, "chose candidate {index} ({})", path.display())
            }
            Choice::Provided(path) => write!(f, "provided {path}"),
        }
    }
}

pub(super) fn check_len(what: &'static str, s: &str) -> Result<(), BadAnswer> {
    if s.len() > MAX_ANSWER {
        return Err(BadAnswer::TooLong { what, len: s.len() });
    }
    Ok(())
}
