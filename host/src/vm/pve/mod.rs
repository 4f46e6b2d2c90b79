//! The Proxmox VE backend: a cluster's VMs through its REST API
//! (`-ConnectionUri pve://HOST[:PORT]`), behind [`Hypervisor`], [`Vm`], [`VmControl`]
//! and [`GuestAgent`], so the operation does not know it is not talking to QEMU.
//!
//! Why the API and not the node's sockets: VMs are known by name across the cluster,
//! Proxmox's own QMP polling is never kept waiting, and media changes go through the
//! VM's configuration, so `/etc/pve` stays true.
//!
//! Files: `client.rs` HTTPS and the token, `tls.rs` certificate checks, `token.rs` the
//! token, `api.rs` the typed endpoints, `drives.rs` the CD/DVD entries and tray state,
//! `control.rs` the run state and media changes, `storage.rs` the IC ISO on an ISO
//! storage, `agent.rs` the guest agent through the API, `cache.rs` what one run learns
//! of the cluster (asked once, shared by the worker threads).
//!
//! A VM is named by its Proxmox `name` or its VMID (digits; a VMID wins over a VM named
//! by those digits). A name that several VMs of the cluster share is refused, listing
//! their VMIDs and nodes, before anything is touched.

mod agent;
mod api;
mod cache;
mod client;
mod control;
mod drives;
mod storage;
mod tls;
mod token;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cache::{lock, RunCache};
use client::{ApiError, Client};
use serde_json::{Map, Value};
use tls::Fingerprint;
use token::ApiToken;

use super::{CallError, GuestAgent, Hypervisor, Placement, Timeouts, Vm, VmControl, VmError};

/// How long a configuration change's task may run.
const CONFIG_TASK: Duration = Duration::from_secs(120);

/// How long a configuration read may serve a second reader (see [`Target::config`]).
const CONFIG_REUSE: Duration = Duration::from_secs(10);

/// Where the API is: `HOST:PORT` as in a URL (`[::1]` bracketed), and the URI's
/// authority as written, which names the host in messages and journal keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub authority: String,
}

/// Where the token comes from.
#[derive(Clone)]
pub enum TokenSource {
    /// `$PVE_API_TOKEN`'s value.
    Env(String),
    /// A token file named in the config file.
    File(PathBuf),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Env(_) => f.write_str("Env(..)"),
            TokenSource::File(p) => f.debug_tuple("File").field(p).finish(),
        }
    }
}

/// One host's settings, resolved by the caller (the environment wins over the host's
/// table in the config file).
#[derive(Clone, Debug, Default)]
pub struct PveOptions {
    pub token: Option<TokenSource>,
    /// The CA to verify the API's certificate with, instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The pinned SHA-256 of the API's certificate.
    pub fingerprint: Option<String>,
    /// The ISO storage to use; else the first enabled ISO storage of the VM's node.
    pub storage: Option<String>,
}

/// Why the API could not be set up: a bad URI, no token, no usable TLS settings.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Uri(Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "no API token for {0}: set $PVE_API_TOKEN (USER@REALM!TOKENID=SECRET), or token_file \
         in the config file's [pve.\"{0}\"] table"
    )]
    NoToken(String),
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error(transparent)]
    Fingerprint(#[from] tls::BadFingerprint),
    #[error("TLS for {0}")]
    Tls(String, #[source] tls::TlsError),
}

/// A cluster, reached through one API endpoint.
pub struct PveHost {
    uri: String,
    endpoint: Result<Endpoint, Arc<SetupError>>,
    options: Arc<PveOptions>,
    timeouts: Timeouts,
    client: OnceLock<Result<Arc<Client>, Arc<SetupError>>>,
    run: Arc<RunCache>,
}

impl PveHost {
    /// A host to connect to on first use; `endpoint` is the URI read, or why it could
    /// not be (reported when the host is first used).
    pub fn new(
        uri: impl Into<String>,
        endpoint: Result<Endpoint, Box<dyn std::error::Error + Send + Sync>>,
        options: PveOptions,
        timeouts: Timeouts,
    ) -> PveHost {
        PveHost {
            uri: uri.into(),
            endpoint: endpoint.map_err(|e| Arc::new(SetupError::Uri(e))),
            options: Arc::new(options),
            timeouts,
            client: OnceLock::new(),
            run: Arc::default(),
        }
    }

    fn setup(&self, address: &Endpoint) -> Result<Client, SetupError> {
        let token = match &self.options.token {
            Some(TokenSource::Env(value)) => ApiToken::parse(value, "$PVE_API_TOKEN")?,
            Some(TokenSource::File(file)) => ApiToken::from_file(file)?,
            None => return Err(SetupError::NoToken(address.authority.clone())),
        };
        let pin = self
            .options
            .fingerprint
            .as_deref()
            .map(Fingerprint::parse)
            .transpose()?;
        let (tls, mismatch) = tls::client_config(self.options.ca_file.as_deref(), pin)
            .map_err(|e| SetupError::Tls(address.authority.clone(), e))?;
        Ok(Client::new(
            &address.host,
            address.port,
            token,
            tls,
            pin,
            mismatch,
            self.timeouts.call,
        ))
    }

    fn client(&self) -> Result<Arc<Client>, VmError> {
        let made = self.client.get_or_init(|| {
            let endpoint = self.endpoint.as_ref().map_err(Arc::clone)?;
            self.setup(endpoint).map(Arc::new).map_err(Arc::new)
        });
        made.clone().map_err(|e| VmError::Host {
            what: format!("cannot use the Proxmox VE API at {}", self.uri),
            source: Box::new(ArcError(e)),
        })
    }

    fn host_error(&self, what: &str, e: ApiError) -> VmError {
        VmError::Host {
            what: format!("{what} at {}", self.uri),
            source: Box::new(e),
        }
    }

    /// The cluster's name (or the node's, without a cluster), asked once per run: the
    /// workers that come meanwhile wait for that one answer; a failure is not kept.
    fn cluster(&self, client: &Client) -> Result<String, VmError> {
        let mut held = lock(&self.run.cluster);
        if let Some(name) = &*held {
            return Ok(name.clone());
        }
        let name = match api::cluster_name(client) {
            Ok(name) => name,
            // Without Sys.Audit on `/` the key is the endpoint's alone, as the admin
            // named it; the README asks for the privilege so the key stays one.
            Err(e @ ApiError::Forbidden { .. }) => {
                tracing::warn!(
                    "the cluster's name is not readable, journal keys use the endpoint alone: {}",
                    crate::hresult::chain(&e)
                );
                String::new()
            }
            Err(e) => return Err(self.host_error("reading the cluster's name", e)),
        };
        *held = Some(name.clone());
        Ok(name)
    }

    /// The cluster's QEMU VMs, listed once per run (workers that come meanwhile wait
    /// for that listing); a failure is not kept.
    fn inventory(&self, client: &Client) -> Result<Arc<Vec<api::Resource>>, VmError> {
        let mut held = lock(&self.run.inventory);
        if let Some(vms) = &*held {
            return Ok(vms.clone());
        }
        self.list_into(client, &mut held)
    }

    /// The VMs listed again, for a name `seen` did not know (a VM created during the
    /// run); a listing another worker made since `seen` is used as it is.
    fn refreshed(
        &self,
        client: &Client,
        seen: &Arc<Vec<api::Resource>>,
    ) -> Result<Arc<Vec<api::Resource>>, VmError> {
        let mut held = lock(&self.run.inventory);
        match &*held {
            Some(now) if !Arc::ptr_eq(now, seen) => Ok(now.clone()),
            _ => self.list_into(client, &mut held),
        }
    }

    fn list_into(
        &self,
        client: &Client,
        held: &mut Option<Arc<Vec<api::Resource>>>,
    ) -> Result<Arc<Vec<api::Resource>>, VmError> {
        let vms = Arc::new(api::qemu_vms(client).map_err(|e| self.host_error("listing VMs", e))?);
        *held = Some(vms.clone());
        Ok(vms)
    }

    /// The journal key's host part: the authority, in lower case, so `PVE1` and `pve1`
    /// are one host.
    fn authority(&self) -> String {
        match &self.endpoint {
            Ok(e) => e.authority.to_ascii_lowercase(),
            Err(_) => self.uri.clone(),
        }
    }
}

/// A setup error shared by every VM of the host.
#[derive(Debug)]
struct ArcError(Arc<SetupError>);

impl std::fmt::Display for ArcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ArcError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Which VM of `vms` a name means: a VMID (digits), else the one VM of that name.
fn resolve<'a>(vms: &'a [api::Resource], name: &str) -> Result<&'a api::Resource, Resolve> {
    if let Ok(vmid) = name.parse::<u32>() {
        if let Some(vm) = vms.iter().find(|r| r.vmid == vmid) {
            return Ok(vm);
        }
    }
    let named: Vec<&api::Resource> = vms
        .iter()
        .filter(|r| r.name.as_deref() == Some(name))
        .collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err(Resolve::None),
        many => Err(Resolve::Ambiguous(
            many.iter()
                .map(|r| format!("VMID {} on node {}", r.vmid, r.node))
                .collect(),
        )),
    }
}

enum Resolve {
    None,
    Ambiguous(Vec<String>),
}

impl Hypervisor for PveHost {
    /// Each VM by its name, or by its VMID where it has no name or shares it with
    /// another VM (so every name listed opens).
    fn names(&self) -> Result<Vec<String>, VmError> {
        let client = self.client()?;
        let vms = self.inventory(&client)?;
        let mut names: Vec<String> = vms
            .iter()
            .map(|r| match &r.name {
                Some(n) if vms.iter().filter(|o| o.name.as_ref() == Some(n)).count() == 1 => {
                    n.clone()
                }
                _ => r.vmid.to_string(),
            })
            .collect();
        names.sort();
        Ok(names)
    }

    fn location(&self) -> String {
        self.uri.clone()
    }

    /// The identity is `pve:CLUSTER/VMID@AUTHORITY`: a VMID is unique in its cluster,
    /// and the endpoint as the admin named it keeps another host from claiming it.
    fn open(&self, name: &str) -> Result<Box<dyn Vm>, VmError> {
        let client = self.client()?;
        let mut vms = self.inventory(&client)?;
        if matches!(resolve(&vms, name), Err(Resolve::None)) {
            vms = self.refreshed(&client, &vms)?;
        }
        let found = match resolve(&vms, name) {
            Ok(found) => found.clone(),
            Err(Resolve::None) => {
                return Err(VmError::Unknown(format!(
                    "no VM named {name:?} (name or VMID) on {}",
                    self.uri
                )))
            }
            // VM_E_VM_UNKNOWN (`VmError::Ambiguous`): the contract's outcome for a name
            // that does not single out a VM; nothing was touched, and the message lists
            // the candidates so the admin can name one by its VMID.
            Err(Resolve::Ambiguous(which)) => {
                return Err(VmError::Ambiguous(format!(
                    "the name {name:?} matches {} VMs on {}: {}; name one by its VMID",
                    which.len(),
                    self.uri,
                    which.join(", ")
                )))
            }
        };
        let cluster = self.cluster(&client)?;
        Ok(Box::new(PveVm {
            name: name.to_owned(),
            identity: format!("pve:{cluster}/{}@{}", found.vmid, self.authority()),
            target: Arc::new(Target {
                client,
                node: found.node,
                vmid: found.vmid,
                options: self.options.clone(),
                timeouts: self.timeouts,
                run: self.run.clone(),
                config_read: Mutex::new(None),
            }),
        }))
    }
}

/// One VM: where it is and how to reach it.
pub(crate) struct Target {
    client: Arc<Client>,
    node: String,
    vmid: u32,
    options: Arc<PveOptions>,
    timeouts: Timeouts,
    run: Arc<RunCache>,
    /// The last configuration read, while a second reader may still use it.
    config_read: Mutex<Option<(Instant, Map<String, Value>)>>,
}

impl Target {
    fn path(&self, tail: &str) -> String {
        format!("{}{tail}", api::vm_path(&self.node, self.vmid))
    }

    /// The configuration for a reader that writes nothing with it (the drives, whether
    /// the agent is on): a read made moments ago for the other such reader serves once
    /// more (Get-VM and the install each want both, one right after the other), else
    /// it is read. A write reads afresh ([`Target::config_for_write`]), so a reused
    /// read never decides a change.
    fn config(&self) -> Result<Map<String, Value>, CallError> {
        let mut held = lock(&self.config_read);
        if let Some((at, config)) = held.take() {
            if at.elapsed() < CONFIG_REUSE {
                return Ok(config);
            }
        }
        let config = self.read_config()?;
        *held = Some((Instant::now(), config.clone()));
        Ok(config)
    }

    /// A fresh read, for the digest of the write that follows; no later reader reuses
    /// a configuration read from before that write.
    fn config_for_write(&self) -> Result<Map<String, Value>, CallError> {
        lock(&self.config_read).take();
        self.read_config()
    }

    fn read_config(&self) -> Result<Map<String, Value>, CallError> {
        api::vm_config(&self.client, &self.node, self.vmid).map_err(call_error)
    }
}

/// An API failure as the VM traits report it. [`CallError`] is shared by every backend;
/// the API's error keeps its whole text there (request, status, Proxmox's message, the
/// token id on a 401, the path and privilege on a 403).
fn call_error(e: ApiError) -> CallError {
    CallError::Qapi {
        class: "Proxmox VE API".into(),
        desc: crate::hresult::chain(&e),
    }
}

struct PveVm {
    name: String,
    identity: String,
    target: Arc<Target>,
}

impl Vm for PveVm {
    fn name(&self) -> &str {
        &self.name
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn placement(&self) -> Option<Placement> {
        Some(Placement {
            node: self.target.node.clone(),
            vmid: self.target.vmid,
        })
    }

    /// A VM that Proxmox reports stopped is not running; a refusal (token, privilege,
    /// TLS) is the host's failure, not the VM's state.
    fn control(&self) -> Result<Box<dyn VmControl>, VmError> {
        let t = &self.target;
        let status = api::run_status(&t.client, &t.node, t.vmid).map_err(|e| VmError::Host {
            what: format!("VM {:?} (VMID {} on node {})", self.name, t.vmid, t.node),
            source: Box::new(e),
        })?;
        if status.status != "running" {
            return Err(VmError::NotRunning {
                what: format!(
                    "VM {:?} (VMID {} on node {}) is {}",
                    self.name, t.vmid, t.node, status.status
                ),
                source: CallError::Qapi {
                    class: "Proxmox VE API".into(),
                    desc: format!("status: {}", status.status),
                },
            });
        }
        Ok(Box::new(control::PveControl::new(
            self.target.clone(),
            status,
        )))
    }

    fn agent(&self) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
        agent::connect(self.target.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(vmid: u32, name: Option<&str>, node: &str) -> api::Resource {
        api::Resource {
            vmid,
            name: name.map(str::to_owned),
            node: node.into(),
            status: Some("running".into()),
            kind: "qemu".into(),
        }
    }

    #[test]
    fn names_resolve_by_vmid_or_unique_name() {
        let vms = [
            vm(100, Some("web"), "pve1"),
            vm(101, Some("db"), "pve1"),
            vm(102, Some("db"), "pve2"),
            vm(103, Some("100"), "pve2"),
        ];
        assert_eq!(resolve(&vms, "web").ok().map(|r| r.vmid), Some(100));
        assert_eq!(resolve(&vms, "101").ok().map(|r| r.vmid), Some(101));
        // A VMID wins over a name of digits.
        assert_eq!(resolve(&vms, "100").ok().map(|r| r.vmid), Some(100));
        assert!(matches!(resolve(&vms, "nope"), Err(Resolve::None)));
        match resolve(&vms, "db") {
            Err(Resolve::Ambiguous(which)) => {
                assert_eq!(which, ["VMID 101 on node pve1", "VMID 102 on node pve2"])
            }
            _ => panic!("db is two VMs"),
        }
    }

    #[test]
    fn an_environment_token_is_never_shown() {
        let o = PveOptions {
            token: Some(TokenSource::Env("u@pve!t=s3cr3t".into())),
            ..PveOptions::default()
        };
        assert!(!format!("{o:?}").contains("s3cr3t"));
    }

    #[test]
    fn a_host_without_a_token_says_how_to_give_one() {
        let endpoint = Endpoint {
            host: "pve1".into(),
            port: 8006,
            authority: "pve1:8006".into(),
        };
        let host = PveHost::new(
            "pve://pve1:8006",
            Ok(endpoint),
            PveOptions::default(),
            Timeouts::default(),
        );
        let e = host.names().unwrap_err();
        let shown = crate::hresult::chain(&e);
        assert!(
            shown.contains("PVE_API_TOKEN") && shown.contains("[pve.\"pve1:8006\"]"),
            "{shown}"
        );
        assert_eq!(e.hresult(), crate::hresult::HResult::DispException);
        let bad = PveHost::new(
            "pve://h/x",
            Err("pve://h/x is not a Proxmox VE endpoint".into()),
            PveOptions::default(),
            Timeouts::default(),
        );
        let Err(e) = bad.open("x") else {
            panic!("a malformed URI opened a VM")
        };
        assert!(crate::hresult::chain(&e).contains("not a Proxmox VE endpoint"));
    }
}
