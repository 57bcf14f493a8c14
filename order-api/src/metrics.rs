//! `/metrics`: order-api's Prometheus series (OpenMetrics text), through `prometheus-client`.
//!
//! - `provisioner_orders{status}`: orders in each status (read from the database at scrape).
//! - `provisioner_orphans{state}`: the orphan sweep's records in each state (same).
//! - `provisioner_placement_moves{reason}`: servers moved to their order's next placement
//!   candidate so far, by the fault code that moved them (same; it only grows).
//! - `provisioner_dead_letters_total{queue}`: messages order-api dead-lettered (poison on the
//!   results queue).
//! - `provisioner_dead_letter_queue_messages`: messages waiting in `provision.dead`, whoever
//!   put them there (a host's poison requests, order-api's, the broker's delivery limit),
//!   not yet recorded by order-api ([`crate::amqp::dead_letter_recorder`]: it stays near 0
//!   while order-api runs); sampled from the broker every [`DEAD_LETTER_SAMPLE_EVERY`].
//! - `provisioner_dead_letters_recorded`: dead letters recorded and not yet dismissed
//!   (`GET /v1/dead-letters`), read from the database at scrape. Alert when either is above
//!   0: every dead letter is something a person should look at.
//! - `provisioner_queue_messages{queue}`: messages waiting in the results queue and in each
//!   announced vendor's request queue (consumer lag), sampled with the dead-letter queue.
//! - `provisioner_accept_seconds`: histogram of `POST /v1/orders` answered `202`, from the
//!   request to the answer (the order committed).
//! - `provisioner_publishes_total{outcome}`: creation requests the outbox relay published,
//!   `confirmed` by the broker or `refused` (nacked or unroutable, tried again later).
//! - `provisioner_order_updates_total{vendor,kind}`: updates from the hosts, by kind
//!   (`provisioning`, `active`, `failed`, `retrying` (a create retried after a passing
//!   fault), `deleted`, `delete_failed`, `cancelled`, `cancel_failed`).
//! - `provisioner_validations_total{verdict,checked_by}`: new orders checked with the
//!   vendor's plugin before they were accepted: `valid`, `refused` (a 422), `unchecked` (no
//!   verdict; accepted unchecked); `checked_by` a `host`, or `order-api` itself
//!   (`--validate-plugins-dir`).
//! - `provisioner_webhook_calls_total{outcome}`: webhook attempts: `delivered`, `failed`
//!   (to be tried again), `given_up`.
//! - `provisioner_event_streams`: open `/events` streams.
//! - `provisioner_event_stream_reads_total`: database reads for open `/events` streams (a
//!   stream reads when its order has news, and once in a while to be safe; never on a
//!   timer of its own).
//! - `provisioner_tenant_live_servers{tenant}`, `provisioner_tenant_orders_in_flight{tenant}`:
//!   each tenant's usage over all vendors, as its quotas count it (read at scrape; tenants
//!   with nothing live have no series).
//! - `provisioner_tenant_quota_limit{tenant,vendor,quota}`: each quota an admin set
//!   (`vendor` is `*` for a quota over all vendors; `quota` is `max_live_servers` or
//!   `max_orders_in_flight`). Alert on usage over limit above, say, 0.9.
//! - `provisioner_faults_last_hour{code}`: faults the hosts reported in the last hour by
//!   code (each failed order's, and each create attempt's that was retried), counted by this
//!   instance in one-minute steps ([`FaultWindow`]); it starts from nothing when the instance
//!   starts, and each order-api counts the results it applied.
//! - `provisioner_orders_refused_total{reason}`: `POST /v1/orders` refused for a tenant's
//!   `quota_exceeded` or `rate_limited`.
//! - `provisioner_broker_connected{address}`: 1 for the broker address (`AMQP_URL` entry,
//!   password hidden) the AMQP session is on; no series between sessions.
//! - `provisioner_log_lines_dropped_total`: log lines dropped because the reader of stdout
//!   fell behind (`provisioner_process::init_logging`); above 0, logs are missing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use provisioner_contract::Topology;
use provisioner_contract::amqp::BrokerNode;

use crate::lifecycle::OrderStatus;
use crate::store::{OrphanState, Store};

/// How often the dead-letter queue's length is read from the broker.
pub const DEAD_LETTER_SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// A queue a message came from.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// The queue's name.
    pub queue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateLabel {
    vendor: String,
    kind: String,
}

/// order-api's series; cheap to share.
pub struct Metrics {
    registry: Registry,
    dead_letters: Family<QueueLabel, Counter>,
    dead_letter_queue: Gauge,
    dead_letters_recorded: Gauge,
    orders: Family<StatusLabel, Gauge>,
    orphans: Family<StateLabel, Gauge>,
    placement_moves: Family<ReasonLabel, Gauge>,
    queue_messages: Family<QueueLabel, Gauge>,
    accept_seconds: Histogram,
    publishes: Family<OutcomeLabel, Counter>,
    order_updates: Family<UpdateLabel, Counter>,
    validations: Family<VerdictLabel, Counter>,
    webhook_calls: Family<OutcomeLabel, Counter>,
    event_streams: Gauge,
    event_stream_reads: Counter,
    broker_connected: Family<AddressLabel, Gauge>,
    tenant_live_servers: Family<TenantLabel, Gauge>,
    tenant_orders_in_flight: Family<TenantLabel, Gauge>,
    tenant_quota_limit: Family<QuotaLabel, Gauge>,
    orders_refused: Family<ReasonLabel, Counter>,
    faults_last_hour: Family<CodeLabel, Gauge>,
    fault_window: FaultWindow,
    /// The broker address the session is on (set by the broker session, shown here and by
    /// `/readyz`).
    pub broker_node: BrokerNode,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AddressLabel {
    address: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QuotaLabel {
    tenant: String,
    vendor: String,
    quota: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

/// Faults counted by code over the last hour, in one-minute steps: each minute's counts are
/// kept until they are an hour old.
#[derive(Debug, Default)]
pub struct FaultWindow {
    minutes: std::sync::Mutex<std::collections::VecDeque<(i64, HashMap<String, u64>)>>,
}

impl FaultWindow {
    /// How many one-minute steps the window holds.
    const MINUTES: i64 = 60;

    /// Counts one fault of `code` at `minute` (minutes since the Unix epoch).
    fn record(&self, code: &str, minute: i64) {
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        if minutes.back().is_none_or(|(last, _)| *last != minute) {
            minutes.push_back((minute, HashMap::new()));
        }
        if let Some((_, counts)) = minutes.back_mut() {
            *counts.entry(code.to_string()).or_default() += 1;
        }
        Self::forget_before(&mut minutes, minute);
    }

    /// The counts by code of the hour up to `minute`.
    fn counts(&self, minute: i64) -> HashMap<String, u64> {
        let mut minutes = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        Self::forget_before(&mut minutes, minute);
        let mut total = HashMap::new();
        for (_, counts) in minutes.iter() {
            for (code, count) in counts {
                *total.entry(code.clone()).or_default() += count;
            }
        }
        total
    }

    fn forget_before(
        minutes: &mut std::collections::VecDeque<(i64, HashMap<String, u64>)>,
        minute: i64,
    ) {
        while minutes
            .front()
            .is_some_and(|(first, _)| *first <= minute - Self::MINUTES)
        {
            minutes.pop_front();
        }
    }
}

/// Minutes since the Unix epoch, now.
fn this_minute() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(60)
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: String,
    checked_by: &'static str,
}

impl Metrics {
    /// A registry with every series at zero.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("provisioner");
        registry.register_collector(Box::new(provisioner_process::LogLinesDropped));
        let dead_letters = Family::<QueueLabel, Counter>::default();
        let dead_letter_queue = Gauge::default();
        let dead_letters_recorded = Gauge::default();
        let orders = Family::<StatusLabel, Gauge>::default();
        let orphans = Family::<StateLabel, Gauge>::default();
        let placement_moves = Family::<ReasonLabel, Gauge>::default();
        let queue_messages = Family::<QueueLabel, Gauge>::default();
        // 0.5 ms to about 4 s.
        let accept_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let publishes = Family::<OutcomeLabel, Counter>::default();
        let order_updates = Family::<UpdateLabel, Counter>::default();
        let faults_last_hour = Family::<CodeLabel, Gauge>::default();
        registry.register(
            "faults_last_hour",
            "Faults the hosts reported in the last hour, by code (failed orders and retried \
             attempts; counted by this instance since it started)",
            faults_last_hour.clone(),
        );
        let validations = Family::<VerdictLabel, Counter>::default();
        let webhook_calls = Family::<OutcomeLabel, Counter>::default();
        let event_streams = Gauge::default();
        let event_stream_reads = Counter::default();
        registry.register(
            "event_streams",
            "Open /events streams",
            event_streams.clone(),
        );
        registry.register(
            "event_stream_reads",
            "Database reads for open /events streams",
            event_stream_reads.clone(),
        );
        let broker_connected = Family::<AddressLabel, Gauge>::default();
        registry.register(
            "broker_connected",
            "1 for the broker address (password hidden) the AMQP session is on",
            broker_connected.clone(),
        );
        registry.register(
            "validations",
            "New orders checked with the vendor's plugin before acceptance, by verdict (valid, refused, unchecked) and where (checked_by: host, order-api)",
            validations.clone(),
        );
        registry.register(
            "webhook_calls",
            "Webhook attempts by outcome (delivered, failed: tried again, given_up)",
            webhook_calls.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages waiting in the results queue and each vendor's request queue",
            queue_messages.clone(),
        );
        registry.register(
            "accept_seconds",
            "Time from a POST /v1/orders to its 202 answer (the order committed)",
            accept_seconds.clone(),
        );
        registry.register(
            "publishes",
            "Creation requests the outbox relay published, by outcome (confirmed, refused)",
            publishes.clone(),
        );
        registry.register(
            "order_updates",
            "Updates from the hosts, by vendor and kind (retrying: a create tried again)",
            order_updates.clone(),
        );
        registry.register(
            "dead_letters",
            "Messages order-api sent to the dead-letter queue, by the queue they came from",
            dead_letters.clone(),
        );
        registry.register(
            "dead_letter_queue_messages",
            "Messages waiting in the dead-letter queue (from any program or the broker) that \
             order-api has not recorded yet",
            dead_letter_queue.clone(),
        );
        registry.register(
            "dead_letters_recorded",
            "Dead letters recorded and not dismissed (GET /v1/dead-letters): alert when above 0",
            dead_letters_recorded.clone(),
        );
        registry.register("orders", "Orders by status", orders.clone());
        let tenant_live_servers = Family::<TenantLabel, Gauge>::default();
        registry.register(
            "tenant_live_servers",
            "Servers of each tenant that exist or are on their way (what its quotas count)",
            tenant_live_servers.clone(),
        );
        let tenant_orders_in_flight = Family::<TenantLabel, Gauge>::default();
        registry.register(
            "tenant_orders_in_flight",
            "Orders of each tenant in progress (what its quotas count)",
            tenant_orders_in_flight.clone(),
        );
        let tenant_quota_limit = Family::<QuotaLabel, Gauge>::default();
        registry.register(
            "tenant_quota_limit",
            "Each quota an admin set, by tenant, vendor (* for all) and quota",
            tenant_quota_limit.clone(),
        );
        let orders_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "orders_refused",
            "POST /v1/orders refused for a tenant's limits, by reason (quota_exceeded, rate_limited)",
            orders_refused.clone(),
        );
        registry.register(
            "orphans",
            "Servers no order owns, as the orphan sweep recorded them, by state",
            orphans.clone(),
        );
        registry.register(
            "placement_moves",
            "Servers moved to their order's next placement candidate so far, by the fault that moved them",
            placement_moves.clone(),
        );
        Arc::new(Self {
            registry,
            dead_letters,
            dead_letter_queue,
            dead_letters_recorded,
            orders,
            orphans,
            placement_moves,
            queue_messages,
            accept_seconds,
            publishes,
            order_updates,
            validations,
            webhook_calls,
            event_streams,
            event_stream_reads,
            broker_connected,
            tenant_live_servers,
            tenant_orders_in_flight,
            tenant_quota_limit,
            orders_refused,
            faults_last_hour,
            fault_window: FaultWindow::default(),
            broker_node: BrokerNode::default(),
        })
    }

    /// An `/events` stream opened (`1`) or closed (`-1`).
    pub fn event_streams_changed(&self, by: i64) {
        self.event_streams.inc_by(by);
    }

    /// An `/events` stream read the database.
    pub fn event_stream_read(&self) {
        self.event_stream_reads.inc();
    }

    /// A new order's check with the vendor's plugin ended with `verdict`, made by a host or
    /// (`checked_by` `order-api`) in this process.
    pub fn validated(&self, verdict: &str, checked_by: &'static str) {
        self.validations
            .get_or_create(&VerdictLabel {
                verdict: verdict.to_string(),
                checked_by,
            })
            .inc();
    }

    /// A webhook attempt ended with `outcome`.
    pub fn webhook_call(&self, outcome: &str) {
        self.webhook_calls
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records an accepted order's time from request to answer.
    pub fn accepted(&self, took: Duration) {
        self.accept_seconds.observe(took.as_secs_f64());
    }

    /// Counts published creation requests: `confirmed` or `refused`.
    pub fn published(&self, outcome: &str, count: usize) {
        self.publishes
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc_by(count as u64);
    }

    /// Counts an update from a host.
    pub fn order_update(&self, vendor: &str, kind: &str) {
        self.order_updates
            .get_or_create(&UpdateLabel {
                vendor: vendor.to_string(),
                kind: kind.to_string(),
            })
            .inc();
    }

    /// Counts a fault a host reported (a failed order's, or a retried attempt's) in the last
    /// hour's window.
    pub fn fault(&self, code: &str) {
        self.fault_window.record(code, this_minute());
    }

    /// Counts an order refused for a tenant's limits (`quota_exceeded`, `rate_limited`).
    pub fn order_refused(&self, reason: &str) {
        self.orders_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts a message dead-lettered from `queue`.
    pub fn dead_lettered(&self, queue: &str) {
        self.dead_letters
            .get_or_create(&QueueLabel {
                queue: queue.to_string(),
            })
            .inc();
    }

    /// Renders every series, reading the database-backed ones now.
    pub async fn render(&self, store: &Store) -> anyhow::Result<String> {
        let by_status = store.count_orders_by_status().await?;
        for status in OrderStatus::ALL {
            let count = by_status.get(&status).copied().unwrap_or(0);
            self.orders
                .get_or_create(&StatusLabel {
                    status: status.as_str().into(),
                })
                .set(count);
        }
        let by_state = store.count_orphans_by_state().await?;
        for state in OrphanState::ALL {
            let count = by_state.get(&state).copied().unwrap_or(0);
            self.orphans
                .get_or_create(&StateLabel {
                    state: state.as_str().into(),
                })
                .set(count);
        }
        self.dead_letters_recorded
            .set(store.count_dead_letters().await?);
        for (reason, moves) in store.placement_moves().await? {
            self.placement_moves
                .get_or_create(&ReasonLabel { reason })
                .set(moves);
        }
        self.tenant_live_servers.clear();
        self.tenant_orders_in_flight.clear();
        for (tenant, usage) in store.usage_by_tenant().await? {
            let label = TenantLabel { tenant };
            let gauge = |n: u64| n.min(i64::MAX as u64) as i64;
            self.tenant_live_servers
                .get_or_create(&label)
                .set(gauge(usage.live_servers));
            self.tenant_orders_in_flight
                .get_or_create(&label)
                .set(gauge(usage.orders_in_flight));
        }
        self.tenant_quota_limit.clear();
        for (tenant, vendor, limits) in store.all_quotas().await? {
            let vendor = vendor.unwrap_or_else(|| "*".into());
            for (quota, limit) in [
                ("max_live_servers", limits.max_live_servers),
                ("max_orders_in_flight", limits.max_orders_in_flight),
            ] {
                if let Some(limit) = limit {
                    let label = QuotaLabel {
                        tenant: tenant.clone(),
                        vendor: vendor.clone(),
                        quota: quota.into(),
                    };
                    let limit = limit.min(i64::MAX as u64) as i64;
                    self.tenant_quota_limit.get_or_create(&label).set(limit);
                }
            }
        }
        self.faults_last_hour.clear();
        for (code, count) in self.fault_window.counts(this_minute()) {
            self.faults_last_hour
                .get_or_create(&CodeLabel { code })
                .set(count.min(i64::MAX as u64) as i64);
        }
        self.broker_connected.clear();
        if let Some(node) = self.broker_node.get() {
            self.broker_connected
                .get_or_create(&AddressLabel {
                    address: node.address,
                })
                .set(1);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .context("encoding the metrics")?;
        Ok(text)
    }
}

/// Reads the lengths of the dead-letter queue, the results queue and each announced vendor's
/// request queue every [`DEAD_LETTER_SAMPLE_EVERY`] on its own channel, until the broker
/// session ends.
pub async fn sample_queues(
    connection: &lapin::Connection,
    topology: &Topology,
    metrics: &Metrics,
    store: &Store,
) -> anyhow::Result<()> {
    let mut channel = connection
        .create_channel()
        .await
        .context("opening the metrics channel")?;
    let dead = topology.dead_letter_queue();
    loop {
        metrics
            .dead_letter_queue
            .set(i64::from(queue_length(&channel, &dead).await?));
        let mut lagging = vec![topology.results_queue()];
        if let Ok(vendors) = store.vendors().await {
            lagging.extend(vendors.iter().map(|v| topology.request_queue(&v.vendor)));
        }
        for queue in lagging {
            match queue_length(&channel, &queue).await {
                Ok(length) => {
                    metrics
                        .queue_messages
                        .get_or_create(&QueueLabel { queue })
                        .set(i64::from(length));
                }
                // Not declared (yet): a vendor whose host has not run on this broker. The
                // refused passive declare closed the channel; open another.
                Err(_) => {
                    channel = connection
                        .create_channel()
                        .await
                        .context("reopening the metrics channel")?;
                }
            }
        }
        tokio::time::sleep(DEAD_LETTER_SAMPLE_EVERY).await;
    }
}

/// Messages ready in `queue`.
async fn queue_length(channel: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    provisioner_contract::amqp::ready_messages(channel, queue)
        .await
        .with_context(|| format!("reading the length of {queue}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Faults count by code for an hour, then drop out minute by minute.
    #[test]
    fn the_fault_window_holds_an_hour() {
        let window = FaultWindow::default();
        window.record("no_capacity", 1_000);
        window.record("no_capacity", 1_000);
        window.record("vendor_unavailable", 1_030);
        let counts = window.counts(1_030);
        assert_eq!(counts.get("no_capacity"), Some(&2));
        assert_eq!(counts.get("vendor_unavailable"), Some(&1));
        // Minute 1,000 is an hour old at 1,060; 1,030 until 1,090.
        let counts = window.counts(1_060);
        assert_eq!(counts.get("no_capacity"), None);
        assert_eq!(counts.get("vendor_unavailable"), Some(&1));
        assert!(window.counts(1_090).is_empty());
    }
}
