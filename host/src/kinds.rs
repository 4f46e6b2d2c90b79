//! The vocabulary that configuration, the ISO policy and plugins share: what kind of
//! guest an install is for, and which family of Integration Components an ISO belongs
//! to. It lives apart so that none of those modules has to import another for it.

use serde::{Deserialize, Serialize};

use crate::vm::GuestOsInfo;

/// The families vmguest knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Vmguest,
    VirtioWin,
    Virtualbox,
    VmwareTools,
    HyperV,
    /// A readable ISO 9660 image of no known family, named explicitly (`-Path`): it goes
    /// in for the guest's autorun, or for `-InstallCommand`. The policy never picks one.
    Other,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Vmguest,
        Family::VirtioWin,
        Family::Virtualbox,
        Family::VmwareTools,
        Family::HyperV,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Vmguest => "vmguest",
            Family::VirtioWin => "virtio-win",
            Family::Virtualbox => "virtualbox",
            Family::VmwareTools => "vmware-tools",
            Family::HyperV => "hyper-v",
            Family::Other => "other",
        }
    }

    pub fn product(self) -> &'static str {
        match self {
            Family::Vmguest => "vmguest Integration Components",
            Family::VirtioWin => "virtio-win guest tools",
            Family::Virtualbox => "VirtualBox Guest Additions",
            Family::VmwareTools => "VMware Tools",
            Family::HyperV => "Hyper-V Integration Services",
            Family::Other => "media of no known IC family",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the location policy needs to know about the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Linux,
    Windows,
    Unknown,
}

impl GuestKind {
    /// QEMU guests: virtio-win for Windows, this project's own format for Linux.
    pub fn default_families(self) -> &'static [Family] {
        match self {
            GuestKind::Linux => &[Family::Vmguest],
            GuestKind::Windows => &[Family::VirtioWin],
            GuestKind::Unknown => &[Family::Vmguest, Family::VirtioWin],
        }
    }

    pub fn of(info: Option<&GuestOsInfo>) -> GuestKind {
        match info {
            Some(i) if i.is_windows() => GuestKind::Windows,
            Some(_) => GuestKind::Linux,
            None => GuestKind::Unknown,
        }
    }

    pub fn parse(s: &str) -> Option<GuestKind> {
        match s.to_ascii_lowercase().as_str() {
            "linux" => Some(GuestKind::Linux),
            "windows" | "mswindows" => Some(GuestKind::Windows),
            "unknown" => Some(GuestKind::Unknown),
            _ => None,
        }
    }

    /// "a Linux", "a Windows", "an unknown", for sentences.
    pub fn with_article(self) -> &'static str {
        match self {
            GuestKind::Linux => "a Linux",
            GuestKind::Windows => "a Windows",
            GuestKind::Unknown => "an unknown",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Linux => "Linux",
            GuestKind::Windows => "Windows",
            GuestKind::Unknown => "unknown",
        }
    }
}
