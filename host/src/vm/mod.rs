//! VM access behind traits. A [`Hypervisor`] resolves a name once to a [`Vm`] handle;
//! the install operation then only sees [`VmControl`] (the hypervisor's view: run state
//! and drives) and [`GuestAgent`] (the guest's view), so another backend (a new folder
//! beside `qemu/` and `libvirt/`, or a test double) plugs in without touching the
//! operation. Backends fail with the typed [`VmError`]; it becomes an outcome in one
//! place (`error.rs`).

pub(crate) mod agent;
pub(crate) mod channel;
pub(crate) mod error;
pub(crate) mod libvirt;
pub(crate) mod libvirt_error;
pub(crate) mod pve;
pub mod qemu;
pub mod qga;
pub mod qmp;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

pub use channel::CallError;
pub use error::VmError;

/// Timeouts for talking to VMs.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Any single QMP or agent call.
    pub call: Duration,
    /// How long a guest agent may take to answer its first sync.
    pub agent_ready: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            call: Duration::from_secs(10),
            agent_ready: Duration::from_secs(5),
        }
    }
}

/// A removable CD/DVD drive, addressed by its qdev id.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DvdDrive {
    /// The drive's device ID, as the hypervisor names it.
    pub id: String,
    /// Whether its tray is open.
    pub tray_open: bool,
    /// Locked by the guest (for example while a file system on it is mounted).
    pub locked: bool,
    /// The media in it; `None` when it is empty.
    pub media: Option<Media>,
}

impl DvdDrive {
    /// Whether the drive holds no media.
    pub fn is_empty(&self) -> bool {
        self.media.is_none()
    }
}

/// What is in a drive, enough to put it back exactly.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Media {
    /// The file, as the hypervisor names it.
    pub file: String,
    /// Its image format (`raw` for an ISO).
    pub format: String,
    /// Whether the drive sees it read-only.
    pub read_only: bool,
    /// Where the path alone would not put this media back as it was, the backend's own
    /// description of it, written back verbatim (libvirt: the disk's `type` and its whole
    /// `<source>`, see `libvirt/xml.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
}

impl Media {
    /// A read-only ISO image by name.
    pub fn iso(file: impl Into<String>) -> Media {
        Media {
            file: file.into(),
            format: "raw".into(),
            read_only: true,
            exact: None,
        }
    }
}

/// For hypervisors that only take paths: does `path` still name the very file `opened`
/// is? Nothing of vmguest's runs between this check and the hypervisor opening the path,
/// so a file that a plugin swapped earlier is caught here.
pub fn same_file(opened: &File, path: &Path) -> Result<(), CallError> {
    let replaced = || CallError::Replaced(path.to_owned());
    let (Ok(a), Ok(b)) = (opened.metadata(), std::fs::metadata(path)) else {
        return Err(replaced());
    };
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(replaced());
    }
    Ok(())
}

/// What the guest agent says about the guest OS (`guest-get-osinfo`).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct GuestOsInfo {
    /// `id`: `mswindows`, `ubuntu`, ...
    pub id: Option<String>,
    /// `name`: the OS's name.
    pub name: Option<String>,
    /// `pretty-name`: its name with the version.
    pub pretty_name: Option<String>,
    /// `version-id`: its version.
    pub version_id: Option<String>,
    /// `kernel-release`: the kernel's release.
    pub kernel_release: Option<String>,
    /// `machine`: the architecture (`x86_64`, ...).
    pub machine: Option<String>,
}

impl GuestOsInfo {
    /// Whether the guest runs Windows.
    pub fn is_windows(&self) -> bool {
        self.id.as_deref() == Some("mswindows")
    }

    /// The name to show: the pretty name, else what there is.
    pub fn display_name(&self) -> String {
        self.pretty_name
            .clone()
            .or_else(|| self.name.clone())
            .or_else(|| self.id.clone())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// One mounted file system as the agent lists it (`guest-get-fsinfo`). On Windows the
/// mount point is a drive letter (`D:\`) and the type `CDFS` or `UDF` for optical media.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct FsInfo {
    /// Where it is mounted (`D:\` on Windows).
    pub mountpoint: String,
    /// Its file system type (`CDFS`, `iso9660`, ...).
    pub fs_type: String,
}

/// State of a process started with `guest-exec`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ExecStatus {
    /// Whether the program has ended.
    pub exited: bool,
    /// Its exit code, once it ended by itself.
    pub exit_code: Option<i64>,
    /// The signal that ended it, on Linux guests.
    pub signal: Option<i64>,
    /// What it wrote to standard output.
    pub stdout: String,
    /// What it wrote to standard error.
    pub stderr: String,
}

impl ExecStatus {
    /// Whether it ended with exit code 0.
    pub fn succeeded(&self) -> bool {
        self.exited && self.exit_code == Some(0) && self.signal.is_none()
    }
}

/// Where a VM of a cluster runs, as `Get-VM` shows it: its node and its id there.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Placement {
    /// The cluster node the VM runs on.
    pub node: String,
    /// Its id in the cluster (Proxmox's VMID).
    pub vmid: u32,
}

/// The hypervisor side of one VM.
pub trait VmControl {
    /// QEMU's run state name: "running", "paused", "prelaunch", "shutdown", ...
    fn run_state(&mut self) -> Result<String, CallError>;
    /// The VM's CD/DVD drives.
    fn dvd_drives(&mut self) -> Result<Vec<DvdDrive>, CallError>;
    /// Put `media` into `drive`, which is empty.
    fn insert_media(&mut self, drive: &str, media: &Media) -> Result<(), CallError>;
    /// Hand the hypervisor the IC ISO that vmguest opened and checked, and return the
    /// media to insert: that very file, whatever happens to `path` afterwards. `sha256`
    /// is the digest the operation verified (lower-case hex), for hypervisors that copy
    /// the file and check the copy. The default, for hypervisors that only take paths,
    /// checks that `path` still names it.
    fn stage_iso(&mut self, iso: &File, path: &Path, _sha256: &str) -> Result<Media, CallError> {
        same_file(iso, path)?;
        Ok(Media::iso(path.display().to_string()))
    }
    /// Let go of what [`VmControl::stage_iso`] handed over; the media is out of the drive.
    fn unstage_iso(&mut self, _media: &Media) -> Result<(), CallError> {
        Ok(())
    }
    /// Whether the media in `drive` can be put back exactly as it is after a borrow;
    /// media that cannot is never borrowed.
    fn can_restore(&mut self, _drive: &DvdDrive) -> bool {
        true
    }
    /// Eject without force: a guest-locked tray fails with [`CallError::TrayLocked`].
    fn eject_media(&mut self, drive: &str) -> Result<(), CallError>;
    /// Close `drive`'s tray.
    fn close_tray(&mut self, drive: &str) -> Result<(), CallError>;
    /// Let go of the monitor between media steps: the next call connects again. QEMU's
    /// QMP socket serves one client at a time, so holding it across the installer's wait
    /// would starve the hypervisor's own polling (Proxmox's pvestatd).
    fn release(&mut self) {}
}

/// The guest side of one VM, through an agent running inside it.
pub trait GuestAgent {
    /// `guest-get-osinfo`.
    fn os_info(&mut self) -> Result<GuestOsInfo, CallError>;
    /// Start a program; returns its pid for [`GuestAgent::exec_status`].
    fn exec(&mut self, path: &str, args: &[String], env: &[String]) -> Result<i64, CallError>;
    /// How the program started as `pid` is doing.
    fn exec_status(&mut self, pid: i64) -> Result<ExecStatus, CallError>;
    /// Up to `max` bytes from `offset`; fewer at end of file.
    fn read_file(&mut self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>, CallError>;
    /// Create or replace the file at `path` with `data`.
    fn write_file(&mut self, path: &str, data: &[u8]) -> Result<(), CallError>;
    /// Mounted file systems; how a Windows guest's drive letters are found.
    fn fs_info(&mut self) -> Result<Vec<FsInfo>, CallError>;
    /// Ask the guest to reboot (`guest-shutdown` mode `reboot`). The agent sends no
    /// answer on success; it goes away and comes back with the guest.
    fn reboot(&mut self) -> Result<(), CallError>;
    /// The commands the agent has switched off (`guest-info`'s `enabled: false`, from
    /// its `block-rpcs`/`allow-rpcs`); `None` where this transport cannot tell.
    fn disabled_commands(&mut self) -> Result<Option<Vec<String>>, CallError> {
        Ok(None)
    }
    /// Wait up to `within` for an agent that stopped answering (or was restarted) to
    /// answer again, in step with this client.
    fn resync(&mut self, within: Duration) -> Result<(), CallError> {
        let give_up = std::time::Instant::now() + within;
        loop {
            match self.os_info() {
                Ok(_) => return Ok(()),
                Err(e)
                    if (e.agent_not_up() || e.is_disconnect())
                        && std::time::Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(500))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Where VMs are found by name: a socket directory (`qemu/`), a libvirt host
/// (`libvirt/`), or a test double. A name is resolved once, by [`Hypervisor::open`].
pub trait Hypervisor {
    /// Every VM this hypervisor knows, sorted.
    fn names(&self) -> Result<Vec<String>, VmError>;
    /// Where these VMs live, as reports and `Get-VM` show it: a libvirt URI, a directory.
    fn location(&self) -> String;
    /// Resolve a name: [`VmError::Unknown`] if there is no such VM; a VM that is known
    /// but stopped is found.
    fn open(&self, name: &str) -> Result<Box<dyn Vm>, VmError>;
}

/// One resolved VM: what names it, and how to reach its monitor and its agent.
pub trait Vm: Send + Sync {
    /// The name it was resolved by.
    fn name(&self) -> &str;
    /// What names this VM across runs, for the media journal and the per-VM lock: the
    /// host as the admin named it together with what names the VM there, so that no host
    /// can claim another host's VM (a libvirt domain's UUID is whatever its host says).
    fn identity(&self) -> &str;
    /// Connect to the VM's monitor: [`VmError::NotRunning`] if it does not answer.
    fn control(&self) -> Result<Box<dyn VmControl>, VmError>;
    /// The VM's guest agent; `Ok(None)` when the VM has no agent channel.
    fn agent(&self) -> Result<Option<Box<dyn GuestAgent>>, CallError>;
    /// Its node and id in a cluster; `None` where the host is not a cluster.
    fn placement(&self) -> Option<Placement> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path-only hypervisor gets the path; a file renamed over it after the check is
    /// caught before the path is handed on.
    #[test]
    fn a_path_that_names_another_file_since_it_was_opened_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, other) = (dir.path().join("ic.iso"), dir.path().join("other.iso"));
        std::fs::write(&path, "checked").unwrap();
        std::fs::write(&other, "swapped in").unwrap();
        let opened = File::open(&path).unwrap();
        same_file(&opened, &path).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(matches!(
            same_file(&opened, &path),
            Err(CallError::Replaced(p)) if p == path
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(same_file(&opened, &path).is_err());
    }
}
