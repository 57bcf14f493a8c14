//! Retries of failed creates (and cancels) through the broker's delay queues, and what
//! follows a failed attempt: a final fault fails the order at once; a passing one within
//! the policy's budget sends the request to a delay queue; past the budget the order fails
//! with the fault and why no retry came.
//!
//! A create that fails with a passing fault (`rate_limited`, `vendor_unavailable`,
//! `plugin_timeout`, `host_busy`) is not retried in the host's memory: the request is
//! published to the retry exchange, waits in a delay queue (`x-message-ttl`), and is
//! dead-lettered back onto the vendor's queue, where any host picks it up. Two headers
//! travel with it: how many retries it has had and when its first attempt started, so the
//! per-order budget (attempts and total time) holds across hosts and restarts.
//!
//! The delay is an exponential backoff with jitter, at least the vendor's `Retry-After`,
//! rounded to one of the delay queues (stochastically between the two nearest, so the
//! jitter survives the rounding; never below `Retry-After`).

use std::time::Duration;

use anyhow::Context;
use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};
use provisioner_contract::envelope::integer_header;
use provisioner_contract::topology::{RETRY_DELAYS_MS, RETRY_QUEUE_HEADER};
use provisioner_contract::{Fault, Publisher, Topology};

use crate::runtime::CallError;
use crate::wit_convert::{fault, retry_after};

/// Header: retries this request has had so far.
pub const RETRY_COUNT_HEADER: &str = "x-retry-count";
/// Header: when the first attempt started (milliseconds since the Unix epoch).
pub const FIRST_ATTEMPT_HEADER: &str = "x-first-attempt-ms";

/// How failed creates are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts an order gets in all (the first included).
    pub max_attempts: u32,
    /// Time from the first attempt after which no retry starts.
    pub max_total: Duration,
    /// The first retry's delay; each later one doubles it.
    pub base_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_total: Duration::from_secs(600),
            base_delay: Duration::from_secs(1),
        }
    }
}

/// What happens after a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Publish the request to the delay queue of `delay_ms`.
    Retry {
        /// The delay queue's delay.
        delay_ms: u64,
    },
    /// The budget is spent: the order fails.
    GiveUp {
        /// Why, for the fault message.
        reason: String,
    },
}

/// Where a request stands in its retry budget, read from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryState {
    /// Retries it has had.
    pub retries: u32,
    /// When its first attempt started, ms since the epoch.
    pub first_attempt_ms: i64,
}

impl RetryState {
    /// Reads the headers; a request without them is on its first attempt, started `now_ms`.
    pub fn of(properties: &BasicProperties, now_ms: i64) -> Self {
        Self {
            retries: integer_header(properties, RETRY_COUNT_HEADER)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            first_attempt_ms: integer_header(properties, FIRST_ATTEMPT_HEADER).unwrap_or(now_ms),
        }
    }
}

impl RetryPolicy {
    /// Decides after a failed attempt with a passing fault; `random` is uniform in [0, 1).
    pub fn decide(
        &self,
        state: RetryState,
        retry_after: Option<Duration>,
        now_ms: i64,
        random: f64,
    ) -> Decision {
        let attempts = state.retries + 1;
        if attempts >= self.max_attempts {
            return Decision::GiveUp {
                reason: format!("gave up after {attempts} attempts"),
            };
        }
        let delay_ms = self.delay_ms(state.retries, retry_after, random);
        let elapsed_ms = now_ms.saturating_sub(state.first_attempt_ms).max(0) as u64;
        if Duration::from_millis(elapsed_ms + delay_ms) > self.max_total {
            return Decision::GiveUp {
                reason: format!(
                    "gave up after {attempts} attempts: another would start after the {} s retry budget",
                    self.max_total.as_secs()
                ),
            };
        }
        Decision::Retry { delay_ms }
    }

    /// The delay before the retry after `retries` earlier ones: `base · 2^retries` times a
    /// factor in [0.5, 1.5), at least `retry_after`, as one of [`RETRY_DELAYS_MS`].
    pub fn delay_ms(&self, retries: u32, retry_after: Option<Duration>, random: f64) -> u64 {
        let exponential = self.base_delay.as_millis() as f64 * 2f64.powi(retries.min(30) as i32);
        let floor = retry_after.map_or(0, |d| d.as_millis() as u64);
        let wanted = (exponential * (0.5 + random)).max(floor as f64);
        let longest = *RETRY_DELAYS_MS.last().unwrap_or(&0);
        let Some(upper) = RETRY_DELAYS_MS
            .iter()
            .copied()
            .find(|&d| d as f64 >= wanted)
        else {
            return longest;
        };
        let lower = RETRY_DELAYS_MS
            .iter()
            .copied()
            .rev()
            .find(|&d| (d as f64) < wanted);
        match lower {
            // Between two queues: the nearer one more often, never below `Retry-After`.
            Some(lower) if lower >= floor => {
                let towards_upper = (wanted - lower as f64) / (upper - lower) as f64;
                if random_for_rounding(random) < towards_upper {
                    upper
                } else {
                    lower
                }
            }
            _ => upper,
        }
    }
}

/// A second uniform number derived from the first, so the jitter and the rounding are not
/// the same draw.
fn random_for_rounding(random: f64) -> f64 {
    (random * 7919.0).fract()
}

/// The properties of the retry of a request: its own, plus the retry headers and the
/// header that picks the delay queue.
pub fn retry_properties(
    topology: &Topology,
    properties: &BasicProperties,
    state: RetryState,
    delay_ms: u64,
) -> BasicProperties {
    let headers: FieldTable = properties.headers().clone().unwrap_or_default();
    // The broker's own bookkeeping of the earlier trip stays behind: a copied `x-death`
    // would make RabbitMQ see a dead-letter cycle and drop the message the second time it
    // passes the same delay queue, and a copied `x-delivery-count` would count again.
    let inner = headers.inner().clone();
    let mut headers = FieldTable::default();
    for (key, value) in inner {
        let broker_own = key.as_str() == "x-delivery-count"
            || ["x-death", "x-first-death-", "x-last-death-"]
                .iter()
                .any(|prefix| key.as_str().starts_with(prefix));
        if !broker_own {
            headers.insert(key, value);
        }
    }
    headers.insert(
        RETRY_COUNT_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(state.retries + 1)),
    );
    headers.insert(
        FIRST_ATTEMPT_HEADER.into(),
        AMQPValue::LongLongInt(state.first_attempt_ms),
    );
    headers.insert(
        RETRY_QUEUE_HEADER.into(),
        AMQPValue::LongString(topology.retry_queue(delay_ms).into()),
    );
    properties.clone().with_headers(headers)
}

/// Why an attempt failed (a create, or a cancel's look-up or delete), and how long the
/// vendor asked us to wait before another.
#[derive(Debug, Clone)]
pub struct AttemptFailure {
    /// The fault.
    pub fault: Fault,
    /// The vendor's `Retry-After` (or rate-limit reset), when it gave one.
    pub retry_after: Option<Duration>,
}

impl AttemptFailure {
    /// A failed plugin call: its fault and the wait it was told to keep.
    pub fn of_call(error: &CallError) -> Self {
        Self {
            fault: fault(error),
            retry_after: retry_after(error),
        }
    }

    /// A failure with this fault and no wait asked for.
    pub fn of_fault(fault: Fault) -> Self {
        Self {
            fault,
            retry_after: None,
        }
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// The request goes to a delay queue (confirmed before this is answered); the order
    /// waits for the next attempt.
    Retried {
        /// The fault of the failed attempt.
        fault: Fault,
        /// The delay queue's delay.
        delay_ms: u64,
    },
    /// The order fails with this fault (final, or the retry budget is spent).
    Failed(Fault),
}

/// Decides about a failed attempt of a request in retry state `state`, without the broker:
/// a final fault fails it as it is; a passing one is retried within `policy`'s budget, and
/// past it fails with why (`random` is uniform in [0, 1), for the jitter).
pub fn after_failure(
    policy: &RetryPolicy,
    failure: AttemptFailure,
    state: RetryState,
    now_ms: i64,
    random: f64,
) -> AfterFailure {
    if !failure.fault.retryable {
        return AfterFailure::Failed(failure.fault);
    }
    match policy.decide(state, failure.retry_after, now_ms, random) {
        Decision::Retry { delay_ms } => AfterFailure::Retried {
            fault: failure.fault,
            delay_ms,
        },
        Decision::GiveUp { reason } => AfterFailure::Failed(Fault {
            message: format!("{} ({reason})", failure.fault.message),
            ..failure.fault
        }),
    }
}

/// Decides about a failed create (on the create's budget) or cancel (on the clean-up's):
/// a passing fault within `policy`'s budget sends the request to a delay queue (published,
/// confirmed); anything else fails it.
pub async fn after_failed_attempt(
    publisher: &Publisher,
    policy: &RetryPolicy,
    topology: &Topology,
    delivery: &Delivery,
    vendor: &str,
    order_id: uuid::Uuid,
    failure: AttemptFailure,
) -> anyhow::Result<AfterFailure> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let state = RetryState::of(&delivery.properties, now_ms);
    let next = after_failure(policy, failure, state, now_ms, rand::random());
    if let AfterFailure::Retried { fault, delay_ms } = &next {
        tracing::warn!(
            code = %fault.code,
            delay_ms,
            "attempt failed, retrying: {}",
            fault.message
        );
        publisher
            .publish_to(
                &topology.retry_exchange(),
                &Topology::request_key(vendor),
                retry_properties(topology, &delivery.properties, state, *delay_ms),
                &delivery.data,
            )
            .await
            .with_context(|| format!("sending order {order_id} to the retry queue"))?;
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            max_total: Duration::from_secs(60),
            base_delay: Duration::from_secs(1),
        }
    }

    fn state(retries: u32) -> RetryState {
        RetryState {
            retries,
            first_attempt_ms: 0,
        }
    }

    #[test]
    fn delays_grow_and_land_on_delay_queues() {
        let policy = policy();
        for retries in 0..6 {
            for random in [0.0, 0.3, 0.6, 0.99] {
                let delay = policy.delay_ms(retries, None, random);
                assert!(RETRY_DELAYS_MS.contains(&delay), "{delay}");
                let exponential = 1000 * 2u64.pow(retries);
                assert!(
                    delay >= exponential / 4 && delay <= exponential * 2,
                    "retry {retries}: {delay} ms for a {exponential} ms backoff"
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_delays_over_two_queues() {
        let policy = policy();
        let delays: std::collections::BTreeSet<u64> = (0..100)
            .map(|i| policy.delay_ms(2, None, i as f64 / 100.0))
            .collect();
        assert!(delays.len() >= 2, "{delays:?}");
    }

    #[test]
    fn retry_after_is_a_floor() {
        let policy = policy();
        for random in [0.0, 0.5, 0.99] {
            let delay = policy.delay_ms(0, Some(Duration::from_millis(3_000)), random);
            assert_eq!(delay, 4_000, "the shortest queue not below 3 s");
        }
    }

    #[test]
    fn a_retry_leaves_the_brokers_bookkeeping_behind() {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::LongString("earlier trip".into()),
        );
        headers.insert(
            "x-first-death-queue".into(),
            AMQPValue::LongString("q".into()),
        );
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(2));
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-ab-cd-01".into()),
        );
        let original = BasicProperties::default().with_headers(headers);
        let topology = Topology::with_prefix("t.");
        let retry = retry_properties(&topology, &original, state(1), 250);
        let headers = retry.headers().clone().unwrap_or_default();
        let keys: Vec<&str> = headers.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                RETRY_QUEUE_HEADER,
                "traceparent",
                FIRST_ATTEMPT_HEADER,
                RETRY_COUNT_HEADER
            ]
        );
        assert_eq!(integer_header(&retry, RETRY_COUNT_HEADER), Some(2));
    }

    #[test]
    fn the_budget_ends_retries() {
        let policy = policy();
        assert!(matches!(
            policy.decide(state(0), None, 0, 0.5),
            Decision::Retry { .. }
        ));
        match policy.decide(state(3), None, 0, 0.5) {
            Decision::GiveUp { reason } => assert!(reason.contains("4 attempts"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match policy.decide(state(1), None, 59_000, 0.5) {
            Decision::GiveUp { reason } => assert!(reason.contains("60 s"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    fn passing(message: &str) -> AttemptFailure {
        AttemptFailure::of_fault(Fault {
            code: "vendor_unavailable".into(),
            message: message.into(),
            retryable: true,
        })
    }

    #[test]
    fn a_final_fault_fails_the_order_as_it_is() {
        let failure = AttemptFailure::of_fault(Fault {
            code: "invalid_request".into(),
            message: "no such size".into(),
            retryable: false,
        });
        let expected = AfterFailure::Failed(failure.fault.clone());
        assert_eq!(
            after_failure(&policy(), failure, state(0), 0, 0.5),
            expected
        );
    }

    #[test]
    fn a_passing_fault_within_the_budget_is_retried_after_a_delay_queues_delay() {
        match after_failure(&policy(), passing("503"), state(0), 0, 0.5) {
            AfterFailure::Retried { fault, delay_ms } => {
                assert_eq!(fault.message, "503");
                assert!(RETRY_DELAYS_MS.contains(&delay_ms), "{delay_ms}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_vendors_retry_after_is_kept() {
        let failure = AttemptFailure {
            retry_after: Some(Duration::from_millis(3_000)),
            ..passing("429")
        };
        match after_failure(&policy(), failure, state(0), 0, 0.0) {
            AfterFailure::Retried { delay_ms, .. } => assert_eq!(delay_ms, 4_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_spent_budget_fails_the_order_saying_why() {
        match after_failure(&policy(), passing("503"), state(3), 0, 0.5) {
            AfterFailure::Failed(fault) => {
                assert_eq!(fault.code, "vendor_unavailable");
                assert!(fault.retryable);
                assert_eq!(fault.message, "503 (gave up after 4 attempts)");
            }
            other => panic!("{other:?}"),
        }
    }
}
