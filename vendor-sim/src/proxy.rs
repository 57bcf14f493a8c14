//! The fault-injecting reverse proxy: `vendor-sim --upstream URL --fault-profile PATH` (or
//! [`spawn_proxy`] in process) forwards every request to an upstream vendor API (a fake of
//! the vendor, or the live vendor) and streams its answer back, except where a fault armed
//! through `/_sim/faults` says otherwise. Faults are rendered in the vendor's own shape from
//! a [`FaultProfile`] the plugin author writes beside the manifest (`faults.toml`), so a
//! plugin for a vendor the simulator does not imitate meets the same fault suite. Every
//! request it received is recorded at `GET /_sim/requests` ([`RecordedRequest`]), so a test
//! sees what reached the vendor (user data, SSH keys, labels, how many creates were made).
//!
//! The library API the conformance kit uses in process:
//! ```ignore
//! let profile = FaultProfile::load(Path::new("plugins/hetzner/faults.toml"))?;
//! let proxy = spawn_proxy(ProxyConfig { upstream, profile, upstream_ca_pem: None }).await?;
//! // Point the plugin's base URL at `proxy.url` (plus the path the upstream's base lacks);
//! // arm faults at `{proxy.url}/_sim/faults`; read `{proxy.url}/_sim/requests` as
//! // `Vec<RecordedRequest>`. Dropping `proxy` stops it.
//! ```
//!
//! # Forwarding
//! A request for `/p?q` at the proxy goes to `<upstream>/p?q` with its method, headers
//! (`Authorization` included; not hop-by-hop headers, nor `Host` unless the requests are
//! signed, see below) and body; the answer's status, headers and body come back as they
//! are. Absolute URLs the upstream puts in textual answers (JSON, XML, text) and in
//! `Location` that start with the upstream's base URL are rewritten to the proxy's, so links
//! and service catalogues (OpenStack's) lead back through the proxy: point it at the
//! vendor's root when the API hands out URLs outside the base path. An upstream that cannot be reached is a `502` with
//! `x-vendor-sim-proxy: upstream-error`. Paths under `/_sim` are the proxy's own.
//!
//! # Faults (`GET|POST|DELETE /_sim/faults`)
//! The rule JSON of the simulator ([`crate::control`]), `vendor` optional (the proxy serves
//! one vendor, any value is accepted): `rate_limit` (`retry_after_secs`), `server_error`
//! (`status`), `unauthorized`, answered from the profile instead of forwarding; `slow`
//! (`delay_ms`) forwards after the delay; `lost_response` forwards, waits for the whole
//! answer, then closes the connection without a byte ([`crate::faults::lost_response`]).
//! These hit `count` matching requests (method, path substring). Two standing faults last
//! until disarmed: `{"kind": "small_pages", "page_size": 1}` sets the profile's page-size
//! query parameter on every list request (a `GET` whose path ends with one of the profile's
//! `list_paths`, or any `GET` without them), so two servers already span two pages; and
//! `{"kind": "rate_limit_per_second", "limit": 3}` answers the profile's 429 to requests
//! beyond 3 in any second, as a rate-limited vendor does (refused requests do not count).
//!
//! # Signed requests
//! A vendor that checks request signatures covering the `Host` header, path, query and body
//! (AWS SigV4) refuses a request whose `Host` the proxy replaced or whose query
//! `small_pages` rewrote. Its profile says `signed_requests = true`: the proxy then forwards
//! the client's `Host` (the proxy's address, which the client signed) and the request byte
//! for byte, the profile may not have `[paging]`, and the upstream must be the vendor's root
//! (a base path before the client's path would void the signature too). The upstream must
//! answer whatever `Host` it gets, as a local fake (moto) does; hop-by-hop headers, which a
//! client does not sign, are still not forwarded.
//!
//! # The fault profile
//! ```toml
//! vendor = "hetzner"
//! signed_requests = false       # optional: true for a vendor checking signatures (above)
//! [paging]                      # optional: for small_pages
//! page_size_param = "per_page"
//! list_paths = ["/servers"]
//! [rate_limit]                  # required: status 429 unless given
//! message = "limit of 3600 requests per hour reached"
//! body = '{"error": {"code": "rate_limit_exceeded", "message": "{message}"}}'
//! headers = { "RateLimit-Remaining" = "0", "RateLimit-Reset" = "{reset_epoch}" }
//! [server_error]                # required: the armed status (500, 502, 503...)
//! [unavailable]                 # optional: for status 503, else server_error's
//! [unauthorized]                # required: status 401 unless given
//! ```
//! Each fault takes `status` (not for `server_error` / `unavailable`), `message`, `body`,
//! `content_type` (default `application/json`) and `headers`; body and header values take
//! the placeholders [`PLACEHOLDERS`] (`{retry_after_secs}`, `{retry_after_ms}`,
//! `{reset_epoch}` in Unix seconds, `{reset_epoch_ms}`, `{reset_http_date}`, `{message}`,
//! `{status}`, `{reason}`, `{request_id}` a fresh UUID, `{vendor}`). Other braces are text, so
//! JSON and XML bodies are written as they are; an unknown `{name}` is a load error.
//!
//! # Recording (`GET|DELETE /_sim/requests`)
//! Every request except `/_sim`'s, oldest first, at most [`RECORDED_REQUESTS_MAX`] (the
//! oldest are dropped beyond): method, path, query as forwarded, headers with credentials
//! redacted, the body (UTF-8 lossy, at most [`RECORDED_BODY_MAX`] bytes, JSON fields named
//! like passwords or secrets redacted), the fault that acted on it, whether it was
//! forwarded, the upstream's status and the status the client got.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// What the proxy forwards to and how it renders faults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream API's base URL; a request for `/p?q` at the proxy goes to
    /// `<upstream>/p?q`.
    pub upstream: url::Url,
    /// How the vendor answers failures.
    pub profile: FaultProfile,
    /// A CA certificate (PEM) to trust for an HTTPS upstream, besides the webpki roots.
    pub upstream_ca_pem: Option<Vec<u8>>,
}

/// The placeholders fault bodies and header values may use.
pub const PLACEHOLDERS: [&str; 10] = [
    "retry_after_secs",
    "retry_after_ms",
    "reset_epoch",
    "reset_epoch_ms",
    "reset_http_date",
    "message",
    "status",
    "reason",
    "request_id",
    "vendor",
];

/// A vendor's fault profile (`faults.toml`), parsed and checked: how the vendor answers a
/// rate limit, a server error and a refused credential, and how its lists are paged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultProfile {
    vendor: String,
    /// The vendor checks request signatures that cover the `Host` header, path, query and
    /// body (AWS SigV4): the proxy forwards the client's `Host`, never rewrites the query
    /// (no `[paging]`), and needs the upstream's root as its upstream.
    #[serde(default)]
    signed_requests: bool,
    #[serde(default)]
    paging: Option<PagingProfile>,
    rate_limit: FaultTemplate,
    server_error: FaultTemplate,
    #[serde(default)]
    unavailable: Option<FaultTemplate>,
    unauthorized: FaultTemplate,
    /// The vendor's capacity refusal (`no_capacity`); a profile without it cannot arm that
    /// fault.
    #[serde(default)]
    no_capacity: Option<FaultTemplate>,
}

/// `[paging]`: what the `small_pages` fault rewrites.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagingProfile {
    /// The query parameter the vendor's list requests take for the page size (`per_page`,
    /// `limit`).
    pub page_size_param: String,
    /// A list request is a `GET` whose path ends with one of these (e.g. `/servers`,
    /// `/servers/detail`); every `GET` when empty.
    #[serde(default)]
    pub list_paths: Vec<String>,
}

/// One fault's answer: `[rate_limit]`, `[server_error]`, `[unavailable]`, `[unauthorized]`,
/// `[no_capacity]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultTemplate {
    /// The status (the armed one for server errors).
    #[serde(default)]
    pub status: Option<u16>,
    /// `{message}`'s text.
    #[serde(default)]
    pub message: Option<String>,
    /// The body template.
    #[serde(default)]
    pub body: String,
    /// `Content-Type` unless `headers` sets it; `application/json` when absent.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Header templates.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl FaultProfile {
    /// Whether the profile's rate-limit answer says when to come back (`Retry-After` or
    /// `RateLimit-Reset`). EC2's says nothing: the caller's own backoff decides.
    pub fn rate_limit_says_when(&self) -> bool {
        self.rate_limit.headers.keys().any(|name| {
            name.eq_ignore_ascii_case("retry-after") || name.eq_ignore_ascii_case("ratelimit-reset")
        })
    }

    /// Whether the profile has the vendor's capacity refusal (`[no_capacity]`), so the
    /// `no_capacity` fault can be armed.
    pub fn has_no_capacity(&self) -> bool {
        self.no_capacity.is_some()
    }

    /// Reads and checks a fault profile.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the fault profile {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in the fault profile {}", path.display()))
    }

    /// Parses and checks a fault profile's TOML.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let profile: FaultProfile = toml::from_str(text).context("not a fault profile")?;
        anyhow::ensure!(!profile.vendor.trim().is_empty(), "`vendor` is empty");
        for (section, template, fixed_status) in [
            ("rate_limit", Some(&profile.rate_limit), true),
            ("server_error", Some(&profile.server_error), false),
            ("unavailable", profile.unavailable.as_ref(), false),
            ("unauthorized", Some(&profile.unauthorized), true),
            ("no_capacity", profile.no_capacity.as_ref(), true),
        ] {
            let Some(template) = template else { continue };
            template
                .check(fixed_status)
                .with_context(|| format!("in [{section}]"))?;
        }
        anyhow::ensure!(
            !(profile.signed_requests && profile.paging.is_some()),
            "a profile with `signed_requests = true` cannot have [paging]: small_pages sets the \
             page size in the query, which the request's signature covers, and the vendor \
             would refuse every list request it rewrote"
        );
        if let Some(paging) = &profile.paging {
            anyhow::ensure!(
                !paging.page_size_param.is_empty()
                    && paging
                        .page_size_param
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.[]".contains(&b)),
                "[paging] page_size_param '{}' is not a plain query parameter name",
                paging.page_size_param
            );
        }
        Ok(profile)
    }

    /// The vendor id the profile describes.
    pub fn vendor(&self) -> &str {
        &self.vendor
    }

    /// Whether the vendor checks request signatures covering `Host`, path, query and body.
    pub fn signed_requests(&self) -> bool {
        self.signed_requests
    }

    /// `[paging]`, if the profile has it.
    pub fn paging(&self) -> Option<&PagingProfile> {
        self.paging.as_ref()
    }

    /// The template and status answering `kind` (`None` for the faults that forward).
    fn template_for(&self, kind: &ProxyFaultKind) -> Option<(&FaultTemplate, u16)> {
        match kind {
            ProxyFaultKind::RateLimit { .. } | ProxyFaultKind::RateLimitPerSecond { .. } => {
                Some((&self.rate_limit, self.rate_limit.status.unwrap_or(429)))
            }
            ProxyFaultKind::ServerError { status } => {
                let template = match (*status, &self.unavailable) {
                    (503, Some(unavailable)) => unavailable,
                    _ => &self.server_error,
                };
                Some((template, *status))
            }
            ProxyFaultKind::Unauthorized => {
                Some((&self.unauthorized, self.unauthorized.status.unwrap_or(401)))
            }
            ProxyFaultKind::NoCapacity => self
                .no_capacity
                .as_ref()
                .map(|template| (template, template.status.unwrap_or(503))),
            ProxyFaultKind::Slow { .. }
            | ProxyFaultKind::LostResponse
            | ProxyFaultKind::SmallPages { .. } => None,
        }
    }
}

impl FaultTemplate {
    fn check(&self, fixed_status: bool) -> anyhow::Result<()> {
        match (self.status, fixed_status) {
            (Some(_), false) => {
                anyhow::bail!("`status` is the armed fault's here (500, 502, 503...): remove it")
            }
            (Some(status), true) => anyhow::ensure!(
                StatusCode::from_u16(status).is_ok_and(|s| s.as_u16() >= 400),
                "`status` {status} is not an error status"
            ),
            (None, _) => {}
        }
        check_placeholders(&self.body).context("in `body`")?;
        if let Some(message) = &self.message {
            check_placeholders(message).context("in `message`")?;
        }
        let sample = Substitutions::sample();
        for (name, value) in &self.headers {
            HeaderName::from_bytes(name.as_bytes())
                .with_context(|| format!("'{name}' is not a header name"))?;
            check_placeholders(value).with_context(|| format!("in header '{name}'"))?;
            HeaderValue::from_str(&sample.apply(value))
                .with_context(|| format!("header '{name}' is not a valid header value"))?;
        }
        if let Some(content_type) = &self.content_type {
            HeaderValue::from_str(content_type)
                .with_context(|| format!("`content_type` '{content_type}' is not valid"))?;
        }
        Ok(())
    }
}

/// Every `{name}` of lowercase letters and `_` in `text` must be a known placeholder.
fn check_placeholders(text: &str) -> anyhow::Result<()> {
    for name in placeholder_names(text) {
        anyhow::ensure!(
            PLACEHOLDERS.contains(&name),
            "unknown placeholder {{{name}}} (known: {})",
            PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
        );
    }
    Ok(())
}

/// The `{name}` tokens in `text` (letters, digits and `_`, starting with a letter).
fn placeholder_names(text: &str) -> impl Iterator<Item = &str> {
    text.split('{').skip(1).filter_map(|rest| {
        let name = rest.split_once('}')?.0;
        let mut bytes = name.bytes();
        let starts_with_letter = bytes.next().is_some_and(|b| b.is_ascii_lowercase());
        (starts_with_letter
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
        .then_some(name)
    })
}

/// The values a fault's placeholders take.
struct Substitutions {
    values: Vec<(&'static str, String)>,
}

impl Substitutions {
    fn new(vendor: &str, status: u16, message: &str, retry_after: Duration) -> Self {
        let retry_after_ms = retry_after.as_millis() as u64;
        let retry_after_secs = retry_after_ms.div_ceil(1000);
        let reset = chrono::Utc::now() + chrono::Duration::milliseconds(retry_after_ms as i64);
        let reason = StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let mut substitutions = Self {
            values: vec![
                ("retry_after_secs", retry_after_secs.to_string()),
                ("retry_after_ms", retry_after_ms.to_string()),
                (
                    "reset_epoch",
                    (reset.timestamp() + i64::from(reset.timestamp_subsec_millis() > 0))
                        .to_string(),
                ),
                ("reset_epoch_ms", reset.timestamp_millis().to_string()),
                (
                    "reset_http_date",
                    reset.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
                ),
                ("status", status.to_string()),
                ("reason", reason.to_string()),
                ("request_id", uuid::Uuid::new_v4().to_string()),
                ("vendor", vendor.to_string()),
            ],
        };
        // The message may use the other placeholders ("retry after {retry_after_secs} s").
        let message = substitutions.apply(message);
        substitutions.values.push(("message", message));
        substitutions
    }

    /// Values of the right shape, to check header templates at load.
    fn sample() -> Self {
        Self::new("vendor", 500, "message", Duration::from_secs(1))
    }

    fn apply(&self, template: &str) -> String {
        let mut out = template.to_string();
        for (name, value) in &self.values {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    }
}

/// A fault the proxy can apply: the simulator's kinds ([`crate::state::FaultKind`]) and two
/// standing ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProxyFaultKind {
    /// The profile's `[rate_limit]` answer, resetting after `retry_after_secs`.
    RateLimit {
        /// Seconds until the limit resets.
        #[serde(default = "one")]
        retry_after_secs: u64,
    },
    /// The profile's `[server_error]` (or `[unavailable]` for 503) with this status.
    ServerError {
        /// 500, 502, 503...
        #[serde(default = "five_hundred")]
        status: u16,
    },
    /// The profile's `[unauthorized]` answer.
    Unauthorized,
    /// Forwarded after `delay_ms`.
    Slow {
        /// The extra delay.
        delay_ms: u64,
    },
    /// Forwarded, the whole answer read, then the connection closed without a byte.
    LostResponse,
    /// The profile's `[no_capacity]` answer (status 503 unless it sets one).
    NoCapacity,
    /// Standing: list requests ask for pages of `page_size`.
    SmallPages {
        /// The page size set on list requests.
        #[serde(default = "one_usize")]
        page_size: usize,
    },
    /// Standing: beyond `limit` requests in any second, the profile's `[rate_limit]`.
    RateLimitPerSecond {
        /// Requests allowed per second.
        limit: u32,
    },
}

impl ProxyFaultKind {
    fn is_standing(&self) -> bool {
        matches!(
            self,
            ProxyFaultKind::SmallPages { .. } | ProxyFaultKind::RateLimitPerSecond { .. }
        )
    }

    /// The kind's name, as the rule JSON and the record spell it.
    pub fn name(&self) -> &'static str {
        match self {
            ProxyFaultKind::RateLimit { .. } => "rate_limit",
            ProxyFaultKind::ServerError { .. } => "server_error",
            ProxyFaultKind::Unauthorized => "unauthorized",
            ProxyFaultKind::Slow { .. } => "slow",
            ProxyFaultKind::LostResponse => "lost_response",
            ProxyFaultKind::NoCapacity => "no_capacity",
            ProxyFaultKind::SmallPages { .. } => "small_pages",
            ProxyFaultKind::RateLimitPerSecond { .. } => "rate_limit_per_second",
        }
    }
}

impl From<crate::state::FaultKind> for ProxyFaultKind {
    fn from(kind: crate::state::FaultKind) -> Self {
        use crate::state::FaultKind;
        match kind {
            FaultKind::RateLimit { retry_after_secs } => {
                ProxyFaultKind::RateLimit { retry_after_secs }
            }
            FaultKind::ServerError { status } => ProxyFaultKind::ServerError { status },
            FaultKind::Unauthorized => ProxyFaultKind::Unauthorized,
            FaultKind::Slow { delay_ms } => ProxyFaultKind::Slow { delay_ms },
            FaultKind::LostResponse => ProxyFaultKind::LostResponse,
            FaultKind::NoCapacity => ProxyFaultKind::NoCapacity,
        }
    }
}

/// The simulator's rule, as the proxy's rule JSON spells it (the same JSON).
impl From<crate::state::FaultRule> for ProxyFaultRule {
    fn from(rule: crate::state::FaultRule) -> Self {
        Self {
            vendor: Some(rule.vendor.name().to_string()),
            kind: rule.kind.into(),
            count: rule.count,
            method: rule.method,
            path: rule.path,
        }
    }
}

fn one() -> u64 {
    1
}
fn one_u32() -> u32 {
    1
}
fn one_usize() -> usize {
    1
}
fn five_hundred() -> u16 {
    500
}

/// A fault armed at the proxy (`POST /_sim/faults`): the simulator's rule JSON with
/// `vendor` optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyFaultRule {
    /// Accepted and shown, not matched: the proxy serves one vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// What to do.
    #[serde(flatten)]
    pub kind: ProxyFaultKind,
    /// How many requests it hits (standing faults: until disarmed).
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Only requests with this method; any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests whose path contains this; any when absent.
    #[serde(default)]
    pub path: Option<String>,
}

impl ProxyFaultRule {
    /// A rule for the next `count` requests (standing kinds: until disarmed), whatever their
    /// method and path, for whichever vendor is served.
    pub fn new(kind: ProxyFaultKind, count: u32) -> Self {
        Self {
            vendor: None,
            kind,
            count,
            method: None,
            path: None,
        }
    }

    /// The rule narrowed to requests with `method` whose path contains `path`.
    pub fn only(self, method: &str, path: &str) -> Self {
        Self {
            method: Some(method.to_string()),
            path: Some(path.to_string()),
            ..self
        }
    }

    fn matches(&self, method: &str, path: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self.path.as_deref().is_none_or(|p| path.contains(p))
    }
}

/// One request the proxy received, as `GET /_sim/requests` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Position in the record, from 1.
    pub seq: u64,
    /// When the proxy received it, Unix milliseconds.
    pub at_ms: i64,
    /// The method.
    pub method: String,
    /// The path at the proxy (the upstream's base path not included).
    pub path: String,
    /// The query string as forwarded (after a `small_pages` rewrite), without `?`.
    pub query: Option<String>,
    /// The request headers (lowercase names; several values joined by `, `), credentials
    /// (`authorization`, cookies, names with `token`, `secret`, `password`, `api-key`)
    /// replaced by [`REDACTED`].
    pub headers: BTreeMap<String, String>,
    /// The body as UTF-8 (lossy), at most [`RECORDED_BODY_MAX`] bytes of it; in a JSON body,
    /// string fields named like a password or secret are [`REDACTED`].
    pub body: String,
    /// The body's full length in bytes.
    pub body_len: usize,
    /// Whether `body` holds less than the whole body.
    pub body_truncated: bool,
    /// The armed fault that acted on the request (`rate_limit`, `slow`, `lost_response`,
    /// `small_pages`, `rate_limit_per_second`...), if any.
    pub fault: Option<String>,
    /// Whether the request was sent to the upstream (false when a fault answered it).
    pub forwarded: bool,
    /// The upstream's status, once it answered.
    pub upstream_status: Option<u16>,
    /// Why the upstream gave no answer, if it failed.
    pub upstream_error: Option<String>,
    /// The status the client got; `None` while in flight and for a lost response.
    pub client_status: Option<u16>,
}

/// What redacted values read.
pub const REDACTED: &str = "<redacted>";
/// The most body bytes a record keeps.
pub const RECORDED_BODY_MAX: usize = 256 * 1024;
/// The most requests the record keeps (the oldest go first).
pub const RECORDED_REQUESTS_MAX: usize = 10_000;
/// The largest request body the proxy takes (`413` beyond).
pub const REQUEST_BODY_MAX: usize = 16 * 1024 * 1024;
/// The largest textual answer whose URLs are rewritten; larger ones pass as they are.
const REWRITE_BODY_MAX: usize = 32 * 1024 * 1024;

/// A running proxy; dropping it stops it.
#[derive(Debug)]
pub struct ProxyHandle {
    /// `http://127.0.0.1:<port>`, the proxy's base URL.
    pub url: String,
    /// The address it listens on.
    pub addr: SocketAddr,
    state: Arc<ProxyState>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ProxyHandle {
    /// The requests recorded so far, oldest first (what `GET /_sim/requests` answers).
    pub fn recorded_requests(&self) -> Vec<RecordedRequest> {
        self.state.recorded()
    }
}

/// Serves a proxy on a free port of 127.0.0.1 until the handle is dropped.
pub async fn spawn_proxy(config: ProxyConfig) -> anyhow::Result<ProxyHandle> {
    let state = Arc::new(ProxyState::new(config)?);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the fault proxy to 127.0.0.1")?;
    let addr = listener
        .local_addr()
        .context("reading the proxy's address")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = state.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(error) = serve_proxy(listener, served, shutdown).await {
            tracing::warn!(%error, "the fault proxy stopped");
        }
    });
    Ok(ProxyHandle {
        url: format!("http://{addr}"),
        addr,
        state,
        _stop: stop,
    })
}

/// Serves the proxy on `listener` until `shutdown` completes.
pub async fn serve_proxy(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, proxy_app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The proxy's router: `/_sim/faults`, `/_sim/requests`, and everything else forwarded.
pub fn proxy_app(state: Arc<ProxyState>) -> Router {
    Router::new()
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/requests", get(list_requests).delete(clear_requests))
        .route("/_sim", axum::routing::any(no_such_control))
        .route("/_sim/{*rest}", axum::routing::any(no_such_control))
        .fallback(forward)
        .with_state(state)
}

/// The proxy's state: its upstream client, armed faults and record.
#[derive(Debug)]
pub struct ProxyState {
    /// The upstream base URL without a trailing `/`.
    upstream_base: String,
    profile: FaultProfile,
    client: reqwest::Client,
    faults: Mutex<Vec<ProxyFaultRule>>,
    /// When the requests of the last second that a `rate_limit_per_second` let through
    /// arrived.
    recent: Mutex<VecDeque<Instant>>,
    records: Mutex<VecDeque<RecordedRequest>>,
    next_seq: AtomicU64,
}

impl ProxyState {
    /// A proxy with no faults armed and an empty record.
    pub fn new(config: ProxyConfig) -> anyhow::Result<Self> {
        let upstream = config.upstream;
        anyhow::ensure!(
            matches!(upstream.scheme(), "http" | "https"),
            "the upstream '{upstream}' is not an http(s) URL"
        );
        anyhow::ensure!(
            upstream.query().is_none() && upstream.fragment().is_none(),
            "the upstream '{upstream}' must be a base URL without query or fragment"
        );
        // The client signs the path it sends the proxy; a base path put before it would
        // void the signature.
        anyhow::ensure!(
            !config.profile.signed_requests || upstream.path() == "/",
            "the upstream '{upstream}' has a base path, but the fault profile of '{}' says \
             `signed_requests = true`: the signature covers the path, so point the proxy at \
             the vendor's root",
            config.profile.vendor
        );
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10));
        if let Some(pem) = &config.upstream_ca_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(pem)
                .context("reading the upstream CA certificate (PEM)")?
            {
                client = client.add_root_certificate(certificate);
            }
        }
        let client = client.build().context("building the upstream client")?;
        Ok(Self {
            upstream_base: upstream.as_str().trim_end_matches('/').to_string(),
            profile: config.profile,
            client,
            faults: Mutex::new(Vec::new()),
            recent: Mutex::new(VecDeque::new()),
            records: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(1),
        })
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Vec<ProxyFaultRule>> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn records(&self) -> std::sync::MutexGuard<'_, VecDeque<RecordedRequest>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The requests recorded so far, oldest first.
    pub fn recorded(&self) -> Vec<RecordedRequest> {
        self.records().iter().cloned().collect()
    }

    /// Takes one hit of the first counted fault matching the request.
    fn take_fault(&self, method: &str, path: &str) -> Option<ProxyFaultKind> {
        let mut faults = self.faults();
        let index = faults.iter().position(|rule| {
            !rule.kind.is_standing() && rule.count > 0 && rule.matches(method, path)
        })?;
        let rule = &mut faults[index];
        rule.count -= 1;
        let kind = rule.kind.clone();
        if rule.count == 0 {
            faults.remove(index);
        }
        Some(kind)
    }

    /// The standing fault of this kind matching the request.
    fn standing(
        &self,
        method: &str,
        path: &str,
        pick: impl Fn(&ProxyFaultKind) -> Option<u64>,
    ) -> Option<u64> {
        self.faults()
            .iter()
            .filter(|rule| rule.matches(method, path))
            .find_map(|rule| pick(&rule.kind))
    }

    /// Under a standing per-second limit: how long until the request would be let
    /// through, or `None` (and the request counted) when it is let through now.
    fn over_rate_limit(&self, method: &str, path: &str) -> Option<Duration> {
        let limit = self.standing(method, path, |kind| match kind {
            ProxyFaultKind::RateLimitPerSecond { limit } => Some(u64::from(*limit)),
            _ => None,
        })?;
        let window = Duration::from_secs(1);
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        while recent
            .front()
            .is_some_and(|at| now.duration_since(*at) >= window)
        {
            recent.pop_front();
        }
        if (recent.len() as u64) < limit {
            recent.push_back(now);
            return None;
        }
        // Refused: free again when the oldest counted request leaves the window.
        let oldest = recent.get(recent.len() - limit.max(1) as usize).copied()?;
        Some(
            window
                .saturating_sub(now.duration_since(oldest))
                .max(Duration::from_millis(1)),
        )
    }

    /// The query with the page size set, under a standing `small_pages` on a list request.
    fn paged_query(&self, method: &Method, path: &str, query: Option<&str>) -> Option<String> {
        let paging = self.profile.paging.as_ref()?;
        if method != Method::GET {
            return None;
        }
        let is_list = paging.list_paths.is_empty()
            || paging.list_paths.iter().any(|list| {
                path.trim_end_matches('/')
                    .ends_with(list.trim_end_matches('/'))
            });
        if !is_list {
            return None;
        }
        let page_size = self.standing(method.as_str(), path, |kind| match kind {
            ProxyFaultKind::SmallPages { page_size } => Some(*page_size as u64),
            _ => None,
        })?;
        Some(set_query_param(
            query.unwrap_or(""),
            &paging.page_size_param,
            &page_size.to_string(),
        ))
    }

    fn record(&self, record: RecordedRequest) {
        let mut records = self.records();
        if records.len() >= RECORDED_REQUESTS_MAX {
            records.pop_front();
        }
        records.push_back(record);
    }

    fn update_record(&self, seq: u64, update: impl FnOnce(&mut RecordedRequest)) {
        let mut records = self.records();
        if let Some(record) = records.iter_mut().rev().find(|r| r.seq == seq) {
            update(record);
        }
    }

    /// The profile's answer for `kind`, rate limits resetting after `retry_after`.
    fn render(&self, kind: &ProxyFaultKind, retry_after: Duration) -> Response {
        let Some((template, status)) = self.profile.template_for(kind) else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let message = template
            .message
            .clone()
            .unwrap_or_else(|| default_message(kind).to_string());
        let values = Substitutions::new(&self.profile.vendor, status, &message, retry_after);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = Response::new(Body::from(values.apply(&template.body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        let content_type = template
            .content_type
            .as_deref()
            .unwrap_or("application/json");
        if let Ok(value) = HeaderValue::from_str(content_type) {
            headers.insert(header::CONTENT_TYPE, value);
        }
        for (name, value) in &template.headers {
            // Checked at load with values of the same shape.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&values.apply(value)),
            ) {
                headers.insert(name, value);
            }
        }
        response
    }
}

fn default_message(kind: &ProxyFaultKind) -> &'static str {
    match kind {
        ProxyFaultKind::RateLimit { .. } | ProxyFaultKind::RateLimitPerSecond { .. } => {
            "rate limit exceeded"
        }
        ProxyFaultKind::ServerError { status: 503 } => "service unavailable",
        ProxyFaultKind::Unauthorized => "unauthorized",
        ProxyFaultKind::NoCapacity => "no capacity",
        _ => "internal server error",
    }
}

/// `query` with `name=value` replacing every `name=...` in it, or appended; the other
/// parameters stay byte for byte.
fn set_query_param(query: &str, name: &str, value: &str) -> String {
    let mut replaced = false;
    let mut parts: Vec<String> = Vec::new();
    for part in query.split('&').filter(|part| !part.is_empty()) {
        let key = part.split_once('=').map_or(part, |(key, _)| key);
        if key == name {
            if !replaced {
                parts.push(format!("{name}={value}"));
                replaced = true;
            }
        } else {
            parts.push(part.to_string());
        }
    }
    if !replaced {
        parts.push(format!("{name}={value}"));
    }
    parts.join("&")
}

/// Request headers not forwarded: the connection's own, and those the client sets anew.
const UNFORWARDED_REQUEST_HEADERS: [&str; 10] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// Answer headers not passed back.
const UNFORWARDED_RESPONSE_HEADERS: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_credential_header(name: &str) -> bool {
    matches!(
        name,
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token",
        "secret",
        "password",
        "api-key",
        "apikey",
        "signature",
    ]
    .iter()
    .any(|word| name.contains(word))
}

fn recorded_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut recorded: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let text = if is_credential_header(name.as_str()) {
            REDACTED.to_string()
        } else {
            String::from_utf8_lossy(value.as_bytes()).into_owned()
        };
        recorded
            .entry(name.as_str().to_string())
            .and_modify(|joined| {
                if text != REDACTED {
                    joined.push_str(", ");
                    joined.push_str(&text);
                }
            })
            .or_insert(text);
    }
    recorded
}

/// The body as the record keeps it: JSON with password and secret fields redacted, cut at
/// [`RECORDED_BODY_MAX`].
fn recorded_body(body: &Bytes) -> (String, bool) {
    if let Ok(mut value) = serde_json::from_slice::<Value>(body)
        && redact_json(&mut value)
    {
        let text = value.to_string();
        let truncated = text.len() > RECORDED_BODY_MAX;
        return (cut_utf8(text, RECORDED_BODY_MAX), truncated);
    }
    let kept = &body[..body.len().min(RECORDED_BODY_MAX)];
    (
        String::from_utf8_lossy(kept).into_owned(),
        body.len() > RECORDED_BODY_MAX,
    )
}

fn cut_utf8(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Redacts string fields named like a password or secret; whether it changed anything.
fn redact_json(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (key, field) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if (key.contains("password") || key.contains("secret")) && field.is_string() {
                    *field = Value::String(REDACTED.into());
                    changed = true;
                } else {
                    changed |= redact_json(field);
                }
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |c, item| redact_json(item) | c),
        _ => false,
    }
}

fn is_textual(headers: &reqwest::header::HeaderMap) -> bool {
    if headers.contains_key(header::CONTENT_ENCODING) {
        return false;
    }
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let ct = ct.to_ascii_lowercase();
            ct.contains("json") || ct.contains("xml") || ct.starts_with("text/")
        })
}

fn proxy_error(status: StatusCode, reason: &str, message: String) -> Response {
    let mut response = (
        status,
        Json(json!({ "error": format!("vendor-sim proxy: {message}") })),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(reason) {
        response.headers_mut().insert("x-vendor-sim-proxy", value);
    }
    response
}

/// Every request outside `/_sim`: faults, then the upstream.
async fn forward(State(proxy): State<Arc<ProxyState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let body = match axum::body::to_bytes(body, REQUEST_BODY_MAX).await {
        Ok(body) => body,
        Err(error) => {
            return proxy_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request-too-large",
                format!("reading the request body (at most {REQUEST_BODY_MAX} bytes): {error}"),
            );
        }
    };
    let seq = proxy.next_seq.fetch_add(1, Ordering::Relaxed);
    let proxy_base = client_origin(&parts);
    let (recorded_body, body_truncated) = recorded_body(&body);
    let mut record = RecordedRequest {
        seq,
        at_ms: chrono::Utc::now().timestamp_millis(),
        method: method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_string),
        headers: recorded_headers(&parts.headers),
        body: recorded_body,
        body_len: body.len(),
        body_truncated,
        fault: None,
        forwarded: false,
        upstream_status: None,
        upstream_error: None,
        client_status: None,
    };

    let fault = proxy.take_fault(method.as_str(), &path);
    let mut lose_answer = false;
    match &fault {
        Some(ProxyFaultKind::Slow { delay_ms }) => {
            record.fault = Some("slow".into());
            tokio::time::sleep(Duration::from_millis(*delay_ms)).await;
        }
        Some(ProxyFaultKind::LostResponse) => {
            record.fault = Some("lost_response".into());
            lose_answer = true;
        }
        Some(kind) => {
            let retry_after = match kind {
                ProxyFaultKind::RateLimit { retry_after_secs } => {
                    Duration::from_secs(*retry_after_secs)
                }
                _ => Duration::ZERO,
            };
            let response = proxy.render(kind, retry_after);
            tracing::info!(vendor = proxy.profile.vendor, kind = kind.name(), %method, path, "injecting a fault");
            record.fault = Some(kind.name().into());
            record.client_status = Some(response.status().as_u16());
            proxy.record(record);
            return response;
        }
        None => {}
    }
    if fault.is_none()
        && let Some(retry_after) = proxy.over_rate_limit(method.as_str(), &path)
    {
        let kind = ProxyFaultKind::RateLimitPerSecond { limit: 0 };
        let response = proxy.render(&kind, retry_after);
        record.fault = Some(kind.name().into());
        record.client_status = Some(response.status().as_u16());
        proxy.record(record);
        return response;
    }
    if let Some(query) = proxy.paged_query(&method, &path, parts.uri.query()) {
        record.fault.get_or_insert_with(|| "small_pages".into());
        record.query = Some(query);
    }
    record.forwarded = true;
    let query = record.query.clone();
    proxy.record(record);

    let mut target = format!("{}{}", proxy.upstream_base, path);
    if let Some(query) = &query {
        target.push('?');
        target.push_str(query);
    }
    let mut headers = parts.headers;
    for name in UNFORWARDED_REQUEST_HEADERS {
        // A signed request's signature covers the Host the client addressed.
        if name == "host" && proxy.profile.signed_requests {
            continue;
        }
        headers.remove(name);
    }
    let sent = proxy
        .client
        .request(method.clone(), &target)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let upstream = match sent {
        Ok(upstream) => upstream,
        Err(error) => {
            let message = format!("the upstream {target} did not answer: {error:#}");
            tracing::warn!(%message, "fault proxy");
            let response = proxy_error(StatusCode::BAD_GATEWAY, "upstream-error", message.clone());
            proxy.update_record(seq, |record| {
                record.upstream_error = Some(message);
                record.client_status = Some(StatusCode::BAD_GATEWAY.as_u16());
            });
            return response;
        }
    };
    let status = upstream.status();
    proxy.update_record(seq, |record| record.upstream_status = Some(status.as_u16()));

    if lose_answer {
        // The upstream has done the work; reading its whole answer makes sure of it.
        let read = upstream.bytes().await;
        tracing::info!(
            vendor = proxy.profile.vendor,
            %method,
            path,
            status = status.as_u16(),
            read_whole_answer = read.is_ok(),
            "injecting a fault: forwarded, dropping the connection unanswered"
        );
        return crate::faults::lost_response();
    }

    let response = relay(&proxy, upstream, &proxy_base).await;
    proxy.update_record(seq, |record| {
        record.client_status = Some(response.status().as_u16())
    });
    response
}

/// The proxy's origin as the client addressed it (`http://<Host>`), for rewriting the
/// upstream's URLs to it; empty when the request names no host.
fn client_origin(parts: &axum::http::request::Parts) -> String {
    let host = parts.uri.authority().map(|a| a.to_string()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    host.map(|host| format!("http://{host}"))
        .unwrap_or_default()
}

/// The upstream's answer as the client gets it: status and headers as they are, textual
/// bodies with the upstream's base URL rewritten to the proxy's, others streamed.
async fn relay(proxy: &ProxyState, upstream: reqwest::Response, proxy_base: &str) -> Response {
    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    for name in UNFORWARDED_RESPONSE_HEADERS {
        headers.remove(name);
    }
    let rewrite = !proxy_base.is_empty() && proxy_base != proxy.upstream_base;
    if rewrite
        && let Some(location) = headers.get(header::LOCATION)
        && let Ok(text) = location.to_str()
        && text.starts_with(&proxy.upstream_base)
        && let Ok(value) =
            HeaderValue::from_str(&text.replacen(&proxy.upstream_base, proxy_base, 1))
    {
        headers.insert(header::LOCATION, value);
    }
    let textual = rewrite && is_textual(&headers);
    let mut stream = upstream.bytes_stream();
    let body = if textual {
        let mut read: Vec<Bytes> = Vec::new();
        let mut len = 0;
        let mut whole = true;
        let mut failed = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    len += chunk.len();
                    read.push(chunk);
                    if len > REWRITE_BODY_MAX {
                        whole = false;
                        break;
                    }
                }
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        if let Some(error) = failed {
            tracing::warn!(%error, "fault proxy: the upstream's answer broke off");
            return crate::faults::lost_response();
        }
        if whole {
            let joined: Vec<u8> = read.concat();
            let rewritten = match String::from_utf8(joined) {
                Ok(text) if text.contains(&proxy.upstream_base) => {
                    Bytes::from(text.replace(&proxy.upstream_base, proxy_base))
                }
                Ok(text) => Bytes::from(text),
                Err(error) => Bytes::from(error.into_bytes()),
            };
            headers.remove(header::CONTENT_LENGTH);
            Body::from(rewritten)
        } else {
            let prefix = futures_util::stream::iter(read.into_iter().map(Ok));
            Body::from_stream(prefix.chain(stream))
        }
    } else {
        Body::from_stream(stream)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

async fn no_such_control() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "the fault proxy serves /_sim/faults and /_sim/requests only"})),
    )
        .into_response()
}

async fn list_faults(State(proxy): State<Arc<ProxyState>>) -> Json<Value> {
    Json(json!({ "faults": *proxy.faults() }))
}

async fn add_fault(
    State(proxy): State<Arc<ProxyState>>,
    rule: Result<Json<ProxyFaultRule>, JsonRejection>,
) -> Response {
    let rule = match rule {
        Ok(Json(rule)) => rule,
        Err(rejection) => {
            return crate::conventions::unprocessable(rejection.body_text());
        }
    };
    let refusal = match &rule.kind {
        ProxyFaultKind::SmallPages { .. } if proxy.profile.paging.is_none() => Some(format!(
            "the fault profile of '{}' has no [paging] page_size_param{}",
            proxy.profile.vendor,
            if proxy.profile.signed_requests {
                " (its requests are signed: a changed query would void the signature)"
            } else {
                ""
            }
        )),
        ProxyFaultKind::SmallPages { page_size: 0 } => Some("page_size must be at least 1".into()),
        ProxyFaultKind::NoCapacity if proxy.profile.no_capacity.is_none() => Some(format!(
            "the fault profile of '{}' has no [no_capacity] answer",
            proxy.profile.vendor
        )),
        ProxyFaultKind::RateLimitPerSecond { limit: 0 } => Some("limit must be at least 1".into()),
        _ => None,
    };
    if let Some(error) = refusal {
        return crate::conventions::unprocessable(error);
    }
    let mut faults = proxy.faults();
    faults.push(rule);
    (StatusCode::CREATED, Json(json!({ "faults": *faults }))).into_response()
}

async fn clear_faults(State(proxy): State<Arc<ProxyState>>) -> StatusCode {
    proxy.faults().clear();
    proxy
        .recent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    StatusCode::NO_CONTENT
}

async fn list_requests(State(proxy): State<Arc<ProxyState>>) -> Json<Vec<RecordedRequest>> {
    Json(proxy.recorded())
}

async fn clear_requests(State(proxy): State<Arc<ProxyState>>) -> StatusCode {
    proxy.records().clear();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page size replaces the vendor's parameter, or is added, and nothing else moves.
    #[test]
    fn sets_the_page_size_keeping_other_parameters_byte_for_byte() {
        assert_eq!(
            set_query_param("label_selector=a%3Db&page=2&per_page=50", "per_page", "1"),
            "label_selector=a%3Db&page=2&per_page=1"
        );
        assert_eq!(set_query_param("", "limit", "1"), "limit=1");
        assert_eq!(
            set_query_param("marker=x+y&per_page_x=3", "per_page", "1"),
            "marker=x+y&per_page_x=3&per_page=1"
        );
    }

    /// Only `{lowercase_name}` is a placeholder: JSON and XML bodies are plain text.
    #[test]
    fn finds_placeholders_but_not_json_braces() {
        let body = r#"{"error": {"code": "x", "message": "{message}", "details": {}}, "a": {reset_epoch}}"#;
        assert_eq!(
            placeholder_names(body).collect::<Vec<_>>(),
            ["message", "reset_epoch"]
        );
        assert!(check_placeholders("{retry_after}").is_err());
    }

    /// Passwords and secrets in JSON request bodies, and credential headers, are redacted.
    #[test]
    fn redacts_credentials() {
        let body = Bytes::from(
            r#"{"auth": {"identity": {"password": {"user": {"name": "u", "password": "pw"}}}}, "user_data": "x"}"#,
        );
        let (text, truncated) = recorded_body(&body);
        assert!(!truncated);
        assert!(!text.contains("\"pw\""), "{text}");
        assert!(text.contains("\"user_data\":\"x\""), "{text}");
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        headers.insert("x-auth-token", HeaderValue::from_static("tok"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        let recorded = recorded_headers(&headers);
        assert_eq!(recorded["authorization"], REDACTED);
        assert_eq!(recorded["x-auth-token"], REDACTED);
        assert_eq!(recorded["content-type"], "application/json");
    }
}
