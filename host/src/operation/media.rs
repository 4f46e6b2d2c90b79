//! Staging and inserting the IC media, and taking it out again with the user's media
//! put back, on every path.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Operation, Plan, Step};
use crate::hresult::{chain, Failure, HResult, OrHResult, Outcome};
use crate::iso::IcIso;
use crate::vm::{CallError, DvdDrive, Media, VmControl};

/// How long an unlocked tray may take to let go after the guest unmounts.
const EJECT_RETRY: Duration = Duration::from_secs(3);

/// The IC media `ic` is in `drive`; `borrowed` is the user's media waiting to go back.
#[derive(Debug)]
pub struct Mounted {
    pub(super) drive: DvdDrive,
    pub(super) ic: Media,
    pub(super) borrowed: Option<Media>,
}

impl Operation<'_> {
    /// Borrow the user's media if the plan says so, then insert the IC media. If the
    /// insert fails, the borrowed media goes straight back. Both are journaled first.
    pub(super) fn mount(
        &mut self,
        vm: &mut dyn VmControl,
        plan: Plan,
        iso: &IcIso,
    ) -> Option<Mounted> {
        let ic = self.run(Step::StageIso, |_| {
            // The digest the operation waited for before mounting: ready, not hashed again.
            let sha256 = iso.sha256.wait()?;
            vm.stage_iso(&iso.file, &iso.path, &sha256)
                .with_context(|| format!("handing {} to the hypervisor", iso.path.display()))
                .or_hresult(HResult::DispException)
        })?;
        let borrowed = self
            .run(Step::Journal, |op| op.journal(&plan, &ic, iso))
            .and_then(|()| match plan.borrow {
                Some(media) => self.run(Step::BorrowMedia, |op| {
                    op.borrow_media(vm, &plan.drive, media)
                }),
                None => Some(None),
            });
        let Some(borrowed) = borrowed else {
            self.unstage(vm, &ic);
            return None;
        };
        let mounted = Mounted {
            drive: plan.drive,
            ic,
            borrowed,
        };
        if self
            .run(Step::InsertIc, |_| {
                insert_ic(vm, &mounted.drive, &mounted.ic)
            })
            .is_none()
        {
            self.unstage(vm, &mounted.ic);
            if mounted.borrowed.is_some() {
                self.run(Step::RestoreMedia, |op| op.restore_media(vm, &mounted));
            }
            return None;
        }
        Some(mounted)
    }

    /// The hypervisor may let go of the staged IC ISO: it is out of the drive, or never
    /// went in. A failure only leaves a descriptor in QEMU, so it is a note.
    pub(super) fn unstage(&mut self, vm: &mut dyn VmControl, ic: &Media) {
        if let Err(e) = vm.unstage_iso(ic) {
            self.note(format!("could not release {}: {}", ic.file, chain(&e)));
        }
    }

    pub(super) fn borrow_media(
        &mut self,
        vm: &mut dyn VmControl,
        drive: &DvdDrive,
        media: Media,
    ) -> Outcome<Option<Media>> {
        match vm.eject_media(&drive.id) {
            Ok(()) => {
                self.note(format!("borrowed drive {} from {}", drive.id, media.file));
                self.state.drive.borrowed = Some(media.clone());
                Ok(Some(media))
            }
            Err(e @ CallError::TrayLocked(_)) => Err(Failure::new(
                HResult::MediaUnmountFail,
                anyhow::Error::new(e).context(format!(
                    "cannot borrow drive {}: the guest locked its tray; {} stays in",
                    drive.id, media.file
                )),
            )),
            Err(e) => Err(Failure::new(
                HResult::DispException,
                anyhow::Error::new(e).context(format!("ejecting {} from {}", media.file, drive.id)),
            )),
        }
    }

    /// Eject the IC media and put borrowed media back. `delivered` says whether the
    /// components went in, for the message when the media cannot come out.
    pub(super) fn unmount(
        &mut self,
        vm: &mut dyn VmControl,
        mounted: Mounted,
        delivered: bool,
    ) -> Option<()> {
        self.run(Step::EjectIc, |op| op.eject_ic(vm, &mounted, delivered))?;
        self.unstage(vm, &mounted.ic);
        if mounted.borrowed.is_some() {
            return self.run(Step::RestoreMedia, |op| op.restore_media(vm, &mounted));
        }
        // Leave the tray as it was found: eject opens it.
        if !mounted.drive.tray_open {
            if let Err(e) = vm.close_tray(&mounted.drive.id) {
                self.note(format!(
                    "could not close the tray of {}: {e}",
                    mounted.drive.id
                ));
            }
        }
        Some(())
    }

    pub(super) fn eject_ic(
        &mut self,
        vm: &mut dyn VmControl,
        m: &Mounted,
        delivered: bool,
    ) -> Outcome<()> {
        let drive = &m.drive.id;
        // Retrying only helps while the guest can still release its tray.
        let result = eject_retrying(vm, drive, !self.agent_gone);
        let Err(e) = result else {
            return Ok(());
        };
        let hresult = match e {
            CallError::TrayLocked(_) => HResult::MediaUnmountFail,
            _ => HResult::DispException,
        };
        let what = match (&self.state.components, delivered) {
            (Some(c), true) => format!(
                "{} {} were installed, but the IC media is still in drive {drive}",
                c.name, c.version
            ),
            _ => format!("the IC media is still in drive {drive}"),
        };
        let borrowed = match &m.borrowed {
            Some(media) => {
                self.state.drive.restored = Some(false);
                format!("; borrowed media {} could not be put back", media.file)
            }
            None => String::new(),
        };
        Err(Failure::new(
            hresult,
            anyhow::Error::new(e).context(format!("{what}{borrowed}")),
        ))
    }

    /// Put the borrowed media back and check, through the hypervisor, that it is there.
    pub(super) fn restore_media(&mut self, vm: &mut dyn VmControl, m: &Mounted) -> Outcome<()> {
        let Some(media) = &m.borrowed else {
            return Ok(());
        };
        let drive = &m.drive.id;
        let result = vm
            .insert_media(drive, media)
            .map_err(anyhow::Error::new)
            .and_then(|()| {
                let now = vm
                    .dvd_drives()?
                    .into_iter()
                    .find(|d| d.id == *drive)
                    .and_then(|d| d.media);
                anyhow::ensure!(
                    now.as_ref().map(|m| &m.file) == Some(&media.file),
                    "drive {drive} holds {:?} after restoring",
                    now.map(|m| m.file)
                );
                Ok(())
            });
        self.state.drive.restored = Some(result.is_ok());
        result
            .with_context(|| format!("putting borrowed media {} back into {drive}", media.file))
            .or_hresult(HResult::DispException)
    }
}

/// Eject without force; with `retry`, give a guest that is letting go of a locked tray
/// a few seconds to do so.
pub(super) fn eject_retrying(
    vm: &mut dyn VmControl,
    drive: &str,
    retry: bool,
) -> Result<(), CallError> {
    let give_up = Instant::now() + EJECT_RETRY;
    loop {
        match vm.eject_media(drive) {
            Err(CallError::TrayLocked(_)) if retry && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
}

fn insert_ic(vm: &mut dyn VmControl, drive: &DvdDrive, ic: &Media) -> Outcome<()> {
    vm.insert_media(&drive.id, ic)
        .with_context(|| format!("inserting {} into drive {}", ic.file, drive.id))
        .or_hresult(HResult::DispException)
}
