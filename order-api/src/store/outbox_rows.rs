//! The outbox's rows as the transactions that decide a request write them: the message
//! ([`OutboxMessage`]) queued with the change that decided it ([`insert_outbox`]), or dropped
//! when a user's change supersedes it ([`drop_unpublished`]). The relay's side (what is due,
//! published, retried) is `outbox.rs`, above the modules that queue.

use anyhow::Context;
use chrono::{DateTime, Utc};
use provisioner_contract::{HostRequest, Topology, encode};
use uuid::Uuid;

use super::db::DbTime;

/// A message waiting in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Its AMQP message id.
    pub message_id: Uuid,
    /// The order it is about.
    pub order_id: Uuid,
    /// Where it goes.
    pub routing_key: String,
    /// Its JSON body.
    pub body: Vec<u8>,
    /// W3C trace context.
    pub traceparent: Option<String>,
    /// How many publishes failed so far.
    pub attempts: u32,
    /// Whether it goes out marked lease-free ([`provisioner_contract::LEASE_FREE_HEADER`]):
    /// written for an order's first creation request, which the relay reads (and clears)
    /// for its first publish only, so only that publish carries the mark.
    pub lease_free: bool,
}

impl OutboxMessage {
    /// A new message carrying `request` about `order_id` to the hosts of `vendor`, not yet
    /// tried; `traceparent` when a traced request made it.
    pub fn request(
        order_id: Uuid,
        vendor: &str,
        request: &HostRequest,
        traceparent: Option<String>,
    ) -> Self {
        Self {
            message_id: Uuid::new_v4(),
            order_id,
            routing_key: Topology::request_key(vendor),
            body: encode(request),
            traceparent,
            attempts: 0,
            lease_free: false,
        }
    }
}

/// Drops what the order still had waiting in the outbox (a user's change supersedes it).
pub(super) async fn drop_unpublished(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM outbox WHERE order_id = $1")
        .bind(order_id.to_string())
        .execute(&mut **tx)
        .await
        .context("dropping the order's unpublished requests")?;
    Ok(())
}

/// Queues `outbox` in the transaction, due now.
pub(super) async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    outbox: &OutboxMessage,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO outbox (message_id, order_id, routing_key, body, traceparent, \
         created_at, attempts, next_attempt_at, lease_free) VALUES ($1, $2, $3, $4, $5, $6, 0, \
         $7, $8)",
    )
    .bind(outbox.message_id.to_string())
    .bind(outbox.order_id.to_string())
    .bind(&outbox.routing_key)
    .bind(&outbox.body)
    .bind(&outbox.traceparent)
    .bind(DbTime(now))
    .bind(DbTime(now))
    .bind(i64::from(outbox.lease_free))
    .execute(&mut **tx)
    .await
    .context("inserting the outbox message")?;
    Ok(())
}
