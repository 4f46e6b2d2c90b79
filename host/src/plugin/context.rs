//! vmguest's types to and from the WIT types (shared by every WIT version).

use super::versions::types as wit;

use crate::hresult::HResult;
use crate::iso::manifest::Components;
use crate::iso::{Candidate, Selection};
use crate::kinds::GuestKind;
use crate::report::PhaseTiming;
use crate::vm::GuestOsInfo;
pub use wit::IsoInfo;

pub fn vm_info(name: &str) -> wit::VmInfo {
    wit::VmInfo {
        name: name.to_owned(),
        hypervisor: "qemu".into(),
    }
}

fn kind(kind: GuestKind) -> wit::GuestKind {
    match kind {
        GuestKind::Linux => wit::GuestKind::Linux,
        GuestKind::Windows => wit::GuestKind::Windows,
        GuestKind::Unknown => wit::GuestKind::Unknown,
    }
}

pub fn guest_os(info: Option<&GuestOsInfo>) -> wit::GuestOs {
    wit::GuestOs {
        kind: kind(GuestKind::of(info)),
        id: info.and_then(|i| i.id.clone()),
        pretty_name: info.and_then(|i| i.pretty_name.clone()),
        version_id: info.and_then(|i| i.version_id.clone()),
        kernel_release: info.and_then(|i| i.kernel_release.clone()),
        machine: info.and_then(|i| i.machine.clone()),
    }
}

/// A guest of a given kind with nothing else known, for `Test-Plugin`.
pub fn guest_of_kind(k: GuestKind) -> wit::GuestOs {
    wit::GuestOs {
        kind: kind(k),
        ..guest_os(None)
    }
}

pub fn candidate(c: &Candidate) -> wit::Candidate {
    wit::Candidate {
        path: c.named.path.display().to_string(),
        family: c.family().map(|f| f.as_str().to_owned()),
        version: c.version(),
        volume_id: c.volume_id.clone(),
        source: c.named.source.clone(),
        usable: c.identity.is_ok(),
        reason: c.reason.clone(),
    }
}

pub fn policy_context(
    vm: &wit::VmInfo,
    guest: &wit::GuestOs,
    sel: &Selection,
) -> wit::PolicyContext {
    wit::PolicyContext {
        vm: vm.clone(),
        guest: guest.clone(),
        candidates: sel.candidates.iter().map(candidate).collect(),
        default_choice: sel.chosen.map(|i| i as u32),
    }
}

pub fn install_context(
    vm: &str,
    guest: Option<&GuestOsInfo>,
    iso: Option<wit::IsoInfo>,
    what_if: bool,
) -> wit::InstallContext {
    wit::InstallContext {
        vm: vm_info(vm),
        guest: guest_os(guest),
        iso,
        what_if,
    }
}

/// What a post-install hook sees: the sealed outcome (`result`, `message`), the
/// components that went in, and how long each phase took.
pub fn outcome(
    result: HResult,
    message: &str,
    installed: Option<&Components>,
    total_ms: u64,
    phases: &[PhaseTiming],
) -> wit::InstallOutcome {
    wit::InstallOutcome {
        hresult: result.value(),
        name: result.name().to_owned(),
        message: message.to_owned(),
        components: installed.map(|c| format!("{} {}", c.name, c.version)),
        total_ms,
        phases: phases
            .iter()
            .map(|p| wit::Phase {
                name: p.phase.to_owned(),
                ms: p.ms,
            })
            .collect(),
    }
}

/// The closed set of outcomes a plugin may choose; there is no way to name another.
pub fn hresult(e: wit::ContractError) -> HResult {
    match e {
        wit::ContractError::VmNotRunning => HResult::VmNotRunning,
        wit::ContractError::VmUnknown => HResult::VmUnknown,
        wit::ContractError::DriveInvalid => HResult::DriveInvalid,
        wit::ContractError::MediaUnmountFail => HResult::MediaUnmountFail,
        wit::ContractError::Unexpected => HResult::DispException,
        wit::ContractError::FileNotFound => HResult::FileNotFound,
    }
}
