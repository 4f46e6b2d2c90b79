//! Steps inside the guest, through the guest agent: find the IC media, mount it, run its
//! installer and wait, unmount, and remember what was installed.
//!
//! Only Linux guests are driven unattended today. The steps use POSIX `sh`, `mount` and
//! `umount`, which every Linux guest with an agent has.

pub mod windows;

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::iso::{Probe, PVD_OFFSET, SECTOR};
use crate::manifest::Components;
use crate::progress::Progress;
use crate::vm::{CallError, ExecStatus, GuestAgent};

/// Where the IC media is mounted in the guest.
pub const MOUNT_POINT: &str = "/run/vmguest-ic";
/// What vmguest records in the guest after a successful install.
pub const INSTALLED_RECORD: &str = "/var/lib/vmguest/integration-components.toml";

const POLL: Duration = Duration::from_millis(250);
/// Small helper commands (mkdir, mount, umount) must finish within this.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Find the guest block device that holds our media, by comparing its primary volume
/// descriptor with the ISO's. Freshly inserted media take a moment to become readable.
pub fn find_device(
    agent: &mut dyn GuestAgent,
    pvd: &[u8],
    within: Duration,
    check: Check<'_>,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    let mut last_error = String::from("no /dev/sr* device");
    loop {
        check()?;
        for i in 0..8 {
            let dev = format!("/dev/sr{i}");
            match agent.read_file(&dev, PVD_OFFSET, SECTOR) {
                Ok(bytes) if bytes == pvd => return Ok(dev),
                Ok(_) => {}
                Err(e) if e.is_disconnect() => return Err(e.into()),
                Err(e) => {
                    if i == 0 {
                        last_error = format!("{dev}: {}", crate::hresult::chain(&e));
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "the IC media did not appear in the guest within {}s ({last_error})",
                within.as_secs()
            );
        }
        sleep(Duration::from_millis(500));
    }
}

/// The installed version a probe reads, or `None` when the family is not installed.
pub fn read_version(agent: &mut dyn GuestAgent, probe: &Probe) -> anyhow::Result<Option<String>> {
    match probe {
        Probe::Shell(command) => installed_version(agent, command),
        Probe::Cmd(_) | Probe::Uninstall(_) => windows::installed_version(agent, probe),
    }
}

/// The first line a version command prints, or `None` when it fails or prints nothing
/// (the family is not installed).
pub fn installed_version(
    agent: &mut dyn GuestAgent,
    command: &str,
) -> anyhow::Result<Option<String>> {
    let env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned()];
    let pid = agent.exec("/bin/sh", &["-c".to_owned(), command.to_owned()], &env)?;
    let st = wait(agent, pid, HELPER_TIMEOUT, &mut |_| {}, &mut || Ok(()))?;
    let first = st.stdout.lines().map(str::trim).find(|l| !l.is_empty());
    Ok(first.filter(|_| st.succeeded()).map(str::to_owned))
}

/// Does what a family's tool printed ("7.0.12r159484", "12.3.5.46049 (build-…)", "1.2.0")
/// name `version`? The version must be followed by nothing, or by something that is
/// not part of a longer version (so 7.0.12 is not 7.0.120).
pub fn same_version(printed: &str, version: &str) -> bool {
    let printed = printed.trim().trim_start_matches(['v', 'V']);
    match printed.strip_prefix(version) {
        Some(rest) => {
            !rest.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
        }
        None => false,
    }
}

/// Kill a process and all its descendants, children first. Walks /proc rather than
/// using pgrep, which minimal guests (busybox) lack. The comm field may hold spaces, so
/// the parent pid is read after the last ") ".
const KILL_TREE: &str = r#"k() {
  for d in /proc/[0-9]*; do
    l=$(cat "$d/stat" 2>/dev/null) || continue
    r=${l##*) }; pp=${r#* }; pp=${pp%% *}
    [ "$pp" = "$1" ] && k "${d#/proc/}"
  done
  kill -9 "$1" 2>/dev/null
}
k "$1""#;

/// Arguments of `/bin/sh -c script sh args...`: `$1`.. are `args`, never spliced into code.
fn sh_argv(script: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["-c".to_owned(), script.to_owned(), "sh".to_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// Asked between polls: an error stops the wait (a cancel request, a VM that stopped).
pub type Check<'a> = &'a mut dyn FnMut() -> anyhow::Result<()>;

/// Run `sh -c script sh args...` and wait for it.
fn sh(agent: &mut dyn GuestAgent, script: &str, args: &[&str]) -> anyhow::Result<ExecStatus> {
    let pid = agent.exec("/bin/sh", &sh_argv(script, args), &[])?;
    wait(agent, pid, HELPER_TIMEOUT, &mut |_| {}, &mut || Ok(()))
}

/// Poll a guest process until it exits; `None` if it still runs after `timeout`.
fn poll(
    agent: &mut dyn GuestAgent,
    pid: i64,
    timeout: Duration,
    tick: &mut dyn FnMut(Duration),
    check: Check<'_>,
) -> anyhow::Result<Option<ExecStatus>> {
    let start = Instant::now();
    loop {
        check()?;
        let status = agent.exec_status(pid).map_err(|e| {
            let why = match &e {
                // Another agent answers: the one that started the process is gone.
                CallError::Qapi { .. } => {
                    format!("the guest agent no longer knows process {pid} (it was restarted)")
                }
                _ => format!("the guest agent stopped answering while process {pid} ran"),
            };
            anyhow::Error::new(e).context(why)
        })?;
        if status.exited {
            return Ok(Some(status));
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Ok(None);
        }
        tick(elapsed);
        sleep(POLL);
    }
}

/// Wait for a guest process; past `timeout`, or when `check` says stop, kill it and
/// everything it started.
fn wait(
    agent: &mut dyn GuestAgent,
    pid: i64,
    timeout: Duration,
    tick: &mut dyn FnMut(Duration),
    check: Check<'_>,
) -> anyhow::Result<ExecStatus> {
    wait_on(Os::Linux, agent, pid, timeout, tick, check)
}

/// Whose tools end a process tree.
#[derive(Clone, Copy)]
enum Os {
    Linux,
    Windows,
}

fn wait_on(
    os: Os,
    agent: &mut dyn GuestAgent,
    pid: i64,
    timeout: Duration,
    tick: &mut dyn FnMut(Duration),
    check: Check<'_>,
) -> anyhow::Result<ExecStatus> {
    let stopped = match poll(agent, pid, timeout, tick, check) {
        Ok(Some(status)) => return Ok(status),
        Ok(None) => anyhow::anyhow!(
            "guest process {pid} still running after {}s, killed",
            timeout.as_secs()
        ),
        // The agent itself is gone: nobody is left to kill with.
        Err(e) if agent_gone(&e) => return Err(e),
        Err(e) => e.context(format!("guest process {pid} was killed")),
    };
    // The agent has no kill: ask the guest's own tools, or the children keep the media
    // busy.
    let (program, args) = match os {
        Os::Linux => ("/bin/sh", sh_argv(KILL_TREE, &[&pid.to_string()])),
        Os::Windows => (
            "C:\\Windows\\System32\\taskkill.exe",
            vec!["/PID".into(), pid.to_string(), "/T".into(), "/F".into()],
        ),
    };
    if let Ok(k) = agent.exec(program, &args, &[]) {
        let _ = poll(agent, k, HELPER_TIMEOUT, &mut |_| {}, &mut || Ok(()));
    }
    Err(stopped)
}

/// Does this error say the guest agent can no longer be reached (it stopped answering,
/// its connection closed, or the VM stopped running)? Then further agent calls would
/// only wait out their timeouts.
pub fn agent_gone(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<CallError>()
            .is_some_and(|c| matches!(c, CallError::Timeout(_)) || c.is_disconnect())
            || c.downcast_ref::<VmStopped>().is_some()
    })
}

/// The VM stopped running under the guest step (paused, shut down, gone).
#[derive(Debug, thiserror::Error)]
#[error("the VM is {0} (it stopped running during the install)")]
pub struct VmStopped(pub String);

/// Mount `dev` read-only, or reuse the guest's own mount of it. The first mount right
/// after insertion fails with EINVAL on Linux, so retry.
pub fn mount(agent: &mut dyn GuestAgent, dev: &str, check: Check<'_>) -> anyhow::Result<String> {
    if let Some(existing) = mount_point_of(agent, dev)? {
        return Ok(existing);
    }
    let mut last = ExecStatus::default();
    for _ in 0..20 {
        check()?;
        last = sh(
            agent,
            "mkdir -p \"$1\" && mount -t iso9660 -o ro \"$2\" \"$1\"",
            &[MOUNT_POINT, dev],
        )?;
        if last.succeeded() {
            return Ok(MOUNT_POINT.to_owned());
        }
        sleep(Duration::from_millis(500));
    }
    bail!(
        "cannot mount {dev} in the guest: {}",
        last.stderr.trim().lines().last().unwrap_or("mount failed")
    )
}

/// The guest's mounts, as (device, mount point) pairs from `/proc/mounts`.
fn mounts(agent: &mut dyn GuestAgent) -> anyhow::Result<Vec<(String, String)>> {
    let text = agent.read_file("/proc/mounts", 0, 1 << 20)?;
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_owned(), f.next()?.to_owned()))
        })
        .collect())
}

fn mount_point_of(agent: &mut dyn GuestAgent, dev: &str) -> anyhow::Result<Option<String>> {
    Ok(mounts(agent)?
        .into_iter()
        .find_map(|(d, dir)| (d == dev).then_some(dir)))
}

/// Run the recipe's Linux installer and wait for it, at most `timeout`. `started` learns
/// its pid in the guest before the wait begins.
#[allow(clippy::too_many_arguments)]
pub fn run_installer(
    agent: &mut dyn GuestAgent,
    mount_point: &str,
    command: &str,
    timeout: Duration,
    vm: &str,
    progress: &dyn Progress,
    check: Check<'_>,
    started: &mut dyn FnMut(i64),
) -> anyhow::Result<ExecStatus> {
    let env = vec![
        format!("VMGUEST_IC_MEDIA={mount_point}"),
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    ];
    let script = format!("cd \"$VMGUEST_IC_MEDIA\" && {command}");
    let pid = agent
        .exec("/bin/sh", &["-c".to_owned(), script], &env)
        .context("starting the installer in the guest")?;
    started(pid);
    wait(
        agent,
        pid,
        timeout,
        &mut |elapsed| progress.waiting(vm, "installer", elapsed, timeout),
        check,
    )
    .context("waiting for the installer")
}

/// Make the guest let go of media an earlier, interrupted run left: end its installer
/// (and everything that installer started), then unmount.
pub fn release(
    agent: &mut dyn GuestAgent,
    installer: Option<i64>,
    mount_point: &str,
) -> anyhow::Result<()> {
    if let Some(pid) = installer {
        let st = sh(agent, KILL_TREE, &[&pid.to_string()])?;
        tracing::debug!(pid, exit = ?st.exit_code, "ended an earlier run's installer");
    }
    match mounts(agent)?.iter().any(|(_, dir)| dir == mount_point) {
        true => unmount(agent, mount_point),
        false => Ok(()),
    }
}

/// Unmount, retrying briefly: the kernel may still hold the device for a moment.
pub fn unmount(agent: &mut dyn GuestAgent, mount_point: &str) -> anyhow::Result<()> {
    let mut last = ExecStatus::default();
    for _ in 0..3 {
        last = sh(agent, "umount \"$1\"", &[mount_point])?;
        if last.succeeded() {
            return Ok(());
        }
        sleep(Duration::from_millis(500));
    }
    bail!(
        "the guest keeps {mount_point} mounted: {}",
        last.stderr.trim().lines().last().unwrap_or("umount failed")
    )
}

/// What [`INSTALLED_RECORD`] holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InstalledComponents {
    pub components: Components,
    pub iso_volume_id: String,
    pub installed_unix: u64,
}

pub fn record_installed(
    agent: &mut dyn GuestAgent,
    record: &InstalledComponents,
) -> anyhow::Result<()> {
    let dir = INSTALLED_RECORD
        .rsplit_once('/')
        .map(|(d, _)| d)
        .unwrap_or("/");
    let st = sh(agent, "mkdir -p \"$1\"", &[dir])?;
    anyhow::ensure!(st.succeeded(), "cannot create {dir}: {}", st.stderr.trim());
    agent.write_file(INSTALLED_RECORD, toml::to_string(record)?.as_bytes())?;
    Ok(())
}

/// The components vmguest last installed, if it left a record.
pub fn installed(agent: &mut dyn GuestAgent) -> anyhow::Result<Option<InstalledComponents>> {
    match agent.read_file(INSTALLED_RECORD, 0, 64 * 1024) {
        Ok(bytes) => Ok(Some(toml::from_str(&String::from_utf8_lossy(&bytes))?)),
        Err(e) if e.is_disconnect() => Err(e.into()),
        Err(_) => Ok(None),
    }
}
