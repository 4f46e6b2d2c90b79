//! Everything vmguest takes from its environment, resolved once at the edge and passed
//! down, as ripgrep does with its flags. Nothing below this module reads an environment
//! variable or a config file.
//!
//! | setting | from, in order |
//! |---|---|
//! | VM socket directory | `-VmDir`, `$VMGUEST_VM_DIR`, `$XDG_RUNTIME_DIR/vmguest`, `/run/vmguest` |
//! | hosts searched for VMs | see `Settings::hosts`: flags, then the environment, then what exists here |
//! | config files | `$XDG_CONFIG_HOME/vmguest/config.toml` (else `~/.config/…`), then `/etc/vmguest/config.toml` |
//! | extra IC search path | `$VMGUEST_IC_PATH` (colon-separated) |
//! | the user's IC store | `$XDG_DATA_HOME/vmguest/ic` (else `~/.local/share/…`) |
//! | plugin directories | `-PluginDir`, `$VMGUEST_PLUGIN_PATH`, the config's `plugin_dirs`, `~/.config/vmguest/plugins` + `/etc/vmguest/plugins` |
//! | compiled-plugin cache | `$VMGUEST_PLUGIN_CACHE`, `$XDG_CACHE_HOME/vmguest/plugins` (else `~/.cache/…`) |
//! | ISO digest cache | `$XDG_CACHE_HOME/vmguest/digests` (else `~/.cache/…`) |
//! | Proxmox VE API token, CA, pinned fingerprint | `$PVE_API_TOKEN`, `$PVE_CA_FILE`, `$PVE_FINGERPRINT`, then the host's `[pve."HOST:PORT"]` table in the config files |
//! | state: the media journal, per-VM locks | `$VMGUEST_STATE_DIR`; for root `/var/lib/vmguest`; else `$XDG_STATE_HOME/vmguest` (else `~/.local/state/…`) |
//!
//! The XDG base directories come from the `etcetera` crate, which follows the spec: an
//! empty or relative `XDG_*` value is ignored and the default under `$HOME` is used. For
//! root, a base directory that fails the ownership rule (`trust.rs`; another user's
//! `HOME` kept by `sudo -E`) gives way to its default under root's home from the passwd
//! entry, with a warning.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::Effective;

pub const SYSTEM_CONFIG: &str = "/etc/vmguest/config.toml";
pub const SYSTEM_PLUGINS: &str = "/etc/vmguest/plugins";
pub const VM_DIR_ENV: &str = "VMGUEST_VM_DIR";
pub const IC_PATH_ENV: &str = "VMGUEST_IC_PATH";
pub const PLUGIN_PATH_ENV: &str = "VMGUEST_PLUGIN_PATH";
pub const PLUGIN_CACHE_ENV: &str = "VMGUEST_PLUGIN_CACHE";
pub const STATE_DIR_ENV: &str = "VMGUEST_STATE_DIR";
pub const SYSTEM_STATE: &str = "/var/lib/vmguest";
pub const LIBVIRT_URI_ENV: &str = "LIBVIRT_DEFAULT_URI";
pub const PVE_TOKEN_ENV: &str = "PVE_API_TOKEN";
pub const PVE_CA_ENV: &str = "PVE_CA_FILE";
pub const PVE_FINGERPRINT_ENV: &str = "PVE_FINGERPRINT";

mod bases;
mod hosts;

use bases::Bases;
use hosts::choose_hosts;
pub use hosts::{
    check_computer_name, computer_uri, BadComputerName, BadPveUri, HostSpec, PveAddress,
    PVE_DEFAULT_PORT,
};

/// A secret read from the environment: its `Debug` never shows it, so logging the
/// settings cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What the environment says for every Proxmox VE host of the run; each wins over the
/// host's table in the config file, as an explicit setting of this run should.
#[derive(Clone, Debug, Default)]
pub struct PveEnv {
    /// `$PVE_API_TOKEN`: `USER@REALM!TOKENID=SECRET`.
    pub token: Option<Secret>,
    /// `$PVE_CA_FILE`: the CA to verify the API's certificate with.
    pub ca_file: Option<PathBuf>,
    /// `$PVE_FINGERPRINT`: the SHA-256 of the API's certificate, pinned.
    pub fingerprint: Option<String>,
}

/// What the command line may override.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// The socket directory, instead of `VMGUEST_VM_DIR` or the default.
    pub vm_dir: Option<PathBuf>,
    /// The only directory plugins are looked for in, instead of the configured ones.
    pub plugin_dir: Option<PathBuf>,
    /// `-ConnectionUri`, and `-ComputerName` already turned into URIs.
    pub connection_uris: Vec<String>,
}

/// The resolved settings of one run.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The socket directory.
    pub vm_dir: PathBuf,
    /// Every host searched for VMs, in order (`Settings::hosts` tells the rule).
    pub hosts: Vec<HostSpec>,
    /// The config files, user before system, with what went wrong reading them.
    pub config: Effective,
    /// `$VMGUEST_IC_PATH`, split; `None` when unset or empty.
    pub ic_path: Option<Vec<PathBuf>>,
    /// `$XDG_DATA_HOME/vmguest/ic`; `None` without a home directory.
    pub user_store: Option<PathBuf>,
    /// Plugin manifest directories, in the documented order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Which rule chose `plugin_dirs` (`-PluginDir`, `$VMGUEST_PLUGIN_PATH`, a config
    /// file, the defaults), as `Get-Plugin` shows it.
    pub plugin_dirs_from: String,
    /// `$XDG_CONFIG_HOME/vmguest/plugins`: where `Install-Plugin -Scope User` writes.
    pub user_plugin_dir: Option<PathBuf>,
    /// The compiled-component cache; `None` without a home directory.
    pub plugin_cache: Option<PathBuf>,
    /// SHA-256 digests of ISOs (`iso/digest.rs`); `None` without a home directory.
    pub digest_cache: Option<PathBuf>,
    /// The media journal and the per-VM locks (`journal.rs`); `None` without a home
    /// directory, for a user other than root.
    pub state_dir: Option<PathBuf>,
    /// `$PVE_API_TOKEN`, `$PVE_CA_FILE` and `$PVE_FINGERPRINT`.
    pub pve: PveEnv,
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A non-empty variable's value.
fn var(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

fn split(v: &OsString) -> Vec<PathBuf> {
    std::env::split_paths(v)
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

impl Settings {
    /// Read the environment and the config files, once.
    pub fn resolve(overrides: Overrides) -> Settings {
        let bases = Bases::for_effective_user();
        let user_config_dir = bases.config.as_ref().map(|c| c.join("vmguest"));
        let config_files: Vec<PathBuf> = user_config_dir
            .iter()
            .map(|d| d.join("config.toml"))
            .chain(std::iter::once(PathBuf::from(SYSTEM_CONFIG)))
            .collect();
        let config = Effective::load(&config_files);
        let explicit_dir = overrides
            .vm_dir
            .clone()
            .or_else(|| var(VM_DIR_ENV).map(PathBuf::from));
        let vm_dir = explicit_dir
            .clone()
            .or_else(|| bases.runtime.as_ref().map(|r| r.join("vmguest")))
            .unwrap_or_else(|| PathBuf::from("/run/vmguest"));
        let hosts = Settings::hosts(&overrides, &vm_dir, bases.runtime.as_deref());
        let user_plugin_dir = user_config_dir.as_ref().map(|d| d.join("plugins"));
        // The first that is set wins whole: a site's list is never mixed with another.
        let (plugin_dirs, plugin_dirs_from) = match (&overrides.plugin_dir, var(PLUGIN_PATH_ENV)) {
            (Some(d), _) => (vec![d.clone()], "-PluginDir".to_owned()),
            (None, Some(v)) => (split(&v), format!("${PLUGIN_PATH_ENV}")),
            (None, None) => match config.first(|c| c.plugin_dirs.clone()) {
                Some((dirs, file)) => (dirs, format!("plugin_dirs in {}", file.display())),
                None => (
                    user_plugin_dir
                        .iter()
                        .cloned()
                        .chain(std::iter::once(PathBuf::from(SYSTEM_PLUGINS)))
                        .collect(),
                    "the user and system defaults".to_owned(),
                ),
            },
        };
        Settings {
            vm_dir,
            hosts,
            ic_path: var(IC_PATH_ENV).map(|v| split(&v)),
            user_store: bases.data.map(|d| d.join("vmguest/ic")),
            plugin_dirs,
            plugin_dirs_from,
            user_plugin_dir,
            plugin_cache: var(PLUGIN_CACHE_ENV)
                .map(PathBuf::from)
                .or_else(|| bases.cache.as_ref().map(|c| c.join("vmguest/plugins"))),
            digest_cache: bases.cache.map(|c| c.join("vmguest/digests")),
            // Root's installs share one journal, wherever they were started from.
            state_dir: var(STATE_DIR_ENV).map(PathBuf::from).or_else(|| {
                if is_root() {
                    Some(PathBuf::from(SYSTEM_STATE))
                } else {
                    bases.state.map(|s| s.join("vmguest"))
                }
            }),
            config,
            pve: PveEnv {
                token: var(PVE_TOKEN_ENV)
                    .map(|v| Secret::new(v.to_string_lossy().trim().to_owned())),
                ca_file: var(PVE_CA_ENV).map(PathBuf::from),
                fingerprint: var(PVE_FINGERPRINT_ENV).map(|v| v.to_string_lossy().into_owned()),
            },
        }
    }

    /// The hosts searched for VMs:
    /// 1. with `-VmDir`, `-ConnectionUri` or `-ComputerName`, exactly the hosts named;
    /// 2. else with `$VMGUEST_VM_DIR` or `$LIBVIRT_DEFAULT_URI`, exactly those;
    /// 3. else what this machine has: the socket directory if it exists, and the local
    ///    libvirt daemon (`qemu:///system` for root, `qemu:///session` for others) if its
    ///    socket exists; with neither, the socket directory, whose absence is reported.
    fn hosts(overrides: &Overrides, vm_dir: &Path, runtime: Option<&Path>) -> Vec<HostSpec> {
        let local = if is_root() {
            Some((PathBuf::from("/run/libvirt"), "qemu:///system"))
        } else {
            runtime.map(|r| (r.join("libvirt"), "qemu:///session"))
        };
        let local = local.filter(|(dir, _)| {
            ["libvirt-sock", "virtqemud-sock"]
                .iter()
                .any(|s| dir.join(s).exists())
        });
        let env_uri = var(LIBVIRT_URI_ENV).map(|u| u.to_string_lossy().into_owned());
        choose_hosts(
            overrides,
            vm_dir,
            var(VM_DIR_ENV).is_some(),
            env_uri,
            local.map(|(_, uri)| uri),
        )
    }

    /// Settings that read nothing: a VM directory and defaults, for library callers and
    /// tests that want no ambient configuration.
    pub fn isolated(vm_dir: impl Into<PathBuf>) -> Settings {
        let vm_dir = vm_dir.into();
        Settings {
            hosts: vec![HostSpec::Sockets(vm_dir.clone())],
            vm_dir,
            config: Effective::default(),
            ic_path: None,
            user_store: None,
            plugin_dirs: Vec::new(),
            plugin_dirs_from: String::new(),
            user_plugin_dir: None,
            plugin_cache: None,
            digest_cache: None,
            state_dir: None,
            pve: PveEnv::default(),
        }
    }

    /// Where compiled plugins are cached, if anywhere.
    pub fn plugin_cache(&self) -> Option<&Path> {
        self.plugin_cache.as_deref()
    }
}
