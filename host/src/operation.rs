//! `InstallIntegrationComponents` as a state machine.
//!
//! ```text
//! Connect → CheckRunning → ConnectAgent → LocateIso → PreInstall → ChooseDrive → [BorrowMedia] → InsertIc
//!   ├─ no agent / -NoWait ─────────────────────────────────────────────────→ Autorun → Done
//!   └─ PrepareGuest → RunInstaller → UnmountInGuest → EjectIc → [RestoreMedia] → Done
//! ```
//!
//! Each step returns the next one. On failure the step names where clean-up resumes, so
//! once anything in the VM changed, the IC media comes out and borrowed media goes back
//! on every path. The first failure decides the outcome; later ones become notes.
//!
//! Plugins (`crate::plugin`) join at three points: the iso-policy plugins in LocateIso,
//! the pre-install hooks in PreInstall (before the VM is touched), and the post-install
//! hooks after Done, with the outcome.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::config::GuestKind;
use crate::guest::{self, InstalledComponents};
use crate::hresult::{Failure, HResult, OrHResult, Outcome};
use crate::inventory::{Inventory, VmEntry};
use crate::iso::{self, IcIso};
use crate::manifest::Components;
use crate::plugin::PluginSet;
use crate::progress::Progress;
use crate::report::{InstallReport, InstallerRun, Mode, PhaseTiming};
use crate::vm::{is_locked_refusal, DvdDrive, GuestAgent, Media, VmControl};

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
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Connect,
    CheckRunning,
    ConnectAgent,
    LocateIso,
    PreInstall,
    ChooseDrive,
    BorrowMedia,
    InsertIc,
    Autorun,
    PrepareGuest,
    RunInstaller,
    UnmountInGuest,
    EjectIc,
    RestoreMedia,
    Done,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::CheckRunning => "check-running",
            Step::ConnectAgent => "connect-agent",
            Step::LocateIso => "locate-iso",
            Step::PreInstall => "pre-install",
            Step::ChooseDrive => "choose-drive",
            Step::BorrowMedia => "borrow-media",
            Step::InsertIc => "insert-ic",
            Step::Autorun => "autorun",
            Step::PrepareGuest => "prepare-guest",
            Step::RunInstaller => "run-installer",
            Step::UnmountInGuest => "unmount-in-guest",
            Step::EjectIc => "eject-ic",
            Step::RestoreMedia => "restore-media",
            Step::Done => "done",
        }
    }
}

/// How long freshly inserted media may take to show up in the guest.
const MEDIA_APPEAR: Duration = Duration::from_secs(30);
/// How long an unlocked tray may take to let go after the guest unmounts.
const EJECT_RETRY: Duration = Duration::from_secs(3);

struct Operation<'a> {
    inventory: &'a Inventory,
    options: &'a InstallOptions,
    progress: &'a dyn Progress,
    report: InstallReport,
    entry: Option<VmEntry>,
    vm: Option<Box<dyn VmControl>>,
    agent: Option<Box<dyn GuestAgent>>,
    iso: Option<IcIso>,
    drive: Option<DvdDrive>,
    borrowed: Option<Media>,
    ic_inserted: bool,
    mount_point: Option<String>,
    installed: bool,
}

/// Run the whole operation for one VM. Never panics on bad input; every path ends in a
/// report whose `result` is one of the seven documented outcomes.
pub fn install(
    inventory: &Inventory,
    vm_name: &str,
    options: &InstallOptions,
    progress: &dyn Progress,
) -> InstallReport {
    let started = Instant::now();
    let mut op = Operation {
        inventory,
        options,
        progress,
        report: InstallReport::new(vm_name),
        entry: None,
        vm: None,
        agent: None,
        iso: None,
        drive: None,
        borrowed: None,
        ic_inserted: false,
        mount_point: None,
        installed: false,
    };
    op.report.what_if = options.what_if;
    let mut step = Step::Connect;
    while step != Step::Done {
        progress.phase(vm_name, step.name());
        tracing::debug!(vm = vm_name, step = step.name(), "step");
        let t = Instant::now();
        let result = op.run(step);
        op.report.phases.push(PhaseTiming {
            phase: step.name(),
            ms: t.elapsed().as_millis() as u64,
        });
        step = match result {
            Ok(next) => next,
            Err(f) => {
                op.report.fail(f);
                op.resume_after_failure(step)
            }
        };
    }
    progress.finished(vm_name);
    op.report.total_ms = started.elapsed().as_millis() as u64;
    let message = op.success_message();
    op.report.seal(message.clone());
    if !options.what_if {
        op.post_install(message);
    }
    op.report
}

impl Operation<'_> {
    fn run(&mut self, step: Step) -> Outcome<Step> {
        match step {
            Step::Connect => self.connect(),
            Step::CheckRunning => self.check_running(),
            Step::ConnectAgent => self.connect_agent(),
            Step::LocateIso => self.locate_iso(),
            Step::PreInstall => self.pre_install(),
            Step::ChooseDrive => self.choose_drive(),
            Step::BorrowMedia => self.borrow_media(),
            Step::InsertIc => self.insert_ic(),
            Step::Autorun => self.autorun(),
            Step::PrepareGuest => self.prepare_guest(),
            Step::RunInstaller => self.run_installer(),
            Step::UnmountInGuest => self.unmount_in_guest(),
            Step::EjectIc => self.eject_ic(),
            Step::RestoreMedia => self.restore_media(),
            Step::Done => Ok(Step::Done),
        }
    }

    /// Where clean-up resumes after `step` failed.
    fn resume_after_failure(&self, step: Step) -> Step {
        match step {
            Step::PrepareGuest | Step::RunInstaller => Step::UnmountInGuest,
            Step::InsertIc | Step::Autorun if self.ic_inserted => Step::EjectIc,
            Step::InsertIc if self.borrowed.is_some() => Step::RestoreMedia,
            _ => Step::Done,
        }
    }

    fn vm(&mut self) -> &mut dyn VmControl {
        self.vm.as_deref_mut().expect("connected before use")
    }

    fn drive_id(&self) -> String {
        self.drive
            .as_ref()
            .map(|d| d.id.clone())
            .unwrap_or_default()
    }

    fn connect(&mut self) -> Outcome<Step> {
        let entry = self.inventory.entry(&self.report.vm)?;
        self.vm = Some(self.inventory.connect(&entry)?);
        self.entry = Some(entry);
        Ok(Step::CheckRunning)
    }

    fn check_running(&mut self) -> Outcome<Step> {
        let name = self.report.vm.clone();
        let state = self
            .vm()
            .run_state()
            .context("query-status")
            .or_hresult(HResult::VmNotRunning)?;
        if state != "running" {
            return Err(Failure::msg(
                HResult::VmNotRunning,
                format!("VM {name:?} is {state}, not running"),
            ));
        }
        Ok(Step::ConnectAgent)
    }

    /// The guest's OS (from the agent) decides the family.
    fn locate_iso(&mut self) -> Outcome<Step> {
        let kind = GuestKind::of(self.report.guest_os.as_ref());
        let mut selection = iso::survey(self.options.iso.as_deref(), kind);
        if let Some(plugins) = &self.options.plugins {
            plugins.check_admitted()?;
            plugins.apply_policy(
                &self.report.vm,
                self.report.guest_os.as_ref(),
                &mut selection,
                &mut self.report.plugins,
            )?;
        }
        let iso = iso::finish(&selection)?;
        tracing::info!(vm = %self.report.vm, iso = %iso.path.display(), "chose: {}", iso.reason);
        self.report.iso = Some(iso.path.display().to_string());
        self.report.iso_volume_id = Some(iso.volume_id.clone());
        self.report.iso_source = Some(iso.source.clone());
        self.report.iso_family = Some(iso.family.as_str().to_owned());
        self.report.iso_version = iso.version.clone();
        self.report.iso_sha256 = Some(iso.sha256.clone());
        self.report.iso_reason = Some(iso.reason.clone());
        self.report.components = Some(Components {
            family: iso.family.as_str().to_owned(),
            name: iso.name.clone(),
            version: iso.version.clone().unwrap_or_else(|| "unknown".into()),
        });
        if self.report.mode == Some(Mode::Autorun) {
            if let Some(cmd) = iso
                .recipe
                .windows_for(
                    self.report
                        .guest_os
                        .as_ref()
                        .and_then(|o| o.machine.as_deref())
                        .unwrap_or("x86_64"),
                )
                .filter(|_| kind == GuestKind::Windows)
            {
                self.report
                    .note(format!("unattended command for this media: {cmd}"));
            }
        }
        self.iso = Some(iso);
        Ok(Step::PreInstall)
    }

    /// A veto here ends the operation before the VM is touched.
    fn pre_install(&mut self) -> Outcome<Step> {
        if let Some(plugins) = self.options.plugins.clone() {
            let ctx = self.plugin_context();
            plugins.pre_install(&ctx, &mut self.report.plugins)?;
        }
        Ok(Step::ChooseDrive)
    }

    fn plugin_context(
        &self,
    ) -> crate::plugin::bindings::v0_2::vmguest::plugin::types::InstallContext {
        crate::plugin::context::install_context(
            &self.report.vm,
            self.report.guest_os.as_ref(),
            self.iso.as_ref(),
            self.options.what_if,
        )
    }

    /// Post-install hooks see the sealed outcome. Their failure becomes the outcome if
    /// the install itself succeeded; what was installed stays in the report.
    fn post_install(&mut self, success_message: String) {
        let Some(plugins) = self.options.plugins.clone() else {
            return;
        };
        let ctx = self.plugin_context();
        let outcome = crate::plugin::context::outcome(&self.report);
        if let Some(f) = plugins.post_install(&ctx, &outcome, &mut self.report.plugins) {
            self.report.fail(f);
            self.report.seal(success_message);
        }
    }

    /// Without an answering agent the operation falls back to autorun, like the original.
    fn connect_agent(&mut self) -> Outcome<Step> {
        let entry = self.entry.clone().expect("resolved");
        match self.inventory.agent(&entry) {
            Ok(Some(mut agent)) => {
                match agent.os_info() {
                    Ok(info) => self.report.guest_os = Some(info),
                    Err(e) => self.report.note(format!("guest-get-osinfo failed: {e}")),
                }
                let windows = self
                    .report
                    .guest_os
                    .as_ref()
                    .is_some_and(|o| o.is_windows());
                if self.options.no_wait {
                    self.report.mode = Some(Mode::Autorun);
                } else if windows {
                    self.report.note(
                        "unattended install is implemented for Linux guests only; \
                         inserting the media for the guest's autorun",
                    );
                    self.report.mode = Some(Mode::Autorun);
                } else {
                    self.agent = Some(agent);
                    self.report.mode = Some(Mode::Agent);
                }
            }
            Ok(None) => self.report.mode = Some(Mode::Autorun),
            Err(_) if self.options.no_wait => self.report.mode = Some(Mode::Autorun),
            Err(e) => {
                self.report.note(format!(
                    "guest agent does not answer ({e}); falling back to autorun"
                ));
                self.report.mode = Some(Mode::Autorun);
            }
        }
        Ok(Step::LocateIso)
    }

    fn choose_drive(&mut self) -> Outcome<Step> {
        let name = self.report.vm.clone();
        let drives = self
            .vm()
            .dvd_drives()
            .context("query-block")
            .or_hresult(HResult::DispException)?;
        if let Some(empty) = drives.iter().find(|d| d.is_empty()) {
            self.report.drive = Some(empty.id.clone());
            self.drive = Some(empty.clone());
            return self.unless_what_if(Step::InsertIc);
        }
        let Some(occupied) = drives.first() else {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!("VM {name:?} has no CD/DVD drive"),
            ));
        };
        if !self.options.replace_media {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!(
                    "every CD/DVD drive of VM {name:?} holds media (drive {} has {}); \
                     use -ReplaceMedia to borrow it",
                    occupied.id,
                    occupied
                        .media
                        .as_ref()
                        .map(|m| m.file.as_str())
                        .unwrap_or("?")
                ),
            ));
        }
        if self.agent.is_none() {
            return Err(Failure::msg(
                HResult::DriveInvalid,
                format!(
                    "every CD/DVD drive of VM {name:?} holds media, and -ReplaceMedia needs the \
                     guest agent: in autorun mode the IC media stays in, so the borrowed media \
                     could not be put back"
                ),
            ));
        }
        self.report.drive = Some(occupied.id.clone());
        self.drive = Some(occupied.clone());
        self.unless_what_if(Step::BorrowMedia)
    }

    fn unless_what_if(&self, next: Step) -> Outcome<Step> {
        Ok(if self.options.what_if {
            Step::Done
        } else {
            next
        })
    }

    fn borrow_media(&mut self) -> Outcome<Step> {
        let drive = self.drive.clone().expect("chosen");
        let media = drive.media.clone().expect("occupied");
        match self.vm().eject_media(&drive.id) {
            Ok(()) => {
                self.report
                    .note(format!("borrowed drive {} from {}", drive.id, media.file));
                self.report.borrowed_media = Some(media.clone());
                self.borrowed = Some(media);
                Ok(Step::InsertIc)
            }
            Err(e) if is_locked_refusal(&e) => Err(Failure::new(
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

    fn insert_ic(&mut self) -> Outcome<Step> {
        let iso = self.iso.clone().expect("located");
        let drive = self.drive_id();
        let media = Media {
            file: iso.path.display().to_string(),
            format: "raw".into(),
            read_only: true,
        };
        self.vm()
            .insert_media(&drive, &media)
            .with_context(|| format!("inserting {} into drive {drive}", media.file))
            .or_hresult(HResult::DispException)?;
        self.ic_inserted = true;
        Ok(if self.agent.is_some() {
            Step::PrepareGuest
        } else {
            Step::Autorun
        })
    }

    /// The media stays in for the guest; make sure the VM is still there to see it.
    fn autorun(&mut self) -> Outcome<Step> {
        self.vm()
            .run_state()
            .context("VM went away right after inserting the media")
            .or_hresult(HResult::DispException)?;
        self.ic_inserted = false;
        Ok(Step::Done)
    }

    fn agent(&mut self) -> &mut dyn GuestAgent {
        self.agent.as_deref_mut().expect("agent mode")
    }

    fn prepare_guest(&mut self) -> Outcome<Step> {
        let pvd = self.iso.as_ref().expect("located").pvd.clone();
        let dev = guest::find_device(self.agent(), &pvd, MEDIA_APPEAR)?;
        let mount_point = guest::mount(self.agent(), &dev)?;
        self.mount_point = Some(mount_point);
        Ok(Step::RunInstaller)
    }

    fn run_installer(&mut self) -> Outcome<Step> {
        let mount_point = self.mount_point.clone().expect("mounted");
        let iso = self.iso.clone().expect("located");
        let Some(command) = iso.recipe.linux.clone() else {
            return Err(Failure::msg(
                HResult::DispException,
                format!(
                    "{} {} has no unattended installer for Linux guests",
                    iso.name,
                    iso.version.as_deref().unwrap_or("")
                ),
            ));
        };
        let (vm, timeout, progress) = (self.report.vm.clone(), self.options.timeout, self.progress);
        let t = Instant::now();
        let status =
            guest::run_installer(self.agent(), &mount_point, &command, timeout, &vm, progress)?;
        let run = InstallerRun {
            command: command.clone(),
            exit_code: status.exit_code,
            signal: status.signal,
            stdout: status.stdout.clone(),
            stderr: status.stderr.clone(),
            ms: t.elapsed().as_millis() as u64,
        };
        self.report.installer = Some(run);
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
        self.installed = true;
        let record = InstalledComponents {
            components: self.report.components.clone().expect("located"),
            iso_volume_id: self.report.iso_volume_id.clone().unwrap_or_default(),
            installed_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        if let Err(e) = guest::record_installed(self.agent(), &record) {
            self.report
                .note(format!("could not record the installed version: {e:#}"));
        }
        Ok(Step::UnmountInGuest)
    }

    /// A mount the guest keeps is not yet a failure: the eject decides.
    fn unmount_in_guest(&mut self) -> Outcome<Step> {
        if let Some(mount_point) = self.mount_point.take() {
            if let Err(e) = guest::unmount(self.agent(), &mount_point) {
                self.report.note(format!("{e:#}"));
            }
        }
        Ok(Step::EjectIc)
    }

    fn eject_ic(&mut self) -> Outcome<Step> {
        let drive = self.drive.clone().expect("chosen");
        let give_up = Instant::now() + EJECT_RETRY;
        let result = loop {
            match self.vm().eject_media(&drive.id) {
                Err(e) if is_locked_refusal(&e) && Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(300))
                }
                other => break other,
            }
        };
        if let Err(e) = result {
            let hresult = if is_locked_refusal(&e) {
                HResult::MediaUnmountFail
            } else {
                HResult::DispException
            };
            let what = match (&self.report.components, self.installed) {
                (Some(c), true) => format!(
                    "{} {} were installed, but the IC media is still in drive {}",
                    c.name, c.version, drive.id
                ),
                _ => format!("the IC media is still in drive {}", drive.id),
            };
            let borrowed = self
                .borrowed
                .as_ref()
                .map(|m| format!("; borrowed media {} could not be put back", m.file))
                .unwrap_or_default();
            if self.borrowed.is_some() {
                self.report.media_restored = Some(false);
            }
            return Err(Failure::new(
                hresult,
                anyhow::Error::new(e).context(format!("{what}{borrowed}")),
            ));
        }
        self.ic_inserted = false;
        if self.borrowed.is_some() {
            return Ok(Step::RestoreMedia);
        }
        // Leave the tray as it was found: eject opens it.
        if !drive.tray_open {
            if let Err(e) = self.vm().close_tray(&drive.id) {
                self.report
                    .note(format!("could not close the tray of {}: {e}", drive.id));
            }
        }
        Ok(Step::Done)
    }

    fn restore_media(&mut self) -> Outcome<Step> {
        let media = self.borrowed.clone().expect("borrowed");
        let drive = self.drive_id();
        let result = self
            .vm()
            .insert_media(&drive, &media)
            .map_err(anyhow::Error::new)
            .and_then(|()| {
                let back = self.vm().dvd_drives()?;
                let now = back
                    .iter()
                    .find(|d| d.id == drive)
                    .and_then(|d| d.media.clone());
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
            .or_hresult(HResult::DispException)?;
        Ok(Step::Done)
    }

    fn success_message(&self) -> String {
        let drive = self.report.drive.clone().unwrap_or_default();
        let iso = self.report.iso.clone().unwrap_or_default();
        if self.options.what_if {
            let how = match self.report.mode {
                Some(Mode::Agent) => "run its installer through the guest agent, then eject it",
                _ => "leave it for the guest's autorun",
            };
            let borrow = if self.drive.as_ref().is_some_and(|d| !d.is_empty()) {
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
            return format!(
                "What if: would insert {iso}{why} into drive {drive}{borrow} and {how}"
            );
        }
        match self.report.mode {
            Some(Mode::Agent) => {
                let c = self.report.components.as_ref();
                format!(
                    "installed {} {} from {iso}; drive {drive} is empty again",
                    c.map(|c| c.name.as_str()).unwrap_or("components"),
                    c.map(|c| c.version.as_str()).unwrap_or("")
                )
            }
            _ => format!(
                "inserted {iso} into drive {drive}; the guest must run setup itself (autorun)"
            ),
        }
    }
}
