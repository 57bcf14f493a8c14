//! The per-tenant rate of `POST /v1/orders`: a token bucket per tenant (`governor`), refilled
//! at the tenant's own rate (set by an admin, in the database) or the instance's default
//! (`--tenant-order-rate`, `--tenant-order-burst`). A request over the rate answers
//! `429 /problems/rate-limited` with `Retry-After` before anything else is checked (a retry
//! with an `Idempotency-Key` is a request too).
//!
//! The buckets live in each order-api instance: with N instances behind a balancer a tenant
//! may order up to N times its rate. That keeps the check free of the database on the hot
//! path; the quotas (live servers, orders in flight) are the hard limits and hold across
//! instances. The tenants' own rates are read from the database every [`REFRESH_EVERY`] (and
//! at once on the instance that changed them).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use tokio_util::sync::CancellationToken;

use crate::store::{OrderRate, Store};

/// How often the tenants' own rates are read again from the database.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// One tenant's bucket and the rate it was made for.
type Bucket = (OrderRate, Arc<DefaultDirectRateLimiter>);

/// The buckets of this instance (see the module docs).
pub struct OrderRates {
    /// The rate of tenants without their own; `None`: not limited.
    default: Option<OrderRate>,
    /// The tenants' own rates, as last read.
    own: Mutex<HashMap<String, OrderRate>>,
    /// A bucket per tenant that ordered (bounded by the tenants that have tokens).
    buckets: Mutex<HashMap<String, Bucket>>,
    clock: DefaultClock,
}

impl OrderRates {
    /// Buckets refilled at `default` for tenants without a rate of their own.
    pub fn new(default: Option<OrderRate>) -> Arc<Self> {
        Arc::new(Self {
            default,
            own: Mutex::default(),
            buckets: Mutex::default(),
            clock: DefaultClock::default(),
        })
    }

    /// The instance's default rate.
    pub fn default_rate(&self) -> Option<OrderRate> {
        self.default
    }

    /// The rate that applies to `tenant`.
    pub fn rate_of(&self, tenant: &str) -> Option<OrderRate> {
        let own = self.own.lock().unwrap_or_else(|e| e.into_inner());
        own.get(tenant).copied().or(self.default)
    }

    /// Takes one request of `tenant` from its bucket: `Err` with how long until the next
    /// would be admitted when the bucket is empty.
    pub fn admit(&self, tenant: &str) -> Result<(), Duration> {
        let Some(rate) = self.rate_of(tenant) else {
            return Ok(());
        };
        let limiter = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            match buckets.get(tenant) {
                Some((made_for, limiter)) if *made_for == rate => limiter.clone(),
                _ => {
                    let limiter = Arc::new(DefaultDirectRateLimiter::direct(quota(rate)));
                    buckets.insert(tenant.to_string(), (rate, limiter.clone()));
                    limiter
                }
            }
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Replaces the tenants' own rates with `rates` (buckets whose rate changed start full).
    pub fn set_own(&self, rates: HashMap<String, OrderRate>) {
        *self.own.lock().unwrap_or_else(|e| e.into_inner()) = rates;
    }

    /// Reads the tenants' own rates from the database.
    pub async fn refresh(&self, store: &Store) -> anyhow::Result<()> {
        self.set_own(store.rates().await?);
        Ok(())
    }
}

/// The `governor` quota of `rate` (checked by [`OrderRate::check`]; out-of-range figures are
/// brought into range rather than refused here).
fn quota(rate: OrderRate) -> Quota {
    let per_second = rate.per_second.clamp(1e-6, OrderRate::MAX);
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// Reads the tenants' own rates every [`REFRESH_EVERY`] until `shutdown` (an unreadable
/// database keeps the rates last read, with a warning).
pub async fn keep_fresh(rates: Arc<OrderRates>, store: Store, shutdown: CancellationToken) {
    loop {
        if let Err(error) = rates.refresh(&store).await {
            tracing::warn!(
                "reading the tenants' order rates failed (the last ones stay): {error:#}"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(REFRESH_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_gets_its_burst_then_waits_and_others_are_not_held() {
        let rates = OrderRates::new(Some(OrderRate {
            per_second: 1.0,
            burst: 3,
        }));
        for _ in 0..3 {
            rates.admit("acme").unwrap();
        }
        let wait = rates.admit("acme").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        rates.admit("globex").unwrap();
    }

    #[test]
    fn a_tenants_own_rate_replaces_the_default() {
        let rates = OrderRates::new(Some(OrderRate {
            per_second: 1.0,
            burst: 1,
        }));
        rates.admit("acme").unwrap();
        assert!(rates.admit("acme").is_err());
        rates.set_own(HashMap::from([(
            "acme".to_string(),
            OrderRate {
                per_second: 1000.0,
                burst: 50,
            },
        )]));
        for _ in 0..50 {
            rates.admit("acme").unwrap();
        }
        let unlimited = OrderRates::new(None);
        for _ in 0..10_000 {
            unlimited.admit("acme").unwrap();
        }
    }
}
