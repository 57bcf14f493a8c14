//! The Standard Webhooks signing of webhook calls: a tenant's secret (`whsec_` and the
//! base64 of a 32-byte key, made by the store on first use) and the `webhook-signature` of a
//! body. Imports nothing of this crate, so the store (which mints secrets) and the deliverer
//! (which signs) both use it without a cycle.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use rand::RngCore;

/// What every signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", BASE64.encode(key))
}

/// The `webhook-signature` value of a body: `v1,` and the base64 HMAC-SHA256 of
/// `"<id>.<timestamp>.<body>"` keyed with the secret's bytes.
pub fn signature(secret: &str, id: &str, timestamp: i64, body: &str) -> anyhow::Result<String> {
    let key = BASE64
        .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
        .map_err(|error| anyhow::anyhow!("a webhook secret that is not base64: {error}"))?;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key)
        .map_err(|error| anyhow::anyhow!("a webhook key HMAC refuses: {error}"))?;
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    Ok(format!("v1,{}", BASE64.encode(mac.finalize().into_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks example: its secret, id, timestamp and body give its signature.
    #[test]
    fn signs_like_the_standard_webhooks_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let signed = signature(
            secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        )
        .expect("signs");
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// Secrets are prefixed, distinct, and usable as keys.
    #[test]
    fn new_secrets_sign() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with(SECRET_PREFIX));
        assert_ne!(a, b);
        assert_ne!(
            signature(&a, "1", 1, "x").expect("signs"),
            signature(&b, "1", 1, "x").expect("signs")
        );
    }
}
