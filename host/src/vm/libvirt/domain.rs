//! One domain's run state and drives ([`VmControl`]): its live XML read and its media
//! changed with `virDomainUpdateDeviceFlags`, as `virsh change-media --live` does.

use std::sync::Arc;

use super::ffi::{self, Code, Domain};
use super::xml::{live_xml, Disk};
use super::Conn;
use crate::vm::{CallError, DvdDrive, Media, VmControl};

/// One domain's run state and drives.
pub(super) struct LibvirtVm {
    domain: Arc<Domain>,
    _conn: Arc<Conn>,
}

impl LibvirtVm {
    pub(super) fn new(domain: Arc<Domain>, conn: Arc<Conn>) -> LibvirtVm {
        LibvirtVm {
            domain,
            _conn: conn,
        }
    }
}

impl VmControl for LibvirtVm {
    /// libvirt's state name (`virsh domstate`); "paused" carries its reason, as a paused
    /// domain still accepts media changes and only this check stops the install.
    fn run_state(&mut self) -> Result<String, CallError> {
        let (state, reason) = self.domain.state()?;
        Ok(match state {
            ffi::DOMAIN_RUNNING => "running".into(),
            ffi::DOMAIN_PAUSED => format!("paused ({})", paused_reason(reason)),
            ffi::DOMAIN_BLOCKED => "blocked".into(),
            ffi::DOMAIN_SHUTDOWN => "shutting down".into(),
            ffi::DOMAIN_SHUTOFF => "shut off".into(),
            ffi::DOMAIN_CRASHED => "crashed".into(),
            ffi::DOMAIN_PMSUSPENDED => "pmsuspended".into(),
            _ => "no state".into(),
        })
    }

    fn dvd_drives(&mut self) -> Result<Vec<DvdDrive>, CallError> {
        let xml = live_xml(&self.domain)?;
        Ok(xml.devices.disk.iter().filter_map(Disk::as_drive).collect())
    }

    /// Media described exactly ([`Media::exact`]) goes back verbatim, and the live XML
    /// must show it back as it was.
    fn insert_media(&mut self, drive: &str, media: &Media) -> Result<(), CallError> {
        let disk = self.disk(drive)?;
        self.change(disk.with_media(Some(media))?)?;
        let Some(want) = &media.exact else {
            return Ok(());
        };
        let now = self.disk(drive)?.exact();
        if now.as_ref() != Some(want) {
            return Err(CallError::Decode(format!(
                "drive {drive} holds {} after writing back {want}: libvirt did not take the \
                 media back exactly",
                now.as_deref().unwrap_or("nothing")
            )));
        }
        Ok(())
    }

    fn can_restore(&mut self, drive: &DvdDrive) -> bool {
        self.disk(&drive.id).is_ok_and(|d| d.restorable())
    }

    /// Without force: libvirt asks the guest to open the tray and, when the guest holds
    /// it locked, gives up after about 5 s ("timed out waiting to open tray"), leaving
    /// the media in.
    fn eject_media(&mut self, drive: &str) -> Result<(), CallError> {
        let disk = self.disk(drive)?;
        self.change(disk.with_media(None)?).map_err(locked_tray)
    }

    /// libvirt closes the tray itself when media goes in.
    fn close_tray(&mut self, _drive: &str) -> Result<(), CallError> {
        Ok(())
    }
}

impl LibvirtVm {
    fn disk(&self, target: &str) -> Result<Disk, CallError> {
        let xml = live_xml(&self.domain)?;
        xml.devices
            .disk
            .into_iter()
            .find(|d| d.is_cdrom() && d.target.as_ref().is_some_and(|t| t.dev == target))
            .ok_or_else(|| CallError::Decode(format!("the domain has no cdrom drive {target}")))
    }

    fn change(&self, disk_xml: String) -> Result<(), CallError> {
        tracing::debug!(xml = %disk_xml, "virDomainUpdateDeviceFlags");
        self.domain
            .update_device_flags(&disk_xml, ffi::AFFECT_LIVE)?;
        Ok(())
    }
}

/// libvirt reports a tray the guest keeps locked as an operation failure whose text is
/// the only sign (`qemuHotplugWaitForTrayEject` in libvirt's `qemu_hotplug.c`: "timed out
/// waiting to open tray of '%s'"); this is the one place that reads it.
fn locked_tray(e: CallError) -> CallError {
    match e {
        CallError::Libvirt(v)
            if v.code() == Code::OperationFailed && v.message().contains("open tray") =>
        {
            CallError::TrayLocked(v.to_string())
        }
        other => other,
    }
}

/// `virDomainPausedReason`, by number as in `libvirt-domain.h`.
fn paused_reason(reason: i32) -> &'static str {
    match reason as u32 {
        1 => "user",
        2 => "migrating",
        3 => "saving",
        4 => "dumping",
        5 => "I/O error",
        6 => "watchdog",
        7 => "from snapshot",
        8 => "shutting down",
        9 => "snapshot",
        10 => "crashed",
        11 => "starting up",
        12 => "post-copy",
        _ => "unknown reason",
    }
}
