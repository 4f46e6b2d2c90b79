//! The error contract of `IVMGuestOS::InstallIntegrationComponents`.
//!
//! Every outcome of an install is exactly one of seven documented HRESULTs. Internally
//! code uses `anyhow` for context; at the boundary every error becomes a [`Failure`],
//! which pairs one [`HResult`] with the cause chain that explains it.

use std::fmt;

use serde::{Serialize, Serializer};

/// One of the seven documented outcomes. There is deliberately no other variant:
/// anything unexpected is [`HResult::DispException`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HResult {
    /// `S_OK`: installed (or, without a guest agent, media inserted for autorun).
    SOk,
    /// `VM_E_VM_NOT_RUNNING`: the VM is not running, or QEMU does not answer.
    VmNotRunning,
    /// `VM_E_VM_UNKNOWN`: there is no VM of that name.
    VmUnknown,
    /// `VM_E_DRIVE_INVALID`: no CD/DVD drive, or every drive holds media.
    DriveInvalid,
    /// `VM_E_MEDIA_UNMOUNT_FAIL`: a guest-locked tray keeps media in the drive.
    MediaUnmountFail,
    /// `DISP_E_EXCEPTION`: anything unexpected, a failed installer or a bug included.
    DispException,
    /// `HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)`: no usable IC ISO.
    FileNotFound,
}

impl HResult {
    /// All seven, in the documentation's order.
    pub const ALL: [HResult; 7] = [
        HResult::SOk,
        HResult::VmNotRunning,
        HResult::VmUnknown,
        HResult::DriveInvalid,
        HResult::MediaUnmountFail,
        HResult::DispException,
        HResult::FileNotFound,
    ];

    /// The 32-bit value from the Virtual PC documentation.
    pub const fn value(self) -> u32 {
        match self {
            HResult::SOk => 0x0000_0000,
            HResult::VmNotRunning => 0xA004_0206,
            HResult::VmUnknown => 0xA004_0207,
            HResult::DriveInvalid => 0xA004_0502,
            HResult::MediaUnmountFail => 0xA004_0508,
            HResult::DispException => 0x8002_0009,
            HResult::FileNotFound => 0x8007_0002,
        }
    }

    /// The symbolic name as written in the documentation.
    pub const fn name(self) -> &'static str {
        match self {
            HResult::SOk => "S_OK",
            HResult::VmNotRunning => "VM_E_VM_NOT_RUNNING",
            HResult::VmUnknown => "VM_E_VM_UNKNOWN",
            HResult::DriveInvalid => "VM_E_DRIVE_INVALID",
            HResult::MediaUnmountFail => "VM_E_MEDIA_UNMOUNT_FAIL",
            HResult::DispException => "DISP_E_EXCEPTION",
            HResult::FileNotFound => "HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)",
        }
    }

    /// The documented description.
    pub const fn message(self) -> &'static str {
        match self {
            HResult::SOk => "The operation was successful.",
            HResult::VmNotRunning => "The virtual machine must be running for this operation.",
            HResult::VmUnknown => "The virtual machine could not be found.",
            HResult::DriveInvalid => "The virtual machine does not have an empty DVD drive.",
            HResult::MediaUnmountFail => {
                "The attempt to unmount the media from the virtual machine DVD drive failed."
            }
            HResult::DispException => "An unexpected error has occurred.",
            HResult::FileNotFound => {
                "The system cannot find the ISO file for the Integration Components."
            }
        }
    }

    /// PowerShell `ErrorCategory` used in error records.
    pub const fn category(self) -> &'static str {
        match self {
            HResult::SOk => "NotSpecified",
            HResult::VmNotRunning => "InvalidOperation",
            HResult::VmUnknown => "ObjectNotFound",
            HResult::DriveInvalid => "ResourceUnavailable",
            HResult::MediaUnmountFail => "DeviceError",
            HResult::DispException => "NotSpecified",
            HResult::FileNotFound => "ObjectNotFound",
        }
    }

    /// The process exit code of the `vmguest` command for this outcome. Stable: scripts rely on it.
    /// 1 and 2 stay free for "usage error" conventions (clap exits 2).
    pub const fn exit_code(self) -> i32 {
        match self {
            HResult::SOk => 0,
            HResult::VmNotRunning => 10,
            HResult::VmUnknown => 11,
            HResult::DriveInvalid => 12,
            HResult::MediaUnmountFail => 13,
            HResult::DispException => 14,
            HResult::FileNotFound => 15,
        }
    }

    /// `0xA0040206` style, as PowerShell prints HRESULTs.
    pub fn hex(self) -> String {
        format!("0x{:08X}", self.value())
    }

    /// Whether this is `S_OK`.
    pub fn is_success(self) -> bool {
        self == HResult::SOk
    }

    /// The outcome with this symbolic name (`VM_E_VM_UNKNOWN`, ...).
    pub fn from_name(name: &str) -> Option<HResult> {
        HResult::ALL.into_iter().find(|h| h.name() == name)
    }
}

impl fmt::Display for HResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.hex())
    }
}

impl Serialize for HResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A failed operation: the documented outcome plus the cause chain behind it.
#[derive(Debug)]
pub struct Failure {
    /// The documented outcome; never `S_OK`.
    pub hresult: HResult,
    /// The cause chain behind it.
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure with this outcome; `S_OK` (a bug) becomes DISP_E_EXCEPTION.
    pub fn new(hresult: HResult, error: impl Into<anyhow::Error>) -> Self {
        debug_assert!(!hresult.is_success(), "a failure cannot be S_OK");
        let hresult = if hresult.is_success() {
            HResult::DispException
        } else {
            hresult
        };
        Failure {
            hresult,
            error: error.into(),
        }
    }

    /// A failure with this outcome and one message as its cause.
    pub fn msg(hresult: HResult, msg: impl fmt::Display) -> Self {
        Failure::new(hresult, anyhow::anyhow!("{msg}"))
    }

    /// The cause chain, outermost first, for error records.
    pub fn causes(&self) -> Vec<String> {
        self.error.chain().map(|c| c.to_string()).collect()
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {:#}",
            self.hresult,
            self.hresult.message(),
            self.error
        )
    }
}

/// The cause chain is the error's `source()`, so any error reporter can walk it.
impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

/// An error and its `source()` chain on one line, outermost first: "a: b: c".
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}

/// Anything that escapes without an explicit outcome is unexpected.
impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        match error.downcast::<Failure>() {
            Ok(f) => f,
            Err(error) => Failure::new(HResult::DispException, error),
        }
    }
}

/// What every call of the API returns: a value, or a [`Failure`].
pub type Outcome<T> = Result<T, Failure>;

/// Attach an explicit outcome to any error.
pub trait OrHResult<T> {
    fn or_hresult(self, hresult: HResult) -> Outcome<T>;
}

impl<T, E: Into<anyhow::Error>> OrHResult<T> for Result<T, E> {
    fn or_hresult(self, hresult: HResult) -> Outcome<T> {
        self.map_err(|e| Failure::new(hresult, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_documentation() {
        let table = [
            ("S_OK", 0x0000_0000),
            ("VM_E_VM_NOT_RUNNING", 0xA004_0206),
            ("VM_E_VM_UNKNOWN", 0xA004_0207),
            ("VM_E_DRIVE_INVALID", 0xA004_0502),
            ("VM_E_MEDIA_UNMOUNT_FAIL", 0xA004_0508),
            ("DISP_E_EXCEPTION", 0x8002_0009),
            ("HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)", 0x8007_0002),
        ];
        for (name, value) in table {
            let h = HResult::from_name(name).expect(name);
            assert_eq!(h.value(), value, "{name}");
        }
        assert_eq!(HResult::FileNotFound.hex(), "0x80070002");
    }

    #[test]
    fn exit_codes_are_distinct() {
        let mut codes: Vec<i32> = HResult::ALL.iter().map(|h| h.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), 7);
    }

    #[test]
    fn unexpected_errors_become_disp_e_exception_and_keep_the_chain() {
        let inner: anyhow::Result<()> = Err(anyhow::anyhow!("socket closed"));
        let f: Failure = inner
            .map_err(|e| e.context("polling installer"))
            .unwrap_err()
            .into();
        assert_eq!(f.hresult, HResult::DispException);
        assert_eq!(f.causes(), vec!["polling installer", "socket closed"]);
    }

    #[test]
    fn the_cause_chain_is_the_source_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let call = crate::vm::CallError::Connect("/run/x.qmp".into(), io);
        let f = Failure::new(
            HResult::VmNotRunning,
            anyhow::Error::new(call).context("VM x"),
        );
        let source = std::error::Error::source(&f).expect("a source");
        assert_eq!(source.to_string(), "VM x");
        assert_eq!(chain(source), "VM x: cannot connect to /run/x.qmp: refused");
        assert_eq!(
            f.causes(),
            ["VM x", "cannot connect to /run/x.qmp", "refused"]
        );
    }

    #[test]
    fn an_explicit_outcome_survives_anyhow() {
        let f = Failure::msg(HResult::VmUnknown, "no VM named x");
        let back: Failure = anyhow::Error::new(f).into();
        assert_eq!(back.hresult, HResult::VmUnknown);
    }
}
