//! Host bindings for every supported version of `vmguest:plugin`, one module per frozen
//! WIT folder (`wit/since_vX.Y.Z`). The shared `types` interface has not changed since
//! 0.1.0, so older versions reuse the current types and only their `host` import needs
//! a shim.

/// The current version, `wit/since_v0.2.0`.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.2.0",
        world: "plugin",
    });
}

/// The first release, `wit/since_v0.1.0` (frozen).
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit/since_v0.1.0",
        world: "plugin",
        with: {
            "vmguest:plugin/types": super::v0_2::vmguest::plugin::types,
        },
    });
}
