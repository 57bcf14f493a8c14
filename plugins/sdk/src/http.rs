//! JSON over wasi:http with the error mapping every vendor plugin needs.
//!
//! [`ApiClient::call`] sends a request and either parses the JSON answer or maps the failure
//! to a [`ProviderError`]: no answer -> `transient` (or `internal` when the host denied the
//! destination), 401/403 -> `unauthorized`, 404 -> `not-found`, 400/409/422 ->
//! `invalid-request`, 429 -> `rate-limited` with the delay from `Retry-After` or
//! `RateLimit-Reset`, 5xx -> `transient`. [`ApiClient::send_raw`] sends a body already
//! encoded (a form, for AWS's Query API) with the same headers, length and retries.
//!
//! No status says that the vendor is out of capacity (it answers 409, 412, 422 or 503 with
//! a code of its own): a plugin that reads its vendor's capacity code in an error body
//! ([`ApiResponse::body`]) turns the mapped error into `no-capacity` with [`no_capacity`],
//! its message kept.
//!
//! A connection dropped before any answer is tried again for GET, HEAD, PUT and DELETE:
//! twice, after 50 and 250 ms ([`RETRY_PAUSES_MS`]: three tries in all); POST and PATCH
//! are sent once (a create's answer may be lost after the server was made: the look-up
//! before the next create finds it). A request with a body says its `content-length`
//! (a body-less one other than GET and HEAD says 0): nothing goes out chunked.
//!
//! Error messages reach the tenant as the order's fault, so they never carry an address:
//! a request is named by its method and path only (`POST /v3/auth/tokens`, not the
//! vendor's or an internal endpoint's origin), and any URL in a vendor's error body is cut
//! to its path the same way ([`redact_urls`]).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use wstd::http::{Body, Client, HeaderMap, Method, Request};

use crate::ProviderError;

/// Reads a vendor's error body into a short reason, if it has the vendor's shape.
pub type ReasonParser = fn(&str) -> Option<String>;

/// A plugin's own mapping of its vendor's non-2xx answer to `method path` (the method, the
/// path or URL, the answer): for a vendor whose error codes decide before the status (ARM,
/// Compute Engine), ending in [`status_error`] when they decide nothing.
pub type ErrorMapper = fn(&str, &str, &ApiResponse) -> ProviderError;

/// A vendor API at a base URL, with fixed headers (auth, accept).
pub struct ApiClient {
    base_url: String,
    headers: Vec<(String, String)>,
    reason: ReasonParser,
    /// The plugin's mapping of failures; none: [`status_error`] of [`error_detail`].
    map_error: Option<ErrorMapper>,
    http: Client,
}

/// A vendor's answer, success or not.
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub body: String,
}

impl ApiResponse {
    /// An answer with `status` and `body` (its text: a `str`, a `serde_json::Value`) and no
    /// headers: what a plugin's tests give its error mapping.
    pub fn new(status: u16, body: impl ToString) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: body.to_string(),
        }
    }

    /// The answer with the header `name: value` added (a 429's `retry-after`, in a
    /// plugin's tests of its error mapping); panics on a value that cannot be a header's.
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        let value = value.parse().expect("a header value");
        self.headers.insert(name, value);
        self
    }
}

impl ApiClient {
    /// A client for `base_url` (a trailing `/` is ignored); `reason` reads error bodies.
    pub fn new(base_url: &str, reason: ReasonParser) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            headers: vec![("accept".into(), "application/json".into())],
            reason,
            map_error: None,
            http: Client::new(),
        }
    }

    /// Maps failures with `map_error` ([`ApiClient::error`]) instead of by their status.
    pub fn with_error_mapper(mut self, map_error: ErrorMapper) -> Self {
        self.map_error = Some(map_error);
        self
    }

    /// Adds a header sent with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn with_bearer(self, token: &str) -> Self {
        self.with_header("authorization", &format!("Bearer {token}"))
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends a request with a JSON `body`; a missing answer is an error, any HTTP status
    /// is not.
    pub async fn send<B: Serialize>(
        &self,
        method: Method,
        path_or_url: &str,
        body: Option<&B>,
        extra_headers: &[(&str, &str)],
    ) -> Result<ApiResponse, ProviderError> {
        let body = match body {
            Some(body) => Some(serde_json::to_vec(body).map_err(|e| {
                ProviderError::Internal(format!(
                    "encoding the body of {method} {}: {e}",
                    path_of(path_or_url)
                ))
            })?),
            None => None,
        };
        let content_type = body.as_ref().map(|_| "application/json");
        self.send_raw(method, path_or_url, content_type, body, extra_headers)
            .await
    }

    /// Sends a request with a body already encoded (a form, XML: whatever `content_type`
    /// names; `None` sends no `content-type`), with [`ApiClient::send`]'s headers, length
    /// and retries; a missing answer is an error, any HTTP status is not. `extra_headers`
    /// replace the client's headers of the same name (an XML API's `accept`). A retry sends
    /// the same headers again, so a signature made over them (AWS SigV4) stays valid.
    pub async fn send_raw(
        &self,
        method: Method,
        path_or_url: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Result<ApiResponse, ProviderError> {
        let url = if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{path_or_url}", self.base_url)
        };
        let build = || self.build(&method, &url, content_type, body.clone(), extra_headers);
        // A connection dropped before any answer (a loaded server, a proxy, a reused
        // port): an idempotent request is sent again, twice at most, after a short pause.
        let mut response = self.http.send(build()?).await;
        for pause_ms in RETRY_PAUSES_MS {
            match &response {
                Err(error) if is_idempotent(&method) && !is_denied(error) => {
                    wstd::task::sleep(wstd::time::Duration::from_millis(pause_ms)).await;
                    response = self.http.send(build()?).await;
                }
                _ => break,
            }
        }
        let mut response = response.map_err(|e| no_answer(&method, &url, &e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .str_contents()
            .await
            .map_err(|e| {
                ProviderError::Transient(redact_urls(&format!(
                    "reading the answer to {method} {}: {e}",
                    path_of(&url)
                )))
            })?
            .to_string();
        Ok(ApiResponse {
            status,
            headers: response.headers().clone(),
            body,
        })
    }

    /// One request with the client's headers, `extra_headers` (which replace the client's
    /// headers of the same name) and a `body` of `content_type`.
    fn build(
        &self,
        method: &Method,
        url: &str,
        content_type: Option<&str>,
        body: Option<Vec<u8>>,
        extra_headers: &[(&str, &str)],
    ) -> Result<Request<Body>, ProviderError> {
        let mut request = Request::builder().method(method.clone()).uri(url);
        let replaced = |name: &str| {
            extra_headers
                .iter()
                .any(|(extra, _)| extra.eq_ignore_ascii_case(name))
        };
        for (name, value) in self.headers.iter().filter(|(name, _)| !replaced(name)) {
            request = request.header(name.as_str(), value.as_str());
        }
        for (name, value) in extra_headers {
            request = request.header(*name, *value);
        }
        request = request.header(
            "user-agent",
            concat!("provisioner-plugin-sdk/", env!("CARGO_PKG_VERSION")),
        );
        // The body's length goes with it: without one the request is sent chunked, which
        // some vendors' APIs and proxies refuse. GET and HEAD have no body and say nothing.
        match body {
            Some(bytes) => {
                if let Some(content_type) = content_type {
                    request = request.header("content-type", content_type);
                }
                request
                    .header("content-length", bytes.len())
                    .body(Body::from(bytes))
            }
            None if matches!(*method, Method::GET | Method::HEAD) => request.body(Body::empty()),
            None => request.header("content-length", 0).body(Body::empty()),
        }
        .map_err(|e| ProviderError::Internal(format!("building {method} {}: {e}", path_of(url))))
    }

    /// Sends a request and parses a 2xx JSON answer; any other answer becomes the
    /// matching [`ProviderError`].
    pub async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ProviderError> {
        let response = self.send(method.clone(), path, body, &[]).await?;
        self.parse(&method, path, response)
    }

    /// Like [`ApiClient::call`], with extra headers for this request.
    pub async fn call_with<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        headers: &[(&str, &str)],
    ) -> Result<T, ProviderError> {
        let response = self.send(method.clone(), path, body, headers).await?;
        self.parse(&method, path, response)
    }

    /// Parses a 2xx JSON answer (an empty body reads as `null`), or maps the failure.
    pub fn parse<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        response: ApiResponse,
    ) -> Result<T, ProviderError> {
        if (200..300).contains(&response.status) {
            let text = if response.body.trim().is_empty() {
                "null"
            } else {
                &response.body
            };
            return serde_json::from_str(text).map_err(|e| {
                ProviderError::Internal(format!(
                    "the answer to {method} {} is not the JSON this plugin expects: {e}",
                    path_of(path)
                ))
            });
        }
        Err(self.error(method, path, &response))
    }

    /// The [`ProviderError`] for a non-2xx answer: the plugin's mapping
    /// ([`ApiClient::with_error_mapper`]), else [`status_error`] with [`error_detail`]'s
    /// message.
    pub fn error(&self, method: &Method, path: &str, response: &ApiResponse) -> ProviderError {
        if let Some(map_error) = self.map_error {
            return map_error(method.as_str(), path, response);
        }
        let detail = error_detail(method.as_str(), path, response, self.reason);
        status_error(response, detail)
    }
}

/// The [`ProviderError`] for a non-2xx `response` by its status alone, carrying `detail`:
/// 401/403 -> `unauthorized`, 404 -> `not-found`, 429 -> `rate-limited` (with
/// [`retry_after_ms`]), 400/409/422 -> `invalid-request`, 5xx -> `transient`, anything else
/// `internal`. What [`ApiClient::error`] answers, and where a plugin's own mapping ends
/// once its vendor's error codes decided nothing.
pub fn status_error(response: &ApiResponse, detail: String) -> ProviderError {
    match response.status {
        401 | 403 => ProviderError::Unauthorized(detail),
        404 => ProviderError::NotFound(detail),
        429 => ProviderError::RateLimited(retry_after_ms(&response.headers)),
        400 | 409 | 422 => ProviderError::InvalidRequest(detail),
        500..=599 => ProviderError::Transient(detail),
        _ => ProviderError::Internal(detail),
    }
}

/// [`status_error`] for a vendor whose requests carry preconditions (ARM's `If-Match`,
/// Compute Engine's fingerprints): a 412, a precondition the vendor found false, is the
/// request's fault, `invalid-request`, not the vendor's.
pub fn precondition_or_status_error(response: &ApiResponse, detail: String) -> ProviderError {
    if response.status == 412 {
        ProviderError::InvalidRequest(detail)
    } else {
        status_error(response, detail)
    }
}

/// The message of a non-2xx answer to `method path`, as every [`ProviderError`] made of one
/// carries it: `GET /servers/7 -> 404: <reason>`, the reason being what `reason` reads in
/// the body, else the body's first 200 characters. It names no origin and no query
/// ([`path_of`]), and any URL in the reason is cut to its path ([`redact_urls`]).
pub fn error_detail(
    method: &str,
    path: &str,
    response: &ApiResponse,
    reason: ReasonParser,
) -> String {
    let reason =
        reason(&response.body).unwrap_or_else(|| response.body.chars().take(200).collect());
    format!(
        "{method} {} -> {}: {}",
        path_of(path),
        response.status,
        redact_urls(&reason)
    )
}

/// `error` as `no-capacity`, with its message: for an answer whose vendor code says the
/// vendor cannot place the server there now (Hetzner's `resource_unavailable`), which
/// [`ApiClient::error`] mapped by its status alone (a 412 to `internal`, a 422 to
/// `invalid-request`, a 503 to `transient`). `rate-limited` carries no message and stays as
/// it is: the vendor asked to slow down, whatever else it said.
pub fn no_capacity(error: ProviderError) -> ProviderError {
    match error {
        ProviderError::InvalidRequest(message)
        | ProviderError::Unauthorized(message)
        | ProviderError::NotFound(message)
        | ProviderError::QuotaExceeded(message)
        | ProviderError::Transient(message)
        | ProviderError::Internal(message)
        | ProviderError::NoCapacity(message) => ProviderError::NoCapacity(message),
        limited @ ProviderError::RateLimited(_) => limited,
    }
}

/// The pauses before an idempotent request is sent again after a dropped connection: one
/// per retry (two retries, three tries in all).
pub const RETRY_PAUSES_MS: [u64; 2] = [50, 250];

/// GET, HEAD, PUT and DELETE may be sent twice with the same effect.
fn is_idempotent(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::PUT, Method::DELETE].contains(method)
}

/// Whether the host refused the destination (then trying again cannot help).
fn is_denied(error: &wstd::http::Error) -> bool {
    format!("{error:#}").contains("HttpRequestDenied")
}

/// No answer at all: the host refused the destination, or the network failed.
fn no_answer(method: &Method, url: &str, error: &wstd::http::Error) -> ProviderError {
    let detail = redact_urls(&format!("{error:#}"));
    let path = path_of(url);
    if is_denied(error) {
        ProviderError::Internal(format!(
            "the host denied {method} {path}: the manifest's allowed_hosts does not grant its \
             origin"
        ))
    } else {
        ProviderError::Transient(format!("{method} {path} got no answer: {detail}"))
    }
}

/// Milliseconds to wait after a 429: `Retry-After` (seconds) or `RateLimit-Reset` (a Unix
/// time in seconds), whichever the vendor sent.
pub fn retry_after_ms(headers: &HeaderMap) -> Option<u64> {
    let header =
        |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
    if let Some(seconds) = header("retry-after") {
        return Some(seconds * 1000);
    }
    let reset = header("ratelimit-reset")?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some((reset * 1000).saturating_sub(now_ms))
}

/// The path of `url` without its origin and query (`https://h:1/v3/auth/tokens?x` ->
/// `/v3/auth/tokens`); a path stays as it is, without its query.
pub fn path_of(url: &str) -> &str {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
        None => url,
    };
    path.split(['?', '#']).next().unwrap_or(path)
}

/// `text` with every `http://` or `https://` URL in it cut to its path: messages shown to
/// tenants carry no host names, addresses or ports.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(start) = ["http://", "https://"]
            .iter()
            .filter_map(|scheme| lower.find(scheme))
            .min()
        else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')' | ']'))
            .unwrap_or(url.len());
        out.push_str(path_of(&url[..end]));
        rest = &url[end..];
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub use wstd::http::Method as HttpMethod;

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths keep no origin and no query; URLs in text are cut to their paths.
    #[test]
    fn messages_carry_no_origins() {
        assert_eq!(
            path_of("http://127.0.0.1:8090/openstack/identity/v3/auth/tokens"),
            "/openstack/identity/v3/auth/tokens"
        );
        assert_eq!(path_of("https://api.example"), "/");
        assert_eq!(path_of("/servers?label_selector=x"), "/servers");
        assert_eq!(
            redact_urls("POST http://10.0.0.5:5000/v3/auth/tokens failed (see HTTPS://x.y/z)."),
            "POST /v3/auth/tokens failed (see /z)."
        );
        assert_eq!(redact_urls("no url here"), "no url here");
    }

    /// A capacity refusal keeps the message the status mapping gave it, whatever case that
    /// was; a rate limit stays one.
    #[test]
    fn capacity_refusals_keep_their_message() {
        let message = || "POST /servers -> 412: placement_error: no room".to_string();
        for mapped in [
            ProviderError::Internal(message()),
            ProviderError::InvalidRequest(message()),
            ProviderError::Transient(message()),
            ProviderError::NoCapacity(message()),
        ] {
            assert!(matches!(no_capacity(mapped), ProviderError::NoCapacity(m) if m == message()));
        }
        assert!(matches!(
            no_capacity(ProviderError::RateLimited(Some(1000))),
            ProviderError::RateLimited(Some(1000))
        ));
    }

    /// A 412 is the request's precondition failing, where the vendor takes preconditions;
    /// every other status maps as [`status_error`] maps it (412 included, elsewhere).
    #[test]
    fn preconditions_that_fail_are_the_requests_fault() {
        let case = |status: u16, map: fn(&ApiResponse, String) -> ProviderError| {
            map(&ApiResponse::new(status, ""), "detail".into()).case_name()
        };
        assert_eq!(case(412, precondition_or_status_error), "invalid-request");
        assert_eq!(case(412, status_error), "internal");
        for status in [400, 401, 404, 409, 429, 500, 418] {
            assert_eq!(
                case(status, precondition_or_status_error),
                case(status, status_error)
            );
        }
    }
}
