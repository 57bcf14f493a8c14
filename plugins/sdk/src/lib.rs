//! Guest-side SDK for provider plugins.
//!
//! It binds the `provider-plugin` world of `provisioner:provider@0.5.0` (`wit/provider.wit`;
//! the frozen older contracts are `wit/v0.4/`, `wit/v0.3/`, `wit/v0.2/` and `wit/v0.1/`), so a
//! plugin built with it exports the 0.5.0 `provider` interface, `list-servers` and `catalogue`
//! included (the regions, sizes and images its `validate` accepts: [`catalogue::Accepted`]
//! names them once for both), may keep values between calls in the host's cache ([`cache`]),
//! and says `no-capacity` when its vendor cannot place a server where it was asked.
//!
//! A plugin implements [`Provider`] and exports it with
//! `provider_sdk::export_provider!(MyPlugin);`. Everything else it needs comes from here:
//! the WIT types, the host's `log` / `get-config` / `get-secret`, and an HTTP/JSON client
//! over wasi:http that maps HTTP failures to [`ProviderError`] the way every vendor needs.
//!
//! # Layout
//! - the generated bindings (`exports`, `provisioner`) and the re-exports below;
//! - [`cache`]: the plugin's own short-lived values the host keeps between calls (a
//!   session token), typed;
//! - [`http`]: [`http::ApiClient`], JSON over wasi:http, status -> error mapping,
//!   rate-limit delays;
//! - [`catalogue`]: the regions, sizes and images `validate` accepts offline, from the
//!   manifest's `[config] regions` / `sizes` / `images` or a plugin's built-in list, and the
//!   `catalogue` export's answer from the same lists;
//! - [`ssh`]: the order's `ssh-keys` (OpenSSH public keys), checked, with their MD5
//!   fingerprints (how vendors' key stores find a key);
//! - [`cloud_init`]: SSH keys written into cloud-init user data, for vendors without a key
//!   store;
//! - [`adopt`]: adopt the oldest server carrying the idempotency key, or create one;
//! - [`paging`]: every page of a vendor's list (page numbers, cursors, next links);
//! - [`status`]: the vendor's status, from one field or several, in the host's terms;
//! - [`unique_name`]: the vendor-side name for vendors that require unique server names;
//! - [`base64`]: standard base64, as vendors want user data;
//! - [`sigv4`]: AWS Signature Version 4 request signing, for AWS-style APIs (EC2's Query
//!   API and the like);
//! - [`block_on`]: runs an async body inside a synchronous export.

wit_bindgen::generate!({
    // Qualified with the version, so a `wit/` of another version fails the build.
    world: "provisioner:provider/provider-plugin@0.5.0",
    path: "../../wit",
    pub_export_macro: true,
    export_macro_name: "export_provider",
    default_bindings_module: "provider_sdk",
});

pub mod adopt;
pub mod cache;
pub mod catalogue;
pub mod cloud_init;
pub mod http;
pub mod paging;
pub mod sigv4;
pub mod ssh;
pub mod status;

pub use exports::provisioner::provider::provider::Guest as Provider;
pub use provisioner::provider::host::{LogLevel, get_config, get_secret, log};
pub use provisioner::provider::types::{
    LabelledServer, PluginCatalogue, PluginInfo, ProviderError, Server, ServerRequest, ServerStatus,
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

/// Hex digits of the suffix [`unique_name`] adds (40 bits).
const NAME_SUFFIX_LEN: usize = 10;

/// The name a server gets at a vendor that requires unique server names (Hetzner): all
/// tenants share one vendor account, so the order's `name` alone would let one tenant's
/// order fail (and learn of another's server) on a name another tenant used. The vendor-side
/// name is the order's name with `-<suffix>` added to its first label, the suffix being 10
/// hex digits derived from the idempotency key (the same key always gives the same name).
/// The user's part is shortened so the first label stays within 63 characters and the whole
/// within `max_len`; `invalid-request` when even one character of it would not fit.
pub fn unique_name(
    name: &str,
    idempotency_key: &str,
    max_len: usize,
) -> Result<String, ProviderError> {
    use md5::{Digest, Md5};
    let digest = Md5::digest(idempotency_key.as_bytes());
    let suffix: String = digest
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<String>()[..NAME_SUFFIX_LEN]
        .to_string();
    let (first, rest) = match name.split_once('.') {
        Some((first, rest)) => (first, format!(".{rest}")),
        None => (name, String::new()),
    };
    let room = 63
        .min(max_len.saturating_sub(rest.len()))
        .saturating_sub(NAME_SUFFIX_LEN + 1);
    let kept: String = first.chars().take(room).collect();
    let kept = kept.trim_end_matches('-');
    if kept.is_empty() {
        return Err(ProviderError::InvalidRequest(format!(
            "name '{}' is too long: with the {}-character suffix that keeps it unique at the \
             vendor, it must fit in {max_len} characters",
            ssh::prefix(name, 64),
            NAME_SUFFIX_LEN + 1
        )));
    }
    Ok(format!("{kept}-{suffix}{rest}"))
}

/// `data` in standard base64 with padding (RFC 4648), as vendors want user data
/// (Nova, Vultr).
pub fn base64(data: impl AsRef<[u8]>) -> String {
    use ::base64::Engine as _;
    ::base64::engine::general_purpose::STANDARD.encode(data)
}

/// `text` is a vendor slug: lower-case letters, digits, `-`, `.`, `_`.
pub fn is_slug(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The output of a future that is ready at once (the SDK's helpers with test
    /// closures that do no I/O); panics when it is not.
    pub(crate) fn ready<T>(future: impl std::future::Future<Output = T>) -> T {
        use std::task::{Context, Poll, Waker};
        let mut future = std::pin::pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(output) => output,
            Poll::Pending => panic!("the future waits for I/O"),
        }
    }

    /// RFC 4648's test vectors, and bytes that are not text.
    #[test]
    fn base64_is_standard_with_padding() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain), encoded);
        }
        assert_eq!(base64([0xfb, 0xff]), "+/8=");
    }

    /// The suffix depends on the key only; long names are shortened to fit; the result is
    /// a hostname.
    #[test]
    fn unique_names_fit_and_follow_the_key() {
        let a = unique_name("db", "order-a", 63).unwrap();
        let b = unique_name("db", "order-b", 63).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, unique_name("db", "order-a", 63).unwrap());
        assert!(a.starts_with("db-") && a.len() == 13, "{a}");
        let long = "x".repeat(80);
        let shortened = unique_name(&long, "k", 63).unwrap();
        assert_eq!(shortened.len(), 63);
        assert!(is_hostname(&shortened));
        let dotted = unique_name("web.example.com", "k", 63).unwrap();
        assert!(dotted.starts_with("web-") && dotted.ends_with(".example.com"));
        let hyphen = unique_name(&format!("{}-tail", "a".repeat(51)), "k", 63).unwrap();
        assert!(is_hostname(&hyphen), "{hyphen}");
        assert!(unique_name(&format!("a.{}", "b".repeat(60)), "k", 63).is_err());
    }
}
