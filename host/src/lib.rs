//! vmguest: install guest integration components into running virtual machines.
//!
//! The API mirrors Windows Virtual PC's COM shape, `IVMVirtualPC` → `IVMVirtualMachine`
//! → `IVMGuestOS::InstallIntegrationComponents`, and keeps its contract: every install
//! ends in exactly one of seven documented [`HResult`]s.
//!
//! ```no_run
//! use vmguest::{VirtualPc, InstallOptions};
//!
//! let host = VirtualPc::open("/run/vmguest");
//! let vm = host.find_virtual_machine("web1")?;
//! let report = vm.guest_os().install_integration_components(&InstallOptions::default());
//! println!("{} {}", report.result, report.message);
//! # Ok::<(), vmguest::Failure>(())
//! ```
//!
//! Layout: [`operation`] is the install state machine; [`vm`] holds VM access behind
//! traits (QMP and the guest agent); [`inventory`] maps names to VMs; [`iso`] locates the
//! latest IC media by content; [`plugin`] hosts the sandboxed WebAssembly plugins;
//! [`config`] reads the config files; [`guest`] holds the steps inside the guest;
//! [`hresult`] is the error contract.
//!
//! Plugins are opt-in for library users: pass
//! `InstallOptions { plugins: Some(Arc::new(PluginSet::discover(None))), .. }`.
//!
//! Crates: `qapi-qmp`/`qapi-qga` provide the QMP and guest-agent command types generated
//! from QEMU's schema, so command names and argument shapes are not hand-typed; their
//! sync client is not used (see [`vm::channel`]). `indicatif` draws the progress spinner
//! in the CLI, `toml` reads VM definitions and IC manifests. `sha2` hashes the chosen ISO
//! for audit and pins plugin components. `wasmtime` and `wasmtime-wasi` (WASI p2) run the
//! plugins as components: the component model checks every value that crosses the
//! boundary, and epochs and resource limiters bound their time and memory. `proptest`
//! (tests only) drives the ISO reader and version property tests.

pub mod config;
pub mod guest;
pub mod hresult;
pub mod inventory;
pub mod iso;
pub mod manifest;
pub mod operation;
pub mod plugin;
pub mod progress;
pub mod report;
pub mod vm;

use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

pub use hresult::{Failure, HResult, Outcome};
pub use inventory::Inventory;
pub use operation::InstallOptions;
pub use progress::{Progress, Silent};
pub use report::InstallReport;
pub use vm::{DvdDrive, GuestOsInfo};

use guest::InstalledComponents;

/// The host: a VM inventory (`IVMVirtualPC`).
pub struct VirtualPc {
    pub inventory: Inventory,
}

impl VirtualPc {
    pub fn open(vm_dir: impl Into<PathBuf>) -> VirtualPc {
        VirtualPc {
            inventory: Inventory::new(vm_dir),
        }
    }

    /// `FindVirtualMachine`: VM_E_VM_UNKNOWN if there is no such VM.
    pub fn find_virtual_machine(&self, name: &str) -> Outcome<VirtualMachine<'_>> {
        self.inventory.entry(name)?;
        Ok(VirtualMachine {
            host: self,
            name: name.to_owned(),
        })
    }

    /// All VMs of the inventory.
    pub fn virtual_machines(&self) -> Outcome<Vec<VirtualMachine<'_>>> {
        let names = self.inventory.names().map_err(Failure::from)?;
        Ok(names
            .into_iter()
            .map(|name| VirtualMachine { host: self, name })
            .collect())
    }
}

/// One VM (`IVMVirtualMachine`).
pub struct VirtualMachine<'a> {
    host: &'a VirtualPc,
    name: String,
}

/// A read-only snapshot of a VM, as `Get-VM` shows it.
#[derive(Debug, Serialize)]
pub struct VmSummary {
    pub name: String,
    /// QEMU's run state, or "not-running" when QMP does not answer.
    pub state: String,
    pub dvd_drives: Vec<DvdDrive>,
    pub guest_os: Option<GuestOsInfo>,
    pub integration_components: Option<InstalledComponents>,
    pub notes: Vec<String>,
}

impl<'a> VirtualMachine<'a> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's run state; VM_E_VM_NOT_RUNNING if QEMU does not answer.
    pub fn state(&self) -> Outcome<String> {
        let inv = &self.host.inventory;
        let mut vm = inv.connect(&inv.entry(&self.name)?)?;
        vm.run_state()
            .context("query-status")
            .map_err(|e| Failure::new(HResult::VmNotRunning, e))
    }

    pub fn dvd_drives(&self) -> Outcome<Vec<DvdDrive>> {
        let inv = &self.host.inventory;
        let mut vm = inv.connect(&inv.entry(&self.name)?)?;
        Ok(vm.dvd_drives().context("query-block")?)
    }

    /// `GuestOS`.
    pub fn guest_os(&self) -> GuestOs<'_> {
        GuestOs { vm: self }
    }

    /// Everything `Get-VM` shows. Parts that cannot be known (no agent) are `None`.
    pub fn summary(&self) -> Outcome<VmSummary> {
        let mut s = VmSummary {
            name: self.name.clone(),
            state: "not-running".into(),
            dvd_drives: Vec::new(),
            guest_os: None,
            integration_components: None,
            notes: Vec::new(),
        };
        match self.state() {
            Ok(state) => s.state = state,
            Err(f) if f.hresult == HResult::VmNotRunning => {
                s.notes.push(format!("{:#}", f.error));
                return Ok(s);
            }
            Err(f) => return Err(f),
        }
        s.dvd_drives = self.dvd_drives()?;
        let guest = self.guest_os();
        match guest.os_info() {
            Ok(info) => s.guest_os = info,
            Err(f) => s.notes.push(format!("guest agent: {:#}", f.error)),
        }
        if s.guest_os.is_some() {
            match guest.integration_components() {
                Ok(ic) => s.integration_components = ic,
                Err(f) => s.notes.push(format!("guest agent: {:#}", f.error)),
            }
        }
        Ok(s)
    }
}

/// The guest OS of a VM (`IVMGuestOS`).
pub struct GuestOs<'a> {
    vm: &'a VirtualMachine<'a>,
}

impl GuestOs<'_> {
    fn agent(&self) -> Outcome<Option<Box<dyn vm::GuestAgent>>> {
        let inv = &self.vm.host.inventory;
        let entry = inv.entry(&self.vm.name)?;
        Ok(inv.agent(&entry).context("guest agent")?)
    }

    /// What the guest agent reports; `None` without an agent.
    pub fn os_info(&self) -> Outcome<Option<GuestOsInfo>> {
        match self.agent()? {
            Some(mut a) => Ok(Some(a.os_info().context("guest-get-osinfo")?)),
            None => Ok(None),
        }
    }

    /// The components vmguest installed last, where the guest records them.
    pub fn integration_components(&self) -> Outcome<Option<InstalledComponents>> {
        match self.agent()? {
            Some(mut a) => Ok(guest::installed(a.as_mut())?),
            None => Ok(None),
        }
    }

    /// `InstallIntegrationComponents`. The report's `result` is the outcome.
    pub fn install_integration_components(&self, options: &InstallOptions) -> InstallReport {
        self.install_with_progress(options, &Silent)
    }

    pub fn install_with_progress(
        &self,
        options: &InstallOptions,
        progress: &dyn Progress,
    ) -> InstallReport {
        operation::install(&self.vm.host.inventory, &self.vm.name, options, progress)
    }
}
