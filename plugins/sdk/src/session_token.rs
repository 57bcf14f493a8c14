//! A vendor's session token: asked for at an OAuth 2.0 token endpoint, sent with every
//! request of a call, and renewed once when the vendor answers 401.
//!
//! Vendors that log in (an OAuth access token at Azure and Google, a Keystone token at
//! OpenStack) hand out a token the plugin keeps in the host's cache ([`crate::cache`]) until
//! shortly before it expires. The vendor may still refuse it (revoked, clocks apart): then
//! [`SessionToken::send`] asks the plugin's `renew` (forget the cached token, log in again)
//! and sends the request once more with the fresh token, which serves the rest of the call
//! ([`SessionToken::call`] parses the answer as well, as [`ApiClient::call`] does).
//! Where the login is an OAuth 2.0 token request (a client-credentials grant, a JWT bearer
//! exchange), [`request_oauth_token`] sends it and reads the answer ([`AccessToken`]), and
//! [`OAuthError`] reads the endpoint's refusals. [`keep_until_expiry`] keeps a token in the
//! cache for its lifetime less [`EXPIRY_MARGIN`].
//!
//! ```ignore
//! use provider_sdk::session_token::SessionToken;
//! let token = SessionToken::bearer(cached_or_fresh_token);
//! let response = token
//!     .send(&http, Method::GET, "/servers", None::<&()>, async || {
//!         forget_cached_token();
//!         Ok(log_in().await?.access_token)
//!     })
//!     .await?;
//! ```
//!
//! The token is a secret: [`SessionToken`] has no `Debug`, and it is only ever sent.

use std::cell::RefCell;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::http::{ApiClient, ApiResponse, HttpMethod, ReasonParser, path_of, redact_urls};
use crate::{ProviderError, cache};

/// The token of one call's session and the header it travels in. No `Debug`: it holds the
/// token.
pub struct SessionToken {
    /// The request header that carries it (`authorization`, `x-auth-token`).
    header: &'static str,
    /// What precedes the token in the header's value (`Bearer `, or nothing).
    scheme: &'static str,
    /// The token now: the one the call started with, or the one `renew` gave.
    token: RefCell<String>,
}

impl SessionToken {
    /// `token` sent as `authorization: Bearer <token>` (OAuth 2.0 access tokens).
    pub fn bearer(token: String) -> Self {
        Self {
            header: "authorization",
            scheme: "Bearer ",
            token: RefCell::new(token),
        }
    }

    /// `token` sent as it is in the header `header` (OpenStack's `x-auth-token`).
    pub fn in_header(header: &'static str, token: String) -> Self {
        Self {
            header,
            scheme: "",
            token: RefCell::new(token),
        }
    }

    /// Sends a request with the token ([`ApiClient::send`]); a 401 calls `renew` (which
    /// forgets the cached token and gets a fresh one), keeps what it gives and sends the
    /// request once more with it. Any other status, and the second answer whatever its
    /// status, is returned as it is.
    pub async fn send<B: Serialize>(
        &self,
        http: &ApiClient,
        method: HttpMethod,
        path_or_url: &str,
        body: Option<&B>,
        renew: impl AsyncFnOnce() -> Result<String, ProviderError>,
    ) -> Result<ApiResponse, ProviderError> {
        let value = |token: &str| format!("{}{token}", self.scheme);
        let token = self.token.borrow().clone();
        let response = http
            .send(
                method.clone(),
                path_or_url,
                body,
                &[(self.header, &value(&token))],
            )
            .await?;
        if response.status != 401 {
            return Ok(response);
        }
        let fresh = renew().await?;
        *self.token.borrow_mut() = fresh.clone();
        http.send(method, path_or_url, body, &[(self.header, &value(&fresh))])
            .await
    }

    /// [`SessionToken::send`], then the answer parsed as [`ApiClient::parse`] parses it: a
    /// 2xx JSON answer as `T`, any other mapped to a [`ProviderError`] (by the client's
    /// [`crate::http::ErrorMapper`], if it has one).
    pub async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        http: &ApiClient,
        method: HttpMethod,
        path_or_url: &str,
        body: Option<&B>,
        renew: impl AsyncFnOnce() -> Result<String, ProviderError>,
    ) -> Result<T, ProviderError> {
        let response = self
            .send(http, method.clone(), path_or_url, body, renew)
            .await?;
        http.parse(&method, path_or_url, response)
    }
}

/// Sends an OAuth 2.0 token request (RFC 6749 section 4: `form` is the grant's
/// `application/x-www-form-urlencoded` body) to `token_url` and parses the 2xx answer as `T`
/// (the token and its lifetime, in the endpoint's shape). A refusal (400, 401 or 403: a bad
/// grant, client or secret) is `unauthorized`, `the <grant> (POST <path>) was refused:
/// <reason>`, the reason being what `reason` reads in the endpoint's error body, else the
/// status; 429 and 5xx map as [`ApiClient`] maps them. The endpoint is named by its path
/// only.
pub async fn request_oauth_token<T: DeserializeOwned>(
    token_url: &str,
    form: String,
    grant: &str,
    reason: ReasonParser,
) -> Result<T, ProviderError> {
    let http = ApiClient::new("", reason);
    let response = http
        .send_raw(
            HttpMethod::POST,
            token_url,
            Some("application/x-www-form-urlencoded"),
            Some(form.into_bytes()),
            &[],
        )
        .await?;
    let path = path_of(token_url).to_string();
    if matches!(response.status, 400 | 401 | 403) {
        let why = reason(&response.body).unwrap_or_else(|| format!("status {}", response.status));
        return Err(ProviderError::Unauthorized(format!(
            "the {grant} (POST {path}) was refused: {}",
            redact_urls(&why)
        )));
    }
    http.parse(&HttpMethod::POST, &path, response)
}

/// How long before its expiry a cached token is no longer used ([`keep_until_expiry`]), so
/// a call never starts with a token about to lapse (and clocks a little apart do not
/// matter).
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// An OAuth 2.0 access token, as a plugin keeps it in the cache (`{"access_token": ...}`).
/// No `Debug`: it is a secret.
#[derive(Serialize, Deserialize)]
pub struct AccessToken {
    /// The bearer token.
    pub access_token: String,
}

/// Keeps `token` in the host's cache under `key` for its `lifetime` (what the endpoint said,
/// from now) less [`EXPIRY_MARGIN`]: not at all when the lifetime is unknown or no longer
/// than the margin (the next call logs in again, as it would without a cache). `what` and
/// `instead` name it in the warning of a full cache ([`cache::keep_json`]: `the access
/// token`, `every call asks for one`).
pub fn keep_until_expiry<T: Serialize>(
    key: &str,
    token: &T,
    lifetime: Option<Duration>,
    what: &str,
    instead: &str,
) {
    if let Some(ttl) = cache_ttl(lifetime) {
        cache::keep_json(key, token, ttl, what, instead);
    }
}

/// How long a token with `lifetime` stays cached: the lifetime less [`EXPIRY_MARGIN`]; none
/// when that leaves nothing.
fn cache_ttl(lifetime: Option<Duration>) -> Option<Duration> {
    lifetime
        .and_then(|lifetime| lifetime.checked_sub(EXPIRY_MARGIN))
        .filter(|ttl| !ttl.is_zero())
}

/// A token endpoint's error answer (RFC 6749 section 5.2: `{"error", "error_description"}`).
#[derive(Deserialize)]
pub struct OAuthError {
    /// The error code (`invalid_client`, `invalid_grant`).
    pub error: String,
    /// The endpoint's words about it, if any.
    #[serde(default)]
    pub error_description: Option<String>,
}

impl OAuthError {
    /// `body` read as an OAuth error; none when it has another shape (a front end answering
    /// in the vendor's API error shape).
    pub fn parse(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }

    /// The error as a refusal's reason: `error: <description>`, the description being what
    /// `shown` keeps of it (all of it, or its first line where the endpoint appends trace
    /// ids), or the `error` code alone without one.
    pub fn reason(self, shown: impl FnOnce(&str) -> &str) -> String {
        match self.error_description {
            Some(description) => format!("{}: {}", self.error, shown(&description)),
            None => self.error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token is cached for its lifetime less the margin, and not at all when that leaves
    /// nothing.
    #[test]
    fn tokens_are_cached_until_the_margin_before_expiry() {
        let secs = |s: u64| Some(Duration::from_secs(s));
        assert_eq!(cache_ttl(secs(3600)), secs(3480));
        assert_eq!(cache_ttl(secs(121)), secs(1));
        assert_eq!(cache_ttl(secs(120)), None);
        assert_eq!(cache_ttl(secs(5)), None);
        assert_eq!(cache_ttl(None), None);
    }

    /// An OAuth error reads as `error: description` (as much of it as the plugin keeps), or
    /// its code alone; another shape is none.
    #[test]
    fn oauth_errors_read_as_code_and_description() {
        let body = r#"{"error": "invalid_client", "error_description": "bad secret\nTrace ID: x"}"#;
        fn first_line(description: &str) -> &str {
            description.lines().next().unwrap_or_default()
        }
        assert_eq!(
            OAuthError::parse(body).unwrap().reason(first_line),
            "invalid_client: bad secret"
        );
        assert_eq!(
            OAuthError::parse(body).unwrap().reason(|d| d),
            "invalid_client: bad secret\nTrace ID: x"
        );
        let bare = OAuthError::parse(r#"{"error": "invalid_grant"}"#).unwrap();
        assert_eq!(bare.reason(|d| d), "invalid_grant");
        assert!(OAuthError::parse(r#"{"message": "no"}"#).is_none());
    }
}
