//! The guest agent through `virDomainQemuAgentCommand`: the same command types and the
//! same file and exec logic as the socket backend ([`crate::vm::agent::QemuAgent`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use qapi_spec::Command;

use super::ffi::{Code, Domain, Error as VirtError};
use crate::vm::agent::QemuAgent;
use crate::vm::channel::decode_response;
use crate::vm::qga::AgentTransport;
use crate::vm::{CallError, GuestAgent, Timeouts};

/// The domain's agent, once it answers a ping (within `timeouts.agent_ready`).
pub(super) fn connect(
    domain: Arc<Domain>,
    timeouts: Timeouts,
) -> Result<Box<dyn GuestAgent>, CallError> {
    let mut transport = AgentCommand {
        domain,
        timeout: timeouts.call,
    };
    transport.wait_ready(timeouts.agent_ready)?;
    Ok(Box::new(QemuAgent::over(transport)))
}

/// Agent commands through `virDomainQemuAgentCommand`; libvirt does the guest-sync.
struct AgentCommand {
    domain: Arc<Domain>,
    timeout: Duration,
}

impl AgentCommand {
    /// An agent still starting in the guest is "not connected" to libvirt; ask again
    /// until `within`.
    fn wait_ready(&mut self, within: Duration) -> Result<(), CallError> {
        let give_up = Instant::now() + within;
        loop {
            match self.execute(qapi_qga::guest_ping {}) {
                Ok(_) => return Ok(()),
                Err(CallError::Libvirt(e))
                    if e.code() == Code::AgentUnresponsive && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(250))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl AgentTransport for AgentCommand {
    fn execute<C: Command>(&mut self, cmd: C) -> Result<C::Ok, CallError> {
        let json = serde_json::to_string(&qapi_spec::Execute::<C>::with_command(cmd))
            .map_err(|e| CallError::Decode(e.to_string()))?;
        let secs = i32::try_from(self.timeout.as_secs().max(1)).unwrap_or(i32::MAX);
        let reply = self
            .domain
            .qemu_agent_command(&json, secs)
            .map_err(|e| agent_error(e, self.timeout))?;
        let value = serde_json::from_str(&reply)
            .map_err(|e| CallError::Decode(format!("{e} in agent reply")))?;
        decode_response(value)
    }

    /// `VIR_DOMAIN_QEMU_AGENT_COMMAND_NOWAIT` (0): libvirt sends and does not wait.
    fn send_only<C: Command>(&mut self, cmd: C) -> Result<(), CallError> {
        let json = serde_json::to_string(&qapi_spec::Execute::<C>::with_command(cmd))
            .map_err(|e| CallError::Decode(e.to_string()))?;
        match self.domain.qemu_agent_command(&json, 0) {
            Ok(_) => Ok(()),
            Err(e) => Err(agent_error(e, self.timeout)),
        }
    }
}

/// libvirt turns the agent's own error answers into an internal error ("unable to
/// execute QEMU agent command '%s': %s", `qemuAgentCheckError` in `qemu_agent.c`);
/// those are the agent refusing, as [`CallError::Qapi`] is on the socket.
fn agent_error(e: VirtError, timeout: Duration) -> CallError {
    match e.code() {
        Code::AgentCommandTimeout | Code::OperationTimeout => CallError::Timeout(timeout),
        Code::InternalError if e.message().contains("unable to execute QEMU agent command") => {
            CallError::Qapi {
                class: "libvirt".into(),
                desc: e.message().to_owned(),
            }
        }
        _ => CallError::Libvirt(e),
    }
}
