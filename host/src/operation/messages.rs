//! The success messages of the operation.

use super::{Mounted, Operation, Plan};
use crate::report::Mode;

impl Operation<'_> {
    pub(super) fn what_if_message(&self, plan: &Plan) -> String {
        let drive = &plan.drive.id;
        let iso = self.report.iso.clone().unwrap_or_default();
        let how = match self.mode {
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

    pub(super) fn autorun_message(&self, m: &Mounted) -> String {
        let iso = self.report.iso.clone().unwrap_or_default();
        format!(
            "inserted {iso} into drive {}; the guest must run setup itself (autorun)",
            m.drive.id
        )
    }

    pub(super) fn installed_message(&self) -> String {
        let iso = self.report.iso.clone().unwrap_or_default();
        let drive = self.report.drive.clone().unwrap_or_default();
        let c = self.components.as_ref();
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
