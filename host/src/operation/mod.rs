//! `InstallIntegrationComponents` as a sequence of typed steps.
//!
//! `Operation::contract` reads as the contract: resolve → check running → locate →
//! drive → pre-hooks → mount → run the installer → unmount, and [`install_target`] adds
//! the post-hooks.
//! Each step takes what it needs and hands the next one what it produced (a connected
//! VM, a located ISO, a `Plan`, the `Mounted` media), so the steps cannot run out of
//! order and no step reads state that another may not have set.
//!
//! ```text
//! resolve → lock → connect → recover → check-running → connect-agent → locate-iso
//!   → [check-version] → choose-drive → pre-install → iso-digest → stage-iso → journal
//!   → [borrow-media] → insert-ic
//!        ├─ autorun: the media stays in for the guest
//!        └─ agent:   (monitor let go) prepare-guest → run-installer → unmount-in-guest
//!   → eject-ic → [restore-media] → [verify-version] → [restart-guest]
//! ```
//!
//! `connect-agent` waits up to `-AgentWaitSec` for an agent whose channel is there but
//! silent, and refuses an agent with the calls the install needs switched off
//! (`agent_calls.rs`). An agent restarted under the installer leaves the outcome to
//! `verify-version` (`versions.rs`).
//!
//! Across the agent's long wait no monitor connection is held ([`VmControl::release`]):
//! the hypervisor's own tools may need it meanwhile, and the next media step connects
//! again.
//!
//! `resolve` looks the VM up once; every later step uses that handle. The steps live by
//! group: `resolve.rs`, `recovery.rs` (lock, journal, recover, `Repair-VMMedia`),
//! `connect.rs`, `locate.rs`, `versions.rs`, `drive.rs`, `hooks.rs`, `media.rs` (stage,
//! insert, eject, restore), `installer.rs`, `restart.rs`, `messages.rs`. What the steps
//! decide and learn is typed in `state.rs`; the report is built from it once, as the run
//! is sealed (`seal.rs`).
//!
//! `locate-iso` opens the chosen ISO and takes its SHA-256 from the digest cache, or starts
//! hashing it on its own thread; `iso-digest` waits for that hash, so a cold hash runs
//! beside the drive and hook steps and never after the VM was touched.
//!
//! `stage-iso` hands the hypervisor that same opened file (QMP `add-fd`), so what the
//! guest gets is what was checked and hashed, whatever a plugin did to the path since.
//!
//! Once anything in the VM changed, the IC media comes out and borrowed media goes back
//! on every path. Every failure is recorded; the first decides the outcome and later ones
//! (usually from clean-up) become notes. A step that stops the operation returns `None`,
//! so `?` reads as "stopped, the reason is recorded".
//!
//! The operation never panics to its caller: a panic inside it becomes
//! DISP_E_EXCEPTION, like any other unexpected error.

mod agent_calls;
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
mod state;
mod step;
mod versions;

pub use options::{InstallOptions, DEFAULT_AGENT_WAIT};
pub use recovery::repair_target;
pub use resolve::Target;
pub use seal::{panic_text, panicked};
pub use step::Step;

use drive::Plan;
use installer::Delivery;
use media::Mounted;
use resolve::Handle;
use seal::sealed;
use state::State;

use std::time::Instant;

use crate::hresult::{Failure, HResult, Outcome};
use crate::journal::{self, Journal};
use crate::lock::VmLock;
use crate::progress::Progress;
use crate::report::{InstallReport, Mode, PhaseTiming};
use crate::settings::Settings;
use crate::vm::{Hypervisor, Vm, VmControl};

/// `InstallIntegrationComponents` on the VM named `vm_name`: [`install_target`] on a
/// [`Target::Named`].
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

/// Run the whole operation for one VM, then the post-install hooks. Every path,
/// including a bug that panics, ends in a report whose `result` is one of the seven
/// documented outcomes.
pub fn install_target(
    target: Target<'_>,
    settings: &Settings,
    options: &InstallOptions,
    progress: &dyn Progress,
) -> InstallReport {
    let (op, mut report) = sealed(target, settings, options, progress, Operation::contract);
    if !options.what_if {
        op.post_install(&mut report);
    }
    report
}

/// A VM [`Operation::reach`]ed: its handle, the lock held for the run, its monitor.
type Reached<'t> = (Handle<'t>, Option<VmLock>, Box<dyn VmControl>);

struct Operation<'a> {
    settings: &'a Settings,
    options: &'a InstallOptions,
    progress: &'a dyn Progress,
    /// The VM's name, as the run was asked for it.
    vm: String,
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
    /// The guest agent restarted while the installer ran: its exit status is lost, and
    /// only the installed version can tell the outcome.
    agent_restarted: bool,
    /// What the operation decided and learnt: the steps read it from here, and the
    /// report gets it once, when it is sealed.
    state: State,
}

impl<'a> Operation<'a> {
    fn new(
        settings: &'a Settings,
        options: &'a InstallOptions,
        progress: &'a dyn Progress,
        vm: &str,
    ) -> Operation<'a> {
        Operation {
            settings,
            options,
            progress,
            vm: vm.to_owned(),
            journal: settings.state_dir.as_deref().map(Journal::new),
            identity: String::new(),
            location: String::new(),
            journaled: None,
            agent_gone: false,
            agent_restarted: false,
            state: State::default(),
        }
    }
}

impl Operation<'_> {
    /// The contract. Returns the success message; `None` when a step failed.
    fn contract(&mut self, target: Target<'_>) -> Option<String> {
        let (resolved, _lock, mut vm) = self.reach(target)?;
        let vm_handle = resolved.get();
        let vm = vm.as_mut();
        self.run(Step::Recover, |op| op.recover(vm_handle, vm))?;
        let message = self.deliver(vm_handle, vm);
        let left_for_autorun = message.is_some() && self.state.mode == Some(Mode::Autorun);
        self.settle(vm, left_for_autorun);
        message
    }

    /// The first steps of every run: the VM resolved, held against other runs, and its
    /// monitor connected.
    fn reach<'t>(&mut self, target: Target<'t>) -> Option<Reached<'t>> {
        let resolved = self.run(Step::Resolve, |op| op.resolve(target))?;
        let lock = self.run(Step::Lock, |op| op.lock())?;
        let vm = self.run(Step::Connect, |_| Ok(resolved.get().control()?))?;
        Some((resolved, lock, vm))
    }

    /// From a connected, recovered VM to the components delivered to the guest: run by
    /// the agent, or left in the drive for the guest's autorun.
    fn deliver(&mut self, vm_handle: &dyn Vm, vm: &mut dyn VmControl) -> Option<String> {
        self.run(Step::CheckRunning, |op| op.check_running(vm))?;
        // Locating the ISO (plugins, a cold hash) and the agent's first sync can take a
        // while: no monitor is held across them.
        vm.release();
        let agent = self.run(Step::ConnectAgent, |op| op.connect_agent(vm_handle))?;
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
            self.state.mode = None;
            self.state.components = None;
            return None;
        }
        let sha256 = self.run(Step::IsoDigest, |_| iso.sha256.wait())?;
        if let Some(located) = &mut self.state.located {
            located.sha256 = Some(sha256);
        }
        if self.options.what_if {
            return Some(self.what_if_message(&plan));
        }
        let mounted = self.mount(vm, plan, &iso)?;
        let delivery = match agent.as_deref_mut() {
            None => self.autorun(vm),
            Some(agent) => {
                // The installer's wait is long: no monitor is held across it.
                vm.release();
                self.run_in_guest(vm, agent, &iso)
            }
        };
        if delivery == Some(Delivery::LeftForAutorun) {
            return Some(self.autorun_message(&mounted));
        }
        self.unmount(vm, mounted, delivery.is_some())?;
        delivery?;
        let verifies = verifies || self.agent_restarted;
        if let Some(a) = agent.as_deref_mut().filter(|_| verifies) {
            self.run(Step::VerifyVersion, |op| op.verify_version(a, &iso))?;
        }
        if self.state.reboot_required {
            match agent {
                Some(a) if self.options.restart => {
                    self.run(Step::RestartGuest, |op| op.restart_guest(vm_handle, a))?
                }
                _ => self.note("the installer asks for a restart of the guest (-Restart does it)"),
            }
        }
        Some(self.by_agent_message())
    }

    /// Run one step: progress, timing, and its failure recorded. After a cancel request
    /// only clean-up steps start.
    fn run<T>(&mut self, step: Step, f: impl FnOnce(&mut Self) -> Outcome<T>) -> Option<T> {
        if let (Err(stop), false) = (self.options.cancel.check(), step.is_cleanup()) {
            self.fail(Failure::new(
                HResult::DispException,
                anyhow::Error::new(stop).context(format!("before {}", step.name())),
            ));
            return None;
        }
        self.progress.phase(&self.vm, step.name());
        tracing::debug!(vm = %self.vm, step = step.name(), "step");
        let t = Instant::now();
        let result = f(self);
        self.state.phases.push(PhaseTiming {
            phase: step.name(),
            ms: t.elapsed().as_millis() as u64,
        });
        result.map_err(|f| self.fail(f)).ok()
    }
}
