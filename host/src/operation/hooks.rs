//! The plugins' hooks around the install.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{panicked, Operation};
use crate::hresult::Outcome;
use crate::iso::IcIso;
use crate::plugin::context;

impl Operation<'_> {
    /// A veto here ends the operation before the VM is touched.
    pub(super) fn pre_install(&mut self, iso: &IcIso) -> Outcome<()> {
        if let Some(plugins) = self.options.plugins.clone() {
            let ctx = context::install_context(
                &self.report.vm,
                self.guest_os.as_ref(),
                Some(context::iso_info(iso, iso.sha256.wait()?)),
                self.options.what_if,
            );
            plugins.pre_install(&ctx, &mut self.report.plugins)?;
        }
        Ok(())
    }

    /// Post-install hooks see the sealed outcome. Their failure becomes the outcome if
    /// the install itself succeeded; what was installed stays in the report.
    pub(super) fn post_install(&mut self) {
        let Some(plugins) = self.options.plugins.clone() else {
            return;
        };
        let ctx = context::install_context(
            &self.report.vm,
            self.guest_os.as_ref(),
            self.iso_info.clone(),
            self.options.what_if,
        );
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
}
