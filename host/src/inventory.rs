//! The VM directory: one entry per VM, laid out like Proxmox's qemu-server run directory.
//!
//! ```text
//! DIR/NAME.qmp    QMP socket (required for a running VM)
//! DIR/NAME.qga    guest-agent socket (optional)
//! DIR/NAME.toml   optional definition: keeps a stopped VM known, may name other sockets
//! ```
//!
//! Which directory is decided once, in `settings.rs`.

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

use crate::hresult::{Failure, HResult, OrHResult, Outcome};
use crate::vm::qemu::{QemuAgent, QemuVm};
use crate::vm::{CallError, GuestAgent, Hypervisor, Timeouts, VmControl};

/// `NAME.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Definition {
    qmp: Option<PathBuf>,
    qga: Option<PathBuf>,
}

/// Where one VM's sockets are.
#[derive(Clone, Debug)]
pub struct VmEntry {
    pub name: String,
    pub qmp: PathBuf,
    pub qga: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Inventory {
    pub dir: PathBuf,
    pub timeouts: Timeouts,
}

impl Inventory {
    pub fn new(dir: impl Into<PathBuf>) -> Inventory {
        Inventory {
            dir: dir.into(),
            timeouts: Timeouts::default(),
        }
    }

    /// Names of all VMs in the directory, sorted.
    pub fn list(&self) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading VM directory {}", self.dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
                continue;
            };
            if ext == "qmp" || ext == "toml" {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Resolve a name to its sockets; VM_E_VM_UNKNOWN if the directory knows no such VM.
    pub fn entry(&self, name: &str) -> Outcome<VmEntry> {
        let unknown = || {
            Failure::msg(
                HResult::VmUnknown,
                format!("no VM named {name:?} in {}", self.dir.display()),
            )
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(unknown());
        }
        let def_path = self.dir.join(format!("{name}.toml"));
        let qmp = self.dir.join(format!("{name}.qmp"));
        let def = if def_path.exists() {
            let text = std::fs::read_to_string(&def_path)
                .with_context(|| format!("reading {}", def_path.display()))
                .or_hresult(HResult::DispException)?;
            toml::from_str::<Definition>(&text)
                .with_context(|| format!("parsing VM definition {}", def_path.display()))
                .or_hresult(HResult::DispException)?
        } else if qmp.exists() {
            Definition::default()
        } else {
            return Err(unknown());
        };
        let rel = |p: PathBuf| if p.is_absolute() { p } else { self.dir.join(p) };
        let qga = def
            .qga
            .map(rel)
            .or_else(|| Some(self.dir.join(format!("{name}.qga"))).filter(|p| p.exists()));
        Ok(VmEntry {
            name: name.to_owned(),
            qmp: def.qmp.map(rel).unwrap_or(qmp),
            qga,
        })
    }

    /// Connect to a VM's QMP socket. A socket that does not answer means QEMU is gone.
    pub fn connect(&self, entry: &VmEntry) -> Outcome<Box<dyn VmControl>> {
        match QemuVm::connect(&entry.qmp, self.timeouts.call) {
            Ok(vm) => Ok(Box::new(vm)),
            // QEMU runs; someone else is talking to it.
            Err(e @ CallError::Busy(..)) => Err(Failure::new(
                HResult::DispException,
                anyhow::Error::new(e).context(format!("VM {:?}: QMP is busy", entry.name)),
            )),
            // Something answers, but not as QEMU does: not a stopped VM.
            Err(e @ CallError::TooLong(_)) => Err(Failure::new(
                HResult::DispException,
                anyhow::Error::new(e).context(format!("VM {:?}: QMP greeting", entry.name)),
            )),
            Err(e) => Err(Failure::new(
                HResult::VmNotRunning,
                anyhow::Error::new(e).context(format!(
                    "VM {:?}: QMP socket {} does not answer, so QEMU is not running",
                    entry.name,
                    entry.qmp.display()
                )),
            )),
        }
    }

    /// The guest agent, if the VM has one that answers. `Ok(None)`: no agent socket.
    pub fn open_agent(&self, entry: &VmEntry) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
        let Some(path) = &entry.qga else {
            return Ok(None);
        };
        let agent = QemuAgent::connect(path, self.timeouts.call, self.timeouts.agent_ready)?;
        Ok(Some(Box::new(agent)))
    }
}

impl Hypervisor for Inventory {
    fn names(&self) -> Outcome<Vec<String>> {
        Ok(self.list()?)
    }

    fn lookup(&self, name: &str) -> Outcome<()> {
        self.entry(name).map(drop)
    }

    fn identity(&self, name: &str) -> String {
        let qmp = match self.entry(name) {
            Ok(e) => e.qmp,
            Err(_) => self.dir.join(format!("{name}.qmp")),
        };
        let qmp = std::fs::canonicalize(&qmp).unwrap_or(qmp);
        format!("qmp:{}", qmp.display())
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn control(&self, name: &str) -> Outcome<Box<dyn VmControl>> {
        self.connect(&self.entry(name)?)
    }

    fn agent(&self, name: &str) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
        match self.entry(name) {
            Ok(entry) => self.open_agent(&entry),
            // The operation resolves the VM before it asks for the agent.
            Err(_) => Ok(None),
        }
    }
}
