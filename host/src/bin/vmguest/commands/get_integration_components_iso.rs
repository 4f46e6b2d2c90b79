//! `Get-IntegrationComponentsIso`: every candidate ISO, which one wins and why. The
//! choice is made by the same [`Locator`] as an install's, policy plugins included.

use std::path::PathBuf;

use clap::Args;
use vmguest::iso::{self, Guest, Locator};
use vmguest::kinds::GuestKind;
use vmguest::plugin::PluginSet;
use vmguest::{Fleet, HResult, Settings};

use crate::args::{Common, GuestOs};
use crate::commands::guest_info;
use crate::{errors, output};

const CMDLET: &str = "Get-IntegrationComponentsIso";

#[derive(Args, Debug)]
pub struct GetIsoArgs {
    /// Choose for this VM's guest OS (asked from its guest agent)
    #[arg(long = "vm-name", value_name = "NAME")]
    pub vm_name: Option<String>,
    /// Choose for this kind of guest when no VM is given
    #[arg(long, value_name = "OS", value_enum, ignore_case = true)]
    pub guest_os: Option<GuestOs>,
    /// Inspect only this ISO (as Install-IntegrationComponents -Path would)
    #[arg(long, value_name = "ISO")]
    pub path: Option<PathBuf>,
}

pub fn exec(common: &Common, settings: Settings, a: GetIsoArgs) -> i32 {
    let mut first_error = None;
    let vm = a.vm_name.clone().unwrap_or_default();
    let explicit = a.guest_os.map(GuestKind::from);
    let fleet = Fleet::open(settings);
    let info = match (&a.vm_name, explicit) {
        (Some(name), None) => match guest_info(&fleet, name) {
            Ok(info) => info,
            Err(f) => {
                errors::first_of(common, CMDLET, name, &f, &mut first_error);
                return f.hresult.exit_code();
            }
        },
        _ => None,
    };
    let target = iso::Target {
        vm: &vm,
        guest: match explicit {
            Some(kind) => Guest::Kind(kind),
            None => Guest::Reported(info.as_ref()),
        },
        explicit: a.path.as_deref(),
        autorun: false,
    };
    let plugins = (!common.no_plugins).then(|| PluginSet::discover(fleet.settings()));
    let locator = Locator::new(fleet.settings(), plugins.as_ref());
    let choice = locator.choose(&target, &mut Vec::new());
    let selection = &choice.selection;
    let mut views: Vec<_> = selection.candidates.iter().map(|c| c.view()).collect();
    // When the plugins fail, there is no choice: an install would fail too.
    if choice.policy.is_err() {
        views.iter_mut().for_each(|v| v.selected = false);
    }
    // The chosen ISO's digest, opened and hashed as an install would.
    let chosen = choice.policy.is_ok().then_some(selection.chosen).flatten();
    if let Some(view) = chosen.and_then(|i| views.get_mut(i)) {
        view.sha256 = locator
            .open(selection)
            .ok()
            .and_then(|iso| iso.sha256.wait().ok());
    }
    output::iso_candidates(common.output_format, &views);
    let failure = choice.policy.err().or_else(|| {
        selection
            .chosen
            .is_none()
            .then(|| iso::not_found(selection))
    });
    if let Some(f) = failure {
        errors::first_of(common, CMDLET, &vm, &f, &mut first_error);
    }
    first_error.map_or(0, HResult::exit_code)
}
