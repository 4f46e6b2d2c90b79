//! One file per cmdlet: its parameters (a clap `Args`) and its `exec`, which does the
//! work and returns the process exit code.

pub mod completions;
pub mod get_integration_components_iso;
pub mod get_plugin;
pub mod get_vm;
pub mod install_integration_components;
pub mod install_plugin;
pub mod man;
pub mod new_plugin;
pub mod repair_vm_media;
pub mod test_plugin;

use vmguest::{Failure, Fleet, GuestOsInfo, HResult};

/// What the VM's guest agent says about its OS (none without an agent).
pub fn guest_info(fleet: &Fleet, name: &str) -> Result<Option<GuestOsInfo>, Failure> {
    fleet
        .find(name, None)
        .into_iter()
        .next()
        .map_or_else(
            || {
                Err(Failure::msg(
                    HResult::VmUnknown,
                    format!("no VM named {name:?}"),
                ))
            },
            |r| r.map_err(|h| h.failure),
        )
        .and_then(|vm| vm.guest_os().os_info())
}
