//! The PVE API emulation (`tests/harness/pve_emulation.py`) for the tests of the
//! Proxmox VE backend: no real Proxmox VE server can run here, so an HTTPS server on
//! loopback answers the Proxmox VE REST API in front of REAL QEMU VMs, following
//! qemu-server's code per endpoint (see the script). This module generates its CA and
//! leaf certificate, writes its config, starts it (pid in the ledger, stopped by that
//! pid on drop), and starts the QEMU VMs with the device names qemu-server gives them
//! (`ide2` on `drive-ide2`). It also carries a small HTTPS client for the emulation's
//! own checks.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use vmguest::vm::{DvdDrive, VmControl};

use crate::fixtures::{ledger, workspace, Cd, Spec, TestVm};

/// The cluster's CA (as `pve-root-ca.pem`) and the node's leaf certificate.
pub struct Tls {
    /// Holds the files below; removed on drop.
    _dir: TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_der: Vec<u8>,
    /// The leaf's SHA-256 in the colon-separated upper-case hex `pvenode cert info`
    /// prints.
    pub fingerprint: String,
}

pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Tls {
    pub fn generate() -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::Builder::new().prefix("vmgtls").tempdir().unwrap();
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "PVE API emulation CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate().expect("leaf key");
        let mut leaf_params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "pve1.emulation.invalid");
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .expect("leaf certificate");
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca = write("pve-root-ca.pem", ca_cert.pem());
        let cert = write("pve-ssl.pem", leaf.pem());
        let key = write("pve-ssl.key", leaf_key.serialize_pem());
        Tls {
            fingerprint: colon_hex(&Sha256::digest(leaf.der())),
            ca_der: ca_cert.der().to_vec(),
            _dir: dir,
            ca,
            cert,
            key,
        }
    }
}

/// The CD-ROM drive `ide2` of a VM, as qemu-server creates it.
#[derive(Clone, Debug, Default)]
pub enum PveCd {
    /// `ide2: none,media=cdrom`
    #[default]
    Empty,
    /// No CD-ROM drive at all.
    None,
}

#[derive(Clone, Debug)]
pub struct PveVmSpec {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    /// Boot the test guest, with a qemu-ga channel; otherwise firmware only and no
    /// channel.
    pub boot: bool,
    pub cd: PveCd,
}

impl PveVmSpec {
    pub fn new(vmid: u32, name: &str, node: &str) -> PveVmSpec {
        PveVmSpec {
            vmid,
            name: name.to_owned(),
            node: node.to_owned(),
            boot: false,
            cd: PveCd::Empty,
        }
    }
}

/// A real QEMU VM laid out as qemu-server starts one: `-device ide-cd,bus=ide.1,unit=0,
/// drive=drive-ide2,id=ide2` on `-drive if=none,id=drive-ide2,media=cdrom`, QMP on
/// `VMID.qmp` (the emulation's, as /var/run/qemu-server/VMID.qmp) and `VMID.ctl` (the
/// test's own), qemu-ga on `VMID.qga`. No network interface. Everything else is
/// [`TestVm`]'s, named by the VMID.
pub struct PveVm {
    pub spec: PveVmSpec,
    vm: TestVm,
}

impl std::ops::Deref for PveVm {
    type Target = TestVm;
    fn deref(&self) -> &TestVm {
        &self.vm
    }
}

impl std::ops::DerefMut for PveVm {
    fn deref_mut(&mut self) -> &mut TestVm {
        &mut self.vm
    }
}

impl PveVm {
    pub fn start(spec: PveVmSpec) -> PveVm {
        let dir = tempfile::Builder::new().prefix("vmgpve").tempdir().unwrap();
        let cd = match spec.cd {
            PveCd::None => Cd::None,
            PveCd::Empty => Cd::PveIde2,
        };
        let vm = TestVm::start_in(
            dir,
            &spec.vmid.to_string(),
            Spec {
                boot: spec.boot,
                cd,
                ..Default::default()
            },
        );
        PveVm { spec, vm }
    }

    /// Start and wait until the guest agent answers.
    pub fn booted(vmid: u32, name: &str, node: &str, cd: PveCd) -> PveVm {
        let vm = PveVm::start(PveVmSpec {
            boot: true,
            cd,
            ..PveVmSpec::new(vmid, name, node)
        });
        vm.agent();
        vm
    }

    /// The config entries qemu-server would have for this VM.
    pub fn config(&self) -> BTreeMap<String, String> {
        let mut c = BTreeMap::new();
        c.insert("name".to_owned(), self.spec.name.clone());
        c.insert("memory".to_owned(), "256".to_owned());
        c.insert("ostype".to_owned(), "l26".to_owned());
        match &self.spec.cd {
            PveCd::None => {}
            PveCd::Empty => {
                c.insert("ide2".to_owned(), "none,media=cdrom".to_owned());
            }
        }
        if self.spec.boot {
            c.insert("agent".to_owned(), "1".to_owned());
        }
        c
    }

    /// This VM as the emulation's config lists it.
    pub fn entry(&self) -> EmuVm {
        EmuVm {
            vmid: self.spec.vmid,
            node: self.spec.node.clone(),
            qmp: self.path("qmp"),
            qga: self.spec.boot.then(|| self.path("qga")),
            config: self.config(),
        }
    }

    pub fn ide2(&self) -> DvdDrive {
        self.control()
            .dvd_drives()
            .expect("query-block")
            .into_iter()
            .find(|d| d.id == "ide2")
            .expect("no ide2 in query-block")
    }

    /// The file in ide2, as QEMU has it open.
    pub fn media_file(&self) -> Option<String> {
        self.ide2().media.map(|m| m.file)
    }
}

/// One VM in the emulation's config.
#[derive(Clone, Debug)]
pub struct EmuVm {
    pub vmid: u32,
    pub node: String,
    pub qmp: PathBuf,
    pub qga: Option<PathBuf>,
    pub config: BTreeMap<String, String>,
}

impl EmuVm {
    pub fn with(mut self, key: &str, value: &str) -> EmuVm {
        self.config.insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn without(mut self, key: &str) -> EmuVm {
        self.config.remove(key);
        self
    }

    /// The same VM listed under another VMID and name (a second config entry pointing
    /// at the same QEMU, for name clashes across nodes).
    pub fn alias(mut self, vmid: u32, node: &str) -> EmuVm {
        self.vmid = vmid;
        self.node = node.to_owned();
        self
    }
}

/// An API token of the emulation: `USER@REALM!TOKENID` and its secret, with privileges
/// (a bare privilege holds on every path, `(path, priv)` there and below).
#[derive(Clone, Debug)]
pub struct Token {
    pub id: String,
    pub secret: String,
    pub privileges: Vec<(Option<String>, String)>,
}

/// What a token needs for everything vmguest does through the API (the minimum the
/// README documents should be a subset).
pub const ALL_PRIVILEGES: &[&str] = &[
    "Sys.Audit",
    "VM.Audit",
    "VM.Config.CDROM",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.Unrestricted",
    "VM.GuestAgent.FileRead",
    "Datastore.Audit",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Allocate",
];

impl Token {
    pub fn new(id: &str, privileges: &[&str]) -> Token {
        // A fresh random secret per token (UUID-shaped, as `pveum user token add`
        // prints one).
        let mut raw = [0u8; 16];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .expect("reading /dev/urandom");
        let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        Token {
            id: id.to_owned(),
            secret: format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ),
            privileges: privileges.iter().map(|p| (None, (*p).to_owned())).collect(),
        }
    }

    pub fn full(id: &str) -> Token {
        Token::new(id, ALL_PRIVILEGES)
    }

    /// `USER@REALM!TOKENID=SECRET`, the value of `$PVE_API_TOKEN`.
    pub fn value(&self) -> String {
        format!("{}={}", self.id, self.secret)
    }
}

/// An ISO storage (`dir` type): `path` on the local node, and a directory of its own on
/// each other node (a non-shared `dir` storage is per node).
#[derive(Clone, Debug)]
pub struct Storage {
    pub id: String,
    pub enabled: bool,
    pub nodes: Option<Vec<String>>,
}

pub struct EmuSpec {
    pub vms: Vec<EmuVm>,
    pub tokens: Vec<Token>,
    pub storages: Vec<Storage>,
}

pub const CLUSTER: &str = "emucluster";
/// The node the emulation's endpoint runs on: this machine, by its short host name (the
/// backend uses a storage's path directly only when it runs on the VM's node). The tests
/// put their VMs on the two other nodes, `pve1` and `pve2`, unless they need this one.
pub fn local_node() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(rc, 0, "gethostname");
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let short = name.split('.').next().unwrap_or_default().to_owned();
    assert!(
        !short.is_empty() && short != "pve1" && short != "pve2",
        "this machine's host name {name:?} cannot name the emulation's local node"
    );
    short
}

/// The cluster's nodes: this machine first, then `pve1` and `pve2`.
pub fn nodes() -> Vec<String> {
    vec![local_node(), "pve1".to_owned(), "pve2".to_owned()]
}

/// A running PVE API emulation on 127.0.0.1 with its own TLS, storages and request log.
pub struct Emulation {
    pub port: u16,
    pub tls: Tls,
    pub dir: TempDir,
    child: Child,
}

impl Emulation {
    pub fn start(spec: EmuSpec) -> Emulation {
        let tls = Tls::generate();
        let dir = tempfile::Builder::new().prefix("vmgemu").tempdir().unwrap();
        let d = dir.path();
        let nodes = nodes();
        let storages: Vec<Value> = spec
            .storages
            .iter()
            .map(|s| {
                let mut node_paths = serde_json::Map::new();
                for n in &nodes {
                    node_paths.insert(n.clone(), json!(d.join(format!("storage-{}-{n}", s.id))));
                }
                json!({
                    "id": s.id,
                    "path": d.join(format!("storage-{}-{}", s.id, nodes[0])),
                    "node_paths": node_paths,
                    "content": ["iso", "vztmpl"],
                    "enabled": s.enabled,
                    "nodes": s.nodes,
                    "shared": false,
                })
            })
            .collect();
        let tokens: serde_json::Map<String, Value> = spec
            .tokens
            .iter()
            .map(|t| {
                let privs: Vec<Value> = t
                    .privileges
                    .iter()
                    .map(|(path, p)| match path {
                        Some(path) => json!([path, p]),
                        None => json!(p),
                    })
                    .collect();
                (
                    t.id.clone(),
                    json!({"secret": t.secret, "privileges": privs}),
                )
            })
            .collect();
        let vms: Vec<Value> = spec
            .vms
            .iter()
            .map(|v| {
                json!({
                    "vmid": v.vmid,
                    "node": v.node,
                    "qmp": v.qmp,
                    "qga": v.qga,
                    "config": v.config,
                })
            })
            .collect();
        let config = json!({
            "cluster": CLUSTER,
            "local_node": nodes[0],
            "nodes": nodes,
            "cert": tls.cert,
            "key": tls.key,
            "port": 0,
            "request_log": d.join("requests.log"),
            // pve-http-server delays every 401 by 3 s; kept, it is part of the contract.
            "unauthorized_delay": 3,
            "storages": storages,
            "tokens": tokens,
            "vms": vms,
        });
        let cfg_path = d.join("emulation.json");
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let stderr = std::fs::File::create(d.join("emulation.stderr")).unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg(workspace().join("tests/harness/pve_emulation.py"))
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .expect("spawning python3 (the PVE API emulation needs it)");
        ledger::record(child.id());
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut emu = Emulation {
            port: 0,
            tls,
            dir,
            child,
        };
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        emu.port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "the PVE API emulation did not start: {line:?}\n{}",
                    emu.stderr()
                )
            });
        emu
    }

    pub fn uri(&self) -> String {
        format!("pve://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, the host key of the config file's `[pve."..."]` table.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The directory of `storage`'s ISOs on `node` (`PATH/template/iso`).
    pub fn iso_dir(&self, storage: &str, node: &str) -> PathBuf {
        self.dir
            .path()
            .join(format!("storage-{storage}-{node}"))
            .join("template/iso")
    }

    /// Every request the emulation received (`METHOD PATH`), in order.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("emulation.stderr")).unwrap_or_default()
    }

    /// A client that trusts the emulation's CA.
    pub fn client(&self, token: Option<&Token>) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from(
                self.tls.ca_der.clone(),
            ))
            .expect("the emulation's CA");
        // ring, as the backend uses (no cmake or nasm); its post-quantum key exchange
        // is irrelevant on loopback.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Client {
            agent: ureq::AgentBuilder::new()
                .tls_config(Arc::new(config))
                .timeout(Duration::from_secs(60))
                .build(),
            base: format!("https://127.0.0.1:{}/api2/json", self.port),
            auth: token.map(|t| format!("PVEAPIToken={}", t.value())),
        }
    }
}

impl Drop for Emulation {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("PVE API emulation's stderr:\n{}", self.stderr());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        ledger::forget(self.child.id());
    }
}

/// A raw answer of the emulation: status, reason phrase, body (JSON or empty).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub reason: String,
    pub body: Value,
}

impl Reply {
    pub fn data(&self) -> &Value {
        assert_eq!(self.status, 200, "{self:?}");
        &self.body["data"]
    }
}

/// HTTPS to the emulation, for the checks of the emulation itself.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    auth: Option<String>,
}

impl Client {
    fn finish(result: Result<ureq::Response, ureq::Error>) -> Reply {
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("HTTPS to the emulation failed: {e}"),
        };
        let status = resp.status();
        let reason = resp.status_text().to_owned();
        let text = resp.into_string().unwrap_or_default();
        Reply {
            status,
            reason,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let r = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.auth {
            Some(a) => r.set("Authorization", a),
            None => r,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        Self::finish(self.request("GET", path).call())
    }

    /// A form-encoded PUT/POST, as most clients send them.
    pub fn send_form(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Reply {
        Self::finish(self.request(method, path).send_form(form))
    }

    /// A JSON PUT/POST.
    pub fn send_json(&self, method: &str, path: &str, body: Value) -> Reply {
        Self::finish(
            self.request(method, path)
                .set("Content-Type", "application/json")
                .send_string(&body.to_string()),
        )
    }

    /// `POST .../upload` as multipart/form-data in the order pve-http-server parses:
    /// content, checksum-algorithm, checksum, then the file part.
    pub fn upload(
        &self,
        node: &str,
        storage: &str,
        file: &Path,
        name: &str,
        checksum: Option<&str>,
    ) -> Reply {
        let boundary = "vmguest-emulation-boundary-7f3a";
        let mut body = Vec::new();
        let mut field = |name: &str, value: &str| {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        };
        field("content", "iso");
        if let Some(sum) = checksum {
            field("checksum-algorithm", "sha256");
            field("checksum", sum);
        }
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&std::fs::read(file).unwrap());
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Self::finish(
            self.request("POST", &format!("/nodes/{node}/storage/{storage}/upload"))
                .set(
                    "Content-Type",
                    &format!("multipart/form-data; boundary={boundary}"),
                )
                .send_bytes(&body),
        )
    }

    /// A multipart body exactly as given, to the upload endpoint.
    pub fn send_multipart(&self, node: &str, storage: &str, boundary: &str, body: &[u8]) -> Reply {
        Self::finish(
            self.request("POST", &format!("/nodes/{node}/storage/{storage}/upload"))
                .set(
                    "Content-Type",
                    &format!("multipart/form-data; boundary={boundary}"),
                )
                .send_bytes(body),
        )
    }

    /// Poll a task until it stops; its exit status.
    pub fn wait_task(&self, node: &str, upid: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let enc: String = upid
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        loop {
            let r = self.get(&format!("/nodes/{node}/tasks/{enc}/status"));
            let d = r.data();
            if d["status"] == "stopped" {
                return d["exitstatus"].as_str().unwrap_or_default().to_owned();
            }
            assert!(Instant::now() < deadline, "task {upid} never stopped");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
