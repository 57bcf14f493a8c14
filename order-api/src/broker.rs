//! The broker session supervisor: connects (with backoff), declares the topology, runs the
//! outbox relay and the results consumer, and reconnects when either fails. `/readyz`
//! reads [`BrokerSettings`]'s `up` flag.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use provisioner_contract::amqp::connect_with_backoff;
use provisioner_contract::{Publisher, Topology};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::{relay, results};

/// What the supervisor needs.
pub struct BrokerSettings {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// AMQP names.
    pub topology: Topology,
    /// Set while a session is up.
    pub up: Arc<AtomicBool>,
    /// Wakes the relay when an order is committed.
    pub relay_wakeup: Arc<Notify>,
}

/// Runs sessions until `shutdown` is cancelled.
pub async fn run(settings: BrokerSettings, store: Store, shutdown: CancellationToken) {
    loop {
        let Some(connection) =
            connect_with_backoff(&settings.amqp_url, "order-api", shutdown.cancelled()).await
        else {
            return;
        };
        tracing::info!("connected to RabbitMQ");
        let outcome = tokio::select! {
            outcome = session(&connection, &settings, &store) => outcome,
            _ = shutdown.cancelled() => Ok(()),
        };
        settings.up.store(false, Ordering::Relaxed);
        let _ = connection.close(200, "order-api closing".into()).await;
        match outcome {
            Ok(()) => return,
            Err(error) => tracing::error!("broker session ended: {error:#}; reconnecting"),
        }
    }
}

async fn session(
    connection: &lapin::Connection,
    settings: &BrokerSettings,
    store: &Store,
) -> anyhow::Result<()> {
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    settings
        .topology
        .declare_common(&channel)
        .await
        .context("declaring the topology")?;
    let publisher = Publisher::open(connection, &settings.topology)
        .await
        .context("opening the publishing channel")?;
    settings.up.store(true, Ordering::Relaxed);
    tokio::select! {
        outcome = relay::run(store.clone(), publisher, settings.relay_wakeup.clone()) => outcome,
        outcome = results::run(connection, &settings.topology, store.clone()) => outcome,
    }
}
