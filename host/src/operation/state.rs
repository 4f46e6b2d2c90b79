//! What the operation decided and learnt, typed. The steps read and write it here; the
//! report is built from it once, when the run is sealed (`seal.rs`), and nothing is ever
//! read back from the report.

use super::Operation;
use crate::hresult::Failure;
use crate::iso::manifest::Components;
use crate::iso::IcIso;
use crate::journal;
use crate::plugin::context;
use crate::report::{record_failure, InstallerRun, Mode, PhaseTiming, PluginRecord};
use crate::vm::{GuestOsInfo, Media};

/// The run's state, by concern.
#[derive(Default)]
pub(super) struct State {
    /// The guest's OS, as its agent tells it.
    pub(super) guest_os: Option<GuestOsInfo>,
    /// How the components reach the guest; `None` until decided, or after a veto.
    pub(super) mode: Option<Mode>,
    /// What goes into the guest; `None` until located, or after a veto.
    pub(super) components: Option<Components>,
    /// The IC ISO chosen.
    pub(super) located: Option<LocatedIso>,
    /// The drive the IC media goes into, and the user's media borrowed from it.
    pub(super) drive: DriveState,
    /// The installer's run through the agent.
    pub(super) installer: Option<InstallerRun>,
    /// The family's version in the guest.
    pub(super) versions: Versions,
    /// The installer asked for a restart of the guest.
    pub(super) reboot_required: bool,
    /// With -Restart: the guest was restarted and its agent came back.
    pub(super) restarted: Option<bool>,
    /// The journal: what an earlier run left and this run finished, and whether this
    /// run's own entry stays for the next one.
    pub(super) recovered: Option<journal::Entry>,
    pub(super) journal_pending: bool,
    /// What the plugins decided, in order.
    pub(super) plugins: Vec<PluginRecord>,
    /// Each step's time, in order.
    pub(super) phases: Vec<PhaseTiming>,
    /// The whole run's time, set as it is sealed.
    pub(super) total_ms: u64,
    /// The first failure: it decides the outcome.
    pub(super) failure: Option<Failure>,
    /// What else a reader should know, later failures included.
    pub(super) notes: Vec<String>,
}

/// The located IC ISO, as the report and the plugins name it.
pub(super) struct LocatedIso {
    pub(super) path: String,
    pub(super) volume_id: String,
    /// Where it was found.
    pub(super) source: String,
    pub(super) family: String,
    pub(super) version: Option<String>,
    /// Why it was chosen.
    pub(super) reason: String,
    /// Its SHA-256, once `iso-digest` has it.
    pub(super) sha256: Option<String>,
}

impl LocatedIso {
    pub(super) fn of(iso: &IcIso) -> LocatedIso {
        LocatedIso {
            path: iso.path.display().to_string(),
            volume_id: iso.volume_id.clone(),
            source: iso.source.clone(),
            family: iso.family.as_str().to_owned(),
            version: iso.version.clone(),
            reason: iso.reason.clone(),
            sha256: None,
        }
    }

    /// What the plugins' hooks see of it, with its SHA-256.
    pub(super) fn iso_info(&self, sha256: String) -> context::IsoInfo {
        context::IsoInfo {
            path: self.path.clone(),
            family: self.family.clone(),
            version: self.version.clone(),
            sha256,
            source: self.source.clone(),
        }
    }
}

/// The drive chosen for the IC media and what became of the user's media in it.
#[derive(Default)]
pub(super) struct DriveState {
    /// The drive the media went into.
    pub(super) id: Option<String>,
    /// The user's media taken out to make room.
    pub(super) borrowed: Option<Media>,
    /// Whether the borrowed media went back in.
    pub(super) restored: Option<bool>,
}

/// The family's version in the guest, where the guest can tell it.
#[derive(Default)]
pub(super) struct Versions {
    pub(super) before: Option<String>,
    pub(super) after: Option<String>,
    /// The guest runs the media's version (after the install, or already before it).
    pub(super) verified: Option<bool>,
}

impl Operation<'_> {
    /// Record a failure: the first decides the outcome, later ones become notes.
    pub(super) fn fail(&mut self, f: Failure) {
        let s = &mut self.state;
        record_failure(&self.vm, &mut s.failure, &mut s.notes, f);
    }

    pub(super) fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        tracing::info!(vm = %self.vm, "{note}");
        self.state.notes.push(note);
    }

    /// The located ISO, with its SHA-256, as the post-install hooks see it; `None`
    /// before `iso-digest`.
    pub(super) fn hashed_iso(&self) -> Option<context::IsoInfo> {
        let located = self.state.located.as_ref()?;
        Some(located.iso_info(located.sha256.clone()?))
    }

    /// The components that went in: the installer ran and exited 0.
    pub(super) fn installed_components(&self) -> Option<&Components> {
        self.state.components.as_ref().filter(|_| {
            self.state
                .installer
                .as_ref()
                .is_some_and(|i| i.exit_code == Some(0))
        })
    }
}
