//! Restarting the guest when the installer asks for it and -Restart allows it.

use std::time::{Duration, Instant};

use anyhow::Context;

use super::Operation;
use crate::hresult::{Failure, HResult, OrHResult, Outcome};
use crate::vm::{GuestAgent, Vm};

impl Operation<'_> {
    /// Reboot through the agent, then wait until the agent has gone and come back with
    /// the guest, within -TimeoutSec.
    pub(super) fn restart_guest(
        &mut self,
        vm_handle: &dyn Vm,
        mut agent: Box<dyn GuestAgent>,
    ) -> Outcome<()> {
        agent
            .reboot()
            .context("asking the guest to restart (guest-shutdown)")?;
        let deadline = Instant::now() + self.options.timeout;
        let gave_up = |op: &mut Self, what: &str| {
            op.state.restarted = Some(false);
            Failure::msg(
                HResult::DispException,
                format!(
                    "the guest {what} within {}s of the restart request",
                    op.options.timeout.as_secs()
                ),
            )
        };
        // The old connection answers until the agent stops with the guest.
        while agent.os_info().is_ok() {
            self.options
                .cancel
                .check()
                .or_hresult(HResult::DispException)?;
            if Instant::now() >= deadline {
                return Err(gave_up(self, "did not go down"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        drop(agent);
        loop {
            self.options
                .cancel
                .check()
                .or_hresult(HResult::DispException)?;
            if let Ok(Some(mut a)) = vm_handle.agent() {
                if let Ok(info) = a.os_info() {
                    self.state.guest_os = Some(info);
                    self.state.restarted = Some(true);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(gave_up(self, "agent did not come back"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
