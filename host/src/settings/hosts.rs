//! The hosts of a run: how they are named (a socket directory, a libvirt URI or a
//! Proxmox VE API endpoint), which ones a run searches, `-ComputerName`'s rule, and how a pipeline object's `host`
//! chooses among them (it never adds one).

use std::path::{Path, PathBuf};

use super::Overrides;

/// Where VMs are looked for: a socket directory, a libvirt host by its URI, or a
/// Proxmox VE cluster through its REST API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostSpec {
    /// A socket directory: one QMP and one agent socket per VM.
    Sockets(PathBuf),
    /// A libvirt host, by its URI.
    Libvirt(String),
    /// A Proxmox VE API endpoint, `pve://HOST[:PORT]` or `proxmox://HOST[:PORT]`, as
    /// written; [`PveAddress::parse`] reads it (a malformed one fails when first used).
    Pve(String),
}

/// The schemes that name a Proxmox VE API endpoint.
const PVE_SCHEMES: [&str; 2] = ["pve", "proxmox"];

/// Proxmox VE's API port (`pveproxy`).
pub const PVE_DEFAULT_PORT: u16 = 8006;

impl HostSpec {
    /// A `-ConnectionUri` (or `$LIBVIRT_DEFAULT_URI`) value: `pve://` and `proxmox://`
    /// name a Proxmox VE endpoint, anything else is libvirt's.
    pub fn from_uri(uri: String) -> HostSpec {
        let pve = uri
            .split_once("://")
            .is_some_and(|(scheme, _)| PVE_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s)));
        if pve {
            HostSpec::Pve(uri)
        } else {
            HostSpec::Libvirt(uri)
        }
    }

    /// `Get-VM`'s `host` column and a pipeline object's `host` property: a libvirt or
    /// Proxmox VE URI, or the socket directory.
    pub fn label(&self) -> String {
        match self {
            HostSpec::Sockets(dir) => dir.display().to_string(),
            HostSpec::Libvirt(uri) | HostSpec::Pve(uri) => uri.clone(),
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
            HostSpec::Pve(uri) => match (PveAddress::parse(uri), PveAddress::parse_label(label)) {
                (Ok(ours), Some(theirs)) => ours.same_endpoint(&theirs),
                _ => false,
            },
            HostSpec::Libvirt(uri) => {
                let ours = normal_uri(uri);
                ours == normal_uri(label)
                    || (check_computer_name(label).is_ok()
                        && ours == normal_uri(&computer_uri(label)))
            }
        }
    }
}

/// A Proxmox VE API endpoint as `pve://HOST[:PORT]` names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PveAddress {
    /// The host: a name, an IPv4 address, or an IPv6 address in brackets.
    pub host: String,
    /// The port; 8006 unless written.
    pub port: u16,
    /// The URI's authority as written (`HOST:PORT`, or `HOST` alone), which keys the
    /// host's `[pve."..."]` table in the config file.
    pub authority: String,
}

/// Why a `pve://` URI is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a Proxmox VE endpoint: write pve://HOST[:PORT] (or proxmox://), with no \
     user, path, query or fragment; HOST is a host name, an IPv4 address or an [IPv6] address"
)]
pub struct BadPveUri(pub String);

impl PveAddress {
    /// `pve://HOST[:PORT]` or `proxmox://HOST[:PORT]`, with an optional trailing `/`.
    /// The authority follows `-ComputerName`'s rule without a user, so nothing in it can
    /// add a path or a parameter to the URLs built from it.
    pub fn parse(uri: &str) -> Result<PveAddress, BadPveUri> {
        let bad = || BadPveUri(uri.to_owned());
        let (scheme, rest) = uri.split_once("://").ok_or_else(bad)?;
        if !PVE_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s)) {
            return Err(bad());
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        PveAddress::authority(authority).ok_or_else(bad)
    }

    /// A pipeline object's `host`: a URI, or a bare `HOST[:PORT]`.
    fn parse_label(label: &str) -> Option<PveAddress> {
        match label.contains("://") {
            true => PveAddress::parse(label).ok(),
            false => PveAddress::authority(label),
        }
    }

    fn authority(authority: &str) -> Option<PveAddress> {
        if authority.contains('@') || check_computer_name(authority).is_err() {
            return None;
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !authority.ends_with(']') => (h, p.parse().ok()?),
            _ => (authority, PVE_DEFAULT_PORT),
        };
        Some(PveAddress {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
        })
    }

    /// The same host (case-insensitive) and port.
    fn same_endpoint(&self, other: &PveAddress) -> bool {
        self.host.eq_ignore_ascii_case(&other.host) && self.port == other.port
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
pub(super) fn choose_hosts(
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
            .chain(uris.map(HostSpec::from_uri))
            .collect();
    }
    if env_dir || env_uri.is_some() {
        let dirs = env_dir.then(dir);
        return dirs
            .into_iter()
            .chain(env_uri.map(HostSpec::from_uri))
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

    #[test]
    fn pve_uris_name_an_endpoint_and_nothing_more() {
        let a = PveAddress::parse("pve://pve1.example.com").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("pve1.example.com", 8006));
        assert_eq!(a.authority, "pve1.example.com");
        let b = PveAddress::parse("PROXMOX://127.0.0.1:18006/").unwrap();
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 18006));
        assert_eq!(b.authority, "127.0.0.1:18006");
        let c = PveAddress::parse("pve://[::1]:8007").unwrap();
        assert_eq!((c.host.as_str(), c.port), ("[::1]", 8007));
        assert_eq!(PveAddress::parse("pve://[::1]").unwrap().port, 8006);
        for bad in [
            "pve://",
            "pve://root@h",
            "pve://h/api2/json",
            "pve://h?x=1",
            "pve://h#x",
            "pve://h:0",
            "pve://h:99999",
            "qemu:///system",
            "pve:/h",
        ] {
            assert!(PveAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            HostSpec::from_uri("pve://h".into()),
            HostSpec::Pve("pve://h".into())
        );
        assert_eq!(
            HostSpec::from_uri("Proxmox://h:1".into()),
            HostSpec::Pve("Proxmox://h:1".into())
        );
        assert_eq!(
            HostSpec::from_uri("qemu:///system".into()),
            HostSpec::Libvirt("qemu:///system".into())
        );
        // Mixed with the others, in order.
        let f = flags(Some("/d"), &["pve://a", "qemu:///system", "proxmox://b:1"]);
        assert_eq!(
            choose_hosts(&f, Path::new("/d"), false, None, None),
            vec![
                HostSpec::Sockets("/d".into()),
                HostSpec::Pve("pve://a".into()),
                HostSpec::Libvirt("qemu:///system".into()),
                HostSpec::Pve("proxmox://b:1".into()),
            ]
        );
    }

    #[test]
    fn a_pipeline_host_names_a_pve_endpoint_by_uri_or_authority() {
        let h = HostSpec::Pve("pve://PVE1:8006".into());
        for yes in [
            "pve://pve1:8006",
            "proxmox://pve1",
            "pve1",
            "PVE1:8006",
            "pve://pve1/",
        ] {
            assert!(h.is_named_by(yes), "{yes}");
        }
        for no in [
            "pve://pve1:8007",
            "pve2",
            "qemu+ssh://pve1/system",
            "pve://pve1/x",
            "/pve1",
        ] {
            assert!(!h.is_named_by(no), "{no}");
        }
        assert!(!HostSpec::Libvirt("qemu+ssh://pve1/system".into()).is_named_by("pve://pve1"));
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
