//! A TEST DOUBLE of qemu-ga for Windows, attached to a real QEMU VM.
//!
//! No Windows guest can be had on these machines (no licence, no image, no network to
//! fetch one), so the Windows code paths run against this double: QEMU is real (QMP,
//! the CD drive, the media vmguest inserts), and the agent socket `NAME.qga` is served
//! here, in the test process. It answers as Windows' qemu-ga does, from QEMU's
//! `qga/commands-win32.c`:
//! - `guest-get-osinfo`: `qmp_guest_get_osinfo` for Windows Server 2019 (build 17763):
//!   id `mswindows`, name `Microsoft Windows`, version from `WIN_10_0_SERVER_VERSION_MATRIX`,
//!   kernel-version `10.0`, variant `server`, machine from `ga_get_current_arch`;
//! - `guest-get-fsinfo`: `build_guest_fsinfo`, one entry per volume with a file system:
//!   `C:\` NTFS, and `D:\` CDFS only while the VM's CD drive holds media (a drive without
//!   media fails with ERROR_NOT_READY and is left out); `disk` is empty as without
//!   CONFIG_QGA_NTDDSCSI;
//! - `guest-file-open` of the raw volume `\\.\D:` reads the media QEMU has in the drive
//!   (asked of QEMU through the test's own QMP monitor), `guest-file-read` answers in
//!   base64 with `eof`;
//! - `guest-exec` runs nothing: it records the program and arguments and finishes with
//!   the exit code the test set (0, 3010, 1603, ...); a program that is not on the
//!   media's drive letter or under `C:\Windows` fails as `g_spawn` does;
//! - the pid `guest-exec` answers is the Windows process id (`gpid_to_int64` in QEMU's
//!   `qga/commands.c`: `GetProcessId` on Windows), the one `taskkill /PID` takes;
//! - `reg.exe query` answers from the double's uninstall entries, in reg.exe's own
//!   output format (the key on a line of its own, `    NAME    REG_SZ    VALUE`, exit
//!   1 and "End of search: 0 match(es) found." when nothing matches, exit 1 for a key
//!   that does not exist); an installer that succeeds registers the entry the test said
//!   it would. Entries live in the native view or in the 32-bit view of a 64-bit
//!   Windows, `HKLM\SOFTWARE\WOW6432Node\…` (WOW64 registry redirection, Microsoft's
//!   "Registry Keys Affected by WOW64"), which 64-bit reg.exe reads by that path;
//! - `taskkill.exe /T /F /PID N` (Microsoft's taskkill reference: `/T` the process and
//!   the ones it started, `/F` forcefully) ends a running installer, which then reports
//!   exit code 1 (what a forced end leaves); a pid that runs nothing answers exit 128
//!   and `ERROR: The process "N" not found.`;
//! - `guest-shutdown` answers nothing, as the real agent, and the agent is then down
//!   for a moment (no answers at all), as while Windows restarts.
//! - an installer that upgrades the agent (virtio-win's guest-tools installer replaces
//!   qemu-ga and restarts its `QEMU-GA` service) leaves the agent down for a moment; the
//!   new instance knows none of the old one's processes, so `guest-exec-status` of the
//!   installer's pid fails as `qmp_guest_exec_status` does for an unknown pid
//!   (`QERR_INVALID_PARAMETER`, "Invalid parameter 'pid'", in QEMU's `qga/commands.c`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fixtures::{Monitor, TestVm};

/// An exit code that makes the double's installer run forever.
pub const HANGS: i64 = i64::MIN;

/// How long the double's "Windows" takes to restart.
const RESTART: Duration = Duration::from_millis(1500);

/// Which registry view holds an uninstall entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall`.
    Native,
    /// `HKLM\SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall`: what
    /// 32-bit installers write on a 64-bit Windows.
    Wow64,
}

impl View {
    fn root(self) -> &'static str {
        match self {
            View::Native => {
                "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall"
            }
            View::Wow64 => {
                "HKEY_LOCAL_MACHINE\\SOFTWARE\\WOW6432Node\\Microsoft\\Windows\\CurrentVersion\\Uninstall"
            }
        }
    }
}

/// One uninstall entry: its view, its key's name, `DisplayName`, `DisplayVersion`.
#[derive(Clone, Debug)]
pub struct RegEntry {
    pub view: View,
    pub key: String,
    pub name: String,
    pub version: String,
}

impl RegEntry {
    /// An entry as MSI and WiX bundles write it: under a product GUID, native view.
    pub fn by_name(name: &str, version: &str) -> RegEntry {
        RegEntry {
            view: View::Native,
            key: GUID_KEY.into(),
            name: name.into(),
            version: version.into(),
        }
    }

    fn full_key(&self) -> String {
        format!("{}\\{}", self.view.root(), self.key)
    }
}

#[derive(Default)]
struct State {
    exit_code: i64,
    execs: Vec<(String, Vec<String>)>,
    /// Installers started while they hang, by pid: they run until taskkill.
    running: Vec<i64>,
    /// Pids taskkill ended.
    killed: Vec<i64>,
    reboots: u32,
    down_until: Option<Instant>,
    files: HashMap<i64, (PathBuf, u64)>,
    next: i64,
    /// Uninstall entries.
    registry: Vec<RegEntry>,
    /// What a successful installer registers.
    registers: Option<RegEntry>,
    /// Answers of the programs that are not the installer, by pid.
    results: HashMap<i64, (i64, String)>,
    /// The installer restarts the agent.
    installer_restarts_agent: bool,
    /// Pids the running agent instance does not know: started by an earlier one.
    forgotten: Vec<i64>,
}

const GUID_KEY: &str = "{4B2A1C3D-0000-4000-8000-00000000C0DE}";

/// `HKLM\…` as reg.exe prints it, `HKEY_LOCAL_MACHINE\…`.
fn long_form(key: &str) -> String {
    match key.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("HKLM\\") => format!("HKEY_LOCAL_MACHINE\\{}", &key[5..]),
        _ => key.to_owned(),
    }
}

/// reg.exe's answer: exit code and output. Key names and data compare without case, as
/// the registry does.
fn reg(args: &[String], registry: &[RegEntry]) -> (i64, String) {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["query", root, "/s", "/f", name, "/d", "/e"] => {
            let root = long_form(root);
            let found: Vec<&RegEntry> = registry
                .iter()
                .filter(|e| e.view.root().eq_ignore_ascii_case(&root))
                .filter(|e| e.name.eq_ignore_ascii_case(name))
                .collect();
            if found.is_empty() {
                return (1, "End of search: 0 match(es) found.\r\n".into());
            }
            let mut out = String::new();
            for e in &found {
                out += &format!(
                    "\r\n{}\r\n    DisplayName    REG_SZ    {}\r\n",
                    e.full_key(),
                    e.name
                );
            }
            out += &format!("\r\nEnd of search: {} match(es) found.\r\n", found.len());
            (0, out)
        }
        ["query", key, "/v", "DisplayVersion"] => {
            let key = long_form(key);
            match registry
                .iter()
                .find(|e| e.full_key().eq_ignore_ascii_case(&key))
            {
                Some(e) => (
                    0,
                    format!(
                        "\r\n{}\r\n    DisplayVersion    REG_SZ    {}\r\n\r\n",
                        e.full_key(),
                        e.version
                    ),
                ),
                // reg.exe says so on stderr: "ERROR: The system was unable to find the
                // specified registry key or value."
                None => (1, String::new()),
            }
        }
        _ => (1, String::new()),
    }
}

/// taskkill.exe's answer to `/T /F /PID N` (any order): the installer ends.
fn taskkill(args: &[String], s: &mut State) -> (i64, String) {
    let pid = args
        .iter()
        .position(|a| a.eq_ignore_ascii_case("/PID"))
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse::<i64>().ok());
    match pid {
        Some(pid) if s.running.contains(&pid) => {
            s.running.retain(|&p| p != pid);
            s.killed.push(pid);
            s.results.insert(pid, (1, String::new()));
            (
                0,
                format!("SUCCESS: The process with PID {pid} (child process of PID 1) has been terminated.\r\n"),
            )
        }
        Some(pid) => (128, format!("ERROR: The process \"{pid}\" not found.\r\n")),
        None => (1, "ERROR: Invalid syntax.\r\n".into()),
    }
}

pub struct WinAgent {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WinAgent {
    /// Serve `vm`'s `NAME.qga`; installers finish with `exit_code`.
    pub fn start(vm: &TestVm, exit_code: i64) -> WinAgent {
        let path = vm.path("qga");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("binding the agent double's socket");
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State {
            exit_code,
            next: 1,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let ctl = vm.monitor();
        let (s, st) = (state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (s, st, ctl) = (s.clone(), st.clone(), ctl.clone());
                        std::thread::spawn(move || serve(stream, s, st, ctl));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        WinAgent {
            state,
            stop,
            thread: Some(thread),
        }
    }

    pub fn set_exit_code(&self, code: i64) {
        self.state.lock().unwrap().exit_code = code;
    }

    /// Every program the double was asked to start, with its arguments.
    pub fn execs(&self) -> Vec<(String, Vec<String>)> {
        self.state.lock().unwrap().execs.clone()
    }

    /// What the installer registers when it succeeds (DisplayName, DisplayVersion), as
    /// MSI and WiX bundles do: under a product GUID, native view.
    pub fn registers(&self, entry: Option<(&str, &str)>) {
        self.registers_entry(entry.map(|(n, v)| RegEntry::by_name(n, v)));
    }

    /// What the installer registers when it succeeds, wherever it goes.
    pub fn registers_entry(&self, entry: Option<RegEntry>) {
        self.state.lock().unwrap().registers = entry;
    }

    /// Set an uninstall entry directly, as an earlier install would have.
    pub fn set_installed(&self, name: &str, version: &str) {
        self.set_entry(RegEntry::by_name(name, version));
    }

    /// Set an uninstall entry, replacing the one under the same key of its view.
    pub fn set_entry(&self, entry: RegEntry) {
        let mut s = self.state.lock().unwrap();
        let key = entry.full_key();
        s.registry
            .retain(|e| !e.full_key().eq_ignore_ascii_case(&key));
        s.registry.push(entry);
    }

    /// The pids of the installers started (not reg.exe, cmd.exe's version probes or
    /// taskkill), in order.
    pub fn installer_pids(&self) -> Vec<i64> {
        self.state
            .lock()
            .unwrap()
            .execs
            .iter()
            .enumerate()
            .filter(|(_, (p, _))| !is_helper(p))
            .map(|(i, _)| pid_of(i))
            .collect()
    }

    /// The pids taskkill ended.
    pub fn killed(&self) -> Vec<i64> {
        self.state.lock().unwrap().killed.clone()
    }

    /// Every program started that was not reg.exe or taskkill.
    pub fn installers(&self) -> Vec<String> {
        self.execs()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| !is_helper(p))
            .collect()
    }

    pub fn reboots(&self) -> u32 {
        self.state.lock().unwrap().reboots
    }

    /// Installers restart the agent, as virtio-win's guest-tools installer does.
    pub fn installer_restarts_agent(&self) {
        self.state.lock().unwrap().installer_restarts_agent = true;
    }
}

/// reg.exe and taskkill.exe: what vmguest runs besides installers.
fn is_helper(program: &str) -> bool {
    let lower = program.to_ascii_lowercase();
    lower.ends_with("\\reg.exe") || lower.ends_with("\\taskkill.exe")
}

/// The pid of the `i`th program started.
fn pid_of(i: usize) -> i64 {
    4001 + i as i64
}

impl Drop for WinAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: UnixStream, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>, ctl: Monitor) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with(b"\n") => {}
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue
            }
            Err(_) => return,
        }
        // The client's 0xFF resets the agent's parser (guest-sync-delimited).
        let text: Vec<u8> = line.drain(..).filter(|&b| b != 0xFF).collect();
        let Ok(req) = serde_json::from_slice::<Value>(&text) else {
            continue;
        };
        let down = state
            .lock()
            .unwrap()
            .down_until
            .is_some_and(|t| Instant::now() < t);
        if down {
            continue; // Windows is restarting: no agent runs.
        }
        let reply = answer(&req, &state, &ctl);
        let Some((delimit, reply)) = reply else {
            continue;
        };
        let mut bytes = Vec::new();
        if delimit {
            bytes.push(0xFF);
        }
        bytes.extend(serde_json::to_vec(&reply).unwrap());
        bytes.push(b'\n');
        if out.write_all(&bytes).is_err() {
            return;
        }
    }
}

fn error(desc: impl Into<String>) -> Value {
    json!({"error": {"class": "GenericError", "desc": desc.into()}})
}

/// What the real agent would send: `None` for no answer at all.
fn answer(req: &Value, state: &Arc<Mutex<State>>, ctl: &Monitor) -> Option<(bool, Value)> {
    let args = &req["arguments"];
    let ok = |v: Value| Some((false, json!({ "return": v })));
    match req["execute"].as_str().unwrap_or("") {
        "guest-sync-delimited" => Some((true, json!({"return": args["id"]}))),
        "guest-sync" => ok(args["id"].clone()),
        "guest-ping" => ok(json!({})),
        "guest-get-osinfo" => ok(json!({
            "id": "mswindows", "name": "Microsoft Windows",
            "pretty-name": "Windows Server 2019 Standard",
            "version": "Microsoft Windows Server 2019", "version-id": "2019",
            "variant": "server", "variant-id": "server",
            "kernel-version": "10.0", "kernel-release": "17763", "machine": "x86_64"
        })),
        "guest-get-fsinfo" => {
            let mut vols = vec![json!({
                "name": "\\\\?\\Volume{3b1b5e1a-0000-0000-0000-100000000000}\\",
                "mountpoint": "C:\\", "type": "NTFS",
                "total-bytes": 42_947_571_712u64, "used-bytes": 12_884_901_888u64, "disk": []
            })];
            if media(ctl).is_some() {
                vols.push(json!({
                    "name": "\\\\?\\Volume{3b1b5e1b-0000-0000-0000-d00000000000}\\",
                    "mountpoint": "D:\\", "type": "CDFS",
                    "total-bytes": 380_928u64, "used-bytes": 380_928u64, "disk": []
                }));
            }
            ok(Value::Array(vols))
        }
        "guest-file-open" => {
            let path = args["path"].as_str().unwrap_or("");
            if !path.eq_ignore_ascii_case("\\\\.\\D:") {
                return Some((false, error(format!("failed to open file '{path}' (mode: 'r'): The system cannot find the file specified. (error: 2)"))));
            }
            let Some(file) = media(ctl) else {
                return Some((false, error("failed to open file '\\\\.\\D:' (mode: 'r'): The device is not ready. (error: 15)")));
            };
            let mut s = state.lock().unwrap();
            let h = s.next;
            s.next += 1;
            s.files.insert(h, (file, 0));
            ok(json!(h))
        }
        "guest-file-seek" => {
            let h = args["handle"].as_i64().unwrap_or(0);
            let mut s = state.lock().unwrap();
            let Some(f) = s.files.get_mut(&h) else {
                return Some((false, error("handle not found")));
            };
            f.1 = args["offset"].as_u64().unwrap_or(0);
            ok(json!({"position": f.1, "eof": false}))
        }
        "guest-file-read" => {
            let h = args["handle"].as_i64().unwrap_or(0);
            let count = args["count"].as_u64().unwrap_or(4096) as usize;
            let mut s = state.lock().unwrap();
            let Some(f) = s.files.get_mut(&h) else {
                return Some((false, error("handle not found")));
            };
            let mut file = std::fs::File::open(&f.0).unwrap();
            file.seek(SeekFrom::Start(f.1)).unwrap();
            let mut buf = vec![0u8; count];
            let n = file.read(&mut buf).unwrap();
            buf.truncate(n);
            f.1 += n as u64;
            use base64::Engine;
            ok(
                json!({"count": n, "buf-b64": base64::engine::general_purpose::STANDARD.encode(&buf), "eof": n < count}),
            )
        }
        "guest-file-close" => {
            state
                .lock()
                .unwrap()
                .files
                .remove(&args["handle"].as_i64().unwrap_or(0));
            ok(json!({}))
        }
        "guest-exec" => {
            let path = args["path"].as_str().unwrap_or("").to_owned();
            let argv: Vec<String> = args["arg"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let on_media = path.to_ascii_uppercase().starts_with("D:\\") && media(ctl).is_some();
            if !on_media && !path.to_ascii_uppercase().starts_with("C:\\WINDOWS\\") {
                return Some((false, error(format!("Failed to execute child process \u{201c}{path}\u{201d} (No such file or directory)"))));
            }
            let mut s = state.lock().unwrap();
            let pid = pid_of(s.execs.len());
            s.execs.push((path.clone(), argv.clone()));
            let lower = path.to_ascii_lowercase();
            if lower.ends_with("\\reg.exe") {
                let answer = reg(&argv, &s.registry);
                s.results.insert(pid, answer);
            } else if lower.ends_with("\\taskkill.exe") {
                let answer = taskkill(&argv, &mut s);
                s.results.insert(pid, answer);
            } else if s.exit_code == HANGS {
                s.running.push(pid);
            } else if matches!(s.exit_code, 0 | 3010 | 1641) {
                if let Some(entry) = s.registers.clone() {
                    let key = entry.full_key();
                    s.registry
                        .retain(|e| !e.full_key().eq_ignore_ascii_case(&key));
                    s.registry.push(entry);
                }
            }
            if s.installer_restarts_agent && !is_helper(&path) {
                s.forgotten.push(pid);
                s.down_until = Some(Instant::now() + RESTART);
            }
            ok(json!({"pid": pid}))
        }
        "guest-exec-status" => {
            let s = state.lock().unwrap();
            let pid = args["pid"].as_i64().unwrap_or(0);
            if s.forgotten.contains(&pid) {
                return Some((false, error("Invalid parameter 'pid'")));
            }
            // reg.exe and taskkill answer what they were given; only the installer hangs.
            let (code, text) = match s.results.get(&pid) {
                Some((code, text)) => (*code, text.clone()),
                None => (
                    s.exit_code,
                    format!("installer finished with {}\r\n", s.exit_code),
                ),
            };
            drop(s);
            if code == HANGS {
                return ok(json!({"exited": false}));
            }
            use base64::Engine;
            let out = base64::engine::general_purpose::STANDARD.encode(text);
            ok(json!({"exited": true, "exitcode": code, "out-data": out}))
        }
        "guest-shutdown" => {
            let mut s = state.lock().unwrap();
            s.reboots += 1;
            s.down_until = Some(Instant::now() + RESTART);
            None
        }
        other => Some((
            false,
            error(format!("The command {other} has not been found")),
        )),
    }
}

/// The file QEMU has in the VM's CD drive, through the test's own QMP monitor: a path
/// that opens it.
fn media(ctl: &Monitor) -> Option<PathBuf> {
    ctl.cd0().map(|(_, opens)| opens)
}

// ---------------------------------------------------------------------------------------
// Tests on the double: each follows what the real Windows, installer or agent does.

use std::path::Path;

use crate::fixtures::{
    assert_outcome, describe, get_vm_json, install_json, install_json_with, layout_iso, mkisofs,
    results, spawn_vmguest, user_iso, vmguest_with, Cd, Spec,
};

/// virtio-win 0.1.266's layout with its guest-tools installer (a stand-in PE file that
/// carries the version), as the Windows version tests install it.
pub fn guest_tools_iso(dir: &Path) -> std::path::PathBuf {
    let exe = vmguest::iso::fake_exe([0, 1, 266, 0]);
    layout_iso(
        dir,
        "virtio-win-0.1.266.iso",
        "virtio-win-0.1.266",
        &[("virtio-win-guest-tools.exe", &exe)],
    )
}

const TASKKILL: &str = "C:\\Windows\\System32\\taskkill.exe";

/// An own-format ISO with a Windows installer, `setup.exe /S`.
fn own_windows_iso(dir: &Path, file: &str, version: &str) -> PathBuf {
    let src = dir.join(format!("{file}.d"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("vmguest-ic.toml"),
        format!(
            "[components]\nfamily = \"vmguest\"\nname = \"windows tools\"\nversion = \"{version}\"\n\n\
             [install.windows]\ncommand = \"setup.exe /S\"\n"
        ),
    )
    .unwrap();
    std::fs::write(src.join("setup.exe"), b"MZ").unwrap();
    mkisofs(&src, &dir.join(file), "WINDOWS_TOOLS")
}

/// The reg.exe queries vmguest made, as (first argument after `query`) lines.
fn reg_queries(agent: &WinAgent) -> Vec<String> {
    agent
        .execs()
        .into_iter()
        .filter(|(p, _)| p.ends_with("\\reg.exe"))
        .map(|(_, a)| a.get(1).cloned().unwrap_or_default())
        .collect()
}

/// virtio-win's guest tools are a WiX Burn bundle; WiX 3's Burn engine is a 32-bit
/// process, and WOW64 registry redirection puts what a 32-bit process writes under
/// `HKLM\SOFTWARE\Microsoft\…` into `HKLM\SOFTWARE\WOW6432Node\Microsoft\…` of a 64-bit
/// Windows (Microsoft, "Registry Keys Affected by WOW64"). An entry only there is found:
/// after the install (verified), and before the next one (up to date, nothing runs).
#[test]
fn a_virtio_win_entry_only_under_wow6432node_is_found() {
    let vm = TestVm::start("wow", Spec::default());
    let agent = WinAgent::start(&vm, 0);
    let dir = tempfile::tempdir().unwrap();
    let iso = guest_tools_iso(dir.path());
    let path = iso.to_str().unwrap();
    let entry = |version: &str| RegEntry {
        view: View::Wow64,
        key: "{5d5a8b7e-0000-4000-8000-00000000b0d1}".into(),
        name: "Virtio-win-guest-tools".into(),
        version: version.into(),
    };
    agent.registers_entry(Some(entry("0.1.266")));

    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["version_before"], Value::Null, "{}", describe(&out));
    assert_eq!(r["version_after"], "0.1.266", "{}", describe(&out));
    assert_eq!(r["verified"], true, "{}", describe(&out));
    // The native view is asked first, then the 32-bit one.
    let queries = reg_queries(&agent);
    assert!(
        queries
            .windows(2)
            .any(|w| w[0].contains("\\SOFTWARE\\Microsoft\\")
                && w[1].contains("\\SOFTWARE\\WOW6432Node\\")),
        "{queries:?}"
    );

    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("already up to date"),
        "{}",
        describe(&out)
    );
    assert_eq!(agent.installers().len(), 1, "nothing ran the second time");

    // An older version there is an upgrade, not "up to date".
    agent.set_entry(entry("0.1.240"));
    agent.registers_entry(None);
    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert_eq!(r["version_before"], "0.1.240", "{}", describe(&out));
}

/// VirtualBox's Windows Guest Additions installer is NSIS (`VBoxGuestAdditions.nsi` in
/// VirtualBox's `src/VBox/Additions/WINNT/Installer/`): its `-Post` section writes
/// `HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall\${PRODUCT_NAME}` with
/// `PRODUCT_NAME` "Oracle VM VirtualBox Guest Additions", `DisplayName` "$(^Name)"
/// (the product name and the version string) and `DisplayVersion` `${PRODUCT_VERSION}`,
/// MAJOR.MINOR.BUILD.SVN_REV; its main section switches to the 64-bit view first
/// (`SetAppMode64`), so on a 64-bit Windows the entry is in the native view. The media's
/// version (`VBox_GAs_7.0.12`) names no revision, so the revision is left off.
#[test]
fn virtualbox_guest_additions_version_from_its_uninstall_entry() {
    let vm = TestVm::start("vboxwin", Spec::default());
    let agent = WinAgent::start(&vm, 0);
    let store = tempfile::tempdir().unwrap();
    let exe = vmguest::iso::fake_exe([7, 0, 12, 29484]);
    let iso = layout_iso(
        store.path(),
        "VBoxGuestAdditions_7.0.12.iso",
        "VBox_GAs_7.0.12",
        &[
            ("VBoxLinuxAdditions.run", b"#!/bin/sh\n"),
            ("VBoxWindowsAdditions.exe", &exe),
            ("VBoxWindowsAdditions-amd64.exe", &exe),
            ("AUTORUN.INF", b"[autorun]"),
            ("cert/VBoxCertUtil.exe", b"MZ"),
        ],
    );
    let vbox = |version: &str| RegEntry {
        view: View::Native,
        key: "Oracle VM VirtualBox Guest Additions".into(),
        name: "Oracle VM VirtualBox Guest Additions 7.0.12".into(),
        version: version.into(),
    };
    agent.registers_entry(Some(vbox("7.0.12.159484")));
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(config.path().join("vmguest")).unwrap();
    std::fs::write(
        config.path().join("vmguest/config.toml"),
        "search_well_known = false\n[families]\nwindows = [\"virtualbox\"]\n",
    )
    .unwrap();
    let env = [
        ("VMGUEST_IC_PATH", store.path().to_str().unwrap()),
        ("XDG_CONFIG_HOME", config.path().to_str().unwrap()),
    ];
    let get_vm = || get_vm_json(&vm, &env);

    let s = get_vm();
    assert_eq!(s["version_status"], "not-installed", "{s}");

    let (r, out) = install_json_with(&vm, &["-Path", iso.to_str().unwrap()], &env);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["iso_family"], "virtualbox", "{}", describe(&out));
    assert_eq!(r["version_after"], "7.0.12", "{}", describe(&out));
    assert_eq!(r["verified"], true, "{}", describe(&out));

    let s = get_vm();
    assert_eq!(s["installed_version"], "7.0.12", "{s}");
    assert_eq!(s["latest_version"], "7.0.12", "{s}");
    assert_eq!(s["version_status"], "current", "{s}");

    // An older build left in place by an installer that reported success fails verify.
    agent.set_entry(vbox("7.0.10.158379"));
    agent.registers_entry(None);
    let (r, out) = install_json_with(&vm, &["-Path", iso.to_str().unwrap()], &env);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert_eq!(r["version_after"], "7.0.10", "{}", describe(&out));
    assert_eq!(get_vm()["version_status"], "upgrade-available");
}

/// The journal's entry for this VM, once it names the installer's guest pid.
fn journaled_pid(state: &Path) -> Option<i64> {
    let dir = std::fs::read_dir(state.join("journal")).ok()?;
    for e in dir.flatten() {
        if e.path().extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
            if let Some(pid) = v["guest_pid"].as_i64() {
                return Some(pid);
            }
        }
    }
    None
}

fn pending(state: &Path) -> usize {
    std::fs::read_dir(state.join("journal"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// vmguest killed (SIGKILL) while a Windows installer runs: the journal holds the
/// installer's guest pid (the one qemu-ga's guest-exec answered, `GetProcessId`), and
/// the next run, `Repair-VMMedia` or an install, ends it through the agent with
/// `taskkill /T /F /PID <pid>` (Microsoft's taskkill reference) before it ejects the IC
/// media and puts the user's disc back, as a Linux guest's installer is ended from
/// `/proc` (`crash.rs`).
#[test]
fn a_windows_install_killed_mid_run_is_ended_by_taskkill_on_recovery() {
    let dir = tempfile::Builder::new().prefix("vmg").tempdir().unwrap();
    let user = user_iso(dir.path());
    let vm = TestVm::start_in(
        dir,
        "winkill",
        Spec {
            cd: Cd::With(user.clone()),
            ..Default::default()
        },
    );
    let agent = WinAgent::start(&vm, HANGS);
    let iso = own_windows_iso(vm.dir.path(), "win.iso", "3.0.0");
    let state = tempfile::tempdir().unwrap();
    let env = [("VMGUEST_STATE_DIR", state.path().to_str().unwrap())];
    let d = vm.dir.path().to_str().unwrap().to_owned();
    let args = |cmdlet: &'static str, extra: &[&'static str]| {
        let mut a: Vec<String> = [
            cmdlet,
            vm.name.as_str(),
            "-VMDir",
            &d,
            "-OutputFormat",
            "Json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let install = args(
        "Install-IntegrationComponents",
        &["-ReplaceMedia", "-TimeoutSec", "120"],
    );
    let user_back = || {
        assert_eq!(
            vm.media_file().as_deref(),
            Some(user.to_str().unwrap()),
            "the user's disc is not back"
        );
        assert_eq!(pending(state.path()), 0, "the journal still has an entry");
    };

    // Kill vmguest once the installer runs and its pid is journaled.
    let kill_mid_install = || -> i64 {
        let mut a: Vec<&str> = install.iter().map(String::as_str).collect();
        a.extend(["-Path", iso.to_str().unwrap()]);
        let running = spawn_vmguest(&a, &env);
        let t = Instant::now();
        let pid = loop {
            if let Some(pid) = journaled_pid(state.path()) {
                break pid;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "no installer pid was journaled"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        running.signal(libc::SIGKILL);
        let out = running.finish();
        assert_eq!(out.status.code(), None, "killed: {}", describe(&out));
        assert_eq!(agent.installer_pids().last(), Some(&pid));
        assert_eq!(vm.media_file().as_deref(), Some(iso.to_str().unwrap()));
        assert_eq!(pending(state.path()), 1);
        pid
    };
    let taskkill_of = |pid: i64| {
        (
            TASKKILL.to_owned(),
            ["/T", "/F", "/PID", &pid.to_string()]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
    };

    // Repair-VMMedia ends it.
    let pid = kill_mid_install();
    let a = args("Repair-VMMedia", &[]);
    let out = vmguest_with(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        None,
        &env,
    );
    let r = results(&out);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_eq!(r[0]["result"], "S_OK", "{}", describe(&out));
    assert!(r[0]["recovered"].is_object(), "{}", describe(&out));
    assert!(
        agent.execs().contains(&taskkill_of(pid)),
        "no taskkill of {pid}: {:?}",
        agent.execs()
    );
    assert_eq!(agent.killed(), vec![pid]);
    assert!(r[0]["notes"].to_string().contains("taskkill"), "{}", r[0]);
    user_back();

    // The next install ends it too, then runs its own installer.
    let pid = kill_mid_install();
    agent.set_exit_code(0);
    let mut a: Vec<&str> = install.iter().map(String::as_str).collect();
    a.extend(["-Path", iso.to_str().unwrap()]);
    let out = vmguest_with(&a, None, &env);
    let r = results(&out);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    assert_eq!(r[0]["result"], "S_OK", "{}", describe(&out));
    assert!(r[0]["recovered"].is_object(), "{}", describe(&out));
    assert_eq!(agent.killed().last(), Some(&pid), "{:?}", agent.execs());
    assert!(agent.execs().contains(&taskkill_of(pid)));
    assert_eq!(r[0]["media_restored"], true, "{}", r[0]);
    user_back();
}

/// virtio-win's guest-tools installer upgrades qemu-ga and restarts its service: the
/// installer's pid is lost with the old agent. The registered version decides: the
/// media's → S_OK with a note; an older one left in place → the outcome is unknown,
/// never a false S_OK.
#[test]
fn an_agent_restarted_by_the_windows_installer_is_decided_by_the_version() {
    let vm = TestVm::start("winrestart", Spec::default());
    let agent = WinAgent::start(&vm, 0);
    agent.installer_restarts_agent();
    let dir = tempfile::tempdir().unwrap();
    let iso = guest_tools_iso(dir.path());
    let path = iso.to_str().unwrap();
    agent.registers(Some(("Virtio-win-guest-tools", "0.1.266")));

    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["verified"], true, "{}", describe(&out));
    let notes = r["notes"].to_string();
    assert!(
        notes.contains("the guest agent restarted during the install"),
        "{}",
        describe(&out)
    );
    assert_eq!(vm.media_file(), None, "the IC media is out again");

    // The same restart, and the installer left the old version in place.
    agent.set_installed("Virtio-win-guest-tools", "0.1.240");
    agent.registers(None);
    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("outcome is unknown"),
        "{}",
        describe(&out)
    );
    assert_eq!(vm.media_file(), None, "the IC media is out again");
}
