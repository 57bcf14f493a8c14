//! A vendor's session token: asked for at an OAuth 2.0 token endpoint, sent with every
//! request of a call, and renewed once when the vendor answers 401.
//!
//! Vendors that log in (an OAuth access token at Azure and Google, a Keystone token at
//! OpenStack) hand out a token the plugin keeps in the host's cache ([`crate::cache`]) until
//! shortly before it expires. The vendor may still refuse it (revoked, clocks apart): then
//! [`SessionToken::send`] asks the plugin's `renew` (forget the cached token, log in again)
//! and sends the request once more with the fresh token, which serves the rest of the call.
//! Where the login is an OAuth 2.0 token request (a client-credentials grant, a JWT bearer
//! exchange), [`request_oauth_token`] sends it and reads the answer.
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

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ProviderError;
use crate::http::{ApiClient, ApiResponse, HttpMethod, ReasonParser, path_of, redact_urls};

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
