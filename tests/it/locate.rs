//! The location policy on ISO layouts that mirror the real families, built with xorriso,
//! and on the real test guest.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use vmguest::iso::{self, fake_exe, reader};
use vmguest::kinds::GuestKind;
use vmguest::Settings;

use crate::fixtures::*;

fn exe(v: [u16; 4]) -> Vec<u8> {
    fake_exe(v)
}

fn vbox(dir: &Path, file: &str, volid: &str, linux_installer: &str) -> PathBuf {
    layout_iso(
        dir,
        file,
        volid,
        &[
            ("VBoxLinuxAdditions.run", linux_installer.as_bytes()),
            ("VBoxWindowsAdditions.exe", &exe([7, 0, 12, 29484])),
            ("VBoxWindowsAdditions-amd64.exe", &exe([7, 0, 12, 29484])),
            ("AUTORUN.INF", b"[autorun]"),
            ("cert/VBoxCertUtil.exe", b"MZ"),
        ],
    )
}

fn vmware_windows(dir: &Path) -> PathBuf {
    layout_iso(
        dir,
        "windows.iso",
        "VMware Tools",
        &[
            ("setup64.exe", &exe([12, 3, 0, 47352])),
            ("setup.exe", &exe([12, 3, 0, 47352])),
            ("manifest.txt", b"vmtools"),
        ],
    )
}

fn vmware_linux(dir: &Path) -> PathBuf {
    layout_iso(
        dir,
        "linux.iso",
        "VMware Tools",
        &[("VMwareTools-10.3.26-22085142.tar.gz", b"\x1f\x8b")],
    )
}

fn hyper_v(dir: &Path) -> PathBuf {
    layout_iso(
        dir,
        "vmguest.iso",
        "IC_V6_3",
        &[
            ("support/amd64/setup.exe", &exe([6, 3, 9600, 18080])),
            ("support/x86/setup.exe", &exe([6, 3, 9600, 18080])),
            (
                "support/amd64/Windows6.x-HyperVIntegrationServices-x64.cab",
                b"cab",
            ),
        ],
    )
}

/// A config dir with `text` as config.toml.
fn config(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("vmguest")).unwrap();
    std::fs::write(dir.path().join("vmguest/config.toml"), text).unwrap();
    dir
}

const HERMETIC: &str = "search_well_known = false\n";

fn get_iso(store: &Path, config_dir: &Path, args: &[&str]) -> (Vec<Value>, std::process::Output) {
    let mut all = vec!["Get-IntegrationComponentsIso", "-OutputFormat", "Json"];
    all.extend_from_slice(args);
    let out = vmguest_with(
        &all,
        None,
        &[
            ("VMGUEST_IC_PATH", store.to_str().unwrap()),
            ("XDG_CONFIG_HOME", config_dir.to_str().unwrap()),
        ],
    );
    (results(&out), out)
}

fn by_file<'a>(cands: &'a [Value], file: &str) -> &'a Value {
    cands
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with(&format!("/{file}")))
        .unwrap_or_else(|| panic!("{file} not listed: {cands:#?}"))
}

fn selected(cands: &[Value]) -> Vec<&Value> {
    cands.iter().filter(|c| c["selected"] == true).collect()
}

#[test]
fn a_mixed_store_selects_the_newest_of_the_right_family_by_content() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    // The liar: its name says 0.1.999, its content 0.1.240.
    virtio_win(s, "virtio-win-0.1.999.iso", "0.1.240");
    virtio_win(s, "virtio-win.iso", "0.1.266");
    virtio_win(s, "virtio-win-0.1.96.iso", "0.1.96");
    vbox(
        s,
        "VBoxGuestAdditions_7.1.4.iso",
        "VBox_GAs_7.1.4",
        "#!/bin/sh\n",
    );
    vbox(
        s,
        "VBoxGuestAdditions.iso",
        "VBOXADDITIONS_6.1.50_161033",
        "#!/bin/sh\n",
    );
    vmware_windows(s);
    hyper_v(s);
    ic_iso(s, "vmguest-ic-1.9.0.iso", "1.9.0", "true");
    ic_iso(s, "vmguest-ic-1.10.0.iso", "1.10.0", "true");
    // Bad files: a truncated ISO, a text file, an empty file.
    let real = std::fs::read(s.join("virtio-win.iso")).unwrap();
    std::fs::write(s.join("truncated.iso"), &real[..40 * 1024]).unwrap();
    std::fs::write(s.join("notes.iso"), b"this is not an image\n".repeat(3000)).unwrap();
    std::fs::write(s.join("empty.iso"), b"").unwrap();
    for d in std::fs::read_dir(s).unwrap() {
        let p = d.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
    let hermetic = config(HERMETIC);

    let (cands, out) = get_iso(s, hermetic.path(), &["-GuestOS", "windows"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(cands.len(), 12, "{cands:#?}");
    let chosen = selected(&cands);
    assert_eq!(chosen.len(), 1, "{cands:#?}");
    assert!(chosen[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("/virtio-win.iso"));
    assert_eq!(chosen[0]["family"], "virtio-win");
    assert_eq!(chosen[0]["version"], "0.1.266");
    assert!(
        chosen[0]["reason"].as_str().unwrap().contains("newest"),
        "{}",
        chosen[0]
    );
    let liar = by_file(&cands, "virtio-win-0.1.999.iso");
    assert_eq!(liar["version"], "0.1.240", "content wins over the name");
    assert!(
        liar["reason"].as_str().unwrap().contains("not the newest"),
        "{liar}"
    );
    for bad in ["truncated.iso", "notes.iso", "empty.iso"] {
        let c = by_file(&cands, bad);
        assert_eq!(c["selected"], false);
        assert!(c["family"].is_null(), "{c}");
        assert!(
            c["reason"].as_str().unwrap().starts_with("refused: "),
            "{c}"
        );
    }
    assert!(by_file(&cands, "truncated.iso")["reason"]
        .as_str()
        .unwrap()
        .contains("runs past the end"));
    assert!(by_file(&cands, "notes.iso")["reason"]
        .as_str()
        .unwrap()
        .contains("not an ISO 9660 image"));
    assert_eq!(by_file(&cands, "vmguest.iso")["family"], "hyper-v");
    assert_eq!(by_file(&cands, "vmguest.iso")["version"], "6.3.9600.18080");
    assert_eq!(by_file(&cands, "windows.iso")["family"], "vmware-tools");
    assert_eq!(
        by_file(&cands, "VBoxGuestAdditions.iso")["version"],
        "6.1.50"
    );
    // Reading an ISO takes a few sectors, not the image.
    for c in cands.iter().filter(|c| !c["family"].is_null()) {
        assert!(c["bytes_read"].as_u64().unwrap() <= 64 * 1024, "{c}");
    }

    // A Linux guest on QEMU gets the project's own format, compared numerically.
    let (cands, _) = get_iso(s, hermetic.path(), &["-GuestOS", "linux"]);
    let chosen = selected(&cands);
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0]["version"], "1.10.0");
    assert!(by_file(&cands, "virtio-win.iso")["reason"]
        .as_str()
        .unwrap()
        .contains("not used for Linux guests"));

    // Configured otherwise: VirtualBox for Windows, old and new volume id styles compared.
    let vbox_cfg = config(&format!(
        "{HERMETIC}[families]\nwindows = [\"virtualbox\"]\n"
    ));
    let (cands, _) = get_iso(s, vbox_cfg.path(), &["-GuestOS", "windows"]);
    let chosen = selected(&cands);
    assert_eq!(chosen[0]["family"], "virtualbox");
    assert_eq!(chosen[0]["version"], "7.1.4");
}

#[test]
fn windows_recipes_name_files_that_exist_on_the_mirrored_layouts() {
    let store = tempfile::tempdir().unwrap();
    let s = store.path();
    let cases = [
        (
            virtio_win(s, "v.iso", "0.1.266"),
            "virtio-win",
            "0.1.266",
            "virtio-win-guest-tools.exe /install /quiet /norestart",
        ),
        (
            vbox(s, "vb.iso", "VBox_GAs_7.0.12", "#!/bin/sh\n"),
            "virtualbox",
            "7.0.12",
            "VBoxWindowsAdditions.exe /S",
        ),
        (
            vmware_windows(s),
            "vmware-tools",
            "12.3.0.47352",
            "setup64.exe /S /v \"/qn REBOOT=R\"",
        ),
        (
            hyper_v(s),
            "hyper-v",
            "6.3.9600.18080",
            "support\\amd64\\setup.exe /quiet /norestart",
        ),
    ];
    for (path, family, version, command) in cases {
        let chosen = iso::locate(
            &Settings::isolated("/nonexistent"),
            Some(&path),
            GuestKind::Windows,
        )
        .unwrap_or_else(|f| panic!("{}: {:#}", path.display(), f.error));
        assert_eq!(chosen.family.as_str(), family);
        assert_eq!(chosen.version.as_deref(), Some(version));
        let cmd = chosen.recipe.windows_for("x86_64").unwrap();
        assert_eq!(cmd, command);
        // The program the command runs is on the media.
        let program = cmd.split_whitespace().next().unwrap().replace('\\', "/");
        let file = std::fs::File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut image = reader::Image::open(file, len, reader::Limits::default()).unwrap();
        assert!(
            image.lookup(&program).unwrap().is_some_and(|e| !e.is_dir),
            "{program} missing on {family}'s layout"
        );
        assert_eq!(chosen.sha256.wait().unwrap(), sha256sum(&path));
    }
    // The Linux recipes of the tarball and .run families.
    let linux = iso::locate(
        &Settings::isolated("/nonexistent"),
        Some(&vmware_linux(s)),
        GuestKind::Linux,
    )
    .unwrap();
    assert_eq!(linux.version.as_deref(), Some("10.3.26"));
    assert!(linux
        .recipe
        .linux
        .unwrap()
        .contains("vmware-install.pl --default"));
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[test]
fn an_empty_store_is_file_not_found_listing_every_place_searched() {
    let store = tempfile::tempdir().unwrap();
    let out = vmguest_with(
        &["Get-IntegrationComponentsIso", "-GuestOS", "linux"],
        None,
        &[("VMGUEST_IC_PATH", store.path().to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(15), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0x80070002"), "{err}");
    for place in [
        store.path().to_str().unwrap(),
        "VMGUEST_IC_PATH",
        "/usr/share/virtio-win",
        "/var/lib/libvirt/images",
    ] {
        assert!(err.contains(place), "{place} not listed:\n{err}");
    }
    // The user's config is isolated; the system's is whatever this machine has (a
    // vmguest package ships one), and the record must say which is the case.
    let system = Path::new(vmguest::settings::SYSTEM_CONFIG).exists();
    assert_eq!(
        err.contains("no config file"),
        !system,
        "system config present: {system}\n{err}"
    );
}

#[test]
fn the_real_guest_installs_the_newest_of_two_own_format_isos_from_the_path() {
    let vm = TestVm::booted("newest");
    let store = tempfile::tempdir().unwrap();
    // Names that lie: the "9.9.9" file holds 1.9.0.
    ic_iso(
        store.path(),
        "ic-9.9.9.iso",
        "1.9.0",
        &good_installer("1.9.0"),
    );
    let newest = ic_iso(
        store.path(),
        "ic-1.10.0.iso",
        "1.10.0",
        &good_installer("1.10.0"),
    );
    let (r, out) = install_json_with(
        &vm,
        &[],
        &[("VMGUEST_IC_PATH", store.path().to_str().unwrap())],
    );
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["iso"], newest.canonicalize().unwrap().to_str().unwrap());
    assert_eq!(r["iso_family"], "vmguest");
    assert_eq!(r["iso_version"], "1.10.0");
    assert_eq!(r["iso_source"], "VMGUEST_IC_PATH");
    assert_eq!(r["iso_sha256"], sha256sum(&newest));
    let st = vm.guest_sh("cat /opt/vmguest-ic/STATUS");
    assert_eq!(st.stdout.trim(), "installed 1.10.0", "{st:?}");
    assert!(vm.drives()[0].media.is_none());
}

#[test]
fn a_linux_guest_configured_for_virtualbox_runs_its_linux_installer() {
    let vm = TestVm::booted("vboxguest");
    let store = tempfile::tempdir().unwrap();
    let run = "#!/bin/sh\nmkdir -p /opt/vbox && echo \"$@\" > /opt/vbox/args && echo done\n";
    vbox(
        store.path(),
        "VBoxGuestAdditions.iso",
        "VBox_GAs_7.0.12",
        run,
    );
    let cfg = config(&format!("{HERMETIC}[families]\nlinux = [\"virtualbox\"]\n"));
    let (r, out) = install_json_with(
        &vm,
        &[],
        &[
            ("VMGUEST_IC_PATH", store.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", cfg.path().to_str().unwrap()),
        ],
    );
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["iso_family"], "virtualbox");
    assert_eq!(
        r["installer"]["command"],
        "sh ./VBoxLinuxAdditions.run --nox11"
    );
    let st = vm.guest_sh("cat /opt/vbox/args");
    assert_eq!(st.stdout.trim(), "--nox11", "{st:?}");
}

/// Without Joliet, names come from Rock Ridge; without either, only 8.3 ISO names exist
/// and the manifest cannot be found by its real name.
#[test]
fn rock_ridge_names_are_read_when_there_is_no_joliet() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("vmguest-ic.toml"),
        "[components]\nfamily = \"vmguest\"\nname = \"rr\"\nversion = \"3.1.4\"\n",
    )
    .unwrap();
    for (flags, rock_ridge) in [("-R", true), ("--norock", false)] {
        let iso = dir.path().join(format!("rr-{rock_ridge}.iso"));
        let out = Command::new("xorriso")
            .args(["-as", "mkisofs"])
            .arg(flags)
            .args(["-V", "RR_ONLY", "-o"])
            .arg(&iso)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let file = std::fs::File::open(&iso).unwrap();
        let len = file.metadata().unwrap().len();
        let mut image = reader::Image::open(file, len, reader::Limits::default()).unwrap();
        assert!(!image.has_joliet());
        assert_eq!(image.has_rock_ridge(), rock_ridge);
        let found = image.lookup("vmguest-ic.toml").unwrap().is_some();
        assert_eq!(found, rock_ridge, "{:?}", image.root_names().unwrap());
        let id = iso::inspect(iso::Named {
            path: iso.clone(),
            source: "test".into(),
            rank: 0,
            pinned: false,
            within: None,
        });
        assert_eq!(id.version().is_some(), rock_ridge, "{}", id.reason);
    }
}

/// A manifest that breaks the schema is refused with the line, table and field, not as a
/// corrupt image.
#[test]
fn a_manifest_schema_error_names_the_line_table_and_field() {
    let store = tempfile::tempdir().unwrap();
    let manifest = b"[components]\nfamily = \"vmguest\"\nname = \"x\"\nversion = \"1.0.0\"\n\n[install.linux]\ncomand = \"sh ./install.sh\"\n";
    layout_iso(
        store.path(),
        "typo.iso",
        "TYPO",
        &[("vmguest-ic.toml", manifest.as_slice())],
    );
    let cfg = config(HERMETIC);
    let (cands, out) = get_iso(store.path(), cfg.path(), &["-GuestOS", "linux"]);
    let reason = by_file(&cands, "typo.iso")["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.starts_with(
            "refused: vmguest-ic.toml, line 7, in [install.linux]: unknown field `comand`"
        ),
        "{reason}\n{}",
        describe(&out)
    );
    assert!(!reason.contains("corrupt"), "{reason}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("for a Linux guest"), "{err}");
}

/// An empty or relative XDG_* value is ignored, as the XDG spec says: the default under
/// $HOME is used instead.
#[test]
fn a_relative_xdg_config_home_is_ignored_for_the_default_under_home() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".config/vmguest")).unwrap();
    std::fs::write(
        home.path().join(".config/vmguest/config.toml"),
        "search_well_known = false\nic_path = [\"/from-home-config\"]\n",
    )
    .unwrap();
    for bad in ["relative/config", ""] {
        let out = vmguest_with(
            &["Get-IntegrationComponentsIso", "-GuestOS", "unknown"],
            None,
            &[
                ("HOME", home.path().to_str().unwrap()),
                ("XDG_CONFIG_HOME", bad),
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("/from-home-config") && err.contains("for an unknown guest"),
            "XDG_CONFIG_HOME={bad:?}: the config under $HOME was not used:\n{err}"
        );
    }
}

/// Give `path` to uid 65534: another user's, as a shared upload directory would be.
fn give_away(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap_or_else(|e| {
        panic!(
            "chown {} to 65534 (the tests run as root): {e}",
            path.display()
        )
    });
}

fn reason(c: &Value) -> &str {
    c["reason"].as_str().unwrap()
}

/// Root reads only ISOs that it or the effective user owns, in directories nobody else can
/// write: anyone who can upload to an IC directory could otherwise publish a "newest" ISO
/// whose command runs as root in every guest.
#[test]
fn an_iso_in_another_users_directory_is_refused_with_its_reason_and_never_selected() {
    let top = tempfile::tempdir().unwrap();
    let store = top.path().join("store");
    let upload = top.path().join("upload");
    std::fs::create_dir(&store).unwrap();
    std::fs::create_dir(&upload).unwrap();
    ic_iso(&store, "vmguest-ic-1.0.0.iso", "1.0.0", "true");
    let planted = ic_iso(&upload, "vmguest-ic-9.9.9.iso", "9.9.9", "true");
    give_away(&upload);
    let hermetic = config(HERMETIC);
    let both = format!("{}:{}", store.display(), upload.display());

    let (cands, out) = get_iso(
        Path::new(&both),
        hermetic.path(),
        &["-GuestOS", "linux", "-Verbose"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let bad = by_file(&cands, "vmguest-ic-9.9.9.iso");
    assert_eq!(bad["selected"], false, "{bad}");
    assert!(bad["family"].is_null(), "never read: {bad}");
    assert!(
        reason(bad).starts_with("refused: not trusted")
            && reason(bad).contains("owned by uid 65534"),
        "{bad}"
    );
    let chosen = selected(&cands);
    assert_eq!(chosen.len(), 1, "{cands:#?}");
    assert_eq!(chosen[0]["version"], "1.0.0");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&planted.display().to_string()) && err.contains("owned by uid 65534"),
        "the -Verbose log names the refused file and why:\n{err}"
    );

    // Nothing usable left: ERROR_FILE_NOT_FOUND, with the reason among the places searched.
    let (_, out) = get_iso(&upload, hermetic.path(), &["-GuestOS", "linux"]);
    assert_eq!(out.status.code(), Some(15), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("0x80070002"), "{err}");
    assert!(
        err.contains(&format!(
            "{} ({IC_PATH}): 1 *.iso file(s); not trusted",
            upload.display()
        )) && err.contains(&format!("{}: refused: not trusted", planted.display())),
        "{err}"
    );

    // -Path too: the file's content decides what runs as root, whoever named it.
    let (cands, out) = get_iso(
        &store,
        hermetic.path(),
        &["-GuestOS", "linux", "-Path", planted.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(15), "{}", describe(&out));
    assert_eq!(cands.len(), 1, "{cands:#?}");
    assert!(
        reason(&cands[0]).contains("owned by uid 65534"),
        "{cands:#?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused: not trusted"), "{err}");
}

const IC_PATH: &str = "VMGUEST_IC_PATH";

#[test]
fn a_group_writable_iso_is_refused_with_its_reason_and_never_selected() {
    use std::os::unix::fs::PermissionsExt;
    let store = tempfile::tempdir().unwrap();
    ic_iso(store.path(), "vmguest-ic-1.0.0.iso", "1.0.0", "true");
    let planted = ic_iso(store.path(), "vmguest-ic-9.9.9.iso", "9.9.9", "true");
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o664)).unwrap();
    let hermetic = config(HERMETIC);
    let (cands, out) = get_iso(store.path(), hermetic.path(), &["-GuestOS", "linux"]);
    assert!(out.status.success(), "{}", describe(&out));
    let bad = by_file(&cands, "vmguest-ic-9.9.9.iso");
    assert_eq!(bad["selected"], false, "{bad}");
    assert!(
        reason(bad).contains("not trusted") && reason(bad).contains("writable by group or others"),
        "{bad}"
    );
    let chosen = selected(&cands);
    assert_eq!(chosen.len(), 1, "{cands:#?}");
    assert_eq!(chosen[0]["version"], "1.0.0");
}

/// A FIFO named like an ISO used to block the run in open(2) forever. The child gets a
/// deadline, so a regression fails here instead of hanging the suite.
#[test]
fn a_fifo_named_iso_is_refused_at_once() {
    use std::io::Read;
    use std::os::unix::ffi::OsStrExt;
    use std::time::{Duration, Instant};
    let store = tempfile::tempdir().unwrap();
    ic_iso(store.path(), "vmguest-ic-1.0.0.iso", "1.0.0", "true");
    let fifo = store.path().join("x.iso");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let hermetic = config(HERMETIC);
    let mut run = spawn_vmguest(
        &[
            "Get-IntegrationComponentsIso",
            "-OutputFormat",
            "Json",
            "-GuestOS",
            "linux",
        ],
        &[
            (IC_PATH, store.path().to_str().unwrap()),
            ("XDG_CONFIG_HOME", hermetic.path().to_str().unwrap()),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // By its pid: this child only.
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(run.child.id() as i32, libc::SIGKILL) };
            let _ = run.child.wait();
            panic!("vmguest hung on a FIFO named x.iso");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    run.child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    run.child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let out = std::process::Output {
        status,
        stdout,
        stderr,
    };
    assert!(out.status.success(), "{}", describe(&out));
    let cands = results(&out);
    let bad = by_file(&cands, "x.iso");
    assert_eq!(bad["selected"], false, "{bad}");
    assert!(reason(bad).contains("not a regular file: a FIFO"), "{bad}");
    assert_eq!(selected(&cands)[0]["version"], "1.0.0", "{cands:#?}");
}

/// A config file names the ISO that runs as root: another user's is not applied.
#[test]
fn a_config_file_owned_by_another_user_is_not_applied() {
    let store = tempfile::tempdir().unwrap();
    let old = ic_iso(store.path(), "vmguest-ic-1.0.0.iso", "1.0.0", "true");
    ic_iso(store.path(), "vmguest-ic-2.0.0.iso", "2.0.0", "true");
    let cfg = config(&format!(
        "{HERMETIC}default_iso = {:?}\n",
        old.to_str().unwrap()
    ));
    let file = cfg.path().join("vmguest/config.toml");

    let (cands, out) = get_iso(store.path(), cfg.path(), &["-GuestOS", "linux"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        selected(&cands)[0]["version"],
        "1.0.0",
        "pinned by the config"
    );

    give_away(&file);
    let (cands, out) = get_iso(store.path(), cfg.path(), &["-GuestOS", "linux"]);
    assert!(out.status.success(), "{}", describe(&out));
    let chosen = selected(&cands);
    assert_eq!(chosen[0]["version"], "2.0.0", "{cands:#?}");
    assert!(!reason(chosen[0]).contains("pinned"), "{cands:#?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.display().to_string())
            && err.contains("not trusted")
            && err.contains("owned by uid 65534"),
        "{err}"
    );
}

/// `sudo -E` keeps the user's HOME: root must not use a cache (or config) there, which
/// that user could fill, but its own home from the passwd entry.
#[test]
fn root_with_another_users_home_uses_a_cache_under_its_own_home() {
    use std::os::unix::fs::MetadataExt;
    let top = tempfile::tempdir().unwrap();
    let alice = top.path().join("alice");
    std::fs::create_dir(&alice).unwrap();
    give_away(&alice);
    let store = tempfile::tempdir().unwrap();
    let iso = ic_iso(store.path(), "vmguest-ic-1.0.0.iso", "1.0.0", "true");
    // SAFETY: getpwuid returns null or a pointer to a static entry, read at once.
    let root_home = unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        assert!(!pw.is_null(), "no passwd entry for the effective user");
        PathBuf::from(std::ffi::CStr::from_ptr((*pw).pw_dir).to_str().unwrap())
    };
    let meta = std::fs::metadata(&iso).unwrap();
    let entry = root_home.join(format!(
        ".cache/vmguest/digests/{}-{}",
        meta.dev(),
        meta.ino()
    ));
    let _ = std::fs::remove_file(&entry);

    // Empty XDG_* values are ignored (the spec), so these bases derive from HOME; the
    // config stays hermetic.
    let hermetic = config(HERMETIC);
    let out = vmguest_with(
        &[
            "Get-IntegrationComponentsIso",
            "-OutputFormat",
            "Json",
            "-GuestOS",
            "linux",
        ],
        None,
        &[
            ("HOME", alice.to_str().unwrap()),
            ("XDG_CACHE_HOME", ""),
            ("XDG_CONFIG_HOME", hermetic.path().to_str().unwrap()),
            ("XDG_DATA_HOME", ""),
            (IC_PATH, store.path().to_str().unwrap()),
        ],
    );
    let used = entry.exists();
    let _ = std::fs::remove_file(&entry);
    assert!(out.status.success(), "{}", describe(&out));
    let cands = results(&out);
    assert!(selected(&cands)[0]["sha256"].is_string(), "{cands:#?}");
    let under_home: Vec<_> = std::fs::read_dir(&alice)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        under_home.is_empty(),
        "root wrote into the user's HOME: {under_home:?}"
    );
    assert!(
        used,
        "the digest cache under root's own home was not used: {}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("running as root") && err.contains(&alice.display().to_string()),
        "{err}"
    );
}
