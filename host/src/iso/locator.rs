//! The location chain, written once: survey → admission → plugins → digest.
//!
//! An install and `Get-IntegrationComponentsIso` both go through a [`Locator`], so what
//! the cmdlet shows is the ISO an install would take, for the same reasons.
//!
//! Plugins depend on this module (they see its [`Selection`]), so it names them only
//! through [`Policy`], which the plugin set implements.

use std::path::Path;

use crate::hresult::Outcome;
use crate::kinds::GuestKind;
use crate::settings::Settings;
use crate::vm::GuestOsInfo;

use super::{finish, survey, IcIso, Selection};

/// What may refuse or change the choice after the survey: the policy plugins.
pub trait Policy {
    /// What is kept of each decision (in an install's report).
    type Record;

    /// Refuse outright (a plugin was refused at load time), or let each policy confirm,
    /// change or refuse `selection`, appending what it decided to `records`.
    fn decide(
        &self,
        target: &Target<'_>,
        selection: &mut Selection,
        records: &mut Vec<Self::Record>,
    ) -> Outcome<()>;
}

/// The location policy with its settings and, unless plugins are off, its policy.
pub struct Locator<'a, P: Policy> {
    settings: &'a Settings,
    policy: Option<&'a P>,
}

/// What the guest is, as far as the chain needs to know.
#[derive(Clone, Copy, Debug)]
pub enum Guest<'a> {
    /// What its agent reported, or `None` when no agent answered.
    Reported(Option<&'a GuestOsInfo>),
    /// A kind given by the user instead of asked from a guest.
    Kind(GuestKind),
}

impl Guest<'_> {
    pub fn kind(self) -> GuestKind {
        match self {
            Guest::Reported(info) => GuestKind::of(info),
            Guest::Kind(kind) => kind,
        }
    }
}

/// Whom an ISO is located for.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The VM's name, as plugins see it.
    pub vm: &'a str,
    pub guest: Guest<'a>,
    /// `-Path`: inspect only this ISO.
    pub explicit: Option<&'a Path>,
    /// The guest runs setup itself (autorun), which plugins may refuse.
    pub autorun: bool,
}

/// The selection after the survey and the policy, before anything is opened.
pub struct Choice {
    /// The candidates and the choice, as the policy left them.
    pub selection: Selection,
    /// The policy's verdict: on `Err` nothing may be installed, whatever `selection`
    /// says.
    pub policy: Outcome<()>,
}

impl<'a, P: Policy> Locator<'a, P> {
    /// `policy` is `None` when plugins are off (`-NoPlugins`).
    pub fn new(settings: &'a Settings, policy: Option<&'a P>) -> Self {
        Locator { settings, policy }
    }

    /// Survey the candidates, then let the policy refuse or change the choice; its
    /// decisions are appended to `records`.
    pub fn choose(&self, target: &Target<'_>, records: &mut Vec<P::Record>) -> Choice {
        let mut selection = survey(self.settings, target.explicit, target.guest.kind());
        let policy = match self.policy {
            None => Ok(()),
            Some(policy) => policy.decide(target, &mut selection, records),
        };
        Choice { selection, policy }
    }

    /// The chosen candidate opened and checked against what was inspected, with its
    /// digest from the digest cache or being computed.
    pub fn open(&self, selection: &Selection) -> Outcome<IcIso> {
        finish(selection, self.settings.digest_cache.as_deref())
    }

    /// The whole chain: the ISO to install, or why there is none.
    pub fn locate(&self, target: &Target<'_>, records: &mut Vec<P::Record>) -> Outcome<IcIso> {
        let choice = self.choose(target, records);
        choice.policy?;
        self.open(&choice.selection)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hresult::{Failure, HResult};

    /// Records what it was asked, then refuses.
    struct Refuse;

    impl Policy for Refuse {
        type Record = String;

        fn decide(
            &self,
            target: &Target<'_>,
            selection: &mut Selection,
            records: &mut Vec<String>,
        ) -> Outcome<()> {
            records.push(format!(
                "{} {} {} {}",
                target.vm,
                target.guest.kind().as_str(),
                target.autorun,
                selection.candidates.len()
            ));
            Err(Failure::msg(HResult::VmNotRunning, "refused"))
        }
    }

    fn target(explicit: &Path) -> Target<'_> {
        Target {
            vm: "web1",
            guest: Guest::Kind(GuestKind::Linux),
            explicit: Some(explicit),
            autorun: true,
        }
    }

    #[test]
    fn the_policy_sees_the_survey_and_its_refusal_is_the_outcome() {
        let settings = Settings::isolated("/nonexistent/vmguest-vms");
        let missing = Path::new("/nonexistent/vmguest-ic.iso");
        let locator = Locator::new(&settings, Some(&Refuse));
        let mut records = Vec::new();
        let choice = locator.choose(&target(missing), &mut records);
        assert_eq!(choice.selection.guest, GuestKind::Linux);
        assert_eq!(records, ["web1 Linux true 1"]);
        let failure = choice.policy.expect_err("the policy refused");
        assert_eq!(failure.hresult, HResult::VmNotRunning);
        let failure = locator
            .locate(&target(missing), &mut records)
            .expect_err("the policy refused");
        assert_eq!(failure.hresult, HResult::VmNotRunning);
    }

    #[test]
    fn without_a_policy_a_missing_iso_is_file_not_found() {
        let settings = Settings::isolated("/nonexistent/vmguest-vms");
        let missing = Path::new("/nonexistent/vmguest-ic.iso");
        let locator = Locator::<Refuse>::new(&settings, None);
        let failure = locator
            .locate(&target(missing), &mut Vec::new())
            .expect_err("nothing to install");
        assert_eq!(failure.hresult, HResult::FileNotFound);
    }
}
