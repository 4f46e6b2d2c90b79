//! How far past its deadline a plugin is stopped, on an idle host and with every core
//! busy.
//!
//! ```sh
//! scripts/build-plugins.sh
//! cargo run --release --example deadline -- [RUNS] [TIMEOUT_MS]
//! ```
//!
//! The hostile fixture (tests/plugins/hostile) either computes forever (`loop`, stopped
//! by the epoch callback) or sleeps in `wasi:io/poll` (`sleep`, stopped by the timer).
//! Each sample loads the plugin from a warm cache (a stopped plugin is poisoned for the
//! rest of its process, so every call needs a fresh load) and times the `choose` call
//! alone. Overshoot is the call's wall time minus its timeout; the median and maximum
//! of RUNS samples (default 15, timeout 200 ms) are printed. "loaded" runs one spinning
//! thread per core beside the calls.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmguest::kinds::GuestKind;
use vmguest::plugin::manifest::discover;
use vmguest::plugin::{context, probe, PluginSet};

fn plugin_dir(attack: &str, timeout_ms: u64, wasm: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let component = dir.path().join("hostile.wasm");
    std::fs::copy(wasm, &component).unwrap();
    let sha = vmguest::iso::sha256_bytes(&std::fs::read(&component).unwrap());
    std::fs::write(
        dir.path().join("hostile.toml"),
        format!(
            "name = \"hostile\"\nversion = \"0.1.0\"\nwit = \"0.2.0\"\ncomponent = \"hostile.wasm\"\n\
             sha256 = \"{sha}\"\n[settings]\nattack = \"{attack}\"\n[limits]\ntimeout_ms = {timeout_ms}\n"
        ),
    )
    .unwrap();
    dir
}

/// One call's overshoot past `timeout`.
fn overshoot(dir: &Path, cache: &Path, timeout: Duration) -> Duration {
    let set = PluginSet::load(&discover(&[dir.to_owned()]), Some(cache));
    assert!(set.refused.is_empty(), "{:?}", set.refused);
    let mut sel = probe::sample_selection(GuestKind::Linux);
    let t = Instant::now();
    let err = set
        .apply_policy_to(
            &context::vm_info("bench"),
            &context::guest_of_kind(GuestKind::Linux),
            false,
            &mut sel,
            &mut Vec::new(),
        )
        .expect_err("the hostile plugin must be stopped");
    let took = t.elapsed();
    assert!(err.to_string().contains("deadline"), "{err}");
    took.saturating_sub(timeout)
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(15);
    let timeout_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let timeout = Duration::from_millis(timeout_ms);
    let wasm = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm/wasm32-wasip2/release/hostile.wasm");
    assert!(wasm.exists(), "run scripts/build-plugins.sh first");
    let cache = tempfile::tempdir().unwrap();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    println!("timeout {timeout_ms} ms, {runs} runs each, {cores} cores");
    println!("| attack | host | median overshoot | max overshoot |");
    println!("|---|---|---|---|");
    for attack in ["loop", "sleep"] {
        let dir = plugin_dir(attack, timeout_ms, &wasm);
        overshoot(dir.path(), cache.path(), timeout); // fills the cache
        for loaded in [false, true] {
            let stop = Arc::new(AtomicBool::new(false));
            let spinners: Vec<_> = (0..if loaded { cores } else { 0 })
                .map(|_| {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::hint::black_box(0u64);
                        }
                    })
                })
                .collect();
            let samples = (0..runs)
                .map(|_| overshoot(dir.path(), cache.path(), timeout))
                .collect();
            stop.store(true, Ordering::Relaxed);
            spinners.into_iter().for_each(|t| t.join().unwrap());
            let (median, max) = stats(samples);
            println!(
                "| {attack} | {} | {:.1} ms | {:.1} ms |",
                if loaded { "all cores busy" } else { "idle" },
                median.as_secs_f64() * 1000.0,
                max.as_secs_f64() * 1000.0
            );
        }
    }
}
