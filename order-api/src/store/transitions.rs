//! What every change of an order is made of: the order's row lock, taken first
//! ([`lock_order`]); the compare-and-set of its status along a [`Transition`]
//! ([`compare_and_set`]); the line in its event log, numbered under that lock
//! ([`insert_own_event`]; changes write it through the fleet bookkeeping's `insert_event`,
//! which adds what a fleet member's line sets off). A batch of orders outside fleets makes
//! the same changes in one statement each ([`move_orders`], [`insert_own_events`]).

use std::collections::HashMap;

use anyhow::Context;
use chrono::Utc;
use sqlx::Row;
use uuid::Uuid;

use super::Store;
use super::db::{self, DbTime, parameters, parse_uuid, value_rows};
use super::fleet_ids::fleet_of;
use super::orders::OrderEvent;
use crate::lifecycle::Transition;

impl Store {
    /// A transaction holding `order_id`'s lock in which it moved along `step`; `None` (and
    /// nothing changed) when it was not in one of the step's sources.
    pub(super) async fn begin_change(
        &self,
        order_id: Uuid,
        step: Transition,
    ) -> anyhow::Result<Option<sqlx::Transaction<'static, sqlx::Any>>> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        lock_order(&mut tx, order_id).await?;
        let moved = compare_and_set(&mut tx, order_id, step, None, None).await?;
        Ok(moved.then_some(tx))
    }
}

/// Moves an order along `step` if it is in one of the step's sources; `server` replaces
/// the recorded server when given, `fault` is set (or cleared when `None`). Whether it moved.
pub(super) async fn compare_and_set(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    step: Transition,
    server: Option<String>,
    fault: Option<String>,
) -> anyhow::Result<bool> {
    Ok(move_order(tx, order_id, step, server, fault)
        .await?
        .is_some())
}

/// An order [`move_order`] moved.
pub(super) struct MovedOrder {
    /// Whether it has a webhook URL (a settled status then queues a call).
    pub has_webhook: bool,
}

/// [`compare_and_set`], answering what the applied result needs to know of the moved order
/// in the same statement (`None` when it did not move).
pub(super) async fn move_order(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    step: Transition,
    server: Option<String>,
    fault: Option<String>,
) -> anyhow::Result<Option<MovedOrder>> {
    if step.sources.is_empty() {
        // A step no status takes by itself (`IN ()` is no SQL on PostgreSQL).
        return Ok(None);
    }
    let sources = parameters(6, step.sources.len());
    let sql = format!(
        "UPDATE orders SET status = $1, server = COALESCE($2, server), fault = $3, \
         updated_at = $4 WHERE id = $5 AND status IN ({sources}) RETURNING webhook_url"
    );
    let mut statement = sqlx::query(&sql)
        .bind(step.target.as_str())
        .bind(server)
        .bind(fault)
        .bind(DbTime(Utc::now()))
        .bind(order_id.to_string());
    for source in step.sources {
        statement = statement.bind(source.as_str());
    }
    let moved = statement
        .fetch_optional(&mut **tx)
        .await
        .with_context(|| format!("moving order {order_id} to {}", step.target))?;
    moved
        .map(|row| {
            let url: Option<String> = row.try_get("webhook_url")?;
            Ok(MovedOrder {
                has_webhook: url.is_some(),
            })
        })
        .transpose()
}

/// Takes the order's row lock for the rest of the transaction, on PostgreSQL (SQLite has one
/// writer at a time: nothing to lock). Whatever writes an order's events holds it, so one
/// order's events take their numbers one after another and commit in that order: a live
/// stream reading "events after n" cannot see n + 1 before n. Every transaction that changes an order takes it first, before
/// anything else it locks, so the lock order is the same everywhere (order row, then its
/// outbox and webhook rows) and two instances never deadlock on an order.
pub(super) async fn lock_order(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
) -> anyhow::Result<()> {
    if !db::on_postgres(tx) {
        return Ok(());
    }
    // A member's fleet first (see `fleets`): whoever changes a member changes its fleet.
    if let Some((fleet, _)) = fleet_of(order_id) {
        sqlx::query("SELECT id FROM orders WHERE id = $1 FOR NO KEY UPDATE")
            .bind(fleet.to_string())
            .execute(&mut **tx)
            .await
            .with_context(|| format!("locking fleet {fleet}"))?;
    }
    // NO KEY UPDATE: what an UPDATE of the row takes, so a compare-and-set after it needs
    // nothing more, and the foreign-key checks of inserts that name the order (KEY SHARE)
    // do not wait for it.
    sqlx::query("SELECT id FROM orders WHERE id = $1 FOR NO KEY UPDATE")
        .bind(order_id.to_string())
        .execute(&mut **tx)
        .await
        .with_context(|| format!("locking order {order_id}"))?;
    Ok(())
}

/// Appends to the order's own event log only.
pub(super) async fn insert_own_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    event: &OrderEvent,
) -> anyhow::Result<()> {
    insert_own_events(tx, &[(order_id, event.clone())]).await
}

/// A change [`move_orders`] makes to one order: its server (replacing the recorded one when
/// given) and fault (set, or cleared when `None`), as [`move_order`] takes them.
pub(super) struct OrderMove {
    pub order_id: Uuid,
    pub server: Option<String>,
    pub fault: Option<String>,
}

/// [`move_order`] for several orders along one step, in one statement: each order at most
/// once, its lock held. The orders that moved (those in one of the step's sources).
pub(super) async fn move_orders(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    step: Transition,
    moves: &[OrderMove],
) -> anyhow::Result<HashMap<Uuid, MovedOrder>> {
    if step.sources.is_empty() || moves.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = move_orders_statement(db::on_postgres(tx), moves.len(), step.sources.len());
    // Not kept prepared: its text varies with the batch's size.
    let mut statement = sqlx::query(&sql).persistent(false);
    for change in moves {
        statement = statement
            .bind(change.order_id.to_string())
            .bind(change.server.clone())
            .bind(change.fault.clone());
    }
    statement = statement
        .bind(step.target.as_str())
        .bind(DbTime(Utc::now()));
    for source in step.sources {
        statement = statement.bind(source.as_str());
    }
    statement
        .fetch_all(&mut **tx)
        .await
        .with_context(|| format!("moving {} orders to {}", moves.len(), step.target))?
        .iter()
        .map(|row| {
            let id = parse_uuid(row.try_get("id")?)?;
            let url: Option<String> = row.try_get("webhook_url")?;
            Ok((
                id,
                MovedOrder {
                    has_webhook: url.is_some(),
                },
            ))
        })
        .collect()
}

/// [`move_orders`]' statement for `moves` orders and a step of `sources` source statuses:
/// the moves' id, server and fault first (nameless on SQLite), then the target status, the
/// time and the sources, named after them.
///
/// Each order is read by its id. SQLite, which plans without statistics, would rather take
/// the status index and go through the batch's rows for every order in the sources: a cost
/// that grows with the orders waiting in them (BENCHMARKS.md, *Moves by id, and a relay read
/// that stops at its limit*). Its unary `+` keeps the status term off the indexes, as
/// SQLite's query planner documents; PostgreSQL's planner, which has statistics, needs no
/// such hint (and has no `+` for text).
fn move_orders_statement(on_postgres: bool, moves: usize, sources: usize) -> String {
    let rows = value_rows(on_postgres, 3, moves);
    let after = moves * 3 + 1;
    let sources = parameters(after + 2, sources);
    let status = match on_postgres {
        true => "orders.status",
        false => "+orders.status",
    };
    format!(
        "UPDATE orders SET status = ${after}, server = COALESCE(moves.column2, server), \
         fault = moves.column3, updated_at = ${} FROM (VALUES {rows}) AS moves \
         WHERE orders.id = moves.column1 AND {status} IN ({sources}) \
         RETURNING id, webhook_url",
        after + 1
    )
}

/// [`insert_own_event`] for several orders in one statement: each order at most once (its
/// number is one more than its last event's before the statement: safe under the orders'
/// locks), its lock held.
pub(super) async fn insert_own_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    events: &[(Uuid, OrderEvent)],
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let on_postgres = db::on_postgres(tx);
    let mut next = 0;
    let mut placeholder = || {
        next += 1;
        if on_postgres {
            format!("${next}")
        } else {
            "?".to_string()
        }
    };
    let rows: Vec<String> = events
        .iter()
        .map(|_| {
            let [id, numbered, at, status, message, attempt] =
                std::array::from_fn(|_| placeholder());
            format!(
                "({id}, (SELECT COALESCE(MAX(seq), 0) + 1 FROM order_events \
                 WHERE order_id = {numbered}), {at}, {status}, {message}, {attempt})"
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO order_events (order_id, seq, at, status, message, attempt) VALUES {}",
        rows.join(", ")
    );
    // Kept prepared for one event, the common statement; not for a batch's, whose text varies
    // with its size.
    let mut insert = sqlx::query(&sql).persistent(events.len() == 1);
    for (order_id, event) in events {
        insert = insert
            .bind(order_id.to_string())
            .bind(order_id.to_string())
            .bind(DbTime(event.at))
            .bind(event.status.as_str())
            .bind(event.message.as_str())
            .bind(event.attempt.map(i64::from));
    }
    insert
        .execute(&mut **tx)
        .await
        .with_context(|| match events.len() {
            1 => "recording an order event".to_string(),
            count => format!("recording {count} orders' events"),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan of a batch's move reads each order by its id: the statement's cost is
    /// the batch's, whatever else the table holds. (Without statistics SQLite took the status
    /// index instead and, for every order in the step's sources, went through the batch's
    /// rows: with 50,000 orders `pending`, a move of 256 read 50,000 index entries and made
    /// 12.8 million comparisons.)
    #[tokio::test]
    async fn a_batch_move_reads_its_orders_by_id() -> anyhow::Result<()> {
        let (moves, sources) = (256, 2);
        let statement = move_orders_statement(false, moves, sources);
        let plan = db::sqlite_query_plan(&statement, moves * 3 + 2 + sources).await?;
        let orders: Vec<&String> = plan
            .iter()
            .filter(|step| step.contains(" orders "))
            .collect();
        assert!(
            orders.len() == 1 && orders[0].contains("(id=?)"),
            "the move reads orders otherwise than by id: {plan:#?}"
        );
        Ok(())
    }
}
