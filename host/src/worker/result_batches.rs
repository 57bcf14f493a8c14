//! Results that are ready together go out together: order tasks hand their final update to
//! one publishing task per session, which sends whatever has gathered meanwhile as one
//! message ([`HostMessage::OrderUpdates`], one per vendor) and tells each task once the
//! broker confirmed it; only then does the task ack its request, as before.
//!
//! A result on the results queue (a quorum queue, persistent, confirmed) costs the broker
//! about the same whatever its size: one message for many results is most of that cost
//! saved per result (BENCHMARKS.md, *Results in batches*). Nothing waits to fill a batch:
//! the first result goes at once, and the ones that become ready while its publish waits
//! for the broker's confirm go in the next message. Under light load every result goes
//! alone, as a plain [`HostMessage::OrderUpdate`], exactly as before.
//!
//! Nothing changes for reliability: a task acks its request only after the message with its
//! result is confirmed, so a host that dies before that has its requests redelivered, and
//! order-api applies every update as a compare-and-set, once.

use std::collections::BTreeMap;

use anyhow::Context;
use provisioner_contract::{
    Envelope, HostMessage, OrderUpdate, OrderUpdateBatch, Publisher, encode,
};
use tokio::sync::{mpsc, oneshot};

use crate::plugin_output::MAX_UPDATE_BYTES;

/// The most bytes of updates one batch carries (each update is at most [`MAX_UPDATE_BYTES`]):
/// far below what the broker takes in one message, and large enough for hundreds of
/// ordinary results.
pub const MAX_BATCH_BYTES: usize = 4 * MAX_UPDATE_BYTES;

/// A result handed to the publishing task.
struct ReadyResult {
    routing_key: String,
    envelope: Envelope,
    update: OrderUpdate,
    /// The update encoded as a message of its own (what goes out when it goes alone).
    body: Vec<u8>,
    /// Told once the message carrying it is confirmed (or why it failed).
    confirmed: oneshot::Sender<Result<(), String>>,
}

/// Publishes a session's results, gathering the ones ready together into one message.
/// Cloned into every order task; the publishing task ends when the last clone is dropped.
#[derive(Clone)]
pub struct ResultBatcher {
    /// `None` when results go one per message (`max_results` 1): published by their tasks.
    ready: Option<mpsc::UnboundedSender<ReadyResult>>,
    publisher: Publisher,
}

impl ResultBatcher {
    /// Publishes through `publisher` (confirmed, on the results exchange), at most
    /// `max_results` results in one message; 1 publishes each result alone from its task,
    /// as hosts did before batches (for order-apis that do not know them yet).
    pub fn start(publisher: Publisher, max_results: usize) -> Self {
        if max_results <= 1 {
            return Self {
                ready: None,
                publisher,
            };
        }
        let (ready, waiting) = mpsc::unbounded_channel();
        tokio::spawn(publish_batches(publisher.clone(), waiting, max_results));
        Self {
            ready: Some(ready),
            publisher,
        }
    }

    /// Publishes `update` (its own message's `body`, bounded by the caller) under
    /// `routing_key` (`result.<vendor>`), alone or with other results ready at the same
    /// time; answers once the broker confirmed the message carrying it.
    pub async fn publish(
        &self,
        routing_key: String,
        envelope: Envelope,
        update: OrderUpdate,
        body: Vec<u8>,
    ) -> anyhow::Result<()> {
        let Some(ready) = &self.ready else {
            return Ok(self
                .publisher
                .publish(&routing_key, &envelope, &body)
                .await?);
        };
        let (confirmed, confirmation) = oneshot::channel();
        ready
            .send(ReadyResult {
                routing_key,
                envelope,
                update,
                body,
                confirmed,
            })
            .ok()
            .context("the session's result publisher has stopped")?;
        confirmation
            .await
            .context("the session's result publisher stopped before the confirm")?
            .map_err(anyhow::Error::msg)
    }
}

/// The publishing task: takes the first result waiting and every other one already there
/// (up to `max_results` and [`MAX_BATCH_BYTES`]), publishes them, tells their tasks; again.
async fn publish_batches(
    publisher: Publisher,
    mut waiting: mpsc::UnboundedReceiver<ReadyResult>,
    max_results: usize,
) {
    let mut held_over: Option<ReadyResult> = None;
    loop {
        let first = match held_over.take() {
            Some(result) => result,
            None => match waiting.recv().await {
                Some(result) => result,
                None => return,
            },
        };
        let mut bytes = first.body.len();
        let mut batch = vec![first];
        while batch.len() < max_results {
            let Ok(next) = waiting.try_recv() else {
                break;
            };
            if bytes + next.body.len() > MAX_BATCH_BYTES {
                held_over = Some(next);
                break;
            }
            bytes += next.body.len();
            batch.push(next);
        }
        publish_together(&publisher, batch).await;
    }
}

/// Publishes `batch`: one message per routing key (vendor), a single result as its own
/// [`HostMessage::OrderUpdate`], several as one [`HostMessage::OrderUpdates`]; then tells
/// each result's task how its message fared.
async fn publish_together(publisher: &Publisher, batch: Vec<ReadyResult>) {
    let mut by_key: BTreeMap<String, Vec<ReadyResult>> = BTreeMap::new();
    for result in batch {
        by_key
            .entry(result.routing_key.clone())
            .or_default()
            .push(result);
    }
    for (routing_key, results) in by_key {
        let count = results.len();
        let mut tell = Vec::with_capacity(count);
        let mut updates = Vec::with_capacity(count);
        let mut alone = None;
        for result in results {
            tell.push(result.confirmed);
            if count == 1 {
                alone = Some((result.envelope, result.body));
            } else {
                updates.push(result.update);
            }
        }
        let (envelope, body) = alone.unwrap_or_else(|| batch_message(updates));
        let outcome = publisher
            .publish(&routing_key, &envelope, &body)
            .await
            .map_err(|error| format!("publishing {routing_key}: {error}"));
        if let Err(error) = &outcome {
            tracing::warn!(results = count, "{error}");
        }
        for confirmed in tell {
            let _ = confirmed.send(outcome.clone());
        }
    }
}

/// The envelope and body of one message carrying `updates`.
fn batch_message(updates: Vec<OrderUpdate>) -> (Envelope, Vec<u8>) {
    // About many orders, so about none in particular, and in no one order's trace.
    let envelope = Envelope {
        message_id: uuid::Uuid::new_v4(),
        correlation_id: None,
        traceparent: None,
    };
    let body = encode(&HostMessage::OrderUpdates(OrderUpdateBatch { updates }));
    (envelope, body)
}
