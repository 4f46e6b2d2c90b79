//! The result object of one install: what the CLI prints and library callers inspect.

use serde::Serialize;

use crate::hresult::{Failure, HResult};
use crate::manifest::Components;
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
pub struct PhaseTiming {
    pub phase: &'static str,
    pub ms: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct InstallerRun {
    pub command: String,
    pub exit_code: Option<i64>,
    pub signal: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    pub ms: u64,
}

/// Error record data: PowerShell's category plus the cause chain.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorDetail {
    pub category: &'static str,
    pub causes: Vec<String>,
}

/// One record of what a plugin decided, for the install result.
#[derive(Clone, Debug, Serialize)]
pub struct PluginRecord {
    pub plugin: String,
    pub version: String,
    pub stage: &'static str,
    pub decision: String,
    pub ms: f64,
}

/// Built by the operation from its own typed state, once, when it is sealed; callers
/// read it (and the CLI prints it), they do not build one.
#[derive(Debug, Serialize)]
#[non_exhaustive]
pub struct InstallReport {
    pub vm: String,
    /// The host the VM is on: a libvirt URI or a socket directory.
    pub host: Option<String>,
    pub result: HResult,
    pub hresult: String,
    pub message: String,
    pub what_if: bool,
    /// How the components reach the guest; none when the install was refused before the
    /// VM was touched (a pre-install veto).
    pub mode: Option<Mode>,
    pub iso: Option<String>,
    pub iso_volume_id: Option<String>,
    pub iso_source: Option<String>,
    pub iso_family: Option<String>,
    pub iso_version: Option<String>,
    /// SHA-256 of the inserted ISO, for audit.
    pub iso_sha256: Option<String>,
    /// Why this ISO was chosen.
    pub iso_reason: Option<String>,
    pub drive: Option<String>,
    pub borrowed_media: Option<Media>,
    pub media_restored: Option<bool>,
    /// An earlier run's journal entry that this run finished: its IC media out, the
    /// user's media back (`journal.rs`).
    pub recovered: Option<crate::journal::Entry>,
    /// This run's media change stays in the journal for the next run to finish.
    pub journal_pending: bool,
    pub guest_os: Option<GuestOsInfo>,
    /// The components this install puts (or tried to put) into the guest; none after a
    /// pre-install veto, as nothing was going to go in.
    pub components: Option<Components>,
    pub installer: Option<InstallerRun>,
    /// The family's version in the guest before and after, where the guest can tell it
    /// (`[verify]` in the manifest, `VBoxControl --version`, `vmware-toolbox-cmd -v`).
    pub version_before: Option<String>,
    pub version_after: Option<String>,
    /// The guest runs the media's version (after the install, or already before it).
    pub verified: Option<bool>,
    /// The installer asked for a restart (Windows exit codes 3010 and 1641).
    pub reboot_required: bool,
    /// With -Restart: the guest was restarted and its agent came back.
    pub restarted: Option<bool>,
    pub phases: Vec<PhaseTiming>,
    pub total_ms: u64,
    pub notes: Vec<String>,
    /// What each plugin decided, in order.
    pub plugins: Vec<PluginRecord>,
    pub error: Option<ErrorDetail>,
    #[serde(skip)]
    pub failure: Option<Failure>,
}

impl InstallReport {
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

    /// Record a failure. The first one decides the outcome; later ones (usually from
    /// clean-up) are kept as notes so nothing is hidden.
    pub fn fail(&mut self, f: Failure) {
        tracing::debug!(vm = %self.vm, "{f}");
        if self.failure.is_some() {
            self.notes
                .push(format!("{}: {:#}", f.hresult.name(), f.error));
        } else {
            self.failure = Some(f);
        }
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        tracing::info!(vm = %self.vm, "{note}");
        self.notes.push(note);
    }

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
