//! The VM directory: one entry per VM, laid out like Proxmox's qemu-server run directory.
//!
//! ```text
//! DIR/NAME.qmp    QMP socket (required for a running VM)
//! DIR/NAME.qga    guest-agent socket (optional)
//! DIR/NAME.toml   optional definition: keeps a stopped VM known, may name other sockets
//! ```
//!
//! Which directory is decided once, in `settings/`. A VM is resolved once, to its
//! sockets ([`VmEntry`]); `monitor.rs` speaks QMP on the first of them.

mod monitor;

use std::path::PathBuf;

use anyhow::Context;
use serde::Deserialize;

pub use crate::vm::agent::{QemuAgent, EXEC_OUTPUT_KEEP};
pub use monitor::{fdset_id, QemuVm, FDSET};

use crate::vm::{CallError, GuestAgent, Hypervisor, Timeouts, Vm, VmControl, VmError};

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

    /// Resolve a name to its sockets; [`VmError::Unknown`] if the directory knows no
    /// such VM.
    pub fn entry(&self, name: &str) -> Result<VmEntry, VmError> {
        let unknown =
            || VmError::Unknown(format!("no VM named {name:?} in {}", self.dir.display()));
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(unknown());
        }
        let def_path = self.dir.join(format!("{name}.toml"));
        let qmp = self.dir.join(format!("{name}.qmp"));
        let def = if def_path.exists() {
            let text = std::fs::read_to_string(&def_path)
                .with_context(|| format!("reading {}", def_path.display()))
                .map_err(VmError::Definition)?;
            toml::from_str::<Definition>(&text)
                .with_context(|| format!("parsing VM definition {}", def_path.display()))
                .map_err(VmError::Definition)?
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
}

impl VmEntry {
    /// Connect to the VM's QMP socket. A socket that does not answer means QEMU is gone.
    pub fn connect(&self, timeouts: Timeouts) -> Result<Box<dyn VmControl>, VmError> {
        match QemuVm::connect(&self.qmp, timeouts.call) {
            Ok(vm) => Ok(Box::new(vm)),
            // QEMU runs; someone else is talking to it.
            Err(e @ CallError::Busy(..)) => Err(VmError::Monitor {
                what: format!("VM {:?}: QMP is busy", self.name),
                source: e,
            }),
            // Something answers, but not as QEMU does: not a stopped VM.
            Err(e @ CallError::TooLong(_)) => Err(VmError::Monitor {
                what: format!("VM {:?}: QMP greeting", self.name),
                source: e,
            }),
            Err(e) => Err(VmError::NotRunning {
                what: format!(
                    "VM {:?}: QMP socket {} does not answer, so QEMU is not running",
                    self.name,
                    self.qmp.display()
                ),
                source: e,
            }),
        }
    }

    /// The guest agent, if the VM has one that answers. `Ok(None)`: no agent socket.
    pub fn open_agent(&self, timeouts: Timeouts) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
        let Some(path) = &self.qga else {
            return Ok(None);
        };
        let agent = QemuAgent::connect(path, timeouts.call, timeouts.agent_ready)?;
        Ok(Some(Box::new(agent)))
    }
}

/// One VM of the directory, resolved to its sockets.
struct SocketVm {
    entry: VmEntry,
    identity: String,
    timeouts: Timeouts,
}

impl Vm for SocketVm {
    fn name(&self) -> &str {
        &self.entry.name
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn control(&self) -> Result<Box<dyn VmControl>, VmError> {
        self.entry.connect(self.timeouts)
    }

    fn agent(&self) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
        self.entry.open_agent(self.timeouts)
    }
}

impl Hypervisor for Inventory {
    fn names(&self) -> Result<Vec<String>, VmError> {
        self.list().map_err(VmError::Definition)
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    /// The identity is the QMP socket's canonical path.
    fn open(&self, name: &str) -> Result<Box<dyn Vm>, VmError> {
        let entry = self.entry(name)?;
        let qmp = std::fs::canonicalize(&entry.qmp).unwrap_or_else(|_| entry.qmp.clone());
        Ok(Box::new(SocketVm {
            identity: format!("qmp:{}", qmp.display()),
            entry,
            timeouts: self.timeouts,
        }))
    }
}
