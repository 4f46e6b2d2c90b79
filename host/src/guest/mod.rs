//! Steps inside the guest, through the guest agent: find the IC media, mount it, run its
//! installer and wait, unmount, and remember what was installed.
//!
//! What differs between guest OSes is behind [`GuestInstaller`]: `linux.rs` (POSIX `sh`,
//! `mount` and `umount`, which every Linux guest with an agent has) and `windows.rs`
//! (drive letters, `cmd`-free argv, MSI exit codes). This file holds what both share:
//! polling for the media to appear, running and waiting on guest processes, and the
//! version and install records.

mod linux;
pub mod windows;

pub use linux::{release, Linux};
pub use windows::Windows;

use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::iso::manifest::Components;
use crate::iso::{Probe, Recipe};
use crate::progress::Progress;
use crate::vm::{CallError, ExecStatus, GuestAgent};

/// How one kind of guest OS runs the IC media's installer: where the media shows up,
/// how the installer starts, what its exit means, and what is left to undo.
pub trait GuestInstaller {
    /// "Linux", "Windows": for messages.
    fn os_name(&self) -> &'static str;
    /// The family's unattended command for this OS, from the media's recipe.
    fn family_command(&self, recipe: &Recipe, machine: Option<&str>) -> Option<String>;
    /// Find the media in the guest and make it readable; returns where it is (a mount
    /// point, a drive letter).
    fn prepare(
        &mut self,
        agent: &mut dyn GuestAgent,
        pvd: &[u8],
        within: Duration,
        check: Check<'_>,
    ) -> anyhow::Result<String>;
    /// Start `call.command` on the media at `place` and wait for it; `started` learns
    /// the guest pid where the OS's recovery can use it. Returns the command as shown.
    fn run(
        &mut self,
        agent: &mut dyn GuestAgent,
        place: &str,
        call: &InstallerCall<'_>,
        check: Check<'_>,
        started: &mut dyn FnMut(i64),
    ) -> anyhow::Result<(String, ExecStatus)>;
    /// What the installer's exit status means.
    fn verdict(&self, status: &ExecStatus) -> Verdict;
    /// Whether [`GuestInstaller::prepare`] mounts the media, so that it stays mounted
    /// after the installer until [`GuestInstaller::unmount`].
    fn mounts_media(&self) -> bool;
    /// Whether vmguest writes its install record ([`INSTALLED_RECORD`], a POSIX path)
    /// into this guest after a successful install.
    fn writes_install_record(&self) -> bool;
    /// Let go of the media at `place`.
    fn unmount(&mut self, agent: &mut dyn GuestAgent, place: &str) -> anyhow::Result<()>;
}

/// The guest OS's installer: Windows or Linux.
pub fn installer_for(windows: bool) -> Box<dyn GuestInstaller> {
    if windows {
        Box::new(Windows)
    } else {
        Box::new(Linux)
    }
}

/// One installer run's parameters, the same for every guest OS.
pub struct InstallerCall<'a> {
    pub command: &'a str,
    /// `-InstallCommand`: the user's command, not the family's.
    pub custom: bool,
    pub timeout: Duration,
    pub vm: &'a str,
    pub progress: &'a dyn Progress,
}

/// What an installer's exit status means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Installed,
    /// Installed; the guest must restart to finish.
    RebootRequired,
    /// Failed; why, as the operation reports it.
    Failed(String),
}

/// Where the IC media is mounted in the guest.
pub const MOUNT_POINT: &str = "/run/vmguest-ic";
/// What vmguest records in the guest after a successful install.
pub const INSTALLED_RECORD: &str = "/var/lib/vmguest/integration-components.toml";

/// The longest pause between two looks at a guest process or for the media.
const POLL: Duration = Duration::from_millis(250);

/// Pauses between looks that start tight and double up to a cap: a guest step that ends
/// in 20 ms (a mount, the media becoming readable ~180 ms after the insert) is seen
/// then, not a whole interval later, and a long one costs at most one call per `cap`.
/// Polling a guest agent tighter than that slows some guests (Debian's qemu-ga logs
/// every call to the journal).
pub(crate) struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub(crate) fn new(cap: Duration) -> Backoff {
        Backoff {
            next: Duration::from_millis(10).min(cap),
            cap,
        }
    }

    pub(crate) fn sleep(&mut self) {
        sleep(self.next);
        self.next = (self.next * 2).min(self.cap);
    }
}
/// Small helper commands (mkdir, mount, umount) must finish within this.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// The IC media did not show up in the guest in time.
#[derive(Debug, thiserror::Error)]
#[error("the IC media did not appear {place} within {}s ({seen})", .within.as_secs())]
pub struct MediaNotFound {
    /// Where it was looked for: "in the guest", "as a drive letter in the guest".
    pub place: &'static str,
    /// How long it was looked for.
    pub within: Duration,
    /// What the looks saw instead.
    pub seen: String,
}

impl MediaNotFound {
    /// Looking `place` for up to `within`, having seen `nothing` yet.
    fn new(place: &'static str, within: Duration, nothing: &str) -> MediaNotFound {
        MediaNotFound {
            place,
            within,
            seen: nothing.to_owned(),
        }
    }
}

/// What one look for the IC media found: where it is, or not yet.
pub type Look = anyhow::Result<Option<String>>;

/// Poll until `look` finds the IC media in the guest (each OS knows it by its primary
/// volume descriptor): freshly inserted media take a moment to become readable. `look`
/// says where the media is, or updates `seen` with what it saw instead; its error (the
/// agent is gone) stops the search. Past `missing.within`, `missing` is the error, with
/// what was seen last.
fn find_media(
    agent: &mut dyn GuestAgent,
    check: Check<'_>,
    mut missing: MediaNotFound,
    look: &mut dyn FnMut(&mut dyn GuestAgent, &mut String) -> Look,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + missing.within;
    let mut pause = Backoff::new(POLL);
    loop {
        check()?;
        if let Some(place) = look(agent, &mut missing.seen)? {
            return Ok(place);
        }
        if Instant::now() >= deadline {
            return Err(missing.into());
        }
        pause.sleep();
    }
}

/// The installed version a probe reads, or `None` when the family is not installed.
pub fn read_version(agent: &mut dyn GuestAgent, probe: &Probe) -> anyhow::Result<Option<String>> {
    match probe {
        Probe::Shell(command) => installed_version(agent, command),
        Probe::Cmd(_) | Probe::Uninstall(_) | Probe::UninstallKey { .. } => {
            windows::installed_version(agent, probe)
        }
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
    let mut pause = Backoff::new(POLL);
    loop {
        check()?;
        let status = match agent.exec_status(pid) {
            Ok(status) => status,
            Err(e) if lost(&e) => come_back(agent, pid, e, start + timeout, check)?,
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("guest-exec-status of process {pid} failed")))
            }
        };
        if status.exited {
            return Ok(Some(status));
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Ok(None);
        }
        tick(elapsed);
        pause.sleep();
    }
}

/// How long one wait for a lost agent lasts before `check` is asked again.
const COME_BACK_SLICE: Duration = Duration::from_secs(5);

/// Did the agent that runs the process go away: it stopped answering, or a new
/// instance answers that does not know the process?
fn lost(e: &CallError) -> bool {
    matches!(e, CallError::UnknownProcess(_)) || e.agent_not_up() || e.is_disconnect()
}

/// The agent went away while process `pid` ran (`first` says how). Wait until
/// `deadline` for it to answer again: the same agent, merely slow, still knows the
/// process and its status is returned; a new instance does not ([`AgentRestarted`]).
/// An agent that never comes back is the error, with `first` as its cause.
fn come_back(
    agent: &mut dyn GuestAgent,
    pid: i64,
    first: CallError,
    deadline: Instant,
    check: Check<'_>,
) -> anyhow::Result<ExecStatus> {
    if matches!(first, CallError::UnknownProcess(_)) {
        return Err(AgentRestarted { pid }.into());
    }
    tracing::info!(
        pid,
        "the guest agent stopped answering ({first}); waiting for it"
    );
    let mut last = first;
    loop {
        check()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(anyhow::Error::new(last).context(format!(
                "the guest agent stopped answering while process {pid} ran, \
                 and did not answer again within the install's time limit"
            )));
        }
        match agent.resync(left.min(COME_BACK_SLICE)) {
            Ok(()) => {}
            Err(e) if lost(&e) => {
                // A closed connection fails at once: do not spin on it.
                last = e;
                sleep(POLL);
                continue;
            }
            Err(e) => return Err(anyhow::Error::new(e).context("syncing with the guest agent")),
        }
        return match agent.exec_status(pid) {
            Ok(status) => Ok(status),
            Err(CallError::UnknownProcess(_)) => Err(AgentRestarted { pid }.into()),
            Err(e) => Err(anyhow::Error::new(e).context(format!(
                "the guest agent answers again, but not about process {pid}"
            ))),
        };
    }
}

/// The guest agent was restarted (upgraded, or its service restarted) while process
/// `pid` ran: the new instance answers, but the process's exit status is lost with the
/// old one. Only what the process left behind can tell how it went.
#[derive(Debug, thiserror::Error)]
#[error("the guest agent restarted while process {pid} ran, so its exit status is lost")]
pub struct AgentRestarted {
    pub pid: i64,
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
        // The agent itself is gone: nobody is left to kill with. Restarted, it is back,
        // and the process may still run: the caller decides.
        Err(e) if agent_gone(&e) || restarted(&e).is_some() => return Err(e),
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

/// The pid whose agent restarted, if `e` says so ([`AgentRestarted`]).
pub fn restarted(e: &anyhow::Error) -> Option<i64> {
    e.chain()
        .find_map(|c| c.downcast_ref::<AgentRestarted>())
        .map(|r| r.pid)
}

/// The VM stopped running under the guest step (paused, shut down, gone).
#[derive(Debug, thiserror::Error)]
#[error("the VM is {0} (it stopped running during the install)")]
pub struct VmStopped(pub String);

/// What the guest records of the components vmguest installed last, in
/// `/var/lib/vmguest/integration-components.toml` inside the guest.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct InstalledComponents {
    /// The family, version and components installed.
    pub components: Components,
    /// The volume ID of the ISO they came from.
    pub iso_volume_id: String,
    /// When, in seconds since the Unix epoch.
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
