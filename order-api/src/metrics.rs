//! `/metrics`: order-api's Prometheus series (OpenMetrics text), through `prometheus-client`.
//!
//! - `provisioner_orders{status}`: orders in each status (read from the database at scrape).
//! - `provisioner_orphans{state}`: the orphan sweep's records in each state (same).
//! - `provisioner_dead_letters_total{queue}`: messages order-api dead-lettered (poison on the
//!   results queue).
//! - `provisioner_dead_letter_queue_messages`: messages waiting in `provision.dead`, whoever
//!   put them there (a host's poison requests, order-api's, the broker's delivery limit);
//!   sampled from the broker every [`DEAD_LETTER_SAMPLE_EVERY`]. Alert when it is above 0:
//!   every message there is something a person should look at.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use provisioner_contract::Topology;

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

/// order-api's series; cheap to share.
pub struct Metrics {
    registry: Registry,
    dead_letters: Family<QueueLabel, Counter>,
    dead_letter_queue: Gauge,
    orders: Family<StatusLabel, Gauge>,
    orphans: Family<StateLabel, Gauge>,
}

impl Metrics {
    /// A registry with every series at zero.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("provisioner");
        let dead_letters = Family::<QueueLabel, Counter>::default();
        let dead_letter_queue = Gauge::default();
        let orders = Family::<StatusLabel, Gauge>::default();
        let orphans = Family::<StateLabel, Gauge>::default();
        registry.register(
            "dead_letters",
            "Messages order-api sent to the dead-letter queue, by the queue they came from",
            dead_letters.clone(),
        );
        registry.register(
            "dead_letter_queue_messages",
            "Messages waiting in the dead-letter queue (from any program or the broker)",
            dead_letter_queue.clone(),
        );
        registry.register("orders", "Orders by status", orders.clone());
        registry.register(
            "orphans",
            "Servers no order owns, as the orphan sweep recorded them, by state",
            orphans.clone(),
        );
        Arc::new(Self {
            registry,
            dead_letters,
            dead_letter_queue,
            orders,
            orphans,
        })
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
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .context("encoding the metrics")?;
        Ok(text)
    }
}

/// Reads the dead-letter queue's length every [`DEAD_LETTER_SAMPLE_EVERY`] on its own
/// channel, until the broker session ends.
pub async fn sample_dead_letters(
    connection: &lapin::Connection,
    topology: &Topology,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let channel = connection
        .create_channel()
        .await
        .context("opening the metrics channel")?;
    let queue = topology.dead_letter_queue();
    loop {
        let state = channel
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..lapin::options::QueueDeclareOptions::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .with_context(|| format!("reading the length of {queue}"))?;
        metrics
            .dead_letter_queue
            .set(i64::from(state.message_count()));
        tokio::time::sleep(DEAD_LETTER_SAMPLE_EVERY).await;
    }
}
