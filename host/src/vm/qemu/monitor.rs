//! [`VmControl`] over QMP: one QEMU monitor socket.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::vm::qmp::Qmp;
use crate::vm::{CallError, DvdDrive, Media, VmControl};

/// A VM's monitor. The connection is let go between media steps ([`VmControl::release`])
/// and made again by the next call: QEMU serves one QMP client at a time, and on a
/// Proxmox node pvestatd polls every VM's socket every few seconds.
pub struct QemuVm {
    socket: PathBuf,
    timeout: Duration,
    qmp: Option<Qmp>,
    /// An `add-fd` set not yet opened by a drive: QEMU closes such a set's descriptor
    /// when its last monitor goes, so the connection is kept until the insert.
    staged: bool,
}

impl QemuVm {
    /// Connect now: a socket that does not answer is a VM that is not running.
    pub fn connect(qmp_socket: &Path, timeout: Duration) -> Result<QemuVm, CallError> {
        Ok(QemuVm {
            socket: qmp_socket.to_owned(),
            timeout,
            qmp: Some(Qmp::connect(qmp_socket, timeout)?),
            staged: false,
        })
    }

    /// The connection, made again if it was let go.
    pub fn qmp(&mut self) -> Result<&mut Qmp, CallError> {
        match &mut self.qmp {
            Some(qmp) => Ok(qmp),
            slot => {
                tracing::debug!(socket = %self.socket.display(), "QMP: connecting again");
                Ok(slot.insert(Qmp::connect(&self.socket, self.timeout)?))
            }
        }
    }
}

/// Our view of `query-status`: the generated `RunState` enum would reject states added
/// by QEMU versions newer than the crate's schema.
#[derive(Deserialize)]
struct StatusView {
    status: String,
}

/// Our view of `query-block`, tolerant of the fields that differ between QEMU versions.
#[derive(Deserialize)]
struct BlockView {
    qdev: Option<String>,
    /// Only drives with a tray (CD/DVD) have this key.
    tray_open: Option<bool>,
    #[serde(default)]
    locked: bool,
    inserted: Option<InsertedView>,
}

#[derive(Deserialize)]
struct InsertedView {
    file: String,
    drv: String,
    ro: bool,
}

impl VmControl for QemuVm {
    fn run_state(&mut self) -> Result<String, CallError> {
        let s: StatusView = self.qmp()?.execute_as(qapi_qmp::query_status {})?;
        Ok(s.status)
    }

    fn dvd_drives(&mut self) -> Result<Vec<DvdDrive>, CallError> {
        let blocks: Vec<BlockView> = self.qmp()?.execute_as(qapi_qmp::query_block {})?;
        Ok(blocks
            .into_iter()
            .filter_map(|b| {
                let tray_open = b.tray_open?;
                Some(DvdDrive {
                    id: b.qdev?,
                    tray_open,
                    locked: b.locked,
                    media: b.inserted.map(|i| Media {
                        file: i.file,
                        format: i.drv,
                        read_only: i.ro,
                        exact: None,
                    }),
                })
            })
            .collect())
    }

    fn insert_media(&mut self, drive: &str, media: &Media) -> Result<(), CallError> {
        let mode = if media.read_only {
            qapi_qmp::BlockdevChangeReadOnlyMode::read_only
        } else {
            qapi_qmp::BlockdevChangeReadOnlyMode::read_write
        };
        #[allow(deprecated)]
        self.qmp()?.execute(qapi_qmp::blockdev_change_medium {
            device: None,
            id: Some(drive.to_owned()),
            filename: media.file.clone(),
            format: Some(media.format.clone()),
            force: None,
            read_only_mode: Some(mode),
        })?;
        self.staged = false;
        Ok(())
    }

    /// QEMU gets the descriptor itself (`add-fd`) and opens the media as
    /// `/dev/fdset/N`, a duplicate of that descriptor: no path is looked up again. The
    /// set's `opaque` names the ISO for `query-fdsets`.
    fn stage_iso(&mut self, iso: &File, path: &Path, _sha256: &str) -> Result<Media, CallError> {
        let info = self.qmp()?.execute_with_fd(
            qapi_qmp::add_fd {
                fdset_id: None,
                opaque: Some(format!("vmguest: {}", path.display())),
            },
            iso.as_fd(),
        )?;
        self.staged = true;
        Ok(Media::iso(format!("{FDSET}{}", info.fdset_id)))
    }

    fn unstage_iso(&mut self, media: &Media) -> Result<(), CallError> {
        let Some(id) = fdset_id(&media.file) else {
            return Ok(());
        };
        self.staged = false;
        self.qmp()?.execute(qapi_qmp::remove_fd {
            fdset_id: id,
            fd: None,
        })?;
        Ok(())
    }

    fn eject_media(&mut self, drive: &str) -> Result<(), CallError> {
        #[allow(deprecated)]
        let result = self.qmp()?.execute(qapi_qmp::eject {
            device: None,
            id: Some(drive.to_owned()),
            force: Some(false),
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(locked_tray(e)),
        }
    }

    fn release(&mut self) {
        if !self.staged && self.qmp.take().is_some() {
            tracing::debug!(socket = %self.socket.display(), "QMP: let go until the next call");
        }
    }

    fn close_tray(&mut self, drive: &str) -> Result<(), CallError> {
        #[allow(deprecated)]
        self.qmp()?.execute(qapi_qmp::blockdev_close_tray {
            device: None,
            id: Some(drive.to_owned()),
        })?;
        Ok(())
    }
}

/// How QEMU names a descriptor set as a file.
pub const FDSET: &str = "/dev/fdset/";

/// The set's id in a `/dev/fdset/N` name.
pub fn fdset_id(file: &str) -> Option<i64> {
    file.strip_prefix(FDSET)?.parse().ok()
}

/// QEMU refuses to eject a guest-locked tray with a GenericError whose text is the only
/// sign ("Device 'cd0' is locked and force was not specified, wait for tray to open and
/// try again", `blockdev.c`); this is the one place that reads it.
fn locked_tray(e: CallError) -> CallError {
    match e {
        CallError::Qapi { desc, .. } if desc.contains("is locked") => CallError::TrayLocked(desc),
        other => other,
    }
}
