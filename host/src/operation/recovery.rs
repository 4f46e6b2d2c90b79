//! The steps that keep a user's media safe across runs: one install per VM at a time
//! (`lock`), the journal of each media change (`journal`, closed by `settle`), and the
//! recovery of what an earlier, interrupted run left (`recover`). See `crate::journal`
//! and `crate::lock` for the mechanisms.

use anyhow::Context;

use super::media::eject_retrying;
use super::{sealed, InstallOptions, Mode, Mounted, Operation, Plan, Step, Target};
use crate::guest;
use crate::hresult::{chain, Failure, HResult, OrHResult, Outcome};
use crate::iso::IcIso;
use crate::journal::{self, JournalError};
use crate::lock::{self, VmLock};
use crate::progress::Progress;
use crate::report::InstallReport;
use crate::settings::Settings;
use crate::vm::{CallError, DvdDrive, Media, Vm, VmControl};

/// `Repair-VMMedia`: finish what an earlier run left in the journal for this VM (its IC
/// media out, the user's media back), and nothing else. With `what_if`, say what it
/// would do.
pub fn repair_target(
    target: Target<'_>,
    settings: &Settings,
    options: &InstallOptions,
    progress: &dyn Progress,
) -> InstallReport {
    sealed(target, settings, options, progress, Operation::repair).1
}

impl Operation<'_> {
    /// Resolve, lock, connect and recover; the message says what was repaired.
    fn repair(&mut self, target: Target<'_>) -> Option<String> {
        let (resolved, _lock, mut vm) = self.reach(target)?;
        let notes = self.state.notes.len();
        self.run(Step::Recover, |op| op.recover(resolved.get(), vm.as_mut()))?;
        Some(match self.state.notes.get(notes..).and_then(|n| n.last()) {
            Some(what) => what.clone(),
            None if self.journal.is_none() => {
                "nothing to repair: no state directory, so no journal".into()
            }
            None => format!("nothing to repair: no journal entry for VM {:?}", self.vm),
        })
    }
}

impl Operation<'_> {
    /// One install per VM at a time: wait for another vmguest that holds the VM.
    pub(super) fn lock(&mut self) -> Outcome<Option<VmLock>> {
        let vm = self.vm.clone();
        let Some(state) = &self.settings.state_dir else {
            return Ok(None);
        };
        let mut waited = false;
        let lock = lock::acquire(state, &vm, &self.identity, self.options.timeout, || {
            tracing::info!("waiting for another vmguest install on VM {vm:?}");
            waited = true;
        })
        .map_err(|e| Failure::new(HResult::DispException, e))?;
        if waited {
            self.note(format!("waited for another vmguest install on VM {vm:?}"));
        }
        Ok(Some(lock))
    }

    /// Finish what an earlier run left in the journal: its IC media out, the user's media
    /// back. A guest that still holds the IC media's tray keeps the entry open. Only this
    /// VM's own entry is read: its identity names this host (`crate::journal`), so what
    /// another host recorded (its media, its guest pids) never reaches this VM.
    pub(super) fn recover(&mut self, vm_handle: &dyn Vm, vm: &mut dyn VmControl) -> Outcome<()> {
        let Some(journal) = self.journal.clone() else {
            return Ok(());
        };
        let failed = |e: JournalError| Failure::new(HResult::DispException, e);
        let Some(entry) = journal.get(&self.identity).map_err(failed)? else {
            return Ok(());
        };
        let user = entry.user_media.as_ref().map(|m| m.file.as_str());
        let earlier = format!(
            "an earlier vmguest run (pid {}) left drive {} with {} in it",
            entry.pid,
            entry.drive,
            entry.ic_name()
        );
        let drives = vm
            .dvd_drives()
            .context("query-block")
            .or_hresult(HResult::DispException)?;
        let Some(drive) = drives.iter().find(|d| d.id == entry.drive) else {
            self.note(format!(
                "{earlier}; the drive no longer exists, so there is nothing to put back (was: {})",
                user.unwrap_or("empty")
            ));
            return journal.remove(&self.identity).map_err(failed);
        };
        let now = drive.media.as_ref().map(|m| m.file.as_str());
        if now == user || (now.is_some() && now != Some(entry.ic_media.as_str())) {
            self.note(format!(
                "{earlier}; the drive now holds {}, which is left as it is",
                now.unwrap_or("nothing")
            ));
            return journal.remove(&self.identity).map_err(failed);
        }
        if self.options.what_if {
            self.note(format!(
                "{earlier}; would eject it and put {} back first",
                user.unwrap_or("nothing")
            ));
            return Ok(());
        }
        if now.is_some() {
            if let Some(mount) = &entry.guest_mount {
                self.release_guest(vm_handle, &entry, mount);
            }
            match eject_retrying(vm, &entry.drive, true) {
                Ok(()) => {}
                Err(e @ CallError::TrayLocked(_)) => {
                    return Err(Failure::new(
                        HResult::MediaUnmountFail,
                        anyhow::Error::new(e).context(format!(
                            "{earlier}, and the guest still holds it; {} goes back once the \
                             guest lets go (the journal keeps the entry)",
                            user.unwrap_or("the empty drive")
                        )),
                    ))
                }
                Err(e) => {
                    return Err(Failure::new(
                        HResult::DispException,
                        anyhow::Error::new(e).context(format!("{earlier}; ejecting it")),
                    ))
                }
            }
        }
        let ic = Media::iso(entry.ic_media.clone());
        if now.is_some() {
            self.unstage(vm, &ic);
        }
        let mounted = Mounted {
            drive: DvdDrive {
                tray_open: entry.tray_open,
                ..drive.clone()
            },
            ic,
            borrowed: entry.user_media.clone(),
        };
        match &mounted.borrowed {
            Some(_) => self.restore_media(vm, &mounted)?,
            None if !entry.tray_open => {
                let _ = vm.close_tray(&entry.drive);
            }
            None => {}
        }
        self.state.recovered = Some(entry.clone());
        self.note(format!(
            "{earlier}; finished its restore: {} is back in drive {}",
            user.unwrap_or("nothing (the drive was empty)"),
            entry.drive
        ));
        journal.remove(&self.identity).map_err(failed)
    }

    /// Ask the guest, through its agent, to end an earlier run's installer and unmount
    /// its media. Without an agent the eject still tries; the guest decides.
    fn release_guest(&mut self, vm_handle: &dyn Vm, entry: &journal::Entry, mount: &str) {
        let released = match vm_handle.agent() {
            Ok(Some(mut agent)) if entry.guest_windows => {
                guest::windows::release(agent.as_mut(), entry.guest_pid)
            }
            Ok(Some(mut agent)) => guest::release(agent.as_mut(), entry.guest_pid, mount),
            Ok(None) => return,
            Err(e) => Err(anyhow::Error::new(e)),
        };
        let pid = entry.guest_pid.map_or("unknown".into(), |p| p.to_string());
        match released {
            // Windows keeps no mount to undo: the drive letter goes with the media.
            Ok(()) if entry.guest_windows => self.note(format!(
                "ended the earlier run's installer (guest pid {pid}, taskkill) on {mount}"
            )),
            Ok(()) => self.note(format!(
                "ended the earlier run's installer (guest pid {pid}) and unmounted {mount}"
            )),
            Err(e) => self.note(format!("could not release the media in the guest: {e:#}")),
        }
    }

    /// Record the media change about to be made, durably, before making it. Autorun
    /// needs no entry: it never borrows, and its IC media stays in on purpose, so a crash
    /// leaves the drive exactly as success would.
    pub(super) fn journal(&mut self, plan: &Plan, ic: &Media, iso: &IcIso) -> Outcome<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        if self.state.mode == Some(Mode::Autorun) && plan.borrow.is_none() {
            return Ok(());
        }
        let mut entry = journal::Entry::new(
            &self.vm,
            &self.identity,
            &plan.drive.id,
            plan.borrow.clone(),
            &ic.file,
        );
        entry.tray_open = plan.drive.tray_open;
        entry.host = self.location.clone();
        entry.ic_iso = Some(iso.path.display().to_string());
        journal.record(&entry).map_err(|e| {
            Failure::new(
                HResult::DispException,
                anyhow::Error::new(e).context("recording the media change; nothing was changed"),
            )
        })?;
        self.journaled = Some(entry);
        Ok(())
    }

    /// Close this run's journal entry if the drive is back as it was found (or holds the
    /// IC media on purpose, for autorun); otherwise keep it for the next run, and say so.
    pub(super) fn settle(&mut self, vm: &mut dyn VmControl, left_for_autorun: bool) {
        let (Some(journal), Some(entry)) = (self.journal.clone(), self.journaled.take()) else {
            return;
        };
        let user = entry.user_media.as_ref().map(|m| m.file.clone());
        // Media described exactly is back only if its description is.
        let exact = |m: &Media| (m.file.clone(), m.exact.clone());
        let back = left_for_autorun
            || vm.dvd_drives().is_ok_and(|drives| {
                drives
                    .iter()
                    .find(|d| d.id == entry.drive)
                    .is_some_and(|d| {
                        d.media.as_ref().map(exact) == entry.user_media.as_ref().map(exact)
                    })
            });
        if back {
            if let Err(e) = journal.remove(&entry.identity) {
                self.note(format!("closing the journal entry: {}", chain(&e)));
            }
            return;
        }
        self.state.journal_pending = true;
        self.note(format!(
            "the journal keeps this run's entry ({}): the next vmguest run on this VM, or \
             Repair-VMMedia, ejects the IC media and puts {} back into drive {}",
            journal.dir().display(),
            user.as_deref().unwrap_or("nothing"),
            entry.drive
        ));
    }
}
