//! Real QEMU processes for the tests: the tiny test guest, IC ISOs built with xorriso,
//! and the `vmguest` binary itself.
//!
//! Every VM is killed when its [`TestVm`] drops, including on a failed assertion, and
//! QEMU gets PR_SET_PDEATHSIG so it dies with the test process even on abort. Missing
//! QEMU or xorriso makes a test fail, never skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use vmguest::vm::qemu::{QemuAgent, QemuVm};
use vmguest::vm::{DvdDrive, ExecStatus, GuestAgent, VmControl};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn require(tool: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!("{tool} not found: install the Debian package {package} (these tests need it and fail rather than skip)")
    })
}

pub fn qemu() -> PathBuf {
    require("qemu-system-x86_64", "qemu-system-x86")
}

/// The QEMUs this suite started, by pid and start time, in `$VMGUEST_TEST_PIDS` (set by
/// scripts/test.sh). After the suite, test.sh checks exactly these pids, so a leak is
/// found without ever matching an admin's own VMs by name.
pub mod ledger {
    fn path(pid: u32) -> Option<std::path::PathBuf> {
        std::env::var_os("VMGUEST_TEST_PIDS")
            .map(|d| std::path::Path::new(&d).join(pid.to_string()))
    }

    /// Field 22 of /proc/PID/stat: tells this process apart from a later one with its pid.
    pub fn start_time(pid: u32) -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(19)
            .map(str::to_owned)
    }

    pub fn record(pid: u32) {
        if let (Some(path), Some(start)) = (path(pid), start_time(pid)) {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::write(path, start).expect("writing the test pid ledger");
        }
    }

    pub fn forget(pid: u32) {
        if let Some(path) = path(pid) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Kernel and initrd of the test guest, built once (under a lock, for parallel test
/// processes) and cached in target/vmguest-guest.
pub fn guest_image() -> &'static (PathBuf, PathBuf) {
    static IMAGE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let out = workspace().join("target/vmguest-guest");
        let script = workspace().join("tests/guest/build-guest.sh");
        build_once(
            &out,
            "bash",
            &script,
            &[&out],
            "building the test guest failed",
        );
        (out.join("vmlinuz"), out.join("initrd.img"))
    })
}

/// Kernel, initramfs and root disk image of the Debian 12 guest (systemd, udev, Debian's
/// qemu-guest-agent), built once by tests/guest/build-debian-guest.sh and cached in
/// target/vmguest-debian-guest. Its kernel is the busybox guest's, so that is built first.
pub fn debian_image() -> &'static DebianImage {
    static IMAGE: OnceLock<DebianImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let (kernel, _) = guest_image();
        let guest = kernel.parent().expect("the guest's directory");
        let out = workspace().join("target/vmguest-debian-guest");
        let script = workspace().join("tests/guest/build-debian-guest.sh");
        build_once(
            &out,
            "bash",
            &script,
            &[&out, guest],
            "building the Debian test guest failed",
        );
        DebianImage {
            kernel: out.join("vmlinuz"),
            initrd: out.join("initrd.img"),
            root: out.join("root.img"),
        }
    })
}

pub struct DebianImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Raw ext4; never written: each VM boots it through a copy-on-write overlay.
    pub root: PathBuf,
}

/// Run a build script under a lock in `out`, so parallel test processes build once.
fn build_once(out: &Path, shell: &str, script: &Path, args: &[&Path], failed: &str) {
    std::fs::create_dir_all(out).unwrap();
    let status = Command::new(require("flock", "util-linux"))
        .arg(out.join("build.lock"))
        .arg(shell)
        .arg(script)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{failed}");
}

/// An IC ISO of this project's format: a manifest plus `install.sh` with `script`.
pub fn ic_iso(dir: &Path, file: &str, version: &str, script: &str) -> PathBuf {
    let src = dir.join(format!("{file}.d"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("vmguest-ic.toml"),
        format!(
            "[components]\nfamily = \"vmguest\"\nname = \"vmguest test components\"\n\
             version = \"{version}\"\n\n[install.linux]\ncommand = \"sh ./install.sh\"\n"
        ),
    )
    .unwrap();
    std::fs::write(src.join("install.sh"), script).unwrap();
    let volid = format!("VMGUEST_IC_{}", version.replace('.', "_"));
    mkisofs(&src, &dir.join(file), &volid)
}

/// Build an ISO 9660 image (Rock Ridge and Joliet names) of `src`.
pub fn mkisofs(src: &Path, iso: &Path, volid: &str) -> PathBuf {
    let out = Command::new(require("xorriso", "xorriso"))
        .args(["-as", "mkisofs", "-R", "-J", "-V", volid, "-o"])
        .arg(iso)
        .arg(src)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xorriso: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    iso.to_owned()
}

/// The example plugins and fixture components, built once per test run for
/// wasm32-wasip2 by scripts/build-plugins.sh; returns the directory of the .wasm files.
pub fn wasm_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = workspace().join("target/wasm");
        let script = workspace().join("scripts/build-plugins.sh");
        build_once(&out, "sh", &script, &[], "building the plugins failed");
        out.join("wasm32-wasip2/release")
    })
}

/// A plugin to install into a test plugin directory.
pub struct PluginSpec<'a> {
    pub name: &'a str,
    /// The built component, for example "pin_versions".
    pub wasm: &'a str,
    pub wit: &'a str,
    /// Extra manifest TOML: [settings], [grants], [limits].
    pub extra: String,
}

impl<'a> PluginSpec<'a> {
    pub fn new(name: &'a str, wasm: &'a str, extra: impl Into<String>) -> Self {
        PluginSpec {
            name,
            wasm,
            wit: "0.2.0",
            extra: extra.into(),
        }
    }
}

/// A plugin directory (mode 0700, like a real one) with manifests pinned to the
/// components' SHA-256.
pub fn plugin_dir(plugins: &[PluginSpec]) -> TempDir {
    let dir = tempfile::Builder::new()
        .prefix("vmgplug")
        .tempdir()
        .unwrap();
    for (i, p) in plugins.iter().enumerate() {
        let wasm = dir.path().join(format!("{}.wasm", p.name));
        std::fs::copy(wasm_dir().join(format!("{}.wasm", p.wasm)), &wasm).unwrap();
        let sum = vmguest::iso::sha256_file(&wasm).unwrap();
        std::fs::write(
            dir.path().join(format!("{}.toml", p.name)),
            format!(
                "name = \"{}\"\nversion = \"1.0.0\"\nwit = \"{}\"\ncomponent = \"{}.wasm\"\n\
                 sha256 = \"{sum}\"\norder = {}\n{}\n",
                p.name,
                p.wit,
                p.name,
                (i + 1) * 10,
                p.extra
            ),
        )
        .unwrap();
    }
    dir
}

/// An ISO with the given files (paths may have directories), built by xorriso with
/// Rock Ridge and Joliet like the real families' images.
/// A virtio-win ISO of the real layout: Windows installers only.
pub fn virtio_win(dir: &Path, file: &str, version: &str) -> PathBuf {
    layout_iso(
        dir,
        file,
        &format!("virtio-win-{version}"),
        &[
            (
                "virtio-win-guest-tools.exe",
                &vmguest::iso::fake_exe([0, 1, 0, 0]),
            ),
            ("virtio-win-gt-x64.msi", b"msi"),
            ("guest-agent/qemu-ga-x86_64.msi", b"msi"),
            ("viostor/w11/amd64/viostor.inf", b"inf"),
        ],
    )
}

pub fn layout_iso(dir: &Path, file: &str, volid: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let src = dir.join(format!("{file}.d"));
    for (path, bytes) in files {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    std::fs::create_dir_all(&src).unwrap();
    mkisofs(&src, &dir.join(file), volid)
}

/// The installer used by the success tests: leaves checkable traces in the guest.
pub fn good_installer(version: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\nmkdir -p /opt/vmguest-ic\n\
         cp \"$VMGUEST_IC_MEDIA/vmguest-ic.toml\" /opt/vmguest-ic/\n\
         echo \"installed {version}\" > /opt/vmguest-ic/STATUS\n\
         echo \"components {version} installed\"\n"
    )
}

/// The media of the every-outcome tests: a good IC ISO (1.0.0) and the user's disc in
/// `dir`, and a failing installer (1.0.1) in a directory of its own, so that a search
/// of `dir` never finds it.
pub struct OutcomeMedia {
    pub dir: TempDir,
    pub good: PathBuf,
    pub bad: PathBuf,
    pub user: PathBuf,
    _bad_dir: TempDir,
}

impl OutcomeMedia {
    pub fn new() -> OutcomeMedia {
        let dir = tempfile::tempdir().unwrap();
        let good = ic_iso(dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
        let bad_dir = tempfile::tempdir().unwrap();
        let bad = ic_iso(
            bad_dir.path(),
            "bad.iso",
            "1.0.1",
            "#!/bin/sh\necho broken >&2\nexit 3\n",
        );
        let user = user_iso(dir.path());
        OutcomeMedia {
            dir,
            good,
            bad,
            user,
            _bad_dir: bad_dir,
        }
    }

    pub fn good_s(&self) -> &str {
        self.good.to_str().unwrap()
    }
}

/// What a verified installer writes: the version its `[verify.linux]` reads back.
pub fn write_version(version: &str) -> String {
    format!("mkdir -p /opt/vmguest-ic && echo {version} > /opt/vmguest-ic/VERSION\n")
}

/// An own-format ISO named `NAME` (`FILE`, volume id `VOLID_VERSION`) whose
/// `[verify.linux]` reads `/opt/vmguest-ic/VERSION`, with `script` as its `install.sh`.
pub fn verified_iso(dir: &Path, name: &str, file: &str, version: &str, script: &str) -> PathBuf {
    let src = dir.join(format!("{file}.d"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("vmguest-ic.toml"),
        format!(
            "[components]\nfamily = \"vmguest\"\nname = \"{name}\"\nversion = \"{version}\"\n\n\
             [install.linux]\ncommand = \"sh ./install.sh\"\n\n\
             [verify.linux]\ncommand = \"cat /opt/vmguest-ic/VERSION\"\n"
        ),
    )
    .unwrap();
    std::fs::write(src.join("install.sh"), script).unwrap();
    let volid = format!(
        "{}_{}",
        name.to_ascii_uppercase().replace(' ', "_"),
        version.replace('.', "_")
    );
    mkisofs(&src, &dir.join(file), &volid)
}

/// `Get-VM NAME` of a VM of the socket directory, as JSON, with `env` (the ISO store...).
pub fn get_vm_json(vm: &TestVm, env: &[(&str, &str)]) -> Value {
    let out = vmguest_with(
        &[
            "Get-VM",
            &vm.name,
            "-VMDir",
            vm.dir.path().to_str().unwrap(),
            "-OutputFormat",
            "Json",
        ],
        None,
        env,
    );
    let mut r = results(&out);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    r.remove(0)
}

/// A data ISO standing for the user's own media.
pub fn user_iso(dir: &Path) -> PathBuf {
    let src = dir.join("user.d");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("README.TXT"), "the user's own disc\n").unwrap();
    mkisofs(&src, &dir.join("user-media.iso"), "USER_DISC")
}

#[derive(Clone, Debug, Default)]
pub enum Cd {
    #[default]
    Empty,
    None,
    With(PathBuf),
    /// The empty CD-ROM drive qemu-server creates for `ide2: none,media=cdrom`.
    PveIde2,
}

/// Which guest a booted VM runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Guest {
    /// The busybox initramfs with a hand-started qemu-ga: boots in seconds.
    #[default]
    Busybox,
    /// Debian 12 with systemd, udev and qemu-guest-agent as a service.
    Debian,
}

#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// Boot the test guest (with its agent); otherwise the VM only runs firmware.
    pub boot: bool,
    /// Which guest `boot` boots.
    pub guest: Guest,
    pub cd: Cd,
    /// A second, empty CD drive `cd1`.
    pub second_cd: bool,
}

pub struct TestVm {
    pub name: String,
    pub dir: TempDir,
    child: Child,
}

impl TestVm {
    pub fn start(name: &str, spec: Spec) -> TestVm {
        let dir = tempfile::Builder::new().prefix("vmg").tempdir().unwrap();
        Self::start_in(dir, name, spec)
    }

    /// The test guest, booted, with its agent answering.
    pub fn booted(name: &str) -> TestVm {
        let vm = Self::start(
            name,
            Spec {
                boot: true,
                ..Default::default()
            },
        );
        vm.agent();
        vm
    }

    /// The Debian guest, booted, with its agent answering (about 20 s under TCG).
    pub fn booted_debian(name: &str, cd: Cd) -> TestVm {
        let vm = Self::start(
            name,
            Spec {
                boot: true,
                guest: Guest::Debian,
                cd,
                ..Default::default()
            },
        );
        vm.agent();
        vm
    }

    pub fn start_in(dir: TempDir, name: &str, spec: Spec) -> TestVm {
        let d = dir.path();
        let mut cmd = Command::new(qemu());
        cmd.args([
            "-accel",
            "tcg",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ])
        .arg("-no-reboot")
        .arg("-qmp")
        .arg(format!(
            "unix:{}/{name}.qmp,server=on,wait=off",
            d.display()
        ))
        // The test's own monitor: QEMU serves one client per monitor, and vmguest holds
        // NAME.qmp for a whole install.
        .arg("-qmp")
        .arg(format!(
            "unix:{}/{name}.ctl,server=on,wait=off",
            d.display()
        ))
        .arg("-serial")
        .arg(format!("file:{}/{name}.console", d.display()));
        if spec.boot && spec.guest == Guest::Debian {
            let image = debian_image();
            cmd.arg("-kernel").arg(&image.kernel);
            cmd.arg("-initrd").arg(&image.initrd);
            cmd.args([
                "-append",
                "console=ttyS0 panic=-1 systemd.unit=multi-user.target",
            ]);
            cmd.args(["-m", "512"]);
            // The cached image stays as built: the VM writes to a qcow2 overlay of its own.
            let overlay = d.join(format!("{name}-root.qcow2"));
            let made = Command::new(require("qemu-img", "qemu-utils"))
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&image.root)
                .arg(&overlay)
                .output()
                .expect("running qemu-img");
            assert!(
                made.status.success(),
                "qemu-img create: {}",
                String::from_utf8_lossy(&made.stderr)
            );
            cmd.arg("-drive").arg(format!(
                "if=none,id=rootdisk,format=qcow2,file={}",
                overlay.display()
            ));
            cmd.args(["-device", "virtio-blk-pci,drive=rootdisk"]);
        } else if spec.boot {
            let (kernel, initrd) = guest_image();
            cmd.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd);
            cmd.args(["-append", "console=ttyS0 panic=-1"]);
            cmd.args(["-m", "256"]);
        } else {
            cmd.args(["-m", "256"]);
        }
        if spec.boot {
            cmd.arg("-chardev").arg(format!(
                "socket,path={}/{name}.qga,server=on,wait=off,id=qga0",
                d.display()
            ));
            cmd.args([
                "-device",
                "virtio-serial-pci",
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ]);
        }
        match &spec.cd {
            Cd::None => {}
            Cd::Empty => {
                cmd.args(["-device", "ide-cd,id=cd0,bus=ide.1"]);
            }
            Cd::PveIde2 => {
                cmd.args(["-drive", "if=none,id=drive-ide2,media=cdrom"]);
                cmd.args([
                    "-device",
                    "ide-cd,bus=ide.1,unit=0,drive=drive-ide2,id=ide2",
                ]);
            }
            Cd::With(iso) => {
                cmd.arg("-drive").arg(format!(
                    "if=none,id=cd0drv,media=cdrom,readonly=on,format=raw,file={}",
                    iso.display()
                ));
                cmd.args(["-device", "ide-cd,id=cd0,bus=ide.1,drive=cd0drv"]);
            }
        }
        if spec.second_cd {
            cmd.args(["-device", "ide-cd,id=cd1,bus=ide.0"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; it only sets a flag on the child.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawning qemu-system-x86_64");
        let mut vm = TestVm {
            name: name.to_owned(),
            dir,
            child,
        };
        // Recorded once `vm` owns the child: a panic from here on still kills it.
        ledger::record(vm.child.id());
        vm.wait_for_qmp();
        vm
    }

    pub fn path(&self, ext: &str) -> PathBuf {
        self.dir.path().join(format!("{}.{ext}", self.name))
    }

    fn wait_for_qmp(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("QEMU exited at start ({status}): {err}");
            }
            if QemuVm::connect(&self.path("qmp"), Duration::from_secs(5)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "QMP socket never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// QMP through the test's own monitor, apart from vmguest's.
    pub fn control(&self) -> QemuVm {
        QemuVm::connect(&self.path("ctl"), Duration::from_secs(10)).expect("QMP")
    }

    /// Pause (`stop`) or resume (`cont`) the VM through the test's monitor.
    pub fn set_running(&self, running: bool) {
        let mut vm = self.control();
        let qmp = vm.qmp().expect("QMP");
        if running {
            qmp.execute(qapi_qmp::cont {}).expect("cont");
        } else {
            qmp.execute(qapi_qmp::stop {}).expect("stop");
        }
    }

    /// Wait until the serial console shows `marker` (the test guest's programs write there).
    pub fn wait_for_console(&self, marker: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.console().contains(marker) {
            assert!(
                Instant::now() < deadline,
                "{marker:?} never appeared on the console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn drives(&self) -> Vec<DvdDrive> {
        self.control().dvd_drives().expect("query-block")
    }

    /// The file in cd0, as QEMU itself has it open (see [`Monitor::cd0`]).
    pub fn media_file(&self) -> Option<String> {
        self.monitor().cd0().map(|(name, _)| name)
    }

    /// The test's own monitor of this VM, and QEMU's pid.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            socket: self.path("ctl"),
            qemu_pid: self.child.id(),
        }
    }

    /// Every file QEMU has open, from its `/proc/PID/fd`.
    pub fn open_files(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("QEMU's /proc/PID/fd")
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|p| p.display().to_string())
            .collect()
    }

    /// Block until the guest agent answers (the guest takes seconds to boot under TCG).
    pub fn agent(&self) -> QemuAgent {
        QemuAgent::connect(
            &self.path("qga"),
            Duration::from_secs(30),
            Duration::from_secs(180),
        )
        .expect("guest agent never answered")
    }

    /// Run a shell command in the guest and wait for it.
    pub fn guest_sh(&self, script: &str) -> ExecStatus {
        let mut agent = self.agent();
        let pid = agent
            .exec("/bin/sh", &["-c".into(), script.into()], &[])
            .expect("guest-exec");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let st = agent.exec_status(pid).expect("guest-exec-status");
            if st.exited {
                return st;
            }
            assert!(Instant::now() < deadline, "guest command hung: {script}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.path("console")).unwrap_or_default()
    }

    /// SIGKILL QEMU and reap it; its socket files stay behind, stale.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        ledger::forget(self.child.id());
    }
}

impl Drop for TestVm {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run the real `vmguest` binary with a clean environment: no user config, no
/// inherited VM directory.
/// A VM seen from outside vmguest: the test's own QMP monitor, and QEMU's `/proc`.
#[derive(Clone, Debug)]
pub struct Monitor {
    pub socket: PathBuf,
    pub qemu_pid: u32,
}

impl Monitor {
    /// What is in cd0: the file's name, and a path that opens it. vmguest hands QEMU
    /// its IC ISO as a descriptor (`add-fd`), which `query-block` names `/dev/fdset/N`;
    /// the file behind it is QEMU's own, read from `/proc/PID/fd`, never from what
    /// vmguest says.
    pub fn cd0(&self) -> Option<(String, PathBuf)> {
        let mut vm = QemuVm::connect(&self.socket, Duration::from_secs(10)).ok()?;
        let file = vm
            .dvd_drives()
            .ok()?
            .into_iter()
            .find(|d| d.id == "cd0")
            .and_then(|d| d.media.map(|m| m.file))?;
        let Some(id) = vmguest::vm::qemu::fdset_id(&file) else {
            return Some((file.clone(), PathBuf::from(file)));
        };
        let sets = vm
            .qmp()
            .expect("QMP")
            .execute(qapi_qmp::query_fdsets {})
            .expect("query-fdsets");
        let fd = sets
            .iter()
            .find(|s| s.fdset_id == id)
            .and_then(|s| s.fds.first())
            .unwrap_or_else(|| panic!("{file} is in cd0, but QEMU has no such fd set: {sets:?}"))
            .fd;
        let opens = PathBuf::from(format!("/proc/{}/fd/{fd}", self.qemu_pid));
        let name = std::fs::read_link(&opens).expect("QEMU's /proc/PID/fd");
        Some((name.display().to_string(), opens))
    }
}

pub fn vmguest(args: &[&str], stdin: Option<&str>) -> Output {
    vmguest_with(args, stdin, &[])
}

pub fn vmguest_with(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let config = tempfile::tempdir().unwrap();
    let mut cmd = vmguest_command(args, env, config.path());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawning vmguest");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    wait_bounded(child, Duration::from_secs(300))
}

/// A `vmguest` that runs while the test acts on it (signals, a paused VM); its output is
/// collected by [`finish`]. The caller's `VMGUEST_STATE_DIR` (in `env`) carries the
/// journal from one run to the next.
pub struct Running {
    pub child: Child,
    _config: TempDir,
}

pub fn spawn_vmguest(args: &[&str], env: &[(&str, &str)]) -> Running {
    let config = tempfile::tempdir().unwrap();
    let mut cmd = vmguest_command(args, env, config.path());
    cmd.stdin(Stdio::null());
    Running {
        child: cmd.spawn().expect("spawning vmguest"),
        _config: config,
    }
}

impl Running {
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    pub fn finish(self) -> Output {
        wait_bounded(self.child, Duration::from_secs(300))
    }
}

/// The `vmguest` binary with a clean environment: no user config, no inherited VM
/// directory, caches and state in `config` unless `env` says otherwise.
fn vmguest_command(args: &[&str], env: &[(&str, &str)], config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vmguest"));
    cmd.args(args)
        .env_remove("VMGUEST_VM_DIR")
        .env_remove("LIBVIRT_DEFAULT_URI")
        .env_remove("RUST_LOG")
        .env_remove("VMGUEST_IC_PATH")
        .env_remove("VMGUEST_PLUGIN_PATH")
        .env_remove("PVE_API_TOKEN")
        .env_remove("PVE_CA_FILE")
        .env_remove("PVE_FINGERPRINT")
        .env("VMGUEST_PLUGIN_CACHE", config.join("plugin-cache"))
        .env("XDG_CONFIG_HOME", config)
        .env("XDG_DATA_HOME", config)
        .env("XDG_CACHE_HOME", config.join("cache"))
        // Root's default is /var/lib/vmguest: tests keep their journal to themselves.
        .env("VMGUEST_STATE_DIR", config.join("state"))
        // Most test VMs have an agent channel with no agent behind it (not booted): one
        // attempt, as before -AgentWaitSec; the agent tests pass their own.
        .env("VMGUEST_AGENT_WAIT_SEC", "3")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Wait for the child, but kill it past `limit`: a hang becomes a failure, not a stuck
/// suite. The pipes are drained meanwhile so a chatty child cannot block.
fn wait_bounded(mut child: Child, limit: Duration) -> Output {
    use std::io::Read;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vmguest did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The JSON result objects on stdout, one per line.
pub fn results(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Install into `vm` with JSON output; returns the single result object and the output.
pub fn install_json(vm: &TestVm, extra: &[&str]) -> (Value, Output) {
    install_json_with(vm, extra, &[])
}

pub fn install_json_with(vm: &TestVm, extra: &[&str], env: &[(&str, &str)]) -> (Value, Output) {
    let dir = vm.dir.path().to_str().unwrap().to_owned();
    let mut args = vec![
        "Install-IntegrationComponents",
        "-VMName",
        &vm.name,
        "-VMDir",
        &dir,
        "-OutputFormat",
        "Json",
    ];
    args.extend_from_slice(extra);
    let out = vmguest_with(&args, None, env);
    let mut r = results(&out);
    assert_eq!(r.len(), 1, "one result expected: {}", describe(&out));
    (r.remove(0), out)
}

pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Assert the outcome in the result object, the error record and the exit code agree.
/// The contract's HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND): the IC ISO cannot be found.
pub fn assert_file_not_found(result: &Value, out: &Output) {
    assert_outcome(
        result,
        out,
        "HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND)",
        "0x80070002",
        15,
    );
}

pub fn assert_outcome(result: &Value, out: &Output, name: &str, hex: &str, exit: i32) {
    assert_eq!(result["result"], name, "{}", describe(out));
    assert_eq!(result["hresult"], hex, "{}", describe(out));
    assert_eq!(out.status.code(), Some(exit), "{}", describe(out));
    if exit != 0 {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("HResult               : {hex}")),
            "{stderr}"
        );
    }
}
