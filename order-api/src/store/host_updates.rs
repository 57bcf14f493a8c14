//! Applying the updates hosts send: each a compare-and-set along [`lifecycle::transition`],
//! many in one transaction. News of a server an order will not keep (it is cancelling,
//! cancelled or failed) queues that server's delete; a failed order's clean-up (the lookup
//! of a server an attempt may have made) is queued and its answer recorded here too.

use std::collections::HashMap;

use anyhow::Context;
use chrono::Utc;
use provisioner_contract::{Fault, OrderUpdate, ServerInfo, UpdateKind};
use sqlx::Row;
use uuid::Uuid;

use super::Store;
use super::db::{json, parse_json, parse_status};
use super::fleet_ids::{fleet_of, lock_rank};
use super::fleets::{self, failure_may_have_left_a_server, insert_event};
use super::orders::OrderEvent;
use super::outbox_rows::{OutboxMessage, insert_outbox};
use super::transitions::{OrderMove, insert_own_events, lock_order, move_order, move_orders};
use super::webhook_queue::queue_webhook;
use crate::lifecycle::{self, OrderStatus};

/// What applying a host update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The order moved to this status.
    Moved(OrderStatus),
    /// The order was already past it (duplicate or stale): nothing changed.
    Ignored,
    /// The order is cancelling, cancelled or failed and the update tells of a server its
    /// create made that the order does not know: the delete of that server was queued in the
    /// outbox.
    LateServerDeleted,
    /// No such order.
    UnknownOrder,
}

impl Store {
    /// Applies a host update as a compare-and-set (see [`lifecycle::transition`]), so
    /// duplicates and stale updates change nothing.
    pub async fn apply_update(&self, update: &OrderUpdate) -> anyhow::Result<Applied> {
        let mut applied = self.apply_updates(&[update]).await?;
        Ok(applied.pop().unwrap_or(Applied::Ignored))
    }

    /// Applies several host updates in one transaction (one disk sync for all of them):
    /// orders in id order, one order's updates in the order given; each is a compare-and-set
    /// as in [`Store::apply_update`]. All or none are committed. The answers are in the order
    /// given.
    pub async fn apply_updates(&self, updates: &[&OrderUpdate]) -> anyhow::Result<Vec<Applied>> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        // Orders in lock order (one order's updates keep theirs): the order every
        // transaction keeps.
        let mut in_lock_order: Vec<usize> = (0..updates.len()).collect();
        in_lock_order.sort_by_key(|&index| lock_rank(updates[index].order_id));
        let together = applied_together(updates);
        // A server's move to another placement candidate takes its tenant's quota lock
        // ([`fleets`]), and no transaction may wait for an order's lock while it holds a
        // tenant's (two would wait on each other): a batch with a fleet's server in it takes
        // every order's lock before it applies anything. So does one whose updates move
        // orders together: every lock before the first change, in the one order.
        if !together.is_empty()
            || updates
                .iter()
                .any(|update| fleet_of(update.order_id).is_some())
        {
            for &index in &in_lock_order {
                lock_order(&mut tx, updates[index].order_id).await?;
            }
        }
        let mut applied = vec![Applied::Ignored; updates.len()];
        let mut done = vec![false; updates.len()];
        for group in together {
            for index in move_together(&mut tx, updates, &group).await? {
                applied[index] = Applied::Moved(lifecycle::transition(&updates[index].kind).target);
                done[index] = true;
            }
        }
        for index in in_lock_order {
            if !done[index] {
                applied[index] = apply_in(&mut tx, updates[index]).await?;
            }
        }
        tx.commit().await.context("committing the updates")?;
        self.events_committed(updates.iter().map(|update| update.order_id));
        Ok(applied)
    }
}

/// The updates of a batch that move their orders together ([`move_together`]), in groups of
/// one kind (one transition) with two or more in each: those of orders outside fleets that
/// have no other update in the batch (a second one would see the first's change). Indices
/// into `updates`.
fn applied_together(updates: &[&OrderUpdate]) -> Vec<Vec<usize>> {
    let mut per_order: HashMap<Uuid, usize> = HashMap::new();
    for update in updates {
        *per_order.entry(update.order_id).or_default() += 1;
    }
    let mut groups: HashMap<std::mem::Discriminant<UpdateKind>, Vec<usize>> = HashMap::new();
    for (index, update) in updates.iter().enumerate() {
        if per_order[&update.order_id] == 1 && fleet_of(update.order_id).is_none() {
            groups
                .entry(std::mem::discriminant(&update.kind))
                .or_default()
                .push(index);
        }
    }
    // In statements of at most MOVED_TOGETHER orders (six parameters each for the events):
    // a prefetch's worth of host batches can be thousands of updates.
    groups
        .into_values()
        .flat_map(|group| {
            group
                .chunks(MOVED_TOGETHER)
                .map(<[usize]>::to_vec)
                .collect::<Vec<_>>()
        })
        .filter(|group| group.len() > 1)
        .collect()
}

/// The most updates [`move_together`] applies in one statement: far below both databases'
/// limits on a statement's parameters (32,766 on SQLite, 65,535 on PostgreSQL).
const MOVED_TOGETHER: usize = 512;

/// Applies the updates `group` (indices into `updates`, one kind, orders outside fleets, each
/// once, their locks held) as [`apply_in`] does for those that move their order: the moves
/// and their events one statement each for the group, then what a moved order's update sets
/// off (a failed order's server deleted, a webhook call), one by one. The indices of the
/// updates that moved their order; the others are left to [`apply_in`] (which finds them
/// unmoved the same way, and goes on from there).
async fn move_together(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    updates: &[&OrderUpdate],
    group: &[usize],
) -> anyhow::Result<Vec<usize>> {
    let Some(&first) = group.first() else {
        return Ok(Vec::new());
    };
    let step = lifecycle::transition(&updates[first].kind);
    let moves: Vec<OrderMove> = group
        .iter()
        .map(|&index| {
            let update = updates[index];
            let (server, fault) = server_and_fault(&update.kind);
            OrderMove {
                order_id: update.order_id,
                server: server.map(json),
                fault: fault.map(json),
            }
        })
        .collect();
    let moved_orders = move_orders(tx, step, &moves).await?;
    let moved: Vec<usize> = group
        .iter()
        .copied()
        .filter(|&index| moved_orders.contains_key(&updates[index].order_id))
        .collect();
    let events: Vec<(Uuid, OrderEvent)> = moved
        .iter()
        .map(|&index| {
            let update = updates[index];
            let event = OrderEvent {
                at: update.at,
                status: step.target,
                message: lifecycle::describe(&update.kind),
                attempt: Some(update.attempt),
            };
            (update.order_id, event)
        })
        .collect();
    insert_own_events(tx, &events).await?;
    for &index in &moved {
        let update = updates[index];
        if let UpdateKind::Failed { fault, .. } = &update.kind {
            delete_failed_orders_server(tx, update, fault).await?;
        }
        if moved_orders[&update.order_id].has_webhook {
            queue_webhook(tx, update.order_id, step.target).await?;
        }
    }
    Ok(moved)
}

/// The server and fault an update records on its order (see [`move_order`]).
fn server_and_fault(kind: &UpdateKind) -> (Option<&ServerInfo>, Option<&Fault>) {
    match kind {
        UpdateKind::Provisioning { server }
        | UpdateKind::Active { server }
        | UpdateKind::Adopted { server }
        | UpdateKind::Deleted { server } => (Some(server), None),
        UpdateKind::Failed { fault, server } | UpdateKind::CancelFailed { fault, server } => {
            (server.as_ref(), Some(fault))
        }
        UpdateKind::DeleteFailed { fault } => (None, Some(fault)),
        UpdateKind::Cancelled { server } => (server.as_ref(), None),
        // The attempt's fault is in the event log; the order is not failed.
        UpdateKind::Retrying { .. } => (None, None),
    }
}

/// One host update inside a transaction. News of a server made for an order that is
/// cancelling or cancelled (a create that ran after, or beside, the cancel), or that failed
/// (the host found the server an attempt made without the order hearing of it, or a
/// redelivered create adopted it), queues the delete of that server: a cancelled or failed
/// order leaves no server behind.
async fn apply_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    update: &OrderUpdate,
) -> anyhow::Result<Applied> {
    let step = lifecycle::transition(&update.kind);
    let (server, fault) = server_and_fault(&update.kind);
    lock_order(tx, update.order_id).await?;
    let moved = move_order(tx, update.order_id, step, server.map(json), fault.map(json)).await?;
    let Some(moved) = moved else {
        let row = sqlx::query("SELECT status, server FROM orders WHERE id = $1")
            .bind(update.order_id.to_string())
            .fetch_optional(&mut **tx)
            .await
            .context("looking up the order")?;
        let Some(row) = row else {
            return Ok(Applied::UnknownOrder);
        };
        let status = parse_status(row.try_get("status")?)?;
        let recorded: Option<ServerInfo> = parse_json(row.try_get("server")?)?;
        if !matches!(
            status,
            OrderStatus::Cancelling | OrderStatus::Cancelled | OrderStatus::Failed
        ) {
            return Ok(Applied::Ignored);
        }
        if status == OrderStatus::Failed {
            // A server of an order with a placement may wait for this clean-up to move on,
            // or be adopted by it.
            if let UpdateKind::Adopted { server } = &update.kind {
                if fleets::adopt(tx, update, server).await? {
                    return Ok(Applied::Moved(OrderStatus::Active));
                }
                // The clean-up kept it for a move that went on meanwhile (or an order no
                // longer on its way): nothing else will delete it, even the server the order
                // recorded.
                let message = format!(
                    "deleting server {}, which the clean-up found running and kept: the move \
                     it was kept for went on meanwhile, or the order is no longer on its way",
                    server.vendor_id
                );
                queue_server_delete(tx, update, server, status, message).await?;
                return Ok(Applied::LateServerDeleted);
            }
            fleets::cleanup_answered(tx, update.order_id, &update.kind).await?;
        }
        let after = if status == OrderStatus::Failed {
            "for the order, which failed"
        } else {
            "after the cancel"
        };
        if status == OrderStatus::Failed
            && let Some(message) = failed_orders_cleanup(&update.kind)
        {
            let event = OrderEvent {
                at: update.at,
                status,
                message,
                attempt: Some(update.attempt),
            };
            insert_event(tx, update.order_id, &event).await?;
            return Ok(Applied::Ignored);
        }
        return match (&update.kind, server) {
            // The server the order recorded is the one its cancel or failure deletes (or
            // deleted).
            (_, Some(server))
                if recorded.as_ref().map(|r| &r.vendor_id) == Some(&server.vendor_id) =>
            {
                Ok(Applied::Ignored)
            }
            (
                UpdateKind::Provisioning { .. }
                | UpdateKind::Active { .. }
                | UpdateKind::Adopted { .. }
                | UpdateKind::Failed { .. },
                Some(server),
            ) => {
                let message = format!(
                    "deleting the server {} the vendor made {after}",
                    server.vendor_id
                );
                queue_server_delete(tx, update, server, status, message).await?;
                if status == OrderStatus::Failed {
                    // Not adoptable now: a move waiting for the clean-up goes on.
                    fleets::late_server_deleted(tx, update.order_id).await?;
                }
                Ok(Applied::LateServerDeleted)
            }
            // The delete of a late server failed: said in the log; the orphan sweep reports
            // the server (no order owns it).
            (UpdateKind::DeleteFailed { fault }, _) => {
                let event = OrderEvent {
                    at: update.at,
                    status,
                    message: format!(
                        "deleting a server the order does not keep failed ({}): {}",
                        fault.code, fault.message
                    ),
                    attempt: Some(update.attempt),
                };
                insert_event(tx, update.order_id, &event).await?;
                Ok(Applied::Ignored)
            }
            _ => Ok(Applied::Ignored),
        };
    };
    let event = OrderEvent {
        at: update.at,
        status: step.target,
        message: lifecycle::describe(&update.kind),
        attempt: Some(update.attempt),
    };
    insert_event(tx, update.order_id, &event).await?;
    if let UpdateKind::Failed { fault, .. } = &update.kind {
        delete_failed_orders_server(tx, update, fault).await?;
    }
    if moved.has_webhook {
        queue_webhook(tx, update.order_id, step.target).await?;
    }
    Ok(Applied::Moved(step.target))
}

/// A failed order leaves no server behind: the server it recorded (its create made one, then
/// a later attempt failed for good, e.g. a redelivered create whose every retry met vendor
/// errors) is deleted. When it recorded none but an attempt may still have made one without
/// the order hearing of it ([`failure_may_have_left_a_server`]), the host is asked to look
/// the order's key up and delete what it finds (a [`CancelRequest`](provisioner_contract::CancelRequest),
/// retried through the delay queues like any). Neither outcome moves the failed order; a
/// delete or lookup that fails for good leaves the server to the orphan sweep. A server whose
/// placement move waits for this clean-up is looked up by its key either way, and one found
/// running is kept for the move to be called off ([`fleets::adopt`]).
async fn delete_failed_orders_server(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    update: &OrderUpdate,
    fault: &provisioner_contract::Fault,
) -> anyhow::Result<()> {
    if fleets::waiting_move(tx, update.order_id).await?.is_some() {
        let lookup =
            provisioner_contract::HostRequest::Cancel(provisioner_contract::CancelRequest {
                order_id: update.order_id,
                vendor: update.vendor.clone(),
                adopt_running: true,
            });
        let message = "looking for a server the attempts here may have made before the server \
                       moves on: one found running is kept (and the move called off), any other \
                       deleted"
            .to_string();
        return queue_host_request(tx, update, &lookup, OrderStatus::Failed, message).await;
    }
    let row = sqlx::query("SELECT server FROM orders WHERE id = $1")
        .bind(update.order_id.to_string())
        .fetch_one(&mut **tx)
        .await
        .context("reading a failed order's server")?;
    let Some(server) = parse_json::<ServerInfo>(row.try_get("server")?)? else {
        if !failure_may_have_left_a_server(update.attempt, fault) {
            return Ok(());
        }
        let lookup =
            provisioner_contract::HostRequest::Cancel(provisioner_contract::CancelRequest {
                order_id: update.order_id,
                vendor: update.vendor.clone(),
                adopt_running: false,
            });
        let message = "looking for a server an attempt may have made without the order \
                       hearing of it (its answer lost): a failed order keeps none"
            .to_string();
        return queue_host_request(tx, update, &lookup, OrderStatus::Failed, message).await;
    };
    let message = format!(
        "deleting the server {} the order's create made: a failed order keeps none",
        server.vendor_id
    );
    queue_server_delete(tx, update, &server, OrderStatus::Failed, message).await
}

/// The event of a failed order's clean-up result (the key lookup it queued), if `kind` is
/// one; other updates for a failed order are handled as late news of a server.
fn failed_orders_cleanup(kind: &UpdateKind) -> Option<String> {
    match kind {
        UpdateKind::Cancelled {
            server: Some(server),
        } => Some(format!(
            "deleted server {}, which an attempt made without the order hearing of it",
            server.vendor_id
        )),
        UpdateKind::Cancelled { server: None } => {
            Some("the vendor has no server for the failed order".into())
        }
        UpdateKind::CancelFailed { fault, .. } => Some(format!(
            "looking for or deleting a server the failed order's attempts may have made failed \
             ({}): {}; retried on the clean-up's budget, then left to the orphan sweep",
            fault.code, fault.message
        )),
        _ => None,
    }
}

/// Queues the delete of a server the order will not keep (a create made it for an order
/// already cancelling or cancelled, or for one that failed), with `message` in its event
/// log.
async fn queue_server_delete(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    update: &OrderUpdate,
    server: &ServerInfo,
    status: OrderStatus,
    message: String,
) -> anyhow::Result<()> {
    let request = provisioner_contract::HostRequest::Delete(provisioner_contract::DeleteRequest {
        order_id: update.order_id,
        vendor: update.vendor.clone(),
        server: server.clone(),
    });
    queue_host_request(tx, update, &request, status, message).await
}

/// Queues `request` for the order's vendor in the outbox, with `message` in the order's
/// event log.
async fn queue_host_request(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    update: &OrderUpdate,
    request: &provisioner_contract::HostRequest,
    status: OrderStatus,
    message: String,
) -> anyhow::Result<()> {
    let now = Utc::now();
    let outbox = OutboxMessage::request(update.order_id, &update.vendor, request, None);
    insert_outbox(tx, &outbox, now).await?;
    let event = OrderEvent {
        at: now,
        status,
        message,
        attempt: Some(update.attempt),
    };
    insert_event(tx, update.order_id, &event).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_contract::Fault;

    fn fault(code: &str) -> Fault {
        Fault {
            code: code.into(),
            message: "m".into(),
            retryable: false,
        }
    }

    fn update(order_id: Uuid, kind: UpdateKind) -> OrderUpdate {
        OrderUpdate {
            order_id,
            vendor: "hetzner".into(),
            at: Utc::now(),
            attempt: 1,
            kind,
        }
    }

    /// Orders outside fleets with one update in the batch move together, a group per kind of
    /// two or more, at most [`MOVED_TOGETHER`] a statement: a batch of thousands of updates
    /// (a prefetch's worth of host batches) stays within the databases' parameter limits.
    #[test]
    fn updates_move_together_by_kind_in_bounded_groups() {
        let cancelled = || UpdateKind::Cancelled { server: None };
        let twice = Uuid::now_v7();
        let mut updates: Vec<OrderUpdate> = (0..1_100)
            .map(|_| update(Uuid::now_v7(), cancelled()))
            .collect();
        updates.push(update(twice, cancelled()));
        updates.push(update(twice, cancelled()));
        updates.push(update(
            Uuid::now_v7(),
            UpdateKind::DeleteFailed { fault: fault("x") },
        ));
        let batch: Vec<&OrderUpdate> = updates.iter().collect();
        let mut sizes: Vec<usize> = applied_together(&batch).iter().map(Vec::len).collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [76, 512, 512]);
        let together: Vec<usize> = applied_together(&batch).into_iter().flatten().collect();
        assert!(together.iter().all(|&index| index < 1_100), "{together:?}");
    }

    /// Only a first attempt the vendor (or the sandbox) refused made nothing to look for.
    #[test]
    fn a_failure_may_have_left_a_server_unless_a_first_attempt_was_refused() {
        for refusal in [
            "invalid_request",
            "unauthorized",
            "quota_exceeded",
            "not_found",
        ] {
            assert!(
                !failure_may_have_left_a_server(1, &fault(refusal)),
                "{refusal}"
            );
            assert!(
                failure_may_have_left_a_server(2, &fault(refusal)),
                "{refusal}"
            );
        }
        for after_the_vendor in [
            "rate_limited",
            "vendor_unavailable",
            "no_capacity",
            "plugin_timeout",
            "plugin_error",
            "plugin_bad_answer",
            "plugin_trap",
        ] {
            assert!(
                failure_may_have_left_a_server(1, &fault(after_the_vendor)),
                "{after_the_vendor}"
            );
        }
    }
}
