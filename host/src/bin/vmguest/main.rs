//! `vmguest`: PowerShell-style cmdlets over the vmguest library.
//!
//! Parse, resolve the settings once, dispatch: each cmdlet is a file in `commands/`.

mod args;
mod commands;
mod errors;
mod output;
mod pipeline;
mod pool;
mod signals;
mod spinner;

use std::io::IsTerminal;

use clap::Parser;
use vmguest::Settings;

use args::{Cli, Cmdlet, Common, USAGE_ERROR};
use commands::*;

fn main() {
    let args = match args::utf8(std::env::args_os()) {
        Ok(args) => args,
        Err(bad) => {
            eprintln!("vmguest : argument {bad:?} is not valid UTF-8");
            std::process::exit(USAGE_ERROR);
        }
    };
    let cli = Cli::parse_from(args::normalize(args));
    // Test-Plugin is for authors: what their plugin logs shows without -Verbose.
    let plugin_log = matches!(cli.cmdlet, Cmdlet::TestPlugin(_));
    init_tracing(cli.common.verbose, plugin_log);
    // A panic is a bug; it still ends as DISP_E_EXCEPTION, not as a crash trace.
    std::panic::set_hook(Box::new(|info| tracing::error!("internal error: {info}")));
    // Settings are read once, here, and passed down.
    let settings = Settings::resolve(cli.common.overrides());
    std::process::exit(dispatch(&cli.common, settings, cli.cmdlet));
}

/// Run the cmdlet; its exit code.
fn dispatch(c: &Common, settings: Settings, cmdlet: Cmdlet) -> i32 {
    match cmdlet {
        Cmdlet::InstallIntegrationComponents(a) => {
            install_integration_components::exec(c, settings, a)
        }
        Cmdlet::GetVm(a) => get_vm::exec(c, settings, a),
        Cmdlet::GetIntegrationComponentsIso(a) => {
            get_integration_components_iso::exec(c, settings, a)
        }
        Cmdlet::RepairVmMedia(a) => repair_vm_media::exec(c, settings, a),
        Cmdlet::GetPlugin => get_plugin::exec(c, &settings),
        Cmdlet::TestPlugin(a) => test_plugin::exec(c, settings, a),
        Cmdlet::InstallPlugin(a) => install_plugin::exec(c, &settings, a),
        Cmdlet::NewPlugin(a) => new_plugin::exec(c, a),
        Cmdlet::Completions(a) => completions::exec(a),
        Cmdlet::Man => man::exec(),
    }
}

fn init_tracing(verbose: bool, plugin_log: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => EnvFilter::new(f),
        _ if verbose => EnvFilter::new("vmguest=debug"),
        _ if plugin_log => EnvFilter::new(format!(
            "vmguest=warn,{}=info",
            vmguest::plugin::sandbox::LOG_TARGET
        )),
        _ => EnvFilter::new("vmguest=warn"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(spinner::Stderr)
        // Fields may quote guests and plugins: no escape sequences reach the terminal.
        .fmt_fields(spinner::PrintableFields)
        // Colour for people; plain text for logs and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
