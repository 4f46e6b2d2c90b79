//! CD/DVD drives in a VM's configuration, and whether the guest holds them.
//!
//! A drive is an `ideN`, `sataN` or `scsiN` entry whose options include `media=cdrom`
//! (qemu-server's drive property string: the file first, then `key=value`s). Its file
//! `none` is an empty drive; anything else is media: a storage volume (`local:iso/x.iso`),
//! a path, or the host's drive (`cdrom`). The whole entry is kept as
//! [`Media::exact`], so borrowed media goes back as it was, options and all.
//!
//! Proxmox forces every eject (qemu-server's `change_medium` and `eject` pass
//! `force => true`), so vmguest asks first whether the guest holds the drive: the
//! monitor's read-only `info block` says whether the tray is locked; where the token may
//! not use the monitor, the agent's mounted file systems say whether optical media is in
//! use.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::vm::{DvdDrive, Media};

/// The buses a CD/DVD drive can sit on.
const BUSES: [&str; 3] = ["ide", "sata", "scsi"];

/// One CD/DVD entry of the configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct CdEntry {
    /// `ide2`.
    pub key: String,
    /// The whole value, as read.
    pub value: String,
    /// The file: `none`, a volid, a path or `cdrom`.
    pub file: String,
}

impl CdEntry {
    pub fn is_empty(&self) -> bool {
        self.file == "none" || self.file.is_empty()
    }

    /// The drive as the operation sees it; `locked` is filled in by the caller.
    pub fn drive(&self) -> DvdDrive {
        DvdDrive {
            id: self.key.clone(),
            tray_open: false,
            locked: false,
            media: (!self.is_empty()).then(|| Media {
                file: self.file.clone(),
                format: "raw".into(),
                read_only: true,
                exact: Some(self.value.clone()),
            }),
        }
    }
}

/// `ide2`, `sata0`, `scsi12`: a bus and a number.
fn is_drive_key(key: &str) -> bool {
    BUSES.iter().any(|bus| {
        key.strip_prefix(bus)
            .is_some_and(|n| !n.is_empty() && n.len() <= 3 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// One drive property string: its file (the first field, or `file=`) and whether it is
/// a CD/DVD drive.
pub fn parse_entry(key: &str, value: &str) -> Option<CdEntry> {
    if !is_drive_key(key) {
        return None;
    }
    let mut file = None;
    let mut cdrom = false;
    for (i, part) in value.split(',').enumerate() {
        match part.split_once('=') {
            Some(("media", m)) => cdrom = m == "cdrom",
            Some(("file", f)) => file = Some(f),
            // The first field without a key is the file (qemu-server's default key).
            None if i == 0 => file = Some(part),
            _ => {}
        }
    }
    cdrom.then(|| CdEntry {
        key: key.to_owned(),
        value: value.to_owned(),
        file: file.unwrap_or("").trim().to_owned(),
    })
}

/// The CD/DVD drives of a configuration (`GET .../config?current=1`), sorted by key.
pub fn cd_entries(config: &Map<String, Value>) -> Vec<CdEntry> {
    let mut entries: Vec<CdEntry> = config
        .iter()
        .filter_map(|(k, v)| parse_entry(k, v.as_str()?))
        .collect();
    entries.sort_by_key(|e| drive_order(&e.key));
    entries
}

fn drive_order(key: &str) -> (usize, u32) {
    let bus = BUSES
        .iter()
        .position(|b| key.starts_with(b))
        .unwrap_or(BUSES.len());
    let n = key.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    (bus, n.parse().unwrap_or(u32::MAX))
}

/// What the monitor says of one removable drive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrayState {
    pub locked: bool,
    pub open: bool,
}

/// `info block` (HMP): for each removable device, its lock and tray, by the drive's
/// qdev id (`ide2`). qemu-server names a drive's backend `drive-ide2`; the entry's
/// `Attached to:` line gives the device id either way.
///
/// ```text
/// drive-ide2 (#block123): /var/lib/vz/template/iso/x.iso (raw, read-only)
///     Attached to:      ide2
///     Removable device: locked, tray closed
/// ```
pub fn parse_info_block(text: &str) -> BTreeMap<String, TrayState> {
    let mut out = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut state: Option<TrayState> = None;
    let mut flush = |names: &mut Vec<String>, state: &mut Option<TrayState>| {
        if let Some(s) = state.take() {
            for n in names.iter() {
                out.insert(n.clone(), s);
            }
        }
        names.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            flush(&mut names, &mut state);
            let head = line.split([' ', ':']).next().unwrap_or("");
            names.push(head.strip_prefix("drive-").unwrap_or(head).to_owned());
            continue;
        }
        let line = line.trim();
        if let Some(at) = line.strip_prefix("Attached to:") {
            let at = at.trim();
            // A QOM path (`/machine/peripheral/ide2/virtio-backend`) or the id itself.
            let id = at
                .split('/')
                .find(|s| is_drive_key(s))
                .unwrap_or(at)
                .to_owned();
            names.push(id);
        } else if let Some(rest) = line.strip_prefix("Removable device:") {
            let rest = rest.trim();
            state = Some(TrayState {
                locked: rest.starts_with("locked"),
                open: rest.contains("tray open"),
            });
        }
    }
    flush(&mut names, &mut state);
    out
}

/// From `guest-get-fsinfo` (the API's `{"result": [...]}`): which drives of `entries`
/// hold a mounted optical file system. A mount names its disk by bus type and, for
/// IDE, bus and unit (`ideN` is bus N/2, unit N%2); where that does not single out a
/// drive, every drive on that bus type counts as held, and a mount that names no disk
/// holds them all.
pub fn held_by_mounts(fsinfo: &Value, entries: &[CdEntry]) -> BTreeSet<String> {
    let mut held = BTreeSet::new();
    let mounts = fsinfo.as_array().cloned().unwrap_or_default();
    for m in mounts {
        let fs = m["type"].as_str().unwrap_or("").to_ascii_lowercase();
        if !matches!(fs.as_str(), "iso9660" | "udf" | "cdfs") {
            continue;
        }
        let disks = m["disk"].as_array().cloned().unwrap_or_default();
        if disks.is_empty() {
            held.extend(entries.iter().map(|e| e.key.clone()));
            continue;
        }
        for d in disks {
            let bus_type = d["bus-type"].as_str().unwrap_or("").to_ascii_lowercase();
            for e in entries {
                let Some(n) = e
                    .key
                    .strip_prefix(bus_type.as_str())
                    .and_then(|n| n.parse::<i64>().ok())
                else {
                    if !BUSES.contains(&bus_type.as_str()) {
                        // A bus type vmguest cannot place: it may be any drive.
                        held.insert(e.key.clone());
                    }
                    continue;
                };
                let placed = bus_type == "ide"
                    && d["bus"].as_i64().is_some()
                    && d["unit"].as_i64().is_some();
                if !placed
                    || (d["bus"].as_i64() == Some(n / 2) && d["unit"].as_i64() == Some(n % 2))
                {
                    held.insert(e.key.clone());
                }
            }
        }
    }
    held
}

/// Whether the configuration's `agent` option enables the agent: `1`, or
/// `enabled=1,...` (qemu-server's `agent` property string, `enabled` the default key).
pub fn agent_enabled(config: &Map<String, Value>) -> bool {
    let Some(v) = config.get("agent") else {
        return false;
    };
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.split(',')
        .enumerate()
        .any(|(i, part)| match part.split_once('=') {
            Some(("enabled", on)) => matches!(on, "1" | "yes" | "on" | "true"),
            None if i == 0 => matches!(part, "1" | "yes" | "on" | "true"),
            _ => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cdrom_entries_are_read_whole_and_empty_is_none() {
        let config = json!({
            "ide2": "local:iso/debian.iso,media=cdrom,size=600M",
            "ide0": "local-lvm:vm-100-disk-0,size=32G",
            "sata1": "none,media=cdrom",
            "scsi3": "cdrom,media=cdrom",
            "scsi10": "file=nfs:iso/x.iso,media=cdrom",
            "net0": "virtio=AA:BB,media=cdrom",
            "ide": "none,media=cdrom",
            "digest": "abc"
        });
        let entries = cd_entries(config.as_object().unwrap());
        let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["ide2", "sata1", "scsi3", "scsi10"]);
        let ide2 = entries[0].drive();
        let media = ide2.media.unwrap();
        assert_eq!(media.file, "local:iso/debian.iso");
        assert_eq!(
            media.exact.as_deref(),
            Some("local:iso/debian.iso,media=cdrom,size=600M")
        );
        assert!(entries[1].is_empty() && entries[1].drive().media.is_none());
        assert_eq!(entries[2].drive().media.unwrap().file, "cdrom");
        assert_eq!(entries[3].file, "nfs:iso/x.iso");
        assert_eq!(parse_entry("ide2", "local:iso/a.iso"), None);
    }

    #[test]
    fn info_block_gives_lock_and_tray_by_drive() {
        let text = "drive-ide2 (#block123): /var/lib/vz/template/iso/x.iso (raw, read-only)\r\n    Attached to:      ide2\r\n    Removable device: locked, tray closed\r\n    Cache mode:       writeback\r\n\r\ndrive-sata0: [not inserted]\r\n    Attached to:      sata0\r\n    Removable device: not locked, tray open\r\n\r\ndrive-scsi0 (#block456): /dev/pve/vm-100-disk-0 (raw)\r\n    Attached to:      scsi0\r\n    Cache mode:       writeback, direct\r\n";
        let states = parse_info_block(text);
        assert_eq!(
            states["ide2"],
            TrayState {
                locked: true,
                open: false
            }
        );
        assert_eq!(
            states["sata0"],
            TrayState {
                locked: false,
                open: true
            }
        );
        assert!(!states.contains_key("scsi0"));
        // A QOM path in "Attached to".
        let qom = "cd0: [not inserted]\n    Attached to:      /machine/peripheral/ide2\n    Removable device: locked, tray closed\n";
        assert!(parse_info_block(qom)["ide2"].locked);
    }

    #[test]
    fn mounted_optical_media_holds_its_drive() {
        let config = json!({"ide2": "local:iso/a.iso,media=cdrom", "ide3": "local:iso/b.iso,media=cdrom", "sata0": "local:iso/c.iso,media=cdrom"});
        let entries = cd_entries(config.as_object().unwrap());
        let fs = json!([
            {"name": "sda1", "mountpoint": "/", "type": "ext4", "disk": [{"bus-type": "scsi", "bus": 0, "unit": 0}]},
            {"name": "sr0", "mountpoint": "/media/cdrom", "type": "iso9660", "disk": [{"bus-type": "ide", "bus": 1, "unit": 1, "dev": "/dev/sr0"}]}
        ]);
        assert_eq!(
            held_by_mounts(&fs, &entries),
            BTreeSet::from(["ide3".to_owned()])
        );
        let sata = json!([{"mountpoint": "D:\\", "type": "CDFS", "disk": [{"bus-type": "sata", "bus": 0, "unit": 0}]}]);
        assert_eq!(
            held_by_mounts(&sata, &entries),
            BTreeSet::from(["sata0".to_owned()])
        );
        let nodisk = json!([{"mountpoint": "/mnt", "type": "udf"}]);
        assert_eq!(held_by_mounts(&nodisk, &entries).len(), 3);
        assert!(held_by_mounts(&json!([]), &entries).is_empty());
    }

    #[test]
    fn the_agent_option_is_read_as_qemu_server_writes_it() {
        let on = |v: Value| agent_enabled(json!({"agent": v}).as_object().unwrap());
        assert!(on(json!("1")));
        assert!(on(json!("enabled=1,fstrim_cloned_disks=1")));
        assert!(on(json!(1)));
        assert!(!on(json!("0")));
        assert!(!on(json!("enabled=0")));
        assert!(!agent_enabled(&Map::new()));
    }
}
