//! Built against the frozen vmguest:plugin@0.1.0: a conservative policy that takes the
//! oldest usable candidate of the built-in choice's family. It must keep loading.
wit_bindgen::generate!({ path: "../../../wit/since_v0.1.0", world: "policy" });

use vmguest::plugin::host::log;
use vmguest::plugin::types::{Level, PolicyContext, PolicyDecision};

struct Conservative;

fn key(v: &str) -> Vec<u64> {
    v.split(['.', '-'])
        .map(|n| n.parse().unwrap_or(0))
        .collect()
}

impl exports::vmguest::plugin::iso_policy::Guest for Conservative {
    fn choose(ctx: PolicyContext) -> PolicyDecision {
        let Some(d) = ctx.default_choice else {
            return PolicyDecision::Defer;
        };
        let family = ctx.candidates[d as usize].family.clone();
        let oldest = ctx
            .candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.usable && c.family == family)
            .min_by_key(|(_, c)| key(c.version.as_deref().unwrap_or("0")));
        match oldest {
            Some((i, c)) => {
                log(
                    Level::Info,
                    &format!("0.1.0 plugin: oldest is {:?}", c.version),
                );
                PolicyDecision::Choose(i as u32)
            }
            None => PolicyDecision::Defer,
        }
    }
}

export!(Conservative);
