//! Google's OAuth 2.0 for service accounts: the service-account key (JSON) from the
//! manifest's secrets, the RS256 JWT the plugin signs with it, the exchange at the key's
//! `token_uri` (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`), and the access
//! token kept in the host's cache (WIT 0.3 `cache`) until shortly before it expires.
//!
//! One token serves every call of this plugin on this host for its lifetime (Google's are
//! an hour): a cache miss (a new host, a reload, a full cache) costs one exchange; a 401 from
//! Compute drops it ([`forget`]) and the caller exchanges once more. The key and the token
//! are secrets: [`ServiceAccountKey`] and [`AccessToken`] have no `Debug`, and no error
//! message carries either (the token endpoint's own `error` / `error_description` are
//! Google's words about the grant, not the token).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use provider_sdk::http::percent_encode;
use provider_sdk::session_token::{
    AccessToken, OAuthError, keep_until_expiry, request_oauth_token,
};
use provider_sdk::{ProviderError, cache};
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

/// The audience Google's token endpoint demands in the assertion (whatever `token_uri`
/// the key names: a key for a fake of Google names the fake's endpoint, and the fake, like
/// the simulator, takes Google's audience).
pub const GOOGLE_TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// The grant type of a service account's JWT bearer grant.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// The scope asked for: Compute Engine read and write.
pub const COMPUTE_SCOPE: &str = "https://www.googleapis.com/auth/compute";
/// The assertion's lifetime (Google's most).
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// The secret holding the service-account key JSON.
pub const KEY_SECRET: &str = "service-account-key";

/// The fields of a service-account key (the JSON the console downloads) the plugin uses.
/// No `Debug`: it holds the private key.
#[derive(Deserialize)]
pub struct ServiceAccountKey {
    /// `service_account`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// The account's project, the default for `[config] project`.
    #[serde(default)]
    pub project_id: String,
    /// The key's id (the JWT header's `kid`).
    #[serde(default)]
    pub private_key_id: String,
    /// PKCS #8 PEM.
    pub private_key: String,
    /// The account (`iss`).
    pub client_email: String,
    /// Where the JWT is exchanged.
    pub token_uri: String,
}

impl ServiceAccountKey {
    /// Parses the key JSON; `unauthorized` naming what is wrong, never a value from it.
    pub fn parse(text: &str) -> Result<Self, ProviderError> {
        let key: Self = serde_json::from_str(text).map_err(|e| {
            ProviderError::Unauthorized(format!(
                "the secret '{KEY_SECRET}' is not a service-account key JSON (needs \
                 client_email, private_key, token_uri): {}",
                // serde's message names the field or position, not the text.
                e.to_string().chars().take(120).collect::<String>()
            ))
        })?;
        if !key.kind.is_empty() && key.kind != "service_account" {
            return Err(ProviderError::Unauthorized(format!(
                "the secret '{KEY_SECRET}' is a '{}' key, not a service account's",
                provider_sdk::ssh::prefix(&key.kind, 40)
            )));
        }
        if !(key.token_uri.starts_with("https://") || key.token_uri.starts_with("http://")) {
            return Err(ProviderError::Unauthorized(format!(
                "the secret '{KEY_SECRET}' has no http(s) token_uri"
            )));
        }
        Ok(key)
    }

    /// The signing key, from the PEM.
    fn signing_key(&self) -> Result<SigningKey<Sha256>, ProviderError> {
        let private = RsaPrivateKey::from_pkcs8_pem(self.private_key.trim()).map_err(|_| {
            ProviderError::Unauthorized(format!(
                "the private_key of the secret '{KEY_SECRET}' is not an RSA key in PKCS #8 PEM"
            ))
        })?;
        Ok(SigningKey::<Sha256>::new(private))
    }

    /// The cache key of this account's access token.
    fn cache_key(&self) -> String {
        let mut key = format!("gcp-token/{}", self.client_email);
        key.truncate(cache::MAX_KEY_BYTES);
        key
    }
}

/// The JWT claims of the grant: `iss` the account, `scope`, `aud` Google's token endpoint,
/// `iat` now, `exp` an hour later.
pub fn claims(key: &ServiceAccountKey, now_secs: u64) -> serde_json::Value {
    json!({
        "iss": key.client_email,
        "scope": COMPUTE_SCOPE,
        "aud": GOOGLE_TOKEN_AUDIENCE,
        "iat": now_secs,
        "exp": now_secs + ASSERTION_LIFETIME_SECS,
    })
}

/// The signed assertion: `base64url(header).base64url(claims).base64url(RS256 signature)`.
pub fn assertion(key: &ServiceAccountKey, now_secs: u64) -> Result<String, ProviderError> {
    let mut header = json!({"alg": "RS256", "typ": "JWT"});
    if !key.private_key_id.is_empty() {
        header["kid"] = json!(key.private_key_id);
    }
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims(key, now_secs).to_string())
    );
    let signature = key.signing_key()?.sign(signing_input.as_bytes());
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.to_bytes())
    ))
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Reads an OAuth error body into `error: description` (or, from a front end answering
/// in Google's API error shape, `reason: message`).
pub fn token_error_reason(body: &str) -> Option<String> {
    match OAuthError::parse(body) {
        Some(error) => Some(error.reason(|description| description)),
        None => crate::api::error_reason(body),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// The cached token of `key`'s account, if any.
pub fn cached(key: &ServiceAccountKey) -> Option<AccessToken> {
    cache::get_json(&key.cache_key())
}

/// Drops the cached token of `key`'s account (Compute answered 401).
pub fn forget(key: &ServiceAccountKey) {
    cache::delete(&key.cache_key());
}

/// Signs an assertion and exchanges it at the key's `token_uri`; the token is cached for
/// its lifetime less [`EXPIRY_MARGIN`](provider_sdk::session_token::EXPIRY_MARGIN). Refusals of the grant (400 `invalid_grant`,
/// 401, 403) are `unauthorized`; 429 and 5xx as the SDK maps them.
pub async fn exchange(key: &ServiceAccountKey) -> Result<AccessToken, ProviderError> {
    let assertion = assertion(key, now_secs())?;
    let form = format!(
        "grant_type={}&assertion={}",
        percent_encode(JWT_BEARER_GRANT),
        percent_encode(&assertion)
    );
    let answer: TokenAnswer = request_oauth_token(
        &key.token_uri,
        form,
        "service account's token exchange",
        token_error_reason,
    )
    .await?;
    let token = AccessToken {
        access_token: answer.access_token,
    };
    // A token too short-lived is not kept, and a full cache is only logged: every call
    // then exchanges.
    keep_until_expiry(
        &key.cache_key(),
        &token,
        answer.expires_in.map(Duration::from_secs),
        "the access token",
        "every call exchanges a JWT",
    );
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPublicKey;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::pkcs8::DecodePublicKey;
    use rsa::signature::Verifier;

    const PRIVATE: &str = include_str!("../testdata/sim-service-account.pem");
    const PUBLIC: &str = include_str!("../testdata/sim-service-account.pub.pem");

    fn key() -> ServiceAccountKey {
        let json = json!({
            "type": "service_account",
            "project_id": "sim-project",
            "private_key_id": "k1",
            "private_key": PRIVATE,
            "client_email": "provisioner@sim-project.iam.gserviceaccount.com",
            "token_uri": "http://127.0.0.1:18190/gcp/token",
        });
        ServiceAccountKey::parse(&json.to_string()).unwrap()
    }

    fn part(jwt: &str, index: usize) -> serde_json::Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(index).unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The assertion is RS256 over `header.claims`, verified with the key's public half;
    /// its claims are what Google's token endpoint demands.
    #[test]
    fn the_assertion_is_rs256_signed_with_the_accounts_key() {
        let jwt = assertion(&key(), 1_700_000_000).unwrap();
        let header = part(&jwt, 0);
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], "k1");
        let claims = part(&jwt, 1);
        assert_eq!(
            claims["iss"],
            "provisioner@sim-project.iam.gserviceaccount.com"
        );
        assert_eq!(claims["aud"], GOOGLE_TOKEN_AUDIENCE);
        assert_eq!(claims["scope"], COMPUTE_SCOPE);
        assert_eq!(claims["iat"], 1_700_000_000u64);
        assert_eq!(claims["exp"], 1_700_003_600u64);

        let public = RsaPublicKey::from_public_key_pem(PUBLIC).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(public);
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        let signature =
            Signature::try_from(URL_SAFE_NO_PAD.decode(signature).unwrap().as_slice()).unwrap();
        verifier.verify(signed.as_bytes(), &signature).unwrap();
        // A changed claim no longer verifies.
        let forged = signed.replace('.', ".e30");
        assert!(verifier.verify(forged.as_bytes(), &signature).is_err());
    }

    /// A key that is not a service account's, or not JSON, is `unauthorized` and the
    /// message carries nothing of the secret.
    #[test]
    fn bad_keys_are_unauthorized_without_their_contents() {
        for text in [
            "not json at all: sekrit",
            r#"{"client_email": "a@b", "token_uri": "https://x/token"}"#,
            r#"{"type": "authorized_user", "client_email": "a@b", "private_key": "sekrit",
                "token_uri": "https://x/token"}"#,
            r#"{"client_email": "a@b", "private_key": "sekrit", "token_uri": "file:///x"}"#,
        ] {
            match ServiceAccountKey::parse(text) {
                Err(ProviderError::Unauthorized(message)) => {
                    assert!(!message.contains("sekrit"), "{message}")
                }
                Err(other) => panic!("{other:?}"),
                Ok(_) => panic!("accepted {text}"),
            }
        }
        let mut broken = key();
        broken.private_key =
            "-----BEGIN PRIVATE KEY-----\nsekrit\n-----END PRIVATE KEY-----".into();
        match assertion(&broken, 0) {
            Err(ProviderError::Unauthorized(message)) => assert!(!message.contains("sekrit")),
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    /// OAuth error bodies read as `error: description`.
    #[test]
    fn token_errors_read_as_oauth_says() {
        assert_eq!(
            token_error_reason(
                r#"{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}"#
            )
            .as_deref(),
            Some("invalid_grant: Invalid JWT Signature.")
        );
        assert_eq!(token_error_reason("<html>"), None);
    }
}
