//! Host-side bindings of the `provisioner:provider` worlds this host loads.
//!
//! - [`current`]: 0.6 (`wit/provider.wit`), the version plugins should build against. It
//!   added the `create-new-server` export (a create without the look-up, for an order's
//!   first copy: `crate::worker::first_copy`).
//! - [`v0_5`]: 0.5 (`wit/v0.5/provider.wit`, frozen): the `catalogue` export (the regions,
//!   sizes and images `validate` accepts); no `create-new-server` (the host calls
//!   `create-server`, look-up and all, for every create).
//! - [`v0_4`]: 0.4 (`wit/v0.4/provider.wit`, frozen): the `no-capacity` case of
//!   `provider-error`; no `catalogue` (the host announces its vendor's catalogue as unknown).
//! - [`v0_3`]: 0.3 (`wit/v0.3/provider.wit`, frozen): the `cache` import ([`crate::cache`]);
//!   its errors have no `no-capacity` (a 0.3 plugin says `transient` for a capacity shortage).
//! - [`v0_2`]: 0.2 (`wit/v0.2/provider.wit`, frozen): no cache; it serves orders and the
//!   orphan sweep as before.
//! - [`v0_1`]: 0.1 (`wit/v0.1/provider.wit`, frozen). 0.2 only added to 0.1 (the
//!   `labelled-server` record, the `list-servers` export), so a 0.1 plugin cannot list its
//!   servers and the orphan sweep skips its vendor and says why.
//!
//! Minor versions only add. Where a minor added functions only, the older bindings reuse
//! the newer [`types`] (`with`): 0.5 shares 0.6's (0.6 only added a function), 0.4 shares
//! them too (0.5 only added the `plugin-catalogue` record and the function returning it),
//! 0.2 and 0.1 share 0.3's. 0.4 added a case to a type, and a
//! component's types must match the host's exactly, so 0.3 has types of its own and
//! [`older`] converts between them and the current ones (requests down, answers up). The host
//! keeps one set of types ([`types`]) everywhere else. Each version's `host` (and `cache`)
//! interface is its own (an import is linked under its versioned name), with the same
//! implementation.
//!
//! The policy (which versions a host loads) is `wit/README.md`.

/// The host-side bindings of the `provider-plugin` world in the WIT folder `$path`
/// (exports async), sharing the `types` interface of `$types` when given (a minor that
/// added functions only).
macro_rules! provider_plugin_bindings {
    ($path:tt) => {
        wasmtime::component::bindgen!({
            world: "provider-plugin",
            path: $path,
            exports: { default: async },
        });
    };
    ($path:tt, types from $types:path) => {
        wasmtime::component::bindgen!({
            world: "provider-plugin",
            path: $path,
            exports: { default: async },
            with: { "provisioner:provider/types": $types },
        });
    };
}

/// Bindings of `provisioner:provider@0.6.0`.
pub mod current {
    provider_plugin_bindings!("../wit");
}

/// Bindings of `provisioner:provider@0.5.0`, sharing 0.6's types (0.6 only added the
/// `create-new-server` export).
pub mod v0_5 {
    provider_plugin_bindings!(
        "../wit/v0.5",
        types from super::current::provisioner::provider::types
    );
}

/// Bindings of `provisioner:provider@0.4.0`, sharing 0.6's types (0.5 only added a record
/// and the `catalogue` export, 0.6 a function).
pub mod v0_4 {
    provider_plugin_bindings!(
        "../wit/v0.4",
        types from super::current::provisioner::provider::types
    );
}

/// Bindings of `provisioner:provider@0.3.0`, with types of their own (no `no-capacity`).
pub mod v0_3 {
    provider_plugin_bindings!("../wit/v0.3");
}

/// Bindings of `provisioner:provider@0.2.0`, sharing 0.3's types.
pub mod v0_2 {
    provider_plugin_bindings!(
        "../wit/v0.2",
        types from super::v0_3::provisioner::provider::types
    );
}

/// Bindings of `provisioner:provider@0.1.0`, sharing 0.3's types.
pub mod v0_1 {
    provider_plugin_bindings!(
        "../wit/v0.1",
        types from super::v0_3::provisioner::provider::types
    );
}

/// The WIT types every supported version shares.
pub use current::provisioner::provider::types;

/// Which version of the world a plugin implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WitVersion {
    /// `provisioner:provider@0.6.x`.
    V0_6,
    /// `provisioner:provider@0.5.x`: no `create-new-server`.
    V0_5,
    /// `provisioner:provider@0.4.x`: no `catalogue`.
    V0_4,
    /// `provisioner:provider@0.3.x`: no `no-capacity` error.
    V0_3,
    /// `provisioner:provider@0.2.x`: no cache, no `no-capacity` error.
    V0_2,
    /// `provisioner:provider@0.1.x`: no cache, no `list-servers`.
    V0_1,
}

impl WitVersion {
    /// The version as `MAJOR.MINOR`, for logs and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_6 => "0.6",
            WitVersion::V0_5 => "0.5",
            WitVersion::V0_4 => "0.4",
            WitVersion::V0_3 => "0.3",
            WitVersion::V0_2 => "0.2",
            WitVersion::V0_1 => "0.1",
        }
    }
}

impl WitVersion {
    /// Whether plugins of this version import the `cache` (0.3 on).
    pub fn has_cache(self) -> bool {
        matches!(
            self,
            WitVersion::V0_6 | WitVersion::V0_5 | WitVersion::V0_4 | WitVersion::V0_3
        )
    }

    /// Whether plugins of this version can say `no-capacity` (0.4 on).
    pub fn has_no_capacity(self) -> bool {
        matches!(self, WitVersion::V0_6 | WitVersion::V0_5 | WitVersion::V0_4)
    }

    /// Whether plugins of this version export `catalogue` (0.5 on).
    pub fn has_catalogue(self) -> bool {
        matches!(self, WitVersion::V0_6 | WitVersion::V0_5)
    }

    /// Whether plugins of this version export `create-new-server` (0.6 on).
    pub fn has_create_new(self) -> bool {
        matches!(self, WitVersion::V0_6)
    }
}

impl std::fmt::Display for WitVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Conversions between the types of 0.3 (shared by 0.2 and 0.1) and the current ones: a
/// request goes down as it is (0.4 added nothing to requests), an answer comes up as it is
/// (0.4 only added a case an older plugin never sends).
pub mod older {
    use super::types as new;
    use super::v0_3::provisioner::provider::types as old;

    /// A current request as an older plugin takes it.
    pub fn request(request: &new::ServerRequest) -> old::ServerRequest {
        let new::ServerRequest {
            idempotency_key,
            name,
            region,
            size,
            image,
            ssh_keys,
            user_data,
            labels,
        } = request.clone();
        old::ServerRequest {
            idempotency_key,
            name,
            region,
            size,
            image,
            ssh_keys,
            user_data,
            labels,
        }
    }

    /// An older plugin's answer in the current types.
    pub trait Upgrade {
        /// The current type.
        type Current;
        /// Converts.
        fn upgrade(self) -> Self::Current;
    }

    impl Upgrade for () {
        type Current = ();
        fn upgrade(self) {}
    }

    impl<T: Upgrade> Upgrade for Option<T> {
        type Current = Option<T::Current>;
        fn upgrade(self) -> Self::Current {
            self.map(Upgrade::upgrade)
        }
    }

    impl<T: Upgrade> Upgrade for Vec<T> {
        type Current = Vec<T::Current>;
        fn upgrade(self) -> Self::Current {
            self.into_iter().map(Upgrade::upgrade).collect()
        }
    }

    impl<T: Upgrade, E: Upgrade> Upgrade for Result<T, E> {
        type Current = Result<T::Current, E::Current>;
        fn upgrade(self) -> Self::Current {
            self.map(Upgrade::upgrade).map_err(Upgrade::upgrade)
        }
    }

    impl Upgrade for old::PluginInfo {
        type Current = new::PluginInfo;
        fn upgrade(self) -> new::PluginInfo {
            let old::PluginInfo {
                vendor,
                display_name,
                version,
            } = self;
            new::PluginInfo {
                vendor,
                display_name,
                version,
            }
        }
    }

    impl Upgrade for old::ServerStatus {
        type Current = new::ServerStatus;
        fn upgrade(self) -> new::ServerStatus {
            match self {
                old::ServerStatus::Provisioning => new::ServerStatus::Provisioning,
                old::ServerStatus::Running => new::ServerStatus::Running,
                old::ServerStatus::Stopped => new::ServerStatus::Stopped,
                old::ServerStatus::Deleting => new::ServerStatus::Deleting,
                old::ServerStatus::Deleted => new::ServerStatus::Deleted,
                old::ServerStatus::Error => new::ServerStatus::Error,
            }
        }
    }

    impl Upgrade for old::Server {
        type Current = new::Server;
        fn upgrade(self) -> new::Server {
            let old::Server {
                vendor_id,
                name,
                status,
                ipv4,
                ipv6,
            } = self;
            new::Server {
                vendor_id,
                name,
                status: status.upgrade(),
                ipv4,
                ipv6,
            }
        }
    }

    impl Upgrade for old::LabelledServer {
        type Current = new::LabelledServer;
        fn upgrade(self) -> new::LabelledServer {
            new::LabelledServer {
                idempotency_key: self.idempotency_key,
                server: self.server.upgrade(),
            }
        }
    }

    impl Upgrade for old::ProviderError {
        type Current = new::ProviderError;
        fn upgrade(self) -> new::ProviderError {
            match self {
                old::ProviderError::InvalidRequest(m) => new::ProviderError::InvalidRequest(m),
                old::ProviderError::Unauthorized(m) => new::ProviderError::Unauthorized(m),
                old::ProviderError::NotFound(m) => new::ProviderError::NotFound(m),
                old::ProviderError::QuotaExceeded(m) => new::ProviderError::QuotaExceeded(m),
                old::ProviderError::RateLimited(ms) => new::ProviderError::RateLimited(ms),
                old::ProviderError::Transient(m) => new::ProviderError::Transient(m),
                old::ProviderError::Internal(m) => new::ProviderError::Internal(m),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Every field of a request reaches an older plugin.
        #[test]
        fn a_request_goes_down_whole() {
            let current = new::ServerRequest {
                idempotency_key: "k".into(),
                name: "web".into(),
                region: "fsn1".into(),
                size: "cx22".into(),
                image: "debian-12".into(),
                ssh_keys: vec!["ssh-ed25519 AAAA".into()],
                user_data: Some("#cloud-config".into()),
                labels: vec![("team".into(), "a".into())],
            };
            let old = request(&current);
            assert_eq!(
                (
                    old.idempotency_key,
                    old.name,
                    old.region,
                    old.size,
                    old.image
                ),
                (
                    "k".into(),
                    "web".into(),
                    "fsn1".into(),
                    "cx22".into(),
                    "debian-12".into()
                )
            );
            assert_eq!(old.ssh_keys, current.ssh_keys);
            assert_eq!(old.user_data, current.user_data);
            assert_eq!(old.labels, current.labels);
        }

        /// An older plugin's answers and errors arrive unchanged in the current types.
        #[test]
        fn answers_come_up_unchanged() {
            let answer: Result<Option<old::Server>, old::ProviderError> = Ok(Some(old::Server {
                vendor_id: "1".into(),
                name: "web".into(),
                status: old::ServerStatus::Deleting,
                ipv4: Some("192.0.2.1".into()),
                ipv6: None,
            }));
            let server = answer.upgrade().unwrap().unwrap();
            assert!(matches!(server.status, new::ServerStatus::Deleting));
            assert_eq!(server.ipv4.as_deref(), Some("192.0.2.1"));
            let error: Result<(), old::ProviderError> =
                Err(old::ProviderError::RateLimited(Some(5)));
            assert!(matches!(
                error.upgrade(),
                Err(new::ProviderError::RateLimited(Some(5)))
            ));
        }
    }
}
