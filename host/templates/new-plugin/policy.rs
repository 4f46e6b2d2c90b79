//! {{name}}: an iso-policy plugin for vmguest (see README.md).

wit_bindgen::generate!({ path: "wit", world: "policy" });

use exports::vmguest::plugin::iso_policy::Guest;
use vmguest::plugin::host::{log, setting};
use vmguest::plugin::types::{ContractError, Level, PolicyContext, PolicyDecision, Refusal};

struct Plugin;

impl Guest for Plugin {
    fn choose(ctx: PolicyContext) -> PolicyDecision {
        // Refuse VMs whose name starts with the `protect-prefix` setting.
        let prefix = setting("protect-prefix").unwrap_or_default();
        if !prefix.is_empty() && ctx.vm.name.starts_with(&prefix) {
            return PolicyDecision::Refuse(Refusal {
                error: ContractError::Unexpected,
                message: format!("{} is protected from IC installs", ctx.vm.name),
            });
        }
        // Otherwise keep the built-in choice.
        if let Some(c) = ctx.default_choice.map(|i| &ctx.candidates[i as usize]) {
            log(Level::Info, &format!("{}: keeping {}", ctx.vm.name, c.path));
        }
        PolicyDecision::Defer
    }
}

export!(Plugin);
