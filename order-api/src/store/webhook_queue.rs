//! Webhook calls queued in the transaction of the change they tell of: an order settling
//! ([`queue_webhook`]) or one of its servers moving to its next placement candidate
//! ([`queue_move_webhook`]). Their delivery and the signing secrets are
//! `webhooks.rs`, above the modules that queue.

use anyhow::Context;
use chrono::Utc;
use uuid::Uuid;

use super::db::DbTime;
use super::orders::order_from_row;
use crate::lifecycle::OrderStatus;

/// Queues the webhook of an order that just settled in `status`, if it has a URL: the body
/// is the order as it is now, in this transaction.
pub(super) async fn queue_webhook(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    status: OrderStatus,
) -> anyhow::Result<bool> {
    if !status.is_settled() {
        return Ok(false);
    }
    queue_call(tx, order_id, &format!("order.{status}"), None).await
}

/// Queues an `order.moved` webhook of an order (if it has a URL): one of its servers moved to
/// its next placement candidate; `moved` says which and why.
pub(super) async fn queue_move_webhook(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    moved: serde_json::Value,
) -> anyhow::Result<bool> {
    queue_call(tx, order_id, "order.moved", Some(moved)).await
}

/// Queues a call of type `kind` with the order as it is now in this transaction as its
/// `data` (and `moved` beside it, when given), if the order has a webhook URL.
async fn queue_call(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    kind: &str,
    moved: Option<serde_json::Value>,
) -> anyhow::Result<bool> {
    let row = sqlx::query("SELECT * FROM orders WHERE id = $1 AND webhook_url IS NOT NULL")
        .bind(order_id.to_string())
        .fetch_optional(&mut **tx)
        .await
        .context("reading the order for its webhook")?;
    let Some(row) = row else { return Ok(false) };
    let order = order_from_row(&row)?;
    let Some(url) = order.webhook_url.clone() else {
        return Ok(false);
    };
    let now = Utc::now();
    let delivery_id = Uuid::now_v7();
    let mut payload = serde_json::json!({
        "type": kind,
        "timestamp": now,
        "data": order,
    });
    if let Some(moved) = moved {
        payload["moved"] = moved;
    }
    sqlx::query(
        "INSERT INTO webhook_deliveries (delivery_id, order_id, tenant, url, payload, attempts, \
         next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6, $7)",
    )
    .bind(delivery_id.to_string())
    .bind(order_id.to_string())
    .bind(&order.tenant)
    .bind(&url)
    .bind(payload.to_string())
    .bind(DbTime(now))
    .bind(DbTime(now))
    .execute(&mut **tx)
    .await
    .context("queueing a webhook")?;
    Ok(true)
}
