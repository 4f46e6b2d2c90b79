//! The parameters of one install.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::Cancel;
use crate::plugin::PluginSet;

/// `-AgentWaitSec`'s default: an agent that starts 25 s after boot is caught, and a VM
/// whose channel has no agent behind it still ends within about a minute and a half.
pub const DEFAULT_AGENT_WAIT: Duration = Duration::from_secs(60);

/// Parameters of one install.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    /// Explicit ISO; otherwise the location policy decides.
    pub iso: Option<PathBuf>,
    /// Borrow an occupied drive when no drive is empty, and put its media back afterwards.
    pub replace_media: bool,
    /// Insert the media and return, like the original API (the guest runs setup itself).
    pub no_wait: bool,
    /// Limit for the installer in the guest.
    pub timeout: Duration,
    /// Decide everything, change nothing.
    pub what_if: bool,
    /// Plugins to run; `None` runs none (the CLI's `-NoPlugins`).
    pub plugins: Option<Arc<PluginSet>>,
    /// Stop early when asked (the CLI's signal handlers); clean-up still runs.
    pub cancel: Cancel,
    /// Run this in the guest on the mounted media instead of the family's installer
    /// (`-InstallCommand`); with it, media of no known family is installed too.
    pub install_command: Option<String>,
    /// Install even when the guest already runs the media's version (`-Force`).
    pub force: bool,
    /// Reboot the guest through its agent when the installer asks for it, and wait for
    /// the agent to come back (`-Restart`); without it the guest is never rebooted.
    pub restart: bool,
    /// How long a guest agent whose channel is there may take to answer at all
    /// (`-AgentWaitSec`): a guest that just booted starts its agent late. Past it, the
    /// media goes in for the guest's autorun.
    pub agent_wait: Duration,
}

impl Default for InstallOptions {
    fn default() -> Self {
        InstallOptions {
            iso: None,
            replace_media: false,
            no_wait: false,
            timeout: Duration::from_secs(600),
            what_if: false,
            plugins: None,
            cancel: Cancel::new(),
            install_command: None,
            force: false,
            restart: false,
            agent_wait: DEFAULT_AGENT_WAIT,
        }
    }
}
