//! The first step: a name resolved to a VM handle, once for the whole run.

use super::Operation;
use crate::hresult::Outcome;
use crate::vm::{Hypervisor, Vm};

/// The VM an operation runs on: a name its first step resolves, or a VM resolved
/// already (`VirtualMachine` keeps its handle), so a VM is looked up once per run.
pub enum Target<'a> {
    Named {
        hypervisor: &'a dyn Hypervisor,
        name: &'a str,
    },
    Resolved {
        vm: &'a dyn Vm,
        /// Its host, as reports and journal entries name it ([`Hypervisor::location`]).
        location: String,
    },
}

impl Target<'_> {
    pub(super) fn name(&self) -> &str {
        match self {
            Target::Named { name, .. } => name,
            Target::Resolved { vm, .. } => vm.name(),
        }
    }
}

/// A resolved VM, owned when the operation resolved it.
pub(super) enum Handle<'a> {
    Owned(Box<dyn Vm>),
    Borrowed(&'a dyn Vm),
}

impl Handle<'_> {
    pub(super) fn get(&self) -> &dyn Vm {
        match self {
            Handle::Owned(vm) => vm.as_ref(),
            Handle::Borrowed(vm) => *vm,
        }
    }
}

impl Operation<'_> {
    /// The VM by its name, looked up once for the whole run: VM_E_VM_UNKNOWN if there
    /// is no such VM. Its identity names it to the journal and the lock.
    pub(super) fn resolve<'t>(&mut self, target: Target<'t>) -> Outcome<Handle<'t>> {
        let (handle, location) = match target {
            Target::Named { hypervisor, name } => {
                (Handle::Owned(hypervisor.open(name)?), hypervisor.location())
            }
            Target::Resolved { vm, location } => (Handle::Borrowed(vm), location),
        };
        self.identity = handle.get().identity().to_owned();
        self.location = location;
        Ok(handle)
    }
}
