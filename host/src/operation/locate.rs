//! Locating the IC media for this guest, with the plugins' say.

use super::state::LocatedIso;
use super::Operation;
use crate::hresult::Outcome;
use crate::iso::manifest::Components;
use crate::iso::{self, IcIso};
use crate::kinds::GuestKind;
use crate::report::Mode;

impl Operation<'_> {
    /// The guest's OS (from the agent) decides the family; plugins may change the choice.
    pub(super) fn locate_iso(&mut self) -> Outcome<IcIso> {
        let guest_os = self.state.guest_os.as_ref();
        let kind = GuestKind::of(guest_os);
        let autorun = self.state.mode == Some(Mode::Autorun);
        let target = iso::Target {
            vm: &self.vm,
            guest: iso::Guest::Reported(guest_os),
            explicit: self.options.iso.as_deref(),
            autorun,
        };
        let iso = iso::Locator::new(self.settings, self.options.plugins.as_deref())
            .locate(&target, &mut self.state.plugins)?;
        tracing::info!(vm = %self.vm, iso = %iso.path.display(), "chose: {}", iso.reason);
        self.state.located = Some(LocatedIso::of(&iso));
        self.state.components = Some(Components {
            family: iso.family.as_str().to_owned(),
            name: iso.name.clone(),
            version: iso.version.clone().unwrap_or_else(|| "unknown".into()),
        });
        if kind == GuestKind::Windows && autorun {
            let machine = self
                .state
                .guest_os
                .as_ref()
                .and_then(|o| o.machine.as_deref());
            if let Some(cmd) = iso.recipe.windows_for(machine.unwrap_or("x86_64")) {
                self.note(format!("unattended command for this media: {cmd}"));
            }
        }
        Ok(iso)
    }
}
