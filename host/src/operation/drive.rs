//! Choosing the drive for the IC media, and the user's media to borrow from it.

use anyhow::Context;

use super::Operation;
use crate::hresult::{Failure, HResult, OrHResult, Outcome};
use crate::vm::{DvdDrive, Media, VmControl};

/// The drive chosen for the IC media, and the user's media to borrow from it, if any.
#[derive(Debug)]
pub struct Plan {
    pub(super) drive: DvdDrive,
    pub(super) borrow: Option<Media>,
}

impl Operation<'_> {
    /// An empty drive, else (with -ReplaceMedia and an agent) the first occupied one.
    pub(super) fn choose_drive(
        &mut self,
        vm: &mut dyn VmControl,
        has_agent: bool,
    ) -> Outcome<Plan> {
        let name = &self.vm;
        let drives = vm
            .dvd_drives()
            .context("query-block")
            .or_hresult(HResult::DispException)?;
        if let Some(empty) = drives.iter().find(|d| d.is_empty()) {
            self.state.drive.id = Some(empty.id.clone());
            return Ok(Plan {
                drive: empty.clone(),
                borrow: None,
            });
        }
        let Some(occupied) = drives.first() else {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!("VM {name:?} has no CD/DVD drive"),
            ));
        };
        let media = occupied.media.clone();
        let file = media.as_ref().map(|m| m.file.as_str()).unwrap_or("?");
        if !self.options.replace_media {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!(
                    "every CD/DVD drive of VM {name:?} holds media (drive {} has {file}); \
                     use -ReplaceMedia to borrow it",
                    occupied.id,
                ),
            ));
        }
        if !has_agent {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!(
                    "every CD/DVD drive of VM {name:?} holds media, and -ReplaceMedia needs the \
                     guest agent: in autorun mode the IC media stays in, so the borrowed media \
                     could not be put back"
                ),
            ));
        }
        if !vm.can_restore(occupied) {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!(
                    "every CD/DVD drive of VM {name:?} holds media, and drive {} holds {file}, \
                     which vmguest cannot put back exactly as it is, so it is not borrowed",
                    occupied.id,
                ),
            ));
        }
        self.state.drive.id = Some(occupied.id.clone());
        Ok(Plan {
            drive: occupied.clone(),
            borrow: media,
        })
    }
}
