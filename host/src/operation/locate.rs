//! Locating the IC media for this guest, with the plugins' say.

use super::Operation;
use crate::hresult::Outcome;
use crate::iso::manifest::Components;
use crate::iso::{self, IcIso};
use crate::kinds::GuestKind;
use crate::report::Mode;

impl Operation<'_> {
    /// The guest's OS (from the agent) decides the family; plugins may change the choice.
    pub(super) fn locate_iso(&mut self) -> Outcome<IcIso> {
        let kind = GuestKind::of(self.guest_os.as_ref());
        let target = iso::Target {
            vm: &self.report.vm,
            guest: iso::Guest::Reported(self.guest_os.as_ref()),
            explicit: self.options.iso.as_deref(),
            autorun: self.mode == Some(Mode::Autorun),
        };
        let iso = iso::Locator::new(self.settings, self.options.plugins.as_deref())
            .locate(&target, &mut self.report.plugins)?;
        tracing::info!(vm = %self.report.vm, iso = %iso.path.display(), "chose: {}", iso.reason);
        let r = &mut self.report;
        r.iso = Some(iso.path.display().to_string());
        r.iso_volume_id = Some(iso.volume_id.clone());
        r.iso_source = Some(iso.source.clone());
        r.iso_family = Some(iso.family.as_str().to_owned());
        r.iso_version = iso.version.clone();
        r.iso_reason = Some(iso.reason.clone());
        self.components = Some(Components {
            family: iso.family.as_str().to_owned(),
            name: iso.name.clone(),
            version: iso.version.clone().unwrap_or_else(|| "unknown".into()),
        });
        if kind == GuestKind::Windows && self.mode == Some(Mode::Autorun) {
            let machine = self.guest_os.as_ref().and_then(|o| o.machine.as_deref());
            if let Some(cmd) = iso.recipe.windows_for(machine.unwrap_or("x86_64")) {
                self.report
                    .note(format!("unattended command for this media: {cmd}"));
            }
        }
        Ok(iso)
    }
}
