//! The result object of one install: what the CLI prints and library callers inspect.

use serde::Serialize;

use crate::hresult::{Failure, HResult};
use crate::iso::manifest::Components;
use crate::vm::{GuestOsInfo, Media};

/// How the components reach the guest.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The installer ran unattended through the guest agent and was waited for.
    Agent,
    /// The media was inserted; the guest must run setup itself, as the original API did.
    Autorun,
}

#[derive(Clone, Debug, Serialize)]
/// How long one phase of the install took.
pub struct PhaseTiming {
    /// The step: `resolve`, `connect`, `locate-iso`, `stage-iso`, ...
    pub phase: &'static str,
    /// In milliseconds.
    pub ms: u64,
}

#[derive(Clone, Debug, Serialize)]
/// The installer's run inside the guest.
pub struct InstallerRun {
    /// The command line, as run.
    pub command: String,
    /// Its exit code; `None` when a signal ended it.
    pub exit_code: Option<i64>,
    /// The signal that ended it, on Linux guests.
    pub signal: Option<i64>,
    /// Its standard output, as the agent returned it.
    pub stdout: String,
    /// Its standard error, as the agent returned it.
    pub stderr: String,
    /// How long it ran, in milliseconds.
    pub ms: u64,
}

/// Error record data: PowerShell's category plus the cause chain.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorDetail {
    /// PowerShell's `ErrorCategory` for the outcome.
    pub category: &'static str,
    /// The cause chain, outermost first.
    pub causes: Vec<String>,
}

/// One record of what a plugin decided, for the install result.
#[derive(Clone, Debug, Serialize)]
pub struct PluginRecord {
    /// The plugin's name.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// Where it was called: `pre-install`, `post-install`, ...
    pub stage: &'static str,
    /// What it decided.
    pub decision: String,
    /// How long the call took, in milliseconds.
    pub ms: f64,
}

/// Built by the operation from its own typed state, once, when it is sealed; callers
/// read it (and the CLI prints it), they do not build one.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct InstallReport {
    /// The VM's name.
    pub vm: String,
    /// The host the VM is on: a libvirt URI or a socket directory.
    pub host: Option<String>,
    /// The outcome: one of the seven.
    pub result: HResult,
    /// The outcome's value in hex, `0xA0040206` style.
    pub hresult: String,
    /// What happened, in one sentence.
    pub message: String,
    /// Whether this was a `-WhatIf` run, which changes nothing.
    pub what_if: bool,
    /// How the components reach the guest; none when the install was refused before the
    /// VM was touched (a pre-install veto).
    pub mode: Option<Mode>,
    /// The IC ISO chosen, by path.
    pub iso: Option<String>,
    /// Its ISO 9660 volume ID.
    pub iso_volume_id: Option<String>,
    /// Where it was found.
    pub iso_source: Option<String>,
    /// Its IC family (virtio-win, VirtualBox, VMware Tools, ...).
    pub iso_family: Option<String>,
    /// Its version, where the media tells it.
    pub iso_version: Option<String>,
    /// SHA-256 of the inserted ISO, for audit.
    pub iso_sha256: Option<String>,
    /// Why this ISO was chosen.
    pub iso_reason: Option<String>,
    /// The drive the media went into.
    pub drive: Option<String>,
    /// The user's media that the drive held, taken out to make room.
    pub borrowed_media: Option<Media>,
    /// Whether the borrowed media went back in.
    pub media_restored: Option<bool>,
    /// An earlier run's journal entry that this run finished: its IC media out, the
    /// user's media back (`journal.rs`).
    pub recovered: Option<crate::journal::Entry>,
    /// This run's media change stays in the journal for the next run to finish.
    pub journal_pending: bool,
    /// What the guest agent reported of the OS.
    pub guest_os: Option<GuestOsInfo>,
    /// The components this install puts (or tried to put) into the guest; none after a
    /// pre-install veto, as nothing was going to go in.
    pub components: Option<Components>,
    /// The installer's run, when it ran through the agent.
    pub installer: Option<InstallerRun>,
    /// The family's version in the guest before and after, where the guest can tell it
    /// (`[verify]` in the manifest, `VBoxControl --version`, `vmware-toolbox-cmd -v`).
    pub version_before: Option<String>,
    /// See `version_before`.
    pub version_after: Option<String>,
    /// The guest runs the media's version (after the install, or already before it).
    pub verified: Option<bool>,
    /// The installer asked for a restart (Windows exit codes 3010 and 1641).
    pub reboot_required: bool,
    /// With -Restart: the guest was restarted and its agent came back.
    pub restarted: Option<bool>,
    /// How long each phase took.
    pub phases: Vec<PhaseTiming>,
    /// How long the install took, in milliseconds.
    pub total_ms: u64,
    /// What else happened that a reader should know.
    pub notes: Vec<String>,
    /// What each plugin decided, in order.
    pub plugins: Vec<PluginRecord>,
    /// The error record, when the install failed.
    pub error: Option<ErrorDetail>,
    /// The failure itself, with its cause chain.
    #[serde(skip)]
    pub failure: Option<Failure>,
}

impl InstallReport {
    // Built by the operation (and the CLI, for a host that failed); not for callers.
    #[doc(hidden)]
    pub fn new(vm: &str) -> InstallReport {
        InstallReport {
            vm: vm.to_owned(),
            host: None,
            result: HResult::SOk,
            hresult: HResult::SOk.hex(),
            message: String::new(),
            what_if: false,
            mode: None,
            iso: None,
            iso_volume_id: None,
            iso_source: None,
            iso_family: None,
            iso_version: None,
            iso_sha256: None,
            iso_reason: None,
            drive: None,
            borrowed_media: None,
            media_restored: None,
            recovered: None,
            journal_pending: false,
            guest_os: None,
            components: None,
            installer: None,
            version_before: None,
            version_after: None,
            verified: None,
            reboot_required: false,
            restarted: None,
            phases: Vec::new(),
            total_ms: 0,
            notes: Vec::new(),
            plugins: Vec::new(),
            error: None,
            failure: None,
        }
    }

    #[doc(hidden)]
    /// Record a failure after the operation's own ([`record_failure`]).
    pub fn fail(&mut self, f: Failure) {
        record_failure(&self.vm, &mut self.failure, &mut self.notes, f);
    }

    #[doc(hidden)]
    /// Fill the outcome fields from the recorded failure, if any.
    pub fn seal(&mut self, success_message: String) {
        match &self.failure {
            Some(f) => {
                self.result = f.hresult;
                self.message = format!("{:#}", f.error);
                self.error = Some(ErrorDetail {
                    category: f.hresult.category(),
                    causes: f.causes(),
                });
            }
            None => {
                self.result = HResult::SOk;
                self.message = success_message;
            }
        }
        self.hresult = self.result.hex();
    }
}

/// Record a failure. The first one decides the outcome; later ones (usually from
/// clean-up) are kept as notes so nothing is hidden.
pub(crate) fn record_failure(
    vm: &str,
    first: &mut Option<Failure>,
    notes: &mut Vec<String>,
    f: Failure,
) {
    tracing::debug!(vm = %vm, "{f}");
    if first.is_some() {
        notes.push(format!("{}: {:#}", f.hresult.name(), f.error));
    } else {
        *first = Some(f);
    }
}
