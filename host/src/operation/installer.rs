//! Running the installer in the guest, or leaving the media for its autorun.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use super::{Operation, Step};
use crate::guest::{self, GuestInstaller, InstalledComponents, InstallerCall, Verdict};
use crate::hresult::{chain, Failure, HResult, OrHResult, Outcome};
use crate::iso::IcIso;
use crate::report::InstallerRun;
use crate::vm::{GuestAgent, VmControl};

/// How long freshly inserted media may take to show up in the guest.
pub(super) const MEDIA_APPEAR: Duration = Duration::from_secs(30);

/// How the components reached the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Delivery {
    /// The installer ran through the agent and succeeded.
    ByAgent,
    /// The media stays in for the guest's own setup.
    LeftForAutorun,
}

impl Operation<'_> {
    pub(super) fn guest_is_windows(&self) -> bool {
        self.state.guest_os.as_ref().is_some_and(|o| o.is_windows())
    }

    /// `-InstallCommand`, else the family's unattended command for this guest's OS.
    pub(super) fn installer_command(
        &self,
        iso: &IcIso,
        os: &dyn GuestInstaller,
    ) -> Outcome<String> {
        let machine = self
            .state
            .guest_os
            .as_ref()
            .and_then(|o| o.machine.as_deref());
        self.options
            .install_command
            .clone()
            .or_else(|| os.family_command(&iso.recipe, machine))
            .ok_or_else(|| {
                Failure::msg(
                    HResult::DispException,
                    format!(
                        "{} {} has no unattended installer for {} guests",
                        iso.name,
                        iso.version.as_deref().unwrap_or(""),
                        os.os_name()
                    ),
                )
            })
    }

    /// The media stays in for the guest; make sure the VM is still there to see it. If it
    /// is not, the media comes out again.
    pub(super) fn autorun(&mut self, vm: &mut dyn VmControl) -> Option<Delivery> {
        self.run(Step::Autorun, |_| {
            vm.run_state()
                .context("VM went away right after inserting the media")
                .or_hresult(HResult::DispException)
        })
        .map(|_| Delivery::LeftForAutorun)
    }

    /// Find the media in the guest, run the installer, and let go of the media whatever
    /// happened ([`GuestInstaller`] says how, for this guest's OS). Between polls the VM
    /// must still run and no stop may be asked for; when the agent or the VM is gone,
    /// nothing more is asked of the guest.
    pub(super) fn run_in_guest(
        &mut self,
        vm: &mut dyn VmControl,
        agent: &mut dyn GuestAgent,
        iso: &IcIso,
    ) -> Option<Delivery> {
        let cancel = self.options.cancel.clone();
        // Asked before every look at the guest: an agent call to a paused guest would
        // hang for a whole call timeout.
        let mut check = || -> anyhow::Result<()> {
            cancel.check()?;
            let state = vm.run_state();
            // The one monitor call of the wait connects again: let go at once, so that
            // no monitor is held across the wait.
            vm.release();
            match state {
                Ok(state) if state == "running" => Ok(()),
                Ok(state) => Err(guest::VmStopped(state).into()),
                Err(e) => Err(anyhow::Error::new(e).context("QEMU stopped answering")),
            }
        };
        let mut os = guest::installer_for(self.guest_is_windows());
        let place = self.run(Step::PrepareGuest, |op| {
            Ok(os
                .prepare(agent, &iso.pvd, MEDIA_APPEAR, &mut check)
                .inspect_err(|e| op.agent_gone |= guest::agent_gone(e))?)
        })?;
        let delivery = self.run(Step::RunInstaller, |op| {
            op.run_installer(os.as_mut(), agent, &place, iso, &mut check)
        });
        if !os.mounts_media() {
            return delivery;
        }
        // A mount the guest keeps is not yet a failure: the eject decides.
        self.run(Step::UnmountInGuest, |op| {
            if op.agent_gone {
                op.note("not unmounting in the guest: the guest agent or the VM is gone");
            } else if let Err(e) = os.unmount(agent, &place) {
                op.note(format!("{e:#}"));
            }
            Ok(())
        });
        delivery
    }

    pub(super) fn run_installer(
        &mut self,
        os: &mut dyn GuestInstaller,
        agent: &mut dyn GuestAgent,
        place: &str,
        iso: &IcIso,
        check: guest::Check<'_>,
    ) -> Outcome<Delivery> {
        let command = self.installer_command(iso, os)?;
        let t = Instant::now();
        let windows = self.guest_is_windows();
        let (journal, entry) = (self.journal.clone(), &mut self.journaled);
        let mut started = |pid: i64| {
            // So that a run killed from here on can still be finished by the next one.
            if let (Some(journal), Some(entry)) = (&journal, entry.as_mut()) {
                entry.guest_mount = Some(place.to_owned());
                entry.guest_pid = Some(pid);
                entry.guest_windows = windows;
                if let Err(e) = journal.record(entry) {
                    tracing::warn!("journal: {}", chain(&e));
                }
            }
        };
        let call = InstallerCall {
            command: &command,
            custom: self.options.install_command.is_some(),
            timeout: self.options.timeout,
            vm: &self.vm,
            progress: self.progress,
        };
        let (shown, status) = match os.run(agent, place, &call, check, &mut started) {
            Ok(run) => run,
            Err(e) => match guest::restarted(&e) {
                // The exit status went with the old agent: the version decides.
                Some(pid) => {
                    tracing::info!(vm = %self.vm, pid, "the guest agent restarted during the install");
                    self.agent_restarted = true;
                    return Ok(Delivery::ByAgent);
                }
                None => {
                    self.agent_gone |= guest::agent_gone(&e);
                    return Err(e.into());
                }
            },
        };
        self.state.installer = Some(InstallerRun {
            command: shown,
            exit_code: status.exit_code,
            signal: status.signal,
            stdout: status.stdout.clone(),
            stderr: status.stderr.clone(),
            ms: t.elapsed().as_millis() as u64,
        });
        match os.verdict(&status) {
            Verdict::Installed => {}
            Verdict::RebootRequired => self.state.reboot_required = true,
            Verdict::Failed(why) => {
                return Err(Failure::msg(
                    HResult::DispException,
                    format!(
                        "the installer failed (exit code {why}): {}",
                        status.stderr.trim().lines().last().unwrap_or("no output")
                    ),
                ))
            }
        }
        if os.writes_install_record() {
            self.record_install(agent, iso);
        }
        Ok(Delivery::ByAgent)
    }

    /// Remember in the guest what was installed; a failure is a note.
    pub(super) fn record_install(&mut self, agent: &mut dyn GuestAgent, iso: &IcIso) {
        if let Some(components) = self.state.components.clone() {
            let record = InstalledComponents {
                components,
                iso_volume_id: iso.volume_id.clone(),
                installed_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            };
            if let Err(e) = guest::record_installed(agent, &record) {
                self.note(format!("could not record the installed version: {e:#}"));
            }
        }
    }
}
