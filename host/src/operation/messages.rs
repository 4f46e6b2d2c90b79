//! The success messages of the operation.

use super::{Mounted, Operation, Plan};
use crate::report::Mode;

impl Operation<'_> {
    /// The located ISO's path, as the messages name it.
    fn iso_path(&self) -> String {
        let located = self.state.located.as_ref();
        located.map(|l| l.path.clone()).unwrap_or_default()
    }

    pub(super) fn what_if_message(&self, plan: &Plan) -> String {
        let drive = &plan.drive.id;
        let iso = self.iso_path();
        let how = match self.state.mode {
            Some(Mode::Agent) => "run its installer through the guest agent, then eject it",
            _ => "leave it for the guest's autorun",
        };
        let borrow = if plan.borrow.is_some() {
            " (borrowing its media, to be put back afterwards)"
        } else {
            ""
        };
        let why = self
            .state
            .located
            .as_ref()
            .map(|l| format!(" (chosen: {})", l.reason))
            .unwrap_or_default();
        format!("What if: would insert {iso}{why} into drive {drive}{borrow} and {how}")
    }

    /// The media stays in for the guest's autorun.
    pub(super) fn autorun_message(&self, m: &Mounted) -> String {
        let iso = self.iso_path();
        format!(
            "inserted {iso} into drive {}; the guest must run setup itself (autorun)",
            m.drive.id
        )
    }

    /// The installer ran through the agent and the drive is back as it was found.
    pub(super) fn by_agent_message(&self) -> String {
        let iso = self.iso_path();
        let drive = &self.state.drive;
        let id = drive.id.clone().unwrap_or_default();
        let c = self.state.components.as_ref();
        let after = match (&drive.borrowed, drive.restored) {
            (Some(user), Some(true)) => format!("drive {id} holds {} again", user.file),
            _ => format!("drive {id} is empty again"),
        };
        format!(
            "installed {} {} from {iso}; {after}",
            c.map(|c| c.name.as_str()).unwrap_or("components"),
            c.map(|c| c.version.as_str()).unwrap_or("")
        )
    }
}
