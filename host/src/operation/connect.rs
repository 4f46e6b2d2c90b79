//! Reaching the VM: is it running, and does its guest agent answer (else autorun).

use anyhow::Context;

use super::Operation;
use crate::hresult::{chain, Failure, HResult, OrHResult, Outcome};
use crate::iso::IcIso;
use crate::kinds::Family;
use crate::report::Mode;
use crate::vm::{CallError, GuestAgent, Vm, VmControl};

impl Operation<'_> {
    pub(super) fn check_running(&mut self, vm: &mut dyn VmControl) -> Outcome<()> {
        // A monitor that floods is there and misbehaving, not a stopped VM.
        let state = match vm.run_state() {
            Err(e @ CallError::TooLong(_)) => {
                return Err(Failure::new(
                    HResult::DispException,
                    anyhow::Error::new(e).context("query-status"),
                ))
            }
            r => r
                .context("query-status")
                .or_hresult(HResult::VmNotRunning)?,
        };
        if state != "running" {
            return Err(Failure::msg(
                HResult::VmNotRunning,
                format!("VM {:?} is {state}, not running", self.vm),
            ));
        }
        Ok(())
    }

    /// The agent, when the install runs through it. Without an answering agent (or for
    /// -NoWait, or a Windows guest) the operation falls back to autorun, like the
    /// original; the agent still tells the guest's OS when it can.
    pub(super) fn connect_agent(&mut self, vm_handle: &dyn Vm) -> Option<Box<dyn GuestAgent>> {
        let mut agent = match vm_handle.agent() {
            Ok(Some(agent)) => agent,
            Ok(None) => return self.autorun_mode(),
            Err(_) if self.options.no_wait => return self.autorun_mode(),
            Err(e) => {
                self.note(format!(
                    "guest agent does not answer ({}); falling back to autorun",
                    chain(&e)
                ));
                return self.autorun_mode();
            }
        };
        match agent.os_info() {
            Ok(info) => self.state.guest_os = Some(info),
            Err(e) => self.note(format!("guest-get-osinfo failed: {}", chain(&e))),
        }
        if self.options.no_wait {
            return self.autorun_mode();
        }
        self.state.mode = Some(Mode::Agent);
        Some(agent)
    }

    pub(super) fn autorun_mode(&mut self) -> Option<Box<dyn GuestAgent>> {
        self.state.mode = Some(Mode::Autorun);
        None
    }

    /// Media of no known family has no installer: it goes in for the guest's autorun,
    /// unless `-InstallCommand` says what to run on it.
    pub(super) fn agent_for_media(
        &mut self,
        agent: Option<Box<dyn GuestAgent>>,
        iso: &IcIso,
    ) -> Option<Box<dyn GuestAgent>> {
        if iso.family != Family::Other || self.options.install_command.is_some() {
            return agent;
        }
        self.note(format!(
            "{} is ISO 9660 of no known IC family: inserted for the guest's autorun \
             (-InstallCommand runs a command on it instead)",
            iso.path.display()
        ));
        self.autorun_mode()
    }
}
