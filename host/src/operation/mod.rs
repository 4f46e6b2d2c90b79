//! `InstallIntegrationComponents` as a sequence of typed steps.
//!
//! [`Operation::contract`] reads as the contract: resolve → check running → locate →
//! drive → pre-hooks → mount → install → unmount, and [`install`] adds the post-hooks.
//! Each step takes what it needs and hands the next one what it produced (a connected
//! VM, a located ISO, a [`Plan`], the [`Mounted`] media), so the steps cannot run out of
//! order and no step reads state that another may not have set.
//!
//! ```text
//! connect → check-running → connect-agent → locate-iso → choose-drive → pre-install
//!   → iso-digest → stage-iso → journal → [borrow-media] → insert-ic
//!        ├─ autorun: the media stays in for the guest
//!        └─ agent:   prepare-guest → run-installer → unmount-in-guest
//!   → eject-ic → [restore-media]
//! ```
//!
//! `locate-iso` opens the chosen ISO and takes its SHA-256 from the digest cache, or starts
//! hashing it on its own thread; `iso-digest` waits for that hash, so a cold hash runs
//! beside the drive and hook steps and never after the VM was touched.
//!
//! `stage-iso` hands the hypervisor that same opened file (QMP `add-fd`), so what the
//! guest gets is what was checked and hashed, whatever a plugin did to the path since.
//!
//! Once anything in the VM changed, the IC media comes out and borrowed media goes back
//! on every path. Every failure goes into the report; the first decides the outcome and
//! later ones (usually from clean-up) become notes. A step that stops the operation
//! returns `None`, so `?` reads as "stopped, the reason is in the report".
//!
//! The operation never panics to its caller: a panic inside it becomes
//! DISP_E_EXCEPTION, like any other unexpected error.

mod recovery;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::cancel::Cancel;
use crate::guest::{self, InstalledComponents};
use crate::hresult::{chain, Failure, HResult, OrHResult, Outcome};
use crate::iso::{self, IcIso, Probe};
use crate::journal::{self, Journal};
use crate::kinds::{Family, GuestKind};
use crate::manifest::Components;
use crate::plugin::{context, PluginSet};
use crate::progress::Progress;
use crate::report::{InstallReport, InstallerRun, Mode, PhaseTiming};
use crate::settings::Settings;
use crate::vm::{CallError, DvdDrive, GuestAgent, Hypervisor, Media, VmControl};

/// Parameters of one install.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Explicit ISO; otherwise the location policy decides.
    pub iso: Option<PathBuf>,
    /// Borrow an occupied drive when no drive is empty, and put its media back afterwards.
    pub replace_media: bool,
    /// Insert the media and return, like the original API (the guest runs setup itself).
    pub no_wait: bool,
    /// Limit for the installer in the guest.
    pub timeout: Duration,
    /// Decide everything, change nothing.
    pub what_if: bool,
    /// Plugins to run; `None` runs none (the CLI's `-NoPlugins`).
    pub plugins: Option<Arc<PluginSet>>,
    /// Stop early when asked (the CLI's signal handlers); clean-up still runs.
    pub cancel: Cancel,
    /// Run this in the guest on the mounted media instead of the family's installer
    /// (`-InstallCommand`); with it, media of no known family is installed too.
    pub install_command: Option<String>,
    /// Install even when the guest already runs the media's version (`-Force`).
    pub force: bool,
    /// Reboot the guest through its agent when the installer asks for it, and wait for
    /// the agent to come back (`-Restart`); without it the guest is never rebooted.
    pub restart: bool,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            iso: None,
            replace_media: false,
            no_wait: false,
            timeout: Duration::from_secs(600),
            what_if: false,
            plugins: None,
            cancel: Cancel::new(),
            install_command: None,
            force: false,
            restart: false,
        }
    }
}

/// The steps, in the order they run; their names appear in the report's `phases`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Lock,
    Connect,
    Recover,
    CheckRunning,
    ConnectAgent,
    LocateIso,
    CheckVersion,
    ChooseDrive,
    PreInstall,
    IsoDigest,
    StageIso,
    Journal,
    BorrowMedia,
    InsertIc,
    Autorun,
    PrepareGuest,
    RunInstaller,
    UnmountInGuest,
    EjectIc,
    RestoreMedia,
    VerifyVersion,
    RestartGuest,
}

impl Step {
    /// Clean-up steps run even after a cancel request: they put the drive back.
    pub fn is_cleanup(self) -> bool {
        matches!(
            self,
            Step::Recover | Step::UnmountInGuest | Step::EjectIc | Step::RestoreMedia
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Step::Lock => "lock",
            Step::Connect => "connect",
            Step::Recover => "recover",
            Step::CheckRunning => "check-running",
            Step::ConnectAgent => "connect-agent",
            Step::LocateIso => "locate-iso",
            Step::CheckVersion => "check-version",
            Step::ChooseDrive => "choose-drive",
            Step::PreInstall => "pre-install",
            Step::IsoDigest => "iso-digest",
            Step::StageIso => "stage-iso",
            Step::Journal => "journal",
            Step::BorrowMedia => "borrow-media",
            Step::InsertIc => "insert-ic",
            Step::Autorun => "autorun",
            Step::PrepareGuest => "prepare-guest",
            Step::RunInstaller => "run-installer",
            Step::UnmountInGuest => "unmount-in-guest",
            Step::EjectIc => "eject-ic",
            Step::RestoreMedia => "restore-media",
            Step::VerifyVersion => "verify-version",
            Step::RestartGuest => "restart-guest",
        }
    }
}

/// How long freshly inserted media may take to show up in the guest.
const MEDIA_APPEAR: Duration = Duration::from_secs(30);
/// How long an unlocked tray may take to let go after the guest unmounts.
const EJECT_RETRY: Duration = Duration::from_secs(3);

/// The drive chosen for the IC media, and the user's media to borrow from it, if any.
#[derive(Debug)]
pub struct Plan {
    drive: DvdDrive,
    borrow: Option<Media>,
}

/// The IC media `ic` is in `drive`; `borrowed` is the user's media waiting to go back.
#[derive(Debug)]
pub struct Mounted {
    drive: DvdDrive,
    ic: Media,
    borrowed: Option<Media>,
}

/// Run the whole operation for one VM. Every path, including a bug that panics, ends in
/// a report whose `result` is one of the seven documented outcomes.
pub fn install(
    hypervisor: &dyn Hypervisor,
    settings: &Settings,
    vm_name: &str,
    options: &InstallOptions,
    progress: &dyn Progress,
) -> InstallReport {
    let mut op = sealed(settings, options, progress, vm_name, |op| {
        op.contract(hypervisor)
    });
    if !options.what_if {
        op.post_install();
    }
    op.report
}

/// `Repair-VMMedia`: finish what an earlier run left in the journal for this VM (its IC
/// media out, the user's media back), and nothing else. With `what_if`, say what it
/// would do.
pub fn repair(
    hypervisor: &dyn Hypervisor,
    settings: &Settings,
    vm_name: &str,
    options: &InstallOptions,
    progress: &dyn Progress,
) -> InstallReport {
    let op = sealed(settings, options, progress, vm_name, |op| {
        let _lock = op.run(Step::Lock, |op| op.lock(hypervisor))?;
        let mut vm = op.run(Step::Connect, |_| hypervisor.control(vm_name))?;
        let notes = op.report.notes.len();
        op.run(Step::Recover, |op| op.recover(hypervisor, vm.as_mut()))?;
        Some(match op.report.notes.get(notes..).and_then(|n| n.last()) {
            Some(what) => what.clone(),
            None if op.journal.is_none() => {
                "nothing to repair: no state directory, so no journal".into()
            }
            None => format!("nothing to repair: no journal entry for VM {vm_name:?}"),
        })
    });
    op.report
}

/// Run `body` (which returns the success message, or `None` once a step failed) with a
/// panic turned into DISP_E_EXCEPTION, then time and seal the report.
fn sealed<'a>(
    settings: &'a Settings,
    options: &'a InstallOptions,
    progress: &'a dyn Progress,
    vm_name: &str,
    body: impl FnOnce(&mut Operation<'a>) -> Option<String>,
) -> Operation<'a> {
    let started = Instant::now();
    let mut op = Operation::new(settings, options, progress, vm_name);
    let message = catch_unwind(AssertUnwindSafe(|| body(&mut op))).unwrap_or_else(|panic| {
        op.report.fail(panicked(panic.as_ref()));
        None
    });
    progress.finished(vm_name);
    op.report.total_ms = started.elapsed().as_millis() as u64;
    op.report.seal(message.unwrap_or_default());
    op
}

/// A panic caught at the library's edge: a bug, reported as an unexpected error.
pub fn panicked(panic: &(dyn std::any::Any + Send)) -> Failure {
    Failure::msg(
        HResult::DispException,
        format!("internal error in vmguest: {}", panic_text(panic)),
    )
}

/// The message a panic carried, if it is text.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

struct Operation<'a> {
    settings: &'a Settings,
    options: &'a InstallOptions,
    progress: &'a dyn Progress,
    report: InstallReport,
    /// Where media changes are recorded before they are made; `None` without a state
    /// directory.
    journal: Option<Journal>,
    /// The VM's identity, for the journal and the lock (`Hypervisor::identity`).
    identity: String,
    /// Its host, as journal entries name it (`Hypervisor::location`).
    location: String,
    /// The entry this run recorded, until the drive is back as it was found.
    journaled: Option<journal::Entry>,
    /// The guest agent stopped answering, or the VM stopped: ask the guest nothing more.
    agent_gone: bool,
}

impl<'a> Operation<'a> {
    fn new(
        settings: &'a Settings,
        options: &'a InstallOptions,
        progress: &'a dyn Progress,
        vm: &str,
    ) -> Operation<'a> {
        let mut report = InstallReport::new(vm);
        report.what_if = options.what_if;
        Operation {
            settings,
            options,
            progress,
            report,
            journal: settings.state_dir.as_deref().map(Journal::new),
            identity: String::new(),
            location: String::new(),
            journaled: None,
            agent_gone: false,
        }
    }
}

impl Operation<'_> {
    /// The contract. Returns the success message; `None` when a step failed.
    fn contract(&mut self, hv: &dyn Hypervisor) -> Option<String> {
        let vm_name = self.report.vm.clone();
        let _lock = self.run(Step::Lock, |op| op.lock(hv))?;
        let mut vm = self.run(Step::Connect, |_| hv.control(&vm_name))?;
        let vm = vm.as_mut();
        self.run(Step::Recover, |op| op.recover(hv, vm))?;
        let message = self.install(hv, vm);
        self.settle(
            vm,
            message.is_some() && self.report.mode == Some(Mode::Autorun),
        );
        message
    }

    /// From a connected, recovered VM to the installed components.
    fn install(&mut self, hv: &dyn Hypervisor, vm: &mut dyn VmControl) -> Option<String> {
        self.run(Step::CheckRunning, |op| op.check_running(vm))?;
        let agent = self.run(Step::ConnectAgent, |op| Ok(op.connect_agent(hv)))?;
        let iso = self.run(Step::LocateIso, |op| op.locate_iso())?;
        let mut agent = self.agent_for_media(agent, &iso);
        let verifies = self.verify_command(&iso).is_some() && iso.version.is_some();
        if let Some(a) = agent.as_deref_mut().filter(|_| verifies) {
            if let Some(current) = self.run(Step::CheckVersion, |op| op.check_version(a, &iso))? {
                return Some(current);
            }
        }
        let plan = self.run(Step::ChooseDrive, |op| op.choose_drive(vm, agent.is_some()))?;
        if self
            .run(Step::PreInstall, |op| op.pre_install(&iso))
            .is_none()
        {
            // Refused before the VM was touched: nothing went in, nor was going to.
            self.report.mode = None;
            self.report.components = None;
            return None;
        }
        let sha256 = self.run(Step::IsoDigest, |_| iso.sha256.wait())?;
        self.report.iso_sha256 = Some(sha256);
        if self.options.what_if {
            return Some(self.what_if_message(&plan));
        }
        let mounted = self.mount(vm, plan, &iso)?;
        let installed = match agent.as_deref_mut() {
            None => self.autorun(vm),
            Some(agent) => self.install_in_guest(vm, agent, &iso),
        };
        if installed
            .as_ref()
            .is_some_and(|i| *i == Installed::LeftForAutorun)
        {
            return Some(self.autorun_message(&mounted));
        }
        self.unmount(vm, mounted, installed.is_some())?;
        installed?;
        if let Some(a) = agent.as_deref_mut().filter(|_| verifies) {
            self.run(Step::VerifyVersion, |op| op.verify_version(a, &iso))?;
        }
        if self.report.reboot_required {
            match agent {
                Some(a) if self.options.restart => {
                    self.run(Step::RestartGuest, |op| op.restart_guest(hv, a))?
                }
                _ => self
                    .report
                    .note("the installer asks for a restart of the guest (-Restart does it)"),
            }
        }
        Some(self.installed_message())
    }

    fn guest_is_windows(&self) -> bool {
        self.report
            .guest_os
            .as_ref()
            .is_some_and(|o| o.is_windows())
    }

    /// Windows: find the media's drive letter and run the family's silent installer from
    /// it. Windows does not lock the tray for a mounted CD, so there is nothing to
    /// unmount, and no guest process is journaled (the recovery ends Linux processes).
    fn install_in_windows(
        &mut self,
        agent: &mut dyn GuestAgent,
        iso: &IcIso,
        check: guest::Check<'_>,
    ) -> Option<Installed> {
        let letter = self.run(Step::PrepareGuest, |op| {
            Ok(
                guest::windows::find_letter(agent, &iso.pvd, MEDIA_APPEAR, check)
                    .inspect_err(|e| op.agent_gone |= guest::agent_gone(e))?,
            )
        })?;
        self.run(Step::RunInstaller, |op| {
            op.run_windows_installer(agent, &letter, iso, check)
        })
    }

    /// `-InstallCommand`, else the family's unattended command for this guest's OS.
    fn installer_command(&self, iso: &IcIso, windows: bool) -> Outcome<String> {
        let machine = self
            .report
            .guest_os
            .as_ref()
            .and_then(|o| o.machine.as_deref());
        let family = if windows {
            iso.recipe.windows_for(machine.unwrap_or("x86_64"))
        } else {
            iso.recipe.linux.clone()
        };
        self.options
            .install_command
            .clone()
            .or(family)
            .ok_or_else(|| {
                Failure::msg(
                    HResult::DispException,
                    format!(
                        "{} {} has no unattended installer for {} guests",
                        iso.name,
                        iso.version.as_deref().unwrap_or(""),
                        if windows { "Windows" } else { "Linux" }
                    ),
                )
            })
    }

    fn run_windows_installer(
        &mut self,
        agent: &mut dyn GuestAgent,
        letter: &str,
        iso: &IcIso,
        check: guest::Check<'_>,
    ) -> Outcome<Installed> {
        use guest::windows::{exit_meaning, Exit};
        let custom = self.options.install_command.is_some();
        let command = self.installer_command(iso, true)?;
        let t = Instant::now();
        let (shown, status) = guest::windows::run_installer(
            agent,
            letter,
            &command,
            custom,
            self.options.timeout,
            &self.report.vm,
            self.progress,
            check,
        )
        .inspect_err(|e| self.agent_gone |= guest::agent_gone(e))?;
        self.report.installer = Some(InstallerRun {
            command: shown,
            exit_code: status.exit_code,
            signal: status.signal,
            stdout: status.stdout.clone(),
            stderr: status.stderr.clone(),
            ms: t.elapsed().as_millis() as u64,
        });
        match exit_meaning(status.exit_code) {
            Exit::Installed => Ok(Installed::ByAgent),
            Exit::RebootRequired => {
                self.report.reboot_required = true;
                Ok(Installed::ByAgent)
            }
            Exit::Failed(why) => Err(Failure::msg(
                HResult::DispException,
                format!(
                    "the installer failed (exit code {why}): {}",
                    status.stderr.trim().lines().last().unwrap_or("no output")
                ),
            )),
        }
    }

    /// Reboot through the agent, then wait until the agent has gone and come back with
    /// the guest, within -TimeoutSec.
    fn restart_guest(
        &mut self,
        hv: &dyn Hypervisor,
        mut agent: Box<dyn GuestAgent>,
    ) -> Outcome<()> {
        agent
            .reboot()
            .context("asking the guest to restart (guest-shutdown)")?;
        let deadline = Instant::now() + self.options.timeout;
        let gave_up = |op: &mut Self, what: &str| {
            op.report.restarted = Some(false);
            Failure::msg(
                HResult::DispException,
                format!(
                    "the guest {what} within {}s of the restart request",
                    op.options.timeout.as_secs()
                ),
            )
        };
        // The old connection answers until the agent stops with the guest.
        while agent.os_info().is_ok() {
            self.options
                .cancel
                .check()
                .or_hresult(HResult::DispException)?;
            if Instant::now() >= deadline {
                return Err(gave_up(self, "did not go down"));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        drop(agent);
        loop {
            self.options
                .cancel
                .check()
                .or_hresult(HResult::DispException)?;
            if let Ok(Some(mut a)) = hv.agent(&self.report.vm) {
                if let Ok(info) = a.os_info() {
                    self.report.guest_os = Some(info);
                    self.report.restarted = Some(true);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(gave_up(self, "agent did not come back"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Media of no known family has no installer: it goes in for the guest's autorun,
    /// unless `-InstallCommand` says what to run on it.
    fn agent_for_media(
        &mut self,
        agent: Option<Box<dyn GuestAgent>>,
        iso: &IcIso,
    ) -> Option<Box<dyn GuestAgent>> {
        if iso.family != Family::Other || self.options.install_command.is_some() {
            return agent;
        }
        self.report.note(format!(
            "{} is ISO 9660 of no known IC family: inserted for the guest's autorun \
             (-InstallCommand runs a command on it instead)",
            iso.path.display()
        ));
        self.autorun_mode()
    }

    /// The family's installed version, where the guest can tell it. The guest already
    /// running the media's version is left alone (unless -Force): `Some(message)`.
    fn check_version(
        &mut self,
        agent: &mut dyn GuestAgent,
        iso: &IcIso,
    ) -> Outcome<Option<String>> {
        let (Some(probe), Some(want)) = (self.verify_command(iso), iso.version.clone()) else {
            return Ok(None);
        };
        let before = guest::read_version(agent, &probe).context("reading the installed version")?;
        self.report.version_before = before.clone();
        match before {
            Some(v) if guest::same_version(&v, &want) && !self.options.force => {
                self.report.verified = Some(true);
                Ok(Some(format!(
                    "already up to date: the guest runs {} {v}; nothing was mounted (-Force reinstalls)",
                    iso.name
                )))
            }
            _ => Ok(None),
        }
    }

    /// After an installer that reported success: does the guest now run the media's
    /// version? A readable, different version is a failed install.
    fn verify_version(&mut self, agent: &mut dyn GuestAgent, iso: &IcIso) -> Outcome<()> {
        let (Some(probe), Some(want)) = (self.verify_command(iso), iso.version.clone()) else {
            return Ok(());
        };
        let after = guest::read_version(agent, &probe).context("reading the installed version")?;
        self.report.version_after = after.clone();
        match after {
            Some(v) if !guest::same_version(&v, &want) => {
                self.report.verified = Some(false);
                Err(Failure::msg(
                    HResult::DispException,
                    format!("installer reported success but the guest still runs {} {v} (expected {want})", iso.name),
                ))
            }
            Some(_) => {
                self.report.verified = Some(true);
                Ok(())
            }
            None => {
                self.report.note(format!(
                    "the installed version cannot be read after the install ({probe} tells nothing)"
                ));
                Ok(())
            }
        }
    }

    /// The command that prints the installed version; `-InstallCommand` installs
    /// something else, so nothing is verified then.
    fn verify_command(&self, iso: &IcIso) -> Option<Probe> {
        if self.options.install_command.is_some() {
            return None;
        }
        iso.recipe.version_probe(self.guest_is_windows())
    }

    /// Run one step: progress, timing, and its failure into the report. After a cancel
    /// request only clean-up steps start.
    fn run<T>(&mut self, step: Step, f: impl FnOnce(&mut Self) -> Outcome<T>) -> Option<T> {
        if let (Err(stop), false) = (self.options.cancel.check(), step.is_cleanup()) {
            self.report.fail(Failure::new(
                HResult::DispException,
                anyhow::Error::new(stop).context(format!("before {}", step.name())),
            ));
            return None;
        }
        self.progress.phase(&self.report.vm, step.name());
        tracing::debug!(vm = %self.report.vm, step = step.name(), "step");
        let t = Instant::now();
        let result = f(self);
        self.report.phases.push(PhaseTiming {
            phase: step.name(),
            ms: t.elapsed().as_millis() as u64,
        });
        result.map_err(|f| self.report.fail(f)).ok()
    }

    fn check_running(&mut self, vm: &mut dyn VmControl) -> Outcome<()> {
        // A monitor that floods is there and misbehaving, not a stopped VM.
        let state = match vm.run_state() {
            Err(e @ CallError::TooLong(_)) => {
                return Err(Failure::new(
                    HResult::DispException,
                    anyhow::Error::new(e).context("query-status"),
                ))
            }
            r => r
                .context("query-status")
                .or_hresult(HResult::VmNotRunning)?,
        };
        if state != "running" {
            return Err(Failure::msg(
                HResult::VmNotRunning,
                format!("VM {:?} is {state}, not running", self.report.vm),
            ));
        }
        Ok(())
    }

    /// The agent, when the install runs through it. Without an answering agent (or for
    /// -NoWait, or a Windows guest) the operation falls back to autorun, like the
    /// original; the agent still tells the guest's OS when it can.
    fn connect_agent(&mut self, hv: &dyn Hypervisor) -> Option<Box<dyn GuestAgent>> {
        let mut agent = match hv.agent(&self.report.vm) {
            Ok(Some(agent)) => agent,
            Ok(None) => return self.autorun_mode(),
            Err(_) if self.options.no_wait => return self.autorun_mode(),
            Err(e) => {
                self.report.note(format!(
                    "guest agent does not answer ({}); falling back to autorun",
                    chain(&e)
                ));
                return self.autorun_mode();
            }
        };
        match agent.os_info() {
            Ok(info) => self.report.guest_os = Some(info),
            Err(e) => self
                .report
                .note(format!("guest-get-osinfo failed: {}", chain(&e))),
        }
        if self.options.no_wait {
            return self.autorun_mode();
        }
        self.report.mode = Some(Mode::Agent);
        Some(agent)
    }

    fn autorun_mode(&mut self) -> Option<Box<dyn GuestAgent>> {
        self.report.mode = Some(Mode::Autorun);
        None
    }

    /// The guest's OS (from the agent) decides the family; plugins may change the choice.
    fn locate_iso(&mut self) -> Outcome<IcIso> {
        let kind = GuestKind::of(self.report.guest_os.as_ref());
        let mut selection = iso::survey(self.settings, self.options.iso.as_deref(), kind);
        if let Some(plugins) = &self.options.plugins {
            plugins.check_admitted()?;
            plugins.apply_policy(
                &self.report.vm,
                self.report.guest_os.as_ref(),
                self.report.mode == Some(Mode::Autorun),
                &mut selection,
                &mut self.report.plugins,
            )?;
        }
        let iso = iso::finish(&selection, self.settings.digest_cache.as_deref())?;
        tracing::info!(vm = %self.report.vm, iso = %iso.path.display(), "chose: {}", iso.reason);
        let r = &mut self.report;
        r.iso = Some(iso.path.display().to_string());
        r.iso_volume_id = Some(iso.volume_id.clone());
        r.iso_source = Some(iso.source.clone());
        r.iso_family = Some(iso.family.as_str().to_owned());
        r.iso_version = iso.version.clone();
        r.iso_reason = Some(iso.reason.clone());
        r.components = Some(Components {
            family: iso.family.as_str().to_owned(),
            name: iso.name.clone(),
            version: iso.version.clone().unwrap_or_else(|| "unknown".into()),
        });
        if kind == GuestKind::Windows && r.mode == Some(Mode::Autorun) {
            let machine = r.guest_os.as_ref().and_then(|o| o.machine.as_deref());
            if let Some(cmd) = iso.recipe.windows_for(machine.unwrap_or("x86_64")) {
                r.note(format!("unattended command for this media: {cmd}"));
            }
        }
        Ok(iso)
    }

    /// An empty drive, else (with -ReplaceMedia and an agent) the first occupied one.
    fn choose_drive(&mut self, vm: &mut dyn VmControl, has_agent: bool) -> Outcome<Plan> {
        let name = &self.report.vm;
        let drives = vm
            .dvd_drives()
            .context("query-block")
            .or_hresult(HResult::DispException)?;
        if let Some(empty) = drives.iter().find(|d| d.is_empty()) {
            self.report.drive = Some(empty.id.clone());
            return Ok(Plan {
                drive: empty.clone(),
                borrow: None,
            });
        }
        let Some(occupied) = drives.first() else {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!("VM {name:?} has no CD/DVD drive"),
            ));
        };
        let media = occupied.media.clone();
        let file = media.as_ref().map(|m| m.file.as_str()).unwrap_or("?");
        if !self.options.replace_media {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!(
                    "every CD/DVD drive of VM {name:?} holds media (drive {} has {file}); \
                     use -ReplaceMedia to borrow it",
                    occupied.id,
                ),
            ));
        }
        if !has_agent {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!(
                    "every CD/DVD drive of VM {name:?} holds media, and -ReplaceMedia needs the \
                     guest agent: in autorun mode the IC media stays in, so the borrowed media \
                     could not be put back"
                ),
            ));
        }
        if !vm.can_restore(occupied) {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!(
                    "every CD/DVD drive of VM {name:?} holds media, and drive {} holds {file}, \
                     which vmguest cannot put back exactly as it is, so it is not borrowed",
                    occupied.id,
                ),
            ));
        }
        self.report.drive = Some(occupied.id.clone());
        Ok(Plan {
            drive: occupied.clone(),
            borrow: media,
        })
    }

    /// A veto here ends the operation before the VM is touched.
    fn pre_install(&mut self, iso: &IcIso) -> Outcome<()> {
        if let Some(plugins) = self.options.plugins.clone() {
            let ctx = context::install_context(
                &self.report.vm,
                self.report.guest_os.as_ref(),
                Some(context::iso_info(iso, iso.sha256.wait()?)),
                self.options.what_if,
            );
            plugins.pre_install(&ctx, &mut self.report.plugins)?;
        }
        Ok(())
    }

    /// Borrow the user's media if the plan says so, then insert the IC media. If the
    /// insert fails, the borrowed media goes straight back. Both are journaled first.
    fn mount(&mut self, vm: &mut dyn VmControl, plan: Plan, iso: &IcIso) -> Option<Mounted> {
        let ic = self.run(Step::StageIso, |_| {
            vm.stage_iso(&iso.file, &iso.path)
                .with_context(|| format!("handing {} to the hypervisor", iso.path.display()))
                .or_hresult(HResult::DispException)
        })?;
        let borrowed = self
            .run(Step::Journal, |op| op.journal(&plan, &ic, iso))
            .and_then(|()| match plan.borrow {
                Some(media) => self.run(Step::BorrowMedia, |op| {
                    op.borrow_media(vm, &plan.drive, media)
                }),
                None => Some(None),
            });
        let Some(borrowed) = borrowed else {
            self.unstage(vm, &ic);
            return None;
        };
        let mounted = Mounted {
            drive: plan.drive,
            ic,
            borrowed,
        };
        if self
            .run(Step::InsertIc, |_| {
                insert_ic(vm, &mounted.drive, &mounted.ic)
            })
            .is_none()
        {
            self.unstage(vm, &mounted.ic);
            if mounted.borrowed.is_some() {
                self.run(Step::RestoreMedia, |op| op.restore_media(vm, &mounted));
            }
            return None;
        }
        Some(mounted)
    }

    /// The hypervisor may let go of the staged IC ISO: it is out of the drive, or never
    /// went in. A failure only leaves a descriptor in QEMU, so it is a note.
    fn unstage(&mut self, vm: &mut dyn VmControl, ic: &Media) {
        if let Err(e) = vm.unstage_iso(ic) {
            self.report
                .note(format!("could not release {}: {}", ic.file, chain(&e)));
        }
    }

    fn borrow_media(
        &mut self,
        vm: &mut dyn VmControl,
        drive: &DvdDrive,
        media: Media,
    ) -> Outcome<Option<Media>> {
        match vm.eject_media(&drive.id) {
            Ok(()) => {
                self.report
                    .note(format!("borrowed drive {} from {}", drive.id, media.file));
                self.report.borrowed_media = Some(media.clone());
                Ok(Some(media))
            }
            Err(e @ CallError::TrayLocked(_)) => Err(Failure::new(
                HResult::MediaUnmountFail,
                anyhow::Error::new(e).context(format!(
                    "cannot borrow drive {}: the guest locked its tray; {} stays in",
                    drive.id, media.file
                )),
            )),
            Err(e) => Err(Failure::new(
                HResult::DispException,
                anyhow::Error::new(e).context(format!("ejecting {} from {}", media.file, drive.id)),
            )),
        }
    }

    /// The media stays in for the guest; make sure the VM is still there to see it. If it
    /// is not, the media comes out again.
    fn autorun(&mut self, vm: &mut dyn VmControl) -> Option<Installed> {
        self.run(Step::Autorun, |_| {
            vm.run_state()
                .context("VM went away right after inserting the media")
                .or_hresult(HResult::DispException)
        })
        .map(|_| Installed::LeftForAutorun)
    }

    /// Mount the media in the guest, run the installer, and unmount whatever happened.
    /// Between polls the VM must still run and no stop may be asked for; when the agent
    /// or the VM is gone, nothing more is asked of the guest.
    fn install_in_guest(
        &mut self,
        vm: &mut dyn VmControl,
        agent: &mut dyn GuestAgent,
        iso: &IcIso,
    ) -> Option<Installed> {
        let cancel = self.options.cancel.clone();
        let mut check = || -> anyhow::Result<()> {
            cancel.check()?;
            match vm.run_state() {
                Ok(state) if state == "running" => Ok(()),
                Ok(state) => Err(guest::VmStopped(state).into()),
                Err(e) => Err(anyhow::Error::new(e).context("QEMU stopped answering")),
            }
        };
        if self.guest_is_windows() {
            return self.install_in_windows(agent, iso, &mut check);
        }
        let mount_point = self.run(Step::PrepareGuest, |op| {
            let dev = guest::find_device(agent, &iso.pvd, MEDIA_APPEAR, &mut check)
                .inspect_err(|e| op.agent_gone |= guest::agent_gone(e))?;
            Ok(guest::mount(agent, &dev, &mut check)
                .inspect_err(|e| op.agent_gone |= guest::agent_gone(e))?)
        })?;
        let installed = self.run(Step::RunInstaller, |op| {
            op.run_installer(agent, &mount_point, iso, &mut check)
        });
        // A mount the guest keeps is not yet a failure: the eject decides.
        self.run(Step::UnmountInGuest, |op| {
            if op.agent_gone {
                op.report
                    .note("not unmounting in the guest: the guest agent or the VM is gone");
            } else if let Err(e) = guest::unmount(agent, &mount_point) {
                op.report.note(format!("{e:#}"));
            }
            Ok(())
        });
        installed
    }

    fn run_installer(
        &mut self,
        agent: &mut dyn GuestAgent,
        mount_point: &str,
        iso: &IcIso,
        check: guest::Check<'_>,
    ) -> Outcome<Installed> {
        let command = self.installer_command(iso, false)?;
        let (timeout, t) = (self.options.timeout, Instant::now());
        let (journal, entry) = (self.journal.clone(), &mut self.journaled);
        let mut started = |pid: i64| {
            // So that a run killed from here on can still be finished by the next one.
            if let (Some(journal), Some(entry)) = (&journal, entry.as_mut()) {
                entry.guest_mount = Some(mount_point.to_owned());
                entry.guest_pid = Some(pid);
                if let Err(e) = journal.record(entry) {
                    tracing::warn!("journal: {}", chain(&e));
                }
            }
        };
        let status = guest::run_installer(
            agent,
            mount_point,
            &command,
            timeout,
            &self.report.vm,
            self.progress,
            check,
            &mut started,
        )
        .inspect_err(|e| self.agent_gone |= guest::agent_gone(e))?;
        self.report.installer = Some(InstallerRun {
            command,
            exit_code: status.exit_code,
            signal: status.signal,
            stdout: status.stdout.clone(),
            stderr: status.stderr.clone(),
            ms: t.elapsed().as_millis() as u64,
        });
        if !status.succeeded() {
            return Err(Failure::msg(
                HResult::DispException,
                format!(
                    "the installer failed (exit code {}{}): {}",
                    status.exit_code.map_or("none".into(), |c| c.to_string()),
                    status
                        .signal
                        .map_or(String::new(), |s| format!(", signal {s}")),
                    status.stderr.trim().lines().last().unwrap_or("no output")
                ),
            ));
        }
        if let Some(components) = self.report.components.clone() {
            let record = InstalledComponents {
                components,
                iso_volume_id: self.report.iso_volume_id.clone().unwrap_or_default(),
                installed_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            };
            if let Err(e) = guest::record_installed(agent, &record) {
                self.report
                    .note(format!("could not record the installed version: {e:#}"));
            }
        }
        Ok(Installed::ByAgent)
    }

    /// Eject the IC media and put borrowed media back. `installed` says whether the
    /// components went in, for the message when the media cannot come out.
    fn unmount(&mut self, vm: &mut dyn VmControl, mounted: Mounted, installed: bool) -> Option<()> {
        self.run(Step::EjectIc, |op| op.eject_ic(vm, &mounted, installed))?;
        self.unstage(vm, &mounted.ic);
        if mounted.borrowed.is_some() {
            return self.run(Step::RestoreMedia, |op| op.restore_media(vm, &mounted));
        }
        // Leave the tray as it was found: eject opens it.
        if !mounted.drive.tray_open {
            if let Err(e) = vm.close_tray(&mounted.drive.id) {
                self.report.note(format!(
                    "could not close the tray of {}: {e}",
                    mounted.drive.id
                ));
            }
        }
        Some(())
    }

    fn eject_ic(&mut self, vm: &mut dyn VmControl, m: &Mounted, installed: bool) -> Outcome<()> {
        let drive = &m.drive.id;
        // Retrying only helps while the guest can still release its tray.
        let result = eject_retrying(vm, drive, !self.agent_gone);
        let Err(e) = result else {
            return Ok(());
        };
        let hresult = match e {
            CallError::TrayLocked(_) => HResult::MediaUnmountFail,
            _ => HResult::DispException,
        };
        let what = match (&self.report.components, installed) {
            (Some(c), true) => format!(
                "{} {} were installed, but the IC media is still in drive {drive}",
                c.name, c.version
            ),
            _ => format!("the IC media is still in drive {drive}"),
        };
        let borrowed = match &m.borrowed {
            Some(media) => {
                self.report.media_restored = Some(false);
                format!("; borrowed media {} could not be put back", media.file)
            }
            None => String::new(),
        };
        Err(Failure::new(
            hresult,
            anyhow::Error::new(e).context(format!("{what}{borrowed}")),
        ))
    }

    /// Put the borrowed media back and check, through the hypervisor, that it is there.
    fn restore_media(&mut self, vm: &mut dyn VmControl, m: &Mounted) -> Outcome<()> {
        let Some(media) = &m.borrowed else {
            return Ok(());
        };
        let drive = &m.drive.id;
        let result = vm
            .insert_media(drive, media)
            .map_err(anyhow::Error::new)
            .and_then(|()| {
                let now = vm
                    .dvd_drives()?
                    .into_iter()
                    .find(|d| d.id == *drive)
                    .and_then(|d| d.media);
                anyhow::ensure!(
                    now.as_ref().map(|m| &m.file) == Some(&media.file),
                    "drive {drive} holds {:?} after restoring",
                    now.map(|m| m.file)
                );
                Ok(())
            });
        self.report.media_restored = Some(result.is_ok());
        result
            .with_context(|| format!("putting borrowed media {} back into {drive}", media.file))
            .or_hresult(HResult::DispException)
    }

    /// Post-install hooks see the sealed outcome. Their failure becomes the outcome if
    /// the install itself succeeded; what was installed stays in the report.
    fn post_install(&mut self) {
        let Some(plugins) = self.options.plugins.clone() else {
            return;
        };
        let ctx = context::install_context_of(&self.report);
        let outcome = context::outcome(&self.report);
        let records = &mut self.report.plugins;
        let failure = catch_unwind(AssertUnwindSafe(|| {
            plugins.post_install(&ctx, &outcome, records)
        }))
        .unwrap_or_else(|panic| Some(panicked(panic.as_ref())));
        if let Some(f) = failure {
            let message = self.report.message.clone();
            self.report.fail(f);
            self.report.seal(message);
        }
    }

    fn what_if_message(&self, plan: &Plan) -> String {
        let drive = &plan.drive.id;
        let iso = self.report.iso.clone().unwrap_or_default();
        let how = match self.report.mode {
            Some(Mode::Agent) => "run its installer through the guest agent, then eject it",
            _ => "leave it for the guest's autorun",
        };
        let borrow = if plan.borrow.is_some() {
            " (borrowing its media, to be put back afterwards)"
        } else {
            ""
        };
        let why = self
            .report
            .iso_reason
            .as_deref()
            .map(|r| format!(" (chosen: {r})"))
            .unwrap_or_default();
        format!("What if: would insert {iso}{why} into drive {drive}{borrow} and {how}")
    }

    fn autorun_message(&self, m: &Mounted) -> String {
        let iso = self.report.iso.clone().unwrap_or_default();
        format!(
            "inserted {iso} into drive {}; the guest must run setup itself (autorun)",
            m.drive.id
        )
    }

    fn installed_message(&self) -> String {
        let iso = self.report.iso.clone().unwrap_or_default();
        let drive = self.report.drive.clone().unwrap_or_default();
        let c = self.report.components.as_ref();
        let after = match (&self.report.borrowed_media, self.report.media_restored) {
            (Some(user), Some(true)) => format!("drive {drive} holds {} again", user.file),
            _ => format!("drive {drive} is empty again"),
        };
        format!(
            "installed {} {} from {iso}; {after}",
            c.map(|c| c.name.as_str()).unwrap_or("components"),
            c.map(|c| c.version.as_str()).unwrap_or("")
        )
    }
}

/// How the components reached the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Installed {
    /// The installer ran through the agent and succeeded.
    ByAgent,
    /// The media stays in for the guest's own setup.
    LeftForAutorun,
}

/// Eject without force; with `retry`, give a guest that is letting go of a locked tray
/// a few seconds to do so.
fn eject_retrying(vm: &mut dyn VmControl, drive: &str, retry: bool) -> Result<(), CallError> {
    let give_up = Instant::now() + EJECT_RETRY;
    loop {
        match vm.eject_media(drive) {
            Err(CallError::TrayLocked(_)) if retry && Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(300))
            }
            other => return other,
        }
    }
}

fn insert_ic(vm: &mut dyn VmControl, drive: &DvdDrive, ic: &Media) -> Outcome<()> {
    vm.insert_media(&drive.id, ic)
        .with_context(|| format!("inserting {} into drive {}", ic.file, drive.id))
        .or_hresult(HResult::DispException)
}
