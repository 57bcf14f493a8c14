//! Orders stalled without news (a lost request or result) as the watchdog
//! ([`crate::watchdog`]) finds them, and the request it queues again for one.

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::Store;
use super::db::DbTime;
use super::fleets::insert_event;
use super::orders::{Order, OrderEvent, order_from_row};
use super::outbox_rows::{OutboxMessage, insert_outbox};
use super::transitions::lock_order;

impl Store {
    /// Orders in `queued`, `provisioning`, `deleting` or `cancelling` with no change since
    /// `before`, oldest first.
    pub async fn stalled_orders(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> anyhow::Result<Vec<Order>> {
        let rows = sqlx::query(
            "SELECT * FROM orders \
             WHERE status IN ('queued', 'provisioning', 'deleting', 'cancelling') \
             AND fleet_size IS NULL AND updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(DbTime(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("looking for stalled orders")?;
        rows.iter().map(order_from_row).collect()
    }

    /// Queues `outbox` again for an order the watchdog found stalled, with `message` in its
    /// event log, unless the order changed since it was read (then it is not stalled).
    pub async fn redrive(
        &self,
        order: &Order,
        outbox: &OutboxMessage,
        message: &str,
    ) -> anyhow::Result<bool> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        let now = Utc::now();
        lock_order(&mut tx, order.id).await?;
        let touched = sqlx::query(
            "UPDATE orders SET updated_at = $1 WHERE id = $2 AND status = $3 AND updated_at = $4",
        )
        .bind(DbTime(now))
        .bind(order.id.to_string())
        .bind(order.status.as_str())
        .bind(DbTime(order.updated_at))
        .execute(&mut *tx)
        .await
        .context("marking a stalled order")?
        .rows_affected();
        if touched != 1 {
            return Ok(false);
        }
        let event = OrderEvent {
            at: now,
            status: order.status,
            message: message.into(),
            attempt: None,
        };
        insert_event(&mut tx, order.id, &event).await?;
        insert_outbox(&mut tx, outbox, now).await?;
        tx.commit()
            .await
            .context("committing the re-sent request")?;
        self.events_committed([order.id]);
        Ok(true)
    }
}
