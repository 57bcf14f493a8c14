//! Which creates skip the create lease ([`super::lease`]): an order's first copy, on its
//! first delivery, early enough to be cut off in time. Every other copy waits until that
//! first copy's create has surely ended, then takes the lease as before.
//!
//! # Why this is safe
//!
//! The lease exists because two copies of one order's create looking up the order's key at
//! the same moment both find nothing and both make a server. Two creates must therefore
//! never overlap. The lease serialises the copies that take it; this module keeps the one
//! copy that does not take it apart from all others in time:
//!
//! 1. **At most one copy skips the lease.** order-api's relay marks only the first publish
//!    of an order's first creation request ([`LEASE_FREE_HEADER`]): the mark is cleared in
//!    the database as the relay reads the row, before it publishes, so a re-publish (a lost
//!    confirm, a relay that died, another order-api's claim after this one's expired) goes
//!    out unmarked; the watchdog's and a placement move's requests are never marked. Of the
//!    marked message, only the first delivery skips: a redelivery (RabbitMQ sets
//!    `redelivered` and, on quorum queues, `x-delivery-count`), a retry (`x-retry-count`) or
//!    anything dead-lettered once (`x-death`) does not.
//! 2. **That copy ends by a known moment.** It skips the lease only when at least
//!    [`MIN_LEASE_FREE_TIME`] is left before [`ProvisionRequest::first_create_ends`] (the
//!    order's acceptance plus [`FIRST_CREATE_BOUND`]) and at most the bound plus the clock
//!    allowance (a later end means a clock far off: it takes the lease instead), and its
//!    create is cut off at that moment (a create cut off is a passing failure, retried).
//! 3. **Every other copy starts after it.** A copy that is not a retry waits until that
//!    moment plus the clock-skew allowance before it takes the lease. A retry needs no
//!    wait: the host that queued it did so after its own attempt's create had ended, and
//!    that attempt was either the lease-free copy itself or a copy that had waited (by
//!    induction along a chain of retries).
//! 4. **So the lease-free copy needs no look-up either.** It runs for the order's first
//!    creation request, in its first attempt, and every other copy of any of the order's
//!    creates starts after it has ended (3): when it runs, no server carries the order's
//!    idempotency key, and looking one up is a vendor request spent on a certain "none".
//!    It calls the plugin's `create-new-server` (WIT 0.6; `create-server` on older
//!    plugins), the vendor's create alone. Whatever it leaves behind (a create cut off
//!    after the vendor made the server, a server that failed while booting) is met by a
//!    retry, which takes the lease and calls `create-server`: look-up first, adopt.
//!
//! What it assumes: the hosts' clocks agree within the allowance (`CLOCK_SKEW_ALLOWANCE_MS`,
//! NTP keeps them within milliseconds); order-api's clock only moves the moment, which
//! every copy reads from the same request. What it costs: a copy redelivered after a host's
//! death, or re-published, starts no earlier than the bound plus the allowance after its
//! order was accepted (12 s by default); the common create, the first copy on its first
//! delivery, takes no lease, which is two broker operations (a consume and a cancel) and
//! their round trips fewer per order (BENCHMARKS.md).
//!
//! [`LEASE_FREE_HEADER`]: provisioner_contract::LEASE_FREE_HEADER
//! [`FIRST_CREATE_BOUND`]: provisioner_contract::FIRST_CREATE_BOUND

use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use provisioner_contract::envelope::{flag_header, has_header, integer_header};
use provisioner_contract::{FIRST_CREATE_BOUND, LEASE_FREE_HEADER, ProvisionRequest};

use super::retry::RETRY_COUNT_HEADER;

/// The least time a first copy must have left before its cut-off to skip the lease: with
/// less, its create would likely be cut off, so it takes the lease (which it, the only copy
/// that could have skipped, gets without waiting).
pub const MIN_LEASE_FREE_TIME: Duration = Duration::from_secs(1);

/// Take the lease at once.
const NO_WAIT: CreateLease = CreateLease::Take {
    wait_first: Duration::ZERO,
};

/// How a create goes about the order's create lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateLease {
    /// The order's first copy on its first delivery: create without the lease, cut off
    /// after this long.
    Skip { cut_off: Duration },
    /// Take the lease, after waiting this long for a lease-free first copy to have ended
    /// (zero when none can be running).
    Take { wait_first: Duration },
}

/// How the create in `request`, delivered with `properties` (`redelivered` as RabbitMQ
/// said), goes about the lease at `now`, with hosts' clocks within `skew_allowance`.
pub fn plan(
    properties: &BasicProperties,
    redelivered: bool,
    request: &ProvisionRequest,
    now: DateTime<Utc>,
    skew_allowance: Duration,
) -> CreateLease {
    // An older order-api's request: no copy of it skips the lease.
    let Some(ends) = request.first_create_ends() else {
        return NO_WAIT;
    };
    let left = (ends - now).to_std().unwrap_or(Duration::ZERO);
    if is_first_delivery_of_first_copy(properties, redelivered) {
        let in_bounds = left >= MIN_LEASE_FREE_TIME && left <= FIRST_CREATE_BOUND + skew_allowance;
        return match in_bounds {
            true => CreateLease::Skip { cut_off: left },
            // Too late to skip (or a clock far off): the lease, which no one else can hold
            // without also having waited.
            false => NO_WAIT,
        };
    }
    if has_header(properties, RETRY_COUNT_HEADER) {
        return NO_WAIT;
    }
    // Until the first copy's cut-off plus the allowance; nothing once that is past.
    let allowance = chrono::Duration::from_std(skew_allowance).unwrap_or_default();
    CreateLease::Take {
        wait_first: (ends + allowance - now).to_std().unwrap_or(Duration::ZERO),
    }
}

/// Whether this delivery is the marked first publish, delivered for the first time and
/// never dead-lettered or retried.
fn is_first_delivery_of_first_copy(properties: &BasicProperties, redelivered: bool) -> bool {
    flag_header(properties, LEASE_FREE_HEADER)
        && !redelivered
        && integer_header(properties, "x-delivery-count").unwrap_or(0) == 0
        && !has_header(properties, RETRY_COUNT_HEADER)
        && !has_header(properties, "x-death")
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable};
    use provisioner_contract::ServerSpec;

    use super::*;

    const ALLOWANCE: Duration = Duration::from_secs(2);

    fn request(ordered_at: Option<DateTime<Utc>>) -> ProvisionRequest {
        ProvisionRequest {
            order_id: uuid::Uuid::now_v7(),
            vendor: "hetzner".into(),
            spec: ServerSpec {
                name: "web-1".into(),
                region: "fsn1".into(),
                size: "cx22".into(),
                image: "ubuntu-24.04".into(),
                ssh_keys: vec![],
                user_data: None,
                labels: Default::default(),
            },
            ordered_at,
        }
    }

    fn with_headers(headers: &[(&str, AMQPValue)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (key, value) in headers {
            table.insert((*key).into(), value.clone());
        }
        BasicProperties::default().with_headers(table)
    }

    /// The plan for a create of an order accepted at `ordered`.
    fn plan_at(
        properties: &BasicProperties,
        redelivered: bool,
        ordered: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> CreateLease {
        plan(
            properties,
            redelivered,
            &request(Some(ordered)),
            now,
            ALLOWANCE,
        )
    }

    fn marked() -> (&'static str, AMQPValue) {
        (LEASE_FREE_HEADER, AMQPValue::Boolean(true))
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    /// Waiting until the bound plus the allowance after the order, from `now`.
    fn waits(ordered: DateTime<Utc>, now: DateTime<Utc>) -> CreateLease {
        let until = ordered
            + chrono::Duration::from_std(FIRST_CREATE_BOUND).unwrap()
            + chrono::Duration::from_std(ALLOWANCE).unwrap();
        CreateLease::Take {
            wait_first: (until - now).to_std().unwrap_or(Duration::ZERO),
        }
    }

    #[test]
    fn the_marked_first_delivery_skips_the_lease_until_the_bound() {
        let ordered = Utc::now();
        let now = ordered + secs(1);
        let plan = plan_at(&with_headers(&[marked()]), false, ordered, now);
        assert_eq!(
            plan,
            CreateLease::Skip {
                cut_off: FIRST_CREATE_BOUND - Duration::from_secs(1)
            }
        );
    }

    #[test]
    fn a_redelivery_of_the_marked_copy_waits_for_it_then_takes_the_lease() {
        let ordered = Utc::now();
        let now = ordered + secs(3);
        let request = request(Some(ordered));
        // Classic queues say so with the flag; quorum queues count deliveries as well.
        let by_flag = plan(&with_headers(&[marked()]), true, &request, now, ALLOWANCE);
        let counted = with_headers(&[marked(), ("x-delivery-count", AMQPValue::LongInt(1))]);
        let by_count = plan(&counted, false, &request, now, ALLOWANCE);
        assert_eq!(by_flag, waits(ordered, now));
        assert_eq!(by_count, waits(ordered, now));
        assert_eq!(
            by_flag,
            CreateLease::Take {
                wait_first: Duration::from_secs(9)
            }
        );
    }

    #[test]
    fn an_unmarked_copy_waits_a_re_publish_a_watchdog_resend_a_move() {
        let ordered = Utc::now();
        let now = ordered + secs(2);
        let plan = plan_at(&BasicProperties::default(), false, ordered, now);
        assert_eq!(plan, waits(ordered, now));
    }

    #[test]
    fn a_copy_after_the_bound_and_allowance_takes_the_lease_at_once() {
        let ordered = Utc::now() - secs(60);
        let plan = plan_at(&BasicProperties::default(), true, ordered, Utc::now());
        assert_eq!(plan, NO_WAIT);
    }

    #[test]
    fn a_retry_takes_the_lease_without_waiting() {
        let ordered = Utc::now();
        let retried = with_headers(&[
            marked(),
            (RETRY_COUNT_HEADER, AMQPValue::LongLongInt(1)),
            ("x-death", AMQPValue::FieldArray(Default::default())),
        ]);
        let plan = plan_at(&retried, false, ordered, ordered + secs(2));
        assert_eq!(plan, NO_WAIT);
    }

    #[test]
    fn a_dead_lettered_marked_copy_does_not_skip() {
        let ordered = Utc::now();
        let now = ordered + secs(1);
        let dead_lettered = with_headers(&[
            marked(),
            ("x-death", AMQPValue::FieldArray(Default::default())),
        ]);
        let plan = plan_at(&dead_lettered, false, ordered, now);
        assert_eq!(plan, waits(ordered, now));
    }

    #[test]
    fn a_first_copy_too_late_or_too_early_takes_the_lease_without_waiting() {
        let ordered = Utc::now();
        let properties = with_headers(&[marked()]);
        let request = request(Some(ordered));
        // Under a second left before its cut-off.
        let late = ordered + chrono::Duration::from_std(FIRST_CREATE_BOUND).unwrap()
            - chrono::Duration::milliseconds(500);
        assert_eq!(plan(&properties, false, &request, late, ALLOWANCE), NO_WAIT);
        // An order accepted a minute "from now": order-api's clock is off.
        let early = ordered - secs(60);
        assert_eq!(
            plan(&properties, false, &request, early, ALLOWANCE),
            NO_WAIT
        );
    }

    #[test]
    fn a_request_without_its_order_time_always_takes_the_lease_at_once() {
        let plan = plan(
            &with_headers(&[marked()]),
            false,
            &request(None),
            Utc::now(),
            ALLOWANCE,
        );
        assert_eq!(plan, NO_WAIT);
    }
}
