//! `Install-Plugin`: check a component, pin it, write its manifest, precompile it.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use vmguest::plugin::install::{self, Request};
use vmguest::settings::SYSTEM_PLUGINS;
use vmguest::Settings;

use crate::args::{Common, PluginInputs, USAGE_ERROR};
use crate::{errors, output};

const CMDLET: &str = "Install-Plugin";

#[derive(Args, Debug)]
pub struct InstallPluginArgs {
    /// The component (.wasm)
    #[arg(long, value_name = "WASM")]
    pub path: PathBuf,
    /// user: $XDG_CONFIG_HOME/vmguest/plugins; system: /etc/vmguest/plugins
    #[arg(long, value_enum, default_value = "user", ignore_case = true)]
    pub scope: Scope,
    /// The plugin's name (default: the component's file name without .wasm)
    #[arg(long)]
    pub name: Option<String>,
    /// The plugin's own version, for the manifest
    #[arg(long, default_value = "0.1.0")]
    pub version: String,
    /// Lower runs first
    #[arg(long, default_value_t = 50)]
    pub order: i64,
    #[command(flatten)]
    pub inputs: PluginInputs,
    /// Replace an installed plugin of the same name
    #[arg(long)]
    pub force: bool,
    /// Show where it would go; write nothing
    #[arg(long)]
    pub what_if: bool,
    /// Install into this plugin directory instead of the scope's (scripts/install-plugins.sh)
    #[arg(long, value_name = "DIR", hide = true)]
    pub directory: Option<PathBuf>,
    /// Update an installed plugin of the same name: a new component and pin; its
    /// manifest's settings, grants, limits, order and version are kept
    /// (scripts/install-plugins.sh)
    #[arg(long, hide = true)]
    pub update: bool,
}

/// Whose plugin directory to install into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    User,
    System,
}

pub fn exec(common: &Common, run: &Settings, a: InstallPluginArgs) -> i32 {
    let Some((settings, grants)) = a.inputs.parse(CMDLET) else {
        return USAGE_ERROR;
    };
    let dir = match (a.directory, a.scope) {
        (Some(dir), _) => Some(dir),
        (None, Scope::System) => Some(PathBuf::from(SYSTEM_PLUGINS)),
        (None, Scope::User) => run.user_plugin_dir.clone(),
    };
    let Some(dir) = dir else {
        eprintln!("{CMDLET} : no user plugin directory (no home directory); use -Scope System");
        return USAGE_ERROR;
    };
    let req = Request {
        component: a.path.clone(),
        dir,
        name: a.name,
        version: a.version,
        order: a.order,
        settings,
        grants,
        force: a.force,
        update: a.update,
    };
    if a.what_if {
        println!(
            "What if: installing {} into {}",
            req.component.display(),
            req.dir.display()
        );
        return 0;
    }
    let installed = install::install(&req, run.plugin_cache());
    errors::one_result(common, CMDLET, &a.path, installed, |mut info| {
        if run.plugin_dirs.contains(&req.dir) {
            info.directory_from = run.plugin_dirs_from.clone();
        } else {
            tracing::warn!(
                "installed, but plugins are read from {} only ({}): this one will not run",
                run.plugin_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":"),
                run.plugin_dirs_from
            );
        }
        output::plugins(common.output_format, &[info]);
    })
}
