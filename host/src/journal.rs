//! The crash journal of borrowed media: what vmguest changed in a VM's drive, written
//! down before the change, so that the user's media comes back even when vmguest dies
//! mid-install (kill -9, a closed terminal, a power cut).
//!
//! Before the first media change of an install, an entry records the VM's identity, the
//! drive, the user's media exactly as it was (or that the drive was empty) and the IC ISO
//! that goes in. It is written durably: a temporary file, `fsync`, a rename, and an
//! `fsync` of the directory. It is removed only once the drive is back as it was found.
//! Every later run that touches the VM finishes an open entry first (`operation/recovery.rs`,
//! `Repair-VMMedia`), and `Get-VM` shows it.
//!
//! Entries live in `STATE/journal/`, one file per VM identity (`settings/` says where
//! `STATE` is), named by a hash of the identity so any identity is a safe file name.
//!
//! An identity names the host as the admin named it (the libvirt URI, the socket
//! directory) together with what names the VM there (`vm::Vm::identity`). A libvirt
//! domain's UUID alone is not enough: any host of a run can define a domain with the UUID
//! of another host's domain, and its entry would then be restored into that domain (its
//! media inserted, its guest pids ended). An entry is only ever read back under the
//! identity it was recorded with, and [`Journal::get`] checks the one it holds.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::vm::Media;

/// One install's change to one drive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The VM's name.
    pub vm: String,
    /// What names this VM across runs: its host and its name there
    /// (`vm::Vm::identity`).
    pub identity: String,
    /// The host the entry was recorded on, as reports name it (`Hypervisor::location`);
    /// empty in entries written before entries named their host.
    #[serde(default)]
    pub host: String,
    /// The drive vmguest borrowed.
    pub drive: String,
    /// The user's media as it was; `None` when the drive was empty.
    pub user_media: Option<Media>,
    /// Whether the tray was open before vmguest touched it.
    #[serde(default)]
    pub tray_open: bool,
    /// The IC media vmguest inserted, as the hypervisor names it: the ISO's path, or
    /// QEMU's `/dev/fdset/N` for the descriptor vmguest handed over.
    pub ic_media: String,
    /// The IC ISO's path, where `ic_media` is not it.
    #[serde(default)]
    pub ic_iso: Option<String>,
    /// Where the guest mounted it and the installer's pid there, once known: a later
    /// run ends that installer and unmounts, so the guest lets go of the tray.
    #[serde(default)]
    pub guest_mount: Option<String>,
    /// The installer's pid in the guest, with `guest_mount`.
    #[serde(default)]
    pub guest_pid: Option<i64>,
    /// That guest runs Windows: its installer is ended with taskkill, and `guest_mount`
    /// is the media's drive letter, which nothing unmounts.
    #[serde(default)]
    pub guest_windows: bool,
    /// The vmguest process that recorded the entry.
    pub pid: u32,
    /// When that run started, in seconds since the Unix epoch.
    pub started_unix: u64,
}

impl Entry {
    /// An entry for a borrow that is about to happen.
    pub fn new(
        vm: &str,
        identity: &str,
        drive: &str,
        user_media: Option<Media>,
        ic: &str,
    ) -> Entry {
        Entry {
            vm: vm.to_owned(),
            identity: identity.to_owned(),
            host: String::new(),
            drive: drive.to_owned(),
            user_media,
            tray_open: false,
            ic_media: ic.to_owned(),
            ic_iso: None,
            guest_mount: None,
            guest_pid: None,
            guest_windows: false,
            pid: std::process::id(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }

    /// "PATH (/dev/fdset/N)", or the one name there is.
    pub fn ic_name(&self) -> String {
        match &self.ic_iso {
            Some(iso) if *iso != self.ic_media => format!("{iso} ({})", self.ic_media),
            _ => self.ic_media.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
/// Reading or writing the journal failed.
pub enum JournalError {
    #[error("journal {}", .0.display())]
    /// The journal file or directory at this path could not be read or written.
    Io(PathBuf, #[source] std::io::Error),
    #[error("journal entry {} is unreadable", .0.display())]
    /// The entry at this path is not valid JSON of an entry.
    Corrupt(PathBuf, #[source] serde_json::Error),
}

/// The journal directory.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal in `state_dir`.
    pub fn new(state_dir: &Path) -> Journal {
        Journal {
            dir: state_dir.join("journal"),
        }
    }

    /// Where the entries are, one file each.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, identity: &str) -> PathBuf {
        let sha = crate::iso::sha256_bytes(identity.as_bytes());
        self.dir.join(format!("{}.json", &sha[..24]))
    }

    /// Write the entry durably, replacing any earlier one for the same VM.
    pub fn record(&self, entry: &Entry) -> Result<(), JournalError> {
        let path = self.path(&entry.identity);
        let io = |e| JournalError::Io(path.clone(), e);
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let text = serde_json::to_vec_pretty(entry).map_err(|e| io(e.into()))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename is durable only once the directory is.
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }

    /// The open entry of a VM, if any. An entry that names another identity than the one
    /// its file is found by (a file copied or renamed into place) is not this VM's.
    pub fn get(&self, identity: &str) -> Result<Option<Entry>, JournalError> {
        let path = self.path(identity);
        let entry: Entry = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| JournalError::Corrupt(path.clone(), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(JournalError::Io(path, e)),
        };
        if entry.identity != identity {
            tracing::warn!(
                path = %path.display(),
                recorded = %entry.identity,
                wanted = %identity,
                "journal entry names another VM; ignored"
            );
            return Ok(None);
        }
        Ok(Some(entry))
    }

    /// Close a VM's entry: its drive is as it was found. Not synced: a removal lost in a
    /// crash leaves an entry whose drive is already back, which the next run closes.
    pub fn remove(&self, identity: &str) -> Result<(), JournalError> {
        let path = self.path(identity);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(JournalError::Io(path, e)),
        }
    }

    /// Every open entry, for `Get-VM` and `Repair-VMMedia`.
    pub fn list(&self) -> Vec<Entry> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut entries: Vec<Entry> = dir
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        entries.sort_by(|a, b| a.vm.cmp(&b.vm));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(file: &str) -> Media {
        Media::iso(file)
    }

    #[test]
    fn entries_are_recorded_found_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        assert_eq!(j.get("qmp:/run/vm1.qmp").unwrap(), None);
        let e = Entry::new(
            "vm1",
            "qmp:/run/vm1.qmp",
            "cd0",
            Some(media("/u.iso")),
            "/ic.iso",
        );
        j.record(&e).unwrap();
        assert_eq!(j.get("qmp:/run/vm1.qmp").unwrap(), Some(e.clone()));
        assert_eq!(j.get("qmp:/run/vm2.qmp").unwrap(), None);
        assert_eq!(j.list(), vec![e]);
        j.remove("qmp:/run/vm1.qmp").unwrap();
        j.remove("qmp:/run/vm1.qmp").unwrap();
        assert!(j.list().is_empty());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(j.dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_corrupt_entry_is_an_error_not_a_missing_entry() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        let e = Entry::new("vm1", "id", "cd0", None, "/ic.iso");
        j.record(&e).unwrap();
        std::fs::write(j.path("id"), "{").unwrap();
        assert!(matches!(j.get("id"), Err(JournalError::Corrupt(..))));
    }

    /// The same domain UUID on two hosts is two VMs: an entry recorded for one is never
    /// read back for the other, even if its file is put where the other's would be.
    #[test]
    fn an_entry_is_found_only_under_the_identity_it_was_recorded_with() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::new(dir.path());
        let uuid = "0d3c5d5e-7a48-4c3e-9f6b-3f6d3c1e2a10";
        let a = format!("libvirt:{uuid}@qemu+ssh://a/system");
        let b = format!("libvirt:{uuid}@qemu+ssh://b/system");
        let e = Entry::new("vm", &b, "hdc", Some(media("/dev/sda")), "/ic.iso");
        j.record(&e).unwrap();
        assert_eq!(j.get(&a).unwrap(), None);
        std::fs::copy(j.path(&b), j.path(&a)).unwrap();
        assert_eq!(j.get(&a).unwrap(), None, "a copied entry names host b");
        assert_eq!(j.get(&b).unwrap(), Some(e));
    }
}
