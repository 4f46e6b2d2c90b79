//! Steps inside a Windows guest, through qemu-ga for Windows (as virtio-win ships it):
//! find the IC media's drive letter, run the family's silent installer, read its exit
//! code by MSI and Burn conventions.
//!
//! What Windows' qemu-ga answers, from QEMU's `qga/commands-win32.c`:
//! - `guest-get-fsinfo` lists volumes (`FindFirstVolume`) that have a file system:
//!   `mountpoint` is the first path `GetVolumePathNamesForVolumeName` gives (`D:\`),
//!   `type` the file system name from `GetVolumeInformationByHandleW` (`CDFS` or `UDF`
//!   for optical media); a drive without media fails with ERROR_NOT_READY and is left
//!   out. There is no volume label, so the media is recognised by its bytes.
//! - `guest-file-open` passes the path to `CreateFileW`, so the raw volume `\\.\D:` can
//!   be read: its sector 16 is the primary volume descriptor, compared byte for byte
//!   with the ISO's, as on Linux.
//! - `guest-exec` starts `path` with `arg` (`g_spawn_async_with_pipes`); there is no
//!   working directory, so the installer is named by its full path on the media.

use std::time::Duration;

use anyhow::{bail, Context};

use super::{find_media, wait_on, Check, GuestInstaller, InstallerCall, Look, MediaNotFound};
use super::{Os, Verdict};
use crate::iso::Recipe;
use crate::iso::{Probe, PVD_OFFSET, SECTOR};
use crate::progress::Progress;
use crate::vm::{ExecStatus, GuestAgent};

/// `D:\` → `\\.\D:`, the raw volume.
fn raw_volume(letter: &str) -> String {
    format!("\\\\.\\{}", letter.trim_end_matches('\\'))
}

/// One look for the drive letter (`D:\`) whose media is the IC ISO: its primary volume
/// descriptor is the ISO's.
fn look_for_letter(agent: &mut dyn GuestAgent, pvd: &[u8], seen: &mut String) -> Look {
    let volumes = agent.fs_info().context("guest-get-fsinfo")?;
    for v in volumes.iter().filter(|v| is_optical(&v.fs_type)) {
        match agent.read_file(&raw_volume(&v.mountpoint), PVD_OFFSET, SECTOR) {
            Ok(bytes) if bytes == pvd => return Ok(Some(v.mountpoint.clone())),
            Ok(_) => *seen = format!("{} holds other media", v.mountpoint),
            Err(e) if e.is_disconnect() => return Err(e.into()),
            Err(e) => *seen = format!("{}: {}", v.mountpoint, crate::hresult::chain(&e)),
        }
    }
    Ok(None)
}

fn is_optical(fs_type: &str) -> bool {
    fs_type.eq_ignore_ascii_case("CDFS") || fs_type.eq_ignore_ascii_case("UDF")
}

/// A command line as the recipes write it, split into program and arguments:
/// whitespace separates, double quotes group (`/v "/qn REBOOT=R"`).
pub fn split_command(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut started) = (false, false);
    for c in command.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        words.push(word);
    }
    words
}

/// How the installer is started: the family's program by its full path on the media,
/// or `-InstallCommand` through `cmd.exe` from the media's root.
pub fn argv(letter: &str, command: &str, custom: bool) -> anyhow::Result<(String, Vec<String>)> {
    if custom {
        let line = format!("cd /d {letter} && {command}");
        return Ok((CMD.to_owned(), vec!["/c".to_owned(), line]));
    }
    let mut words = split_command(command).into_iter();
    let Some(program) = words.next() else {
        bail!("empty install command");
    };
    Ok((format!("{letter}{program}"), words.collect()))
}

/// Start the installer and wait for it. `started` learns its pid in the guest before the
/// wait begins, so that a run killed meanwhile can be finished by the next one
/// ([`release`]).
#[allow(clippy::too_many_arguments)]
pub fn run_installer(
    agent: &mut dyn GuestAgent,
    letter: &str,
    command: &str,
    custom: bool,
    timeout: Duration,
    vm: &str,
    progress: &dyn Progress,
    check: Check<'_>,
    started: &mut dyn FnMut(i64),
) -> anyhow::Result<(String, ExecStatus)> {
    let (path, args) = argv(letter, command, custom)?;
    let shown = std::iter::once(path.as_str())
        .chain(args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let pid = agent
        .exec(&path, &args, &[])
        .with_context(|| format!("starting {shown} in the guest"))?;
    started(pid);
    let status = wait_on(
        Os::Windows,
        agent,
        pid,
        timeout,
        &mut |elapsed| progress.waiting(vm, "installer", elapsed, timeout),
        check,
    )
    .context("waiting for the installer")?;
    Ok((shown, status))
}

const CMD: &str = "C:\\Windows\\System32\\cmd.exe";
const REG: &str = "C:\\Windows\\System32\\reg.exe";
const TASKKILL: &str = "C:\\Windows\\System32\\taskkill.exe";
/// The uninstall entries, in the native view and in the 32-bit view of a 64-bit Windows
/// (`Wow6432Node`), where 32-bit installers (NSIS, many MSI) write theirs. qemu-ga as
/// virtio-win ships it is a 64-bit process, so System32's reg.exe reads the native view
/// and names the 32-bit one by its path; a 32-bit Windows has no `Wow6432Node`, and
/// reg.exe exits 1 for it as for any missing key.
const UNINSTALL_VIEWS: [&str; 2] = [
    "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
    "HKLM\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall",
];
/// reg.exe and cmd.exe answer in well under this.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

fn run(agent: &mut dyn GuestAgent, program: &str, args: &[&str]) -> anyhow::Result<ExecStatus> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let pid = agent.exec(program, &args, &[])?;
    wait_on(
        Os::Windows,
        agent,
        pid,
        HELPER_TIMEOUT,
        &mut |_| {},
        &mut || Ok(()),
    )
}

/// The installed version in a Windows guest, from the uninstall entries of both
/// registry views (native first). An entry is found by its exact `DisplayName`
/// (`reg query … /s /f NAME /d /e`, whose output names the key on a line of its own),
/// or by its key name; then its `DisplayVersion` is read (`reg query KEY /v
/// DisplayVersion`: `    DisplayVersion    REG_SZ    0.1.266`). reg.exe exits 1 when
/// nothing matches or the key does not exist.
pub fn installed_version(
    agent: &mut dyn GuestAgent,
    probe: &Probe,
) -> anyhow::Result<Option<String>> {
    match probe {
        Probe::Cmd(command) => {
            let st = run(agent, CMD, &["/c", command])?;
            let first = st.stdout.lines().map(str::trim).find(|l| !l.is_empty());
            Ok(first.filter(|_| st.succeeded()).map(str::to_owned))
        }
        Probe::Uninstall(name) => {
            for view in UNINSTALL_VIEWS {
                let st = run(agent, REG, &["query", view, "/s", "/f", name, "/d", "/e"])?;
                let key = st
                    .stdout
                    .lines()
                    .map(str::trim)
                    .find(|l| l.starts_with("HKEY_"))
                    .filter(|_| st.succeeded());
                if let Some(key) = key {
                    return display_version(agent, key);
                }
            }
            Ok(None)
        }
        Probe::UninstallKey { key, revision } => {
            for view in UNINSTALL_VIEWS {
                if let Some(v) = display_version(agent, &format!("{view}\\{key}"))? {
                    return Ok(Some(if *revision { without_revision(&v) } else { v }));
                }
            }
            Ok(None)
        }
        Probe::Shell(_) => Ok(None),
    }
}

/// The `DisplayVersion` value of one uninstall key, `None` where it has none.
fn display_version(agent: &mut dyn GuestAgent, key: &str) -> anyhow::Result<Option<String>> {
    let st = run(agent, REG, &["query", key, "/v", "DisplayVersion"])?;
    Ok(st
        .stdout
        .lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("DisplayVersion") && words.next()?.starts_with("REG_"))
                .then(|| words.collect::<Vec<_>>().join(" "))
        })
        .filter(|v| !v.is_empty() && st.succeeded()))
}

/// `7.0.12.159484` → `7.0.12`: a fourth, source-revision part is left off, as the
/// media's version (VirtualBox's `VBOX_VERSION_STRING`) does not name it, and version
/// order would read a revision suffix (`7.0.12r159484`) as a pre-release; anything else
/// as it is.
fn without_revision(version: &str) -> String {
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match parts.as_slice() {
        [a, b, c, _revision] if numeric => format!("{a}.{b}.{c}"),
        _ => version.to_owned(),
    }
}

/// `taskkill /T /F /PID PID`: end a process and the processes it started, at once.
pub fn kill_tree_argv(pid: i64) -> Vec<String> {
    ["/T", "/F", "/PID"]
        .iter()
        .map(|a| a.to_string())
        .chain(std::iter::once(pid.to_string()))
        .collect()
}

/// Make a Windows guest let go of media an earlier, interrupted run left: end its
/// installer and everything that installer started. Windows does not lock the tray for
/// a mounted CD, so there is nothing to unmount; an installer still running would only
/// fail on its missing media, or keep going on a disc that is no longer there.
pub fn release(agent: &mut dyn GuestAgent, installer: Option<i64>) -> anyhow::Result<()> {
    let Some(pid) = installer else {
        return Ok(());
    };
    let args = kill_tree_argv(pid);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let st = run(agent, TASKKILL, &args)?;
    // 128: "The process … not found": it already ended.
    tracing::debug!(pid, exit = ?st.exit_code, "ended an earlier run's installer");
    Ok(())
}

/// What a Windows installer's exit code means, by Windows Installer (MSI) and WiX Burn
/// conventions (winerror.h).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    Installed,
    /// 3010 ERROR_SUCCESS_REBOOT_REQUIRED, 1641 ERROR_SUCCESS_REBOOT_INITIATED.
    RebootRequired,
    Failed(String),
}

pub fn exit_meaning(code: Option<i64>) -> Exit {
    match code {
        Some(0) => Exit::Installed,
        Some(3010) | Some(1641) => Exit::RebootRequired,
        Some(c) => Exit::Failed(match c {
            1602 => "1602 ERROR_INSTALL_USEREXIT: the user cancelled the installation".into(),
            1603 => "1603 ERROR_INSTALL_FAILURE: a fatal error occurred during installation".into(),
            1618 => {
                "1618 ERROR_INSTALL_ALREADY_RUNNING: another installation is in progress".into()
            }
            1619 => {
                "1619 ERROR_INSTALL_PACKAGE_OPEN_FAILED: the package could not be opened".into()
            }
            1638 => {
                "1638 ERROR_PRODUCT_VERSION: another version of this product is already installed"
                    .into()
            }
            c => format!("{c}"),
        }),
        None => Exit::Failed("no exit code".into()),
    }
}

/// The Windows guest's [`GuestInstaller`]. Windows does not lock the tray for a mounted
/// CD, so there is nothing to unmount; the installer's pid is journaled, and a later
/// run ends it with taskkill ([`release`]).
pub struct Windows;

impl GuestInstaller for Windows {
    fn os_name(&self) -> &'static str {
        "Windows"
    }

    fn family_command(&self, recipe: &Recipe, machine: Option<&str>) -> Option<String> {
        recipe.windows_for(machine.unwrap_or("x86_64"))
    }

    fn prepare(
        &mut self,
        agent: &mut dyn GuestAgent,
        pvd: &[u8],
        within: Duration,
        check: Check<'_>,
    ) -> anyhow::Result<String> {
        let place = "as a drive letter in the guest";
        let missing = MediaNotFound::new(place, within, "no optical volume");
        find_media(agent, check, missing, &mut |a, seen| {
            look_for_letter(a, pvd, seen)
        })
    }

    fn run(
        &mut self,
        agent: &mut dyn GuestAgent,
        place: &str,
        call: &InstallerCall<'_>,
        check: Check<'_>,
        started: &mut dyn FnMut(i64),
    ) -> anyhow::Result<(String, ExecStatus)> {
        run_installer(
            agent,
            place,
            call.command,
            call.custom,
            call.timeout,
            call.vm,
            call.progress,
            check,
            started,
        )
    }

    fn verdict(&self, status: &ExecStatus) -> Verdict {
        match exit_meaning(status.exit_code) {
            Exit::Installed => Verdict::Installed,
            Exit::RebootRequired => Verdict::RebootRequired,
            Exit::Failed(why) => Verdict::Failed(why),
        }
    }

    fn mounts_media(&self) -> bool {
        false
    }

    fn writes_install_record(&self) -> bool {
        false
    }

    fn unmount(&mut self, _agent: &mut dyn GuestAgent, _place: &str) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_the_recipes_write_them() {
        assert_eq!(
            split_command("setup64.exe /S /v \"/qn REBOOT=R\""),
            vec!["setup64.exe", "/S", "/v", "/qn REBOOT=R"]
        );
        assert_eq!(
            argv("D:\\", "support\\amd64\\setup.exe /quiet /norestart", false).unwrap(),
            (
                "D:\\support\\amd64\\setup.exe".to_owned(),
                vec!["/quiet".to_owned(), "/norestart".to_owned()]
            )
        );
        assert_eq!(raw_volume("D:\\"), "\\\\.\\D:");
        assert_eq!(
            argv("E:\\", "tools\\x.cmd /y", true).unwrap().1,
            vec!["/c", "cd /d E:\\ && tools\\x.cmd /y"]
        );
    }

    #[test]
    fn exit_codes_follow_msi_and_burn() {
        assert_eq!(exit_meaning(Some(0)), Exit::Installed);
        assert_eq!(exit_meaning(Some(3010)), Exit::RebootRequired);
        assert_eq!(exit_meaning(Some(1641)), Exit::RebootRequired);
        assert!(matches!(exit_meaning(Some(1602)), Exit::Failed(m) if m.contains("cancelled")));
        assert!(matches!(exit_meaning(Some(1603)), Exit::Failed(m) if m.contains("fatal error")));
        assert!(matches!(exit_meaning(Some(5)), Exit::Failed(m) if m == "5"));
    }

    #[test]
    fn a_revision_is_left_off() {
        assert_eq!(without_revision("7.0.12.159484"), "7.0.12");
        assert_eq!(without_revision("7.0.12"), "7.0.12");
        assert_eq!(without_revision("7.0.12.beta"), "7.0.12.beta");
        assert_eq!(kill_tree_argv(4242), vec!["/T", "/F", "/PID", "4242"]);
    }
}
