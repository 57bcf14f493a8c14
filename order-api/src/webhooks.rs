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
//!
//! Receivers must be at public addresses ([`provisioner_contract::netaddr::is_public`]: none
//! of the IANA special-purpose blocks, also inside IPv6 forms that carry an IPv4 address),
//! unless `allow_private`: an IP literal is checked when the order is made and at every call,
//! a host name is resolved at every call and refused unless it has a public address. No
//! proxy from the environment (`HTTP_PROXY`, `ALL_PROXY`, ...) is used: a proxy would
//! resolve the name itself, past the check. The log names a receiver by its origin
//! (`scheme://host:port`) only, as a URL's path or query may carry a token.
//!
//! Calls share `max_concurrent` slots, at most `max_per_tenant` of them for one tenant, and
//! due deliveries are taken round-robin by tenant: a tenant whose receiver is slow fills
//! only its own share, and the others' webhooks go out meanwhile.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use hmac::{Hmac, Mac};
use provisioner_contract::netaddr::is_public;
use rand::RngCore;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{Store, WebhookDelivery};

/// What every signing secret starts with.
pub const SECRET_PREFIX: &str = "whsec_";
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3_600);
/// Deliveries read per round.
const BATCH: u32 = 32;
/// How often the deliverer looks for due deliveries when not woken.
const POLL: Duration = Duration::from_millis(500);

/// Longest accepted webhook URL.
const MAX_URL: usize = 2048;
/// Why a URL with an IP address that is not public is refused.
const NOT_PUBLIC: &str = "must point to a public address (not a private, loopback, link-local or other special-purpose one)";

/// How webhooks are delivered.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The wait before the second attempt; it doubles with every attempt after.
    pub retry_base: Duration,
    /// Attempts before a delivery is given up.
    pub max_attempts: u32,
    /// How long a receiver has to answer.
    pub timeout: Duration,
    /// Whether receivers may be at private, loopback or link-local addresses.
    pub allow_private: bool,
    /// Calls in progress at once.
    pub max_concurrent: usize,
    /// Calls in progress at once for one tenant (its fair share of `max_concurrent`).
    pub max_per_tenant: usize,
}

/// Whether a webhook URL is acceptable: `http` or `https`, a host, no user or password, at
/// most 2,048 characters, and (unless `allow_private`) not an IP address that is not public
/// (private, loopback, link-local or any other special-purpose block). A host name is
/// checked, resolved, at every call.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    if url.len() > MAX_URL {
        return Err(format!("must be at most {MAX_URL} characters"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|error| format!("is not a URL ({error})"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err("must be an http:// or https:// URL with a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry a user name or password".into());
    }
    let literal = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(ip) = literal
        && !allow_private
        && !is_public(ip)
    {
        return Err(NOT_PUBLIC.into());
    }
    Ok(())
}

/// A receiver URL's origin, `scheme://host:port`: all the log says of a receiver, since a
/// URL's path and query may carry a token.
pub fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", parsed.scheme()),
            _ => format!("{}://(no host)", parsed.scheme()),
        },
        Err(_) => "(not a URL)".into(),
    }
}

/// Why a call got no answer, with every cause, but without the URL (it may carry a token).
fn no_answer(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Resolves receivers' names to public addresses only (unless private ones are allowed), at
/// connect time: a name that resolves to a private address, also one that changed after the
/// order was made, is refused.
struct ReceiverResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for ReceiverResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|address| allow_private || is_public(address.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!(
                    "{host} has no public address (private, loopback, link-local and other \
                     special-purpose receivers are refused)"
                )
                .into());
            }
            let addresses: reqwest::dns::Addrs = Box::new(found.into_iter());
            Ok(addresses)
        })
    }
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

/// The call slots: `total` at once, at most `per_tenant` of them for one tenant.
struct Slots {
    total: usize,
    per_tenant: usize,
    busy: Mutex<Busy>,
    /// Told whenever a slot frees up, so waiting deliveries are looked at again.
    freed: Notify,
}

/// The slots in use: in all, and by tenant (tenants with none are not kept).
#[derive(Default)]
struct Busy {
    all: usize,
    by_tenant: HashMap<String, usize>,
}

/// Why no slot was taken.
#[derive(Debug)]
enum NoSlot {
    /// Every slot is in use: nothing more starts this round.
    AllBusy,
    /// This tenant has its share in use; other tenants' deliveries may still start.
    TenantBusy,
}

impl Slots {
    fn new(total: usize, per_tenant: usize) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_tenant: per_tenant.max(1),
            busy: Mutex::new(Busy::default()),
            freed: Notify::new(),
        })
    }

    /// A slot for one call of `tenant`, given back when the [`Slot`] drops.
    fn take(self: &Arc<Self>, tenant: &str) -> Result<Slot, NoSlot> {
        let mut busy = self
            .busy
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if busy.all >= self.total {
            return Err(NoSlot::AllBusy);
        }
        let mine = busy.by_tenant.entry(tenant.to_string()).or_default();
        if *mine >= self.per_tenant {
            return Err(NoSlot::TenantBusy);
        }
        *mine += 1;
        busy.all += 1;
        Ok(Slot {
            slots: self.clone(),
            tenant: tenant.to_string(),
        })
    }
}

/// One call's slot; dropping it frees the slot.
struct Slot {
    slots: Arc<Slots>,
    tenant: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut busy = self
                .slots
                .busy
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            busy.all = busy.all.saturating_sub(1);
            if let Some(mine) = busy.by_tenant.get_mut(&self.tenant) {
                *mine = mine.saturating_sub(1);
                if *mine == 0 {
                    busy.by_tenant.remove(&self.tenant);
                }
            }
        }
        self.slots.freed.notify_one();
    }
}

/// Delivers due webhooks until `shutdown`.
pub async fn run(
    store: Store,
    settings: WebhookSettings,
    metrics: Arc<Metrics>,
    wakeup: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let http = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .dns_resolver(Arc::new(ReceiverResolver {
            allow_private: settings.allow_private,
        }))
        // A proxy would resolve the receiver's name itself, past the address check.
        .no_proxy()
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
    let slots = Slots::new(settings.max_concurrent, settings.max_per_tenant);
    loop {
        match start_due(&store, &http, &settings, &metrics, &slots).await {
            Ok(Round::Again) => continue,
            Ok(Round::Wait) => {}
            Err(error) => tracing::warn!("delivering webhooks: {error:#}"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wakeup.notified() => {}
            _ = slots.freed.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// What follows a round.
enum Round {
    /// More may be due and startable: look again at once.
    Again,
    /// Wait for a wake-up, a freed slot or the poll interval.
    Wait,
}

/// One round: reads due deliveries, taking tenants in turn (each tenant's oldest first, at
/// most its share), and starts a call for each that gets a slot, without waiting for them:
/// a slow receiver holds up only its own tenant's share of the slots.
async fn start_due(
    store: &Store,
    http: &reqwest::Client,
    settings: &WebhookSettings,
    metrics: &Arc<Metrics>,
    slots: &Arc<Slots>,
) -> anyhow::Result<Round> {
    let due = store.due_webhooks(BATCH, slots.per_tenant).await?;
    let full_batch = due.len() == BATCH as usize;
    // Claimed for longer than a call may take: no other instance calls meanwhile.
    let lease = chrono::Duration::from_std(settings.timeout * 2)?;
    let mut started = 0;
    for delivery in due {
        let slot = match slots.take(&delivery.tenant) {
            Ok(slot) => slot,
            Err(NoSlot::TenantBusy) => continue,
            Err(NoSlot::AllBusy) => return Ok(Round::Wait),
        };
        let claimed_until = Utc::now() + lease;
        if !store.claim_webhook(&delivery, claimed_until).await? {
            continue;
        }
        started += 1;
        let (store, http, settings) = (store.clone(), http.clone(), settings.clone());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let order_id = delivery.order_id;
            let delivered = deliver(&store, &http, &settings, delivery, claimed_until).await;
            match delivered {
                Ok(outcome) => metrics.webhook_call(outcome),
                Err(error) => {
                    tracing::warn!(%order_id, "a webhook delivery: {error:#}");
                }
            }
            drop(slot);
        });
    }
    Ok(if full_batch && started > 0 {
        Round::Again
    } else {
        Round::Wait
    })
}

/// One attempt at one claimed delivery; `delivered`, `failed` (tried again) or `given_up`.
async fn deliver(
    store: &Store,
    http: &reqwest::Client,
    settings: &WebhookSettings,
    delivery: WebhookDelivery,
    claimed_until: chrono::DateTime<Utc>,
) -> anyhow::Result<&'static str> {
    let outcome = match check_url(&delivery.url, settings.allow_private) {
        Err(refused) => Err(format!("the URL {refused}")),
        Ok(()) => call(store, http, &delivery).await?,
    };
    let attempts = delivery.attempts + 1;
    let retry_at = match &outcome {
        Err(_) if attempts < settings.max_attempts => {
            let wait = backoff(settings.retry_base, attempts);
            Some(Utc::now() + chrono::Duration::from_std(wait)?)
        }
        _ => None,
    };
    let label = match (&outcome, retry_at) {
        (Ok(_), _) => "delivered",
        (Err(_), Some(_)) => "failed",
        (Err(_), None) => "given_up",
    };
    let receiver = origin(&delivery.url);
    match &outcome {
        Ok(_) => {
            tracing::info!(order_id = %delivery.order_id, %receiver, attempts, "webhook {label}")
        }
        Err(error) => {
            tracing::warn!(order_id = %delivery.order_id, %receiver, attempts, "webhook {label}: {error}")
        }
    }
    store
        .webhook_attempted(&delivery, claimed_until, outcome, retry_at)
        .await?;
    Ok(label)
}

/// The signed `POST`: the receiver's status when it is 2xx, else why not.
async fn call(
    store: &Store,
    http: &reqwest::Client,
    delivery: &WebhookDelivery,
) -> anyhow::Result<Result<u16, String>> {
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
    Ok(match answer {
        Ok(response) if response.status().is_success() => Ok(response.status().as_u16()),
        Ok(response) => Err(format!("the receiver answered {}", response.status())),
        Err(error) => Err(format!("no answer: {}", no_answer(error))),
    })
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

    /// URLs: http(s) with a host, no credentials, and no private address unless allowed.
    #[test]
    fn checks_receiver_urls() {
        for good in ["https://example.com/hook", "http://203.0.114.9:8080/x"] {
            assert!(check_url(good, false).is_ok(), "{good}");
        }
        for bad in [
            "ftp://example.com/x",
            "http://",
            "https://user:pw@example.com/x",
            "http://127.0.0.1:9000/x",
            "http://10.1.2.3/x",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "http://[fd00::1]/x",
            "http://[::ffff:192.168.0.1]/x",
            "http://100.64.0.1/x",
            "http://198.18.0.1/x",
            "http://[::ffff:0:127.0.0.1]/x",
            "http://[64:ff9b::a00:1]/x",
            "http://[2002:7f00:1::]/x",
            "http://[fec0::1]/x",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("http://127.0.0.1:9000/x", true).is_ok());
        assert!(check_url("https://user:pw@example.com/x", true).is_err());
    }

    /// The log's name of a receiver: scheme, host and port, never the path or query.
    #[test]
    fn origins_leave_out_path_and_query() {
        assert_eq!(
            origin("https://hooks.example.com/in?token=secret"),
            "https://hooks.example.com:443"
        );
        assert_eq!(origin("http://[::1]:8080/a/b"), "http://[::1]:8080");
        assert_eq!(origin("not a url"), "(not a URL)");
    }

    /// A tenant gets at most its share of the slots, the others keep theirs, and a dropped
    /// slot is free again.
    #[test]
    fn slots_are_shared_fairly_between_tenants() {
        let slots = Slots::new(3, 2);
        let a1 = slots.take("a").expect("a's first");
        let _a2 = slots.take("a").expect("a's second");
        assert!(matches!(slots.take("a"), Err(NoSlot::TenantBusy)));
        let _b1 = slots.take("b").expect("b's first, beside a's share");
        assert!(matches!(slots.take("c"), Err(NoSlot::AllBusy)));
        drop(a1);
        assert!(slots.take("c").is_ok());
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
