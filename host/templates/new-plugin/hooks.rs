//! {{name}}: an install-hooks plugin for vmguest (see README.md).

wit_bindgen::generate!({ path: "wit", world: "hooks" });

use exports::vmguest::plugin::install_hooks::Guest;
use vmguest::plugin::host::{log, setting};
use vmguest::plugin::types::{ContractError, InstallContext, InstallOutcome, Level, Refusal};

struct Plugin;

impl Guest for Plugin {
    fn pre_install(ctx: InstallContext) -> Result<(), Refusal> {
        // Settings that are not strings arrive as JSON text: `freeze = true` gives "true".
        if setting("freeze").as_deref() == Some("true") {
            return Err(Refusal {
                error: ContractError::Unexpected,
                message: format!("installs are frozen; {} is left alone", ctx.vm.name),
            });
        }
        log(Level::Info, &format!("{}: install allowed", ctx.vm.name));
        Ok(())
    }

    fn post_install(ctx: InstallContext, outcome: InstallOutcome) -> Result<(), String> {
        log(
            Level::Info,
            &format!("{}: {} ({})", ctx.vm.name, outcome.name, outcome.message),
        );
        Ok(())
    }
}

export!(Plugin);
