//! The Microsoft identity platform's client-credentials grant: the app's tenant, client id
//! and secret from the manifest's secrets, `POST {authority}/{tenant}/oauth2/v2.0/token`
//! with `scope=https://management.azure.com/.default`, and the access token kept in the
//! host's cache (WIT 0.3 `cache`) until shortly before it expires.
//!
//! One token serves every call of this plugin on this host for its lifetime (an hour at
//! Azure): a cache miss (a new host, a reload, a full cache) costs one grant; a 401 from ARM
//! drops it ([`forget`]) and the caller asks once more. The secret and the token are
//! secrets: [`Credentials`] and [`AccessToken`] have no `Debug`, and no error message
//! carries either (the token endpoint's `error` / `error_description` are AAD's words about
//! the grant).

use std::time::Duration;

use provider_sdk::http::percent_encode;
use provider_sdk::session_token::{
    AccessToken, OAuthError, keep_until_expiry, request_oauth_token,
};
use provider_sdk::{ProviderError, cache, require_secret};
use serde::Deserialize;

/// The Microsoft identity platform's public cloud authority.
pub const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The scope asked for: Azure Resource Manager, the app's granted roles.
pub const ARM_SCOPE: &str = "https://management.azure.com/.default";

/// The app registration's client credentials. No `Debug`: it holds the secret.
pub struct Credentials {
    pub tenant: String,
    pub client_id: String,
    secret: String,
}

impl Credentials {
    /// From the manifest's secrets `tenant-id`, `client-id`, `client-secret`.
    pub fn from_secrets() -> Result<Self, ProviderError> {
        Ok(Self {
            tenant: require_secret("tenant-id")?.trim().to_string(),
            client_id: require_secret("client-id")?.trim().to_string(),
            secret: require_secret("client-secret")?.trim().to_string(),
        })
    }

    #[cfg(test)]
    pub fn new(tenant: &str, client_id: &str, secret: &str) -> Self {
        Self {
            tenant: tenant.into(),
            client_id: client_id.into(),
            secret: secret.into(),
        }
    }

    /// The cache key of this app's token.
    fn cache_key(&self) -> String {
        let mut key = format!("azure-token/{}/{}", self.tenant, self.client_id);
        key.truncate(cache::MAX_KEY_BYTES);
        key
    }

    /// The form of the grant.
    pub fn form(&self) -> String {
        format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            percent_encode(&self.client_id),
            percent_encode(&self.secret),
            percent_encode(ARM_SCOPE)
        )
    }
}

/// The token endpoint of `tenant` at `authority` (`https://login.microsoftonline.com`, or a
/// sovereign cloud's, or a fake's).
pub fn token_url(authority: &str, tenant: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        authority.trim_end_matches('/'),
        percent_encode(tenant)
    )
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// Reads an AAD error body into `error: description` (the description's first line: AAD
/// appends trace and correlation ids on more), or an ARM-shaped one.
pub fn token_error_reason(body: &str) -> Option<String> {
    match OAuthError::parse(body) {
        Some(error) => {
            Some(error.reason(|description| description.lines().next().unwrap_or_default()))
        }
        None => crate::api::error_reason(body),
    }
}

/// The cached token of the app, if any.
pub fn cached(credentials: &Credentials) -> Option<AccessToken> {
    cache::get_json(&credentials.cache_key())
}

/// Drops the cached token (ARM answered 401).
pub fn forget(credentials: &Credentials) {
    cache::delete(&credentials.cache_key());
}

/// Asks the token endpoint for a token; it is cached for its lifetime less a margin.
/// Refusals (400, 401, 403) are `unauthorized`; 429 and 5xx as the SDK maps them.
pub async fn grant(
    credentials: &Credentials,
    authority: &str,
) -> Result<AccessToken, ProviderError> {
    let answer: TokenAnswer = request_oauth_token(
        &token_url(authority, &credentials.tenant),
        credentials.form(),
        "client-credentials grant",
        token_error_reason,
    )
    .await?;
    let token = AccessToken {
        access_token: answer.access_token,
    };
    // AAD answers `expires_in` as a number (v2.0) or a string (v1.0).
    let expires_in = answer.expires_in.and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    });
    keep_until_expiry(
        &credentials.cache_key(),
        &token,
        expires_in.map(Duration::from_secs),
        "the access token",
        "every call asks for one",
    );
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grant_goes_to_the_tenants_endpoint_with_arms_scope() {
        assert_eq!(
            token_url("https://login.microsoftonline.com/", "t-1"),
            "https://login.microsoftonline.com/t-1/oauth2/v2.0/token"
        );
        assert_eq!(
            token_url("http://127.0.0.1:18190/azure", "t-1"),
            "http://127.0.0.1:18190/azure/t-1/oauth2/v2.0/token"
        );
        let form = Credentials::new("t", "c-1", "s~e&c=r").form();
        assert!(form.starts_with("grant_type=client_credentials&client_id=c-1&"));
        assert!(form.contains("client_secret=s~e%26c%3Dr"), "{form}");
        assert!(
            form.ends_with("scope=https%3A%2F%2Fmanagement.azure.com%2F.default"),
            "{form}"
        );
    }

    #[test]
    fn aad_errors_read_as_error_and_first_line() {
        let body = r#"{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided.\r\nTrace ID: x", "error_codes": [7000215]}"#;
        assert_eq!(
            token_error_reason(body).as_deref(),
            Some("invalid_client: AADSTS7000215: Invalid client secret provided.\r")
                .map(|s| s.trim_end_matches('\r'))
        );
        assert_eq!(token_error_reason("<html>"), None);
    }
}
