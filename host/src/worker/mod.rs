//! The host's AMQP side: one consumer per vendor, each with a prefetch equal to that
//! vendor's in-flight budget; one task per delivery that creates, publishes progress,
//! waits, publishes the result (confirmed) and only then acks.
//!
//! If the host dies at any point before the ack, RabbitMQ redelivers the request and the
//! plugin adopts the server it already made (the order id is its idempotency key), so no
//! server is made twice. A connection failure ends the session: in-flight tasks are
//! dropped, the connection is closed (their deliveries go back to the queue) and the host
//! reconnects with backoff.
//!
//! Its files, one per concern, are listed in the crate's `# Layout` ([`crate`]).

mod announce;
mod consumers;
mod delivery;
mod first_copy;
pub mod lease;
mod order;
mod polling;
pub mod result_batches;
mod retry;
mod session;
mod sweep;
mod validate_replies;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use provisioner_contract::amqp::connect_with_backoff;
use provisioner_contract::{Envelope, HostMessage, Publisher, Topology};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::plugin_folder::PluginSet;
use crate::plugin_output;
use lease::Leases;
use order::SessionLeases;

pub use polling::PollPolicy;
pub use retry::RetryPolicy;

/// What the worker needs besides the plugins.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The brokers to connect to (one, or a cluster's nodes).
    pub amqp_url: provisioner_contract::amqp::BrokerAddresses,
    /// AMQP names.
    pub topology: Topology,
    /// This host's name.
    pub host_id: String,
    /// How booting servers are polled.
    pub poll: PollPolicy,
    /// Time between vendor announcements.
    pub announce_interval: Duration,
    /// How failed creates are retried.
    pub retry: RetryPolicy,
    /// How failed cancels (a user's, or the clean-up after a failed order) are retried.
    pub cleanup_retry: RetryPolicy,
    /// Time in-flight work gets to finish on shutdown.
    pub shutdown_grace: Duration,
    /// How far the hosts' clocks may disagree: a copy of a create waits this much longer
    /// than a lease-free first copy's cut-off before it starts (`first_copy`).
    pub clock_skew_allowance: Duration,
    /// The most results one message carries (`result_batches`); 1 sends each alone.
    pub result_batch_max: usize,
    /// Where the broker address the session is on is shown.
    pub metrics: Arc<crate::metrics::HostMetrics>,
}

/// Serves the plugins `plugins` holds (and follows its changes) until `shutdown` is
/// cancelled, reconnecting after broker failures.
pub async fn run(
    settings: WorkerSettings,
    plugins: watch::Receiver<PluginSet>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let leases = Arc::new(Leases::default());
    // The address to try first: after a lost connection, the next in the list.
    let mut start = 0;
    loop {
        let Some((connection, address)) = connect_with_backoff(
            &settings.amqp_url,
            start,
            &format!("provisioner-host {}", settings.host_id),
            shutdown.cancelled(),
        )
        .await
        else {
            return Ok(());
        };
        start = address + 1;
        let node = settings.amqp_url.node(address);
        settings.metrics.broker_connected(Some(&node.address));
        let connection = Arc::new(connection);
        let session_leases = SessionLeases {
            connection: connection.clone(),
            leases: leases.clone(),
        };
        match session::run(
            &connection,
            &settings,
            &session_leases,
            plugins.clone(),
            &shutdown,
        )
        .await
        {
            Ok(()) => {
                let _ = connection.close(200, "host shutting down".into()).await;
                return Ok(());
            }
            Err(error) => {
                settings.metrics.broker_connected(None);
                tracing::error!("broker session ended: {error:#}; reconnecting");
                // Hands every unacked delivery back to the queue.
                let _ = connection.close(320, "host reconnecting".into()).await;
            }
        }
    }
}

/// Publishes a message that is about no order (announcements, inventories), confirmed.
async fn publish_host_message(
    publisher: &Publisher,
    routing_key: &str,
    message: &HostMessage,
) -> anyhow::Result<()> {
    let envelope = Envelope {
        message_id: uuid::Uuid::new_v4(),
        correlation_id: None,
        traceparent: None,
    };
    // Bounded like an order's updates: the plugin-made part of an oversized message is
    // replaced, so it cannot be refused by the broker and end the session.
    let bounded = plugin_output::bounded_body(message);
    if let Some(size) = bounded.replaced {
        tracing::error!(
            size,
            limit = plugin_output::MAX_UPDATE_BYTES,
            "a message too large to publish on {routing_key}; its plugin-made part was replaced"
        );
    }
    publisher
        .publish(routing_key, &envelope, &bounded.body)
        .await
        .with_context(|| format!("publishing {routing_key}"))
}
