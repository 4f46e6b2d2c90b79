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
//! - `reg.exe query` answers from the double's uninstall entries, in reg.exe's own
//!   output format (the key on a line of its own, `    NAME    REG_SZ    VALUE`, exit
//!   1 and "End of search: 0 match(es) found." when nothing matches); an installer that
//!   succeeds registers the entry the test said it would;
//! - `guest-shutdown` answers nothing, as the real agent, and the agent is then down
//!   for a moment (no answers at all), as while Windows restarts.

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

#[derive(Default)]
struct State {
    exit_code: i64,
    execs: Vec<(String, Vec<String>)>,
    reboots: u32,
    down_until: Option<Instant>,
    files: HashMap<i64, (PathBuf, u64)>,
    next: i64,
    /// Uninstall entries: DisplayName → DisplayVersion.
    registry: HashMap<String, String>,
    /// What a successful installer registers.
    registers: Option<(String, String)>,
    /// Answers of the programs that are not the installer, by pid.
    results: HashMap<i64, (i64, String)>,
}

const UNINSTALL_KEY: &str = "HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{4B2A1C3D-0000-4000-8000-00000000C0DE}";

/// reg.exe's answer: exit code and output.
fn reg(args: &[String], registry: &HashMap<String, String>) -> (i64, String) {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["query", _, "/s", "/f", name, "/d", "/e"] => match registry.get(*name) {
            Some(_) => (
                0,
                format!("\r\n{UNINSTALL_KEY}\r\n    DisplayName    REG_SZ    {name}\r\n\r\nEnd of search: 1 match(es) found.\r\n"),
            ),
            None => (1, "End of search: 0 match(es) found.\r\n".into()),
        },
        ["query", key, "/v", "DisplayVersion"] if *key == UNINSTALL_KEY => {
            match registry.values().next() {
                Some(v) => (0, format!("\r\n{key}\r\n    DisplayVersion    REG_SZ    {v}\r\n\r\n")),
                None => (1, String::new()),
            }
        }
        _ => (1, String::new()),
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

    /// What the installer registers when it succeeds (DisplayName, DisplayVersion).
    pub fn registers(&self, entry: Option<(&str, &str)>) {
        self.state.lock().unwrap().registers = entry.map(|(n, v)| (n.to_owned(), v.to_owned()));
    }

    /// Set an uninstall entry directly, as an earlier install would have.
    pub fn set_installed(&self, name: &str, version: &str) {
        self.state
            .lock()
            .unwrap()
            .registry
            .insert(name.to_owned(), version.to_owned());
    }

    /// Every program started that was not reg.exe or taskkill.
    pub fn installers(&self) -> Vec<String> {
        self.execs()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| !p.ends_with("\\reg.exe") && !p.ends_with("\\taskkill.exe"))
            .collect()
    }

    pub fn reboots(&self) -> u32 {
        self.state.lock().unwrap().reboots
    }
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
            s.execs.push((path.clone(), argv.clone()));
            let pid = 4000 + s.execs.len() as i64;
            let lower = path.to_ascii_lowercase();
            if lower.ends_with("\\reg.exe") {
                let answer = reg(&argv, &s.registry);
                s.results.insert(pid, answer);
            } else if lower.ends_with("\\taskkill.exe") {
                s.results
                    .insert(pid, (0, "SUCCESS: sent termination signal.\r\n".into()));
            } else if matches!(s.exit_code, 0 | 3010 | 1641) {
                if let Some((name, version)) = s.registers.clone() {
                    s.registry.insert(name, version);
                }
            }
            ok(json!({"pid": pid}))
        }
        "guest-exec-status" => {
            let s = state.lock().unwrap();
            let pid = args["pid"].as_i64().unwrap_or(0);
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
