//! Hostile peers: QMP and agent replies that never end, installers that flood their output, and guest text that carries terminal escapes.
//!
//! The flooding peers are real unix-socket servers in the test process: they answer the
//! greeting and handshake as QEMU and qemu-ga do, then answer the next command with
//! bytes that never reach a newline, until vmguest hangs up. They count what they
//! managed to send: vmguest must stop reading after about its cap (plus what the
//! socket buffers hold), and fail well before the call's deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmguest::vm::qemu::{QemuAgent, QemuVm};
use vmguest::vm::qga::AGENT_REPLY_MAX;
use vmguest::vm::qmp::QMP_REPLY_MAX;
use vmguest::vm::{CallError, GuestAgent, VmControl};

use crate::fixtures::*;

/// What a peer sends at most: far past every cap, yet bounded, so that a vmguest that
/// keeps reading fails the test instead of exhausting the machine's memory.
const FLOOD_LIMIT: usize = 256 << 20;

/// The call deadline vmguest uses (`Timeouts::default().call`).
const CALL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy)]
enum Speaks {
    Qmp,
    /// QMP that floods instead of its greeting.
    QmpGreeting,
    /// QMP that floods its answer to `query-status`.
    QmpStatus,
    Agent,
}

/// One flood: how much went out, and how long until vmguest hung up (`None`: it never
/// did while the peer sent).
#[derive(Clone, Debug)]
struct Flood {
    sent: usize,
    hung_up_after: Option<Duration>,
}

/// A QMP or agent socket that floods the first command past the handshake.
struct Flooder {
    floods: Arc<Mutex<Vec<Flood>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Flooder {
    fn start(path: &Path, speaks: Speaks) -> Flooder {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("binding the hostile peer's socket");
        listener.set_nonblocking(true).unwrap();
        let floods = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, st) = (floods.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        if let Some(flood) = serve(stream, speaks) {
                            f.lock().unwrap().push(flood);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Flooder {
            floods,
            stop,
            thread: Some(thread),
        }
    }

    /// The floods so far, once there is one (the peer records it when the client has
    /// hung up, which may come a moment after the client's call returned).
    fn floods(&self) -> Vec<Flood> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let floods = self.floods.lock().unwrap().clone();
            if !floods.is_empty() || Instant::now() > until {
                return floods;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection: the handshake answered properly, then a flood for the first other
/// command. `None` when the client left before asking anything else.
fn serve(stream: UnixStream, speaks: Speaks) -> Option<Flood> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut out = stream.try_clone().ok()?;
    let mut lines = BufReader::new(stream);
    if let Speaks::QmpGreeting = speaks {
        return Some(flood(&mut out, &mut lines));
    }
    if let Speaks::Qmp | Speaks::QmpStatus = speaks {
        let greeting = json!({"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 8},
            "package": ""}, "capabilities": []}});
        writeln!(out, "{greeting}").ok()?;
    }
    loop {
        let mut line = Vec::new();
        if lines.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        // The agent's sync starts with a 0xFF byte of its own.
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_start_matches('\u{FFFD}').trim();
        if text.is_empty() {
            continue;
        }
        let cmd: Value = serde_json::from_str(text).ok()?;
        let execute = cmd["execute"].as_str()?;
        if matches!(speaks, Speaks::QmpStatus) && execute == "query-status" {
            return Some(flood(&mut out, &mut lines));
        }
        let answer = match execute {
            "qmp_capabilities" => json!({"return": {}}),
            "query-status" => json!({"return": {"status": "running", "running": true}}),
            "guest-sync-delimited" => {
                out.write_all(&[0xFF]).ok()?;
                json!({"return": cmd["arguments"]["id"]})
            }
            _ => return Some(flood(&mut out, &mut lines)),
        };
        writeln!(out, "{answer}").ok()?;
    }
}

/// A reply that starts as one and never ends; stops when the client hangs up (or at
/// [`FLOOD_LIMIT`], then waits for the client to go).
fn flood(out: &mut UnixStream, lines: &mut BufReader<UnixStream>) -> Flood {
    let start = Instant::now();
    let mut sent = 0;
    if out.write_all(br#"{"return": ""#).is_ok() {
        let chunk = [b'x'; 64 * 1024];
        while sent < FLOOD_LIMIT {
            match out.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => {
                    return Flood {
                        sent,
                        hung_up_after: Some(start.elapsed()),
                    }
                }
            }
        }
    }
    // Hold the connection until the client closes it (or its read timeout passes).
    let _ = lines.read_to_end(&mut Vec::new());
    Flood {
        sent,
        hung_up_after: None,
    }
}

/// The flood ended because vmguest hung up, after about `cap` bytes (what the socket
/// buffers and one read of vmguest's hold comes on top), and well before the deadline.
fn assert_cut_off(floods: &[Flood], cap: usize) {
    assert!(!floods.is_empty(), "the peer never flooded");
    for f in floods {
        let after = f
            .hung_up_after
            .unwrap_or_else(|| panic!("vmguest kept reading: {f:?}"));
        assert!(f.sent >= cap, "cut off before the cap: {f:?}");
        assert!(f.sent < cap + (2 << 20), "read far past the cap: {f:?}");
        assert!(after < CALL / 2, "hung up only after {after:?}");
    }
}

#[test]
fn a_qmp_reply_without_end_fails_the_call_near_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.qmp");
    let peer = Flooder::start(&path, Speaks::Qmp);
    let mut vm = QemuVm::connect(&path, CALL).expect("the handshake is answered");
    assert_eq!(vm.run_state().unwrap(), "running");
    let t = Instant::now();
    let err = vm.dvd_drives().unwrap_err();
    assert!(
        matches!(err, CallError::TooLong(QMP_REPLY_MAX)),
        "{err:?} after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < CALL / 2, "{:?}", t.elapsed());
    // The connection is done with: no more reading from this peer.
    assert!(matches!(vm.run_state(), Err(CallError::TooLong(_))));
    drop(vm);
    assert_cut_off(&peer.floods(), QMP_REPLY_MAX);
}

#[test]
fn an_agent_reply_without_end_fails_the_call_near_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flood.qga");
    let peer = Flooder::start(&path, Speaks::Agent);
    let mut agent =
        QemuAgent::connect(&path, CALL, Duration::from_secs(5)).expect("the sync is answered");
    let t = Instant::now();
    let err = agent.os_info().unwrap_err();
    assert!(
        matches!(err, CallError::TooLong(AGENT_REPLY_MAX)),
        "{err:?} after {:?}",
        t.elapsed()
    );
    assert!(err.is_disconnect(), "the agent connection is gone");
    assert!(t.elapsed() < CALL / 2, "{:?}", t.elapsed());
    drop(agent);
    assert_cut_off(&peer.floods(), AGENT_REPLY_MAX);
}

/// The whole install against a QMP peer that floods its `query-block` reply: the
/// contract's DISP_E_EXCEPTION, quickly, with the reply cut off at the cap.
#[test]
fn an_install_against_a_flooding_monitor_is_disp_e_exception() {
    let dir = tempfile::tempdir().unwrap();
    let iso = ic_iso(dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let vms = tempfile::tempdir().unwrap();
    let peer = Flooder::start(&vms.path().join("flood.qmp"), Speaks::Qmp);
    let t = Instant::now();
    let out = install(vms.path(), "flood", &iso);
    let r = &results(&out)[0];
    assert_outcome(r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(t.elapsed() < CALL, "{:?}", t.elapsed());
    assert_cut_off(&peer.floods(), QMP_REPLY_MAX);
}

/// A monitor that floods its greeting or its `query-status` answer is there and
/// misbehaving: DISP_E_EXCEPTION, not the VM_E_VM_NOT_RUNNING of a socket nobody serves.
#[test]
fn a_monitor_flooding_before_the_install_is_disp_e_exception_not_a_stopped_vm() {
    let dir = tempfile::tempdir().unwrap();
    let iso = ic_iso(dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    for speaks in [Speaks::QmpGreeting, Speaks::QmpStatus] {
        let vms = tempfile::tempdir().unwrap();
        let peer = Flooder::start(&vms.path().join("flood.qmp"), speaks);
        let out = install(vms.path(), "flood", &iso);
        let r = &results(&out)[0];
        assert_outcome(r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
        assert_cut_off(&peer.floods(), QMP_REPLY_MAX);
    }
}

/// A real QEMU whose guest agent socket is a flooding peer: the install ends in
/// DISP_E_EXCEPTION, and the agent's reply is cut off at the cap.
#[test]
fn an_install_against_a_flooding_agent_is_disp_e_exception() {
    let vm = TestVm::start(
        "floodga",
        Spec {
            cd: Cd::Empty,
            ..Default::default()
        },
    );
    let peer = Flooder::start(&vm.path("qga"), Speaks::Agent);
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let t = Instant::now();
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(t.elapsed() < 3 * CALL, "{:?}", t.elapsed());
    assert_cut_off(&peer.floods(), AGENT_REPLY_MAX);
    // The IC media did not stay behind.
    assert_eq!(vm.media_file(), None, "{}", describe(&out));
}

fn install(vm_dir: &Path, name: &str, iso: &Path) -> Output {
    vmguest(
        &[
            "Install-IntegrationComponents",
            "-VMName",
            name,
            "-VMDir",
            vm_dir.to_str().unwrap(),
            "-Path",
            iso.to_str().unwrap(),
            "-OutputFormat",
            "Json",
        ],
        None,
    )
}

/// A VM name that writes the clipboard (OSC 52) and turns the terminal red.
const HOSTILE: &str = "evil\x1b]52;c;aGVsbG8=\x07\x1b[31mred";

/// Text from a VM definition reaches the table, an error record and -Verbose log lines
/// with its control characters escaped; JSON carries it exactly.
#[test]
fn guest_text_reaches_the_terminal_escaped_and_json_exactly() {
    let vms = tempfile::tempdir().unwrap();
    // A stopped VM, known by its definition file; its QMP socket names it too.
    std::fs::write(vms.path().join(format!("{HOSTILE}.toml")), "").unwrap();
    let dir = vms.path().to_str().unwrap();
    let iso_dir = tempfile::tempdir().unwrap();
    let iso = ic_iso(iso_dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let install = |extra: &[&str]| {
        let mut args = vec![
            "Install-IntegrationComponents",
            "-VMName",
            HOSTILE,
            "-VMDir",
            dir,
            "-Path",
            iso.to_str().unwrap(),
            "-Verbose",
        ];
        args.extend_from_slice(extra);
        vmguest(&args, None)
    };
    let no_escape = |out: &Output| {
        for (what, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !bytes.contains(&0x1b) && !bytes.contains(&0x07),
                "a raw control character on {what}: {}",
                describe(out)
            );
        }
    };

    // The table and the error record; -Verbose logs the steps with the VM's name.
    let out = install(&[]);
    no_escape(&out);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let shown = "evil\\x1b]52;c;aGVsbG8=\\x07\\x1b[31mred";
    assert!(stdout.contains(shown), "table: {}", describe(&out));
    assert!(
        stderr.contains(&format!("({shown}:String)")),
        "error record: {}",
        describe(&out)
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains(shown)),
        "log line: {}",
        describe(&out)
    );

    // JSON output: the exact name, escaped only as JSON escapes it.
    let out = install(&["-OutputFormat", "Json"]);
    no_escape(&out);
    let r = &results(&out)[0];
    assert_eq!(r["vm"], HOSTILE, "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#"evil\u001b]52;c;aGVsbG8=\u0007"#));

    // Get-VM's table and JSON.
    let out = vmguest(&["Get-VM", "-VMDir", dir], None);
    no_escape(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(shown),
        "{}",
        describe(&out)
    );
    let out = vmguest(&["Get-VM", "-VMDir", dir, "-OutputFormat", "Json"], None);
    assert_eq!(results(&out)[0]["name"], HOSTILE, "{}", describe(&out));

    // A VM that does not exist: the error record echoes the name given.
    let out = vmguest(
        &[
            "Install-IntegrationComponents",
            "-VMName",
            "nosuch\x1b[2J\u{9b}31m\u{202e}",
            "-VMDir",
            dir,
            "-Path",
            iso.to_str().unwrap(),
        ],
        None,
    );
    no_escape(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\u{9b}') && !stderr.contains('\u{202e}'),
        "{stderr}"
    );
    assert!(
        stderr.contains("nosuch\\x1b[2J\\u{9b}31m\\u{202e}"),
        "{}",
        describe(&out)
    );
}

/// An installer that writes megabytes: the report keeps the start and the end of each
/// stream (where it says why it failed) and counts what was dropped between them.
#[test]
fn an_installer_that_floods_its_output_is_cut_and_counted() {
    let vm = TestVm::booted("chatty");
    let script = "#!/bin/sh\n\
        dd if=/dev/zero bs=1024 count=3072 2>/dev/null | tr '\\0' o\n\
        dd if=/dev/zero bs=1024 count=3072 2>/dev/null | tr '\\0' e >&2\n\
        echo >&2\n\
        echo 'why it failed' >&2\n\
        exit 9\n";
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", script);
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"].as_str().unwrap().contains("why it failed"),
        "{r}"
    );
    let keep = vmguest::vm::qemu::EXEC_OUTPUT_KEEP;
    for (stream, fill) in [("stdout", 'o'), ("stderr", 'e')] {
        let text = r["installer"][stream].as_str().unwrap();
        assert!(text.len() < keep + 100, "{stream}: {} bytes", text.len());
        assert!(text.starts_with(fill), "{stream}");
        let written = 3072 * 1024 + if stream == "stdout" { 0 } else { 15 };
        let dropped = written - keep;
        assert!(
            text.contains(&format!("[... {dropped} bytes of {stream} dropped ...]")),
            "{stream}: {}",
            &text[keep / 2 - 10..keep / 2 + 60]
        );
    }
    assert!(r["installer"]["stderr"]
        .as_str()
        .unwrap()
        .ends_with("why it failed\n"));
}
