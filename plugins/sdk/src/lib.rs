//! Guest-side SDK for provider plugins.
//!
//! It binds the `provider-plugin` world of `provisioner:provider@0.2.0` (`wit/provider.wit`;
//! the frozen 0.1.0 contract is `wit/v0.1/provider.wit`), so a plugin built with it exports
//! the 0.2.0 `provider` interface, `list-servers` included.
//!
//! A plugin implements [`Provider`] and exports it with
//! `provider_sdk::export_provider!(MyPlugin);`. Everything else it needs comes from here:
//! the WIT types, the host's `log` / `get-config` / `get-secret`, and an HTTP/JSON client
//! over wasi:http that maps HTTP failures to [`ProviderError`] the way every vendor needs.
//!
//! # Layout
//! - the generated bindings (`exports`, `provisioner`) and the re-exports below;
//! - [`http`]: [`http::ApiClient`], JSON over wasi:http, status -> error mapping,
//!   rate-limit delays;
//! - [`catalogue`]: the regions, sizes and images `validate` accepts offline, from the
//!   manifest's `[config] regions` / `sizes` / `images` or a plugin's built-in list;
//! - [`block_on`]: runs an async body inside a synchronous export.

wit_bindgen::generate!({
    // Qualified with the version, so a `wit/` of another version fails the build.
    world: "provisioner:provider/provider-plugin@0.2.0",
    path: "../../wit",
    pub_export_macro: true,
    export_macro_name: "export_provider",
    default_bindings_module: "provider_sdk",
});

pub mod catalogue;
pub mod http;

pub use exports::provisioner::provider::provider::Guest as Provider;
pub use provisioner::provider::host::{LogLevel, get_config, get_secret, log};
pub use provisioner::provider::types::{
    LabelledServer, PluginInfo, ProviderError, Server, ServerRequest, ServerStatus,
};
pub use wstd::runtime::block_on;

/// The label (tag, metadata key) under which plugins carry the idempotency key, so the
/// simulator and operators can find it.
pub const IDEMPOTENCY_LABEL: &str = "provisioner-idempotency-key";

/// A required secret, or `unauthorized` naming the manifest entry to add.
pub fn require_secret(key: &str) -> Result<String, ProviderError> {
    get_secret(key).ok_or_else(|| {
        ProviderError::Unauthorized(format!(
            "the secret '{key}' is not set: the manifest's [secrets] must name it and the host's \
             environment must have the variable"
        ))
    })
}

/// `name` is an RFC 1123 hostname (labels of letters, digits and inner hyphens).
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// `text` is a vendor slug: lower-case letters, digits, `-`, `.`, `_`.
pub fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
}
