//! The family's installed version, read before (nothing to do) and after (verified).

use anyhow::Context;

use super::Operation;
use crate::guest::{self};
use crate::hresult::{Failure, HResult, Outcome};
use crate::iso::{IcIso, Probe};
use crate::vm::GuestAgent;

impl Operation<'_> {
    /// The family's installed version, where the guest can tell it. The guest already
    /// running the media's version is left alone (unless -Force): `Some(message)`.
    pub(super) fn check_version(
        &mut self,
        agent: &mut dyn GuestAgent,
        iso: &IcIso,
    ) -> Outcome<Option<String>> {
        let (Some(probe), Some(want)) = (self.verify_command(iso), iso.version.clone()) else {
            return Ok(None);
        };
        let before = guest::read_version(agent, &probe).context("reading the installed version")?;
        self.state.versions.before = before.clone();
        match before {
            Some(v) if guest::same_version(&v, &want) && !self.options.force => {
                self.state.versions.verified = Some(true);
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
    pub(super) fn verify_version(
        &mut self,
        agent: &mut dyn GuestAgent,
        iso: &IcIso,
    ) -> Outcome<()> {
        if self.agent_restarted {
            return self.verify_after_restart(agent, iso);
        }
        let (Some(probe), Some(want)) = (self.verify_command(iso), iso.version.clone()) else {
            return Ok(());
        };
        let after = guest::read_version(agent, &probe).context("reading the installed version")?;
        self.state.versions.after = after.clone();
        match after {
            Some(v) if !guest::same_version(&v, &want) => {
                self.state.versions.verified = Some(false);
                Err(Failure::msg(
                    HResult::DispException,
                    format!("installer reported success but the guest still runs {} {v} (expected {want})", iso.name),
                ))
            }
            Some(_) => {
                self.state.versions.verified = Some(true);
                Ok(())
            }
            None => {
                self.note(format!(
                    "the installed version cannot be read after the install ({probe} tells nothing)"
                ));
                Ok(())
            }
        }
    }

    /// The agent restarted during the install, so the installer's exit status is lost:
    /// only the media's version, read back, makes it a success. Anything less is an
    /// unknown outcome, never a success.
    fn verify_after_restart(&mut self, agent: &mut dyn GuestAgent, iso: &IcIso) -> Outcome<()> {
        const LOST: &str = "the outcome is unknown: the guest agent restarted during the \
            install, so the installer's exit status is lost";
        let unknown =
            |why: String| Failure::msg(HResult::DispException, format!("{LOST}, and {why}"));
        let (Some(probe), Some(want)) = (self.verify_command(iso), iso.version.clone()) else {
            return Err(unknown(match self.options.install_command {
                Some(_) => "-InstallCommand's result cannot be verified".to_owned(),
                None => format!(
                    "{} has no version check for this guest to verify it",
                    iso.name
                ),
            }));
        };
        // -Force over the same version: reading it back proves nothing.
        if let Some(b) = self.state.versions.before.as_deref() {
            if guest::same_version(b, &want) {
                return Err(unknown(format!(
                    "the guest ran {} {b} before the install too, so its version cannot tell",
                    iso.name
                )));
            }
        }
        let after = guest::read_version(agent, &probe)
            .map_err(|e| unknown(format!("the installed version cannot be read: {e:#}")))?;
        self.state.versions.after = after.clone();
        match after {
            Some(v) if guest::same_version(&v, &want) => {
                self.state.versions.verified = Some(true);
                self.note(format!(
                    "the guest agent restarted during the install; verified: the guest runs {} {v}",
                    iso.name
                ));
                if !self.guest_is_windows() {
                    self.record_install(agent, iso);
                }
                Ok(())
            }
            Some(v) => {
                self.state.versions.verified = Some(false);
                Err(unknown(format!(
                    "the guest still runs {} {v} (expected {want})",
                    iso.name
                )))
            }
            None => Err(unknown(format!("{probe} tells no installed version"))),
        }
    }

    /// The command that prints the installed version; `-InstallCommand` installs
    /// something else, so nothing is verified then.
    pub(super) fn verify_command(&self, iso: &IcIso) -> Option<Probe> {
        if self.options.install_command.is_some() {
            return None;
        }
        iso.recipe.version_probe(self.guest_is_windows())
    }
}
