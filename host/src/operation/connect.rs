//! Reaching the VM: is it running, and does its guest agent answer (else autorun).

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::Operation;
use crate::hresult::{chain, Failure, HResult, OrHResult, Outcome};
use crate::iso::IcIso;
use crate::kinds::Family;
use crate::report::Mode;
use crate::vm::{CallError, GuestAgent, Vm, VmControl};

/// Pause between two attempts to reach an agent that does not answer yet (each attempt
/// itself waits the backend's `agent_ready`).
const AGENT_RETRY: Duration = Duration::from_secs(1);

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
    /// original; the agent still tells the guest's OS when it can. An agent whose channel
    /// is there but that does not answer yet is waited for, up to `-AgentWaitSec`.
    /// An agent that has the calls the install needs switched off stops the run here,
    /// before anything in the VM changed.
    pub(super) fn connect_agent(
        &mut self,
        vm_handle: &dyn Vm,
    ) -> Outcome<Option<Box<dyn GuestAgent>>> {
        let mut agent = match self.wait_for_agent(vm_handle) {
            Ok(Some(agent)) => agent,
            Ok(None) => return Ok(self.autorun_mode()),
            Err(_) if self.options.no_wait => return Ok(self.autorun_mode()),
            Err(e) => {
                self.note(format!(
                    "guest agent does not answer ({}); falling back to autorun",
                    chain(&e)
                ));
                return Ok(self.autorun_mode());
            }
        };
        match agent.os_info() {
            Ok(info) => self.state.guest_os = Some(info),
            Err(e) => self.note(format!("guest-get-osinfo failed: {}", chain(&e))),
        }
        if self.options.no_wait {
            return Ok(self.autorun_mode());
        }
        self.check_agent_calls(agent.as_mut())?;
        self.state.mode = Some(Mode::Agent);
        Ok(Some(agent))
    }

    /// The VM's agent, asked again while its channel is there but nobody answers on it,
    /// until `-AgentWaitSec` has passed. The note says what happened.
    fn wait_for_agent(
        &mut self,
        vm_handle: &dyn Vm,
    ) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
        let wait = self.options.agent_wait;
        let start = Instant::now();
        let mut retried = false;
        loop {
            let answer = vm_handle.agent();
            let waited = start.elapsed();
            match answer {
                Err(e) if e.agent_not_up() && waited < wait && !self.options.no_wait => {
                    if self.options.cancel.check().is_err() {
                        return Err(e);
                    }
                    self.progress.waiting(&self.vm, "guest agent", waited, wait);
                    tracing::debug!(vm = %self.vm, "waiting for the guest agent: {e}");
                    sleep(AGENT_RETRY);
                    retried = true;
                }
                Err(e) if e.agent_not_up() && !self.options.no_wait => {
                    self.note(format!(
                        "waited {}s for the guest agent, which never answered",
                        start.elapsed().as_secs()
                    ));
                    return Err(e);
                }
                Ok(Some(agent)) if retried => {
                    self.note(format!(
                        "waited {}s for the guest agent, then it answered",
                        start.elapsed().as_secs()
                    ));
                    return Ok(Some(agent));
                }
                other => return other,
            }
        }
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
