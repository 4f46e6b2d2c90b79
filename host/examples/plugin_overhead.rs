//! What a plugin adds to one install, cold (compiled on first use) and warm (from the
//! compiled-component cache), per example plugin: the Rust ones, and the Python
//! (componentize-py) and JavaScript (componentize-js) ones.
//!
//! ```sh
//! scripts/build-plugins.sh
//! cargo run --release --example plugin_overhead -- [RUNS [COLD_RUNS]]
//! ```
//!
//! Each sample loads the plugin (admission, SHA-256, compile or cache, link) and makes
//! the calls of one install: `choose` for a policy, `pre-install` + `post-install` for
//! hooks, on the sample context `Test-Plugin` uses. Cold samples use an empty cache;
//! warm samples use a filled one. The median of RUNS warm samples (default 21) and of
//! COLD_RUNS cold ones (default 5: a Python component compiles for seconds) is printed,
//! with the component's and the cached artifact's sizes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmguest::kinds::GuestKind;
use vmguest::plugin::manifest::discover;
use vmguest::plugin::types::InstallOutcome;
use vmguest::plugin::{context, probe, PluginSet};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn one_install(set: &PluginSet) {
    let mut records = Vec::new();
    let mut sel = probe::sample_selection(GuestKind::Windows);
    let vm = context::vm_info("bench");
    let guest = context::guest_of_kind(GuestKind::Windows);
    set.apply_policy_to(&vm, &guest, false, &mut sel, &mut records)
        .expect("policy");
    let ctx = context::install_context("bench", None, None, false);
    set.pre_install(&ctx, &mut records).expect("pre-install");
    let outcome = InstallOutcome {
        hresult: 0,
        name: "S_OK".into(),
        message: "bench".into(),
        components: None,
        total_ms: 1,
        phases: Vec::new(),
    };
    assert!(set.post_install(&ctx, &outcome, &mut records).is_none());
    assert!(!records.is_empty());
}

fn sample(dir: &Path, cache: &Path) -> Duration {
    let t = Instant::now();
    let set = PluginSet::load(&discover(&[dir.to_owned()]), Some(cache));
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    one_install(&set);
    t.elapsed()
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(21);
    let cold_runs: usize = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let wasm_dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm/wasm32-wasip2/release");
    let audit_log = tempfile::tempdir().unwrap();
    let plugins = [
        (
            "pin-versions",
            "pin_versions",
            String::from("[settings]\ndeny = \"virtio-win@0.1.266\"\n"),
        ),
        ("site-mirror", "site_mirror", String::new()),
        (
            "maintenance-window",
            "maintenance_window",
            String::from("[settings]\nwindow = \"00:00-24:00\"\n"),
        ),
        (
            "audit",
            "audit",
            format!("[grants_rw]\n\"/audit\" = {:?}\n", audit_log.path()),
        ),
    ];
    let deny = "[settings]\ndeny = \"virtio-win@0.1.266\"\n";
    let window = "[settings]\nwindow = \"00:00-24:00\"\n";
    let others = [
        ("pin-versions (Python)", "pin_versions_py", deny),
        (
            "maintenance-window (Python)",
            "maintenance_window_py",
            window,
        ),
        ("pin-versions (JS)", "pin_versions_js", deny),
        ("maintenance-window (JS)", "maintenance_window_js", window),
    ];
    let plugins = plugins
        .into_iter()
        .chain(others.map(|(n, w, e)| (n, w, e.to_owned())));
    let t = Instant::now();
    vmguest::plugin::engine::engine();
    println!(
        "engine start (once per process): {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    println!(
        "| plugin | component | cached artifact | cold (compile) | warm (cached) | of which: calls only |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, wasm, extra) in plugins {
        let dir = tempfile::tempdir().unwrap();
        let src = wasm_dir.join(format!("{wasm}.wasm"));
        let bytes = std::fs::read(&src).expect("run scripts/build-plugins.sh first");
        std::fs::write(dir.path().join(format!("{wasm}.wasm")), &bytes).unwrap();
        std::fs::write(
            dir.path().join(format!("{wasm}.toml")),
            format!(
                "name = \"{wasm}\"\nversion = \"1.0.0\"\nwit = \"0.2.0\"\ncomponent = \"{wasm}.wasm\"\nsha256 = \"{}\"\n{extra}",
                vmguest::iso::sha256_bytes(&bytes)
            ),
        )
        .unwrap();
        let mut cold = Vec::new();
        for _ in 0..cold_runs {
            let cache = tempfile::tempdir().unwrap();
            cold.push(sample(dir.path(), cache.path()));
        }
        let cache = tempfile::tempdir().unwrap();
        sample(dir.path(), cache.path());
        let warm: Vec<Duration> = (0..runs)
            .map(|_| sample(dir.path(), cache.path()))
            .collect();
        let set = PluginSet::load(&discover(&[dir.path().to_owned()]), Some(cache.path()));
        let calls: Vec<Duration> = (0..runs)
            .map(|_| {
                let t = Instant::now();
                one_install(&set);
                t.elapsed()
            })
            .collect();
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
        let artifact: u64 = std::fs::read_dir(cache.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        let size = |b: u64| match b {
            b if b >= 1 << 20 => format!("{:.1} MB", b as f64 / f64::from(1 << 20)),
            b => format!("{} KB", b / 1024),
        };
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            size(bytes.len() as u64),
            size(artifact),
            ms(median(cold)),
            ms(median(warm)),
            ms(median(calls))
        );
    }
}
