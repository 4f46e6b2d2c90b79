//! pin-versions: pin the IC version per guest OS, and deny known-bad releases.
//!
//! Settings (all optional):
//! - `pin.windows`, `pin.linux`, `pin.unknown`: `family@version`, for example
//!   `"pin.windows" = "virtio-win@0.1.262"` (quoted: a bare dotted key is a TOML
//!   table). A pinned version that is not among the candidates refuses the install
//!   with HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND).
//! - `deny`: comma-separated `family@version`, for example `virtio-win@0.1.217` (that
//!   release broke older Windows guests). If the built-in choice is denied, the newest
//!   candidate of the same family that is not denied is chosen instead.

wit_bindgen::generate!({
    path: "../../wit/since_v0.2.0",
    world: "policy",
});

use exports::vmguest::plugin::iso_policy::Guest;
use vmguest::plugin::host::{log, setting};
use vmguest::plugin::types::{
    Candidate, ContractError, GuestKind, Level, PolicyContext, PolicyDecision, Refusal,
};

struct PinVersions;

fn kind(k: GuestKind) -> &'static str {
    match k {
        GuestKind::Linux => "linux",
        GuestKind::Windows => "windows",
        GuestKind::Unknown => "unknown",
    }
}

/// `family@version` pairs.
fn pairs(text: &str) -> Vec<(String, String)> {
    text.split(',')
        .filter_map(|p| p.trim().split_once('@'))
        .map(|(f, v)| (f.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn is(c: &Candidate, family: &str, version: &str) -> bool {
    c.usable && c.family.as_deref() == Some(family) && c.version.as_deref() == Some(version)
}

/// Numeric per dotted component; text after a dash sorts below the release.
fn version_key(v: &str) -> (Vec<u64>, bool) {
    let (release, pre) = match v.split_once('-') {
        Some((r, _)) => (r, true),
        None => (v, false),
    };
    let nums = release.split('.').map(|n| n.parse().unwrap_or(0)).collect();
    (nums, !pre)
}

fn refuse(message: String) -> PolicyDecision {
    PolicyDecision::Refuse(Refusal {
        error: ContractError::FileNotFound,
        message,
    })
}

impl Guest for PinVersions {
    fn choose(ctx: PolicyContext) -> PolicyDecision {
        let guest = kind(ctx.guest.kind);
        if let Some(pin) = setting(&format!("pin.{guest}")) {
            let Some((family, version)) = pairs(&pin).into_iter().next() else {
                return refuse(format!("pin.{guest} = {pin:?} is not family@version"));
            };
            return match ctx.candidates.iter().position(|c| is(c, &family, &version)) {
                Some(i) => {
                    log(Level::Info, &format!("{guest} guests are pinned to {family} {version}"));
                    PolicyDecision::Choose(i as u32)
                }
                None => refuse(format!(
                    "{guest} guests are pinned to {family} {version}, which is not among the {} candidates",
                    ctx.candidates.len()
                )),
            };
        }
        let deny = pairs(&setting("deny").unwrap_or_default());
        let denied = |c: &Candidate| deny.iter().any(|(f, v)| is(c, f, v));
        let Some(default) = ctx.default_choice else {
            return PolicyDecision::Defer;
        };
        let chosen = &ctx.candidates[default as usize];
        if !denied(chosen) {
            return PolicyDecision::Defer;
        }
        let family = chosen.family.clone().unwrap_or_default();
        let version = chosen.version.clone().unwrap_or_default();
        let best = ctx
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.usable && c.family.as_deref() == Some(&family) && !denied(c))
            .max_by_key(|(_, c)| version_key(c.version.as_deref().unwrap_or("0")));
        match best {
            Some((i, c)) => {
                log(
                    Level::Warn,
                    &format!(
                        "{family} {version} is denied; using {}",
                        c.version.as_deref().unwrap_or("?")
                    ),
                );
                PolicyDecision::Choose(i as u32)
            }
            None => refuse(format!(
                "{family} {version} is denied and no other {family} candidate is available"
            )),
        }
    }
}

export!(PinVersions);
