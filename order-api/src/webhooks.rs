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
//! (`GET /v1/webhooks/secret`; the key is the base64 after `whsec_`; see [`crate::webhook_signing`]). Any
//! 2xx answer delivers it; anything else, or no answer within the timeout, is retried after
//! `base * 2^(attempt-1)` (at most an hour) until the attempts run out.
//!
//! Receivers must be at public addresses ([`provisioner_contract::netaddr::is_public`]: none
//! of the IANA special-purpose blocks, also inside IPv6 forms that carry an IPv4 address),
//! unless `allow_private`: an IP literal is checked when the order is made and at every call,
//! a host name is resolved at every call and refused unless it has a public address. No
//! proxy from the environment (`HTTP_PROXY`, `ALL_PROXY`, ...) is used: a proxy would
//! resolve the name itself, past the check. The log names a receiver by its origin
//! (`scheme://host:port`) only, as a URL's path or query may carry a token. These rules are
//! in [`crate::webhook_receivers`].
//!
//! Calls share `max_concurrent` slots, at most `max_per_tenant` of them for one tenant, and
//! due deliveries are taken round-robin by tenant: a tenant whose receiver is slow fills
//! only its own share, and the others' webhooks go out meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{Store, WebhookDelivery};
use crate::webhook_receivers::{ReceiverResolver, check_url, origin};
use crate::webhook_signing::signature;

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
    /// Whether receivers may be at private, loopback or link-local addresses.
    pub allow_private: bool,
    /// Calls in progress at once.
    pub max_concurrent: usize,
    /// Calls in progress at once for one tenant (its fair share of `max_concurrent`).
    pub max_per_tenant: usize,
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
}
