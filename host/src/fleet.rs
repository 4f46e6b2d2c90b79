//! Many hosts at once, as Hyper-V's `-ComputerName a,b -VMName web1` works: a name is
//! looked up on every host, a host that cannot be reached fails only its own part, and
//! a name found nowhere is VM_E_VM_UNKNOWN naming every host searched.
//!
//! The hosts of a run are the ones the admin named (flags, environment) or the local
//! defaults; nothing read from stdin adds one. A pipeline object's `host` only chooses
//! among them ([`HostSpec::is_named_by`]): a URI from stdin could otherwise name a
//! libvirt transport that runs a program (`qemu+ext://…?command=`), a key file or a
//! socket, and a directory could point QMP at any socket.

use std::sync::Arc;

use crate::hresult::{Failure, HResult};
use crate::settings::{HostSpec, Settings};
use crate::virtual_pc::{VirtualMachine, VirtualPc};

/// The hosts of one run, sharing its settings.
pub struct Fleet {
    hosts: Vec<VirtualPc>,
    /// What each of `hosts` was opened from, in the same order.
    specs: Vec<HostSpec>,
    settings: Arc<Settings>,
}

/// A failure and the host it belongs to (`None` when it belongs to no single host, as
/// a name found nowhere).
pub struct HostFailure {
    /// The host, as reports name it.
    pub host: Option<String>,
    /// What failed there.
    pub failure: Failure,
}

impl Fleet {
    /// The hosts the settings name (`Settings::hosts`), each once. Nothing is connected
    /// until a VM is looked up.
    pub fn open(settings: Settings) -> Fleet {
        let mut specs: Vec<HostSpec> = Vec::new();
        for spec in &settings.hosts {
            if !specs.contains(spec) {
                specs.push(spec.clone());
            }
        }
        let settings = Arc::new(settings);
        Fleet {
            hosts: specs
                .iter()
                .map(|s| VirtualPc::on(s, settings.clone()))
                .collect(),
            specs,
            settings,
        }
    }

    /// Every host of the run, in the order the settings name them.
    pub fn hosts(&self) -> &[VirtualPc] {
        &self.hosts
    }

    /// The settings every host shares.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Every VM called `name` on the hosts searched (all, or the one `pin` names), and a
    /// failure for each host that could not answer. Found nowhere, with every host
    /// answering: one VM_E_VM_UNKNOWN naming them all.
    pub fn find(
        &self,
        name: &str,
        pin: Option<&str>,
    ) -> Vec<Result<VirtualMachine<'_>, HostFailure>> {
        let searched: Vec<&VirtualPc> = match pin {
            Some(label) => self
                .hosts
                .iter()
                .zip(&self.specs)
                .filter(|(_, spec)| spec.is_named_by(label))
                .map(|(h, _)| h)
                .collect(),
            None => self.hosts.iter().collect(),
        };
        if let (Some(label), true) = (pin, searched.is_empty()) {
            return vec![Err(self.not_a_host_of_this_run(name, label))];
        }
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        for host in &searched {
            match host.find_virtual_machine(name) {
                Ok(vm) => out.push(Ok(vm)),
                // A name that fits several VMs of a host is reported, not searched on.
                Err(f) if f.hresult == HResult::VmUnknown && !is_ambiguous(&f) => {
                    unknown.push(host.location())
                }
                Err(failure) => out.push(Err(HostFailure {
                    host: Some(host.location()),
                    failure,
                })),
            }
        }
        if out.is_empty() {
            let hosts = unknown.join(", ");
            out.push(Err(HostFailure {
                host: None,
                failure: Failure::msg(
                    HResult::VmUnknown,
                    format!("no VM named {name:?} on any host searched: {hosts}"),
                ),
            }));
        }
        out
    }

    /// A pipeline object named a host that is not one of this run's: refused, and
    /// nothing connected to it.
    fn not_a_host_of_this_run(&self, name: &str, label: &str) -> HostFailure {
        let ours: Vec<String> = self.specs.iter().map(HostSpec::label).collect();
        HostFailure {
            host: None,
            failure: Failure::msg(
                HResult::VmUnknown,
                format!(
                    "VM {name:?} is pinned to host {label:?}, which is not one of this run's \
                     hosts ({}): a host read from the pipeline may only choose among the \
                     hosts named by -VMDir, -ConnectionUri, -ComputerName, $VMGUEST_VM_DIR \
                     or $LIBVIRT_DEFAULT_URI (or the local defaults); it was not connected",
                    ours.join(", ")
                ),
            ),
        }
    }

    /// Every VM of every host, host by host; a host that cannot be listed gives its
    /// failure in place of its VMs.
    pub fn virtual_machines(&self) -> Vec<Result<VirtualMachine<'_>, HostFailure>> {
        let mut out = Vec::new();
        for host in &self.hosts {
            match host.virtual_machines() {
                Ok(vms) => out.extend(vms.into_iter().map(Ok)),
                Err(failure) => out.push(Err(HostFailure {
                    host: Some(host.location()),
                    failure,
                })),
            }
        }
        out
    }
}

/// Whether a VM_E_VM_UNKNOWN failure is a name that fits several VMs of one host.
fn is_ambiguous(f: &Failure) -> bool {
    matches!(
        f.error.downcast_ref::<crate::vm::VmError>(),
        Some(crate::vm::VmError::Ambiguous(_))
    )
}
