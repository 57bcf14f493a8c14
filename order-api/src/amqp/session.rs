//! The broker session supervisor: connects (with backoff), declares the topology, runs the
//! outbox relay, the results consumer, the orphan sweeper, the dead-letter recorder and the
//! queue sampler, and reconnects when one fails. `/readyz`
//! reads [`BrokerSettings`]'s `up` flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use provisioner_contract::amqp::connect_with_backoff;
use provisioner_contract::{Publisher, Topology};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::orphan_sweep::{self, SweepSettings};
use super::plugin_check::{Validator, ValidatorSlot};
use super::{dead_letter_recorder, relay, results};
use crate::metrics::{self, Metrics};
use crate::store::{OrphanAction, Store};

/// What the supervisor needs.
pub struct BrokerSettings {
    /// The brokers to connect to (one, or a cluster's nodes).
    pub amqp_url: provisioner_contract::amqp::BrokerAddresses,
    /// AMQP names.
    pub topology: Topology,
    /// Set while a session is up.
    pub up: Arc<AtomicBool>,
    /// Wakes the relay when an order is committed.
    pub relay_wakeup: Arc<Notify>,
    /// When orphan sweeps run.
    pub sweep: SweepSettings,
    /// What happens to the orphans they find.
    pub orphan_action: OrphanAction,
    /// The series `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// Wakes the webhook deliverer when an order settled.
    pub webhook_wakeup: Arc<Notify>,
    /// Where the session's validation channel goes, for the handlers.
    pub validator: ValidatorSlot,
}

/// Runs sessions until `shutdown` is cancelled.
pub async fn run(settings: BrokerSettings, store: Store, shutdown: CancellationToken) {
    // The address to try first: after a lost connection, the next in the list.
    let mut start = 0;
    loop {
        let Some((connection, address)) =
            connect_with_backoff(&settings.amqp_url, start, "order-api", shutdown.cancelled())
                .await
        else {
            return;
        };
        start = address + 1;
        settings
            .metrics
            .broker_node
            .set(Some(settings.amqp_url.node(address)));
        let connection = Arc::new(connection);
        let outcome = session(&connection, &settings, &store, &shutdown).await;
        settings.up.store(false, Ordering::Relaxed);
        settings.metrics.broker_node.set(None);
        settings.validator.set(None).await;
        let _ = connection.close(200, "order-api closing".into()).await;
        match outcome {
            Ok(()) => return,
            Err(error) => tracing::error!("broker session ended: {error:#}; reconnecting"),
        }
    }
}

/// One connection's life: declare, relay and consume; `Ok` only on shutdown.
async fn session(
    connection: &Arc<lapin::Connection>,
    settings: &BrokerSettings,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    settings
        .topology
        .declare_order_api(connection)
        .await
        .context("declaring the topology")?;
    let publisher = Publisher::open(connection, settings.topology.requests_exchange())
        .await
        .context("opening the publishing channel")?;
    let consuming = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    let dead_letters = connection
        .create_channel()
        .await
        .context("opening the dead-letter channel")?;
    let validator = Validator::open(connection, &settings.topology).await?;
    settings.validator.set(Some(Arc::new(validator))).await;
    settings.up.store(true, Ordering::Relaxed);
    let outcome = tokio::select! {
        outcome = relay::run(store.clone(), publisher.clone(), settings.relay_wakeup.clone(), settings.metrics.clone()) => outcome,
        outcome = results::run(&consuming, &publisher, &settings.topology, store.clone(), settings.orphan_action, &settings.metrics, [&settings.relay_wakeup, &settings.webhook_wakeup]) => outcome,
        outcome = dead_letter_recorder::run(&dead_letters, &settings.topology, store.clone()) => outcome,
        outcome = metrics::sample_queues(connection, &settings.topology, &settings.metrics, store) => outcome,
        outcome = orphan_sweep::run(store.clone(), publisher.clone(), settings.sweep.clone()) => outcome,
        _ = shutdown.cancelled() => Ok(()),
    };
    // Closing the channels first lets the broker requeue cleanly before the connection goes.
    let _ = consuming.close(200, "order-api closing".into()).await;
    let _ = dead_letters.close(200, "order-api closing".into()).await;
    let _ = publisher.close().await;
    outcome
}
