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
            ch: Channel::connect(path, timeout)?,
        };
        let give_up = Instant::now() + ready_within;
        loop {
            let attempt = (Instant::now() + SYNC_ATTEMPT).min(give_up);
            match qga.sync(attempt) {
                Ok(()) => return Ok(qga),
                Err(CallError::Timeout(_)) if Instant::now() < give_up => continue,
                Err(CallError::Timeout(_)) => return Err(CallError::Timeout(ready_within)),
                Err(e) => return Err(e),
            }
        }
    }

    fn sync(&mut self, deadline: Instant) -> Result<(), CallError> {
        let id = sync_id();
        self.ch.send_raw(&[0xFF])?;
        self.ch.send(qapi_qga::guest_sync_delimited { id })?;
        loop {
            self.ch.skip_past_delimiter(deadline)?;
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
}

impl AgentTransport for Qga {
    fn execute<C: Command>(&mut self, cmd: C) -> Result<C::Ok, CallError> {
        self.ch.send(cmd)?;
        let v = self.ch.read_value(self.ch.deadline())?;
        decode_response(v)
    }

    fn send_only<C: Command>(&mut self, cmd: C) -> Result<(), CallError> {
        self.ch.send(cmd)
    }
}

fn sync_id() -> i64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    i64::from(nanos ^ std::process::id().rotate_left(16)) & 0x3FFF_FFFF
}
