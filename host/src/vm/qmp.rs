//! QEMU Machine Protocol client: greeting, capability negotiation, and commands whose
//! replies may be preceded by asynchronous events.

use std::path::Path;
use std::time::Duration;

use qapi_spec::Command;
use serde::de::DeserializeOwned;

use super::channel::{decode_response, CallError, Channel};

/// The longest QMP reply line accepted. vmguest's largest reply is `query-block`, about
/// 1 KiB per drive; a megabyte is a VM with hundreds of drives, and far below what a
/// peer that floods could make vmguest hold.
pub const QMP_REPLY_MAX: usize = 1 << 20;

/// A QMP connection. Asynchronous events that arrive between replies are logged and
/// dropped: nothing in vmguest waits on them, and a long install on a chatty VM would
/// otherwise queue them for as long as the connection lives.
pub struct Qmp {
    ch: Channel,
}

impl Qmp {
    /// Connect, read the greeting and leave capabilities-negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, CallError> {
        let mut ch = Channel::connect(path, timeout, QMP_REPLY_MAX)?;
        let greeting = match ch.read_value(ch.deadline()) {
            Err(CallError::Timeout(t)) => return Err(CallError::Busy(path.to_owned(), t)),
            other => other?,
        };
        if greeting.get("QMP").is_none() {
            return Err(CallError::Decode(format!(
                "not a QMP greeting: {}",
                super::channel::truncate(&greeting.to_string(), 300)
            )));
        }
        let mut qmp = Qmp { ch };
        qmp.execute(qapi_qmp::qmp_capabilities { enable: None })?;
        Ok(qmp)
    }

    /// Run a command and decode its typed reply.
    pub fn execute<C: Command>(&mut self, cmd: C) -> Result<C::Ok, CallError> {
        self.execute_as(cmd)
    }

    /// Run a command that takes a descriptor (`add-fd`, `getfd`), passing `fd` with it.
    pub fn execute_with_fd<C: Command>(
        &mut self,
        cmd: C,
        fd: std::os::fd::BorrowedFd,
    ) -> Result<C::Ok, CallError> {
        self.ch.send_with_fd(cmd, fd)?;
        self.reply()
    }

    /// Run a command and decode the reply into our own view of it. Used where the generated
    /// reply type is stricter than the QEMU versions we support (closed enums, fields that
    /// became mandatory in later schemas).
    pub fn execute_as<C: Command, T: DeserializeOwned>(&mut self, cmd: C) -> Result<T, CallError> {
        self.ch.send(cmd)?;
        self.reply()
    }

    /// The next reply, past any events.
    fn reply<T: DeserializeOwned>(&mut self) -> Result<T, CallError> {
        let deadline = self.ch.deadline();
        loop {
            let v = self.ch.read_value(deadline)?;
            if v.get("event").is_some() {
                tracing::debug!(event = %v["event"], data = %v["data"], "QMP event");
                continue;
            }
            return decode_response(v);
        }
    }
}
