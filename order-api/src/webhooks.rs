//! Webhook delivery: calls an order's `webhook_url` when the order settles (`active`,
//! `failed`, `deleted`, `cancelled`), signed the Standard Webhooks way, retried with backoff.
//!
//! The delivery is queued in the transaction that settles the order (so it is never lost:
//! an order-api that dies before calling calls after its restart), and each attempt is
//! claimed in the database first (so two order-api instances on one database do not both
//! call). Delivery is at least once: a receiver deduplicates by `webhook-id`.
//!
//! Every call is a `POST` of `{"type": "order.<status>", "timestamp", "data": <the order>}`
//! with the headers `webhook-id` (the same on every attempt), `webhook-timestamp` (Unix
//! seconds of this attempt) and `webhook-signature: v1,<base64 of HMAC-SHA256 over
//! "<webhook-id>.<webhook-timestamp>.<body>">`, keyed with the tenant's secret
//! (`GET /v1/webhooks/secret`; the key is the base64 after `whsec_`). Any 2xx answer
//! delivers it; anything else, or no answer within the timeout, is retried after
//! `base * 2^(attempt-1)` (at most an hour) until the attempts run out.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::RngCore;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::{Store, WebhookDelivery};

/// What every signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3_600);
/// Deliveries read per round.
const BATCH: u32 = 32;
/// How often the deliverer looks for due deliveries when not woken.
const POLL: Duration = Duration::from_millis(500);

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The wait before the second attempt; it doubles with every attempt after.
    pub retry_base: Duration,
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// How long a receiver has to answer.
    pub timeout: Duration,
}

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

/// The wait after the `attempts`-th failed attempt.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

/// Delivers due webhooks until `shutdown`.
pub async fn run(
    store: Store,
    settings: WebhookSettings,
    wakeup: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("provisioner-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!("cannot make the webhook HTTP client ({error}); no webhooks are sent");
            return;
        }
    };
    loop {
        match deliver_due(&store, &http, &settings).await {
            Ok(n) if n == BATCH as usize => continue,
            Ok(_) => {}
            Err(error) => tracing::warn!("delivering webhooks: {error:#}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeup.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// One round: every due delivery once (in parallel); how many there were.
async fn deliver_due(
    store: &Store,
    http: &reqwest::Client,
    settings: &WebhookSettings,
) -> anyhow::Result<usize> {
    let due = store.due_webhooks(BATCH).await?;
    let count = due.len();
    let calls = due
        .into_iter()
        .map(|delivery| deliver(store, http, settings, delivery));
    for outcome in futures_util::future::join_all(calls).await {
        if let Err(error) = outcome {
            tracing::warn!("a webhook delivery: {error:#}");
        }
    }
    Ok(count)
}

/// One attempt at one delivery.
async fn deliver(
    store: &Store,
    http: &reqwest::Client,
    settings: &WebhookSettings,
    delivery: WebhookDelivery,
) -> anyhow::Result<()> {
    // Claimed for longer than the call may take: no other instance calls meanwhile.
    let lease = chrono::Duration::from_std(settings.timeout * 2)?;
    if !store.claim_webhook(&delivery, Utc::now() + lease).await? {
        return Ok(());
    }
    let secret = store.webhook_secret(&delivery.tenant).await?;
    let id = delivery.delivery_id.to_string();
    let timestamp = Utc::now().timestamp();
    let signed = signature(&secret, &id, timestamp, &delivery.payload)?;
    let answer = http
        .post(&delivery.url)
        .header("content-type", "application/json")
        .header("webhook-id", &id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .body(delivery.payload.clone())
        .send()
        .await;
    let outcome = match answer {
        Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
        Ok(response) => Err(format!("the receiver answered {}", response.status())),
        Err(error) => Err(format!("no answer: {error}")),
    };
    let attempts = delivery.attempts + 1;
    let retry_at = match &outcome {
        Err(_) if attempts < settings.max_attempts => {
            let wait = backoff(settings.retry_base, attempts);
            Some(Utc::now() + chrono::Duration::from_std(wait)?)
        }
        _ => None,
    };
    match &outcome {
        Ok(_) => {
            tracing::info!(order_id = %delivery.order_id, url = %delivery.url, attempts, "webhook delivered")
        }
        Err(error) => {
            tracing::warn!(order_id = %delivery.order_id, url = %delivery.url, attempts, retry = retry_at.is_some(), "webhook failed: {error}")
        }
    }
    store.webhook_attempted(&delivery, outcome, retry_at).await
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

    /// Backoff doubles from the base and stops at an hour.
    #[test]
    fn backs_off_exponentially_up_to_an_hour() {
        let base = Duration::from_secs(1);
        assert_eq!(backoff(base, 1), Duration::from_secs(1));
        assert_eq!(backoff(base, 2), Duration::from_secs(2));
        assert_eq!(backoff(base, 5), Duration::from_secs(16));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
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
