//! audit: append one JSON line per install to an audit log: VM, ISO and its SHA-256,
//! outcome, and durations.
//!
//! Grant the log directory read-write in the manifest
//! (`[grants_rw] "/audit" = "/var/log/vmguest"`). Setting `file` (default
//! `vmguest-audit.jsonl`) names the log inside the first granted directory. A log that
//! cannot be written fails the post-install hook, which makes the outcome
//! DISP_E_EXCEPTION: an install that is not audited is not silently accepted.

wit_bindgen::generate!({
    path: "../../wit/since_v0.2.0",
    world: "hooks",
});

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use exports::vmguest::plugin::install_hooks::Guest;
use vmguest::plugin::host::{granted_dirs, log, setting};
use vmguest::plugin::types::{InstallContext, InstallOutcome, Level, Refusal};

struct Audit;

fn json(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn opt(s: &Option<String>) -> String {
    s.as_deref().map_or("null".into(), json)
}

impl Guest for Audit {
    fn pre_install(_ctx: InstallContext) -> Result<(), Refusal> {
        Ok(())
    }

    fn post_install(ctx: InstallContext, outcome: InstallOutcome) -> Result<(), String> {
        let dir = granted_dirs()
            .into_iter()
            .next()
            .ok_or("no audit directory granted")?;
        let file = setting("file").unwrap_or_else(|| "vmguest-audit.jsonl".into());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let iso = ctx.iso.as_ref();
        let phases: Vec<String> = outcome
            .phases
            .iter()
            .map(|p| format!("{}:{}", json(&p.name), p.ms))
            .collect();
        let line = format!(
            "{{\"time\":{now},\"vm\":{},\"guest\":{},\"iso\":{},\"iso_sha256\":{},\"iso_family\":{},\"iso_version\":{},\"hresult\":\"0x{:08X}\",\"result\":{},\"message\":{},\"components\":{},\"total_ms\":{},\"phases_ms\":{{{}}}}}\n",
            json(&ctx.vm.name),
            opt(&ctx.guest.pretty_name),
            opt(&iso.map(|i| i.path.clone())),
            opt(&iso.map(|i| i.sha256.clone())),
            opt(&iso.map(|i| i.family.clone())),
            opt(&iso.and_then(|i| i.version.clone())),
            outcome.hresult,
            json(&outcome.name),
            json(&outcome.message),
            opt(&outcome.components),
            outcome.total_ms,
            phases.join(",")
        );
        let path = format!("{}/{file}", dir.trim_end_matches('/'));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| format!("cannot append to {path}: {e}"))?;
        log(Level::Info, &format!("audited {} in {path}", ctx.vm.name));
        Ok(())
    }
}

export!(Audit);
