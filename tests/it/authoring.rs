//! The plugin author's commands, as an author runs them: New-Plugin's skeletons built
//! with their own build scripts, and Test-Plugin -Manifest on the sample store, a
//! directory of real ISOs and a live VM.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::fixtures::*;
use crate::plugins::{status, store};

fn ok_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-OutputFormat", "Json"]);
    let out = vmguest_with(&all, None, env);
    assert!(out.status.success(), "{}", describe(&out));
    let mut r = results(&out);
    assert_eq!(r.len(), 1, "{}", describe(&out));
    r.remove(0)
}

fn decisions(r: &Value) -> Vec<(String, String)> {
    r["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap().to_owned();
            (s("stage"), s("decision"))
        })
        .collect()
}

/// Every New-Plugin skeleton (three languages, two worlds) builds with its own
/// build.sh and passes Test-Plugin -Manifest: the default decision, the decision its
/// setting changes, and a warning while the manifest's pin is unset. After
/// Install-Plugin, the installed manifest tests clean.
#[test]
fn new_plugin_skeletons_build_and_pass_test_plugin() {
    // Builds the examples, which installs the pinned componentize-py and componentize-js.
    wasm_dir();
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let cache_env = [("VMGUEST_PLUGIN_CACHE", cache.to_str().unwrap())];
    let python_tools = workspace().join("target/tools/python/bin");
    let path = format!(
        "{}:{}",
        python_tools.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (language, world) in [
        ("rust", "policy"),
        ("rust", "hooks"),
        ("python", "policy"),
        ("python", "hooks"),
        ("js", "policy"),
        ("js", "hooks"),
    ] {
        let name = format!("my-{language}-{world}");
        let dir = root.path().join(&name);
        let made = ok_json(
            &[
                "New-Plugin",
                "-Name",
                &name,
                "-Language",
                language,
                "-World",
                world,
                "-Path",
                dir.to_str().unwrap(),
            ],
            &[],
        );
        for f in ["build.sh", "README.md", "wit/plugin.wit"] {
            assert!(made["files"].to_string().contains(f), "{made}");
            assert!(dir.join(f).is_file(), "{name}: {f}");
        }
        let built = Command::new("sh")
            .arg(dir.join("build.sh"))
            .env("PATH", &path)
            .env(
                "CARGO_TARGET_DIR",
                workspace().join("target/wasm-skeletons"),
            )
            .output()
            .unwrap();
        assert!(
            built.status.success(),
            "{name}: build.sh failed: {}",
            describe(&built)
        );
        let manifest = dir.join(format!("{name}.toml"));
        let test = |extra: &[&str]| {
            let mut args = vec!["Test-Plugin", "-Manifest", manifest.to_str().unwrap()];
            args.extend_from_slice(extra);
            ok_json(&args, &cache_env)
        };
        let r = test(&[]);
        assert!(
            r["warnings"][0]
                .as_str()
                .unwrap()
                .contains("pins no SHA-256"),
            "{name}: {r}"
        );
        let (plain, set) = match world {
            "policy" => (
                vec![("iso-policy", "defer".to_owned())],
                (
                    "protect-prefix=sample",
                    vec![(
                        "iso-policy",
                        "refuse DISP_E_EXCEPTION: sample-vm is protected from IC installs".into(),
                    )],
                ),
            ),
            _ => (
                vec![
                    ("pre-install", "allow".into()),
                    ("post-install", "ok".into()),
                ],
                (
                    "freeze=true",
                    vec![
                        (
                            "pre-install",
                            "veto DISP_E_EXCEPTION: installs are frozen; sample-vm is left alone"
                                .into(),
                        ),
                        ("post-install", "ok".into()),
                    ],
                ),
            ),
        };
        let want = |v: Vec<(&str, String)>| -> Vec<(String, String)> {
            v.into_iter().map(|(a, b)| (a.to_owned(), b)).collect()
        };
        assert_eq!(decisions(&r), want(plain), "{name}: {r}");
        let r = test(&["-Setting", set.0]);
        assert_eq!(decisions(&r), want(set.1), "{name}: {r}");

        // Installed: the pin is written, so the installed manifest tests clean.
        let home = root.path().join(format!("home-{name}"));
        let installed = ok_json(
            &[
                "Install-Plugin",
                "-Path",
                dir.join(format!("{name}.wasm")).to_str().unwrap(),
                "-Name",
                &name,
            ],
            &[("XDG_CONFIG_HOME", home.to_str().unwrap()), cache_env[0]],
        );
        let r = ok_json(
            &[
                "Test-Plugin",
                "-Manifest",
                installed["manifest"].as_str().unwrap(),
            ],
            &cache_env,
        );
        assert_eq!(r["warnings"], Value::Array(vec![]), "{name}: {r}");
    }
}

/// Test-Plugin -Manifest runs with the manifest's settings, on the real ISOs
/// of a directory (-IsoPath) or for a live VM (-VMName), and shows each candidate's
/// version and usability, the built-in choice and the plugin's. A live VM is not
/// changed. A pin that no longer matches is a warning that names both digests.
#[test]
fn test_plugin_takes_a_manifest_real_isos_and_a_live_vm() {
    let vm = TestVm::booted("probed");
    let isos = store();
    virtio_win(isos.path(), "virtio-win-0.1.266.iso", "0.1.266");
    std::fs::write(isos.path().join("junk.iso"), "not an image").unwrap();
    let plugins = plugin_dir(&[PluginSpec::new(
        "pin-versions",
        "pin_versions",
        "[settings]\ndeny = \"vmguest@1.10.0\"\n",
    )]);
    let manifest = plugins.path().join("pin-versions.toml");
    let m = manifest.to_str().unwrap();
    let by_name = |r: &Value, file: &str| -> Value {
        r["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"].as_str().unwrap().ends_with(file))
            .unwrap_or_else(|| panic!("{file} not among {r}"))
            .clone()
    };
    let check = |r: &Value| {
        let (newest, allowed) = (by_name(r, "ic-1.10.0.iso"), by_name(r, "ic-1.9.0.iso"));
        assert_eq!(newest["version"], "1.10.0");
        assert_eq!(
            (&newest["builtin"], &newest["selected"]),
            (&Value::Bool(true), &Value::Bool(false)),
            "{r}"
        );
        assert_eq!(
            (&allowed["builtin"], &allowed["selected"]),
            (&Value::Bool(false), &Value::Bool(true)),
            "{r}"
        );
        assert_eq!(r["choice"], allowed["index"]);
        assert_eq!(r["builtin_choice"], newest["index"]);
        let virtio = by_name(r, "virtio-win-0.1.266.iso");
        assert_eq!(
            (&virtio["usable"], &virtio["installs_on_guest"]),
            (&Value::Bool(true), &Value::Bool(false)),
            "{r}"
        );
        assert_eq!(by_name(r, "junk.iso")["usable"], false, "{r}");
        assert_eq!(r["warnings"], Value::Array(vec![]), "{r}");
    };

    let r = ok_json(
        &[
            "Test-Plugin",
            "-Manifest",
            m,
            "-IsoPath",
            isos.path().to_str().unwrap(),
            "-GuestOS",
            "linux",
        ],
        &[],
    );
    check(&r);
    assert_eq!(r["live"], false);

    // A live VM: its guest from the agent, the ISOs an install would find, nothing changed.
    let dir = vm.dir.path().to_str().unwrap();
    let r = ok_json(
        &[
            "Test-Plugin",
            "-Manifest",
            m,
            "-VMName",
            &vm.name,
            "-VMDir",
            dir,
        ],
        &[("VMGUEST_IC_PATH", isos.path().to_str().unwrap())],
    );
    check(&r);
    assert_eq!(
        (&r["live"], &r["guest"], &r["vm"]),
        (
            &Value::Bool(true),
            &Value::from("linux"),
            &Value::from(vm.name.as_str())
        ),
        "{r}"
    );
    assert!(
        vm.drives().iter().all(|d| d.media.is_none()),
        "the VM was changed"
    );
    assert_ne!(status(&vm), "installed 1.9.0");

    // A missing VM is the contract's VM_E_VM_UNKNOWN.
    let out = vmguest_with(
        &[
            "Test-Plugin",
            "-Manifest",
            m,
            "-VMName",
            "no-such-vm",
            "-VMDir",
            dir,
        ],
        None,
        &[],
    );
    assert_eq!(out.status.code(), Some(11), "{}", describe(&out));

    // A rebuilt component no longer matches its pin: a warning, and the test goes on.
    let wasm = plugins.path().join("pin-versions.wasm");
    let mut bytes = std::fs::read(&wasm).unwrap();
    // A custom section (id 0, 6 bytes: name "test", payload "x"): still a valid component.
    bytes.extend_from_slice(b"\x00\x06\x04testx");
    std::fs::write(&wasm, bytes).unwrap();
    let r = ok_json(&["Test-Plugin", "-Manifest", m, "-GuestOS", "linux"], &[]);
    let warning = r["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("an install would refuse it"), "{r}");
    assert!(Path::new(m).exists());
}
