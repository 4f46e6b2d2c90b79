//! The libvirt backend: a host's domains behind [`Hypervisor`], [`VmControl`] and
//! [`GuestAgent`], so the operation, the ISO policy and the plugins do not know whether a
//! VM came from a socket directory or from libvirt.
//!
//! libvirt's own C library (Debian's `libvirt0`) does the talking, so every transport
//! libvirt has (`qemu:///system`, `qemu+ssh://`, `qemu+tcp://`, unix sockets) and its
//! authentication (ssh keys, socket permissions, SASL) come for free, and no RPC is
//! hand-rolled. It is loaded on first use, not linked ([`ffi`] says why). `quick-xml`
//! (serde) reads the live domain XML and writes the `<disk>` element that changes media.
//!
//! One connection per host is opened on first use and shared by every VM of that host
//! (libvirt connections are thread-safe), so a fleet pays one ssh handshake per host.
//! A domain is looked up once, when it is opened ([`Hypervisor::open`]); its handle
//! serves the monitor, the agent and the identity, so an install costs one lookup.
//!
//! Files: `ffi.rs` the C calls, `domain.rs` the drives, `xml.rs` the domain XML,
//! `agent.rs` the agent channel.
//!
//! Media changes are what `virsh change-media --live` does: `virDomainUpdateDeviceFlags`
//! with the drive's `<disk>` element, with or without a `<source>`. vmguest never passes
//! `VIR_DOMAIN_DEVICE_MODIFY_FORCE`: a forced eject breaks the guest's tray lock.
//!
//! A cdrom holds media when its `<source>` has any attribute (but libvirt's own `index`)
//! or any child: a storage-pool volume (`type='volume'`, `pool`/`volume`) or a network
//! source holds media as a file does. Only a plain file or block device is described by
//! its path alone. Anything more (a volume, `startupPolicy`, `auth`, `encryption`,
//! `seclabel`, ...) is kept as the disk's `type` and its whole `<source>` (with any
//! disk-level `<auth>` and `<encryption>`) in [`Media::exact`](crate::vm::Media::exact), written back verbatim
//! when borrowed media goes back, and compared with the live XML afterwards: a restore
//! that libvirt did not take exactly is an error, not a success. A disk `type` that
//! vmguest does not know how to write back is never borrowed ([`VmControl::can_restore`]).
//!
//! The IC ISO reaches libvirt as a path ([`VmControl::stage_iso`]'s default): right
//! before the media change vmguest checks that the path still names the file it opened,
//! hashed and checked ([`crate::vm::same_file`]); then `virDomainUpdateDeviceFlags` goes to
//! the daemon, and QEMU, told by libvirt, opens the path. A file renamed over the path
//! in that window (one update round trip, after the check and before QEMU's open) is
//! what the VM gets; only someone who can write the ISO's directory can do that, which
//! the trust rule on IC files (`crate::trust`) keeps to root and the effective user.
//! Closing the window takes handing over the checked descriptor: `virDomainFDAssociate`
//! and `<source file='...' fdgroup='NAME'/>` (libvirt 9.0 and later, and only over a
//! local unix socket: `qemu+ssh://` cannot pass descriptors). With Debian 12's libvirt
//! 9.0.0 the association succeeds, but a live media change with that fd group fails in
//! QEMU's `blockdev-add` ("Could not dup FD for /dev/fdset/1 flags 0: No such file or
//! directory": QEMU has no such fd set), so vmguest does not use it.
//!
//! The guest agent is reached through `virDomainQemuAgentCommand`, with the same command
//! types (`qapi-qga`) and the same file and exec logic as the socket backend.

mod agent;
mod domain;
pub mod ffi;
mod xml;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use ffi::{Code, Connect, Domain, Error as VirtError};

use super::{CallError, GuestAgent, Hypervisor, Timeouts, Vm, VmControl, VmError};
use domain::LibvirtVm;
use xml::live_xml;

/// The agent channel's name in the domain XML; without it libvirt says "QEMU guest agent
/// is not configured", and vmguest falls back to autorun.
const AGENT_CHANNEL: &str = "org.qemu.guest_agent.0";

/// An open connection, closed when the last VM of its host lets go of it.
struct Conn(Connect);

/// One libvirt host, named by its connection URI.
pub struct LibvirtHost {
    uri: String,
    timeouts: Timeouts,
    conn: OnceLock<Result<Arc<Conn>, VirtError>>,
}

impl LibvirtHost {
    /// A host to connect to on first use. The URI is passed to libvirt as it is; an empty
    /// URI is libvirt's default (`LIBVIRT_DEFAULT_URI`, then its own probing).
    pub fn new(uri: impl Into<String>, timeouts: Timeouts) -> LibvirtHost {
        LibvirtHost {
            uri: uri.into(),
            timeouts,
            conn: OnceLock::new(),
        }
    }

    fn conn(&self) -> Result<Arc<Conn>, VmError> {
        let opened = self.conn.get_or_init(|| {
            let t = Instant::now();
            let uri = (!self.uri.is_empty()).then_some(self.uri.as_str());
            let conn = Connect::open(uri).map(|c| Arc::new(Conn(c)));
            tracing::debug!(uri = %self.uri, ms = t.elapsed().as_millis() as u64, ok = conn.is_ok(), "libvirt connect");
            conn
        });
        opened.clone().map_err(|e| VmError::Host {
            what: format!("cannot connect to libvirt at {}", self.shown_uri()),
            source: Box::new(e),
        })
    }

    fn shown_uri(&self) -> &str {
        if self.uri.is_empty() {
            "libvirt's default URI"
        } else {
            &self.uri
        }
    }

    /// The domain, or [`VmError::Unknown`] naming this host.
    fn domain(&self, conn: &Conn, name: &str) -> Result<Domain, VmError> {
        if name.is_empty() || name.contains('\0') {
            return Err(self.unknown(name));
        }
        match Domain::lookup_by_name(&conn.0, name) {
            Ok(d) => Ok(d),
            Err(e) if e.code() == Code::NoDomain => Err(self.unknown(name)),
            Err(e) => Err(VmError::Host {
                what: format!("looking up domain {name:?} on {}", self.shown_uri()),
                source: Box::new(e),
            }),
        }
    }

    fn unknown(&self, name: &str) -> VmError {
        VmError::Unknown(format!("no domain named {name:?} on {}", self.shown_uri()))
    }
}

impl Drop for LibvirtHost {
    fn drop(&mut self) {
        tracing::debug!(uri = %self.uri, lookups = ffi::lookups(), "libvirt domain lookups in this process");
    }
}

impl Hypervisor for LibvirtHost {
    fn names(&self) -> Result<Vec<String>, VmError> {
        let conn = self.conn()?;
        let domains = conn.0.list_all_domains().map_err(|e| VmError::Host {
            what: format!("listing domains on {}", self.shown_uri()),
            source: Box::new(e),
        })?;
        let mut names: Vec<String> = domains.iter().filter_map(|d| d.name().ok()).collect();
        names.sort();
        Ok(names)
    }

    fn location(&self) -> String {
        self.shown_uri().to_owned()
    }

    /// The domain's UUID on this host, as the admin named the host (its URI), is its
    /// identity. The UUID alone would let any host of a run claim another host's domain
    /// by defining one with its UUID, and have this host's journal entry restored into it
    /// (`crate::journal`). The price: one domain reached through two URIs (ssh and local)
    /// is two VMs to the journal and the lock. The UUID has a fixed length, so `UUID@URI`
    /// is unambiguous.
    fn open(&self, name: &str) -> Result<Box<dyn Vm>, VmError> {
        let conn = self.conn()?;
        let domain = self.domain(&conn, name)?;
        let identity = match domain.uuid_string() {
            Ok(uuid) => format!("libvirt:{uuid}@{}", self.uri),
            Err(_) => format!("libvirt-name:{name}@{}", self.uri),
        };
        Ok(Box::new(LibvirtDomain {
            name: name.to_owned(),
            identity,
            domain: Arc::new(domain),
            conn,
            timeouts: self.timeouts,
        }))
    }
}

/// One domain, looked up once.
struct LibvirtDomain {
    name: String,
    identity: String,
    domain: Arc<Domain>,
    conn: Arc<Conn>,
    timeouts: Timeouts,
}

impl Vm for LibvirtDomain {
    fn name(&self) -> &str {
        &self.name
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn control(&self) -> Result<Box<dyn VmControl>, VmError> {
        Ok(Box::new(LibvirtVm::new(
            self.domain.clone(),
            self.conn.clone(),
        )))
    }

    fn agent(&self) -> Result<Option<Box<dyn GuestAgent>>, CallError> {
        let xml = live_xml(&self.domain)?;
        if !xml.devices.channel.iter().any(|c| c.is_agent()) {
            return Ok(None);
        }
        Ok(Some(agent::connect(self.domain.clone(), self.timeouts)?))
    }
}
