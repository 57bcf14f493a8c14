//! Orders for several servers (`count` > 1, "fleets").
//!
//! A client sees one order. The store keeps it as a *fleet* row (its `fleet_size` is the
//! number of servers; it never reaches a host) and one *member* order per server, which the
//! hosts serve exactly like an order for one server: each member's id is its server's
//! idempotency key, so every redelivery, retry, adoption, cancel, late-server delete,
//! watchdog re-send and orphan sweep works per server as it does for any order.
//!
//! - **Keys.** A fleet's id is a UUIDv7 whose last two bytes are 0; member `n` (1 to
//!   [`MAX_SERVERS_PER_ORDER`]) at placement candidate `c` (0 for the first) has the fleet's
//!   id with version 8, `c` in the last but one byte and `n` in the last ([`member_id`]), so
//!   the fleet of any member is known from its id alone ([`fleet_of`]), without a read.
//!   Member servers are named `<name>-<n>` (an order for one server with a placement keeps
//!   its name).
//! - **Placement.** An order may list candidates (`placement`: vendor, region, size, image)
//!   instead of one; it is then kept as a fleet (of one server, or `count`). Its servers start
//!   at the first. A server that fails for good there with a fault that says the place cannot
//!   serve it ([`MOVES_ON`]: `no_capacity`, `quota_exceeded`, `vendor_unavailable` after the
//!   host's retries) moves to the next candidate: a new member with the next candidate's key.
//!   Its create is sent only once the failed member's clean-up (the key lookup and delete
//!   order-api queues for a failure that may have left a server) has answered, so nothing is
//!   left at the previous candidate; a refusal that made nothing (a first attempt's
//!   `quota_exceeded`) moves at once. Each move is a row of `placement_moves` (the metric
//!   counts them by reason) and a line in the order's log; a fault that says the request is
//!   wrong (`invalid_request`, `unauthorized` ...) does not move it.
//! - **Adoption.** The clean-up a move waits for keeps a server it finds running (a create
//!   whose answer was lost made it after all) and answers `adopted`: the failed member
//!   becomes `active` with that server and the move is called off, its member `cancelled`
//!   before any host heard of it ([`adopt`]). A server that turns up any other way while the
//!   move waits (a late create's news) is deleted and the move goes on, so a server is never
//!   both adopted and deleted.
//! - **Status.** Every change of a member (the event written for it) mirrors a line into the
//!   fleet's log (`web-2: ...`) and sums the members up into the fleet's status
//!   ([`summarise`]): `active` when all run, `partially_active` when all settled and some run
//!   while others failed, `failed` when none came up (or, with `all_or_nothing`, as soon as
//!   one failed for good). SSE streams and webhooks follow the fleet's log and status.
//! - **Winding down.** Cancelling or deleting a fleet, or an `all_or_nothing` fleet failing,
//!   cancels each member still on its way and deletes each running one, in one transaction
//!   with the fleet's change ([`wind_down`]).
//! - **Locks.** On PostgreSQL a member's row lock is always taken after its fleet's
//!   ([`super::transitions::lock_order`]), and transactions that take several orders go by
//!   [`lock_rank`] (fleet, then its members): whoever changes a member holds its fleet, so
//!   the fleet's summary and log see every member change in order, and two transactions
//!   never wait on each other's members in opposite orders.
//! - **Quotas.** A fleet counts as one order in flight and its members as one live server
//!   each (migration 0012 weights the usage triggers so). The check at accept asks the first
//!   candidate's vendor; a move asks again, under the tenant's quota lock: a candidate at
//!   which one more live server would pass a `max_live_servers` quota (all vendors, or its
//!   vendor's) is passed over and the log says why. With none left, a failed server stays
//!   failed and one no host serves waits where it is.

use anyhow::Context;
use chrono::Utc;
use provisioner_contract::{
    CancelRequest, DeleteRequest, Fault, HostRequest, ProvisionRequest, ServerInfo,
};
use sqlx::Row;
use uuid::Uuid;

use super::db::{DbTime, json, parse_json, parse_status, parse_uuid};
use super::fleet_ids::candidate_of;
pub use super::fleet_ids::{
    Candidate, FleetServer, MAX_PLACEMENT_CANDIDATES, MAX_SERVERS_PER_ORDER, fleet_of, lock_rank,
    member_id, member_name, new_fleet_id,
};
use super::orders::{OrderEvent, order_from_row};
use super::outbox_rows::{OutboxMessage, drop_unpublished, insert_outbox};
use super::transitions::{compare_and_set, insert_own_event, lock_order};
use super::webhook_queue::{queue_move_webhook, queue_webhook};
use super::{Store, quotas};
use crate::lifecycle::{self, OrderStatus, Transition};

/// The fault codes that move a server to its order's next placement candidate: the place
/// cannot serve it now. (`vendor_unavailable` reaches order-api only after the host's retries.)
pub const MOVES_ON: &[&str] = &["no_capacity", "quota_exceeded", "vendor_unavailable"];

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
    candidate: usize,
    name: String,
    vendor: String,
    region: String,
    status: OrderStatus,
    server: Option<ServerInfo>,
    fault: Option<Fault>,
}

/// A fleet's own columns that its bookkeeping needs.
struct Fleet {
    id: Uuid,
    tenant: String,
    status: OrderStatus,
    all_or_nothing: bool,
    placement: Vec<Candidate>,
}

/// Each server's member at its latest candidate (the others failed, or waited for a host, and
/// moved on), in number order; or the earlier member whose server was adopted, the move to
/// the later one called off ([`adopt`]). Only adoption gives a member a server after its
/// server moved on: one that failed stays failed, one no host took stays cancelled.
fn current(members: &[Member]) -> Vec<&Member> {
    let mut latest: Vec<&Member> = Vec::new();
    for member in members {
        match latest.last_mut() {
            Some(last) if last.number == member.number => {
                let adopted = matches!(
                    last.status,
                    OrderStatus::Active | OrderStatus::Deleting | OrderStatus::Deleted
                );
                if member.candidate > last.candidate && !adopted {
                    *last = member;
                }
            }
            _ => latest.push(member),
        }
    }
    latest
}

const MEMBER_COLUMNS: &str = "id, name, vendor, region, status, server, fault";

async fn read_fleet(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fleet: Uuid,
) -> anyhow::Result<Option<(Fleet, Vec<Member>)>> {
    let row =
        sqlx::query("SELECT tenant, status, all_or_nothing, placement FROM orders WHERE id = $1")
            .bind(fleet.to_string())
            .fetch_optional(&mut **tx)
            .await
            .context("reading a fleet")?;
    let Some(row) = row else { return Ok(None) };
    let head = Fleet {
        id: fleet,
        tenant: row.try_get("tenant")?,
        status: parse_status(row.try_get("status")?)?,
        all_or_nothing: row.try_get::<i64, _>("all_or_nothing")? != 0,
        placement: parse_json(row.try_get("placement")?)?.unwrap_or_default(),
    };
    let rows = sqlx::query(&format!(
        "SELECT {MEMBER_COLUMNS} FROM orders WHERE fleet_id = $1"
    ))
    .bind(fleet.to_string())
    .fetch_all(&mut **tx)
    .await
    .context("reading a fleet's servers")?;
    let mut members = rows
        .iter()
        .map(member_from_row)
        .collect::<anyhow::Result<Vec<_>>>()?;
    members.sort_by_key(|member| (member.number, member.candidate));
    Ok(Some((head, members)))
}

fn member_from_row(row: &sqlx::any::AnyRow) -> anyhow::Result<Member> {
    let id = parse_uuid(row.try_get("id")?)?;
    let number = fleet_of(id).map_or(0, |(_, number)| number);
    Ok(Member {
        id,
        number,
        candidate: candidate_of(id),
        name: row.try_get("name")?,
        vendor: row.try_get("vendor")?,
        region: row.try_get("region")?,
        status: parse_status(row.try_get("status")?)?,
        server: parse_json(row.try_get("server")?)?,
        fault: parse_json(row.try_get("fault")?)?,
    })
}

/// Appends to the order's event log; for a member of a fleet, also mirrors it into the
/// fleet's log and sums the fleet up again ([`member_changed`]). The transaction holds
/// the order's row lock already ([`lock_order`], taken first by every transaction that
/// changes an order).
pub(super) async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    event: &OrderEvent,
) -> anyhow::Result<()> {
    insert_own_event(tx, order_id, event).await?;
    member_changed(tx, order_id, event).await
}

/// Whether a failed create may have left a server the order never heard of: any failure but
/// a first attempt's refusal by the vendor (or the sandbox), which made nothing. A later
/// attempt follows an earlier one whose answer may have been lost; a passing fault (a
/// time-out, a dropped connection) or a plugin failing on the vendor's answer may come after
/// the vendor made the server.
pub(super) fn failure_may_have_left_a_server(
    attempt: u32,
    fault: &provisioner_contract::Fault,
) -> bool {
    const REFUSALS: &[&str] = &[
        "invalid_request",
        "unauthorized",
        "quota_exceeded",
        "not_found",
        "capability_denied",
    ];
    attempt > 1 || !REFUSALS.contains(&fault.code.as_str())
}

/// After `event` was written for `member` (whose fleet's lock the transaction holds): a
/// server that failed where its order has a next placement candidate moves there
/// ([`move_on`]); the event is mirrored into the fleet's log and the fleet moves to its
/// members' sum; an `all_or_nothing` fleet that fails winds its other servers down.
pub(super) async fn member_changed(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    member: Uuid,
    event: &OrderEvent,
) -> anyhow::Result<()> {
    let Some((fleet_id, number)) = fleet_of(member) else {
        return Ok(());
    };
    let Some((fleet, mut members)) = read_fleet(tx, fleet_id).await? else {
        return Ok(());
    };
    let name = members
        .iter()
        .find(|m| m.id == member)
        .map_or_else(|| format!("server {number}"), |m| m.name.clone());
    let mut message = format!("{name}: {}", event.message);
    if let Some(moved) = move_on(tx, &fleet, &members, member, event.attempt).await? {
        message.push_str(&format!("; {moved}"));
        members = read_fleet(tx, fleet_id)
            .await?
            .context("the fleet vanished in its own transaction")?
            .1;
    }
    let mirrored = OrderEvent {
        message,
        ..event.clone()
    };
    resettle(tx, &fleet, &members, mirrored).await
}

/// Moves `member`'s server to the order's next placement candidate if it failed for good
/// with a fault in [`MOVES_ON`], is its server's latest member, and the order is neither
/// failed nor being cancelled or deleted: inserts the next candidate's member (`pending`)
/// and the move; queues its create at once when the failure left nothing to clean up
/// (`attempt` and the recorded server say so, as for the failed order's clean-up), else
/// when the clean-up answers ([`cleanup_answered`]). What it did, for the log.
async fn move_on(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fleet: &Fleet,
    members: &[Member],
    member: Uuid,
    attempt: Option<u32>,
) -> anyhow::Result<Option<String>> {
    let Some(failed) = members.iter().find(|m| m.id == member) else {
        return Ok(None);
    };
    let Some(fault) = failed.fault.as_ref() else {
        return Ok(None);
    };
    let latest = current(members).iter().any(|m| m.id == member);
    if failed.candidate + 1 >= fleet.placement.len()
        || failed.status != OrderStatus::Failed
        || !latest
        || !MOVES_ON.contains(&fault.code.as_str())
        || !matches!(
            fleet.status,
            OrderStatus::Pending | OrderStatus::Queued | OrderStatus::Provisioning
        )
    {
        return Ok(None);
    }
    let (next, passed_over) = next_candidate(tx, fleet, failed).await?;
    let Some(next) = next else {
        return Ok(Some(format!("not moved: {}", passed_over.join("; "))));
    };
    let cleanup =
        failed.server.is_some() || failure_may_have_left_a_server(attempt.unwrap_or(1), fault);
    let moved = move_server(tx, fleet, failed, next, &fault.code, cleanup).await?;
    Ok(Some(with_passed_over(&passed_over, moved)))
}

/// Where `from`'s server may move: the first candidate after its own at which one more
/// server keeps the tenant within its live-server quotas (a vendor where the tenant may have
/// no more is passed over, as a sold-out region would be), and the candidates passed over
/// with why, for the log.
async fn next_candidate(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fleet: &Fleet,
    from: &Member,
) -> anyhow::Result<(Option<usize>, Vec<String>)> {
    let mut passed_over = Vec::new();
    for (next, target) in fleet.placement.iter().enumerate().skip(from.candidate + 1) {
        match quotas::check_moved_server(tx, &fleet.tenant, &target.vendor).await? {
            None => return Ok((Some(next), passed_over)),
            Some(over) => passed_over.push(format!(
                "candidate {} ({target}) passed over, over the tenant's quota: {over}",
                next + 1
            )),
        }
    }
    Ok((None, passed_over))
}

/// `moved` (what a move did) after the candidates it passed over, for the log.
fn with_passed_over(passed_over: &[String], moved: String) -> String {
    match passed_over {
        [] => moved,
        _ => format!("{}; {moved}", passed_over.join("; ")),
    }
}

/// Moves `from`'s server to the order's candidate `next` (which exists) for `reason`:
/// inserts that candidate's member (`pending`) and the move, calls the order's webhook
/// (`order.moved`), and queues the new member's create at once, or (`wait_for_cleanup`) when
/// the clean-up at `from` answers ([`cleanup_answered`]). What it did, for the log.
async fn move_server(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fleet: &Fleet,
    from: &Member,
    next: usize,
    reason: &str,
    wait_for_cleanup: bool,
) -> anyhow::Result<String> {
    let failed = from;
    let member = from.id;
    let target = fleet
        .placement
        .get(next)
        .context("a move past the placement's last candidate")?;
    let (fleet_id, number) = fleet_of(member).context("a member without a fleet")?;
    let moved = member_id(fleet_id, number, next);
    let now = Utc::now();
    sqlx::query(
        "INSERT INTO orders (id, tenant, status, vendor, region, size, image, name, ssh_keys, \
         user_data, labels, created_at, updated_at, webhook_url, fleet_id, fleet_size, \
         all_or_nothing, placement) \
         SELECT $1, tenant, 'pending', $2, $3, $4, $5, name, ssh_keys, user_data, labels, $6, \
         $6, NULL, fleet_id, NULL, 0, NULL FROM orders WHERE id = $7",
    )
    .bind(moved.to_string())
    .bind(&target.vendor)
    .bind(&target.region)
    .bind(&target.size)
    .bind(&target.image)
    .bind(DbTime(now))
    .bind(member.to_string())
    .execute(&mut **tx)
    .await
    .context("adding a server's member at the next candidate")?;
    let first = OrderEvent {
        at: now,
        status: OrderStatus::Pending,
        message: format!(
            "moved here from {} {} ({}): candidate {} of the placement",
            failed.vendor,
            failed.region,
            reason,
            next + 1
        ),
        attempt: None,
    };
    insert_own_event(tx, moved, &first).await?;
    let cleanup = wait_for_cleanup;
    sqlx::query(
        "INSERT INTO placement_moves (member_id, from_member, reason, at, waiting) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(moved.to_string())
    .bind(member.to_string())
    .bind(reason)
    .bind(DbTime(now))
    .bind(i64::from(cleanup))
    .execute(&mut **tx)
    .await
    .context("recording a move")?;
    let note = serde_json::json!({
        "server": failed.name, "number": number, "reason": reason,
        "from": {"vendor": failed.vendor, "region": failed.region, "candidate": failed.candidate + 1},
        "to": {"vendor": target.vendor, "region": target.region, "candidate": next + 1},
    });
    queue_move_webhook(tx, fleet.id, note).await?;
    if cleanup {
        return Ok(format!(
            "moving to {target} once the clean-up at {} {} has answered",
            failed.vendor, failed.region
        ));
    }
    queue_create(tx, moved).await?;
    Ok(format!("moving to {target}"))
}

/// Queues the creation request of member `id` (as it is recorded).
async fn queue_create(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: Uuid) -> anyhow::Result<()> {
    let row = sqlx::query("SELECT * FROM orders WHERE id = $1")
        .bind(id.to_string())
        .fetch_one(&mut **tx)
        .await
        .context("reading a moved server")?;
    let order = order_from_row(&row)?;
    let request = HostRequest::Create(ProvisionRequest {
        order_id: order.id,
        vendor: order.vendor.clone(),
        spec: order.spec,
        ordered_at: Some(order.created_at),
    });
    let outbox = OutboxMessage::request(order.id, &order.vendor, &request, None);
    insert_outbox(tx, &outbox, Utc::now()).await
}

/// An answer (`kind`) reached failed member `member`: if it is its clean-up's (the key
/// lookup's cancel, or the delete of the server it recorded), a move waiting for it sends the
/// next candidate's create. A clean-up that failed lets it go too, saying so: the clean-up is
/// retried on its own budget and the orphan sweep reports what it leaves, while the order's
/// server is made elsewhere.
pub(super) async fn cleanup_answered(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    member: Uuid,
    kind: &provisioner_contract::UpdateKind,
) -> anyhow::Result<()> {
    use provisioner_contract::UpdateKind;
    let failed = match kind {
        UpdateKind::Cancelled { .. } | UpdateKind::Deleted { .. } => false,
        UpdateKind::CancelFailed { .. } | UpdateKind::DeleteFailed { .. } => true,
        _ => return Ok(()),
    };
    let Some(moved) = waiting_move(tx, member).await? else {
        return Ok(());
    };
    let message = match failed {
        true => {
            "the clean-up at the previous candidate has not succeeded yet (it is retried, then \
             left to the orphan sweep); creating the server here"
        }
        false => "the previous candidate's clean-up answered; creating the server here",
    };
    release_move(tx, moved, message).await
}

/// The member a move from failed member `member` waits to create, if it waits for that
/// member's clean-up (its create not sent yet): that clean-up then keeps a server it finds
/// running, for [`adopt`].
pub(super) async fn waiting_move(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    member: Uuid,
) -> anyhow::Result<Option<Uuid>> {
    if fleet_of(member).is_none() {
        return Ok(None);
    }
    let row =
        sqlx::query("SELECT member_id FROM placement_moves WHERE from_member = $1 AND waiting = 1")
            .bind(member.to_string())
            .fetch_optional(&mut **tx)
            .await
            .context("looking for a move waiting for a clean-up")?;
    row.map(|row| parse_uuid(row.try_get("member_id")?))
        .transpose()
}

/// The clean-up of failed member `update.order_id`, whose move waits for it, found its server
/// running and kept it ([`UpdateKind::Adopted`](provisioner_contract::UpdateKind::Adopted)):
/// if the move still waits (its member pending, its create not sent) and the order is still
/// on its way, the server is adopted: the member becomes `active` with it, the move is called
/// off (its member `cancelled`; no host ever heard of it), and the order sums up again.
/// Whether it was adopted; if not, the caller deletes the server as late news.
///
/// Only the clean-up's own answer adopts: it is the one request acting on the server at this
/// candidate while the move waits. News of the server from anywhere else (a late create)
/// deletes it and lets the move go on ([`late_server_deleted`]), so a server being deleted
/// is never adopted.
pub(super) async fn adopt(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    update: &provisioner_contract::OrderUpdate,
    server: &ServerInfo,
) -> anyhow::Result<bool> {
    let member = update.order_id;
    let Some(moved) = waiting_move(tx, member).await? else {
        return Ok(false);
    };
    let Some((fleet_id, _)) = fleet_of(member) else {
        return Ok(false);
    };
    let Some((fleet, members)) = read_fleet(tx, fleet_id).await? else {
        return Ok(false);
    };
    let on_its_way = matches!(
        fleet.status,
        OrderStatus::Pending | OrderStatus::Queued | OrderStatus::Provisioning
    );
    let (Some(failed), Some(next)) = (
        members.iter().find(|m| m.id == member),
        members.iter().find(|m| m.id == moved),
    ) else {
        return Ok(false);
    };
    if !on_its_way || failed.status != OrderStatus::Failed || next.status != OrderStatus::Pending {
        return Ok(false);
    }
    let now = Utc::now();
    sqlx::query("UPDATE placement_moves SET waiting = 0 WHERE member_id = $1")
        .bind(moved.to_string())
        .execute(&mut **tx)
        .await
        .context("calling a move off")?;
    sqlx::query("UPDATE orders SET status = 'cancelled', updated_at = $1 WHERE id = $2")
        .bind(DbTime(now))
        .bind(moved.to_string())
        .execute(&mut **tx)
        .await
        .context("calling a move off")?;
    let called_off = OrderEvent {
        at: now,
        status: OrderStatus::Cancelled,
        message: format!(
            "not needed: the server's clean-up at {} {} found server {} running there and kept \
             it; nothing was sent here",
            failed.vendor, failed.region, server.vendor_id
        ),
        attempt: None,
    };
    insert_own_event(tx, moved, &called_off).await?;
    sqlx::query(
        "UPDATE orders SET status = 'active', server = $1, fault = NULL, updated_at = $2 \
         WHERE id = $3",
    )
    .bind(json(server))
    .bind(DbTime(now))
    .bind(member.to_string())
    .execute(&mut **tx)
    .await
    .context("adopting a server")?;
    let adopted = OrderEvent {
        at: update.at,
        status: OrderStatus::Active,
        message: format!(
            "adopted server {}: the clean-up before the move to {} {} found it running here, \
             so the move is called off",
            server.vendor_id, next.vendor, next.region
        ),
        attempt: Some(update.attempt),
    };
    // Mirrored into the order's log, which sums its servers up again.
    insert_event(tx, member, &adopted).await?;
    Ok(true)
}

/// A server turned up for failed member `member` from elsewhere than its clean-up (a late
/// create) and its delete is queued: a move waiting for the clean-up goes on now, since the
/// server it might have adopted is going.
pub(super) async fn late_server_deleted(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    member: Uuid,
) -> anyhow::Result<()> {
    let Some(moved) = waiting_move(tx, member).await? else {
        return Ok(());
    };
    release_move(
        tx,
        moved,
        "a server the previous candidate made turned up late and is being deleted; creating \
         the server here",
    )
    .await
}

/// Sends the create of `moved`, a server whose move waited for a clean-up (unless it is no
/// longer `pending`: a cancel of the order took it meanwhile), with `message` in its log.
async fn release_move(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    moved: Uuid,
    message: &str,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE placement_moves SET waiting = 0 WHERE member_id = $1")
        .bind(moved.to_string())
        .execute(&mut **tx)
        .await
        .context("marking a move sent")?;
    // Only if the moved server is still pending (a cancel of the order meanwhile took it).
    let pending = sqlx::query("SELECT status FROM orders WHERE id = $1")
        .bind(moved.to_string())
        .fetch_one(&mut **tx)
        .await
        .context("reading a moved server")?;
    if parse_status(pending.try_get("status")?)? != OrderStatus::Pending {
        return Ok(());
    }
    queue_create(tx, moved).await?;
    let event = OrderEvent {
        at: Utc::now(),
        status: OrderStatus::Pending,
        message: message.into(),
        attempt: None,
    };
    insert_event(tx, moved, &event).await
}

/// Moves `fleet` to its members' sum (if that differs), with `event` (its status set to the
/// fleet's) in its log; what a move to `failed` of an `all_or_nothing` fleet winds down.
async fn resettle(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    fleet: &Fleet,
    members: &[Member],
    mut event: OrderEvent,
) -> anyhow::Result<()> {
    let latest = current(members);
    let statuses: Vec<OrderStatus> = latest.iter().map(|m| m.status).collect();
    let next = summarise(fleet.status, fleet.all_or_nothing, &statuses);
    event.status = next;
    event.attempt = None;
    if next == fleet.status {
        return insert_own_event(tx, fleet.id, &event).await;
    }
    let fault = matches!(next, OrderStatus::Failed | OrderStatus::PartiallyActive)
        .then(|| first_fault(&latest))
        .flatten();
    sqlx::query("UPDATE orders SET status = $1, fault = $2, updated_at = $3 WHERE id = $4")
        .bind(next.as_str())
        .bind(fault.as_ref().map(json))
        .bind(DbTime(Utc::now()))
        .bind(fleet.id.to_string())
        .execute(&mut **tx)
        .await
        .with_context(|| format!("moving fleet {} to {next}", fleet.id))?;
    insert_own_event(tx, fleet.id, &event).await?;
    if next == OrderStatus::Failed && fleet.all_or_nothing {
        let wound = wind_down(
            tx,
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
    queue_webhook(tx, fleet.id, next).await?;
    Ok(())
}

/// The first failed member's fault, its message naming the server.
fn first_fault(members: &[&Member]) -> Option<Fault> {
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
/// with its event and its request queued, to the member's own vendor: a server that moved is
/// at another vendor than the order's first); what it did, for the fleet's log.
async fn wind_down(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
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
                    vendor: member.vendor.clone(),
                    adopt_running: false,
                }),
                "cancelling",
            ),
            (OrderStatus::Active, Some(server)) => (
                lifecycle::DELETE_REQUESTED,
                HostRequest::Delete(DeleteRequest {
                    order_id: member.id,
                    vendor: member.vendor.clone(),
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
        let outbox = OutboxMessage::request(
            member.id,
            &member.vendor,
            &request,
            traceparent.map(str::to_string),
        );
        insert_outbox(tx, &outbox, now).await?;
        done.push(format!("{what} {}", member.name));
    }
    Ok(done)
}

impl Store {
    /// Moves of servers to their orders' next placement candidates so far, by reason (the
    /// fault code).
    pub async fn placement_moves(&self) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT reason, COUNT(*) AS n FROM placement_moves GROUP BY reason")
            .fetch_all(&self.pool)
            .await
            .context("counting placement moves")?;
        rows.iter()
            .map(|row| Ok((row.try_get("reason")?, row.try_get("n")?)))
            .collect()
    }

    /// Moves the servers no host took for `for_at_least` (members `pending` or `queued` since
    /// then, at a vendor no host announced itself for since then) to their orders' next
    /// candidates, each in a transaction of its own: the server is cancelled where it waited
    /// (the cancel waits in the vendor's queue behind its create, for a host that comes back)
    /// and its next candidate's create is queued at once. How many moved.
    pub async fn move_unserved(&self, for_at_least: std::time::Duration) -> anyhow::Result<usize> {
        let since = Utc::now() - chrono::Duration::from_std(for_at_least)?;
        const UNSERVED: &str = "SELECT o.id FROM orders o \
             WHERE o.fleet_id IS NOT NULL AND o.status IN ('pending', 'queued') \
             AND o.created_at < $1 AND NOT EXISTS (SELECT 1 FROM vendor_hosts h \
             WHERE h.vendor = o.vendor AND h.last_seen >= $1) LIMIT 500";
        let rows = sqlx::query(UNSERVED)
            .bind(DbTime(since))
            .fetch_all(&self.pool)
            .await
            .context("looking for servers no host takes")?;
        let mut moved = 0;
        for row in rows {
            let member = parse_uuid(row.try_get("id")?)?;
            if self.move_unserved_one(member, since, for_at_least).await? {
                moved += 1;
            }
        }
        Ok(moved)
    }

    /// Sends the creates of moves whose clean-up has not answered for `after` (the watchdog's
    /// time without news: the answer was lost, or the host holding the clean-up is stuck), as
    /// a clean-up that failed would; the clean-up goes on, or the orphan sweep finds what it
    /// leaves. How many were sent.
    pub async fn release_waiting_moves(&self, after: std::time::Duration) -> anyhow::Result<usize> {
        let since = Utc::now() - chrono::Duration::from_std(after)?;
        let rows = sqlx::query(
            "SELECT member_id, from_member FROM placement_moves WHERE waiting = 1 AND at < $1 \
             LIMIT 500",
        )
        .bind(DbTime(since))
        .fetch_all(&self.pool)
        .await
        .context("looking for moves waiting too long")?;
        let mut released = 0;
        for row in rows {
            let moved = parse_uuid(row.try_get("member_id")?)?;
            let from = parse_uuid(row.try_get("from_member")?)?;
            let mut tx = self
                .writer
                .begin()
                .await
                .context("starting a transaction")?;
            lock_order(&mut tx, from).await?;
            let still =
                sqlx::query("SELECT 1 FROM placement_moves WHERE member_id = $1 AND waiting = 1")
                    .bind(moved.to_string())
                    .fetch_optional(&mut *tx)
                    .await
                    .context("reading a move")?
                    .is_some();
            if !still {
                continue;
            }
            let message = format!(
                "the clean-up at the previous candidate has not answered for {} s; creating the \
                 server here (the clean-up goes on, or the orphan sweep finds what it leaves)",
                after.as_secs()
            );
            release_move(&mut tx, moved, &message).await?;
            tx.commit().await.context("committing a released move")?;
            self.events_committed([moved]);
            released += 1;
        }
        Ok(released)
    }

    /// [`Store::move_unserved`] for one member, checked again under its fleet's lock.
    async fn move_unserved_one(
        &self,
        member: Uuid,
        since: chrono::DateTime<Utc>,
        waited: std::time::Duration,
    ) -> anyhow::Result<bool> {
        let Some((fleet_id, _)) = fleet_of(member) else {
            return Ok(false);
        };
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        lock_order(&mut tx, member).await?;
        let Some((fleet, members)) = read_fleet(&mut tx, fleet_id).await? else {
            return Ok(false);
        };
        let Some(from) = members.iter().find(|m| m.id == member) else {
            return Ok(false);
        };
        let served =
            sqlx::query("SELECT 1 FROM vendor_hosts WHERE vendor = $1 AND last_seen >= $2 LIMIT 1")
                .bind(&from.vendor)
                .bind(DbTime(since))
                .fetch_optional(&mut *tx)
                .await
                .context("looking for a host of the vendor")?
                .is_some();
        let latest = current(&members).iter().any(|m| m.id == member);
        if served
            || !latest
            || from.candidate + 1 >= fleet.placement.len()
            || !matches!(from.status, OrderStatus::Pending | OrderStatus::Queued)
            || !matches!(
                fleet.status,
                OrderStatus::Pending | OrderStatus::Queued | OrderStatus::Provisioning
            )
        {
            return Ok(false);
        }
        // A server with no candidate left within the tenant's quotas waits where it is.
        let (next, passed_over) = next_candidate(&mut tx, &fleet, from).await?;
        let Some(next) = next else {
            return Ok(false);
        };
        if !compare_and_set(&mut tx, member, lifecycle::CANCEL_REQUESTED, None, None).await? {
            return Ok(false);
        }
        drop_unpublished(&mut tx, member).await?;
        let now = Utc::now();
        let reason = format!(
            "no host has served {} for {} s: cancelled here, for a host that comes back",
            from.vendor,
            waited.as_secs()
        );
        let event = OrderEvent {
            at: now,
            status: OrderStatus::Cancelling,
            message: reason.clone(),
            attempt: None,
        };
        insert_own_event(&mut tx, member, &event).await?;
        let cancel = HostRequest::Cancel(CancelRequest {
            order_id: member,
            vendor: from.vendor.clone(),
            adopt_running: false,
        });
        let outbox = OutboxMessage::request(member, &from.vendor, &cancel, None);
        insert_outbox(&mut tx, &outbox, now).await?;
        let moved = move_server(&mut tx, &fleet, from, next, "no_host", false).await?;
        let moved = with_passed_over(&passed_over, moved);
        let (fleet, members) = read_fleet(&mut tx, fleet_id)
            .await?
            .context("the fleet vanished in its own transaction")?;
        let event = OrderEvent {
            at: now,
            status: fleet.status,
            message: format!("{}: {reason}; {moved}", from.name),
            attempt: None,
        };
        resettle(&mut tx, &fleet, &members, event).await?;
        tx.commit().await.context("committing a move")?;
        self.events_committed([fleet_id]);
        Ok(true)
    }

    /// The servers of the fleet `fleet`, each at its latest candidate, in number order.
    pub async fn fleet_servers(&self, fleet: Uuid) -> anyhow::Result<Vec<FleetServer>> {
        let rows = sqlx::query(&format!(
            "SELECT {MEMBER_COLUMNS} FROM orders WHERE fleet_id = $1"
        ))
        .bind(fleet.to_string())
        .fetch_all(&self.pool)
        .await
        .context("reading an order's servers")?;
        let mut members = rows
            .iter()
            .map(member_from_row)
            .collect::<anyhow::Result<Vec<_>>>()?;
        members.sort_by_key(|member| (member.number, member.candidate));
        Ok(current(&members)
            .into_iter()
            .map(|member| FleetServer {
                number: member.number,
                key: member.id,
                name: member.name.clone(),
                candidate: member.candidate + 1,
                vendor: member.vendor.clone(),
                region: member.region.clone(),
                status: member.status,
                server: member.server.clone(),
                fault: member.fault.clone(),
            })
            .collect())
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
        let Some((_, members)) = read_fleet(&mut tx, fleet_id).await? else {
            return Ok(false);
        };
        let wound = wind_down(&mut tx, &members, message, Some(traceparent)).await?;
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
