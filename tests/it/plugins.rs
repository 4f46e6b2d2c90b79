//! Plugins: the example components from plugins/ and the hostile fixtures from
//! tests/plugins/, loaded by the real binary, on real QEMU VMs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::*;

fn run(args: &[&str], plugins: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut all = args.to_vec();
    all.extend([
        "-PluginDir",
        plugins.to_str().unwrap(),
        "-OutputFormat",
        "Json",
    ]);
    vmguest_with(&all, None, env)
}

fn get_plugins(dir: &Path, cache: &Path) -> Vec<Value> {
    let out = run(
        &["Get-Plugin"],
        dir,
        &[("VMGUEST_PLUGIN_CACHE", cache.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", describe(&out));
    results(&out)
}

/// A manifest table granting `host` to the plugin as `guest`.
fn grant_toml(table: &str, guest: &str, host: &Path) -> String {
    format!("[{table}]\n{guest:?} = {:?}\n", host.to_str().unwrap())
}

fn examples() -> Vec<PluginSpec<'static>> {
    vec![
        PluginSpec::new("pin-versions", "pin_versions", ""),
        PluginSpec::new("site-mirror", "site_mirror", ""),
        PluginSpec::new("maintenance-window", "maintenance_window", ""),
        PluginSpec::new("audit", "audit", ""),
    ]
}

#[test]
fn get_plugin_lists_the_examples_and_the_cache_is_used_and_never_trusted_blindly() {
    let mut specs = examples();
    let mut old = PluginSpec::new("conservative", "old_wit", "");
    old.wit = "0.1.0";
    specs.push(old);
    let dir = plugin_dir(&specs);
    let cache = tempfile::tempdir().unwrap();
    let listed = get_plugins(dir.path(), cache.path());
    assert_eq!(listed.len(), 5, "{listed:#?}");
    for p in &listed {
        assert_eq!(p["status"], "admitted", "{p}");
        assert_eq!(p["cache"], "compiled", "{p}");
        let wasm = dir
            .path()
            .join(format!("{}.wasm", p["name"].as_str().unwrap()));
        assert_eq!(p["sha256"], vmguest::iso::sha256_file(&wasm).unwrap());
    }
    let by = |n: &str| listed.iter().find(|p| p["name"] == n).unwrap().clone();
    assert_eq!(
        by("pin-versions")["implements"],
        serde_json::json!(["iso-policy"])
    );
    assert_eq!(
        by("audit")["implements"],
        serde_json::json!(["install-hooks"])
    );
    // The frozen 0.1.0 interface still loads.
    assert_eq!(by("conservative")["wit"], "0.1.0");

    let again = get_plugins(dir.path(), cache.path());
    assert!(again.iter().all(|p| p["cache"] == "hit"), "{again:#?}");

    // Corrupt every cache entry: recompiled, not trusted, no crash.
    for e in std::fs::read_dir(cache.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "cwasm") {
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xFF;
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let repaired = get_plugins(dir.path(), cache.path());
    assert!(
        repaired.iter().all(|p| p["cache"] == "recompiled"),
        "{repaired:#?}"
    );
    assert!(get_plugins(dir.path(), cache.path())
        .iter()
        .all(|p| p["cache"] == "hit"));
}

#[test]
fn admission_refuses_bad_pins_writable_files_and_unknown_wit_versions() {
    let dir = plugin_dir(&[
        PluginSpec::new("pinned-wrong", "pin_versions", ""),
        PluginSpec::new("writable", "site_mirror", ""),
        PluginSpec::new("future", "future_wit", ""),
    ]);
    let d = dir.path();
    let toml = d.join("pinned-wrong.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let bad = text
        .lines()
        .map(|l| {
            if l.starts_with("sha256") {
                format!("sha256 = \"{}\"", "0".repeat(64))
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&toml, bad).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.join("writable.wasm"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let listed = get_plugins(d, cache.path());
    let status = |n: &str| {
        listed.iter().find(|p| p["name"] == n).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        status("pinned-wrong").contains("but the manifest pins"),
        "{listed:#?}"
    );
    assert!(
        status("writable").contains("group- or world-writable"),
        "{listed:#?}"
    );
    assert!(
        status("future").contains("built against vmguest:plugin@9.9.0"),
        "{listed:#?}"
    );
}

/// `Test-Plugin -Path wasm ARGS -OutputFormat Json`, which must succeed.
fn test_plugin_json(wasm: &Path, args: &[&str]) -> Value {
    let mut all = vec!["Test-Plugin", "-Path", wasm.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend(["-OutputFormat", "Json"]);
    let out = vmguest_with(&all, None, &[]);
    assert!(out.status.success(), "{}", describe(&out));
    results(&out).remove(0)
}

#[test]
fn test_plugin_validates_and_shows_decisions_on_a_sample() {
    let wasm = wasm_dir().join("pin_versions.wasm");
    let r = test_plugin_json(
        &wasm,
        &["-Setting", "deny=virtio-win@0.1.266", "-GuestOS", "windows"],
    );
    assert_eq!(r["plugin"]["wit"], "0.2.0");
    assert_eq!(
        r["decisions"][0]["decision"],
        "choose 1: /sample/virtio-win-0.1.217.iso"
    );
    let future = wasm_dir().join("future_wit.wasm");
    let out = vmguest_with(
        &["Test-Plugin", "-Path", future.to_str().unwrap()],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vmguest:plugin@9.9.0"));
}

#[test]
fn get_integration_components_iso_shows_the_choice_plugins_make() {
    let store = store();
    let pins = plugin_dir(&[PluginSpec::new(
        "pin-versions",
        "pin_versions",
        "[settings]\n\"pin.linux\" = \"vmguest@1.9.0\"\n",
    )]);
    let out = run(
        &["Get-IntegrationComponentsIso", "-GuestOS", "linux"],
        pins.path(),
        &[("VMGUEST_IC_PATH", store.path().to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let cands = results(&out);
    let chosen: Vec<_> = cands.iter().filter(|c| c["selected"] == true).collect();
    assert_eq!(chosen.len(), 1, "{cands:#?}");
    assert_eq!(chosen[0]["version"], "1.9.0");
    assert_eq!(chosen[0]["reason"], "chosen by plugin pin-versions");
}

/// After a plugin's choice, the other candidates' reasons name the plugin's
/// choice, not the built-in winner; and when the plugins cannot run, no row is selected.
#[test]
fn reasons_follow_the_plugins_choice_and_a_failed_choice_selects_nothing() {
    let store = store();
    ic_iso(
        store.path(),
        "ic-1.8.0.iso",
        "1.8.0",
        &good_installer("1.8.0"),
    );
    let pins = plugin_dir(&[PluginSpec::new(
        "pin-versions",
        "pin_versions",
        "[settings]\n\"pin.linux\" = \"vmguest@1.9.0\"\n",
    )]);
    let env = [("VMGUEST_IC_PATH", store.path().to_str().unwrap())];
    let out = run(
        &["Get-IntegrationComponentsIso", "-GuestOS", "linux"],
        pins.path(),
        &env,
    );
    let cands = results(&out);
    let reason = |v: &str| {
        cands
            .iter()
            .find(|c| c["version"] == v)
            .map(|c| c["reason"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| panic!("{v} not listed: {cands:#?}"))
    };
    let oldest = reason("1.8.0");
    assert!(
        oldest.starts_with("not chosen: plugin pin-versions chose 1.9.0 (")
            && oldest.ends_with("ic-1.9.0.iso)"),
        "{oldest}"
    );
    assert!(reason("1.10.0").ends_with("(overridden by plugin pin-versions)"));

    let refused = plugin_dir(&[PluginSpec::new("future", "future_wit", "")]);
    let out = run(
        &["Get-IntegrationComponentsIso", "-GuestOS", "linux"],
        refused.path(),
        &env,
    );
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    let cands = results(&out);
    assert!(!cands.is_empty(), "{}", describe(&out));
    assert!(
        cands.iter().all(|c| c["selected"] == false),
        "a row is selected although the plugins failed: {cands:#?}"
    );
}

/// A store with two own-format ISOs, 1.9.0 and 1.10.0.
pub(crate) fn store() -> tempfile::TempDir {
    let s = tempfile::tempdir().unwrap();
    ic_iso(s.path(), "ic-1.9.0.iso", "1.9.0", &good_installer("1.9.0"));
    ic_iso(
        s.path(),
        "ic-1.10.0.iso",
        "1.10.0",
        &good_installer("1.10.0"),
    );
    s
}

fn install(vm: &TestVm, plugins: &Path, store: &Path) -> (Value, std::process::Output) {
    install_json_with(
        vm,
        &["-PluginDir", plugins.to_str().unwrap()],
        &[("VMGUEST_IC_PATH", store.to_str().unwrap())],
    )
}

pub(crate) fn status(vm: &TestVm) -> String {
    vm.guest_sh("cat /opt/vmguest-ic/STATUS")
        .stdout
        .trim()
        .to_owned()
}

/// A component that claims vmguest:plugin@0.2.0 but whose `choose` returns a string is
/// refused at load time, in Get-Plugin and Test-Plugin, naming the export and both
/// signatures (a lying WIT). It is never admitted, so it never runs in an install.
#[test]
fn a_component_that_lies_about_its_wit_is_refused_at_load() {
    let dir = plugin_dir(&[PluginSpec::new("liar", "lying_wit", "")]);
    let cache = tempfile::tempdir().unwrap();
    let listed = get_plugins(dir.path(), cache.path());
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let status = listed[0]["status"].as_str().unwrap();
    for part in [
        "refused: iso-policy does not match vmguest:plugin@0.2.0",
        "the component exports choose: func(ctx: record) -> string",
        "the WIT says choose: func(ctx: policy-context) -> policy-decision",
    ] {
        assert!(status.contains(part), "{part:?} missing from {status}");
    }
    let wasm = wasm_dir().join("lying_wit.wasm");
    let out = vmguest(&["Test-Plugin", "-Path", wasm.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot be loaded: iso-policy does not match"),
        "{err}"
    );
    // Refused again from the same cache: no compiled entry was kept to vouch for it.
    let again = get_plugins(dir.path(), cache.path());
    assert_eq!(again[0]["status"], listed[0]["status"]);
    let kept: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert!(kept.is_empty(), "a refused component was cached: {kept:?}");
}

/// A plugin that writes more than the output cap and then answers normally is not
/// stopped: its output is cut and the log says so.
#[test]
fn a_plugin_that_floods_its_output_still_answers() {
    let vm = TestVm::start("flood", Spec::default());
    let store = store();
    let dir = plugin_dir(&[PluginSpec::new(
        "hostile",
        "hostile",
        "[settings]\nattack = \"flood\"\n",
    )]);
    let out = vmguest_with(
        &[
            "Get-IntegrationComponentsIso",
            "-VMName",
            "flood",
            "-VMDir",
            vm.dir.path().to_str().unwrap(),
            "-GuestOS",
            "linux",
            "-PluginDir",
            dir.path().to_str().unwrap(),
            "-OutputFormat",
            "Json",
        ],
        None,
        &[
            ("VMGUEST_IC_PATH", store.path().to_str().unwrap()),
            ("RUST_LOG", "vmguest=warn"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("output truncated") && err.contains("stream=\"stderr\""),
        "{err}"
    );
    assert!(!err.contains("trapped"), "{err}");
    let chosen: Vec<Value> = results(&out)
        .into_iter()
        .filter(|c| c["selected"] == true)
        .collect();
    assert_eq!(chosen.len(), 1, "{}", describe(&out));
}

/// Check-then-use (TOCTOU): a policy plugin provides a granted ISO; its own
/// pre-install hook then swaps that path for a symlink to a file outside every grant.
/// QEMU must get the file that was checked, as its own open files show, and the record
/// must carry that file's SHA-256. Before the fix QEMU opened the outside file.
#[test]
fn a_provided_iso_swapped_after_the_check_never_reaches_qemu() {
    let vm = TestVm::start("toctou", Spec::default());
    let store = store();
    let (grant, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let good = ic_iso(grant.path(), "ic.iso", "2.0.0", &good_installer("2.0.0"));
    let evil = ic_iso(
        outside.path(),
        "evil.iso",
        "6.6.6",
        &good_installer("6.6.6"),
    );
    std::os::unix::fs::symlink(&evil, grant.path().join("escape.iso")).unwrap();
    let checked = vmguest::iso::sha256_bytes(&std::fs::read(&good).unwrap());
    let dir = plugin_dir(&[PluginSpec::new(
        "hostile",
        "hostile",
        format!(
            "{}[settings]\nattack = \"swap\"\n",
            grant_toml("grants_rw", "/grant", grant.path())
        ),
    )]);
    let (r, out) = install(&vm, dir.path(), store.path());
    // No agent: the media stays in for autorun, so QEMU's files can be looked at after.
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["iso"], good.to_str().unwrap(), "{r}");
    assert_eq!(r["iso_sha256"], checked.as_str(), "{r}");
    assert!(
        std::fs::symlink_metadata(&good).unwrap().is_symlink(),
        "the plugin's swap did not happen: {}",
        describe(&out)
    );
    let open = vm.open_files();
    let evil = evil.to_str().unwrap();
    assert!(
        !open.iter().any(|f| f == evil),
        "QEMU opened {evil}: {open:?}"
    );
    // The checked file lost its name to the swap; QEMU still holds it.
    assert_eq!(
        vm.media_file(),
        Some(format!("{} (deleted)", good.display())),
        "{open:?}"
    );
}

/// A call blocked in a host function (a sleep in wasi:io/poll) is
/// stopped at its deadline, and leaves no thread behind: the old design abandoned one
/// sleeping thread per blocked call. Threads are counted in a child process of this
/// test binary, where no other test runs beside it.
#[test]
fn a_blocked_call_is_stopped_and_leaves_no_thread() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "plugins::blocked_call_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VMGUEST_BLOCKED_CALL_CHILD", "1")
        .output()
        .unwrap();
    let text = describe(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "run by a_blocked_call_is_stopped_and_leaves_no_thread, in its own process"]
fn blocked_call_child() {
    use vmguest::kinds::GuestKind;
    use vmguest::plugin::{context, manifest::discover, probe, PluginSet};
    if std::env::var_os("VMGUEST_BLOCKED_CALL_CHILD").is_none() {
        return;
    }
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let dir = plugin_dir(&[PluginSpec::new(
        "hostile",
        "hostile",
        "[settings]\nattack = \"sleep\"\n[limits]\ntimeout_ms = 300\n",
    )]);
    // Loading compiles, starts the engine's clock and runs the admission check.
    let set = PluginSet::load(&discover(&[dir.path().to_owned()]), None);
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    let before = threads();
    let mut sel = probe::sample_selection(GuestKind::Linux);
    let err = set
        .apply_policy_to(
            &context::vm_info("child"),
            &context::guest_of_kind(GuestKind::Linux),
            false,
            &mut sel,
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("did not return within its 300 ms deadline"),
        "{err}"
    );
    assert_eq!(threads(), before, "the blocked call left a thread behind");
}

#[test]
fn hostile_plugins_end_in_disp_e_exception_naming_the_plugin_and_the_vm_is_untouched() {
    let vm = TestVm::start("hostile", Spec::default());
    let store = store();
    let grant = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc/passwd", grant.path().join("escape.iso")).unwrap();
    std::fs::write(grant.path().join("held.txt"), "a file to hold open\n").unwrap();
    let fifo = std::ffi::CString::new(grant.path().join("fifo").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let attacks = [
        ("loop", "ran past its 500 ms deadline"),
        ("memory", "exceeded its memory limit of 32 MiB"),
        ("panic", "trapped"),
        ("sleep", "did not return within its 500 ms deadline"),
        ("fifo", "did not return within its 500 ms deadline"),
        ("recursion", "iso-policy trapped"),
        ("passwd", "outside its granted directories"),
        ("index", "chose candidate 1001, but there are only 2"),
        ("outside", "outside its granted directories"),
        ("symlink", "outside its granted directories"),
        ("huge", "limit 4096"),
        // Open files are capped per plugin, with a clear message.
        ("fds", "exceeded its limit of 256 open handles"),
        ("pre-loop", "pre-install ran past its 500 ms deadline"),
        ("pre-panic", "pre-install trapped"),
    ];
    for (attack, expect) in attacks {
        let dir = plugin_dir(&[PluginSpec::new(
            "hostile",
            "hostile",
            format!(
                "{}[settings]\nattack = \"{attack}\"\n[limits]\ntimeout_ms = 500\nmemory_mb = 32\n",
                grant_toml("grants", "/grant", grant.path())
            ),
        )]);
        let t = Instant::now();
        let (r, out) = install(&vm, dir.path(), store.path());
        // A bound that turns a runaway plugin into a failure instead of a hung test.
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{attack}: took {:?}",
            t.elapsed()
        );
        assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
        let msg = r["message"].as_str().unwrap();
        assert!(msg.contains("plugin \"hostile\""), "{attack}: {msg}");
        assert!(msg.contains(expect), "{attack}: {msg}");
        let everything = format!("{}{}", describe(&out), r);
        assert!(
            !everything.contains("root:x:0:0"),
            "{attack} leaked /etc/passwd"
        );
        assert!(vm.media_file().is_none(), "{attack}: the drive was touched");
        assert_eq!(
            vmguest::vm::VmControl::run_state(&mut vm.control()).unwrap(),
            "running"
        );
    }
    // -NoPlugins bypasses them all (shown with -WhatIf, which changes nothing).
    let looping = plugin_dir(&[PluginSpec::new(
        "hostile",
        "hostile",
        "[settings]\nattack = \"loop\"\n",
    )]);
    let (r, out) = install_json_with(
        &vm,
        &[
            "-PluginDir",
            looping.path().to_str().unwrap(),
            "-WhatIf",
            "-NoPlugins",
        ],
        &[("VMGUEST_IC_PATH", store.path().to_str().unwrap())],
    );
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["plugins"], serde_json::json!([]));

    // Load-time refusals end the same way, before anything runs.
    let future = plugin_dir(&[PluginSpec::new("future", "future_wit", "")]);
    let (r, out) = install(&vm, future.path(), store.path());
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("refused at load time"),
        "{r}"
    );
    assert!(vm.media_file().is_none());
}

#[test]
fn example_plugins_change_installs_on_the_real_guest() {
    let vm = TestVm::booted("plugged");
    let store = store();

    // pin-versions: 1.10.0 is denied, so the newest allowed, 1.9.0, is installed.
    let pins = plugin_dir(&[PluginSpec::new(
        "pin-versions",
        "pin_versions",
        "[settings]\ndeny = \"vmguest@1.10.0\"\n",
    )]);
    let (r, out) = install(&vm, pins.path(), store.path());
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["iso_version"], "1.9.0");
    assert_eq!(r["plugins"][0]["plugin"], "pin-versions");
    assert!(r["plugins"][0]["decision"]
        .as_str()
        .unwrap()
        .starts_with("choose"));
    assert_eq!(status(&vm), "installed 1.9.0");

    // site-mirror: the mirror's copy of ic-1.10.0.iso wins over the store's.
    let mirror = tempfile::tempdir().unwrap();
    let script = good_installer("1.10.0")
        .replace("installed 1.10.0\"", "installed 1.10.0 from the mirror\"");
    ic_iso(mirror.path(), "ic-1.10.0.iso", "1.10.0", &script);
    let mirror_plugin = plugin_dir(&[PluginSpec::new(
        "site-mirror",
        "site_mirror",
        grant_toml("grants", "/mirror", mirror.path()),
    )]);
    let (r, out) = install(&vm, mirror_plugin.path(), store.path());
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert!(
        r["iso_source"]
            .as_str()
            .unwrap()
            .starts_with("plugin site-mirror"),
        "{r}"
    );
    assert_eq!(status(&vm), "installed 1.10.0 from the mirror");

    // maintenance-window: closed now, so the install is vetoed before the VM is touched.
    let window = plugin_dir(&[PluginSpec::new(
        "maintenance-window",
        "maintenance_window",
        closed_window(),
    )]);
    let (r, out) = install(&vm, window.path(), store.path());
    assert_vetoed_by_the_window(&vm, &r, &out);

    // audit, inside an open window: one JSON line with the VM, the ISO hash and the outcome.
    let log = tempfile::tempdir().unwrap();
    let audited = plugin_dir(&[
        PluginSpec::new(
            "maintenance-window",
            "maintenance_window",
            "[settings]\nwindow = \"00:00-24:00\"\n",
        ),
        PluginSpec::new(
            "audit",
            "audit",
            grant_toml("grants_rw", "/audit", log.path()),
        ),
    ]);
    let (r, out) = install(&vm, audited.path(), store.path());
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    let text = std::fs::read_to_string(log.path().join("vmguest-audit.jsonl")).unwrap();
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["vm"], "plugged");
    assert_eq!(line["result"], "S_OK");
    assert_eq!(line["iso_sha256"], r["iso_sha256"]);
    assert!(
        line["phases_ms"]["run-installer"].as_u64().is_some(),
        "{line}"
    );

    // A plugin built against the frozen 0.1.0 still loads and decides: the oldest.
    let mut old = PluginSpec::new("conservative", "old_wit", "");
    old.wit = "0.1.0";
    let old_dir = plugin_dir(&[old]);
    let (r, out) = install(&vm, old_dir.path(), store.path());
    assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
    assert_eq!(r["iso_version"], "1.9.0");

    // A post-install failure is DISP_E_EXCEPTION naming the plugin, but what was
    // installed stays recorded, in the result and in the guest.
    let post = plugin_dir(&[PluginSpec::new(
        "hostile",
        "hostile",
        "[settings]\nattack = \"post-panic\"\n",
    )]);
    let (r, out) = install(&vm, post.path(), store.path());
    assert_outcome(&r, &out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("plugin \"hostile\" post-install"),
        "{r}"
    );
    assert_eq!(r["components"]["version"], "1.10.0");
    assert_eq!(r["installer"]["exit_code"], 0);
    assert_eq!(status(&vm), "installed 1.10.0");
    assert!(vm.drives()[0].media.is_none());
}

/// maintenance-window settings for a window that opens ten hours from now.
fn closed_window() -> String {
    let now_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 60)
        % 1440;
    let (a, b) = ((now_min + 600) % 1440, (now_min + 660) % 1440);
    let closed = format!("{:02}:{:02}-{:02}:{:02}", a / 60, a % 60, b / 60, b % 60);
    format!("[settings]\nwindow = \"{closed}\"\n")
}

/// maintenance-window's veto: before the VM is touched, and it reads as nothing
/// installed (no mode or components), while the choice stays on record.
fn assert_vetoed_by_the_window(vm: &TestVm, r: &Value, out: &std::process::Output) {
    assert_outcome(r, out, "DISP_E_EXCEPTION", "0x80020009", 14);
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("outside the maintenance window"),
        "{r}"
    );
    assert!(!r["phases"].to_string().contains("insert-ic"), "{r}");
    assert!(vm.drives()[0].media.is_none());
    assert!(r["mode"].is_null() && r["components"].is_null(), "{r}");
    assert!(
        r["iso_version"].is_string(),
        "the choice stays on record: {r}"
    );
}

/// The Python (componentize-py) and JavaScript (componentize-js) examples in
/// plugins/python and plugins/js do on the real guest what their Rust twins do, checked
/// with the same assertions. One cache serves every run, as on an admin's machine.
#[test]
fn python_and_js_examples_change_installs_on_the_real_guest() {
    let vm = TestVm::booted("polyglot");
    let store = store();
    let cache = tempfile::tempdir().unwrap();
    let env = [
        ("VMGUEST_IC_PATH", store.path().to_str().unwrap()),
        ("VMGUEST_PLUGIN_CACHE", cache.path().to_str().unwrap()),
    ];
    let install = |dir: &Path| install_json_with(&vm, &["-PluginDir", dir.to_str().unwrap()], &env);
    for lang in ["py", "js"] {
        let (pins, window) = (
            format!("pin_versions_{lang}"),
            format!("maintenance_window_{lang}"),
        );
        // pin-versions: 1.10.0 is denied, so the newest allowed, 1.9.0, is installed.
        let dir = plugin_dir(&[PluginSpec::new(
            "pin-versions",
            &pins,
            "[settings]\ndeny = \"vmguest@1.10.0\"\n",
        )]);
        let (r, out) = install(dir.path());
        assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
        assert_eq!(r["iso_version"], "1.9.0", "{lang}: {r}");
        assert!(
            r["plugins"][0]["decision"]
                .as_str()
                .unwrap()
                .starts_with("choose"),
            "{lang}: {r}"
        );
        assert_eq!(status(&vm), "installed 1.9.0", "{lang}");

        // A pin that is not among the candidates is the plugin's ERROR_FILE_NOT_FOUND.
        let dir = plugin_dir(&[PluginSpec::new(
            "pin-versions",
            &pins,
            "[settings]\n\"pin.linux\" = \"vmguest@9.9.9\"\n",
        )]);
        let (r, out) = install(dir.path());
        assert_file_not_found(&r, &out);
        assert!(vm.drives()[0].media.is_none());

        // maintenance-window: closed now, so vetoed; open, so the newest goes in.
        let dir = plugin_dir(&[PluginSpec::new(
            "maintenance-window",
            &window,
            closed_window(),
        )]);
        let (r, out) = install(dir.path());
        assert_vetoed_by_the_window(&vm, &r, &out);
        let dir = plugin_dir(&[PluginSpec::new(
            "maintenance-window",
            &window,
            "[settings]\nwindow = \"00:00-24:00\"\n",
        )]);
        let (r, out) = install(dir.path());
        assert_outcome(&r, &out, "S_OK", "0x00000000", 0);
        assert_eq!(status(&vm), "installed 1.10.0", "{lang}");
    }
}

/// The text between the first "```lang" fence after `marker` and its closing fence.
fn fenced<'a>(doc: &'a str, marker: &str, lang: &str) -> &'a str {
    let from = doc
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in docs"));
    let open = format!("```{lang}\n");
    let start = from + doc[from..].find(&open).unwrap() + open.len();
    let end = start + doc[start..].find("```").unwrap();
    &doc[start..end]
}

/// The guide's template, built exactly as docs/plugins.md says, loads and works: a
/// stand-in for an author who reads only the guide.
#[test]
fn the_docs_template_builds_loads_and_decides() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/plugins.md"))
            .unwrap();
    let krate = tempfile::tempdir().unwrap();
    let k = krate.path();
    std::fs::create_dir_all(k.join("src")).unwrap();
    std::fs::create_dir_all(k.join("wit")).unwrap();
    std::fs::write(k.join("Cargo.toml"), fenced(&doc, "`Cargo.toml`:", "toml")).unwrap();
    std::fs::write(k.join("src/lib.rs"), fenced(&doc, "`src/lib.rs`:", "rust")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit/since_v0.2.0/plugin.wit"),
        k.join("wit/plugin.wit"),
    )
    .unwrap();
    wasm_dir();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm-docs");
    let status = std::process::Command::new("cargo")
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(k)
        .status()
        .unwrap();
    assert!(status.success(), "the template does not build");
    let wasm = target.join("wasm32-wasip2/release/protect_vms.wasm");
    let r = test_plugin_json(&wasm, &["-Setting", "protect-prefix=sample"]);
    assert_eq!(
        r["decisions"][0]["decision"],
        "refuse DISP_E_EXCEPTION: sample-vm is protected from IC installs"
    );

    // The guide's Python and JavaScript versions, built with the commands and
    // tool versions it gives (the tools as scripts/build-plugins.sh installed them).
    let tools = workspace();
    let py = tools.join("target/tools/python/bin/componentize-py");
    let js = tools.join("plugins/js/node_modules/.bin/componentize-js");
    for (file, lang, tool, args) in [
        (
            "app.py",
            "python",
            py,
            "-d wit -w policy componentize app -o protect_vms.wasm",
        ),
        (
            "protect-vms.js",
            "js",
            js,
            "--wit wit -n policy -d http fetch-event -o protect_vms.wasm protect-vms.js",
        ),
    ] {
        let section = if lang == "js" {
            "## 4. JavaScript"
        } else {
            "## 3. Python"
        };
        std::fs::write(k.join(file), fenced(&doc, section, lang)).unwrap();
        let _ = std::fs::remove_file(k.join("protect_vms.wasm"));
        let built = std::process::Command::new(&tool)
            .args(args.split(' '))
            .current_dir(k)
            .output()
            .unwrap();
        assert!(built.status.success(), "{lang}: {}", describe(&built));
        let r = test_plugin_json(
            &k.join("protect_vms.wasm"),
            &["-Setting", "protect-prefix=sample"],
        );
        assert_eq!(
            r["decisions"][0]["decision"],
            "refuse DISP_E_EXCEPTION: sample-vm is protected from IC installs",
            "{lang}: {r}"
        );
    }
}

/// The first plugin-directory rule that is set wins whole (as the guide says),
/// and `Get-Plugin` shows each plugin's directory and the rule that chose it.
#[test]
fn get_plugin_shows_the_directory_and_the_rule_that_chose_it() {
    let spec = [PluginSpec::new("pin-versions", "pin_versions", "")];
    let flag = plugin_dir(&spec);
    let env_dir = plugin_dir(&spec);
    let xdg = tempfile::tempdir().unwrap();
    let user = xdg.path().join("vmguest/plugins");
    std::fs::create_dir_all(&user).unwrap();
    for entry in std::fs::read_dir(plugin_dir(&spec).path()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, user.join(p.file_name().unwrap())).unwrap();
    }
    let listed = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["Get-Plugin", "-OutputFormat", "Json"];
        all.extend_from_slice(args);
        let out = vmguest_with(&all, None, env);
        assert!(out.status.success(), "{}", describe(&out));
        let rows = results(&out);
        let dirs: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                let s = |k: &str| {
                    r[k].as_str()
                        .unwrap_or_else(|| panic!("{k}: {r}"))
                        .to_owned()
                };
                (s("directory"), s("directory_from"))
            })
            .collect();
        dirs
    };
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let env_path = s(env_dir.path());
    let xdg_home = s(xdg.path());
    let both = [
        ("VMGUEST_PLUGIN_PATH", env_path.as_str()),
        ("XDG_CONFIG_HOME", xdg_home.as_str()),
    ];
    assert_eq!(
        listed(&["-PluginDir", flag.path().to_str().unwrap()], &both),
        vec![(s(flag.path()), "-PluginDir".to_owned())]
    );
    assert_eq!(
        listed(&[], &both),
        vec![(env_path.clone(), "$VMGUEST_PLUGIN_PATH".to_owned())],
        "$VMGUEST_PLUGIN_PATH replaces the user's directory"
    );
    assert_eq!(
        listed(&[], &[("XDG_CONFIG_HOME", xdg_home.as_str())]),
        vec![(s(&user), "the user and system defaults".to_owned())],
        "$XDG_CONFIG_HOME/vmguest/plugins is the user's directory"
    );
}

/// Settings take any TOML value. site-mirror's `require = true`, a TOML
/// boolean, was a refused manifest ("expected a string"); now it reaches the plugin as
/// "true", so a missing mirror copy is its documented refusal, HRESULT_FROM_WIN32
/// (ERROR_FILE_NOT_FOUND).
#[test]
fn a_typed_setting_reaches_a_real_plugin() {
    let store = store();
    let mirror = tempfile::tempdir().unwrap();
    let dir = plugin_dir(&[PluginSpec::new(
        "site-mirror",
        "site_mirror",
        format!(
            "{}[settings]\nrequire = true\n",
            grant_toml("grants", "/mirror", mirror.path())
        ),
    )]);
    let env = [("VMGUEST_IC_PATH", store.path().to_str().unwrap())];
    let out = run(
        &["Get-IntegrationComponentsIso", "-GuestOS", "linux"],
        dir.path(),
        &env,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0x80070002") && stderr.contains("is not on the site mirror"),
        "{}",
        describe(&out)
    );
}

/// A plugin's choice must have an install for the guest's OS. pin-versions
/// pinning Linux guests to virtio-win (Windows installers only) was accepted and
/// selected; now it is the plugin's DISP_E_EXCEPTION and nothing is selected.
#[test]
fn a_plugins_choice_with_no_install_for_the_guest_is_refused() {
    let store = store();
    virtio_win(store.path(), "virtio-win-0.1.240.iso", "0.1.240");
    let dir = plugin_dir(&[PluginSpec::new(
        "pin-versions",
        "pin_versions",
        "[settings]\n\"pin.linux\" = \"virtio-win@0.1.240\"\n\"pin.windows\" = \"virtio-win@0.1.240\"\n",
    )]);
    let env = [("VMGUEST_IC_PATH", store.path().to_str().unwrap())];
    let locate = |guest: &str| {
        run(
            &["Get-IntegrationComponentsIso", "-GuestOS", guest],
            dir.path(),
            &env,
        )
    };
    let out = locate("linux");
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pin-versions")
            && stderr.contains("a virtio-win ISO with no install for a Linux guest"),
        "{stderr}"
    );
    assert!(results(&out).iter().all(|c| c["selected"] == false));

    let out = locate("windows");
    assert!(out.status.success(), "{}", describe(&out));
    let chosen: Vec<_> = results(&out)
        .into_iter()
        .filter(|c| c["selected"] == true)
        .collect();
    assert_eq!(chosen.len(), 1);
    assert_eq!(chosen[0]["family"], "virtio-win", "{chosen:?}");
}

/// An author sees their plugin's log in `Test-Plugin` without `-Verbose`, and a
/// trap's error record carries the plugin's last stderr lines (its panic message).
#[test]
fn test_plugin_shows_the_plugins_log_and_a_trap_names_its_last_words() {
    let test_plugin = |wasm: &str, args: &[&str]| {
        let path = wasm_dir().join(wasm);
        let mut all = vec!["Test-Plugin", "-Path", path.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = vmguest(&all, None);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out, stderr)
    };
    let (out, stderr) = test_plugin(
        "pin_versions.wasm",
        &["-GuestOS", "linux", "-Setting", "pin.linux=vmguest@1.9.0"],
    );
    assert!(
        stderr.contains("INFO") && stderr.contains("linux guests are pinned to vmguest 1.9.0"),
        "{}",
        describe(&out)
    );

    let (out, stderr) = test_plugin(
        "hostile.wasm",
        &["-Setting", "attack=panic", "-OutputFormat", "Json"],
    );
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    let record = stderr
        .lines()
        .find(|l| l.contains("trapped (unreachable"))
        .unwrap_or_else(|| panic!("no trap record: {stderr}"));
    assert!(
        record.contains("its stderr ended with: ") && record.contains("hostile plugin panics"),
        "{record}"
    );
}

/// `Install-Plugin` checks the world and WIT version, pins the SHA-256, writes
/// the manifest and precompiles, so the first install finds the cache warm; it replaces
/// an installed plugin only with -Force, and a component it refuses leaves nothing.
#[test]
fn install_plugin_pins_precompiles_and_refuses_without_writing() {
    let home = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let (config, cache) = (s(home.path()), s(&home.path().join("cache")));
    let env = [
        ("XDG_CONFIG_HOME", config.as_str()),
        ("VMGUEST_PLUGIN_CACHE", cache.as_str()),
    ];
    let wasm = wasm_dir().join("pin_versions.wasm");
    let install = |wasm: &Path, extra: &[&str]| {
        let mut args = vec!["Install-Plugin", "-Path", wasm.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend(["-OutputFormat", "Json"]);
        vmguest_with(&args, None, &env)
    };
    let out = install(
        &wasm,
        &["-Name", "pins", "-Setting", "deny=virtio-win@0.1.217"],
    );
    assert!(out.status.success(), "{}", describe(&out));
    let r = results(&out).remove(0);
    assert_eq!(
        (&r["wit"], &r["implements"], &r["status"], &r["cache"]),
        (
            &Value::from("0.2.0"),
            &serde_json::json!(["iso-policy"]),
            &Value::from("admitted"),
            &Value::from("compiled")
        ),
        "{r}"
    );
    assert_eq!(r["directory_from"], "the user and system defaults");
    let dir = home.path().join("vmguest/plugins");
    let manifest = std::fs::read_to_string(dir.join("pins.toml")).unwrap();
    let sum = vmguest::iso::sha256_file(&wasm).unwrap();
    assert!(
        manifest.contains(&format!("sha256 = \"{sum}\"")),
        "{manifest}"
    );
    assert!(
        manifest.contains("deny = \"virtio-win@0.1.217\""),
        "{manifest}"
    );

    let out = vmguest_with(&["Get-Plugin", "-OutputFormat", "Json"], None, &env);
    let listed = results(&out);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        listed[0]["cache"], "hit",
        "compiled at install time: {listed:?}"
    );

    let out = install(&wasm, &["-Name", "pins"]);
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    assert_eq!(
        std::fs::read_to_string(dir.join("pins.toml")).unwrap(),
        manifest
    );
    let out = install(&wasm, &["-Name", "pins", "-Force"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(!std::fs::read_to_string(dir.join("pins.toml"))
        .unwrap()
        .contains("deny"));

    let future = wasm_dir().join("future_wit.wasm");
    let out = install(&future, &["-Name", "future"]);
    assert_eq!(out.status.code(), Some(14), "{}", describe(&out));
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["pins.toml", "pins.wasm"],
        "a refused component wrote nothing"
    );
}

/// `Get-Plugin -Verbose` over `dir` with the compiled cache in `cache`: the plugins and
/// what was logged.
fn get_plugins_verbose(dir: &Path, cache: &Path) -> (Vec<Value>, String) {
    let out = run(
        &["Get-Plugin", "-Verbose"],
        dir,
        &[("VMGUEST_PLUGIN_CACHE", cache.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", describe(&out));
    (
        results(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Give `path` to uid 65534 (nobody). The suite runs as root, here and in CI.
fn give_away(path: &Path) {
    std::os::unix::fs::chown(path, Some(65534), None)
        .unwrap_or_else(|e| panic!("chown {}: {e} (the suite runs as root)", path.display()));
}

#[test]
fn plugin_files_owned_by_another_user_are_refused_with_the_reason() {
    let foreign = tempfile::tempdir().unwrap();
    give_away(foreign.path());
    let dir = plugin_dir(&[
        PluginSpec::new("foreign-manifest", "pin_versions", ""),
        PluginSpec::new("foreign-component", "site_mirror", ""),
        PluginSpec::new(
            "foreign-grant",
            "maintenance_window",
            grant_toml("grants", "/shared", foreign.path()),
        ),
        PluginSpec::new("mine", "audit", ""),
    ]);
    let d = dir.path();
    give_away(&d.join("foreign-manifest.toml"));
    give_away(&d.join("foreign-component.wasm"));
    let cache = tempfile::tempdir().unwrap();
    let (listed, log) = get_plugins_verbose(d, cache.path());
    let by = |n: &str| listed.iter().find(|p| p["name"] == n).unwrap().clone();
    for (name, path) in [
        ("foreign-manifest", d.join("foreign-manifest.toml")),
        ("foreign-component", d.join("foreign-component.wasm")),
        ("foreign-grant", foreign.path().to_owned()),
    ] {
        let p = by(name);
        let status = p["status"].as_str().unwrap();
        let reason = format!(
            "{} is owned by uid 65534, not by root or the effective user",
            path.display()
        );
        assert!(
            status.starts_with("refused: ") && status.contains(&reason),
            "{p:#}"
        );
        // Never loaded: nothing compiled, nothing to call.
        assert!(
            p["cache"].is_null() && p["implements"] == serde_json::json!([]),
            "{p:#}"
        );
        assert!(log.contains(&reason), "{name}: {log}");
    }
    assert_eq!(by("mine")["status"], "admitted", "{listed:#?}");
}

/// The cache entry a plugin directory's `name` compiled into `cache`, and its sidecar.
fn cache_entry_of(cache: &Path, wasm: &Path) -> std::path::PathBuf {
    let sha = vmguest::iso::sha256_file(wasm).unwrap();
    std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|x| x == "cwasm")
                && p.file_name().unwrap().to_string_lossy().starts_with(&sha)
        })
        .unwrap_or_else(|| panic!("no cache entry for {}", wasm.display()))
}

/// Under `sudo -E` root would use the user's cache: compiled code planted there (here:
/// another plugin's, under this plugin's name, with a matching checksum) must never be
/// mapped. A cache directory, or an entry, owned by another user is not used.
#[test]
fn a_plugin_cache_owned_by_another_user_is_never_loaded_from() {
    let both = plugin_dir(&[
        PluginSpec::new("pin-versions", "pin_versions", ""),
        PluginSpec::new("audit", "audit", ""),
    ]);
    let good = tempfile::tempdir().unwrap();
    assert!(get_plugins(both.path(), good.path())
        .iter()
        .all(|p| p["cache"] == "compiled"));
    let pin_entry = cache_entry_of(good.path(), &both.path().join("pin-versions.wasm"));
    let audit_entry = cache_entry_of(good.path(), &both.path().join("audit.wasm"));

    let only_pin = plugin_dir(&[PluginSpec::new("pin-versions", "pin_versions", "")]);
    let planted = audit_entry_planted(&audit_entry, &pin_entry);
    give_away(planted.path());
    let (listed, log) = get_plugins_verbose(only_pin.path(), planted.path());
    assert_eq!(listed.len(), 1);
    let p = &listed[0];
    assert_eq!(p["status"], "admitted", "{p:#}");
    assert_eq!(p["implements"], serde_json::json!(["iso-policy"]), "{p:#}");
    assert_eq!(p["cache"], "uncached", "{p:#}");
    let dir = planted.path().display().to_string();
    let reason = format!("{dir}: {dir} is owned by uid 65534");
    assert!(
        log.lines()
            .any(|l| l.contains("not using") && l.contains(&reason)),
        "{log}"
    );

    // In a cache of our own, an entry someone else owns is compiled again and replaced.
    let own = audit_entry_planted(&audit_entry, &pin_entry);
    let name = pin_entry.file_name().unwrap();
    give_away(&own.path().join(name));
    let (listed, log) = get_plugins_verbose(only_pin.path(), own.path());
    let p = &listed[0];
    assert_eq!(p["implements"], serde_json::json!(["iso-policy"]), "{p:#}");
    assert_eq!(p["cache"], "recompiled", "{p:#}");
    assert!(log.contains("is owned by uid 65534"), "{log}");
    use std::os::unix::fs::MetadataExt;
    let rewritten = std::fs::metadata(own.path().join(name)).unwrap();
    assert_eq!(rewritten.uid(), 0);
    assert_eq!(get_plugins(only_pin.path(), own.path())[0]["cache"], "hit");
}

/// A cache directory holding `audit_entry`'s compiled code under `pin_entry`'s name, with
/// a sidecar that vouches for it.
fn audit_entry_planted(audit_entry: &Path, pin_entry: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join(pin_entry.file_name().unwrap());
    std::fs::copy(audit_entry, &target).unwrap();
    let sidecar = target.with_extension("cwasm.sha256");
    std::fs::write(&sidecar, vmguest::iso::sha256_file(&target).unwrap()).unwrap();
    dir
}
