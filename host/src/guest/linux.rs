//! The Linux guest: the IC media found by its primary volume descriptor among
//! `/dev/sr*`, mounted at [`MOUNT_POINT`], its installer run with POSIX `sh` from there,
//! and unmounted again; the installer's pid is journaled, so that a later run can end it.

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{
    find_media, restarted, sh, wait, Backoff, Check, GuestInstaller, InstallerCall, Look,
    MediaNotFound,
};
use super::{Verdict, KILL_TREE, MOUNT_POINT};
use crate::iso::{Recipe, PVD_OFFSET, SECTOR};
use crate::progress::Progress;
use crate::vm::{ExecStatus, GuestAgent};

/// One look among `/dev/sr*` for the block device that holds our media: its primary
/// volume descriptor is the ISO's.
fn look_for_device(agent: &mut dyn GuestAgent, pvd: &[u8], seen: &mut String) -> Look {
    for i in 0..8 {
        let dev = format!("/dev/sr{i}");
        match agent.read_file(&dev, PVD_OFFSET, SECTOR) {
            Ok(bytes) if bytes == pvd => return Ok(Some(dev)),
            Ok(_) => {}
            Err(e) if e.is_disconnect() => return Err(e.into()),
            Err(e) => {
                if i == 0 {
                    *seen = format!("{dev}: {}", crate::hresult::chain(&e));
                }
            }
        }
    }
    Ok(None)
}

/// How long a mount of freshly inserted media is retried.
const MOUNT_RETRY: Duration = Duration::from_secs(10);

/// Let udev finish with the media change first, where there is udev: systemd unmounts a
/// mount made on a device it has not yet seen plugged (seen on Debian 12 within 0.3 s of
/// the mount), and the installer then finds no files.
const MOUNT: &str = "command -v udevadm >/dev/null 2>&1 && udevadm settle --timeout=10; \
                     mkdir -p \"$1\" && mount -t iso9660 -o ro \"$2\" \"$1\"";

/// Mount `dev` read-only, or reuse the guest's own mount of it. The first mount right
/// after insertion fails with EINVAL on Linux, so retry.
pub fn mount(agent: &mut dyn GuestAgent, dev: &str, check: Check<'_>) -> anyhow::Result<String> {
    if let Some(existing) = mount_point_of(agent, dev)? {
        return Ok(existing);
    }
    let mut last = ExecStatus::default();
    let give_up = Instant::now() + MOUNT_RETRY;
    let mut pause = Backoff::new(Duration::from_millis(500));
    while Instant::now() < give_up {
        check()?;
        last = sh(agent, MOUNT, &[MOUNT_POINT, dev])?;
        if last.succeeded() {
            return Ok(MOUNT_POINT.to_owned());
        }
        pause.sleep();
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
    let deadline = Instant::now() + timeout;
    let waited = wait(
        agent,
        pid,
        timeout,
        &mut |elapsed| progress.waiting(vm, "installer", elapsed, timeout),
        check,
    );
    if let Err(e) = &waited {
        if restarted(e).is_some() {
            // The new agent cannot wait on it, but the guest's /proc can: the installer
            // may go on after restarting the agent (a package upgrade does).
            outlive(agent, pid, deadline, check)?;
        }
    }
    waited.context("waiting for the installer")
}

/// Exit 0 while process `$1` runs (a zombie has ended).
const STILL_RUNS: &str = r#"s=$(cat "/proc/$1/stat" 2>/dev/null) || exit 1
s=${s##*) }
[ "${s%% *}" != Z ]"#;

/// Wait, without its agent, until process `pid` has ended; past `deadline` end its tree.
fn outlive(
    agent: &mut dyn GuestAgent,
    pid: i64,
    deadline: Instant,
    check: Check<'_>,
) -> anyhow::Result<()> {
    let arg = pid.to_string();
    loop {
        check()?;
        if !sh(agent, STILL_RUNS, &[&arg])?.succeeded() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = sh(agent, KILL_TREE, &[&arg]);
            bail!("the installer (process {pid}) still ran at the time limit after the guest agent restarted, killed");
        }
        sleep(Duration::from_secs(1));
    }
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

/// Unmount, then unlock the drive's tray. udev locks the tray of every drive with media
/// (`60-cdrom_id.rules`, `cdrom_id --lock-media`), which turns vmguest's eject into a
/// request the guest only answers at its next media poll (2 s on Debian); unlocking it
/// after our own mount is gone is what udev does when its eject button is pressed.
/// Guests without util-linux `eject` (or with busybox's) skip the unlock.
const UNMOUNT: &str = "d=; while read -r dev dir rest; do [ \"$dir\" = \"$1\" ] && d=$dev; \
                       done < /proc/mounts; umount \"$1\" || exit; [ -n \"$d\" ] && \
                       eject -i off \"$d\" >/dev/null 2>&1; exit 0";

/// How long an unmount is retried: the kernel may still hold the device for a moment.
const UNMOUNT_RETRY: Duration = Duration::from_millis(1500);

/// Unmount, retrying briefly: the kernel may still hold the device for a moment.
pub fn unmount(agent: &mut dyn GuestAgent, mount_point: &str) -> anyhow::Result<()> {
    let give_up = Instant::now() + UNMOUNT_RETRY;
    let mut pause = Backoff::new(Duration::from_millis(500));
    loop {
        let last = sh(agent, UNMOUNT, &[mount_point])?;
        if last.succeeded() {
            return Ok(());
        }
        if Instant::now() >= give_up {
            bail!(
                "the guest keeps {mount_point} mounted: {}",
                last.stderr.trim().lines().last().unwrap_or("umount failed")
            )
        }
        pause.sleep();
    }
}

/// The Linux guest's [`GuestInstaller`].
pub struct Linux;

impl GuestInstaller for Linux {
    fn os_name(&self) -> &'static str {
        "Linux"
    }

    fn family_command(&self, recipe: &Recipe, _machine: Option<&str>) -> Option<String> {
        recipe.linux.clone()
    }

    fn prepare(
        &mut self,
        agent: &mut dyn GuestAgent,
        pvd: &[u8],
        within: Duration,
        check: Check<'_>,
    ) -> anyhow::Result<String> {
        let missing = MediaNotFound::new("in the guest", within, "no /dev/sr* device");
        let dev = find_media(agent, check, missing, &mut |a, seen| {
            look_for_device(a, pvd, seen)
        })?;
        mount(agent, &dev, check)
    }

    fn run(
        &mut self,
        agent: &mut dyn GuestAgent,
        place: &str,
        call: &InstallerCall<'_>,
        check: Check<'_>,
        started: &mut dyn FnMut(i64),
    ) -> anyhow::Result<(String, ExecStatus)> {
        let status = run_installer(
            agent,
            place,
            call.command,
            call.timeout,
            call.vm,
            call.progress,
            check,
            started,
        )?;
        Ok((call.command.to_owned(), status))
    }

    fn verdict(&self, status: &ExecStatus) -> Verdict {
        if status.succeeded() {
            return Verdict::Installed;
        }
        Verdict::Failed(format!(
            "{}{}",
            status.exit_code.map_or("none".into(), |c| c.to_string()),
            status
                .signal
                .map_or(String::new(), |s| format!(", signal {s}")),
        ))
    }

    fn mounts_media(&self) -> bool {
        true
    }

    fn writes_install_record(&self) -> bool {
        true
    }

    fn unmount(&mut self, agent: &mut dyn GuestAgent, place: &str) -> anyhow::Result<()> {
        unmount(agent, place)
    }
}
