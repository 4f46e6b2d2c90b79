//! Many hosts at once, as Hyper-V's `-ComputerName a,b -VMName web1` works: a name is
//! looked up on every host, a host that cannot be reached fails only its own part, and
//! a name found nowhere is VM_E_VM_UNKNOWN naming every host searched.

use std::sync::Arc;

use crate::hresult::{Failure, HResult};
use crate::settings::{HostSpec, Settings};
use crate::{VirtualMachine, VirtualPc};

/// The hosts of one run, sharing its settings.
pub struct Fleet {
    hosts: Vec<VirtualPc>,
    settings: Arc<Settings>,
}

/// A failure and the host it belongs to (`None` when it belongs to no single host, as
/// a name found nowhere).
pub struct HostFailure {
    pub host: Option<String>,
    pub failure: Failure,
}

impl Fleet {
    /// The hosts the settings name (`Settings::hosts`), plus `extra` ones (hosts that
    /// pipeline objects pin), each once.
    pub fn open(settings: Settings, extra: &[HostSpec]) -> Fleet {
        let mut specs = settings.hosts.clone();
        for spec in extra {
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
            settings,
        }
    }

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
                .filter(|h| h.location() == label)
                .collect(),
            None => self.hosts.iter().collect(),
        };
        let mut out = Vec::new();
        let mut unknown = Vec::new();
        for host in &searched {
            match host.find_virtual_machine(name) {
                Ok(vm) => out.push(Ok(vm)),
                Err(f) if f.hresult == HResult::VmUnknown => unknown.push(host.location()),
                Err(failure) => out.push(Err(HostFailure {
                    host: Some(host.location()),
                    failure,
                })),
            }
        }
        if out.is_empty() {
            let hosts = if searched.is_empty() {
                format!("{} (no such host in this run)", pin.unwrap_or_default())
            } else {
                unknown.join(", ")
            };
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
