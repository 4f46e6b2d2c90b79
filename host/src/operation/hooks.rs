//! The plugins' hooks around the install.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::state::LocatedIso;
use super::{panicked, Operation};
use crate::hresult::Outcome;
use crate::iso::IcIso;
use crate::plugin::context;
use crate::report::InstallReport;

impl Operation<'_> {
    /// A veto here ends the operation before the VM is touched.
    pub(super) fn pre_install(&mut self, iso: &IcIso) -> Outcome<()> {
        if let Some(plugins) = self.options.plugins.clone() {
            let ctx = context::install_context(
                &self.vm,
                self.state.guest_os.as_ref(),
                Some(LocatedIso::of(iso).iso_info(iso.sha256.wait()?)),
                self.options.what_if,
            );
            plugins.pre_install(&ctx, &mut self.state.plugins)?;
        }
        Ok(())
    }

    /// Post-install hooks see the sealed outcome. Their failure becomes the outcome if
    /// the install itself succeeded; what was installed stays in the report.
    pub(super) fn post_install(&self, report: &mut InstallReport) {
        let Some(plugins) = self.options.plugins.clone() else {
            return;
        };
        let ctx = context::install_context(
            &self.vm,
            self.state.guest_os.as_ref(),
            self.hashed_iso(),
            self.options.what_if,
        );
        let outcome = context::outcome(
            report.result,
            &report.message,
            self.installed_components(),
            self.state.total_ms,
            &self.state.phases,
        );
        let records = &mut report.plugins;
        let failure = catch_unwind(AssertUnwindSafe(|| {
            plugins.post_install(&ctx, &outcome, records)
        }))
        .unwrap_or_else(|panic| Some(panicked(panic.as_ref())));
        if let Some(f) = failure {
            let message = report.message.clone();
            report.fail(f);
            report.seal(message);
        }
    }
}
