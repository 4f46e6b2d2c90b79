//! What can go wrong in reaching a VM, typed, and its one mapping to the contract's
//! [`HResult`]s: backends return [`VmError`], the operation's boundary converts it.

use crate::hresult::{Failure, HResult};

use super::CallError;

/// Why a VM could not be found or reached.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The host knows no VM by that name; the text names the host.
    #[error("{0}")]
    Unknown(String),
    /// The name fits several VMs of the host (a cluster's VMs share names); the text
    /// lists them. VM_E_VM_UNKNOWN like [`VmError::Unknown`]: the contract's outcome for
    /// a name that does not single out a VM. Unlike it, this is not "not here", so a
    /// search over many hosts reports it instead of looking elsewhere.
    #[error("{0}")]
    Ambiguous(String),
    /// The VM is known, but its monitor does not answer: it is not running.
    #[error("{what}")]
    NotRunning {
        what: String,
        #[source]
        source: CallError,
    },
    /// The monitor answers, but cannot be used (busy, or not QEMU's).
    #[error("{what}")]
    Monitor {
        what: String,
        #[source]
        source: CallError,
    },
    /// The host itself: its connection, its listing, a lookup it could not answer.
    #[error("{what}")]
    Host {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The VM's definition could not be read.
    #[error(transparent)]
    Definition(anyhow::Error),
}

impl VmError {
    /// The contract's outcome for this error.
    pub fn hresult(&self) -> HResult {
        match self {
            VmError::Unknown(_) | VmError::Ambiguous(_) => HResult::VmUnknown,
            VmError::NotRunning { .. } => HResult::VmNotRunning,
            VmError::Monitor { .. } | VmError::Host { .. } | VmError::Definition(_) => {
                HResult::DispException
            }
        }
    }
}

impl From<VmError> for Failure {
    fn from(e: VmError) -> Failure {
        let hresult = e.hresult();
        match e {
            VmError::Unknown(msg) => Failure::msg(hresult, msg),
            VmError::Definition(error) => Failure::new(hresult, error),
            e => Failure::new(hresult, anyhow::Error::new(e)),
        }
    }
}
