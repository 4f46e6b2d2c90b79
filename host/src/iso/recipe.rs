//! Unattended install commands per family and guest OS, from the vendors' documentation.
//!
//! Linux commands run under `/bin/sh` with the media's mount point as the working
//! directory (and in `$VMGUEST_IC_MEDIA`). Windows commands are relative to the media's
//! drive letter; `{arch}` becomes `amd64` or `x86`.
//!
//! | family | Linux | Windows | source |
//! |---|---|---|---|
//! | vmguest | the manifest's `[install.linux]` | the manifest's `[install.windows]` | this project, `manifest.rs` |
//! | virtio-win | none: the drivers are in the kernel | `virtio-win-guest-tools.exe /install /quiet /norestart` | virtio-win-pkg-scripts README, "virtio-win-guest-tools.exe" (a WiX bundle; `/install /quiet /norestart` are WiX Burn's standard switches) |
//! | virtualbox | `sh ./VBoxLinuxAdditions.run --nox11` | `VBoxWindowsAdditions.exe /S` | VirtualBox User Manual, ch. 4.2.2.1 "Installing the Guest Additions" (Linux) and 4.2.1.3 "Unattended Installation" (Windows) |
//! | vmware-tools | the tarball unpacked into a fresh `mktemp -d` directory (removed on exit), then `vmware-tools-distrib/vmware-install.pl --default` from there | `setup64.exe /S /v "/qn REBOOT=R"` (`setup.exe` on x86) | VMware Tools documentation, "Automate the Installation of VMware Tools" / "Install VMware Tools silently"; KB 1018377 for the Linux tarball installer |
//! | hyper-v | none: the integration services are in the kernel | `support\{arch}\setup.exe /quiet /norestart` | Microsoft Docs, "Manage Hyper-V Integration Services" (installing from vmguest.iso on down-level guests) |
//!
//! The documentation could not be fetched from this build machine; the commands were
//! checked against the ISO layouts the tests mirror (`tests/it/locate.rs`).

use serde::Serialize;

use crate::iso::manifest::Manifest;
use crate::kinds::Family;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Recipe {
    pub linux: Option<String>,
    pub windows: Option<String>,
    /// Prints the family's installed version in a Linux guest (first line of stdout);
    /// fails or prints nothing when the family is not installed.
    pub verify_linux: Option<String>,
    /// Where a Windows guest tells the family's installed version.
    pub verify_windows: Option<Probe>,
}

/// How a guest is asked for an installed version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Probe {
    /// `sh -c COMMAND` in a Linux guest: the first line it prints.
    Shell(String),
    /// `cmd.exe /c COMMAND` in a Windows guest: the first line it prints.
    Cmd(String),
    /// The `DisplayVersion` of the Windows uninstall entry with this `DisplayName`.
    Uninstall(String),
    /// The `DisplayVersion` of the Windows uninstall entry under this key name, for
    /// installers whose `DisplayName` carries the version (NSIS names the key after the
    /// product). With `revision`, a fourth part of `DisplayVersion` is a source revision
    /// that the media's version does not name, and is left off (`7.0.12.159484` →
    /// `7.0.12`).
    UninstallKey { key: String, revision: bool },
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Probe::Shell(c) | Probe::Cmd(c) => write!(f, "`{c}`"),
            Probe::Uninstall(name) => write!(f, "the uninstall entry {name:?}"),
            Probe::UninstallKey { key, .. } => write!(f, "the uninstall key {key:?}"),
        }
    }
}

/// The uninstall key VirtualBox's Windows Guest Additions installer writes:
/// `PRODUCT_UNINST_KEY`, `Software\Microsoft\Windows\CurrentVersion\Uninstall\${PRODUCT_NAME}`
/// with `PRODUCT_NAME` "$%VBOX_PRODUCT% Guest Additions" (VirtualBox's
/// `src/VBox/Additions/WINNT/Installer/VBoxGuestAdditions.nsi`).
pub const VBOX_UNINSTALL_KEY: &str = "Oracle VM VirtualBox Guest Additions";

/// VMware Tools' Linux installer: unpack the tarball into a fresh directory and run it
/// from there; the directory is removed when the shell exits, whatever the outcome.
const VMWARE_LINUX: &str = "d=$(mktemp -d) && trap 'rm -rf \"$d\"' EXIT && \
     tar -xzf ./VMwareTools-*.tar.gz -C \"$d\" && \
     \"$d\"/vmware-tools-distrib/vmware-install.pl --default";

impl Recipe {
    pub fn for_family(family: Family) -> Recipe {
        let (linux, windows) = match family {
            // The own format brings its commands in its manifest.
            Family::Vmguest => (None, None),
            Family::VirtioWin => (
                None,
                Some("virtio-win-guest-tools.exe /install /quiet /norestart"),
            ),
            Family::Virtualbox => (
                Some("sh ./VBoxLinuxAdditions.run --nox11"),
                Some("VBoxWindowsAdditions.exe /S"),
            ),
            Family::VmwareTools => (
                // A fresh private directory (mktemp -d: unpredictable name, mode 0700),
                // never a fixed path in /tmp, which a guest user could prepare in advance
                // (a planted vmware-install.pl would run as root). It goes on exit.
                Some(VMWARE_LINUX),
                Some("{setup} /S /v \"/qn REBOOT=R\""),
            ),
            Family::HyperV => (None, Some("support\\{arch}\\setup.exe /quiet /norestart")),
            Family::Other => (None, None),
        };
        // The families' own tools, as VBox `--verify` and PowerCLI read them:
        // `VBoxControl --version` prints "7.0.12r159484", `vmware-toolbox-cmd -v` prints
        // "12.3.5.46049 (build-…)"; the version is the leading dotted part.
        let verify_linux = match family {
            Family::Virtualbox => Some("VBoxControl --version"),
            Family::VmwareTools => Some("vmware-toolbox-cmd -v"),
            _ => None,
        };
        // The uninstall entries the families' Windows installers register: the WiX
        // bundle "Virtio-win-guest-tools", and VMware Tools' MSI "VMware Tools", by their
        // DisplayName. VirtualBox's NSIS installer (`VBoxGuestAdditions.nsi`) writes its
        // entry under `Uninstall\${PRODUCT_NAME}`, "Oracle VM VirtualBox Guest Additions",
        // with DisplayName "$(^Name)" (the product and its version) and DisplayVersion
        // MAJOR.MINOR.BUILD.SVN_REV: found by its key, the revision left off.
        let verify_windows = match family {
            Family::VirtioWin => Some(Probe::Uninstall("Virtio-win-guest-tools".into())),
            Family::VmwareTools => Some(Probe::Uninstall("VMware Tools".into())),
            Family::Virtualbox => Some(Probe::UninstallKey {
                key: VBOX_UNINSTALL_KEY.into(),
                revision: true,
            }),
            _ => None,
        };
        Recipe {
            linux: linux.map(str::to_owned),
            windows: windows.map(str::to_owned),
            verify_linux: verify_linux.map(str::to_owned),
            verify_windows,
        }
    }

    /// How to read the installed version in this guest, if the family has a way.
    pub fn version_probe(&self, windows: bool) -> Option<Probe> {
        if windows {
            self.verify_windows.clone()
        } else {
            self.verify_linux.clone().map(Probe::Shell)
        }
    }

    pub fn from_manifest(m: &Manifest) -> Recipe {
        Recipe {
            linux: m.install.linux.as_ref().map(|i| i.command.clone()),
            windows: m.install.windows.as_ref().map(|i| i.command.clone()),
            verify_linux: m.verify.linux.as_ref().map(|v| v.command.clone()),
            verify_windows: m
                .verify
                .windows
                .as_ref()
                .map(|v| Probe::Cmd(v.command.clone())),
        }
    }

    /// The Windows command for a guest machine type as the agent reports it
    /// (`x86_64`, `amd64`, `i686`, ...).
    pub fn windows_for(&self, machine: &str) -> Option<String> {
        let x64 = !matches!(machine, "x86" | "i386" | "i486" | "i586" | "i686");
        self.windows.as_ref().map(|c| {
            c.replace("{arch}", if x64 { "amd64" } else { "x86" })
                .replace("{setup}", if x64 { "setup64.exe" } else { "setup.exe" })
        })
    }

    pub fn supports(&self, windows: bool) -> bool {
        if windows {
            self.windows.is_some()
        } else {
            self.linux.is_some()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn windows_commands_follow_the_guest_architecture() {
        let hv = Recipe::for_family(Family::HyperV);
        assert_eq!(
            hv.windows_for("x86_64").unwrap(),
            "support\\amd64\\setup.exe /quiet /norestart"
        );
        assert_eq!(
            hv.windows_for("i686").unwrap(),
            "support\\x86\\setup.exe /quiet /norestart"
        );
        let vmw = Recipe::for_family(Family::VmwareTools);
        assert_eq!(
            vmw.windows_for("x86_64").unwrap(),
            "setup64.exe /S /v \"/qn REBOOT=R\""
        );
        assert!(!Recipe::for_family(Family::VirtioWin).supports(false));
        assert_eq!(
            Recipe::for_family(Family::Virtualbox).linux.unwrap(),
            "sh ./VBoxLinuxAdditions.run --nox11"
        );
    }

    /// The tarball goes into a fresh `mktemp -d` directory, never a fixed path a guest
    /// user could prepare: run the recipe with `/bin/sh` as the guest would, with a
    /// planted installer waiting at the old fixed place, and see the real one run, its
    /// exit code come back, and the directory go.
    #[test]
    fn the_tarball_is_unpacked_into_a_fresh_directory_and_removed() {
        let cmd = Recipe::for_family(Family::VmwareTools).linux.unwrap();
        assert!(cmd.contains("mktemp -d"), "{cmd}");
        assert!(!cmd.contains("/tmp"), "a fixed path in {cmd}");

        let work = tempfile::tempdir().unwrap();
        let (media, tmp, log) = (
            work.path().join("media"),
            work.path().join("tmp"),
            work.path().join("ran"),
        );
        // What a guest user leaves behind for root to run.
        let planted = tmp.join("vmware-tools-distrib");
        std::fs::create_dir_all(&planted).unwrap();
        let script = |body: &str| format!("#!/bin/sh\n{body}\n");
        let write_exec = |path: &std::path::Path, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(path, script(body)).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        write_exec(
            &planted.join("vmware-install.pl"),
            &format!("echo planted >> '{}'", log.display()),
        );
        // The media: the vendor's tarball with the real installer, which exits 3.
        let src = work.path().join("src/vmware-tools-distrib");
        std::fs::create_dir_all(&src).unwrap();
        write_exec(
            &src.join("vmware-install.pl"),
            &format!(
                "echo \"vendor $1 $(dirname \"$0\")\" >> '{}'; exit 3",
                log.display()
            ),
        );
        std::fs::create_dir_all(&media).unwrap();
        let tar = Command::new("tar")
            .arg("-czf")
            .arg(media.join("VMwareTools-10.3.26-22085142.tar.gz"))
            .arg("-C")
            .arg(work.path().join("src"))
            .arg("vmware-tools-distrib")
            .status()
            .unwrap();
        assert!(tar.success());

        let run = Command::new("/bin/sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(&media)
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        assert_eq!(run.status.code(), Some(3), "{run:?}");
        let ran = std::fs::read_to_string(&log).unwrap();
        assert!(ran.starts_with("vendor --default "), "{ran}");
        assert!(!ran.contains("planted"), "{ran}");
        let unpacked_in = ran.trim().rsplit(' ').next().unwrap().to_owned();
        assert_ne!(unpacked_in, planted.display().to_string());
        assert!(unpacked_in.starts_with(&tmp.display().to_string()), "{ran}");
        // Only the planted directory is left: the fresh one went on exit.
        let left: Vec<_> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("vmware-tools-distrib")]);
    }
}
