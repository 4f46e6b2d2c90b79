//! libvirt's error type: what a failed libvirt call reports, copied out of libvirt.
//!
//! It lives apart from the C calls (`libvirt/ffi.rs`) because errors travel further
//! than libvirt: `channel.rs`'s `CallError` carries them to the operation, and the
//! libvirt backend uses the channel's errors in turn.

use std::ffi::c_int;
use std::fmt;

/// The `virErrorNumber`s vmguest decides on; every other code is kept as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InternalError,
    NoConnect,
    OperationFailed,
    NoSupport,
    SystemError,
    Rpc,
    NoDomain,
    OperationInvalid,
    OperationTimeout,
    AgentUnresponsive,
    AgentCommandTimeout,
    Other(c_int),
}

impl Code {
    fn from_raw(n: c_int) -> Code {
        match n {
            1 => Code::InternalError,
            3 => Code::NoSupport,
            5 => Code::NoConnect,
            9 => Code::OperationFailed,
            38 => Code::SystemError,
            39 => Code::Rpc,
            42 => Code::NoDomain,
            55 => Code::OperationInvalid,
            68 => Code::OperationTimeout,
            86 => Code::AgentUnresponsive,
            112 => Code::AgentCommandTimeout,
            n => Code::Other(n),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Code::InternalError => "internalerror",
            Code::NoConnect => "noconnect",
            Code::OperationFailed => "operationfailed",
            Code::NoSupport => "nosupport",
            Code::SystemError => "systemerror",
            Code::Rpc => "rpc",
            Code::NoDomain => "nodomain",
            Code::OperationInvalid => "operationinvalid",
            Code::OperationTimeout => "operationtimeout",
            Code::AgentUnresponsive => "agentunresponsive",
            Code::AgentCommandTimeout => "agentcommandtimeout",
            Code::Other(_) => "other",
        }
    }
}

/// A libvirt error, copied out of libvirt's thread-local last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub(super) code: c_int,
    pub(super) domain: c_int,
    pub(super) level: c_int,
    pub(super) message: String,
}

impl Error {
    pub fn code(&self) -> Code {
        Code::from_raw(self.code)
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Not from libvirt: it could not be loaded, or was handed a string it cannot take.
    pub(super) fn local(code: c_int, message: String) -> Error {
        Error {
            code,
            domain: 0,
            level: 2,
            message,
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for Error {
    /// `virsh`'s shape, with the code's name and number kept for the error record.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.level {
            1 => write!(f, "warning: ")?,
            2 => write!(f, "error: ")?,
            _ => {}
        }
        write!(
            f,
            "{} [code={} ({}), domain={}]",
            self.message,
            self.code().name(),
            self.code,
            self.domain
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_text_keeps_libvirts_code_by_name_and_number() {
        let e = Error {
            code: 9,
            domain: 10,
            level: 2,
            message: "operation failed: timed out waiting to open tray".into(),
        };
        assert_eq!(e.code(), Code::OperationFailed);
        assert_eq!(
            e.to_string(),
            "error: operation failed: timed out waiting to open tray \
             [code=operationfailed (9), domain=10]"
        );
        assert_eq!(Code::from_raw(4711), Code::Other(4711));
    }
}
