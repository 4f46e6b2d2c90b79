//! Built against vmguest:plugin@9.9.0, which no vmguest knows: refused at load time.
wit_bindgen::generate!({ path: "wit", world: "policy" });

struct Future;

impl exports::vmguest::plugin::iso_policy::Guest for Future {
    fn choose(_: vmguest::plugin::types::PolicyContext) -> vmguest::plugin::types::PolicyDecision {
        vmguest::plugin::types::PolicyDecision::Defer
    }
}

export!(Future);
