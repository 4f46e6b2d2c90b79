//! site-mirror: prefer the site's vetted copy of the chosen ISO.
//!
//! Grant the mirror read-only in the manifest (`[grants] "/mirror" = "/srv/ic-mirror"`).
//! When the mirror holds a file with the same name as the built-in choice, that copy is
//! provided instead; vmguest then reads its content like any candidate.
//!
//! Settings: `mirror` (default: the first granted directory); `require = "true"` refuses
//! the install when the mirror has no copy.

wit_bindgen::generate!({
    path: "../../wit/since_v0.2.0",
    world: "policy",
});

use exports::vmguest::plugin::iso_policy::Guest;
use vmguest::plugin::host::{granted_dirs, log, setting};
use vmguest::plugin::types::{ContractError, Level, PolicyContext, PolicyDecision, Refusal};

struct SiteMirror;

impl Guest for SiteMirror {
    fn choose(ctx: PolicyContext) -> PolicyDecision {
        let Some(mirror) = setting("mirror").or_else(|| granted_dirs().into_iter().next()) else {
            log(Level::Warn, "no mirror directory granted; deferring");
            return PolicyDecision::Defer;
        };
        let Some(default) = ctx.default_choice else {
            return PolicyDecision::Defer;
        };
        let chosen = &ctx.candidates[default as usize].path;
        let name = chosen.rsplit('/').next().unwrap_or(chosen);
        let copy = format!("{}/{name}", mirror.trim_end_matches('/'));
        match std::fs::metadata(&copy) {
            Ok(m) if m.is_file() => {
                log(Level::Info, &format!("using the mirror's copy {copy}"));
                PolicyDecision::Provide(copy)
            }
            _ if setting("require").as_deref() == Some("true") => PolicyDecision::Refuse(Refusal {
                error: ContractError::FileNotFound,
                message: format!("{name} is not on the site mirror {mirror}"),
            }),
            _ => {
                log(
                    Level::Info,
                    &format!("{name} is not on the mirror; deferring"),
                );
                PolicyDecision::Defer
            }
        }
    }
}

export!(SiteMirror);
