//! vmguest interrupted, killed, or left without its agent or a running VM mid-install,
//! concurrent installs on one VM, and the parallel pipeline. Real QEMU, the
//! real test guest and the real binary. Every check of a drive goes through the test's
//! own QMP monitor (`NAME.ctl`), apart from vmguest; every case ends with the user's disc
//! back in its drive.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::fixtures::*;

/// A booted test guest whose only drive holds the user's disc, and a journal that lives
/// across the runs of one test.
struct Scene {
    vm: TestVm,
    user: PathBuf,
    state: TempDir,
}

/// An IC ISO whose installer says `marker` on the serial console, then runs until killed.
fn slow_iso(dir: &Path, marker: &str, before: &str) -> PathBuf {
    ic_iso(
        dir,
        &format!("{marker}.iso"),
        "2.0.0",
        &format!("echo {marker} > /dev/ttyS0\n{before}sleep 61\n"),
    )
}

impl Scene {
    fn new(name: &str) -> Scene {
        let dir = tempfile::Builder::new().prefix("vmg").tempdir().unwrap();
        let user = user_iso(dir.path());
        let vm = TestVm::start_in(
            dir,
            name,
            Spec {
                boot: true,
                cd: Cd::With(user.clone()),
                ..Default::default()
            },
        );
        vm.agent();
        Scene {
            vm,
            user,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        vec![("VMGUEST_STATE_DIR", self.state.path().to_str().unwrap())]
    }

    fn args<'a>(&'a self, cmdlet: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec![
            cmdlet,
            self.vm.name.as_str(),
            "-VMDir",
            self.vm.dir.path().to_str().unwrap(),
            "-OutputFormat",
            "Json",
        ];
        a.extend_from_slice(extra);
        a
    }

    fn install(&self, iso: &Path, extra: &[&str]) -> (Value, std::process::Output) {
        let mut e = vec![
            "-Path",
            iso.to_str().unwrap(),
            "-ReplaceMedia",
            "-TimeoutSec",
            "120",
        ];
        e.extend_from_slice(extra);
        let out = vmguest_with(
            &self.args("Install-IntegrationComponents", &e),
            None,
            &self.env(),
        );
        (one(&out), out)
    }

    /// Start an install of a slow ISO and return once its installer runs in the guest.
    fn start_slow(&self, iso: &Path, marker: &str) -> Running {
        let args = self.args(
            "Install-IntegrationComponents",
            &[
                "-Path",
                iso.to_str().unwrap(),
                "-ReplaceMedia",
                "-TimeoutSec",
                "120",
            ],
        );
        let running = spawn_vmguest(&args, &self.env());
        self.vm.wait_for_console(marker, Duration::from_secs(120));
        running
    }

    fn repair(&self) -> (Value, std::process::Output) {
        let out = vmguest_with(&self.args("Repair-VMMedia", &[]), None, &self.env());
        (one(&out), out)
    }

    fn pending(&self) -> usize {
        std::fs::read_dir(self.state.path().join("journal"))
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
                })
                .count()
            })
            .unwrap_or(0)
    }

    fn assert_disc_back(&self, why: &str) {
        assert_eq!(
            self.vm.media_file().as_deref(),
            Some(self.user.to_str().unwrap()),
            "{why}: the user's disc is not back in cd0"
        );
        assert_eq!(self.pending(), 0, "{why}: the journal still has an entry");
    }

    /// No installer of ours left running in the guest.
    fn assert_installer_gone(&self) {
        let st = self.vm.guest_sh(
            "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done \
             | grep -c '^sleep 61' || true",
        );
        assert_eq!(st.stdout.trim(), "0", "an installer still runs: {st:?}");
    }
}

fn one(out: &std::process::Output) -> Value {
    let r = results(out);
    assert_eq!(r.len(), 1, "{}", describe(out));
    r.into_iter().next().unwrap()
}

#[test]
fn sigterm_sigint_and_sighup_mid_install_put_the_disc_back_before_exit() {
    let s = Scene::new("signals");
    let dir = s.vm.dir.path().to_owned();
    for (sig, name) in [
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        let marker = format!("VMGUEST-STARTED-{name}");
        let iso = slow_iso(&dir, &marker, "");
        let running = s.start_slow(&iso, &marker);
        let t = Instant::now();
        running.signal(sig);
        let out = running.finish();
        let r = one(&out);
        assert_eq!(out.status.code(), Some(14), "{name}: {}", describe(&out));
        assert_eq!(r["result"], "DISP_E_EXCEPTION", "{name}: {r}");
        let msg = r["message"].as_str().unwrap();
        assert!(msg.contains(&format!("interrupted by {name}")), "{msg}");
        assert_eq!(r["media_restored"], true, "{name}: {r}");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{name}: {:?}",
            t.elapsed()
        );
        s.assert_disc_back(name);
        s.assert_installer_gone();
    }
}

#[test]
fn after_kill_9_the_next_run_puts_the_disc_back_and_never_borrows_the_ic_media() {
    let s = Scene::new("killed");
    let slow = slow_iso(s.vm.dir.path(), "VMGUEST-STARTED-KILL", "");
    let running = s.start_slow(&slow, "VMGUEST-STARTED-KILL");
    running.signal(libc::SIGKILL);
    let out = running.finish();
    assert_eq!(
        out.status.code(),
        None,
        "killed by a signal: {}",
        describe(&out)
    );
    // The only record of the borrowed disc is the journal now.
    assert_eq!(s.vm.media_file().as_deref(), Some(slow.to_str().unwrap()));
    assert_eq!(s.pending(), 1);
    let listed = vmguest_with(&s.args("Get-VM", &[]), None, &s.env());
    let vm = one(&listed);
    assert_eq!(
        vm["pending_restore"]["user_media"]["file"],
        s.user.to_str().unwrap(),
        "{vm}"
    );

    let quick = ic_iso(
        s.vm.dir.path(),
        "quick.iso",
        "2.0.1",
        &good_installer("2.0.1"),
    );
    let (r, out) = s.install(&quick, &[]);
    assert_eq!(r["result"], "S_OK", "{}", describe(&out));
    assert_eq!(
        r["recovered"]["user_media"]["file"],
        s.user.to_str().unwrap()
    );
    assert_eq!(
        r["borrowed_media"]["file"],
        s.user.to_str().unwrap(),
        "the leftover IC media was taken for the user's disc: {r}"
    );
    assert_eq!(r["media_restored"], true);
    s.assert_disc_back("after the next install");
    s.assert_installer_gone();
    let st = s.vm.guest_sh("cat /opt/vmguest-ic/STATUS");
    assert_eq!(st.stdout.trim(), "installed 2.0.1");
}

#[test]
fn an_agent_killed_mid_install_is_reported_and_the_next_run_restores() {
    let s = Scene::new("agentkill");
    // The installer kills the agent that started it; the guest's init restarts it. It
    // ends 10 s later: vmguest waits for it through the new agent, and its exit status
    // is lost with the old one.
    let iso = slow_iso(
        s.vm.dir.path(),
        "VMGUEST-STARTED-AGENT",
        "kill -9 $(pidof qemu-ga)\nsleep 10\nexit 0\n",
    );
    let running = s.start_slow(&iso, "VMGUEST-STARTED-AGENT");
    let out = running.finish();
    let r = one(&out);
    assert_eq!(r["result"], "DISP_E_EXCEPTION", "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("the guest agent"),
        "the cause is not named: {msg}"
    );
    // Whether the restarted agent answers in time decides who puts the disc back: this
    // run (it ends the orphaned installer through the new agent), or the next one.
    if r["journal_pending"] == true {
        assert_eq!(s.pending(), 1);
        let (r, out) = s.repair();
        assert_eq!(r["result"], "S_OK", "{}", describe(&out));
        assert!(r["recovered"].is_object(), "{r}");
    } else {
        assert_eq!(r["media_restored"], true, "{r}");
    }
    s.assert_disc_back("after the agent came back");
    s.assert_installer_gone();
}

#[test]
fn a_vm_paused_mid_install_is_named_fast_and_restored_once_it_runs_again() {
    let s = Scene::new("paused");
    let iso = slow_iso(s.vm.dir.path(), "VMGUEST-STARTED-PAUSE", "");
    let running = s.start_slow(&iso, "VMGUEST-STARTED-PAUSE");
    let t = Instant::now();
    s.vm.set_running(false);
    let out = running.finish();
    let took = t.elapsed();
    let r = one(&out);
    assert_eq!(r["result"], "DISP_E_EXCEPTION", "{r}");
    let msg = r["message"].as_str().unwrap();
    assert!(msg.contains("the VM is paused"), "{msg}");
    // Named at the next poll, well within one call timeout (10 s), not after 24 s.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(s.pending(), 1);

    s.vm.set_running(true);
    let (r, out) = s.repair();
    assert_eq!(r["result"], "S_OK", "{}", describe(&out));
    s.assert_disc_back("after the VM ran again");
    s.assert_installer_gone();
}

/// Two installs on one VM at once: the second waits for the first (never a false "not
/// running", never a double mount), with one drive and with two.
#[test]
fn two_installs_on_one_vm_take_turns() {
    for second_cd in [false, true] {
        let dir = tempfile::Builder::new().prefix("vmg").tempdir().unwrap();
        let iso = ic_iso(
            dir.path(),
            "ic.iso",
            "3.0.0",
            "echo run >> /var/lib/turns; sleep 2\n",
        );
        let vm = TestVm::start_in(
            dir,
            "turns",
            Spec {
                boot: true,
                second_cd,
                ..Default::default()
            },
        );
        vm.agent();
        let state = tempfile::tempdir().unwrap();
        let env = [("VMGUEST_STATE_DIR", state.path().to_str().unwrap())];
        let d = vm.dir.path().to_str().unwrap();
        let args = [
            "Install-IntegrationComponents",
            "turns",
            "-VMDir",
            d,
            "-Path",
            iso.to_str().unwrap(),
            "-OutputFormat",
            "Json",
        ];
        let (a, b) = (spawn_vmguest(&args, &env), spawn_vmguest(&args, &env));
        let (a, b) = (a.finish(), b.finish());
        let (ra, rb) = (one(&a), one(&b));
        assert_eq!(ra["result"], "S_OK", "{}", describe(&a));
        assert_eq!(rb["result"], "S_OK", "{}", describe(&b));
        let waited = [&ra, &rb]
            .iter()
            .filter(|r| {
                r["notes"]
                    .to_string()
                    .contains("waited for another vmguest install")
            })
            .count();
        assert_eq!(waited, 1, "{ra}\n{rb}");
        let st = vm.guest_sh("wc -l < /var/lib/turns; grep -c vmguest-ic /proc/mounts || true");
        assert_eq!(
            st.stdout.split_whitespace().collect::<Vec<_>>(),
            ["2", "0"],
            "two runs, nothing left mounted"
        );
        assert!(
            vm.drives().iter().all(|d| d.media.is_none()),
            "{:?}",
            vm.drives()
        );
    }
}

/// -ThrottleLimit runs VMs at once; one failing in the middle does not stop the others,
/// results stream one JSON line each, and the exit code is that of the first VM in input
/// order that failed.
#[test]
fn a_throttled_pipeline_goes_on_past_a_failing_vm() {
    let dir = tempfile::Builder::new().prefix("vmg").tempdir().unwrap();
    let iso = ic_iso(dir.path(), "ic.iso", "1.0.0", "true\n");
    let d = dir.path().to_owned();
    let start = |name: &str, cd: Cd| {
        let sub = tempfile::Builder::new()
            .prefix("vmg")
            .tempdir_in(&d)
            .unwrap();
        let vm = TestVm::start_in(
            sub,
            name,
            Spec {
                cd,
                ..Default::default()
            },
        );
        std::os::unix::fs::symlink(vm.path("qmp"), d.join(format!("{name}.qmp"))).unwrap();
        vm
    };
    let vms = [
        start("a", Cd::Empty),
        start("b", Cd::None),
        start("c", Cd::Empty),
    ];
    let run = |names: &[&str]| {
        let mut args = vec![
            "Install-IntegrationComponents",
            "-VMDir",
            d.to_str().unwrap(),
            "-Path",
            iso.to_str().unwrap(),
            "-NoWait",
            "-ThrottleLimit",
            "2",
            "-OutputFormat",
            "Json",
        ];
        args.extend_from_slice(names);
        vmguest(&args, None)
    };
    let out = run(&["a", "b", "c"]);
    let mut got: Vec<(String, String)> = results(&out)
        .iter()
        .map(|r| {
            (
                r["vm"].as_str().unwrap().into(),
                r["result"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("a".into(), "S_OK".into()),
            ("b".into(), "VM_E_DRIVE_INVALID".into()),
            ("c".into(), "S_OK".into())
        ],
        "{}",
        describe(&out)
    );
    assert_eq!(out.status.code(), Some(12));
    for vm in [&vms[0], &vms[2]] {
        assert_eq!(vm.media_file().as_deref(), Some(iso.to_str().unwrap()));
    }
    // The exit code follows input order, not the order in which VMs end.
    for vm in [&vms[0], &vms[2]] {
        let mut c = vm.control();
        #[allow(deprecated)]
        c.qmp()
            .expect("QMP")
            .execute(qapi_qmp::eject {
                device: None,
                id: Some("cd0".into()),
                force: Some(false),
            })
            .unwrap();
    }
    let out = run(&["ghost", "b", "a"]);
    assert_eq!(results(&out).len(), 3, "{}", describe(&out));
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
}

/// QEMU serves one QMP client per monitor. A socket held by another client (a management
/// tool) is reported as busy, not as a VM that does not run.
#[test]
fn a_qmp_socket_held_by_another_client_is_busy_not_stopped() {
    let vm = TestVm::start("busy", Spec::default());
    let _held = std::os::unix::net::UnixStream::connect(vm.path("qmp")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = vmguest(
        &[
            "Get-VM",
            "busy",
            "-VMDir",
            vm.dir.path().to_str().unwrap(),
            "-OutputFormat",
            "Json",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    assert!(
        err.contains("QMP is busy") && err.contains("another client holds"),
        "{err}"
    );
    assert!(!err.contains("NOT_RUNNING"), "{err}");
}
