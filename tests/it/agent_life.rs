//! The guest agent's life cycle on the real test guest: an agent that answers late,
//! a channel with no agent behind it, an agent restarted under the installer, and an
//! agent with calls switched off (`--block-rpcs`).
//!
//! The busybox guest's init restarts qemu-ga a second after it exits, on the port link
//! `/dev/virtio-ports/org.qemu.guest_agent.0`; a test keeps the agent down by moving
//! that link away, and runs an agent of its own on the port device itself.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vmguest::vm::GuestAgent;

use crate::fixtures::*;

/// The agent's port link, as the guest's init starts qemu-ga on it.
const PORT: &str = "/dev/virtio-ports/org.qemu.guest_agent.0";

/// Start `script` in the guest and do not wait for it: it may take the agent down.
fn fire(vm: &TestVm, script: &str) {
    let mut agent = vm.agent();
    let detached = format!("setsid sh -c '{script}' </dev/null >/dev/null 2>&1 &");
    agent
        .exec("/bin/sh", &["-c".into(), detached], &[])
        .expect("guest-exec");
}

/// Replace the running agent with `qemu-ga ARGS` on the port device; init's own agent
/// stays down for good (its link is gone).
fn own_agent(vm: &TestVm, args: &str) {
    fire(
        vm,
        &format!(
            "for p in /sys/class/virtio-ports/*; do \
             [ \"$(cat $p/name)\" = org.qemu.guest_agent.0 ] && t=/dev/${{p##*/}}; done; \
             rm -f {PORT}; sleep 1; \
             kill $(pidof qemu-ga); sleep 1; echo own agent on $t > /dev/ttyS0; \
             qemu-ga -m virtio-serial -p $t -t /run {args} 2>/dev/ttyS0"
        ),
    );
    std::thread::sleep(Duration::from_secs(3));
}

fn install(vm: &TestVm, iso: &Path, extra: &[&str]) -> (Value, std::process::Output) {
    let mut args = vec!["-Path", iso.to_str().unwrap(), "-TimeoutSec", "120"];
    args.extend_from_slice(extra);
    install_json_with(vm, &args, &[("VMGUEST_AGENT_WAIT_SEC", "60")])
}

fn notes(r: &Value) -> Vec<String> {
    r["notes"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn noted(r: &Value, text: &str) -> bool {
    notes(r).iter().any(|n| n.contains(text))
}

/// An own-format ISO whose `[verify.linux]` reads `/opt/vmguest-ic/VERSION`; its
/// installer kills the agent that started it (init starts a new one), waits, and writes
/// the version unless `lies`.
fn restarting_iso(dir: &Path, version: &str, lies: bool) -> PathBuf {
    let write = if lies {
        String::new()
    } else {
        write_version(version)
    };
    let script = format!("kill $(pidof qemu-ga)\nsleep 3\n{write}exit 0\n");
    verified_iso(
        dir,
        "restarting tools",
        &format!("r{version}.iso"),
        version,
        &script,
    )
}

/// A guest whose agent comes up ~10 s after vmguest starts: waited for, then the
/// unattended install runs, and the note says so.
#[test]
fn an_agent_that_starts_late_gets_the_unattended_install() {
    let vm = TestVm::booted("late");
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    // The link comes back after 10 s, and init's loop starts the agent on it again.
    fire(
        &vm,
        &format!(
            "t=$(readlink {PORT}); rm -f {PORT}; (sleep 12; ln -s $t {PORT}) & \
             sleep 1; kill $(pidof qemu-ga); wait"
        ),
    );
    std::thread::sleep(Duration::from_secs(3));
    let (r, out) = install(&vm, &iso, &[]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "agent", "{r}");
    assert!(noted(&r, "then it answered"), "{r}");
    let st = vm.guest_sh("cat /opt/vmguest-ic/STATUS");
    assert_eq!(st.stdout.trim(), "installed 1.0.0");
    assert_eq!(vm.media_file(), None, "the drive is empty again");
}

/// A channel with no agent behind it (the agent is stopped for good): autorun after
/// -AgentWaitSec, and the run ends within the wait and a margin.
#[test]
fn a_channel_without_an_agent_gets_autorun_after_the_wait() {
    let vm = TestVm::booted("noagent");
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    fire(
        &vm,
        &format!("rm -f {PORT}; sleep 1; kill $(pidof qemu-ga)"),
    );
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    let (r, out) = install(&vm, &iso, &["-AgentWaitSec", "8"]);
    let took = t.elapsed();
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "autorun", "{r}");
    assert!(noted(&r, "never answered"), "{r}");
    assert!(took >= Duration::from_secs(8), "it did not wait: {took:?}");
    assert!(took < Duration::from_secs(8 + 30), "{took:?}");
    assert_eq!(
        vm.media_file().as_deref(),
        iso.canonicalize().unwrap().to_str()
    );
}

/// The installer restarts the agent and writes the media's version: verified, S_OK,
/// with a note; the media is unmounted and ejected through the new agent.
#[test]
fn an_agent_restarted_by_the_installer_is_verified_by_version() {
    let vm = TestVm::booted("restarted");
    let iso = restarting_iso(vm.dir.path(), "3.0.0", false);
    let (r, out) = install(&vm, &iso, &[]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert!(
        noted(&r, "the guest agent restarted during the install"),
        "{r}"
    );
    assert_eq!(r["journal_pending"], false, "{r}");
    assert_eq!(vm.media_file(), None, "the drive is empty again");
    let st = vm.guest_sh("grep -c vmguest-ic /proc/mounts");
    assert_eq!(st.stdout.trim(), "0", "still mounted in the guest");
}

/// The same restart, but the version never shows: the outcome is unknown, never S_OK.
#[test]
fn an_agent_restarted_by_an_installer_that_leaves_no_version_is_an_unknown_outcome() {
    let vm = TestVm::booted("unknown");
    let iso = restarting_iso(vm.dir.path(), "3.0.1", true);
    let (r, out) = install(&vm, &iso, &[]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("the outcome is unknown"), "{msg}");
    assert!(msg.contains("exit status is lost"), "{msg}");
    assert_eq!(vm.media_file(), None, "the drive is empty again");
}

/// Calls switched off with `--block-rpcs`: first the file calls (named exactly), then
/// `guest-exec` (named, with how to allow it; -NoWait still inserts for autorun).
/// Nothing in the VM changes on a refusal.
#[test]
fn an_agent_with_calls_switched_off_is_refused_by_name() {
    let vm = TestVm::booted("blocked");
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));

    own_agent(
        &vm,
        "-b guest-file-open,guest-file-read,guest-file-write,guest-file-close",
    );
    let (r, out) = install(&vm, &iso, &[]);
    assert_eq!(r["result"], "DISP_E_EXCEPTION", "{r}\n{}", vm.console());
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("guest-file-open, guest-file-read, guest-file-write, guest-file-close"),
        "{msg}"
    );
    assert!(!msg.contains("guest-exec"), "{msg}");
    assert_eq!(vm.media_file(), None, "nothing went in");

    own_agent(&vm, "-b guest-exec,guest-exec-status");
    let (r, out) = install(&vm, &iso, &[]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    let msg = r["message"].as_str().unwrap();
    for text in ["guest-exec, guest-exec-status", "block-rpcs", "-NoWait"] {
        assert!(msg.contains(text), "{text}: {msg}");
    }
    assert_eq!(vm.media_file(), None, "nothing went in");

    let (r, out) = install(&vm, &iso, &["-NoWait"]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "autorun", "{r}");
}
