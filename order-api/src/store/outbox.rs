//! The outbox: the requests for hosts, written in the transaction that decides them and
//! published by the relay ([`crate::amqp::relay`]) with confirms: the due messages (claimed on
//! PostgreSQL), those the broker confirmed, those to retry.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

use super::Store;
use super::db::{self, Backend, DbTime, leading_parameters, parameters, parse_uuid, time};
use super::fleet_ids::{fleet_of, lock_rank};
use super::fleets::insert_event;
use super::orders::OrderEvent;
use super::outbox_rows::OutboxMessage;
use super::transitions::{OrderMove, compare_and_set, insert_own_events, lock_order, move_orders};
use crate::lifecycle::{self, OrderStatus};

/// The due messages' read on SQLite: `$1` the time, `$2` the limit. In the order of the due
/// index, so the read stops at its limit however many are due (see [`Store::due_outbox`]).
const DUE_ON_SQLITE: &str = "SELECT message_id, order_id, routing_key, body, traceparent, \
     attempts, created_at, lease_free FROM outbox WHERE next_attempt_at <= $1 \
     ORDER BY next_attempt_at LIMIT $2";

/// How long the relay's claim on outbox messages lasts (PostgreSQL): a relay that dies
/// mid-publish leaves its messages to another instance after this.
pub const OUTBOX_CLAIM: Duration = Duration::from_secs(30);

impl Store {
    /// Outbox messages due for (another) publish, longest due first (a message is due from
    /// its writing, and again from its next attempt after a failed publish), each batch in the
    /// order its messages were written. Read in the due index's order, which a read stops
    /// walking at its limit: ordered by creation, every read would find and sort all the due
    /// messages, as costly as the backlog after an outage. On PostgreSQL, where other
    /// order-api instances share the outbox, they are claimed for [`OUTBOX_CLAIM`] (not due
    /// again meanwhile), so each message goes out from one instance; a publish that outlives
    /// its claim may go out twice, which the host tolerates (a creation request is
    /// idempotent). The claim skips rows another transaction holds and waits for no lock, so
    /// it never deadlocks with the order transactions. On SQLite only one instance runs:
    /// nothing to claim.
    ///
    /// A message read with its lease-free mark ([`OutboxMessage::lease_free`]) has it cleared
    /// in the same read (PostgreSQL's claim) or right after it (SQLite), before it is
    /// published: whatever happens to this publish, a later one goes out unmarked.
    pub async fn due_outbox(&self, limit: u32) -> anyhow::Result<Vec<OutboxMessage>> {
        let now = Utc::now();
        let rows = match self.backend {
            Backend::Sqlite => {
                sqlx::query(DUE_ON_SQLITE)
                    .bind(DbTime(now))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
            }
            Backend::Postgres => {
                let claimed_until =
                    now + chrono::Duration::from_std(OUTBOX_CLAIM).unwrap_or_default();
                // The mark as it was before the claim cleared it (`due.lease_free`).
                sqlx::query(
                    "WITH due AS (SELECT message_id, lease_free FROM outbox \
                     WHERE next_attempt_at <= $2 ORDER BY next_attempt_at LIMIT $3 \
                     FOR UPDATE SKIP LOCKED) \
                     UPDATE outbox SET next_attempt_at = $1, lease_free = 0 FROM due \
                     WHERE outbox.message_id = due.message_id \
                     RETURNING outbox.message_id, outbox.order_id, outbox.routing_key, \
                     outbox.body, outbox.traceparent, outbox.attempts, outbox.created_at, \
                     due.lease_free",
                )
                .bind(DbTime(claimed_until))
                .bind(DbTime(now))
                .bind(i64::from(limit))
                .fetch_all(&self.writer)
                .await
            }
        }
        .context("reading the outbox")?;
        let mut due = rows
            .iter()
            .map(|row| {
                let message = OutboxMessage {
                    message_id: parse_uuid(row.try_get("message_id")?)?,
                    order_id: parse_uuid(row.try_get("order_id")?)?,
                    routing_key: row.try_get("routing_key")?,
                    body: row.try_get("body")?,
                    traceparent: row.try_get("traceparent")?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    lease_free: row.try_get::<i64, _>("lease_free")? != 0,
                };
                Ok((time(row, "created_at")?, message))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        due.sort_by_key(|(created_at, message)| (*created_at, message.message_id));
        let mut due: Vec<OutboxMessage> = due.into_iter().map(|(_, message)| message).collect();
        if self.backend == Backend::Sqlite {
            self.take_lease_free_marks(&mut due).await?;
        }
        Ok(due)
    }

    /// Clears the lease-free marks the messages in `due` were read with (SQLite, whose read
    /// claims nothing), committed before any of them is published. Only the messages whose
    /// mark this statement cleared keep it: a second reader of the same rows (there should
    /// be none) finds them cleared and publishes them unmarked.
    async fn take_lease_free_marks(&self, due: &mut [OutboxMessage]) -> anyhow::Result<()> {
        let marked: Vec<String> = due
            .iter()
            .filter(|message| message.lease_free)
            .map(|message| message.message_id.to_string())
            .collect();
        if marked.is_empty() {
            return Ok(());
        }
        let ids = leading_parameters(self.backend == Backend::Postgres, marked.len());
        let sql = format!(
            "UPDATE outbox SET lease_free = 0 WHERE lease_free = 1 AND message_id IN ({ids}) \
             RETURNING message_id"
        );
        let mut statement = sqlx::query(&sql).persistent(false);
        for id in &marked {
            statement = statement.bind(id);
        }
        let cleared = statement
            .fetch_all(&self.writer)
            .await
            .context("clearing the outbox's lease-free marks")?
            .iter()
            .map(|row| parse_uuid(row.try_get("message_id")?))
            .collect::<anyhow::Result<std::collections::HashSet<_>>>()?;
        for message in due {
            message.lease_free = cleared.contains(&message.message_id);
        }
        Ok(())
    }

    /// The broker confirmed these messages: drop them from the outbox and mark their orders
    /// `queued` (unless a host event already moved them further).
    pub async fn mark_published(&self, messages: &[OutboxMessage]) -> anyhow::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        // Orders in lock order, all locked before their outbox rows: the order every
        // transaction keeps.
        let mut in_lock_order: Vec<&OutboxMessage> = messages.iter().collect();
        in_lock_order.sort_by_key(|message| lock_rank(message.order_id));
        for message in &in_lock_order {
            lock_order(&mut tx, message.order_id).await?;
        }
        // One statement for the batch's outbox rows (not kept prepared: its text varies with
        // the batch's size, and would push the steady statements out of the cache).
        let ids = leading_parameters(db::on_postgres(&tx), messages.len());
        let sql = format!("DELETE FROM outbox WHERE message_id IN ({ids})");
        let mut delete = sqlx::query(&sql).persistent(false);
        for message in messages {
            delete = delete.bind(message.message_id.to_string());
        }
        delete
            .execute(&mut *tx)
            .await
            .context("removing published outbox messages")?;
        // Orders outside fleets move together, two statements for the batch; a fleet
        // member's move also moves its fleet ([`insert_event`]), one by one.
        let (members, others): (Vec<&OutboxMessage>, Vec<&OutboxMessage>) = in_lock_order
            .into_iter()
            .partition(|message| fleet_of(message.order_id).is_some());
        queue_published(&mut tx, &others, now).await?;
        for message in members {
            let moved =
                compare_and_set(&mut tx, message.order_id, lifecycle::PUBLISHED, None, None)
                    .await?;
            if moved {
                insert_event(&mut tx, message.order_id, &published_event(message, now)).await?;
            }
        }
        tx.commit().await.context("committing published messages")?;
        self.events_committed(messages.iter().map(|message| message.order_id));
        Ok(())
    }

    /// Makes `messages` due again now: the relay read (on PostgreSQL, claimed) them but could
    /// not publish them, its channel broke.
    pub async fn release(&self, messages: &[OutboxMessage]) -> anyhow::Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let ids = parameters(2, messages.len());
        let sql = format!("UPDATE outbox SET next_attempt_at = $1 WHERE message_id IN ({ids})");
        let mut statement = sqlx::query(&sql).bind(DbTime(Utc::now()));
        for message in messages {
            statement = statement.bind(message.message_id.to_string());
        }
        statement
            .execute(&self.writer)
            .await
            .context("releasing unpublished outbox messages")?;
        Ok(())
    }

    /// A publish failed: try again after `retry_in`. The first failure is written to the
    /// order's event log so the user sees why it waits.
    pub async fn publish_failed(
        &self,
        message: &OutboxMessage,
        error: &str,
        retry_in: Duration,
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let next = now + chrono::Duration::from_std(retry_in).unwrap_or_default();
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        lock_order(&mut tx, message.order_id).await?;
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 \
             WHERE message_id = $3",
        )
        .bind(DbTime(next))
        .bind(error)
        .bind(message.message_id.to_string())
        .execute(&mut *tx)
        .await
        .context("rescheduling an outbox message")?;
        if message.attempts == 0 {
            // The event carries the order's status as it is (pending for a create, deleting
            // for a delete).
            sqlx::query(
                "INSERT INTO order_events (order_id, seq, at, status, message, attempt) \
                 SELECT id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM order_events \
                 WHERE order_id = orders.id), $1, status, $2, NULL FROM orders WHERE id = $3",
            )
            .bind(DbTime(now))
            .bind(format!(
                "publishing the request ({}) failed, will retry: {error}",
                message.routing_key
            ))
            .bind(message.order_id.to_string())
            .execute(&mut *tx)
            .await
            .context("recording a publish failure")?;
        }
        tx.commit().await.context("committing the retry")?;
        if message.attempts == 0 {
            self.events_committed([message.order_id]);
        }
        Ok(())
    }
}

/// The event of an order whose creation request `message` was published.
fn published_event(message: &OutboxMessage, at: chrono::DateTime<Utc>) -> OrderEvent {
    OrderEvent {
        at,
        status: OrderStatus::Queued,
        message: format!("creation request published ({})", message.routing_key),
        attempt: None,
    }
}

/// Moves the orders of `messages` (none in a fleet, their locks held) that are still
/// `pending` to `queued`, each with its event: [`compare_and_set`] and the event for all of
/// them at once, one statement each instead of two per order. An order with several messages
/// moves once, with its first message's event, as one by one.
async fn queue_published(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    messages: &[&OutboxMessage],
    now: chrono::DateTime<Utc>,
) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    let messages: Vec<&OutboxMessage> = messages
        .iter()
        .copied()
        .filter(|message| seen.insert(message.order_id))
        .collect();
    let moves: Vec<OrderMove> = messages
        .iter()
        .map(|message| OrderMove {
            order_id: message.order_id,
            server: None,
            fault: None,
        })
        .collect();
    let moved = move_orders(tx, lifecycle::PUBLISHED, &moves).await?;
    let events: Vec<(Uuid, OrderEvent)> = messages
        .into_iter()
        .filter(|message| moved.contains_key(&message.order_id))
        .map(|message| (message.order_id, published_event(message, now)))
        .collect();
    insert_own_events(tx, &events).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan of the relay's read walks an index in the read's order and stops at its
    /// limit: what a read costs is the batch's, however many messages are due. (Ordered by
    /// creation, it found every due message through the due index and sorted them all to
    /// take the first 256: with a backlog, after an outage, each read cost as much as the
    /// backlog, and draining it took time that grew with its square.)
    #[tokio::test]
    async fn the_relays_read_stops_at_its_limit() -> anyhow::Result<()> {
        let plan = db::sqlite_query_plan(DUE_ON_SQLITE, 2).await?;
        assert!(
            plan.iter().any(|step| step.contains("INDEX outbox_due"))
                && !plan.iter().any(|step| step.contains("TEMP B-TREE")),
            "the relay's read sorts what it found: {plan:#?}"
        );
        Ok(())
    }
}
