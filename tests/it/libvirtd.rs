//! Real libvirt daemons for the tests, each standing for one host, and an sshd on
//! loopback for `qemu+ssh://`.
//!
//! Debian's `libvirtd` runs here without systemd. Each daemon gets its own config,
//! state, run, log and cache directories, bound over `/etc/libvirt`, `/var/lib/libvirt`,
//! `/run/libvirt`, ... in a private mount namespace (`unshare --mount`), so two daemons
//! never share a file and the machine's own libvirt is never touched. Its socket is
//! reached from outside as `qemu+unix:///system?socket=DIR/run/libvirt-sock`.
//! `qemu.conf` runs QEMU as root without a security driver, cgroups, namespaces or
//! virtlogd. Domains have no network interface; no libvirt network is defined, so the
//! default NAT network never starts.
//!
//! Everything is stopped by pid when the fixture drops, even after a failed assertion:
//! the domains are destroyed through libvirt, then any QEMU whose pid file libvirt wrote
//! is killed by that pid, then the daemon (which also has PR_SET_PDEATHSIG).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use virt::connect::Connect;
use virt::domain::Domain;

use crate::fixtures::{guest_image, ledger, qemu, Cd};

/// Directories the daemon keeps to itself, as (ours, the system path it is bound over).
const BINDS: &[(&str, &str)] = &[
    ("etc", "/etc/libvirt"),
    ("lib", "/var/lib/libvirt"),
    ("run", "/run/libvirt"),
    ("log", "/var/log/libvirt"),
    ("cache", "/var/cache/libvirt"),
];

fn binary(name: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: scripts/deps.sh installs it (these tests fail rather than skip)"
            )
        })
}

fn kill_pid(pid: u32) {
    // SAFETY: kill(2) on a pid this fixture recorded.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
}

pub struct Libvirtd {
    pub dir: TempDir,
    child: Child,
    names: Vec<String>,
    /// QEMUs libvirt started, by pid and start time.
    qemus: Vec<(u32, Option<String>)>,
}

/// A domain to start: the test guest (with its agent) or firmware only.
#[derive(Clone, Debug, Default)]
pub struct DomainSpec {
    pub boot: bool,
    pub cd: Cd,
    /// An agent channel; the test guest answers on it when booted.
    pub agent: bool,
    /// Defined but not started.
    pub shut_off: bool,
    /// The domain's UUID; libvirt makes one up without it.
    pub uuid: Option<String>,
    /// The cdrom's whole `<disk>` element, in place of `cd`.
    pub cd_xml: Option<String>,
}

impl Libvirtd {
    pub fn start() -> Libvirtd {
        let dir = tempfile::Builder::new().prefix("vmglv").tempdir().unwrap();
        let d = dir.path();
        for (ours, _) in BINDS {
            std::fs::create_dir_all(d.join(ours)).unwrap();
        }
        std::fs::write(
            d.join("etc/libvirtd.conf"),
            format!(
                "unix_sock_rw_perms = \"0700\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n\
                 log_outputs = \"3:file:{}/log/libvirtd.log\"\n",
                d.display()
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("etc/qemu.conf"),
            "user = \"root\"\ngroup = \"root\"\nsecurity_driver = \"none\"\n\
             dynamic_ownership = 0\nremember_owner = 0\ncgroup_controllers = [ ]\n\
             namespaces = [ ]\nstdio_handler = \"file\"\n",
        )
        .unwrap();
        // Bind our directories over the system ones, then become libvirtd (exec keeps
        // the pid, so the pid recorded is the daemon's).
        let script = "set -e; d=$1; shift; while [ $# -gt 0 ]; do mkdir -p \"$2\"; \
                      mount --bind \"$d/$1\" \"$2\"; shift 2; done; \
                      exec libvirtd -f \"$d/etc/libvirtd.conf\" -p \"$d/run/libvirtd.pid\"";
        let mut cmd = Command::new(binary("unshare"));
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(d);
        for (ours, system) in BINDS {
            cmd.args([ours, system]);
        }
        binary("libvirtd");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("stderr")).unwrap());
        // SAFETY: prctl only sets a flag on the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning libvirtd");
        ledger::record(child.id());
        let mut daemon = Libvirtd {
            dir,
            child,
            names: Vec::new(),
            qemus: Vec::new(),
        };
        daemon.wait_ready();
        daemon
    }

    /// The daemon's pid: its mount namespace is where `/run/libvirt/libvirt-sock` is
    /// this daemon's, as on a libvirt host.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("run/libvirt-sock")
    }

    pub fn uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket().display())
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "libvirtd exited at start ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
                );
            }
            if self.socket().exists() && Connect::open(Some(&self.uri())).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "libvirtd never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn connect(&self) -> Connect {
        Connect::open(Some(&self.uri())).expect("connecting to the test libvirtd")
    }

    /// Start (or only define) a domain; its QEMU's pid goes into the ledger.
    pub fn domain(&mut self, name: &str, spec: DomainSpec) {
        let xml = self.domain_xml(name, &spec);
        let mut conn = self.connect();
        self.names.push(name.to_owned());
        if spec.shut_off {
            Domain::define_xml(&conn, &xml).expect("defining the domain");
        } else {
            Domain::create_xml(&conn, &xml, 0).expect("starting the domain");
            if let Some(pid) = self.qemu_pid(name) {
                ledger::record(pid);
                self.qemus.push((pid, ledger::start_time(pid)));
            }
        }
        let _ = conn.close();
    }

    fn qemu_pid(&self, name: &str) -> Option<u32> {
        let file = self.dir.path().join(format!("run/qemu/{name}.pid"));
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    }

    /// Wait until a domain's serial console (a file) shows `marker`.
    pub fn wait_for_console(&self, name: &str, marker: &str) {
        let path = self.dir.path().join(format!("{name}.console"));
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(marker)
        {
            assert!(
                Instant::now() < deadline,
                "{marker:?} never appeared on {name}'s console"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn domain_xml(&self, name: &str, spec: &DomainSpec) -> String {
        let d = self.dir.path().display();
        let os = if spec.boot {
            let (kernel, initrd) = guest_image();
            format!(
                "<kernel>{}</kernel><initrd>{}</initrd><cmdline>console=ttyS0 panic=-1</cmdline>",
                kernel.display(),
                initrd.display()
            )
        } else {
            String::new()
        };
        let uuid = spec
            .uuid
            .as_ref()
            .map(|u| format!("<uuid>{u}</uuid>"))
            .unwrap_or_default();
        let cd = match &spec.cd {
            _ if spec.cd_xml.is_some() => spec.cd_xml.clone().unwrap_or_default(),
            Cd::None => String::new(),
            Cd::Empty | Cd::PveIde2 => {
                "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
                          <target dev='hdc' bus='ide'/><readonly/></disk>"
                    .into()
            }
            Cd::With(iso) => format!(
                "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
                 <source file='{}'/><target dev='hdc' bus='ide'/><readonly/></disk>",
                iso.display()
            ),
        };
        let agent = if spec.agent {
            "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        } else {
            ""
        };
        format!(
            "<domain type='qemu'><name>{name}</name>{uuid}<memory unit='MiB'>256</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type>{os}</os>\
             <on_reboot>destroy</on_reboot><devices><emulator>{}</emulator>{cd}\
             <serial type='file'><source path='{d}/{name}.console'/></serial>{agent}\
             <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>",
            qemu().display()
        )
    }

    /// Run a shell command in a booted domain's guest through libvirt's agent channel.
    pub fn guest_sh(&self, name: &str, script: &str) -> (i64, String) {
        let conn = self.connect();
        let dom = Domain::lookup_by_name(&conn, name).unwrap();
        let call = |json: String| -> serde_json::Value {
            let deadline = Instant::now() + Duration::from_secs(180);
            loop {
                match dom.qemu_agent_command(&json, 30, 0) {
                    Ok(r) => {
                        return serde_json::from_str::<serde_json::Value>(&r).unwrap()["return"]
                            .clone()
                    }
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(500))
                    }
                    Err(e) => panic!("agent: {e}"),
                }
            }
        };
        let exec = serde_json::json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", script], "capture-output": true}});
        let pid = call(exec.to_string())["pid"].as_i64().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = call(
                serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}})
                    .to_string(),
            );
            if st["exited"].as_bool() == Some(true) {
                use base64::Engine;
                let out = st["out-data"].as_str().unwrap_or("");
                let out = base64::engine::general_purpose::STANDARD
                    .decode(out)
                    .unwrap_or_default();
                return (
                    st["exitcode"].as_i64().unwrap_or(-1),
                    String::from_utf8_lossy(&out).into_owned(),
                );
            }
            assert!(Instant::now() < deadline, "guest command hung: {script}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A started `dir` storage pool in this daemon's own directory holding one volume
    /// with `content`; transient, so it goes with the daemon.
    pub fn dir_pool_volume(&self, pool: &str, volume: &str, content: &[u8]) {
        let dir = self.dir.path().join(format!("pool-{pool}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(volume), content).unwrap();
        let conn = self.connect();
        let xml = format!(
            "<pool type='dir'><name>{pool}</name><target><path>{}</path></target></pool>",
            dir.display()
        );
        virt::storage_pool::StoragePool::create_xml(&conn, &xml, 0).expect("starting the pool");
    }

    /// The live domain XML's cdrom `<disk>` element, as libvirt writes it.
    pub fn cdrom_xml(&self, name: &str) -> String {
        let conn = self.connect();
        let dom = Domain::lookup_by_name(&conn, name).unwrap();
        let xml = dom.get_xml_desc(0).unwrap();
        let start = xml.find("<disk type=").expect("a disk");
        let disk = &xml[start..];
        let at = disk
            .match_indices("<disk ")
            .map(|(i, _)| i)
            .find(|i| {
                disk[*i..]
                    .split('>')
                    .next()
                    .unwrap()
                    .contains("device='cdrom'")
            })
            .expect("a cdrom");
        let disk = &disk[at..];
        let end = disk.find("</disk>").expect("the cdrom's end") + "</disk>".len();
        disk[..end].to_owned()
    }

    /// What the live domain XML says is in drive hdc.
    pub fn media(&self, name: &str) -> Option<String> {
        let conn = self.connect();
        let dom = Domain::lookup_by_name(&conn, name).unwrap();
        let xml = dom.get_xml_desc(0).unwrap();
        let disk = xml.split("<disk").find(|d| d.contains("device='cdrom'"))?;
        let start = disk.find("<source file='")? + "<source file='".len();
        Some(disk[start..].split('\'').next()?.to_owned())
    }

    pub fn set_paused(&self, name: &str, paused: bool) {
        let conn = self.connect();
        let dom = Domain::lookup_by_name(&conn, name).unwrap();
        if paused {
            dom.suspend().expect("suspend");
        } else {
            dom.resume().expect("resume");
        }
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        if let Ok(conn) = Connect::open(Some(&self.uri())) {
            for name in &self.names {
                if let Ok(dom) = Domain::lookup_by_name(&conn, name) {
                    let _ = dom.destroy();
                    let _ = dom.undefine();
                }
            }
        }
        // Still alive only if libvirt could not destroy it; the pid is the one recorded
        // at start, told apart from a later process with that pid by its start time.
        for (pid, started) in &self.qemus {
            if started.is_some() && ledger::start_time(*pid) == *started {
                kill_pid(*pid);
            }
            ledger::forget(*pid);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        ledger::forget(self.child.id());
    }
}

/// An sshd on a loopback port that lets this user in with a key made for the test, and
/// the `qemu+ssh://` URI that reaches a daemon through it.
pub struct Sshd {
    dir: TempDir,
    child: Child,
    port: u16,
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new().prefix("vmgssh").tempdir().unwrap();
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let st = Command::new(binary("ssh-keygen"))
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .unwrap();
            assert!(st.success(), "ssh-keygen");
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        // Privilege separation needs this directory on Debian.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\n",
                d = d.display()
            ),
        )
        .unwrap();
        // The client side: ssh with this test's known_hosts, never the user's.
        let wrapper = d.join("ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec ssh -o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=no -o BatchMode=yes -o LogLevel=ERROR \"$@\"\n",
                d = d.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cmd = Command::new(binary("sshd"));
        cmd.args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap());
        // SAFETY: prctl only sets a flag on the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning sshd");
        ledger::record(child.id());
        let sshd = Sshd { dir, child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd never listened: {}",
                std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// `qemu+ssh://` to `daemon` through this sshd, with the test's key and ssh wrapper.
    pub fn uri(&self, daemon: &Libvirtd) -> String {
        let d = self.dir.path().display();
        format!(
            "qemu+ssh://root@127.0.0.1:{}/system?socket={}&keyfile={d}/client_key&command={d}/ssh&proxy=netcat&no_verify=1",
            self.port,
            daemon.socket().display()
        )
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        ledger::forget(self.child.id());
    }
}
