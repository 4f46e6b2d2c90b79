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
//! | state: the media journal, per-VM locks | `$VMGUEST_STATE_DIR`; for root `/var/lib/vmguest`; else `$XDG_STATE_HOME/vmguest` (else `~/.local/state/…`) |
//!
//! The XDG base directories come from the `etcetera` crate, which follows the spec: an
//! empty or relative `XDG_*` value is ignored and the default under `$HOME` is used. For
//! root, a base directory that fails the ownership rule (`trust.rs`; another user's
//! `HOME` kept by `sudo -E`) gives way to its default under root's home from the passwd
//! entry, with a warning.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use etcetera::base_strategy::{BaseStrategy, Xdg};

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

/// Where VMs are looked for: a socket directory, or a libvirt host by its URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSpec {
    /// A socket directory: one QMP and one agent socket per VM.
    Sockets(PathBuf),
    /// A libvirt host, by its URI.
    Libvirt(String),
}

impl HostSpec {
    /// `Get-VM`'s `host` column and a pipeline object's `host` property: a libvirt URI,
    /// or the socket directory.
    pub fn label(&self) -> String {
        match self {
            HostSpec::Sockets(dir) => dir.display().to_string(),
            HostSpec::Libvirt(uri) => uri.clone(),
        }
    }

    /// Does `label`, a host read from a pipeline object (untrusted), name this host of
    /// the run? It only ever chooses among the run's hosts: a string from stdin never
    /// becomes a URI, a socket directory or a transport parameter of its own. Matching
    /// is after normalisation: a socket directory as a path (`/run/vmguest/` is
    /// `/run/vmguest`), a URI with its scheme and authority in lower case, and a bare
    /// host name as `-ComputerName` would spell it.
    pub fn is_named_by(&self, label: &str) -> bool {
        match self {
            HostSpec::Sockets(dir) => !label.contains("://") && Path::new(label) == dir,
            HostSpec::Libvirt(uri) => {
                let ours = normal_uri(uri);
                ours == normal_uri(label)
                    || (check_computer_name(label).is_ok()
                        && ours == normal_uri(&computer_uri(label)))
            }
        }
    }
}

/// A URI with its scheme and authority in lower case; the rest as it is.
fn normal_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    format!(
        "{}://{}{tail}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    )
}

/// Why a `-ComputerName` value is refused: it would be pasted into a libvirt URI, where
/// `/`, `?` or `#` would add a transport parameter such as `command=` or `keyfile=`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a host name: -ComputerName takes [USER@]HOST[:PORT], where HOST is an \
     RFC 1123 host name, an IPv4 address or an [IPv6] address in brackets"
)]
pub struct BadComputerName(pub String);

/// `-ComputerName`'s rule: `[USER@]HOST[:PORT]` with HOST an RFC 1123 name, a dotted
/// IPv4 address or a bracketed IPv6 address, USER letters, digits, `.`, `_` and `-`
/// (not first, so it never reads as an ssh option), PORT 1 to 65535.
pub fn check_computer_name(s: &str) -> Result<(), BadComputerName> {
    let bad = || BadComputerName(s.to_owned());
    let (user, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, s),
    };
    if let Some(u) = user {
        let chars_ok = u
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if u.is_empty() || u.len() > 32 || u.starts_with('-') || !chars_ok {
            return Err(bad());
        }
    }
    let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (addr, after) = inner.split_once(']').ok_or_else(bad)?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        match after {
            "" => (None, None),
            p => (None, Some(p.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(rest), None),
        }
    };
    if let Some(p) = port {
        let digits = !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits || !matches!(p.parse::<u32>(), Ok(1..=65535)) {
            return Err(bad());
        }
    }
    match host {
        Some(h) if h.parse::<std::net::Ipv4Addr>().is_ok() || is_rfc1123(h) => Ok(()),
        Some(_) => Err(bad()),
        None => Ok(()),
    }
}

/// An RFC 1123 host name: dot-separated labels of 1 to 63 letters, digits and inner
/// hyphens, 253 characters at most. All-numeric names are left to the IPv4 parser.
fn is_rfc1123(h: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(label_ok)
        && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// [`Settings::hosts`]'s rule, on what was read: `local` is the local libvirt daemon's
/// URI when its socket exists.
fn choose_hosts(
    overrides: &Overrides,
    vm_dir: &Path,
    env_dir: bool,
    env_uri: Option<String>,
    local: Option<&str>,
) -> Vec<HostSpec> {
    let dir = || HostSpec::Sockets(vm_dir.to_owned());
    if overrides.vm_dir.is_some() || !overrides.connection_uris.is_empty() {
        let dirs = overrides.vm_dir.is_some().then(dir);
        let uris = overrides.connection_uris.iter().cloned();
        return dirs
            .into_iter()
            .chain(uris.map(HostSpec::Libvirt))
            .collect();
    }
    if env_dir || env_uri.is_some() {
        let dirs = env_dir.then(dir);
        return dirs
            .into_iter()
            .chain(env_uri.map(HostSpec::Libvirt))
            .collect();
    }
    let mut hosts = Vec::new();
    if vm_dir.is_dir() || local.is_none() {
        hosts.push(dir());
    }
    hosts.extend(local.map(|uri| HostSpec::Libvirt(uri.to_owned())));
    hosts
}

/// `-ComputerName HOST`: Hyper-V's spelling of `qemu+ssh://HOST/system`. The caller
/// has checked `host` with [`check_computer_name`].
pub fn computer_uri(host: &str) -> String {
    format!("qemu+ssh://{host}/system")
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
}

/// The XDG base directories of this user, if there is a home directory.
struct Bases {
    config: Option<PathBuf>,
    data: Option<PathBuf>,
    cache: Option<PathBuf>,
    state: Option<PathBuf>,
    runtime: Option<PathBuf>,
}

impl Bases {
    fn from_env() -> Bases {
        match Xdg::new() {
            Ok(x) => Bases {
                config: Some(x.config_dir()),
                data: Some(x.data_dir()),
                cache: Some(x.cache_dir()),
                state: x.state_dir(),
                runtime: x.runtime_dir(),
            },
            // No home directory: only the system-wide places remain.
            Err(_) => Bases {
                config: None,
                data: None,
                cache: None,
                state: None,
                runtime: std::env::var_os("XDG_RUNTIME_DIR")
                    .map(PathBuf::from)
                    .filter(|p| p.is_absolute()),
            },
        }
    }
}

impl Bases {
    /// The environment's base directories, except that root does not take another
    /// user's: under `sudo -E`, `HOME` still names the user's home, whose config, cache
    /// and data that user can write. Each base that fails the ownership rule
    /// (`trust.rs`) is replaced by its default under root's home from the passwd entry.
    fn for_effective_user() -> Bases {
        let env = Bases::from_env();
        if !is_root() {
            return env;
        }
        env.trusted_or(passwd_home().as_deref())
    }

    fn trusted_or(self, home: Option<&Path>) -> Bases {
        let pick = |what: &str, base: Option<PathBuf>, default: &str| {
            let dir = base?;
            let why = match crate::trust::check_nearest(&dir) {
                Ok(()) => return Some(dir),
                Err(why) => crate::hresult::chain(&why),
            };
            let own = home
                .map(|h| h.join(default))
                .filter(|d| crate::trust::check_nearest(d).is_ok());
            tracing::warn!(
                "running as root: not using the {what} directory {} from the environment \
                 ({why}); using {} from root's own home instead",
                dir.display(),
                own.as_ref()
                    .map_or_else(|| "none".into(), |d| d.display().to_string())
            );
            own
        };
        Bases {
            config: pick("config", self.config, ".config"),
            data: pick("data", self.data, ".local/share"),
            cache: pick("cache", self.cache, ".cache"),
            state: pick("state", self.state, ".local/state"),
            // The runtime directory holds the default VM directory, whose `NAME.toml`
            // files name the sockets root connects to. Root has no runtime directory of
            // its own to fall back on: the system default (`/run/vmguest`) applies.
            runtime: self
                .runtime
                .filter(|dir| match crate::trust::check_nearest(dir) {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::warn!(
                            "running as root: not using the runtime directory {} from the \
                         environment ({}); using the system defaults instead",
                            dir.display(),
                            crate::hresult::chain(&why)
                        );
                        false
                    }
                }),
        }
    }
}

/// The effective user's home directory from the passwd entry, not from `$HOME`.
fn passwd_home() -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids) to be filled in.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwuid_r writes into `pw` and `buf` (of the length given) only, and
        // points `found` at `pw` or null; geteuid cannot fail.
        let rc = unsafe {
            libc::getpwuid_r(
                libc::geteuid(),
                &mut pw,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || found.is_null() || pw.pw_dir.is_null() {
            return None;
        }
        // SAFETY: pw_dir points to a NUL-terminated string inside `buf`, alive here.
        let dir = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) };
        let dir = Path::new(std::ffi::OsStr::from_bytes(dir.to_bytes()));
        return dir.is_absolute().then(|| dir.to_owned());
    }
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
        }
    }

    /// Where compiled plugins are cached, if anywhere.
    pub fn plugin_cache(&self) -> Option<&Path> {
        self.plugin_cache.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(dir: Option<&str>, uris: &[&str]) -> Overrides {
        Overrides {
            vm_dir: dir.map(PathBuf::from),
            plugin_dir: None,
            connection_uris: uris.iter().map(|u| u.to_string()).collect(),
        }
    }

    #[test]
    fn hosts_flags_then_environment_then_what_exists() {
        let exists = tempfile::tempdir().unwrap();
        let missing = exists.path().join("missing");
        let sys = || HostSpec::Libvirt("qemu:///system".into());
        let sockets = |p: &Path| HostSpec::Sockets(p.to_owned());
        // Flags name exactly their hosts, whatever else is set or present.
        let f = flags(None, &["qemu+ssh://a/system"]);
        assert_eq!(
            choose_hosts(
                &f,
                exists.path(),
                true,
                Some("x".into()),
                Some("qemu:///system")
            ),
            vec![HostSpec::Libvirt("qemu+ssh://a/system".into())]
        );
        let f = flags(Some("/d"), &["u"]);
        assert_eq!(
            choose_hosts(&f, Path::new("/d"), false, None, None),
            vec![sockets(Path::new("/d")), HostSpec::Libvirt("u".into())]
        );
        // Then the environment.
        let none = flags(None, &[]);
        assert_eq!(
            choose_hosts(
                &none,
                &missing,
                false,
                Some("qemu:///x".into()),
                Some("qemu:///system")
            ),
            vec![HostSpec::Libvirt("qemu:///x".into())]
        );
        // Then this machine: a libvirt host with no socket directory is just libvirt.
        assert_eq!(
            choose_hosts(&none, &missing, false, None, Some("qemu:///system")),
            vec![sys()]
        );
        assert_eq!(
            choose_hosts(&none, exists.path(), false, None, Some("qemu:///system")),
            vec![sockets(exists.path()), sys()]
        );
        // Nothing here: the socket directory, so its absence is what gets reported.
        assert_eq!(
            choose_hosts(&none, &missing, false, None, None),
            vec![sockets(&missing)]
        );
    }
    #[test]
    fn computer_names_are_host_names_only() {
        for ok in [
            "kvm1",
            "kvm1.example.com",
            "root@kvm1:2222",
            "10.0.0.1",
            "10.0.0.1:22",
            "[::1]",
            "[fe80::1]:22",
            "u_ser.x-1@h",
            "a-b.c",
        ] {
            assert_eq!(check_computer_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "h/system?command=/tmp/p#",
            "h?command=/tmp/p",
            "h#x",
            "",
            "-oProxyCommand=x",
            "-h",
            "h-",
            "h:0",
            "h:65536",
            "h:",
            "h:x",
            "[::1",
            "[::1]x",
            "[nothost]",
            "::1",
            "a b",
            "@h",
            "a@b@c",
            "-u@h",
            "1.2.3",
            "h_x",
            "h..x",
        ] {
            assert!(check_computer_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_pipeline_host_names_only_a_host_of_the_run() {
        let dir = HostSpec::Sockets(PathBuf::from("/run/vmguest"));
        assert!(dir.is_named_by("/run/vmguest"));
        assert!(dir.is_named_by("/run/vmguest/"));
        assert!(!dir.is_named_by("/tmp/evil"));
        assert!(!dir.is_named_by("qemu:///run/vmguest"));
        let ssh = HostSpec::Libvirt(computer_uri("kvm1"));
        assert!(ssh.is_named_by("qemu+ssh://kvm1/system"));
        assert!(ssh.is_named_by("QEMU+SSH://KVM1/system"));
        assert!(ssh.is_named_by("kvm1"));
        assert!(!ssh.is_named_by("kvm2"));
        assert!(!ssh.is_named_by("qemu+ssh://kvm1/system?command=/tmp/p"));
        assert!(!ssh.is_named_by("qemu+ext:///system?command=/tmp/p"));
        // An admin's URI with parameters is matched as it was given, and only so.
        let unix = HostSpec::Libvirt("qemu+unix:///system?socket=/d/libvirt-sock".into());
        assert!(unix.is_named_by("qemu+unix:///system?socket=/d/libvirt-sock"));
        assert!(!unix.is_named_by("qemu+unix:///system?socket=/e/libvirt-sock"));
    }

    mod host_strings {
        use super::super::*;
        use proptest::prelude::*;

        fn label() -> impl Strategy<Value = String> {
            "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
                .prop_filter("not all digits", |l| !l.bytes().all(|b| b.is_ascii_digit()))
        }

        fn name() -> impl Strategy<Value = String> {
            (
                proptest::option::of("[a-z_][a-z0-9._-]{0,10}"),
                proptest::collection::vec(label(), 1..4),
                proptest::option::of(1u16..=65535),
            )
                .prop_map(|(user, labels, port)| {
                    let mut s = user.map(|u| format!("{u}@")).unwrap_or_default();
                    s.push_str(&labels.join("."));
                    if let Some(p) = port {
                        s.push_str(&format!(":{p}"));
                    }
                    s
                })
        }

        proptest! {
            #[test]
            fn valid_names_are_accepted_and_make_a_plain_ssh_uri(n in name()) {
                prop_assert_eq!(check_computer_name(&n), Ok(()));
                let uri = computer_uri(&n);
                prop_assert_eq!(uri, format!("qemu+ssh://{n}/system"));
                prop_assert!(HostSpec::Libvirt(computer_uri(&n)).is_named_by(&n));
            }

            #[test]
            fn an_accepted_string_never_adds_a_path_query_or_fragment(s in "\\PC{0,40}") {
                if check_computer_name(&s).is_ok() {
                    let uri = computer_uri(&s);
                    let authority = &uri["qemu+ssh://".len()..uri.len() - "/system".len()];
                    prop_assert!(!authority.contains(['/', '?', '#', '&', '=', ';', ' ']));
                    prop_assert!(!authority.chars().any(char::is_control));
                    prop_assert!(!authority.starts_with('-'));
                }
            }

            #[test]
            fn a_name_with_uri_syntax_is_refused(
                n in name(),
                bad in "[/?#&=; \\t\\n\\x1b]",
                tail in "[a-z/=.]{0,12}",
            ) {
                let s = format!("{n}{bad}{tail}");
                prop_assert!(check_computer_name(&s).is_err(), "{:?} accepted", s);
            }
        }
    }
}

#[cfg(test)]
mod bases_tests {
    use super::*;

    #[test]
    fn another_users_base_directories_give_way_to_roots_own_home() {
        let dir = tempfile::tempdir().unwrap();
        let alice = dir.path().join("alice");
        let root = dir.path().join("root");
        std::fs::create_dir_all(alice.join(".cache")).unwrap();
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::chown(&alice, Some(65534), None)
            .expect("chown to uid 65534 (these tests run as root)");
        let env = Bases {
            config: Some(alice.join(".config")),
            data: Some(alice.join(".local/share")),
            cache: Some(alice.join(".cache")),
            state: Some(root.join("state")),
            runtime: Some(alice.join("run")),
        };
        let b = env.trusted_or(Some(&root));
        assert_eq!(
            b.runtime, None,
            "no VM directory under another user's runtime"
        );
        assert_eq!(b.config, Some(root.join(".config")));
        assert_eq!(b.data, Some(root.join(".local/share")));
        assert_eq!(b.cache, Some(root.join(".cache")));
        // A base that passes the rule stays as the environment says.
        assert_eq!(b.state, Some(root.join("state")));
    }
}
