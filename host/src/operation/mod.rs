//! `InstallIntegrationComponents` as a sequence of typed steps.
//!
//! `Operation::contract` reads as the contract: resolve → check running → locate →
//! drive → pre-hooks → mount → install → unmount, and [`install`] adds the post-hooks.
//! Each step takes what it needs and hands the next one what it produced (a connected
//! VM, a located ISO, a `Plan`, the `Mounted` media), so the steps cannot run out of
//! order and no step reads state that another may not have set.
//!
//! ```text
//! resolve → lock → connect → recover → check-running → connect-agent → locate-iso
//!   → [check-version] → choose-drive → pre-install → iso-digest → stage-iso → journal
//!   → [borrow-media] → insert-ic
//!        ├─ autorun: the media stays in for the guest
//!        └─ agent:   prepare-guest → run-installer → unmount-in-guest
//!   → eject-ic → [restore-media] → [verify-version] → [restart-guest]
//! ```
//!
//! `resolve` looks the VM up once; every later step uses that handle. The steps live by
//! group: `resolve.rs`, `recovery.rs` (lock, journal, recover, `Repair-VMMedia`),
//! `connect.rs`, `locate.rs`, `versions.rs`, `drive.rs`, `hooks.rs`, `media.rs` (stage,
//! insert, eject, restore), `installer.rs`, `restart.rs`, `messages.rs`.
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

mod connect;
mod drive;
mod hooks;
mod installer;
mod locate;
mod media;
mod messages;
mod options;
mod recovery;
mod resolve;
mod restart;
mod seal;
mod step;
mod versions;

pub use options::InstallOptions;
pub use recovery::{repair, repair_target};
pub use resolve::Target;
pub use seal::{panic_text, panicked};
pub use step::Step;

use drive::Plan;
use installer::Installed;
use media::Mounted;
use seal::sealed;

use std::time::Instant;

use crate::hresult::{Failure, HResult, Outcome};
use crate::iso::manifest::Components;
use crate::journal::{self, Journal};
use crate::plugin::context;
use crate::progress::Progress;
use crate::report::{InstallReport, Mode, PhaseTiming};
use crate::settings::Settings;
use crate::vm::{GuestOsInfo, Hypervisor, Vm, VmControl};

/// Run the whole operation for one VM. Every path, including a bug that panics, ends in
/// a report whose `result` is one of the seven documented outcomes.
pub fn install(
    hypervisor: &dyn Hypervisor,
    settings: &Settings,
    vm_name: &str,
    options: &InstallOptions,
    progress: &dyn Progress,
) -> InstallReport {
    let target = Target::Named {
        hypervisor,
        name: vm_name,
    };
    install_target(target, settings, options, progress)
}

/// [`install`] on a [`Target`].
pub fn install_target(
    target: Target<'_>,
    settings: &Settings,
    options: &InstallOptions,
    progress: &dyn Progress,
) -> InstallReport {
    let vm_name = target.name().to_owned();
    let mut op = sealed(settings, options, progress, &vm_name, |op| {
        op.contract(target)
    });
    if !options.what_if {
        op.post_install();
    }
    op.report
}

struct Operation<'a> {
    settings: &'a Settings,
    options: &'a InstallOptions,
    progress: &'a dyn Progress,
    report: InstallReport,
    /// Where media changes are recorded before they are made; `None` without a state
    /// directory.
    journal: Option<Journal>,
    /// The VM's identity, for the journal and the lock ([`Vm::identity`]).
    identity: String,
    /// Its host, as journal entries name it (`Hypervisor::location`).
    location: String,
    /// The entry this run recorded, until the drive is back as it was found.
    journaled: Option<journal::Entry>,
    /// The guest agent stopped answering, or the VM stopped: ask the guest nothing more.
    agent_gone: bool,
    // What the operation decided and learnt, typed: the steps read it from here, and
    // the report gets it once, when it is sealed (`publish`).
    /// The guest's OS, as its agent tells it.
    guest_os: Option<GuestOsInfo>,
    /// How the components reach the guest; `None` until decided, or after a veto.
    mode: Option<Mode>,
    /// What goes into the guest; `None` until located, or after a veto.
    components: Option<Components>,
    /// The located and hashed ISO, for the post-install hooks.
    iso_info: Option<context::IsoInfo>,
    /// The installer asked for a restart of the guest.
    reboot_required: bool,
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
            guest_os: None,
            mode: None,
            components: None,
            iso_info: None,
            reboot_required: false,
        }
    }

    /// Put what the operation decided into the report, once, as it is sealed.
    fn publish(&mut self) {
        let r = &mut self.report;
        r.guest_os = self.guest_os.clone();
        r.mode = self.mode;
        r.components = self.components.clone();
        r.reboot_required = self.reboot_required;
    }
}

impl Operation<'_> {
    /// The contract. Returns the success message; `None` when a step failed.
    fn contract(&mut self, target: Target<'_>) -> Option<String> {
        let resolved = self.run(Step::Resolve, |op| op.resolve(target))?;
        let vm_handle = resolved.get();
        let _lock = self.run(Step::Lock, |op| op.lock())?;
        let mut vm = self.run(Step::Connect, |_| Ok(vm_handle.control()?))?;
        let vm = vm.as_mut();
        self.run(Step::Recover, |op| op.recover(vm_handle, vm))?;
        let message = self.install(vm_handle, vm);
        self.settle(vm, message.is_some() && self.mode == Some(Mode::Autorun));
        message
    }

    /// From a connected, recovered VM to the installed components.
    fn install(&mut self, vm_handle: &dyn Vm, vm: &mut dyn VmControl) -> Option<String> {
        self.run(Step::CheckRunning, |op| op.check_running(vm))?;
        let agent = self.run(Step::ConnectAgent, |op| Ok(op.connect_agent(vm_handle)))?;
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
            self.mode = None;
            self.components = None;
            return None;
        }
        let sha256 = self.run(Step::IsoDigest, |_| iso.sha256.wait())?;
        self.iso_info = Some(context::iso_info(&iso, sha256.clone()));
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
        if self.reboot_required {
            match agent {
                Some(a) if self.options.restart => {
                    self.run(Step::RestartGuest, |op| op.restart_guest(vm_handle, a))?
                }
                _ => self
                    .report
                    .note("the installer asks for a restart of the guest (-Restart does it)"),
            }
        }
        Some(self.installed_message())
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
}
