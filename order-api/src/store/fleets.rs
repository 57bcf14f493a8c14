//! Orders for several servers (`count` > 1, "fleets").
//!
//! A client sees one order. The store keeps it as a *fleet* row (its `fleet_size` is the
//! number of servers; it never reaches a host) and one *member* order per server, which the
//! hosts serve exactly like an order for one server: each member's id is its server's
//! idempotency key, so every redelivery, retry, adoption, cancel, late-server delete,
//! watchdog re-send and orphan sweep works per server as it does for any order.
//!
//! - **Keys.** A fleet's id is a UUIDv7 whose last byte is 0; member `n` (1 to
//!   [`MAX_SERVERS_PER_ORDER`]) has the fleet's id with version 8 and `n` in that byte
//!   ([`member_id`]), so the fleet of any member is known from its id alone ([`fleet_of`]),
//!   without a read. Member servers are named `<name>-<n>`.
//! - **Status.** Every change of a member (the event written for it) mirrors a line into the
//!   fleet's log (`web-2: ...`) and sums the members up into the fleet's status
//!   ([`summarise`]): `active` when all run, `partially_active` when all settled and some run
//!   while others failed, `failed` when none came up (or, with `all_or_nothing`, as soon as
//!   one failed for good). SSE streams and webhooks follow the fleet's log and status.
//! - **Winding down.** Cancelling or deleting a fleet, or an `all_or_nothing` fleet failing,
//!   cancels each member still on its way and deletes each running one, in one transaction
//!   with the fleet's change ([`wind_down`]).
//! - **Locks.** On PostgreSQL a member's row lock is always taken after its fleet's
//!   ([`super::lock_order`]), and transactions that take several orders go by [`lock_rank`]
//!   (fleet, then its members): whoever changes a member holds its fleet, so the fleet's
//!   summary and log see every member change in order, and two transactions never wait on
//!   each other's members in opposite orders.
//! - **Quotas.** A fleet counts as one order in flight and its members as one live server
//!   each (migration 0012 weights the usage triggers so).

use anyhow::Context;
use chrono::Utc;
use provisioner_contract::{
    CancelRequest, DeleteRequest, Fault, HostRequest, ServerInfo, Topology, encode,
};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::{
    OrderEvent, OutboxMessage, Store, compare_and_set, drop_unpublished, insert_outbox,
    insert_own_event, parse_json, parse_status, parse_uuid, webhooks,
};
use crate::lifecycle::{self, OrderStatus, Transition};

/// The most servers one order may ask for (a member's number must fit its key's last byte).
pub const MAX_SERVERS_PER_ORDER: u32 = 100;

/// A new fleet's id: a UUIDv7 with its last byte 0, the byte its members number themselves
/// in.
pub fn new_fleet_id() -> Uuid {
    let mut bytes = *Uuid::now_v7().as_bytes();
    bytes[15] = 0;
    Uuid::from_bytes(bytes)
}

/// The id (and idempotency key) of server `number` (1-based) of `fleet`.
pub fn member_id(fleet: Uuid, number: u32) -> Uuid {
    debug_assert!((1..=MAX_SERVERS_PER_ORDER).contains(&number));
    let mut bytes = *fleet.as_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[15] = number as u8;
    Uuid::from_bytes(bytes)
}

/// The fleet `id` is a member of, and its number; `None` for any other order.
pub fn fleet_of(id: Uuid) -> Option<(Uuid, u32)> {
    let mut bytes = *id.as_bytes();
    if id.get_version_num() != 8 || bytes[15] == 0 {
        return None;
    }
    let number = u32::from(bytes[15]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[15] = 0;
    Some((Uuid::from_bytes(bytes), number))
}

/// A member's server name: the order's name and its number.
pub fn member_name(name: &str, number: u32) -> String {
    format!("{name}-{number}")
}

/// Where a transaction takes `id`'s lock among the orders it changes: with its fleet's group
/// (a fleet sorts before its members: version 7 before 8), groups in id order.
pub fn lock_rank(id: Uuid) -> (Uuid, Uuid) {
    (fleet_of(id).map_or(id, |(fleet, _)| fleet), id)
}

/// One server of an order for several, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetServer {
    /// Its number in the order, from 1.
    pub number: u32,
    /// Its idempotency key at the vendor (derived from the order's id).
    pub key: Uuid,
    /// Its name at the vendor: the order's name, `-`, its number.
    pub name: String,
    /// Where it is (an order's statuses, for this server alone).
    pub status: OrderStatus,
    /// The server, once the vendor made one.
    pub server: Option<ServerInfo>,
    /// Why it failed, when it did.
    pub fault: Option<Fault>,
}

/// A fleet's status from its members' (`members`, in number order) and its own `current`
/// one, which holds what the fleet was asked to do (cancel, delete) or decided (failed).
pub fn summarise(
    current: OrderStatus,
    all_or_nothing: bool,
    members: &[OrderStatus],
) -> OrderStatus {
    use OrderStatus::*;
    let on_its_way = |s: &OrderStatus| matches!(s, Pending | Queued | Provisioning);
    let busy = |s: &OrderStatus| on_its_way(s) || matches!(s, Cancelling | Deleting);
    let running = members.iter().filter(|s| **s == Active).count();
    let settled_summary = || {
        if running == members.len() {
            Active
        } else if running > 0 {
            PartiallyActive
        } else {
            Failed
        }
    };
    match current {
        // Failed is final; whatever runs is being removed. Cancelled and deleted are final.
        Failed | Cancelled | Deleted => current,
        Cancelling | Deleting => {
            if members.iter().any(busy) {
                current
            } else if running > 0 {
                // A delete failed: the servers that still run are the order's again.
                settled_summary()
            } else if current == Cancelling {
                Cancelled
            } else {
                Deleted
            }
        }
        Pending | Queued | Provisioning | Active | PartiallyActive => {
            if all_or_nothing && members.contains(&Failed) {
                Failed
            } else if members.iter().all(|s| *s == Pending) {
                Pending
            } else if members.iter().all(|s| matches!(s, Pending | Queued)) {
                Queued
            } else if members.iter().any(busy) {
                Provisioning
            } else {
                settled_summary()
            }
        }
    }
}

/// A fleet cancelled or deleted by its user.
pub const FLEET_DELETE_REQUESTED: Transition = Transition {
    target: OrderStatus::Deleting,
    sources: &[OrderStatus::Active, OrderStatus::PartiallyActive],
};

/// A member as the fleet's bookkeeping reads it.
struct Member {
    id: Uuid,
    number: u32,
    name: String,
    status: OrderStatus,
    server: Option<ServerInfo>,
    fault: Option<Fault>,
}

/// A fleet's own columns that its bookkeeping needs.
struct Fleet {
    id: Uuid,
    status: OrderStatus,
    vendor: String,
    all_or_nothing: bool,
}

async fn read_fleet(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fleet: Uuid,
) -> anyhow::Result<Option<(Fleet, Vec<Member>)>> {
    let row = sqlx::query("SELECT status, vendor, all_or_nothing FROM orders WHERE id = $1")
        .bind(fleet.to_string())
        .fetch_optional(&mut **tx)
        .await
        .context("reading a fleet")?;
    let Some(row) = row else { return Ok(None) };
    let head = Fleet {
        id: fleet,
        status: parse_status(row.try_get("status")?)?,
        vendor: row.try_get("vendor")?,
        all_or_nothing: row.try_get::<i64, _>("all_or_nothing")? != 0,
    };
    let rows =
        sqlx::query("SELECT id, name, status, server, fault FROM orders WHERE fleet_id = $1")
            .bind(fleet.to_string())
            .fetch_all(&mut **tx)
            .await
            .context("reading a fleet's servers")?;
    let mut members = rows
        .iter()
        .map(member_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    members.sort_by_key(|member| member.number);
    Ok(Some((head, members)))
}

fn member_from_row(row: &sqlx::any::AnyRow) -> anyhow::Result<Member> {
    let id = parse_uuid(row.try_get("id")?)?;
    let number = fleet_of(id).map_or(0, |(_, number)| number);
    Ok(Member {
        id,
        number,
        name: row.try_get("name")?,
        status: parse_status(row.try_get("status")?)?,
        server: parse_json(row.try_get("server")?)?,
        fault: parse_json(row.try_get("fault")?)?,
    })
}

/// After `event` was written for `member` (whose fleet's lock the transaction holds): mirrors
/// it into the fleet's log and moves the fleet to its members' sum; an `all_or_nothing` fleet
/// that fails winds its other servers down.
pub(super) async fn member_changed(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    member: Uuid,
    event: &OrderEvent,
) -> anyhow::Result<()> {
    let Some((fleet_id, number)) = fleet_of(member) else {
        return Ok(());
    };
    let Some((fleet, members)) = read_fleet(tx, fleet_id).await? else {
        return Ok(());
    };
    let name = members
        .iter()
        .find(|m| m.number == number)
        .map_or_else(|| format!("server {number}"), |m| m.name.clone());
    let mirrored = OrderEvent {
        message: format!("{name}: {}", event.message),
        ..event.clone()
    };
    resettle(tx, &fleet, &members, mirrored).await
}

/// Moves `fleet` to its members' sum (if that differs), with `event` (its status set to the
/// fleet's) in its log; what a move to `failed` of an `all_or_nothing` fleet winds down.
async fn resettle(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fleet: &Fleet,
    members: &[Member],
    mut event: OrderEvent,
) -> anyhow::Result<()> {
    let statuses: Vec<OrderStatus> = members.iter().map(|m| m.status).collect();
    let next = summarise(fleet.status, fleet.all_or_nothing, &statuses);
    event.status = next;
    event.attempt = None;
    if next == fleet.status {
        return insert_own_event(tx, fleet.id, &event).await;
    }
    let fault = matches!(next, OrderStatus::Failed | OrderStatus::PartiallyActive)
        .then(|| first_fault(members))
        .flatten();
    sqlx::query("UPDATE orders SET status = $1, fault = $2, updated_at = $3 WHERE id = $4")
        .bind(next.as_str())
        .bind(fault.as_ref().map(super::json))
        .bind(super::DbTime(Utc::now()))
        .bind(fleet.id.to_string())
        .execute(&mut **tx)
        .await
        .with_context(|| format!("moving fleet {} to {next}", fleet.id))?;
    insert_own_event(tx, fleet.id, &event).await?;
    if next == OrderStatus::Failed && fleet.all_or_nothing {
        let wound = wind_down(
            tx,
            fleet,
            members,
            "another server of the order failed and it asks for all or nothing",
            None,
        )
        .await?;
        if !wound.is_empty() {
            let event = OrderEvent {
                at: Utc::now(),
                status: next,
                message: format!("all or nothing: {}", wound.join("; ")),
                attempt: None,
            };
            insert_own_event(tx, fleet.id, &event).await?;
        }
    }
    webhooks::queue_webhook(tx, fleet.id, next).await?;
    Ok(())
}

/// The first failed member's fault, its message naming the server.
fn first_fault(members: &[Member]) -> Option<Fault> {
    members
        .iter()
        .filter(|m| m.status == OrderStatus::Failed)
        .find_map(|m| {
            let mut fault = m.fault.clone()?;
            fault.message = format!("{}: {}", m.name, fault.message);
            Some(fault)
        })
}

/// Cancels each member still on its way and deletes each running one (each a compare-and-set
/// with its event and its request queued); what it did, for the fleet's log.
async fn wind_down(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fleet: &Fleet,
    members: &[Member],
    reason: &str,
    traceparent: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let now = Utc::now();
    let mut done = Vec::new();
    for member in members {
        let (step, request, what) = match (member.status, &member.server) {
            (status, _) if status.is_cancellable() => (
                lifecycle::CANCEL_REQUESTED,
                HostRequest::Cancel(CancelRequest {
                    order_id: member.id,
                    vendor: fleet.vendor.clone(),
                }),
                "cancelling",
            ),
            (OrderStatus::Active, Some(server)) => (
                lifecycle::DELETE_REQUESTED,
                HostRequest::Delete(DeleteRequest {
                    order_id: member.id,
                    vendor: fleet.vendor.clone(),
                    server: server.clone(),
                }),
                "deleting",
            ),
            _ => continue,
        };
        if !compare_and_set(tx, member.id, step, None, None).await? {
            continue;
        }
        drop_unpublished(tx, member.id).await?;
        let event = OrderEvent {
            at: now,
            status: step.target,
            message: format!("{what}: {reason}"),
            attempt: None,
        };
        insert_own_event(tx, member.id, &event).await?;
        let outbox = OutboxMessage {
            message_id: Uuid::new_v4(),
            order_id: member.id,
            routing_key: Topology::request_key(&fleet.vendor),
            body: encode(&request),
            traceparent: traceparent.map(str::to_string),
            attempts: 0,
        };
        insert_outbox(tx, &outbox, now).await?;
        done.push(format!("{what} {}", member.name));
    }
    Ok(done)
}

impl Store {
    /// The servers of the fleet `fleet`, in number order.
    pub async fn fleet_servers(&self, fleet: Uuid) -> anyhow::Result<Vec<FleetServer>> {
        let rows =
            sqlx::query("SELECT id, name, status, server, fault FROM orders WHERE fleet_id = $1")
                .bind(fleet.to_string())
                .fetch_all(&self.pool)
                .await
                .context("reading an order's servers")?;
        let mut servers = rows
            .iter()
            .map(|row| {
                let member = member_from_row(row)?;
                Ok(FleetServer {
                    number: member.number,
                    key: member.id,
                    name: member.name,
                    status: member.status,
                    server: member.server,
                    fault: member.fault,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        servers.sort_by_key(|server| server.number);
        Ok(servers)
    }

    /// A user's cancel (`step` [`lifecycle::CANCEL_REQUESTED`]) or delete
    /// ([`FLEET_DELETE_REQUESTED`]) of a fleet: the fleet moves, its servers on their way are
    /// cancelled and its running ones deleted, in one transaction. `false` when the fleet was
    /// not in one of the step's sources (nothing changed).
    pub async fn wind_down_fleet(
        &self,
        fleet_id: Uuid,
        step: Transition,
        message: &str,
        traceparent: &str,
    ) -> anyhow::Result<bool> {
        let Some(mut tx) = self.begin_change(fleet_id, step).await? else {
            return Ok(false);
        };
        let Some((fleet, members)) = read_fleet(&mut tx, fleet_id).await? else {
            return Ok(false);
        };
        let wound = wind_down(&mut tx, &fleet, &members, message, Some(traceparent)).await?;
        let (fleet, members) = read_fleet(&mut tx, fleet_id)
            .await?
            .context("the fleet vanished in its own transaction")?;
        let event = OrderEvent {
            at: Utc::now(),
            status: step.target,
            message: format!("{message}: {}", wound.join("; ")),
            attempt: None,
        };
        resettle(&mut tx, &fleet, &members, event).await?;
        tx.commit()
            .await
            .with_context(|| format!("committing the move to {}", step.target))?;
        self.events_committed([fleet_id]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    #[test]
    fn a_members_key_names_its_fleet_and_number() {
        let fleet = new_fleet_id();
        assert_eq!(fleet_of(fleet), None);
        for number in [1, 2, 99, MAX_SERVERS_PER_ORDER] {
            let member = member_id(fleet, number);
            assert_ne!(member, fleet);
            assert_eq!(fleet_of(member), Some((fleet, number)));
            assert!(lock_rank(fleet) < lock_rank(member));
        }
        // An ordinary order's id is no member's.
        assert_eq!(fleet_of(Uuid::now_v7()), None);
    }

    #[test]
    fn a_fleet_sums_up_its_servers() {
        assert_eq!(summarise(Pending, false, &[Pending, Pending]), Pending);
        assert_eq!(summarise(Pending, false, &[Queued, Pending]), Queued);
        assert_eq!(
            summarise(Queued, false, &[Provisioning, Queued]),
            Provisioning
        );
        assert_eq!(
            summarise(Provisioning, false, &[Active, Queued]),
            Provisioning
        );
        assert_eq!(summarise(Provisioning, false, &[Active, Active]), Active);
        assert_eq!(
            summarise(Provisioning, false, &[Active, Failed]),
            PartiallyActive
        );
        assert_eq!(summarise(Provisioning, false, &[Failed, Failed]), Failed);
        // A failure waits for the others without all-or-nothing, ends the fleet with it.
        assert_eq!(
            summarise(Provisioning, false, &[Failed, Queued]),
            Provisioning
        );
        assert_eq!(summarise(Provisioning, true, &[Failed, Queued]), Failed);
        // Failed stays failed while the rest is removed.
        assert_eq!(summarise(Failed, true, &[Failed, Active]), Failed);
        // Cancel and delete end when no server is busy.
        assert_eq!(
            summarise(Cancelling, false, &[Cancelling, Deleting]),
            Cancelling
        );
        assert_eq!(
            summarise(Cancelling, false, &[Cancelled, Deleted]),
            Cancelled
        );
        assert_eq!(summarise(Deleting, false, &[Deleted, Failed]), Deleted);
        // A delete that failed leaves its server running: the order is active again.
        assert_eq!(
            summarise(Deleting, false, &[Active, Deleted]),
            PartiallyActive
        );
        assert_eq!(summarise(Deleted, false, &[Deleted, Deleted]), Deleted);
    }
}
