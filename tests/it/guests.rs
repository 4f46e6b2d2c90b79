//! What the guest runs, checked in the real test guest: the version before and after,
//! an installer that lies, a guest already up to date, `-Force`, media of no known
//! family named with `-Path`, and `-InstallCommand`.

use std::path::{Path, PathBuf};

use vmguest::vm::VmControl;

use crate::fixtures::*;

/// An own-format ISO whose `[verify.linux]` reads `/opt/vmguest-ic/VERSION`; its installer
/// counts its runs in `/var/lib/vmguest-runs` and, unless `lies`, writes the version.
fn versioned_iso(dir: &Path, version: &str, lies: bool) -> PathBuf {
    let write = if lies {
        String::new()
    } else {
        write_version(version)
    };
    let script = format!("echo run >> /var/lib/vmguest-runs\n{write}exit 0\n");
    verified_iso(
        dir,
        "verified tools",
        &format!("v{version}.iso"),
        version,
        &script,
    )
}

/// `Get-VM`'s version columns, with the store holding the test's ISOs.
fn status(vm: &TestVm, store: &Path) -> (String, Option<String>, Option<String>) {
    let r = [get_vm_json(
        vm,
        &[("VMGUEST_IC_PATH", store.to_str().unwrap())],
    )];
    let s = |k: &str| r[0][k].as_str().map(str::to_owned);
    (
        s("version_status").unwrap(),
        s("installed_version"),
        s("latest_version"),
    )
}

/// The record's versions: before, after, and whether the guest runs the media's.
fn assert_versions(
    r: &serde_json::Value,
    out: &std::process::Output,
    before: Option<&str>,
    after: Option<&str>,
    verified: bool,
) {
    let got = (
        r["version_before"].as_str(),
        r["version_after"].as_str(),
        r["verified"].as_bool(),
    );
    assert_eq!(got, (before, after, Some(verified)), "{}", describe(out));
}

fn runs(vm: &TestVm) -> usize {
    let st = vm.guest_sh("cat /var/lib/vmguest-runs 2>/dev/null | wc -l");
    st.stdout.trim().parse().unwrap()
}

#[test]
fn versions_before_and_after_a_lying_installer_up_to_date_and_force() {
    let vm = TestVm::booted("verify");
    let dir = tempfile::tempdir().unwrap();
    let v1 = versioned_iso(dir.path(), "1.0.0", false);
    let v2_lies = versioned_iso(dir.path(), "2.0.0", true);
    assert_eq!(
        status(&vm, dir.path()),
        ("not-installed".to_owned(), None, Some("2.0.0".to_owned()))
    );

    let (r, out) = install_json(&vm, &["-Path", v1.to_str().unwrap()]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_versions(&r, &out, None, Some("1.0.0"), true);
    assert_eq!(runs(&vm), 1);
    assert_eq!(
        status(&vm, dir.path()),
        (
            "upgrade-available".to_owned(),
            Some("1.0.0".to_owned()),
            Some("2.0.0".to_owned())
        )
    );

    // Up to date: nothing is mounted and the installer does not run.
    let (r, out) = install_json(&vm, &["-Path", v1.to_str().unwrap()]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("already up to date"),
        "{}",
        describe(&out)
    );
    assert_eq!(r["version_before"], "1.0.0");
    assert_eq!(
        r["drive"],
        serde_json::Value::Null,
        "no drive was touched: {r}"
    );
    assert!(r["installer"].is_null());
    assert_eq!(runs(&vm), 1, "the installer did not run again");
    assert!(vm.media_file().is_none());

    // -Force installs anyway.
    let (r, out) = install_json(&vm, &["-Path", v1.to_str().unwrap(), "-Force"]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(runs(&vm), 2, "-Force ran the installer: {}", describe(&out));
    assert_eq!(r["verified"], true);

    // The installer says it worked, and the guest still runs 1.0.0.
    let (r, out) = install_json(&vm, &["-Path", v2_lies.to_str().unwrap()]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("installer reported success but the guest still runs verified tools 1.0.0"),
        "{}",
        describe(&out)
    );
    assert_versions(&r, &out, Some("1.0.0"), Some("1.0.0"), false);
    assert_eq!(runs(&vm), 3);
    assert!(
        vm.media_file().is_none(),
        "the media came out after the failure"
    );
}

#[test]
fn an_explicit_iso_of_no_known_family_goes_in_and_install_command_runs_on_it() {
    let vm = TestVm::booted("anyiso");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("data.d");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("setup.sh"),
        "echo \"setup ran from $PWD\" > /var/lib/setup-ran\n",
    )
    .unwrap();
    let data = mkisofs(&src, &dir.path().join("data.iso"), "SOME_VENDOR_TOOLS");

    // Without -InstallCommand: in for the guest's autorun.
    let (r, out) = install_json(&vm, &["-Path", data.to_str().unwrap()]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "autorun", "{}", describe(&out));
    assert_eq!(r["iso_family"], "other");
    assert!(
        r["notes"].to_string().contains("no known IC family"),
        "the note says why: {}",
        describe(&out)
    );
    assert_eq!(vm.media_file().as_deref(), data.to_str());

    // With it, the command runs in the guest on the mounted media. The drive must be
    // empty again first.
    vm.control().eject_media("cd0").unwrap();
    let (r, out) = install_json(
        &vm,
        &[
            "-Path",
            data.to_str().unwrap(),
            "-InstallCommand",
            "sh ./setup.sh",
        ],
    );
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "agent", "{}", describe(&out));
    assert_eq!(r["installer"]["command"], "sh ./setup.sh");
    let st = vm.guest_sh("cat /var/lib/setup-ran");
    assert_eq!(st.stdout.trim(), "setup ran from /run/vmguest-ic");
    assert!(vm.media_file().is_none());

    // The location policy still ignores such media, and a non-ISO -Path is not found.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not an image").unwrap();
    let (r, out) = install_json(&vm, &["-Path", text.to_str().unwrap()]);
    assert_file_not_found(&r, &out);
    let (r, out) = install_json_with(
        &vm,
        &[],
        &[("VMGUEST_IC_PATH", dir.path().to_str().unwrap())],
    );
    assert_file_not_found(&r, &out);
}

/// An own-format ISO with a Windows installer, `setup.exe /S`.
fn windows_iso(dir: &Path) -> PathBuf {
    let src = dir.join("win.d");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("vmguest-ic.toml"),
        "[components]\nfamily = \"vmguest\"\nname = \"windows tools\"\nversion = \"3.0.0\"\n\n\
         [install.windows]\ncommand = \"setup.exe /S\"\n",
    )
    .unwrap();
    std::fs::write(src.join("setup.exe"), b"MZ").unwrap();
    mkisofs(&src, &dir.join("win.iso"), "WINDOWS_TOOLS_3_0_0")
}

/// Windows guests through the agent DOUBLE of `winagent.rs` (no Windows guest can be had
/// here), on a real QEMU VM: the drive letter found from the media's bytes, the
/// installer started by its full path, exit codes mapped, the reboot flag, -Restart.
#[test]
fn windows_guest_through_the_agent_double() {
    let vm = TestVm::start("win", Spec::default());
    let agent = crate::winagent::WinAgent::start(&vm, 0);
    let dir = tempfile::tempdir().unwrap();
    let iso = windows_iso(dir.path());
    let path = iso.to_str().unwrap();

    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "agent", "{}", describe(&out));
    assert_eq!(r["guest_os"]["id"], "mswindows");
    assert_eq!(r["installer"]["command"], "D:\\setup.exe /S");
    assert_eq!(r["reboot_required"], false);
    assert_eq!(
        agent.execs(),
        vec![("D:\\setup.exe".to_owned(), vec!["/S".to_owned()])]
    );
    assert!(vm.media_file().is_none(), "the IC media came out");

    // 3010: installed, the guest must restart; without -Restart it is never restarted.
    agent.set_exit_code(3010);
    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["reboot_required"], true, "{}", describe(&out));
    assert!(r["notes"].to_string().contains("-Restart"), "{r}");
    assert_eq!(agent.reboots(), 0);

    let (r, out) = install_json(&vm, &["-Path", path, "-Restart", "-TimeoutSec", "60"]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["restarted"], true, "{}", describe(&out));
    assert_eq!(agent.reboots(), 1);

    // 1603 and 1602: failures with their meaning; the media still comes out.
    agent.set_exit_code(1603);
    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("1603 ERROR_INSTALL_FAILURE"),
        "{}",
        describe(&out)
    );
    assert!(vm.media_file().is_none());
    agent.set_exit_code(1602);
    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(r["message"].as_str().unwrap().contains("cancelled"), "{r}");

    // An installer that never ends is stopped at -TimeoutSec with taskkill, its tree
    // included.
    agent.set_exit_code(crate::winagent::HANGS);
    let (r, out) = install_json(&vm, &["-Path", path, "-TimeoutSec", "2"]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    let (program, args) = agent.execs().pop().unwrap();
    assert_eq!(
        program,
        "C:\\Windows\\System32\\taskkill.exe",
        "{}",
        describe(&out)
    );
    assert_eq!(
        (args[0].as_str(), &args[2..]),
        ("/PID", &["/T".to_owned(), "/F".to_owned()][..])
    );
    assert!(vm.media_file().is_none());

    // -InstallCommand runs through cmd.exe from the media's root.
    agent.set_exit_code(0);
    let (r, out) = install_json(
        &vm,
        &["-Path", path, "-InstallCommand", "tools\\run.cmd /y"],
    );
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    let last = agent.execs().pop().unwrap();
    assert_eq!(
        last,
        (
            "C:\\Windows\\System32\\cmd.exe".to_owned(),
            vec![
                "/c".to_owned(),
                "cd /d D:\\ && tools\\run.cmd /y".to_owned()
            ]
        )
    );
}

/// Windows versions from the uninstall entry virtio-win's installer registers, through
/// the DOUBLE's reg.exe: before and after, up to date, and an installer that lies.
#[test]
fn windows_versions_from_the_uninstall_entry() {
    let vm = TestVm::start("winver", Spec::default());
    let agent = crate::winagent::WinAgent::start(&vm, 0);
    let dir = tempfile::tempdir().unwrap();
    let iso = crate::winagent::guest_tools_iso(dir.path());
    let path = iso.to_str().unwrap();
    agent.registers(Some(("Virtio-win-guest-tools", "0.1.266")));

    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["iso_family"], "virtio-win");
    assert_eq!(
        r["installer"]["command"],
        "D:\\virtio-win-guest-tools.exe /install /quiet /norestart"
    );
    assert_versions(&r, &out, None, Some("0.1.266"), true);
    assert_eq!(agent.installers().len(), 1);

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
    assert_eq!(agent.installers().len(), 1, "nothing ran");

    // An older version is installed and the installer does not change it.
    agent.set_installed("Virtio-win-guest-tools", "0.1.240");
    agent.registers(None);
    let (r, out) = install_json(&vm, &["-Path", path]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("installer reported success but the guest still runs"),
        "{}",
        describe(&out)
    );
    assert_versions(&r, &out, Some("0.1.240"), Some("0.1.240"), false);
    assert!(vm.media_file().is_none());
}
