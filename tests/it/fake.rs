//! An in-process test double of a hypervisor and its guest agent, for the operation's
//! step-by-step tests (`operation.rs`). It stands beside the real-QEMU tests, never in
//! their place: those remain the acceptance.
//!
//! One shared [`World`] holds what QEMU would hold (run state, drives, their media and
//! trays) and what the guest would do (mount, unmount, run the installer). It answers
//! as QEMU and qemu-ga do for the calls vmguest makes:
//! - `eject` on a guest-locked tray fails (QEMU: "Device 'x' is locked"), which the QMP
//!   backend turns into [`CallError::TrayLocked`];
//! - an eject leaves the tray open and the drive empty; `blockdev-change-medium` closes
//!   it with the new media in;
//! - `guest-file-read` of `/dev/srN` returns the bytes of the ISO file in drive N, so the
//!   operation's PVD match runs on real ISO 9660 data;
//! - `guest-exec` runs `sh -c SCRIPT`, and the double recognises vmguest's scripts
//!   (mount, umount, the installer, the record) and answers with their exit status.
//!
//! Each [`Fault`] makes one call fail the way the real thing fails.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, Mutex};

use vmguest::vm::{CallError, DvdDrive, ExecStatus, GuestAgent, GuestOsInfo, Hypervisor, Media};
use vmguest::vm::{Vm, VmControl, VmError};

pub const VM: &str = "vm1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The QMP socket does not answer.
    Connect,
    /// `query-block` fails.
    QueryBlock,
    /// `query-block` panics: a bug inside vmguest's call path.
    QueryBlockPanics,
    /// The guest locks the tray for good: every eject is refused.
    TrayLocked,
    /// The guest locks the tray when the installer starts (it keeps the media mounted).
    LocksTrayOnInstall,
    /// The first `blockdev-change-medium` fails (inserting the IC media).
    InsertIc,
    /// The second `blockdev-change-medium` fails (putting the user's media back).
    Restore,
    /// QEMU goes away right after the IC media went in.
    DiesAfterInsert,
    /// The guest agent socket does not answer.
    AgentDown,
    /// The agent stops answering while the installer runs.
    AgentDiesDuringInstall,
    /// `mount` fails in the guest.
    Mount,
    /// The installer exits 3.
    InstallerFails,
    /// The installer runs until something kills it.
    InstallerHangs,
    /// The VM is paused while the installer runs (the guest keeps its tray locked).
    PausesDuringInstall,
    /// A new agent instance answers while the installer runs (an upgrade restarted it):
    /// `guest-exec-status` refuses the old pid as qemu-ga does ("Invalid parameter
    /// 'pid'", `qga/commands.c`).
    AgentRestartsDuringInstall,
    /// The agent stops answering once the installer runs, and never answers again.
    AgentNeverBack,
    /// `guest-info` lists `guest-exec` and `guest-exec-status` as disabled
    /// (`--block-rpcs`).
    BlocksExec,
    /// `guest-info` lists the `guest-file-*` calls as disabled.
    BlocksFiles,
}

#[derive(Debug)]
pub struct World {
    pub state: String,
    pub drives: Vec<DvdDrive>,
    pub agent: bool,
    pub os: GuestOsInfo,
    pub faults: HashSet<Fault>,
    /// Every call, in order: "eject dvd0", "insert dvd0 /x.iso", "exec mount", …
    pub calls: Vec<String>,
    pub control_connections: usize,
    pub agent_connections: usize,
    /// Processes vmguest's tree killer was run for.
    pub killed: usize,
    /// How many more connects find the agent channel silent (an agent not up yet).
    pub agent_late: usize,
    /// What the family's version probe (`cat …`) prints; `None`: it fails.
    pub version: Option<String>,
    /// The version the installer leaves for the probe.
    pub installs: Option<String>,
    inserts: usize,
    mounted: bool,
    exits: Vec<ExecStatus>,
}

impl World {
    pub fn new() -> World {
        World {
            state: "running".into(),
            drives: vec![drive("dvd0", None)],
            agent: true,
            os: GuestOsInfo {
                id: Some("debian".into()),
                name: Some("Debian GNU/Linux".into()),
                machine: Some("x86_64".into()),
                ..Default::default()
            },
            faults: HashSet::new(),
            calls: Vec::new(),
            control_connections: 0,
            agent_connections: 0,
            killed: 0,
            agent_late: 0,
            version: None,
            installs: None,
            inserts: 0,
            mounted: false,
            exits: Vec::new(),
        }
    }

    pub fn fault(mut self, f: Fault) -> World {
        self.faults.insert(f);
        self
    }

    pub fn media(&self, id: &str) -> Option<String> {
        self.drives
            .iter()
            .find(|d| d.id == id)
            .and_then(|d| d.media.as_ref().map(|m| m.file.clone()))
    }

    pub fn called(&self, prefix: &str) -> bool {
        self.calls.iter().any(|c| c.starts_with(prefix))
    }

    fn has(&self, f: Fault) -> bool {
        self.faults.contains(&f)
    }
}

pub fn drive(id: &str, media: Option<&str>) -> DvdDrive {
    DvdDrive {
        id: id.into(),
        tray_open: false,
        locked: false,
        media: media.map(Media::iso),
    }
}

/// The hypervisor of one VM named [`VM`].
#[derive(Clone)]
pub struct FakeHv(pub Arc<Mutex<World>>);

impl FakeHv {
    pub fn new(world: World) -> FakeHv {
        FakeHv(Arc::new(Mutex::new(world)))
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Hypervisor for FakeHv {
    fn names(&self) -> Result<Vec<String>, VmError> {
        Ok(vec![VM.to_owned()])
    }

    fn location(&self) -> String {
        "fake".into()
    }

    fn open(&self, name: &str) -> Result<Box<dyn Vm>, VmError> {
        match name {
            VM => Ok(Box::new(FakeHandle(self.clone()))),
            _ => Err(VmError::Unknown(format!("no VM named {name:?}"))),
        }
    }
}

/// The one VM of a [`FakeHv`], resolved.
struct FakeHandle(FakeHv);

impl Vm for FakeHandle {
    fn name(&self) -> &str {
        VM
    }

    fn identity(&self) -> &str {
        "fake:vm1"
    }

    fn control(&self) -> Result<Box<dyn VmControl>, VmError> {
        let mut w = self.0.world();
        if w.has(Fault::Connect) {
            return Err(VmError::NotRunning {
                what: "QMP socket does not answer".into(),
                source: CallError::Closed,
            });
        }
        w.control_connections += 1;
        Ok(Box::new(FakeVm(self.0 .0.clone())))
    }

    fn agent(&self) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
        let mut w = self.0.world();
        if !w.agent {
            return Ok(None);
        }
        if w.has(Fault::AgentDown) {
            return Err(CallError::Timeout(std::time::Duration::from_secs(5)));
        }
        if w.agent_late > 0 {
            w.agent_late -= 1;
            return Err(CallError::Timeout(std::time::Duration::from_secs(5)));
        }
        w.agent_connections += 1;
        Ok(Some(Box::new(FakeAgent(self.0 .0.clone()))))
    }
}

struct FakeVm(Arc<Mutex<World>>);

impl FakeVm {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn refused(desc: &str) -> CallError {
    CallError::Qapi {
        class: "GenericError".into(),
        desc: desc.into(),
    }
}

impl VmControl for FakeVm {
    fn run_state(&mut self) -> Result<String, CallError> {
        let mut w = self.world();
        w.calls.push("query-status".into());
        if w.state == "gone" {
            return Err(CallError::Closed);
        }
        Ok(w.state.clone())
    }

    fn dvd_drives(&mut self) -> Result<Vec<DvdDrive>, CallError> {
        let mut w = self.world();
        w.calls.push("query-block".into());
        if w.has(Fault::QueryBlockPanics) {
            drop(w);
            panic!("a bug while reading the drives");
        }
        if w.has(Fault::QueryBlock) || w.state == "gone" {
            return Err(CallError::Closed);
        }
        Ok(w.drives.clone())
    }

    fn insert_media(&mut self, drive: &str, media: &Media) -> Result<(), CallError> {
        let mut w = self.world();
        w.calls.push(format!("insert {drive} {}", media.file));
        w.inserts += 1;
        let fail = match w.inserts {
            1 => w.has(Fault::InsertIc),
            _ => w.has(Fault::Restore),
        };
        if fail {
            return Err(refused("Could not open 'x': Permission denied"));
        }
        if w.has(Fault::DiesAfterInsert) {
            w.state = "gone".into();
        }
        let d = w
            .drives
            .iter_mut()
            .find(|d| d.id == drive)
            .ok_or_else(|| refused("Device not found"))?;
        d.media = Some(media.clone());
        d.tray_open = false;
        Ok(())
    }

    fn eject_media(&mut self, drive: &str) -> Result<(), CallError> {
        let mut w = self.world();
        w.calls.push(format!("eject {drive}"));
        if w.state == "gone" {
            return Err(CallError::Closed);
        }
        if w.has(Fault::TrayLocked) {
            return Err(CallError::TrayLocked(format!(
                "Device '{drive}' is locked and force was not specified, \
                 wait for tray to open and try again"
            )));
        }
        let d = w
            .drives
            .iter_mut()
            .find(|d| d.id == drive)
            .ok_or_else(|| refused("Device not found"))?;
        d.media = None;
        d.tray_open = true;
        Ok(())
    }

    fn close_tray(&mut self, drive: &str) -> Result<(), CallError> {
        let mut w = self.world();
        w.calls.push(format!("close {drive}"));
        if let Some(d) = w.drives.iter_mut().find(|d| d.id == drive) {
            d.tray_open = false;
        }
        Ok(())
    }
}

struct FakeAgent(Arc<Mutex<World>>);

impl FakeAgent {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn running() -> ExecStatus {
    ExecStatus::default()
}

fn status(code: i64, stderr: &str) -> ExecStatus {
    ExecStatus {
        exited: true,
        exit_code: Some(code),
        signal: None,
        stdout: String::new(),
        stderr: stderr.into(),
    }
}

impl GuestAgent for FakeAgent {
    fn os_info(&mut self) -> Result<GuestOsInfo, CallError> {
        let w = self.world();
        if w.has(Fault::AgentNeverBack) && w.called("exec installer") {
            return Err(CallError::Timeout(std::time::Duration::from_secs(5)));
        }
        Ok(w.os.clone())
    }

    fn disabled_commands(&mut self) -> Result<Option<Vec<String>>, CallError> {
        let w = self.world();
        let mut off = Vec::new();
        if w.has(Fault::BlocksExec) {
            off.extend(["guest-exec", "guest-exec-status"]);
        }
        if w.has(Fault::BlocksFiles) {
            off.extend(["guest-file-open", "guest-file-read", "guest-file-close"]);
        }
        Ok(Some(off.into_iter().map(str::to_owned).collect()))
    }

    fn exec(&mut self, path: &str, args: &[String], _env: &[String]) -> Result<i64, CallError> {
        let mut w = self.world();
        let script = args.get(1).cloned().unwrap_or_default();
        let what = if script.contains("mount -t iso9660") {
            "mount"
        } else if script.contains("umount \"$1\"") {
            "umount"
        } else if script.contains("VMGUEST_IC_MEDIA") {
            "installer"
        } else if script.starts_with("mkdir -p") {
            "record"
        } else if script.starts_with("cat ") {
            "probe"
        } else if script.contains("/proc/$1/stat") {
            // vmguest asks whether a process its restarted agent lost still runs: the
            // double's installer has ended.
            "alive"
        } else {
            "other"
        };
        w.calls.push(format!("exec {what}"));
        if what == "installer" && w.installs.is_some() {
            w.version = w.installs.clone();
        }
        let result = match what {
            "mount" if w.has(Fault::Mount) => status(32, "mount: wrong fs type"),
            "mount" => {
                w.mounted = true;
                status(0, "")
            }
            "umount" => {
                w.mounted = false;
                status(0, "")
            }
            "installer" if w.has(Fault::InstallerFails) => status(3, "install.sh: cannot build"),
            "installer" if w.has(Fault::LocksTrayOnInstall) => {
                w.faults.insert(Fault::TrayLocked);
                status(0, "")
            }
            "installer" if w.has(Fault::PausesDuringInstall) => {
                w.faults.insert(Fault::TrayLocked);
                w.state = "paused".into();
                running()
            }
            "installer" if w.has(Fault::InstallerHangs) => running(),
            "alive" => status(1, ""),
            "probe" => match w.version.clone() {
                Some(v) => ExecStatus {
                    stdout: format!("{v}\n"),
                    ..status(0, "")
                },
                None => status(1, "cat: no such file"),
            },
            "other" => {
                // vmguest's process-tree killer: what it kills exits with SIGKILL.
                for s in w.exits.iter_mut().filter(|s| !s.exited) {
                    *s = ExecStatus {
                        exited: true,
                        signal: Some(9),
                        ..Default::default()
                    };
                }
                w.killed += 1;
                status(0, "")
            }
            _ => status(0, ""),
        };
        assert_eq!(path, "/bin/sh");
        w.exits.push(result);
        Ok(w.exits.len() as i64)
    }

    fn exec_status(&mut self, pid: i64) -> Result<ExecStatus, CallError> {
        let w = self.world();
        let is_installer = w
            .calls
            .iter()
            .filter(|c| c.starts_with("exec "))
            .nth(pid as usize - 1)
            .is_some_and(|c| c == "exec installer");
        if is_installer && w.has(Fault::AgentDiesDuringInstall) {
            return Err(CallError::Closed);
        }
        if is_installer && w.has(Fault::AgentNeverBack) {
            return Err(CallError::Timeout(std::time::Duration::from_secs(5)));
        }
        if is_installer && w.has(Fault::AgentRestartsDuringInstall) {
            // What the socket agent makes of qemu-ga's refusal.
            return Err(CallError::UnknownProcess(pid));
        }
        w.exits
            .get(pid as usize - 1)
            .cloned()
            .ok_or_else(|| refused("Invalid parameter 'pid'"))
    }

    fn read_file(&mut self, path: &str, offset: u64, max: usize) -> Result<Vec<u8>, CallError> {
        let w = self.world();
        if path == "/proc/mounts" {
            return Ok(Vec::new());
        }
        let Some(n) = path.strip_prefix("/dev/sr") else {
            return Err(refused(&format!("failed to open file '{path}'")));
        };
        let file = n
            .parse::<usize>()
            .ok()
            .and_then(|i| w.drives.get(i))
            .and_then(|d| d.media.as_ref().map(|m| m.file.clone()))
            .ok_or_else(|| refused(&format!("failed to open file '{path}': No medium found")))?;
        let mut f = std::fs::File::open(&file).map_err(CallError::Io)?;
        f.seek(SeekFrom::Start(offset)).map_err(CallError::Io)?;
        let mut buf = Vec::new();
        f.take(max as u64)
            .read_to_end(&mut buf)
            .map_err(CallError::Io)?;
        Ok(buf)
    }

    fn write_file(&mut self, path: &str, _data: &[u8]) -> Result<(), CallError> {
        self.world().calls.push(format!("write {path}"));
        Ok(())
    }

    fn fs_info(&mut self) -> Result<Vec<vmguest::vm::FsInfo>, CallError> {
        Ok(Vec::new())
    }

    fn reboot(&mut self) -> Result<(), CallError> {
        self.world().calls.push("reboot".into());
        Ok(())
    }
}
