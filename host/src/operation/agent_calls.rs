//! The agent calls an install needs, checked against what the agent has switched off
//! (`guest-info`), before anything in the VM changes. RHEL-family guests ship qemu-ga
//! with `guest-exec*` and `guest-file-*` blocked.

use super::Operation;
use crate::hresult::{chain, Failure, HResult, Outcome};
use crate::vm::GuestAgent;

/// What starts the installer and waits for it.
const EXEC: &[&str] = &["guest-exec", "guest-exec-status"];

/// What finds the media (its volume descriptor on the device), reads the guest's mounts
/// and writes the install record.
const FILES: &[&str] = &[
    "guest-file-open",
    "guest-file-read",
    "guest-file-seek",
    "guest-file-write",
    "guest-file-close",
];

/// How an admin lets the calls through, for the message.
const HOW_TO_ALLOW: &str = "allow them in the guest agent's configuration: remove them from \
    `block-rpcs` (or add them to `allow-rpcs`) in /etc/qemu/qemu-ga.conf, or in the agent \
    service's settings (RHEL: BLOCK_RPCS / FILTER_RPC_ARGS in /etc/sysconfig/qemu-ga; \
    Windows: the QEMU-GA service's arguments), then restart the agent";

impl Operation<'_> {
    /// Refuse, before the media moves, when the agent has switched off calls the install
    /// needs. Agents that cannot tell (through some APIs) are taken as they are.
    pub(super) fn check_agent_calls(&mut self, agent: &mut dyn GuestAgent) -> Outcome<()> {
        let disabled = match agent.disabled_commands() {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(()),
            Err(e) => {
                self.note(format!("guest-info failed: {}", chain(&e)));
                return Ok(());
            }
        };
        let off = |needed: &[&'static str]| -> Vec<&'static str> {
            needed
                .iter()
                .copied()
                .filter(|c| disabled.iter().any(|d| d == c))
                .collect()
        };
        let (exec, files) = (off(EXEC), off(FILES));
        if !exec.is_empty() {
            return Err(Failure::msg(
                HResult::DispException,
                format!(
                    "the guest agent has {} switched off, so vmguest cannot run the installer \
                     in the guest; nothing in the VM was changed. {HOW_TO_ALLOW}; or use \
                     -NoWait to insert the media for the guest's autorun",
                    exec.join(", ")
                ),
            ));
        }
        if !files.is_empty() {
            return Err(Failure::msg(
                HResult::DispException,
                format!(
                    "the guest agent has {} switched off: vmguest reads the guest's CD \
                     devices with them to find the media, and writes its install record; \
                     nothing in the VM was changed. {HOW_TO_ALLOW}; or use -NoWait to insert \
                     the media for the guest's autorun",
                    files.join(", ")
                ),
            ));
        }
        Ok(())
    }
}
