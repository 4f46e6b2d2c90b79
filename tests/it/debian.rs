//! The real-guest tests on Debian 12 (systemd, udev, Debian's qemu-guest-agent as a
//! service; built by tests/guest/build-debian-guest.sh). Each test boots the guest once
//! and runs its cases as phases on that boot: a boot costs about 20 s under TCG, and a
//! phase leaves nothing behind that the next one does not assert. Two tests, so that
//! the suite's two test threads run them side by side.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmguest::vm::{GuestAgent, Media, VmControl};

use crate::fixtures::*;

/// An own-format ISO whose `[verify.linux]` reads `/opt/vmguest-ic/VERSION`, which its
/// installer writes.
fn debian_tools(dir: &Path, version: &str) -> PathBuf {
    debian_tools_with(dir, version, &format!("set -e\n{}", write_version(version)))
}

/// The same, with `install.sh` of the test's own.
fn debian_tools_with(dir: &Path, version: &str, script: &str) -> PathBuf {
    let file = format!("debian-tools-{version}.iso");
    verified_iso(dir, "debian tools", &file, version, script)
}

/// `Get-VM` as JSON, with `store` as the ISO store.
fn get_vm(vm: &TestVm, store: &Path) -> serde_json::Value {
    get_vm_json(vm, &[("VMGUEST_IC_PATH", store.to_str().unwrap())])
}

fn versions(v: &serde_json::Value) -> (&str, Option<&str>, Option<&str>) {
    (
        v["version_status"].as_str().unwrap_or("(none)"),
        v["installed_version"].as_str(),
        v["latest_version"].as_str(),
    )
}

/// What udev's database says about the media in /dev/sr0 (after `udevadm settle`).
fn udev_media(vm: &TestVm) -> String {
    let st = vm.guest_sh(
        "udevadm settle -t 10; udevadm info --query=property --name=/dev/sr0 \
         | grep -E '^(ID_CDROM_MEDIA|ID_FS_LABEL|ID_FS_TYPE)=' | sort",
    );
    st.stdout
}

#[test]
fn debian_guest_install_verify_replace_mounted_media_and_get_vm() {
    let vm = TestVm::booted_debian("deb", Cd::Empty);
    let store = tempfile::tempdir().unwrap();
    let media = tempfile::tempdir().unwrap();

    // The guest really is the Debian one, with the agent run by systemd.
    let st = vm.guest_sh(
        "systemctl is-active qemu-guest-agent; systemctl is-system-running --wait; \
         cat /proc/1/comm",
    );
    let lines: Vec<&str> = st.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"active"), "{st:?}");
    assert_eq!(lines.last(), Some(&"systemd"), "{st:?}");
    println!("debian: systemd says the system is {:?}", lines.get(1));
    assert_eq!(
        lines.get(1),
        Some(&"running"),
        "failed units: {:?}",
        vm.guest_sh("systemctl --failed --no-legend").stdout
    );

    // Phase 1: Get-VM's guest OS and version status before anything is installed.
    let v1 = debian_tools(store.path(), "1.0.0");
    let before = get_vm(&vm, store.path());
    assert_eq!(before["guest_os"]["id"], "debian", "{before}");
    assert_eq!(before["guest_os"]["version_id"], "12", "{before}");
    assert_eq!(
        versions(&before),
        ("not-installed", None, Some("1.0.0")),
        "{before}"
    );

    // Phase 2: an own-format install into the empty drive, verified by [verify.linux].
    let (r, out) = install_json(&vm, &["-Path", v1.to_str().unwrap()]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "agent", "{}", describe(&out));
    assert_eq!(r["guest_os"]["id"], "debian");
    assert_eq!(
        (
            r["version_before"].as_str(),
            r["version_after"].as_str(),
            r["verified"].as_bool()
        ),
        (None, Some("1.0.0"), Some(true)),
        "{}",
        describe(&out)
    );
    let st = vm.guest_sh("cat /opt/vmguest-ic/VERSION; grep -c ' /run/vmguest-ic ' /proc/mounts");
    assert_eq!(st.stdout.lines().next(), Some("1.0.0"), "{st:?}");
    assert_eq!(
        st.stdout.lines().nth(1),
        Some("0"),
        "IC still mounted: {st:?}"
    );
    assert!(vm.media_file().is_none(), "the IC media came out");
    assert_eq!(
        versions(&get_vm(&vm, store.path())),
        ("current", Some("1.0.0"), Some("1.0.0"))
    );

    // Phase 3: -ReplaceMedia while the user's disc is in the drive and mounted in the
    // guest. The disc goes in through the test's own monitor, as an admin would.
    let user = user_iso(media.path());
    vm.control()
        .insert_media("cd0", &Media::iso(user.to_str().unwrap()))
        .expect("inserting the user's disc");
    let st = vm.guest_sh(
        "mkdir -p /mnt/user; for i in $(seq 100); do \
         mount -o ro /dev/sr0 /mnt/user 2>/dev/null && break; sleep 0.1; done; \
         cat /mnt/user/README.TXT",
    );
    assert_eq!(st.stdout.trim(), "the user's own disc", "{st:?}");
    let seen = udev_media(&vm);
    assert!(
        seen.contains("ID_FS_LABEL=USER_DISC"),
        "udev before: {seen}"
    );

    let v2 = debian_tools(store.path(), "2.0.0");
    assert_eq!(
        versions(&get_vm(&vm, store.path())),
        ("upgrade-available", Some("1.0.0"), Some("2.0.0"))
    );
    // Mounted, the disc is locked in by the guest's kernel: QEMU refuses the eject, and
    // vmguest reports it and leaves the disc in. (vmguest does not retry the borrow; were
    // it to wait for udev's answer below, this attempt could succeed instead.)
    let (r, out) = install_json(&vm, &["-Path", v2.to_str().unwrap(), "-ReplaceMedia"]);
    assert_outcome(&r, &out, "VM_E_MEDIA_UNMOUNT_FAIL", "0xA0040508", 13);
    assert!(
        r["message"]
            .as_str()
            .unwrap_or("")
            .contains("locked its tray"),
        "{}",
        describe(&out)
    );
    assert!(r["installer"].is_null(), "nothing ran: {r}");
    // udev's own handling: QEMU's refused eject reaches the guest as an eject request
    // (DISK_EJECT_REQUEST), udev's 60-cdrom_id.rules runs `cdrom_id --eject-media`,
    // which opens the tray, and systemd stops the mount bound to the device
    // (SYSTEMD_MOUNT_DEVICE_BOUND). The disc stays in QEMU's drive, in an open tray.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (drive, mounts) = loop {
        let drive = vm.drives().into_iter().find(|d| d.id == "cd0").unwrap();
        let mounts = vm.guest_sh("grep -c ' /mnt/user ' /proc/mounts").stdout;
        if (drive.tray_open && mounts.trim() == "0") || Instant::now() > deadline {
            break (drive, mounts);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        drive.media.as_ref().map(|m| m.file.as_str()),
        user.to_str(),
        "the user's disc stays in the drive: {drive:?}"
    );
    assert!(drive.tray_open, "udev opened the tray: {drive:?}");
    assert!(!drive.locked, "udev unlocked the tray: {drive:?}");
    assert_eq!(mounts.trim(), "0", "systemd dropped the stale mount");
    println!(
        "debian: after the refused eject, udev opened the tray and systemd unmounted /mnt/user"
    );

    // Now the tray is open and unlocked: the borrow succeeds, the install runs and the
    // user's disc goes back, tray closed.
    let (r, out) = install_json(&vm, &["-Path", v2.to_str().unwrap(), "-ReplaceMedia"]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["borrowed_media"]["file"], user.to_str().unwrap(), "{r}");
    assert_eq!(r["media_restored"], true, "{r}");
    assert_eq!(r["version_after"], "2.0.0", "{r}");
    assert_eq!(r["verified"], true, "{r}");
    let drive = vm.drives().into_iter().find(|d| d.id == "cd0").unwrap();
    assert_eq!(
        drive.media.as_ref().map(|m| m.file.as_str()),
        user.to_str(),
        "the user's disc is back: {drive:?}"
    );
    assert!(!drive.tray_open, "tray closed again: {drive:?}");

    // udev sees the user's disc again (its database names the label), and nothing
    // remounts it: Debian without an automounter (udisks2) leaves /mnt/user unmounted.
    // The guest kernel notices the change at its next media poll (every 2 s, set by
    // udev's 60-block.rules), and udev reads the disc then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let seen = loop {
        let seen = udev_media(&vm);
        if seen.contains("ID_FS_LABEL=USER_DISC") || std::time::Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(seen.contains("ID_FS_LABEL=USER_DISC"), "udev after: {seen}");
    let st = vm.guest_sh(
        "grep -c ' /mnt/user ' /proc/mounts; mount -o ro /dev/sr0 /mnt/user && cat /mnt/user/README.TXT",
    );
    let mut lines = st.stdout.lines();
    assert_eq!(lines.next(), Some("0"), "nothing remounted it: {st:?}");
    assert_eq!(
        lines.next(),
        Some("the user's own disc"),
        "the guest can mount it again: {st:?}"
    );
    println!("debian: the user's disc is back; udev re-read it (ID_FS_LABEL=USER_DISC) and remounted nothing");

    // Phase 4: Get-VM after the upgrade.
    let after = get_vm(&vm, store.path());
    assert_eq!(after["guest_os"]["id"], "debian");
    assert_eq!(
        versions(&after),
        ("current", Some("2.0.0"), Some("2.0.0")),
        "{after}"
    );
}

/// Write /etc/qemu/qemu-ga.conf and restart the agent as an admin would. The restart is
/// delayed (systemd-run) so that this very guest-exec's status is read before the agent
/// goes; then the test waits until the new agent reports `blocked` switched off, so no
/// restart can fall into the install that follows.
fn configure_agent(vm: &TestVm, conf: &str, blocked: &[&str]) {
    let st = vm.guest_sh(&format!(
        "mkdir -p /etc/qemu && printf '%s' '{conf}' > /etc/qemu/qemu-ga.conf && \
         systemd-run --quiet --on-active=1 --timer-property=AccuracySec=10ms \
         systemctl restart qemu-guest-agent"
    ));
    assert!(st.succeeded(), "{st:?}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let disabled = vm.agent().disabled_commands();
        if let Ok(Some(d)) = &disabled {
            if blocked.iter().all(|b| d.iter().any(|c| c == b)) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the agent never came back with {blocked:?} switched off: {disabled:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The agent's life cycle on Debian: an installer that restarts the agent
/// (`systemctl restart qemu-guest-agent`, as a package upgrade does), and an agent with
/// calls switched off by `block-rpcs` in /etc/qemu/qemu-ga.conf. One boot.
#[test]
fn debian_guest_agent_restarted_by_the_installer_and_blocked_rpcs() {
    let vm = TestVm::booted_debian("debrpc", Cd::Empty);
    let store = tempfile::tempdir().unwrap();
    let pid_before = vm
        .guest_sh("systemctl show -P MainPID qemu-guest-agent")
        .stdout;

    // The installer installs, then restarts the agent: systemd stops the service's whole
    // cgroup, the installer with it, so the exec pid and its status are gone. The
    // version read back decides: S_OK, with a note.
    let restarts = "set -e\nmkdir -p /opt/vmguest-ic\necho 3.0.0 > /opt/vmguest-ic/VERSION\nsync\n\
                    systemctl restart qemu-guest-agent\nsleep 30\n";
    let iso = debian_tools_with(store.path(), "3.0.0", restarts);
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert!(
        r["notes"]
            .to_string()
            .contains("the guest agent restarted during the install"),
        "{}",
        describe(&out)
    );
    assert_eq!(r["version_after"], "3.0.0", "{r}");
    assert_eq!(r["verified"], true, "{r}");
    let pid_after = vm
        .guest_sh("systemctl show -P MainPID qemu-guest-agent")
        .stdout;
    assert_ne!(pid_before, pid_after, "the agent really restarted");
    // Clean-up ran once the agent was back: unmounted in the guest, out of the drive.
    let st = vm.guest_sh("grep -c ' /run/vmguest-ic ' /proc/mounts");
    assert_eq!(st.stdout.trim(), "0", "{st:?}");
    assert!(vm.media_file().is_none(), "the IC media came out");

    // The same restart by an installer that does not install: never a false S_OK.
    let liar = "systemctl restart qemu-guest-agent\nsleep 30\n";
    let iso = debian_tools_with(store.path(), "3.1.0", liar);
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    let msg = r["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("the outcome is unknown") && msg.contains("3.0.0"),
        "{}",
        describe(&out)
    );
    assert!(vm.media_file().is_none(), "the IC media came out");

    // Only the file calls blocked: refused before anything in the VM changes, naming
    // them and how to allow them.
    configure_agent(
        &vm,
        "[general]\nblock-rpcs=guest-file-open,guest-file-read\n",
        &["guest-file-open", "guest-file-read"],
    );
    let iso = debian_tools(store.path(), "4.0.0");
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    let msg = r["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("guest-file-open, guest-file-read")
            && msg.contains("block-rpcs")
            && msg.contains("/etc/qemu/qemu-ga.conf"),
        "{}",
        describe(&out)
    );
    assert!(!msg.contains("guest-exec"), "exec is not blocked: {msg}");
    assert!(vm.media_file().is_none(), "nothing went into the drive");

    // guest-exec blocked (last: no guest command can run after this).
    configure_agent(
        &vm,
        "[general]\nblock-rpcs=guest-exec,guest-exec-status\n",
        &["guest-exec", "guest-exec-status"],
    );
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    let msg = r["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("guest-exec, guest-exec-status")
            && msg.contains("block-rpcs")
            && msg.contains("-NoWait"),
        "{}",
        describe(&out)
    );
    assert!(r["installer"].is_null(), "{r}");
    assert!(vm.media_file().is_none(), "nothing went into the drive");
}
