//! The host command around the operation: borrowing media, autorun, -WhatIf, pipeline
//! input, -ErrorAction and the table output, all on real QEMU.

use crate::fixtures::*;

#[test]
fn replace_media_borrows_an_occupied_drive_and_puts_the_media_back() {
    let media_dir = tempfile::tempdir().unwrap();
    let user = user_iso(media_dir.path());
    let vm = TestVm::start(
        "borrow",
        Spec {
            boot: true,
            cd: Cd::With(user.clone()),
            ..Default::default()
        },
    );
    let iso = ic_iso(vm.dir.path(), "ic.iso", "3.1.0", &good_installer("3.1.0"));
    vm.agent();
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap(), "-ReplaceMedia"]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["borrowed_media"]["file"], user.to_str().unwrap());
    assert_eq!(r["media_restored"], true);
    let drive = &vm.drives()[0];
    let media = drive.media.as_ref().expect("user media back");
    assert_eq!(media.file, user.to_str().unwrap());
    assert!(media.read_only);
    assert_eq!(
        vm.guest_sh("cat /opt/vmguest-ic/STATUS").stdout.trim(),
        "installed 3.1.0"
    );

    // A failing installer: the outcome is the failure, and the user's media still goes back.
    let bad = ic_iso(vm.dir.path(), "bad.iso", "3.2.0", "#!/bin/sh\nexit 9\n");
    let (r, out) = install_json(&vm, &["-Path", bad.to_str().unwrap(), "-ReplaceMedia"]);
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert_eq!(r["media_restored"], true, "{r}");
    assert_eq!(vm.media_file().as_deref(), user.to_str());
}

#[test]
fn without_an_agent_the_media_is_left_for_autorun() {
    let vm = TestVm::start("noagent", Spec::default());
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap()]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["mode"], "autorun");
    assert!(r["message"].as_str().unwrap().contains("autorun"));
    assert_eq!(
        vm.media_file().as_deref(),
        iso.canonicalize().unwrap().to_str()
    );

    // The configured default ISO serves when -Path is not given.
    let config = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(config.path().join("vmguest")).unwrap();
    std::fs::write(
        config.path().join("vmguest/config.toml"),
        format!("default_iso = {:?}\n", iso.to_str().unwrap()),
    )
    .unwrap();
    let empty = TestVm::start("configured", Spec::default());
    let dir = empty.dir.path().to_str().unwrap();
    let out = vmguest_with(
        &[
            "Install-IntegrationComponents",
            "configured",
            "-VMDir",
            dir,
            "-OutputFormat",
            "Json",
        ],
        None,
        &[("XDG_CONFIG_HOME", config.path().to_str().unwrap())],
    );
    let r = &results(&out)[0];
    assert_outcome(r, &out, "S_OK", "0x00000000", 0);
    assert!(
        r["iso_source"].as_str().unwrap().contains("default_iso"),
        "{r}"
    );
    assert_eq!(
        empty.media_file().as_deref(),
        iso.canonicalize().unwrap().to_str()
    );
}

#[test]
fn what_if_plans_and_touches_nothing() {
    let media_dir = tempfile::tempdir().unwrap();
    let user = user_iso(media_dir.path());
    let vm = TestVm::start(
        "plan",
        Spec {
            cd: Cd::With(user.clone()),
            ..Default::default()
        },
    );
    let iso = ic_iso(vm.dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let (r, out) = install_json(&vm, &["-Path", iso.to_str().unwrap(), "-WhatIf"]);
    // The plan shows what would fail: the only drive is occupied.
    assert_outcome(&r, &out, "VM_E_DRIVE_INVALID", "0xA0040502", 12);
    assert_eq!(r["what_if"], true);
    assert_eq!(vm.media_file().as_deref(), user.to_str());

    let empty = TestVm::start("plan2", Spec::default());
    let (r, out) = install_json(&empty, &["-Path", iso.to_str().unwrap(), "-WhatIf"]);
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert!(
        r["message"].as_str().unwrap().starts_with("What if:"),
        "{r}"
    );
    assert!(empty.media_file().is_none(), "-WhatIf inserted media");

    // Without -Path, -WhatIf shows the location policy's choice and why.
    let store = tempfile::tempdir().unwrap();
    ic_iso(store.path(), "a.iso", "2.0.0-rc1", "true");
    ic_iso(store.path(), "b.iso", "1.9.9", "true");
    let (r, out) = install_json_with(
        &empty,
        &["-WhatIf"],
        &[("VMGUEST_IC_PATH", store.path().to_str().unwrap())],
    );
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["iso_version"], "2.0.0-rc1");
    let reason = r["iso_reason"].as_str().unwrap();
    assert!(reason.starts_with("newest vmguest (2.0.0-rc1) of 2"), "{r}");
    assert!(r["message"].as_str().unwrap().contains(reason), "{r}");
    assert!(empty.media_file().is_none(), "-WhatIf inserted media");
}

#[test]
fn get_vm_json_pipes_into_install_and_error_action_applies() {
    let dir = tempfile::Builder::new().prefix("vmg").tempdir().unwrap();
    let iso = ic_iso(dir.path(), "ic.iso", "1.0.0", &good_installer("1.0.0"));
    let d = dir.path().to_str().unwrap().to_owned();
    let a = TestVm::start_in(dir, "alpha", Spec::default());
    // A second VM in the same directory: reuse the directory through a fresh TempDir-less start.
    let beta_dir = tempfile::Builder::new().prefix("vmg").tempdir().unwrap();
    let b = TestVm::start_in(beta_dir, "beta", Spec::default());
    std::os::unix::fs::symlink(b.path("qmp"), a.dir.path().join("beta.qmp")).unwrap();

    let listed = vmguest(&["Get-VM", "-VMDir", &d, "-OutputFormat", "Json"], None);
    assert_eq!(listed.status.code(), Some(0), "{}", describe(&listed));
    let names: Vec<String> = results(&listed)
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);

    let piped = String::from_utf8(listed.stdout.clone()).unwrap() + "{\"VMName\":\"ghost\"}\n";
    let iso_arg = iso.to_str().unwrap();
    let out = vmguest(
        &[
            "Install-IntegrationComponents",
            "-VMDir",
            &d,
            "-Path",
            iso_arg,
            "-WhatIf",
            "-OutputFormat",
            "Json",
        ],
        Some(&piped),
    );
    let r = results(&out);
    // Results stream as each VM ends; compare them by VM.
    let mut got: Vec<(&str, &str)> = r
        .iter()
        .map(|v| (v["vm"].as_str().unwrap(), v["result"].as_str().unwrap()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("alpha", "S_OK"),
            ("beta", "S_OK"),
            ("ghost", "VM_E_VM_UNKNOWN")
        ]
    );
    assert_eq!(out.status.code(), Some(11));

    // -ErrorAction Stop ends at the first failure; SilentlyContinue writes no record.
    let with_error_action = |action: &str| {
        vmguest(
            &[
                "Install-IntegrationComponents",
                "ghost",
                "alpha",
                "-VMDir",
                &d,
                "-Path",
                iso_arg,
                "-WhatIf",
                "-OutputFormat",
                "Json",
                "-ErrorAction",
                action,
            ],
            None,
        )
    };
    let out = with_error_action("Stop");
    assert_eq!(results(&out).len(), 1, "{}", describe(&out));
    let out = with_error_action("SilentlyContinue");
    assert_eq!(results(&out).len(), 2);
    assert!(out.stderr.is_empty(), "{}", describe(&out));
    assert_eq!(out.status.code(), Some(11));

    // Names on stdin, plain text, and the table for people.
    let out = vmguest(
        &[
            "install-integration-components",
            "--vm-dir",
            &d,
            "--path",
            iso_arg,
            "--what-if",
        ],
        Some("alpha\n"),
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.starts_with("VMName") && table.contains("alpha") && table.contains("S_OK"),
        "{table}"
    );
}
