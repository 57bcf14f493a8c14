//! Host-side bindings of the `provisioner:provider` worlds this host loads.
//!
//! - [`current`]: 0.3 (`wit/provider.wit`), the version plugins should build against. It
//!   added the `cache` import ([`crate::cache`]).
//! - [`v0_2`]: 0.2 (`wit/v0.2/provider.wit`, frozen): no cache; it serves orders and the
//!   orphan sweep as before.
//! - [`v0_1`]: 0.1 (`wit/v0.1/provider.wit`, frozen). 0.2 only added to 0.1 (the
//!   `labelled-server` record, the `list-servers` export), so a 0.1 plugin cannot list its
//!   servers and the orphan sweep skips its vendor and says why.
//!
//! Minor versions only add, so the older bindings reuse the current [`types`] (`with`) and
//! the host keeps one set of types for all. Each version's `host` interface is its own
//! (an import is linked under its versioned name), with the same implementation.
//!
//! The policy (which versions a host loads) is `wit/README.md`.

/// Bindings of `provisioner:provider@0.3.0`.
pub mod current {
    wasmtime::component::bindgen!({
        world: "provider-plugin",
        path: "../wit",
        exports: { default: async },
    });
}

/// Bindings of `provisioner:provider@0.2.0`, sharing the current types.
pub mod v0_2 {
    wasmtime::component::bindgen!({
        world: "provider-plugin",
        path: "../wit/v0.2",
        exports: { default: async },
        with: {
            "provisioner:provider/types": super::current::provisioner::provider::types,
        },
    });
}

/// Bindings of `provisioner:provider@0.1.0`, sharing the current types.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        world: "provider-plugin",
        path: "../wit/v0.1",
        exports: { default: async },
        with: {
            "provisioner:provider/types": super::current::provisioner::provider::types,
        },
    });
}

/// The WIT types every supported version shares.
pub use current::provisioner::provider::types;

/// Which version of the world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    /// `provisioner:provider@0.3.x`.
    V0_3,
    /// `provisioner:provider@0.2.x`: no cache.
    V0_2,
    /// `provisioner:provider@0.1.x`: no cache, no `list-servers`.
    V0_1,
}

impl WitVersion {
    /// The version as `MAJOR.MINOR`, for logs and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_3 => "0.3",
            WitVersion::V0_2 => "0.2",
            WitVersion::V0_1 => "0.1",
        }
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
