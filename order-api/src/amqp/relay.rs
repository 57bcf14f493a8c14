//! The outbox relay: publishes committed creation requests with confirms.
//!
//! A row leaves the outbox only after the broker confirmed the message onto a queue. An
//! unroutable (`mandatory` return) or nacked message stays, with a growing delay before
//! the next try (on a new channel: see [`Publisher`]); a broken channel ends the session
//! and the supervisor reconnects. So an
//! order accepted while RabbitMQ is down goes out once it is back.
//!
//! The first publish of an order's first creation request carries the lease-free mark
//! ([`LEASE_FREE_HEADER`]): read and cleared together ([`Store::due_outbox`]), so no later
//! publish of it does.

use std::sync::Arc;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::AMQPValue;
use provisioner_contract::{Envelope, LEASE_FREE_HEADER, PublishError, Publisher};
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::store::{OutboxMessage, Store};

/// Most messages published per round (all in flight at once, then confirmed together).
const BATCH: u32 = 256;
/// How often the outbox is checked when nobody wakes the relay.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Delay before the next try of a message that failed `attempts` times: 1 s doubling to 30 s.
pub fn retry_delay(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.min(5)).min(Duration::from_secs(30))
}

/// Runs until publishing fails at the channel level (then the session must reconnect).
pub async fn run(
    store: Store,
    publisher: Publisher,
    wakeup: Arc<Notify>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    loop {
        let due = store.due_outbox(BATCH).await?;
        if due.is_empty() {
            tokio::select! {
                _ = wakeup.notified() => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
            continue;
        }
        publish_batch(&store, &publisher, due, &metrics).await?;
    }
}

/// The message's AMQP properties: its envelope's, and the lease-free mark on the first
/// publish of an order's first creation request.
fn properties(envelope: &Envelope, message: &OutboxMessage) -> BasicProperties {
    let properties = envelope.properties();
    if !message.lease_free {
        return properties;
    }
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(LEASE_FREE_HEADER.into(), AMQPValue::Boolean(true));
    properties.with_headers(headers)
}

/// Publishes a batch with all confirms in flight at once, then records the outcome.
async fn publish_batch(
    store: &Store,
    publisher: &Publisher,
    due: Vec<OutboxMessage>,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(due.len());
    let mut unsent = Vec::new();
    let mut channel_error = None;
    for message in due {
        if channel_error.is_some() {
            unsent.push(message);
            continue;
        }
        let envelope = Envelope {
            message_id: message.message_id,
            correlation_id: Some(message.order_id),
            traceparent: message.traceparent.clone(),
        };
        match publisher
            .send_with(
                &message.routing_key,
                properties(&envelope, &message),
                &message.body,
            )
            .await
        {
            Ok(confirm) => pending.push((message, confirm)),
            Err(error) => {
                channel_error = Some(error);
                unsent.push(message);
            }
        }
    }
    let mut published = Vec::with_capacity(pending.len());
    for (message, confirm) in pending {
        match publisher.confirmed(confirm, &message.routing_key).await {
            Ok(()) => published.push(message),
            Err(PublishError::Amqp(error)) => {
                channel_error.get_or_insert(error);
                unsent.push(message);
            }
            Err(refused) => {
                metrics.published("refused", 1);
                let delay = retry_delay(message.attempts);
                tracing::warn!(order_id = %message.order_id, retry_in = ?delay, "publish refused: {refused}");
                store
                    .publish_failed(&message, &refused.to_string(), delay)
                    .await?;
            }
        }
    }
    // Record what did land even if the channel then broke, so it is not sent twice; what did
    // not is due again at once (not after its claim: see `Store::due_outbox`).
    store.mark_published(&published).await?;
    store.release(&unsent).await?;
    metrics.published("confirmed", published.len());
    if !published.is_empty() {
        tracing::debug!(count = published.len(), "published creation requests");
    }
    match channel_error {
        Some(error) => Err(anyhow::Error::from(error).context("publishing creation requests")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retries back off from 1 s and never wait more than 30 s.
    #[test]
    fn retry_delay_doubles_up_to_a_cap() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(1), Duration::from_secs(2));
        assert_eq!(retry_delay(4), Duration::from_secs(16));
        assert_eq!(retry_delay(5), Duration::from_secs(30));
        assert_eq!(retry_delay(60), Duration::from_secs(30));
    }
}
