//! One VM's run state and CD/DVD drives through its configuration
//! ([`VmControl`]): media goes in and out with `PUT .../config` and the `digest` of the
//! read it follows, after checking that the guest does not hold the drive (Proxmox
//! forces ejects; `drives.rs` says how the hold is seen) and that no operation holds
//! the VM's configuration (`lock`, such as a running backup).

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::client::one_line;
use super::drives::{self, CdEntry};
use super::{api, call_error, storage, Target, CONFIG_TASK};
use crate::vm::{CallError, DvdDrive, Media, VmControl};

/// What vmguest knows of the guest's hold on its drives.
enum Holds {
    /// The drives the guest holds (locked tray, or mounted optical media).
    Known(BTreeSet<String>),
    /// Neither the monitor nor the agent could tell; why.
    Unknown(String),
}

pub(super) struct PveControl {
    t: Arc<Target>,
    /// The status read that found the VM running, for the first `run_state` (asked
    /// right after it); later ones read again.
    status: Option<api::RunStatus>,
}

impl PveControl {
    pub(super) fn new(t: Arc<Target>, status: api::RunStatus) -> PveControl {
        PveControl {
            t,
            status: Some(status),
        }
    }

    /// The monitor's `info block` (needs Sys.Audit on the VM), else the agent's
    /// mounted file systems.
    fn holds(&self, config: &Map<String, Value>, entries: &[CdEntry]) -> Holds {
        let t = &self.t;
        let monitor = match api::monitor(&t.client, &t.node, t.vmid, "info block") {
            Ok(text) => {
                let locked = drives::parse_info_block(&text)
                    .into_iter()
                    .filter(|(_, s)| s.locked)
                    .map(|(id, _)| id)
                    .collect();
                return Holds::Known(locked);
            }
            Err(e) => crate::hresult::chain(&e),
        };
        if !drives::agent_enabled(config) {
            return Holds::Unknown(format!("monitor: {monitor}; the VM has no guest agent"));
        }
        match t.client.get(&t.path("/agent/get-fsinfo"), &[]) {
            Ok(data) => Holds::Known(drives::held_by_mounts(&data["result"], entries)),
            Err(e) => Holds::Unknown(format!(
                "monitor: {monitor}; guest agent: {}",
                crate::hresult::chain(&e)
            )),
        }
    }

    /// Write `value` to `drive`: only an existing CD/DVD drive, only when no lock is
    /// on the configuration and the guest does not hold the drive.
    fn change(&mut self, drive: &str, value: &str) -> Result<(), CallError> {
        let t = self.t.clone();
        // Read afresh: its digest guards the write, its lock and drives decide it.
        let config = t.config_for_write()?;
        if let Some(lock) = config.get("lock") {
            let lock = one_line(lock.as_str().unwrap_or(&lock.to_string()), 100);
            return Err(CallError::Qapi {
                class: "Proxmox VE API".into(),
                desc: format!(
                    "VM {} on node {} is locked ({lock}): its configuration cannot change \
                     until that operation ends; nothing was changed",
                    t.vmid, t.node
                ),
            });
        }
        let entries = drives::cd_entries(&config);
        if !entries.iter().any(|e| e.key == drive) {
            return Err(CallError::Decode(format!(
                "VM {} has no CD/DVD drive {drive}",
                t.vmid
            )));
        }
        match self.holds(&config, &entries) {
            Holds::Known(held) if held.contains(drive) => {
                return Err(CallError::TrayLocked(format!(
                    "the guest holds drive {drive} of VM {} (its tray is locked or a file \
                     system on it is mounted); Proxmox would force it open, so nothing was \
                     changed",
                    t.vmid
                )))
            }
            Holds::Known(_) => {}
            Holds::Unknown(why) => {
                tracing::warn!(
                    drive,
                    "cannot tell whether the guest holds the drive: {why}"
                )
            }
        }
        let digest = config.get("digest").and_then(Value::as_str);
        tracing::debug!(drive, vmid = t.vmid, node = %t.node, "PUT config");
        self.status = None;
        api::set_config(
            &t.client,
            &t.node,
            t.vmid,
            drive,
            value,
            digest,
            CONFIG_TASK,
        )
        .map_err(call_error)
    }
}

impl VmControl for PveControl {
    fn run_state(&mut self) -> Result<String, CallError> {
        if let Some(s) = self.status.take() {
            return Ok(s.run_state());
        }
        let s = api::run_status(&self.t.client, &self.t.node, self.t.vmid).map_err(call_error)?;
        Ok(s.run_state())
    }

    fn dvd_drives(&mut self) -> Result<Vec<DvdDrive>, CallError> {
        let config = self.t.config()?;
        let entries = drives::cd_entries(&config);
        let held = match self.holds(&config, &entries) {
            Holds::Known(held) => held,
            Holds::Unknown(_) => BTreeSet::new(),
        };
        Ok(entries
            .iter()
            .map(|e| DvdDrive {
                locked: held.contains(&e.key),
                ..e.drive()
            })
            .collect())
    }

    /// Borrowed media goes back as its whole entry ([`Media::exact`]); the IC ISO goes
    /// in as `VOLID,media=cdrom`.
    fn insert_media(&mut self, drive: &str, media: &Media) -> Result<(), CallError> {
        let value = match &media.exact {
            Some(exact) => exact.clone(),
            None => format!("{},media=cdrom", media.file),
        };
        self.change(drive, &value)
    }

    fn stage_iso(&mut self, iso: &File, path: &Path, sha256: &str) -> Result<Media, CallError> {
        storage::stage(&self.t, iso, path, sha256)
    }

    /// Occupied media is borrowed only when vmguest can tell whether the guest holds
    /// the drive, since Proxmox would take it out by force.
    fn can_restore(&mut self, drive: &DvdDrive) -> bool {
        if drive.media.as_ref().is_none_or(|m| m.exact.is_none()) {
            return drive.media.is_none();
        }
        let Ok(config) = self.t.config() else {
            return false;
        };
        let entries = drives::cd_entries(&config);
        match self.holds(&config, &entries) {
            Holds::Known(_) => true,
            Holds::Unknown(why) => {
                tracing::info!(drive = %drive.id, "not borrowed: {why}");
                false
            }
        }
    }

    fn eject_media(&mut self, drive: &str) -> Result<(), CallError> {
        self.change(drive, "none,media=cdrom")
    }

    /// Proxmox closes the tray itself when media goes in.
    fn close_tray(&mut self, _drive: &str) -> Result<(), CallError> {
        Ok(())
    }
}
