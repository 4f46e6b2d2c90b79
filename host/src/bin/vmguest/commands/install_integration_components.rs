//! `Install-IntegrationComponents`: the IC ISO into each VM, `-ThrottleLimit` at a time.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use vmguest::cancel::Cancel;
use vmguest::plugin::PluginSet;
use vmguest::{Fleet, InstallOptions, Settings};

use crate::args::Common;
use crate::{pipeline, pool, signals};

const CMDLET: &str = "Install-IntegrationComponents";

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// VM names; read from stdin (names or JSON objects with name/VMName) when omitted
    #[arg(long = "vm-name", value_name = "NAME", value_delimiter = ',')]
    pub vm_name: Vec<String>,
    #[arg(value_name = "VMNAME", hide = true)]
    pub positional: Vec<String>,
    /// Use this ISO instead of the location policy
    #[arg(long, value_name = "ISO")]
    pub path: Option<PathBuf>,
    /// When no drive is empty, borrow an occupied one and put its media back afterwards
    #[arg(long)]
    pub replace_media: bool,
    /// Insert the media and return; the guest runs setup itself (autorun)
    #[arg(long)]
    pub no_wait: bool,
    /// Limit for the installer inside the guest, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub timeout_sec: u64,
    /// How long to wait for a guest agent whose channel exists but that does not answer
    /// yet (a guest that just booted), in seconds; then the media goes in for autorun.
    /// Default 60, or VMGUEST_AGENT_WAIT_SEC
    #[arg(long, value_name = "SECONDS")]
    pub agent_wait_sec: Option<u64>,
    /// Show the plan; change nothing
    #[arg(long)]
    pub what_if: bool,
    /// Run this shell command in the guest on the mounted media instead of the
    /// family's installer (also for media of no known family)
    #[arg(long, value_name = "COMMAND")]
    pub install_command: Option<String>,
    /// Install even when the guest already runs the media's version
    #[arg(long)]
    pub force: bool,
    /// Restart the guest through its agent when the installer asks for it (Windows
    /// exit codes 3010 and 1641), and wait for the agent to come back
    #[arg(long)]
    pub restart: bool,
    /// How many VMs to install into at once (-ErrorAction Stop runs one at a time)
    #[arg(long, value_name = "N", default_value_t = pool::DEFAULT_THROTTLE, value_parser = clap::value_parser!(u16).range(1..))]
    pub throttle_limit: u16,
}

pub fn exec(common: &Common, settings: Settings, a: InstallArgs) -> i32 {
    let targets = match pipeline::vm_names(CMDLET, a.vm_name, a.positional) {
        Ok(n) => n,
        Err(code) => return code,
    };
    let fleet = Fleet::open(settings);
    let options = InstallOptions {
        iso: a.path,
        replace_media: a.replace_media,
        no_wait: a.no_wait,
        timeout: Duration::from_secs(a.timeout_sec),
        what_if: a.what_if,
        plugins: (!common.no_plugins).then(|| Arc::new(PluginSet::discover(fleet.settings()))),
        cancel: Cancel::new(),
        install_command: a.install_command,
        force: a.force,
        restart: a.restart,
        agent_wait: agent_wait(a.agent_wait_sec),
    };
    signals::stop_on_signals(&options.cancel);
    pool::run(
        common,
        CMDLET,
        pool::jobs(&fleet, &targets),
        a.throttle_limit,
        |job, progress| job.report(|vm| vm.guest_os().install_with_progress(&options, progress)),
    )
}

/// `-AgentWaitSec`, else `VMGUEST_AGENT_WAIT_SEC` (for a site, or a test suite, whose
/// VMs start agents late or have none), else the default.
fn agent_wait(flag: Option<u64>) -> Duration {
    flag.or_else(|| {
        std::env::var("VMGUEST_AGENT_WAIT_SEC")
            .ok()
            .and_then(|v| v.trim().parse().ok())
    })
    .map_or(vmguest::operation::DEFAULT_AGENT_WAIT, Duration::from_secs)
}
