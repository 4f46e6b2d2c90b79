//! Claims vmguest:plugin@0.2.0, but its `choose` returns a string instead of a
//! policy-decision: a component that lies about its WIT. Refused at load time.
wit_bindgen::generate!({ path: "wit", world: "policy" });

struct Liar;

impl exports::vmguest::plugin::iso_policy::Guest for Liar {
    fn choose(_: vmguest::plugin::types::PolicyContext) -> String {
        "defer".into()
    }
}

export!(Liar);
