//! QEMU guest agent client. The agent channel is a byte stream that may hold stale
//! replies (from a previous client, or syncs sent before the agent started), so every
//! connection starts with `guest-sync-delimited`: the agent answers with 0xFF, which
//! marks where fresh replies begin, followed by our random id.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use qapi_spec::Command;

use super::channel::{decode_response, CallError, Channel};

pub struct Qga {
    ch: Channel,
}

/// The longest agent reply line accepted, for every command but `guest-exec-status`.
/// The largest are `guest-file-read`, base64 of at most 48 KiB (vmguest's read chunk,
/// about 64 KiB encoded), and `guest-get-fsinfo`, a few hundred bytes per mount: 4 MiB
/// is a guest with thousands of mounts.
pub const AGENT_REPLY_MAX: usize = 4 << 20;

/// The longest `guest-exec-status` reply accepted: qemu-ga keeps up to 16 MiB of each
/// of the process's stdout and stderr (`GUEST_EXEC_MAX_OUTPUT` in `qga/commands.c`) and
/// sends both base64-encoded in one line, 2 × 16 MiB × 4/3 ≈ 42.7 MiB. Larger is not
/// qemu-ga. What is kept of the output is cut further once decoded
/// (`qemu::EXEC_OUTPUT_KEEP`).
pub const EXEC_STATUS_REPLY_MAX: usize = 44 << 20;

/// The cap of one command's reply.
fn reply_cap(command: &str) -> usize {
    if command == <qapi_qga::guest_exec_status as Command>::NAME {
        EXEC_STATUS_REPLY_MAX
    } else {
        AGENT_REPLY_MAX
    }
}

/// How long one sync attempt waits before it is repeated.
const SYNC_ATTEMPT: Duration = Duration::from_secs(2);

impl Qga {
    /// Connect and synchronise, retrying until `ready_within` (an agent that is still
    /// starting in the guest accepts the socket but answers nothing).
    pub fn connect(
        path: &Path,
        timeout: Duration,
        ready_within: Duration,
    ) -> Result<Qga, CallError> {
        let mut qga = Qga {
            ch: Channel::connect(path, timeout, AGENT_REPLY_MAX)?,
        };
        qga.sync_within(ready_within)?;
        Ok(qga)
    }

    /// Sync, repeating attempts until `within`: an agent that is (re)starting in the
    /// guest answers nothing until it runs.
    fn sync_within(&mut self, within: Duration) -> Result<(), CallError> {
        let give_up = Instant::now() + within;
        loop {
            let attempt = (Instant::now() + SYNC_ATTEMPT).min(give_up);
            match self.sync(attempt) {
                Ok(()) => return Ok(()),
                Err(CallError::Timeout(_)) if Instant::now() < give_up => continue,
                Err(CallError::Timeout(_)) => return Err(CallError::Timeout(within)),
                Err(e) => return Err(e),
            }
        }
    }

    fn sync(&mut self, deadline: Instant) -> Result<(), CallError> {
        let id = sync_id();
        self.ch.send_raw(&[0xFF])?;
        self.ch.send(qapi_qga::guest_sync_delimited { id })?;
        loop {
            // Stale replies of an earlier client: at most one of any command's.
            self.ch
                .skip_past_delimiter(deadline, EXEC_STATUS_REPLY_MAX)?;
            let v = self.ch.read_value(deadline)?;
            match decode_response::<i64>(v) {
                Ok(got) if got == id => return Ok(()),
                // A reply to an earlier sync or a parse error about stray bytes: keep looking.
                _ => continue,
            }
        }
    }
}

/// How agent commands reach the guest: one command, one answer.
pub trait AgentTransport {
    fn execute<C: Command>(&mut self, cmd: C) -> Result<C::Ok, CallError>;
    /// For the commands that answer nothing on success (`guest-shutdown`).
    fn send_only<C: Command>(&mut self, cmd: C) -> Result<(), CallError>;
    /// Get in step again with an agent that stopped answering or was restarted, within
    /// `within`. Transports that sync on every command (libvirt) only need it to answer.
    fn resync(&mut self, within: Duration) -> Result<(), CallError> {
        let give_up = Instant::now() + within;
        loop {
            match self.execute(qapi_qga::guest_ping {}) {
                Ok(_) => return Ok(()),
                Err(e) if (e.agent_not_up() || e.is_disconnect()) && Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(500))
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl AgentTransport for Qga {
    fn execute<C: Command>(&mut self, cmd: C) -> Result<C::Ok, CallError> {
        self.ch.send(cmd)?;
        let v = self
            .ch
            .read_value_up_to(self.ch.deadline(), reply_cap(C::NAME))?;
        decode_response(v)
    }

    fn send_only<C: Command>(&mut self, cmd: C) -> Result<(), CallError> {
        self.ch.send(cmd)
    }

    /// A restarted agent may first answer what was sent while it was down: sync past it.
    fn resync(&mut self, within: Duration) -> Result<(), CallError> {
        self.sync_within(within)
    }
}

fn sync_id() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    i64::from(nanos ^ std::process::id().rotate_left(16)) & 0x3FFF_FFFF
}
