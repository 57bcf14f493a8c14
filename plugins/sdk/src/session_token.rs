//! A vendor's session token, sent with every request of a call and renewed once when the
//! vendor answers 401.
//!
//! Vendors that log in (an OAuth access token at Azure and Google, a Keystone token at
//! OpenStack) hand out a token the plugin keeps in the host's cache ([`crate::cache`]) until
//! shortly before it expires. The vendor may still refuse it (revoked, clocks apart): then
//! [`SessionToken::send`] asks the plugin's `renew` (forget the cached token, log in again)
//! and sends the request once more with the fresh token, which serves the rest of the call.
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

use crate::ProviderError;
use crate::http::{ApiClient, ApiResponse, HttpMethod};

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
