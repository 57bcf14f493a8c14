//! The plugin SDK (`provider-sdk`): what every provider plugin needs besides its own
//! vendor's API.
//!
//! A provider plugin teaches the provisioner one cloud vendor: it is a WebAssembly component
//! (built with `--target wasm32-wasip2`) that the host loads, sandboxes, and calls to
//! create, poll, list and delete servers. This crate binds the `provider-plugin` world of
//! `provisioner:provider@0.6.0` (`wit/provider.wit`; the frozen older contracts are
//! `wit/v0.5/` to `wit/v0.1/`), so a plugin built with it exports the 0.6.0 `provider`
//! interface, `list-servers`, `catalogue` and `create-new-server` included, and may say
//! `no-capacity` when its vendor cannot place a server where it was asked.
//!
//! A plugin implements [`Provider`] (the WIT interface as wit-bindgen generates it:
//! associated functions, owned arguments) and exports it with
//! `provider_sdk::export_provider!(MyPlugin);`. Everything else it needs comes from here:
//! the WIT types and the host's `log` / `get-config` / `get-secret` (re-exported at the
//! root), an HTTP/JSON client over wasi:http that maps HTTP failures to [`ProviderError`]
//! the way every vendor needs, and one implementation each of what every vendor asks the
//! same way: adopting the server an earlier try made for the order's idempotency key
//! before creating one, reading every page of a list, the offline catalogue `validate`
//! checks against, the order's SSH keys, the host's cache. The vendor-specific parts (its
//! JSON shapes, paths, status names and error codes) stay in the plugin.
//!
//! # A plugin
//!
//! Every call runs in a fresh instance, so each export opens its client again; the async
//! work runs inside the synchronous export with [`block_on`]. A vendor that answers
//! `GET /servers?tag=k=v` with a JSON list and `POST /servers` with the new server:
//!
//! ```no_run
//! use provider_sdk::adopt::{self, Existing, id_order};
//! use provider_sdk::catalogue::{Accepted, Known};
//! use provider_sdk::http::{ApiClient, HttpMethod, percent_encode};
//! use provider_sdk::{
//!     IDEMPOTENCY_LABEL, LabelledServer, PluginCatalogue, PluginInfo, Provider, ProviderError,
//!     Server, ServerRequest, ServerStatus, block_on, get_config, require_secret,
//! };
//! use serde::{Deserialize, Serialize};
//!
//! /// What `validate` accepts offline, and the `catalogue` export's answer.
//! const ACCEPTED: Accepted = Accepted {
//!     region: Known::region(&["eu-1", "us-1"]),
//!     size: Known::size(&[]),
//!     image: Known::image(&[]),
//! };
//!
//! /// A server as the vendor answers it.
//! #[derive(Deserialize)]
//! struct AcmeServer {
//!     id: String,
//!     name: String,
//!     state: String,
//!     created_at: String,
//!     ip: Option<String>,
//! }
//!
//! impl From<AcmeServer> for Server {
//!     fn from(server: AcmeServer) -> Self {
//!         let status = match server.state.as_str() {
//!             "up" => ServerStatus::Running,
//!             _ => ServerStatus::Provisioning,
//!         };
//!         Server { vendor_id: server.id, name: server.name, status, ipv4: server.ip, ipv6: None }
//!     }
//! }
//!
//! #[derive(Serialize)]
//! struct CreateBody<'a> {
//!     name: &'a str,
//!     region: &'a str,
//!     plan: &'a str,
//!     image: &'a str,
//!     tags: Vec<String>,
//! }
//!
//! /// The vendor's API at the manifest's `base-url`, with the token from its `[secrets]`.
//! fn client() -> Result<ApiClient, ProviderError> {
//!     let base_url = get_config("base-url").unwrap_or_else(|| "https://api.acme.example".into());
//!     Ok(ApiClient::new(&base_url, |_error_body| None).with_bearer(&require_secret("token")?))
//! }
//!
//! /// The server carrying the idempotency `key` (the oldest, if several do).
//! async fn find(api: &ApiClient, key: &str) -> Result<Option<Server>, ProviderError> {
//!     let tag = percent_encode(&format!("{IDEMPOTENCY_LABEL}={key}"));
//!     let path = format!("/servers?tag={tag}");
//!     let servers: Vec<AcmeServer> = api.call(HttpMethod::GET, &path, None::<&()>).await?;
//!     Ok(adopt::oldest(servers, |s| (s.created_at.clone(), id_order(&s.id))).map(Server::from))
//! }
//!
//! /// `create-server` (`MayExist`: adopts the server an earlier try made for the key) and
//! /// `create-new-server` (`NoneYet`: the host knows there is none, so no look-up): makes
//! /// a server carrying the key.
//! fn create(request: ServerRequest, existing: Existing) -> Result<Server, ProviderError> {
//!     AcmePlugin::validate(request.clone())?;
//!     block_on(async {
//!         let api = client()?;
//!         adopt::adopt_or_create(
//!             existing,
//!             async || find(&api, &request.idempotency_key).await,
//!             async || {
//!                 let body = CreateBody {
//!                     name: &request.name,
//!                     region: &request.region,
//!                     plan: &request.size,
//!                     image: &request.image,
//!                     tags: vec![format!("{IDEMPOTENCY_LABEL}={}", request.idempotency_key)],
//!                 };
//!                 let made: AcmeServer = api.call(HttpMethod::POST, "/servers", Some(&body)).await?;
//!                 Ok(made.into())
//!             },
//!         )
//!         .await
//!     })
//! }
//!
//! struct AcmePlugin;
//!
//! impl Provider for AcmePlugin {
//!     fn info() -> PluginInfo {
//!         PluginInfo {
//!             vendor: "acme".into(),
//!             display_name: "Acme Cloud".into(),
//!             version: env!("CARGO_PKG_VERSION").into(),
//!         }
//!     }
//!
//!     fn catalogue() -> PluginCatalogue {
//!         ACCEPTED.catalogue()
//!     }
//!
//!     fn validate(request: ServerRequest) -> Result<(), ProviderError> {
//!         ACCEPTED.check(&request)?;
//!         provider_sdk::ssh::parse_all(&request.ssh_keys).map(drop)
//!     }
//!
//!     fn create_server(request: ServerRequest) -> Result<Server, ProviderError> {
//!         create(request, Existing::MayExist)
//!     }
//!
//!     fn create_new_server(request: ServerRequest) -> Result<Server, ProviderError> {
//!         create(request, Existing::NoneYet)
//!     }
//!
//!     fn find_server(idempotency_key: String) -> Result<Option<Server>, ProviderError> {
//!         block_on(async { find(&client()?, &idempotency_key).await })
//!     }
//!
//!     /// `not-found` once it is gone: the client maps the vendor's 404.
//!     fn get_server(vendor_id: String) -> Result<Server, ProviderError> {
//!         let path = format!("/servers/{}", percent_encode(&vendor_id));
//!         block_on(async {
//!             let server: AcmeServer = client()?.call(HttpMethod::GET, &path, None::<&()>).await?;
//!             Ok(server.into())
//!         })
//!     }
//!
//!     fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
//!         let path = format!("/servers/{}", percent_encode(&vendor_id));
//!         block_on(async {
//!             let api = client()?;
//!             let _: serde_json::Value = api.call(HttpMethod::DELETE, &path, None::<&()>).await?;
//!             Ok(())
//!         })
//!     }
//!
//!     fn list_servers() -> Result<Vec<LabelledServer>, ProviderError> {
//!         // every server carrying IDEMPOTENCY_LABEL, with its key (see `paging` and
//!         // `adopt::labelled`)
//! #       Ok(Vec::new())
//!     }
//! }
//!
//! provider_sdk::export_provider!(AcmePlugin);
//! # fn main() {}
//! ```
//!
//! It compiles on any target but runs only inside the host (the host's functions and
//! wasi:http are imports of the component). `plugins/example` is the complete template,
//! with paging, a vendor's error bodies and capacity codes; `docs/plugin-authoring.md` is
//! the guide.
//!
//! # Layout
//! - this file: the generated bindings (`exports`, `provisioner`), the re-exports of the
//!   WIT types and the host's functions, [`ProviderError::case_name`], [`IDEMPOTENCY_LABEL`],
//!   and small checks and names
//!   every plugin uses: [`require_secret`], [`is_hostname`], [`is_slug`], [`unique_name`]
//!   (the vendor-side name where vendors require unique server names),
//!   [`check_user_data_len`], [`check_label_count`], [`base64()`] (standard base64, as
//!   vendors want user data);
//! - [`http`]: [`http::ApiClient`], JSON over wasi:http ([`http::ApiResponse`]), status ->
//!   error mapping ([`http::status_error`], or the plugin's own [`http::ErrorMapper`];
//!   [`http::error_detail`], the message every such error carries), rate-limit delays;
//! - [`session_token`]: a vendor's login token, asked for at an OAuth 2.0 token endpoint
//!   (its refusals read by [`session_token::OAuthError`]), kept in the cache until shortly
//!   before it expires ([`session_token::keep_until_expiry`]), sent with every request and
//!   renewed once on a 401;
//! - [`cache`]: the plugin's own short-lived values the host keeps between calls (a
//!   session token), typed;
//! - [`adopt`]: `create-server`'s protocol: adopt the oldest server carrying the
//!   idempotency key, or create one (`create-new-server`: create without the look-up); the servers carrying a key, as `list-servers` answers;
//! - [`paging`]: every page of a vendor's list (page numbers, cursors, next links);
//! - [`catalogue`]: the regions, sizes and images `validate` accepts offline, from the
//!   manifest's `[config] regions` / `sizes` / `images` or a plugin's built-in list, and the
//!   `catalogue` export's answer from the same lists;
//! - [`status`]: the vendor's status, from one field or several, in the host's terms;
//! - [`ssh`]: the order's `ssh-keys` (OpenSSH public keys), checked, with their MD5
//!   fingerprints (how vendors' key stores find a key);
//! - [`cloud_init`]: SSH keys written into cloud-init user data, for vendors without a key
//!   store;
//! - [`sigv4`]: AWS Signature Version 4 request signing, for AWS-style APIs (EC2's Query
//!   API and the like);
//! - [`block_on`] (from `wstd`): runs an async body inside a synchronous export.

wit_bindgen::generate!({
    // Qualified with the version, so a `wit/` of another version fails the build.
    world: "provisioner:provider/provider-plugin@0.6.0",
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
pub mod session_token;
pub mod sigv4;
pub mod ssh;
pub mod status;

pub use exports::provisioner::provider::provider::Guest as Provider;
pub use provisioner::provider::host::{LogLevel, get_config, get_secret, log};
pub use provisioner::provider::types::{
    LabelledServer, PluginCatalogue, PluginInfo, ProviderError, Server, ServerRequest, ServerStatus,
};
pub use wstd::runtime::block_on;

impl ProviderError {
    /// The name of the WIT case (`rate-limited`, `no-capacity`, ...) without its payload:
    /// what a test or a log line says of an error whose message does not matter.
    pub fn case_name(&self) -> &'static str {
        match self {
            ProviderError::InvalidRequest(_) => "invalid-request",
            ProviderError::Unauthorized(_) => "unauthorized",
            ProviderError::NotFound(_) => "not-found",
            ProviderError::QuotaExceeded(_) => "quota-exceeded",
            ProviderError::RateLimited(_) => "rate-limited",
            ProviderError::Transient(_) => "transient",
            ProviderError::Internal(_) => "internal",
            ProviderError::NoCapacity(_) => "no-capacity",
        }
    }
}

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

/// Refuses `user_data` longer than `max_bytes`, the most `vendor` takes, as `user_data is at
/// most <max_bytes> bytes at <vendor>`.
pub fn check_user_data_len(
    user_data: Option<&str>,
    max_bytes: usize,
    vendor: &str,
) -> Result<(), ProviderError> {
    if user_data.is_some_and(|data| data.len() > max_bytes) {
        return Err(ProviderError::InvalidRequest(format!(
            "user_data is at most {max_bytes} bytes at {vendor}"
        )));
    }
    Ok(())
}

/// Refuses `labels` that leave no room for the idempotency key's own label at a vendor that
/// takes at most `max` per resource (a label named [`IDEMPOTENCY_LABEL`] is not counted: the
/// key's replaces it), as `<n> labels: <limit>, one of them the idempotency key's`, `limit`
/// saying the vendor's rule (`Azure takes 50 tags per resource`).
pub fn check_label_count(
    labels: &[(String, String)],
    max: usize,
    limit: &str,
) -> Result<(), ProviderError> {
    let own = labels
        .iter()
        .filter(|(key, _)| key != IDEMPOTENCY_LABEL)
        .count();
    if own + 1 > max {
        return Err(ProviderError::InvalidRequest(format!(
            "{own} labels: {limit}, one of them the idempotency key's"
        )));
    }
    Ok(())
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

    /// User data up to the vendor's most passes; more is refused, naming the most.
    #[test]
    fn user_data_fits_the_vendors_most() {
        assert!(check_user_data_len(None, 4, "Acme").is_ok());
        assert!(check_user_data_len(Some("abcd"), 4, "Acme").is_ok());
        let Err(ProviderError::InvalidRequest(message)) =
            check_user_data_len(Some("abcde"), 4, "Acme")
        else {
            panic!("not invalid-request");
        };
        assert_eq!(message, "user_data is at most 4 bytes at Acme");
    }

    /// The idempotency key's label takes one of the vendor's places; a label of that name
    /// is not counted twice.
    #[test]
    fn labels_leave_room_for_the_key() {
        let labels = |n: usize| -> Vec<(String, String)> {
            (0..n).map(|i| (format!("k{i}"), "v".into())).collect()
        };
        assert!(check_label_count(&labels(2), 3, "Acme takes 3").is_ok());
        let Err(ProviderError::InvalidRequest(message)) =
            check_label_count(&labels(3), 3, "Acme takes 3")
        else {
            panic!("not invalid-request");
        };
        assert_eq!(
            message,
            "3 labels: Acme takes 3, one of them the idempotency key's"
        );
        let mut with_key = labels(2);
        with_key.push((IDEMPOTENCY_LABEL.into(), "k".into()));
        assert!(check_label_count(&with_key, 3, "Acme takes 3").is_ok());
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
