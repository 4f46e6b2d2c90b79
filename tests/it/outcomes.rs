//! Each of the seven documented outcomes, triggered for real on QEMU.

use std::time::{Duration, Instant};

use crate::fixtures::*;

#[test]
fn s_ok_installs_verifies_in_guest_and_leaves_the_drive_empty() {
    let vm = TestVm::booted("guest1");
    let iso = ic_iso(
        vm.dir.path(),
        "ic-1.2.0.iso",
        "1.2.0",
        &good_installer("1.2.0"),
    );
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "agent");
    assert_eq!(r["drive"], "cd0");
    assert_eq!(r["iso"], iso.canonicalize().unwrap().to_str().unwrap());
    assert_eq!(r["components"]["version"], "1.2.0");
    assert_eq!(r["installer"]["exit_code"], 0);
    assert!(r["installer"]["stdout"]
        .as_str()
        .unwrap()
        .contains("components 1.2.0 installed"));
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert!(
        phases.contains(&"run-installer") && phases.contains(&"eject-ic"),
        "{phases:?}"
    );

    // Verified inside the guest, independently of what vmguest reported.
    let st = vm.guest_sh("cat /opt/vmguest-ic/STATUS; grep -c . /proc/mounts >/dev/null; grep vmguest-ic /proc/mounts || true");
    assert_eq!(st.stdout.lines().next(), Some("installed 1.2.0"), "{st:?}");
    assert!(
        !st.stdout.contains("/run/vmguest-ic"),
        "IC still mounted: {st:?}"
    );
    let drive = &vm.drives()[0];
    assert!(drive.media.is_none(), "drive not empty: {drive:?}");
    assert!(!drive.tray_open, "tray left open");

    // Get-VM reads the installed version back from the guest.
    let dir = vm.dir.path().to_str().unwrap();
    let out = vmguest(
        &["Get-VM", "guest1", "-VMDir", dir, "-OutputFormat", "Json"],
        None,
    );
    let vms = results(&out);
    assert_eq!(
        vms[0]["integration_components"]["components"]["version"],
        "1.2.0",
        "{}",
        describe(&out)
    );
    assert_eq!(vms[0]["guest_os"]["id"], "vmguest-test");
}

#[test]
fn vm_not_running_when_paused() {
    let iso_dir = tempfile::tempdir().unwrap();
    let iso = ic_iso(iso_dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let vm = TestVm::start("paused", Spec::default());
    vm.control()
        .qmp()
        .expect("QMP")
        .execute(qapi_qmp::stop {})
        .unwrap();
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "VM_E_VM_NOT_RUNNING", "0xA0040206", 10);
    assert!(r["message"].as_str().unwrap().contains("paused"), "{r}");
    assert!(vm.media_file().is_none(), "drive touched");
}

#[test]
fn vm_not_running_when_qemu_has_exited_or_is_only_defined() {
    let iso_dir = tempfile::tempdir().unwrap();
    let iso = ic_iso(iso_dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let mut vm = TestVm::start("gone", Spec::default());
    vm.kill();
    assert!(
        vm.path("qmp").exists(),
        "the stale socket should stay behind"
    );
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "VM_E_VM_NOT_RUNNING", "0xA0040206", 10);

    // A VM known only by its definition file (stopped, no socket).
    std::fs::write(vm.dir.path().join("stopped.toml"), "").unwrap();
    let dir = vm.dir.path().to_str().unwrap();
    let out = vmguest(
        &[
            "install-integration-components",
            "stopped",
            "--vm-dir",
            dir,
            "--output",
            "json",
            "--path",
            iso.to_str().unwrap(),
        ],
        None,
    );
    assert_outcome(
        &results(&out)[0],
        &out,
        "VM_E_VM_NOT_RUNNING",
        "0xA0040206",
        10,
    );
}

#[test]
fn vm_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = vmguest(
        &[
            "Install-IntegrationComponents",
            "-VMName",
            "nosuchvm",
            "-VMDir",
            d,
            "-OutputFormat",
            "Json",
        ],
        None,
    );
    let r = &results(&out)[0];
    assert_outcome(r, &out, "VM_E_VM_UNKNOWN", "0xA0040207", 11);
    assert_eq!(r["vm"], "nosuchvm");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ObjectNotFound: (nosuchvm:String)"),
        "{stderr}"
    );
    let out = vmguest(&["Get-VM", "nosuchvm", "-VMDir", d], None);
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));
}

#[test]
fn drive_invalid_without_any_drive() {
    let iso_dir = tempfile::tempdir().unwrap();
    let iso = ic_iso(iso_dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let vm = TestVm::start(
        "nodrive",
        Spec {
            cd: Cd::None,
            ..Default::default()
        },
    );
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "VM_E_DRIVE_INVALID", "0xA0040502", 12);
    assert!(vm.drives().is_empty());
}

#[test]
fn drive_invalid_when_every_drive_is_occupied_and_media_untouched() {
    let iso_dir = tempfile::tempdir().unwrap();
    let iso = ic_iso(iso_dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let user = user_iso(iso_dir.path());
    let vm = TestVm::start(
        "full",
        Spec {
            cd: Cd::With(user.clone()),
            ..Default::default()
        },
    );
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "VM_E_DRIVE_INVALID", "0xA0040502", 12);
    assert!(r["message"].as_str().unwrap().contains("-ReplaceMedia"));
    assert_eq!(vm.media_file().as_deref(), user.to_str());
}

#[test]
fn media_unmount_fail_when_the_guest_locks_a_borrowed_tray() {
    let vm_iso = tempfile::tempdir().unwrap();
    let user = user_iso(vm_iso.path());
    let vm = TestVm::start(
        "locked",
        Spec {
            boot: true,
            cd: Cd::With(user.clone()),
            ..Default::default()
        },
    );
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let lock = vm.guest_sh("eject -i on /dev/sr0");
    assert!(lock.succeeded(), "{lock:?}");
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap(), "-ReplaceMedia"]);
    assert_outcome(&r, &out, "VM_E_MEDIA_UNMOUNT_FAIL", "0xA0040508", 13);
    assert!(r["message"].as_str().unwrap().contains("locked"), "{r}");
    assert_eq!(
        vm.media_file().as_deref(),
        user.to_str(),
        "user media must stay in"
    );
}

#[test]
fn media_unmount_fail_when_the_guest_keeps_the_ic_mounted() {
    let vm = TestVm::booted("busy");
    // Installs fine, but leaves a process whose working directory is on the media.
    let script = format!(
        "{}(cd \"$VMGUEST_IC_MEDIA\" && exec sleep 3600) </dev/null >/dev/null 2>&1 &\n",
        good_installer("2.0.0")
    );
    let iso = ic_iso(vm.dir.path(), "ic.iso", "2.0.0", &script);
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "VM_E_MEDIA_UNMOUNT_FAIL", "0xA0040508", 13);
    let msg = r["message"].as_str().unwrap();
    assert!(
        msg.contains("2.0.0 were installed") && msg.contains("still in drive cd0"),
        "{msg}"
    );
    assert_eq!(r["installer"]["exit_code"], 0);
    assert_eq!(
        vm.media_file().as_deref(),
        iso.canonicalize().unwrap().to_str()
    );
    assert_eq!(
        vm.guest_sh("cat /opt/vmguest-ic/STATUS").stdout.trim(),
        "installed 2.0.0"
    );
}

#[test]
fn file_not_found_for_missing_corrupt_and_unconfigured_isos() {
    let vm = TestVm::start("noiso", Spec::default());
    let expect_not_found = |args: &[&str], reason: &str| {
        let (r, out) = install_json(&vm, args);
        assert_file_not_found(&r, &out);
        assert!(r["message"].as_str().unwrap().contains(reason), "{r}");
    };
    let missing = vm.dir.path().join("missing.iso");
    expect_not_found(&["-Path", missing.to_str().unwrap()], "missing.iso");
    let corrupt = vm.dir.path().join("corrupt.iso");
    std::fs::write(&corrupt, vec![0x5Au8; 64 * 1024]).unwrap();
    expect_not_found(
        &["-Path", corrupt.to_str().unwrap()],
        "not an ISO 9660 image",
    );
    expect_not_found(&[], "searched");
    assert!(vm.media_file().is_none(), "drive touched");
}

#[test]
fn disp_e_exception_when_the_installer_fails_and_the_media_still_comes_out() {
    let vm = TestVm::booted("failing");
    let iso = ic_iso(
        vm.dir.path(),
        "ic.iso",
        "1.0.0",
        "#!/bin/sh\necho 'disk full' >&2\nexit 3\n",
    );
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert_eq!(r["installer"]["exit_code"], 3);
    assert!(r["installer"]["stderr"]
        .as_str()
        .unwrap()
        .contains("disk full"));
    assert!(
        r["message"].as_str().unwrap().contains("exit code 3"),
        "{r}"
    );
    assert!(vm.media_file().is_none(), "IC media left in the drive");
}

#[test]
fn disp_e_exception_when_qemu_is_killed_mid_install() {
    let mut vm = TestVm::booted("killed");
    let script = "#!/bin/sh\necho VMGUEST-INSTALLER-STARTED > /dev/ttyS0\nsleep 120\n";
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", script);
    let dir = vm.dir.path().to_str().unwrap().to_owned();
    let iso_arg = iso.to_str().unwrap().to_owned();
    let name = vm.name.clone();
    let runner = std::thread::spawn(move || {
        vmguest(
            &[
                "Install-IntegrationComponents",
                &name,
                "-VMDir",
                &dir,
                "-Path",
                &iso_arg,
                "-OutputFormat",
                "Json",
            ],
            None,
        )
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while !vm.console().contains("VMGUEST-INSTALLER-STARTED") {
        assert!(Instant::now() < deadline, "installer never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    vm.kill();
    let out = runner.join().unwrap();
    let r = &results(&out)[0];
    assert_outcome(r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(r["message"].as_str().unwrap().contains("installer"), "{r}");
}

#[test]
fn timeout_kills_a_hung_installer_and_no_wait_leaves_media_for_autorun() {
    let vm = TestVm::booted("hung");
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", "#!/bin/sh\nsleep 600\n");
    let t = std::time::Instant::now();
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap(), "-TimeoutSec", "3"]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("still running after 3s"),
        "{r}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "the timeout was not enforced"
    );
    // The whole installer tree was killed, so the media could come out.
    assert!(vm.media_file().is_none(), "IC media left in: {r}");
    assert!(
        vm.guest_sh("ps | grep '[s]leep 600'")
            .stdout
            .trim()
            .is_empty(),
        "installer survived"
    );

    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap(), "-NoWait"]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "autorun");
    assert!(r["installer"].is_null());
    assert_eq!(
        vm.media_file().as_deref(),
        iso.canonicalize().unwrap().to_str()
    );
}
