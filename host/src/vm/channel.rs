//! Newline-delimited JSON over a unix socket, with a deadline on every read.
//!
//! QMP and the guest agent share this framing. The `qapi` crate's own sync client is not
//! used because it panics when the peer closes during the greeting, has no timeouts and
//! only speaks plain `guest-sync`; we use its generated command types instead.
//!
//! Every reply line has a cap, chosen per protocol (and per command where one reply is
//! much larger than the rest): a peer that streams bytes without a newline would
//! otherwise grow vmguest's memory for as long as the call's deadline. Past the cap the
//! connection is shut down and every later call on it fails with [`CallError::TooLong`].

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::libvirt_error::{Code, Error as LibvirtError};
use qapi_spec::Command;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How a call over a channel failed. Callers decide on the variant: `Closed` while a VM
/// was known to run means QEMU went away, `TrayLocked` is the guest holding its tray,
/// `Qapi` carries any other refusal of QEMU's.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Could not connect at all (no socket, nobody listening).
    #[error("cannot connect to {}", .0.display())]
    Connect(PathBuf, #[source] io::Error),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// Connected, but no greeting came: QEMU serves one QMP client at a time, and another
    /// client holds the monitor.
    #[error("{} accepted the connection but sent no greeting within {:.1}s: another client holds QEMU's monitor (QEMU serves one QMP client at a time)", .0.display(), .1.as_secs_f64())]
    Busy(PathBuf, Duration),
    /// No complete answer before the deadline.
    #[error("no answer within {:.1}s", .0.as_secs_f64())]
    Timeout(Duration),
    #[error("socket error")]
    /// Reading or writing the socket failed.
    Io(#[source] io::Error),
    /// The guest locked the tray (a file system on the media is mounted), so the media
    /// cannot be ejected without force, which vmguest never uses.
    #[error("the tray is locked by the guest: {0}")]
    TrayLocked(String),
    /// QEMU or the agent answered with an error object.
    #[error("{class}: {desc}")]
    Qapi { class: String, desc: String },
    /// The path of an ISO that vmguest checked names another file now (it was replaced
    /// after the check), and the hypervisor only takes paths.
    #[error("{} no longer names the file that vmguest opened and checked (replaced since)", .0.display())]
    Replaced(PathBuf),
    /// A reply line grew past its cap without ending: the peer is not the QEMU or agent
    /// it claims to be (or floods on purpose). The connection is shut down.
    #[error("a reply exceeded {0} bytes without ending; the connection was closed")]
    TooLong(usize),
    /// The answer did not have the expected shape.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// libvirt refused or failed; its message, code and domain are kept.
    #[error("libvirt: {0}")]
    Libvirt(#[from] LibvirtError),
    /// The guest agent knows no process of this pid: the agent that started it is gone
    /// (restarted, upgraded) and a new instance answers.
    #[error("the guest agent knows no process {0} (the agent that started it was restarted)")]
    UnknownProcess(i64),
}

impl CallError {
    /// True when an agent channel is there but no agent answers on it (yet): the socket's
    /// sync times out, or libvirt calls the agent unresponsive. Worth asking again.
    pub fn agent_not_up(&self) -> bool {
        match self {
            CallError::Timeout(_) => true,
            CallError::Libvirt(e) => e.code() == Code::AgentUnresponsive,
            _ => false,
        }
    }

    /// True when the connection is gone (the peer left, or vmguest hung up on a peer that
    /// flooded it) rather than the peer merely refusing.
    pub fn is_disconnect(&self) -> bool {
        match self {
            CallError::Closed | CallError::Connect(..) | CallError::TooLong(_) => true,
            CallError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::NotConnected
            ),
            // The daemon, the domain or its agent went away.
            CallError::Libvirt(e) => matches!(
                e.code(),
                Code::NoConnect
                    | Code::SystemError
                    | Code::Rpc
                    | Code::NoDomain
                    | Code::OperationInvalid
                    | Code::AgentUnresponsive
            ),
            _ => false,
        }
    }
}

pub struct Channel {
    stream: UnixStream,
    buf: Vec<u8>,
    pub timeout: Duration,
    /// The longest reply line accepted, unless a call asks for more.
    max_line: usize,
    /// Set once a reply overflowed its cap: the stream is shut down, nothing more is
    /// sent or read.
    overflowed: Option<usize>,
}

impl Channel {
    /// Connect; reply lines longer than `max_line` bytes end the connection.
    pub fn connect(path: &Path, timeout: Duration, max_line: usize) -> Result<Self, CallError> {
        let stream =
            UnixStream::connect(path).map_err(|e| CallError::Connect(path.to_owned(), e))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(CallError::Io)?;
        Ok(Channel::over(stream, timeout, max_line))
    }

    fn over(stream: UnixStream, timeout: Duration, max_line: usize) -> Channel {
        Channel {
            stream,
            buf: Vec::new(),
            timeout,
            max_line,
            overflowed: None,
        }
    }

    /// Give up on a peer that overflowed `cap`: drop what it sent and hang up, so it
    /// sees the end too.
    fn overflow(&mut self, cap: usize) -> CallError {
        tracing::warn!(cap, "a reply line exceeded its cap; closing the connection");
        self.buf = Vec::new();
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        self.overflowed = Some(cap);
        CallError::TooLong(cap)
    }

    fn usable(&self) -> Result<(), CallError> {
        match self.overflowed {
            Some(cap) => Err(CallError::TooLong(cap)),
            None => Ok(()),
        }
    }

    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), CallError> {
        self.usable()?;
        let timeout = self.timeout;
        self.stream.write_all(bytes).map_err(|e| map_io(e, timeout))
    }

    /// Serialise `{"execute": NAME, "arguments": {...}}` from a qapi command type.
    pub fn send<C: Command>(&mut self, cmd: C) -> Result<(), CallError> {
        let line = command_line(cmd)?;
        self.send_raw(&line)
    }

    /// As [`Channel::send`], with `fd` attached to the line as `SCM_RIGHTS`, the way
    /// QMP's `add-fd` and `getfd` receive a descriptor.
    pub fn send_with_fd<C: Command>(&mut self, cmd: C, fd: BorrowedFd) -> Result<(), CallError> {
        self.usable()?;
        let line = command_line(cmd)?;
        let sent = send_fd(&self.stream, &line, fd).map_err(|e| map_io(e, self.timeout))?;
        // The descriptor travels with the first byte; the rest is ordinary data.
        self.send_raw(&line[sent..])
    }

    fn fill(&mut self, deadline: Instant) -> Result<(), CallError> {
        let now = Instant::now();
        if now >= deadline {
            return Err(CallError::Timeout(self.timeout));
        }
        self.stream
            .set_read_timeout(Some(deadline - now))
            .map_err(CallError::Io)?;
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(CallError::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(map_io(e, self.timeout)),
        }
    }

    /// Next JSON line, ignoring blank lines.
    pub fn read_value(&mut self, deadline: Instant) -> Result<Value, CallError> {
        self.read_value_up_to(deadline, self.max_line)
    }

    /// Next JSON line, ignoring blank lines; a line longer than `cap` bytes ends the
    /// connection. Memory stays within `cap` and one read.
    pub fn read_value_up_to(&mut self, deadline: Instant, cap: usize) -> Result<Value, CallError> {
        self.usable()?;
        // Bytes already searched for a newline: each byte is looked at once.
        let mut searched = 0;
        loop {
            match self.buf[searched..].iter().position(|&b| b == b'\n') {
                Some(at) if searched + at > cap => return Err(self.overflow(cap)),
                Some(at) => {
                    let line: Vec<u8> = self.buf.drain(..=searched + at).collect();
                    searched = 0;
                    let text = line.trim_ascii();
                    if text.is_empty() {
                        continue;
                    }
                    return serde_json::from_slice(text).map_err(|e| {
                        CallError::Decode(format!(
                            "{e} in {:?}",
                            truncate(&String::from_utf8_lossy(text), 300)
                        ))
                    });
                }
                None if self.buf.len() > cap => return Err(self.overflow(cap)),
                None => searched = self.buf.len(),
            }
            self.fill(deadline)?;
        }
    }

    /// Drop everything up to and including the next 0xFF byte (guest-sync-delimited).
    /// What comes before it are stale replies, at most `cap` bytes of them.
    pub fn skip_past_delimiter(&mut self, deadline: Instant, cap: usize) -> Result<(), CallError> {
        self.usable()?;
        let mut skipped = 0;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == 0xFF) {
                self.buf.drain(..=pos);
                return Ok(());
            }
            skipped += self.buf.len();
            self.buf.clear();
            if skipped > cap {
                return Err(self.overflow(cap));
            }
            self.fill(deadline)?;
        }
    }
}

fn command_line<C: Command>(cmd: C) -> Result<Vec<u8>, CallError> {
    let mut line = serde_json::to_vec(&qapi_spec::Execute::<C>::with_command(cmd))
        .map_err(|e| CallError::Decode(e.to_string()))?;
    line.push(b'\n');
    tracing::trace!(command = C::NAME, "->");
    Ok(line)
}

/// One `sendmsg` of (the start of) `bytes` with `fd` in an `SCM_RIGHTS` message; returns
/// how many bytes went. std has no stable API for ancillary data.
fn send_fd(stream: &UnixStream, bytes: &[u8], fd: BorrowedFd) -> io::Result<usize> {
    let raw: RawFd = fd.as_raw_fd();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call,
    // and the control buffer is CMSG_SPACE bytes for one descriptor, as CMSG_FIRSTHDR
    // and CMSG_DATA expect.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::copy_nonoverlapping(
            &raw as *const RawFd as *const u8,
            libc::CMSG_DATA(cmsg),
            std::mem::size_of::<RawFd>(),
        );
        loop {
            let n = libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// A socket timeout (read or write) is the call's deadline passing.
fn map_io(e: io::Error, timeout: Duration) -> CallError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CallError::Timeout(timeout),
        _ => CallError::Io(e),
    }
}

/// Turn a `{"return": ...}` / `{"error": ...}` object into a typed result.
pub fn decode_response<T: DeserializeOwned>(v: Value) -> Result<T, CallError> {
    if let Some(err) = v.get("error") {
        let class = err["class"].as_str().unwrap_or("GenericError").to_owned();
        let desc = err["desc"].as_str().unwrap_or("").to_owned();
        return Err(CallError::Qapi { class, desc });
    }
    match v.get("return") {
        Some(ret) => serde_json::from_value(ret.clone())
            .map_err(|e| CallError::Decode(format!("{e} in {}", truncate(&ret.to_string(), 300)))),
        None => Err(CallError::Decode(format!(
            "neither return nor error in {}",
            truncate(&v.to_string(), 300)
        ))),
    }
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_objects_become_qapi_errors() {
        let v = serde_json::json!({"error": {"class": "GenericError", "desc": "Device 'cd0' is locked"}});
        match decode_response::<Value>(v) {
            Err(CallError::Qapi { desc, .. }) => assert!(desc.contains("locked")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lines_are_split_across_reads_and_delimiters_skipped() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut ch = Channel::over(a, Duration::from_secs(2), 1024);
        b.write_all(b"{\"error\":{\"class\":\"GenericError\",\"desc\":\"stray\"}}\n\xff{\"ret")
            .unwrap();
        b.write_all(b"urn\": 7}\n").unwrap();
        ch.skip_past_delimiter(ch.deadline(), 1024).unwrap();
        let v = ch.read_value(ch.deadline()).unwrap();
        assert_eq!(decode_response::<i64>(v).unwrap(), 7);
        drop(b);
        assert!(matches!(
            ch.read_value(ch.deadline()),
            Err(CallError::Closed)
        ));
    }

    #[test]
    fn a_silent_peer_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut ch = Channel::over(a, Duration::from_millis(50), 1024);
        assert!(matches!(
            ch.read_value(ch.deadline()),
            Err(CallError::Timeout(_))
        ));
    }

    /// A line up to the cap is read; one byte more ends the connection, and the channel
    /// stays failed.
    #[test]
    fn a_line_past_the_cap_ends_the_connection() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut ch = Channel::over(a, Duration::from_secs(2), 16);
        b.write_all(b"\"0123456789abcd\"\n").unwrap();
        assert_eq!(ch.read_value(ch.deadline()).unwrap(), "0123456789abcd");
        // The same line fits a call that allows more.
        b.write_all(b"\"0123456789abcde\"\n").unwrap();
        assert!(matches!(
            ch.read_value_up_to(ch.deadline(), 16),
            Err(CallError::TooLong(16))
        ));
        assert!(matches!(ch.send_raw(b"{}\n"), Err(CallError::TooLong(16))));
        assert!(matches!(
            ch.read_value(ch.deadline()),
            Err(CallError::TooLong(16))
        ));
        // The peer sees the end of the connection.
        let mut rest = Vec::new();
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(b.read_to_end(&mut rest).unwrap(), 0);
    }

    #[test]
    fn a_larger_cap_for_one_call() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut ch = Channel::over(a, Duration::from_secs(2), 16);
        b.write_all(b"\"0123456789abcdefghij\"\n").unwrap();
        assert_eq!(
            ch.read_value_up_to(ch.deadline(), 64).unwrap(),
            "0123456789abcdefghij"
        );
    }

    /// Stale bytes before the sync delimiter are bounded too.
    #[test]
    fn endless_bytes_before_the_delimiter_end_the_connection() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut ch = Channel::over(a, Duration::from_secs(2), 1024);
        let writer = std::thread::spawn(move || {
            let junk = [b'x'; 4096];
            let mut sent = 0usize;
            while b.write_all(&junk).is_ok() {
                sent += junk.len();
            }
            sent
        });
        assert!(matches!(
            ch.skip_past_delimiter(ch.deadline(), 64 * 1024),
            Err(CallError::TooLong(_))
        ));
        drop(ch);
        assert!(writer.join().unwrap() < 64 * 1024 + 1024 * 1024);
    }
}
