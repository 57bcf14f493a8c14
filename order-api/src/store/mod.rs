//! The orders database: orders, their event log, the outbox, the announced vendors, (in
//! [`orphans`]) the orphan sweep's records, and (in [`quotas`]) tenants' quotas and rates.
//! Every state change is a compare-and-set in one transaction. SQLite or PostgreSQL by
//! `DATABASE_URL` ([`db`]), one code path for both.
//!
//! Writes go through a pool of their own (`writer`: one connection on SQLite), reads through
//! another. SQLite takes one writer at a time anyway; several connections competing for the
//! write lock wait in its busy handler, which sleeps in steps of milliseconds (the
//! accept-latency benchmark saw a p99 of 22 ms at 500 orders/s from that). Queued on one
//! connection, writers wait their turn without sleeping. New orders are committed in groups
//! ([`Store::insert_order`]): the orders that arrive while a commit is on disk share the next.
//!
//! On PostgreSQL several order-api instances share the database. What keeps them from double
//! effects: every state change is a compare-and-set on the order row; the relay claims the
//! outbox rows it publishes ([`Store::due_outbox`]); an order's events are written under its
//! row lock, so they are numbered 1, 2, 3 ... and commit in that order, and a live stream that
//! reads "events after n" misses none (it is woken by [`EventFeed`]); transactions that touch several orders take them in id order
//! ([`fleets::lock_rank`]: a fleet's servers with their fleet, after it), and a tenant's quota
//! lock comes after every order lock its transaction takes, so two instances never deadlock
//! on each other. Orders for several servers are kept as in [`fleets`].

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use provisioner_contract::{
    Fault, OrderUpdate, ServerInfo, ServerSpec, UpdateKind, VendorAnnouncement, VendorWithdrawal,
};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::lifecycle::{self, OrderStatus, Transition};

mod db;
mod dead_letters;
mod events;
pub mod fleets;
mod orphans;
mod quotas;
mod tokens;
mod vendors;
mod webhooks;
pub use db::Backend;
use db::{DbTime, optional_time, parameters, time, value_rows};
pub use dead_letters::{DeadLetter, NewDeadLetter};
pub use events::{AllNews, EventFeed, News, OrderNews};
pub use fleets::{Candidate, FleetServer, MAX_PLACEMENT_CANDIDATES, MAX_SERVERS_PER_ORDER};
pub use orphans::{Orphan, OrphanAction, OrphanState, Ownership, Sweep, ownership};
pub use quotas::{
    IN_FLIGHT_STATUSES, LIVE_STATUSES, Limits, OrderRate, QuotaExceeded, QuotaSet, ScopedQuota,
    TenantQuotas, Usage, keep_folded,
};
pub use tokens::{NewToken, TOKEN_CACHE_TTL, TokenInfo};
pub use vendors::UnavailableVendor;
pub use webhooks::WebhookDelivery;

/// The database handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Which database this is.
    backend: Backend,
    /// Reads.
    pool: AnyPool,
    /// Writes (one connection on SQLite).
    writer: AnyPool,
    /// New orders on their way to [`commit_new_orders`].
    new_orders: tokio::sync::mpsc::Sender<NewOrder>,
    /// API tokens looked up lately.
    known_tokens: tokens::TokenCache,
    /// Wakes live event streams when their order has news.
    feed: events::EventFeed,
}

/// How long the relay's claim on outbox messages lasts (PostgreSQL): a relay that dies
/// mid-publish leaves its messages to another instance after this.
pub const OUTBOX_CLAIM: Duration = Duration::from_secs(30);

/// Most orders committed in one transaction.
const NEW_ORDERS_PER_COMMIT: usize = 256;

/// A new order waiting for its commit, and who waits for the outcome.
struct NewOrder {
    order: Order,
    /// An order for several servers: one member order per server (see [`fleets`]).
    members: Vec<Order>,
    /// Its creation requests: one, or one per member.
    outbox: Vec<OutboxMessage>,
    idempotency: Option<IdempotencyKey>,
    committed: tokio::sync::oneshot::Sender<anyhow::Result<Inserted>>,
}

/// A client's `Idempotency-Key` with the digest of the request it came with (keys are per
/// tenant: the order's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The key as the client sent it.
    pub key: String,
    /// SHA-256 of the request, hex.
    pub request_sha256: String,
}

/// What became of a new order.
#[derive(Debug)]
pub enum Inserted {
    /// Recorded, with its first event.
    New(Vec<OrderEvent>),
    /// Not recorded: its idempotency key already names an order.
    KeyTaken,
    /// Not recorded: it would pass one of its tenant's quotas.
    OverQuota(QuotaExceeded),
}

/// The order an idempotency key names.
#[derive(Debug, Clone)]
pub struct KeyedOrder {
    /// The order's id.
    pub order_id: Uuid,
    /// SHA-256 of the request that created it, hex.
    pub request_sha256: String,
}

/// An order as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    /// The order id (UUIDv7).
    pub id: Uuid,
    /// The tenant it belongs to.
    pub tenant: String,
    /// Where it is.
    pub status: OrderStatus,
    /// The vendor serving it.
    pub vendor: String,
    /// What was ordered.
    #[serde(flatten)]
    pub spec: ServerSpec,
    /// The server, once the vendor made one.
    pub server: Option<ServerInfo>,
    /// Why it failed, when it did.
    pub fault: Option<Fault>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Called when the order settles (see [`crate::webhooks`]).
    pub webhook_url: Option<String>,
    /// How many servers it is for (1 unless ordered with `count`).
    pub count: u32,
    /// For several servers: whether one failing for good removes all the others (and the
    /// order fails) rather than keeping those that came up.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub all_or_nothing: bool,
    /// For several servers, each with its own state, in number order (read with the order
    /// where the API shows one order; absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<FleetServer>>,
    /// The places it may be served, in order, when ordered with `placement` (its `vendor`,
    /// `region`, `size` and `image` are the first's; each server's `candidate` says which
    /// serves it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Vec<fleets::Candidate>>,
}

/// One line of an order's event log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The order's status after it.
    pub status: OrderStatus,
    /// What happened.
    pub message: String,
    /// Which delivery of the creation request it came from, for host events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// A vendor at least one host serves.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Vendor {
    /// The vendor id orders use.
    pub vendor: String,
    /// A name for people (from the latest announcement).
    pub display_name: String,
    /// The plugin's version (from the latest announcement).
    pub plugin_version: String,
    /// The hosts that serve it, latest first.
    pub hosts: Vec<VendorHost>,
}

/// One host serving a vendor.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VendorHost {
    /// The host's id.
    pub host_id: String,
    /// The plugin version that host runs.
    pub plugin_version: String,
    /// When it first announced the vendor.
    pub first_seen: DateTime<Utc>,
    /// When it last announced the vendor.
    pub last_seen: DateTime<Utc>,
}

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
}

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

/// Filters and page position for listing orders.
#[derive(Debug, Clone, Default)]
pub struct OrderQuery {
    /// Only this tenant's orders (`None`: every tenant's).
    pub tenant: Option<String>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only orders for this vendor.
    pub vendor: Option<String>,
    /// Only orders created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only orders created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Only orders older than this id (the cursor).
    pub before: Option<Uuid>,
    /// At most this many.
    pub limit: u32,
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn parse_json<T: serde::de::DeserializeOwned>(text: Option<String>) -> anyhow::Result<Option<T>> {
    text.map(|t| serde_json::from_str(&t).context("decoding a JSON column"))
        .transpose()
}

impl Store {
    /// Opens the database at `url` (a SQLite file is made when missing) and runs the
    /// migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let db::Pools {
            backend,
            reads,
            writes,
        } = db::open(url).await?;
        quotas::check_status_usage(&reads).await?;
        let (new_orders, queue) = tokio::sync::mpsc::channel(4 * NEW_ORDERS_PER_COMMIT);
        tokio::spawn(commit_new_orders(writes.clone(), queue));
        Ok(Self {
            backend,
            pool: reads,
            writer: writes,
            new_orders,
            known_tokens: tokens::TokenCache::default(),
            feed: events::EventFeed::new(backend, url),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Records a new order and its creation request (and its idempotency key, unless the key
    /// names an order already), committed, with whatever other new orders arrived meanwhile,
    /// before it returns.
    /// An order for several servers comes with its `members` (see [`fleets`]) and one
    /// request in `outbox` per member.
    pub async fn insert_order(
        &self,
        order: &Order,
        members: &[Order],
        outbox: &[OutboxMessage],
        idempotency: Option<&IdempotencyKey>,
    ) -> anyhow::Result<Inserted> {
        let (committed, outcome) = tokio::sync::oneshot::channel();
        let new = NewOrder {
            order: order.clone(),
            members: members.to_vec(),
            outbox: outbox.to_vec(),
            idempotency: idempotency.cloned(),
            committed,
        };
        self.new_orders
            .send(new)
            .await
            .map_err(|_| anyhow::anyhow!("the order writer has stopped"))?;
        let inserted = outcome
            .await
            .context("the order writer dropped an order")??;
        if matches!(inserted, Inserted::New(_)) {
            self.order_made(order.id);
        }
        Ok(inserted)
    }

    /// The order a tenant's idempotency key names, if any.
    pub async fn keyed_order(&self, tenant: &str, key: &str) -> anyhow::Result<Option<KeyedOrder>> {
        let row = sqlx::query(
            "SELECT order_id, request_sha256 FROM idempotency_keys WHERE tenant = $1 AND key = $2",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .context("looking up an idempotency key")?;
        row.map(|row| {
            let order_id: String = row.try_get("order_id")?;
            Ok(KeyedOrder {
                order_id: Uuid::parse_str(&order_id).context("an idempotency key's order id")?,
                request_sha256: row.try_get("request_sha256")?,
            })
        })
        .transpose()
    }

    /// The order (`None`: no such order) and its events after event number `after`, each
    /// with its number (increasing; what an SSE client sends back as `Last-Event-ID`).
    pub async fn events_since(
        &self,
        id: Uuid,
        after: i64,
    ) -> anyhow::Result<Option<(Order, Vec<(i64, OrderEvent)>)>> {
        self.order_and_events_after(id, after, None).await
    }

    /// The order `id` names (if it belongs to `tenant`, when one is given) with its events
    /// after event `after`.
    async fn order_and_events_after(
        &self,
        id: Uuid,
        after: i64,
        tenant: Option<&str>,
    ) -> anyhow::Result<Option<(Order, Vec<(i64, OrderEvent)>)>> {
        let Some(mut order) = self.find_order(id, tenant).await? else {
            return Ok(None);
        };
        if order.count > 1 || order.placement.is_some() {
            order.servers = Some(self.fleet_servers(order.id).await?);
        }
        let rows = sqlx::query(
            "SELECT seq, at, status, message, attempt FROM order_events \
             WHERE order_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(id.to_string())
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .context("reading an order's new events")?;
        let events = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("seq")?,
                    OrderEvent {
                        at: time(row, "at")?,
                        status: parse_status(row.try_get("status")?)?,
                        message: row.try_get("message")?,
                        attempt: row.try_get::<Option<i64>, _>("attempt")?.map(|a| a as u32),
                    },
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some((order, events)))
    }

    /// One order with its event log.
    pub async fn order(&self, id: Uuid) -> anyhow::Result<Option<(Order, Vec<OrderEvent>)>> {
        self.order_of(id, None).await
    }

    /// One order with its event log if it belongs to `tenant` (any tenant's with `None`).
    /// The tenant is part of the first query, so another tenant's order costs exactly what
    /// an id that does not exist costs: one indexed lookup that finds nothing.
    pub async fn order_of(
        &self,
        id: Uuid,
        tenant: Option<&str>,
    ) -> anyhow::Result<Option<(Order, Vec<OrderEvent>)>> {
        let found = self.order_and_events_after(id, 0, tenant).await?;
        Ok(found
            .map(|(order, events)| (order, events.into_iter().map(|(_, event)| event).collect())))
    }

    /// The order `id` names, if it exists (and belongs to `tenant`, when one is given).
    async fn find_order(&self, id: Uuid, tenant: Option<&str>) -> anyhow::Result<Option<Order>> {
        let row = match tenant {
            None => sqlx::query("SELECT * FROM orders WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool),
            Some(tenant) => sqlx::query("SELECT * FROM orders WHERE id = $1 AND tenant = $2")
                .bind(id.to_string())
                .bind(tenant.to_string())
                .fetch_optional(&self.pool),
        }
        .await
        .context("reading an order")?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// Orders newest first, filtered, one page at a time.
    pub async fn orders(&self, query: &OrderQuery) -> anyhow::Result<Vec<Order>> {
        let mut sql = String::from("SELECT * FROM orders WHERE fleet_id IS NULL");
        let mut parameters = 0;
        let mut filter = |condition: &str| {
            parameters += 1;
            sql.push_str(&format!(" AND {condition} ${parameters}"));
        };
        if query.tenant.is_some() {
            filter("tenant =");
        }
        if query.status.is_some() {
            filter("status =");
        }
        if query.vendor.is_some() {
            filter("vendor =");
        }
        if query.created_after.is_some() {
            filter("created_at >=");
        }
        if query.created_before.is_some() {
            filter("created_at <");
        }
        if query.before.is_some() {
            filter("id <");
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", parameters + 1));
        let mut statement = sqlx::query(&sql);
        if let Some(tenant) = &query.tenant {
            statement = statement.bind(tenant);
        }
        if let Some(status) = query.status {
            statement = statement.bind(status.as_str());
        }
        if let Some(vendor) = &query.vendor {
            statement = statement.bind(vendor);
        }
        if let Some(after) = query.created_after {
            statement = statement.bind(DbTime(after));
        }
        if let Some(before) = query.created_before {
            statement = statement.bind(DbTime(before));
        }
        if let Some(before) = query.before {
            statement = statement.bind(before.to_string());
        }
        let rows = statement
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .context("listing orders")?;
        rows.iter().map(order_from_row).collect()
    }

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
        in_lock_order.sort_by_key(|&index| fleets::lock_rank(updates[index].order_id));
        // A server's move to another placement candidate takes its tenant's quota lock
        // ([`fleets`]), and no transaction may wait for an order's lock while it holds a
        // tenant's (two would wait on each other): a batch with a fleet's server in it takes
        // every order's lock before it applies anything.
        if updates
            .iter()
            .any(|update| fleets::fleet_of(update.order_id).is_some())
        {
            for &index in &in_lock_order {
                lock_order(&mut tx, updates[index].order_id).await?;
            }
        }
        let mut applied = vec![Applied::Ignored; updates.len()];
        for index in in_lock_order {
            applied[index] = apply_in(&mut tx, updates[index]).await?;
        }
        tx.commit().await.context("committing the updates")?;
        self.events_committed(updates.iter().map(|update| update.order_id));
        Ok(applied)
    }

    /// Moves an active order to `deleting` and queues its delete request, in one
    /// transaction. `false` when the order was not active (nothing changed).
    pub async fn request_delete(
        &self,
        order_id: Uuid,
        outbox: &OutboxMessage,
    ) -> anyhow::Result<bool> {
        self.request_change(
            order_id,
            lifecycle::DELETE_REQUESTED,
            "deletion requested",
            outbox,
        )
        .await
    }

    /// Moves an order on its way to `cancelling` and queues its cancel request, dropping its
    /// unpublished create (in one transaction). `false` when the order was past cancelling
    /// (nothing changed).
    pub async fn request_cancel(
        &self,
        order_id: Uuid,
        outbox: &OutboxMessage,
    ) -> anyhow::Result<bool> {
        self.request_change(
            order_id,
            lifecycle::CANCEL_REQUESTED,
            "cancellation requested",
            outbox,
        )
        .await
    }

    /// A user's change (`step`), with `message` in the event log and `outbox` queued, in one
    /// transaction; whatever else the order had waiting in the outbox is dropped (a cancel's
    /// unpublished create never goes out; a create that the relay is publishing right now may
    /// still reach a host, and the cancel or the late server's delete covers it). `false`
    /// when the order was not in one of the step's sources (nothing changed).
    async fn request_change(
        &self,
        order_id: Uuid,
        step: Transition,
        message: &str,
        outbox: &OutboxMessage,
    ) -> anyhow::Result<bool> {
        let Some(mut tx) = self.begin_change(order_id, step).await? else {
            return Ok(false);
        };
        drop_unpublished(&mut tx, order_id).await?;
        let now = Utc::now();
        let event = OrderEvent {
            at: now,
            status: step.target,
            message: message.into(),
            attempt: None,
        };
        insert_event(&mut tx, order_id, &event).await?;
        insert_outbox(&mut tx, outbox, now).await?;
        tx.commit()
            .await
            .with_context(|| format!("committing the move to {}", step.target))?;
        self.events_committed([order_id]);
        Ok(true)
    }

    /// A transaction holding `order_id`'s lock in which it moved along `step`; `None` (and
    /// nothing changed) when it was not in one of the step's sources.
    async fn begin_change(
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

    /// Outbox messages due for (another) publish, oldest first. On PostgreSQL, where other
    /// order-api instances share the outbox, they are claimed for [`OUTBOX_CLAIM`] (not due
    /// again meanwhile), so each message goes out from one instance; a publish that outlives
    /// its claim may go out twice, which the host tolerates (a creation request is
    /// idempotent). The claim skips rows another transaction holds and waits for no lock, so
    /// it never deadlocks with the order transactions. On SQLite only one instance runs:
    /// nothing to claim.
    pub async fn due_outbox(&self, limit: u32) -> anyhow::Result<Vec<OutboxMessage>> {
        let now = Utc::now();
        let rows = match self.backend {
            Backend::Sqlite => {
                sqlx::query(
                    "SELECT message_id, order_id, routing_key, body, traceparent, attempts, \
                     created_at FROM outbox WHERE next_attempt_at <= $1 \
                     ORDER BY created_at, message_id LIMIT $2",
                )
                .bind(DbTime(now))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
            }
            Backend::Postgres => {
                let claimed_until =
                    now + chrono::Duration::from_std(OUTBOX_CLAIM).unwrap_or_default();
                sqlx::query(
                    "UPDATE outbox SET next_attempt_at = $1 WHERE message_id IN \
                     (SELECT message_id FROM outbox WHERE next_attempt_at <= $2 \
                     ORDER BY created_at, message_id LIMIT $3 FOR UPDATE SKIP LOCKED) \
                     RETURNING message_id, order_id, routing_key, body, traceparent, attempts, \
                     created_at",
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
                };
                Ok((time(row, "created_at")?, message))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        due.sort_by_key(|(created_at, message)| (*created_at, message.message_id));
        Ok(due.into_iter().map(|(_, message)| message).collect())
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
        in_lock_order.sort_by_key(|message| fleets::lock_rank(message.order_id));
        for message in &in_lock_order {
            lock_order(&mut tx, message.order_id).await?;
        }
        // One statement for the batch's outbox rows (not kept prepared: its text varies with
        // the batch's size, and would push the steady statements out of the cache).
        let ids = parameters(1, messages.len());
        let sql = format!("DELETE FROM outbox WHERE message_id IN ({ids})");
        let mut delete = sqlx::query(&sql).persistent(false);
        for message in messages {
            delete = delete.bind(message.message_id.to_string());
        }
        delete
            .execute(&mut *tx)
            .await
            .context("removing published outbox messages")?;
        for message in in_lock_order {
            let moved =
                compare_and_set(&mut tx, message.order_id, lifecycle::PUBLISHED, None, None)
                    .await?;
            if moved {
                let event = OrderEvent {
                    at: now,
                    status: OrderStatus::Queued,
                    message: format!("creation request published ({})", message.routing_key),
                    attempt: None,
                };
                insert_event(&mut tx, message.order_id, &event).await?;
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

    /// Records (or refreshes) that a host serves a vendor (and so that it is no longer
    /// unavailable there).
    pub async fn upsert_vendor(&self, announcement: &VendorAnnouncement) -> anyhow::Result<()> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        sqlx::query(
            "INSERT INTO vendor_hosts (vendor, host_id, display_name, plugin_version, first_seen, last_seen, catalogue) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (vendor, host_id) DO UPDATE SET \
             display_name = excluded.display_name, plugin_version = excluded.plugin_version, \
             last_seen = excluded.last_seen, catalogue = excluded.catalogue",
        )
        .bind(&announcement.vendor)
        .bind(&announcement.host_id)
        .bind(&announcement.display_name)
        .bind(&announcement.plugin_version)
        .bind(DbTime(announcement.at))
        .bind(DbTime(announcement.at))
        .bind(vendors::catalogue_to_store(announcement))
        .execute(&mut *tx)
        .await
        .context("recording a vendor")?;
        vendors::clear_unavailable(&mut tx, &announcement.vendor, &announcement.host_id).await?;
        tx.commit().await.context("committing a vendor")?;
        Ok(())
    }

    /// Records that a host stopped serving a vendor; with a reason, that it has the
    /// vendor's plugin but cannot serve it (listed to admins, see
    /// [`Store::unavailable_vendors`]).
    pub async fn withdraw_vendor(&self, withdrawal: &VendorWithdrawal) -> anyhow::Result<()> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        sqlx::query("DELETE FROM vendor_hosts WHERE vendor = $1 AND host_id = $2")
            .bind(&withdrawal.vendor)
            .bind(&withdrawal.host_id)
            .execute(&mut *tx)
            .await
            .context("withdrawing a vendor")?;
        match &withdrawal.unavailable {
            Some(reason) => vendors::mark_unavailable(&mut tx, withdrawal, reason).await?,
            None => {
                vendors::clear_unavailable(&mut tx, &withdrawal.vendor, &withdrawal.host_id).await?
            }
        }
        tx.commit().await.context("committing a withdrawal")?;
        Ok(())
    }

    /// Every vendor some host serves, by id.
    pub async fn vendors(&self) -> anyhow::Result<Vec<Vendor>> {
        let rows = sqlx::query("SELECT * FROM vendor_hosts ORDER BY vendor, last_seen DESC")
            .fetch_all(&self.pool)
            .await
            .context("listing vendors")?;
        let mut vendors: Vec<Vendor> = Vec::new();
        for row in &rows {
            let vendor: String = row.try_get("vendor")?;
            let host = VendorHost {
                host_id: row.try_get("host_id")?,
                plugin_version: row.try_get("plugin_version")?,
                first_seen: time(row, "first_seen")?,
                last_seen: time(row, "last_seen")?,
            };
            match vendors.last_mut() {
                Some(last) if last.vendor == vendor => last.hosts.push(host),
                _ => vendors.push(Vendor {
                    vendor,
                    display_name: row.try_get("display_name")?,
                    plugin_version: host.plugin_version.clone(),
                    hosts: vec![host],
                }),
            }
        }
        Ok(vendors)
    }

    /// How many orders are in each status.
    pub async fn count_orders_by_status(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<OrderStatus, i64>> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM orders WHERE fleet_id IS NULL GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await
        .context("counting orders")?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                Ok((
                    status.parse().map_err(anyhow::Error::msg)?,
                    row.try_get("n")?,
                ))
            })
            .collect()
    }

    /// Whether a host has announced `vendor`.
    pub async fn vendor_known(&self, vendor: &str) -> anyhow::Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM vendor_hosts WHERE vendor = $1")
            .bind(vendor)
            .fetch_optional(&self.pool)
            .await
            .context("looking up a vendor")?
            .is_some())
    }
}

/// Drops what the order still had waiting in the outbox (a user's change supersedes it).
async fn drop_unpublished(
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

async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    outbox: &OutboxMessage,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO outbox (message_id, order_id, routing_key, body, traceparent, \
         created_at, attempts, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
    )
    .bind(outbox.message_id.to_string())
    .bind(outbox.order_id.to_string())
    .bind(&outbox.routing_key)
    .bind(&outbox.body)
    .bind(&outbox.traceparent)
    .bind(DbTime(now))
    .bind(DbTime(now))
    .execute(&mut **tx)
    .await
    .context("inserting the outbox message")?;
    Ok(())
}

/// Moves an order along `step` if it is in one of the step's sources; `server` replaces
/// the recorded server when given, `fault` is set (or cleared when `None`). Whether it moved.
async fn compare_and_set(
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
struct MovedOrder {
    /// Whether it has a webhook URL (a settled status then queues a call).
    has_webhook: bool,
}

/// [`compare_and_set`], answering what the applied result needs to know of the moved order
/// in the same statement (`None` when it did not move).
async fn move_order(
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
async fn lock_order(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
) -> anyhow::Result<()> {
    if !db::on_postgres(tx) {
        return Ok(());
    }
    // A member's fleet first (see `fleets`): whoever changes a member changes its fleet.
    if let Some((fleet, _)) = fleets::fleet_of(order_id) {
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

/// Appends to the order's event log; for a member of a fleet, also mirrors it into the
/// fleet's log and sums the fleet up again ([`fleets::member_changed`]). The transaction holds
/// the order's row lock already ([`lock_order`], taken first by every transaction that
/// changes an order).
async fn insert_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    event: &OrderEvent,
) -> anyhow::Result<()> {
    insert_own_event(tx, order_id, event).await?;
    fleets::member_changed(tx, order_id, event).await
}

/// Appends to the order's own event log only.
async fn insert_own_event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    order_id: Uuid,
    event: &OrderEvent,
) -> anyhow::Result<()> {
    // Its number is one more than the order's last event's (safe under the order's lock).
    sqlx::query(
        "INSERT INTO order_events (order_id, seq, at, status, message, attempt) VALUES ($1, \
         (SELECT COALESCE(MAX(seq), 0) + 1 FROM order_events WHERE order_id = $6), \
         $2, $3, $4, $5)",
    )
    .bind(order_id.to_string())
    .bind(DbTime(event.at))
    .bind(event.status.as_str())
    .bind(&event.message)
    .bind(event.attempt.map(i64::from))
    .bind(order_id.to_string())
    .execute(&mut **tx)
    .await
    .context("recording an order event")?;
    Ok(())
}

fn parse_uuid(text: String) -> anyhow::Result<Uuid> {
    Uuid::parse_str(&text).with_context(|| format!("'{text}' in the database is not a UUID"))
}

fn parse_status(text: String) -> anyhow::Result<OrderStatus> {
    text.parse().map_err(|e: String| anyhow::anyhow!(e))
}

fn order_from_row(row: &AnyRow) -> anyhow::Result<Order> {
    Ok(Order {
        id: parse_uuid(row.try_get("id")?)?,
        tenant: row.try_get("tenant")?,
        status: parse_status(row.try_get("status")?)?,
        vendor: row.try_get("vendor")?,
        spec: ServerSpec {
            name: row.try_get("name")?,
            region: row.try_get("region")?,
            size: row.try_get("size")?,
            image: row.try_get("image")?,
            ssh_keys: parse_json(row.try_get("ssh_keys")?)?.unwrap_or_default(),
            user_data: row.try_get("user_data")?,
            labels: parse_json(row.try_get("labels")?)?.unwrap_or_default(),
        },
        server: parse_json(row.try_get("server")?)?,
        fault: parse_json(row.try_get("fault")?)?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        webhook_url: row.try_get("webhook_url")?,
        count: row
            .try_get::<Option<i64>, _>("fleet_size")?
            .map_or(1, |size| size as u32),
        all_or_nothing: row.try_get::<i64, _>("all_or_nothing")? != 0,
        servers: None,
        placement: parse_json(row.try_get("placement")?)?,
    })
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
    let (server, fault) = match &update.kind {
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
    };
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
        webhooks::queue_webhook(tx, update.order_id, step.target).await?;
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

/// Whether a failed create may have left a server the order never heard of: any failure but
/// a first attempt's refusal by the vendor (or the sandbox), which made nothing. A later
/// attempt follows an earlier one whose answer may have been lost; a passing fault (a
/// time-out, a dropped connection) or a plugin failing on the vendor's answer may come after
/// the vendor made the server.
fn failure_may_have_left_a_server(attempt: u32, fault: &provisioner_contract::Fault) -> bool {
    const REFUSALS: &[&str] = &[
        "invalid_request",
        "unauthorized",
        "quota_exceeded",
        "not_found",
        "capability_denied",
    ];
    attempt > 1 || !REFUSALS.contains(&fault.code.as_str())
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
    let outbox = OutboxMessage {
        message_id: Uuid::new_v4(),
        order_id: update.order_id,
        routing_key: provisioner_contract::Topology::request_key(&update.vendor),
        body: provisioner_contract::encode(request),
        traceparent: None,
        attempts: 0,
    };
    insert_outbox(tx, &outbox, now).await?;
    let event = OrderEvent {
        at: now,
        status,
        message,
        attempt: Some(update.attempt),
    };
    insert_event(tx, update.order_id, &event).await
}

/// Commits the new orders [`Store::insert_order`] queues: all that are waiting (up to
/// [`NEW_ORDERS_PER_COMMIT`]) in one transaction. When a group fails, each of its orders is
/// tried alone, so one bad order fails only its own request.
async fn commit_new_orders(writer: AnyPool, mut queue: tokio::sync::mpsc::Receiver<NewOrder>) {
    let mut group = Vec::with_capacity(NEW_ORDERS_PER_COMMIT);
    while queue.recv_many(&mut group, NEW_ORDERS_PER_COMMIT).await > 0 {
        match insert_orders(&writer, &group).await {
            Ok(outcomes) => {
                for (new, answer) in group.drain(..).zip(outcomes) {
                    let _ = new.committed.send(Ok(answer));
                }
            }
            Err(error) if group.len() == 1 => {
                if let Some(new) = group.pop() {
                    let _ = new.committed.send(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(
                    orders = group.len(),
                    "committing a group of new orders failed ({error:#}); committing each alone"
                );
                for new in group.drain(..) {
                    let alone = insert_orders(&writer, std::slice::from_ref(&new)).await;
                    let answer = alone.map(|mut outcomes| outcomes.remove(0));
                    let _ = new.committed.send(answer);
                }
            }
        }
    }
}

/// The first event of every order.
fn accepted_event(order: &Order) -> OrderEvent {
    let message = match order.count {
        1 => "order accepted".to_string(),
        count => format!("order accepted: {count} servers"),
    };
    OrderEvent {
        at: order.created_at,
        status: OrderStatus::Pending,
        message,
        attempt: None,
    }
}

/// Inserts `orders` with their first events and outbox rows in one transaction, a statement
/// per table for the whole group (a database server's round trips, not its work, would bound
/// the rate otherwise); for each, what became of it: inserted, not inserted because its
/// idempotency key names an order already (maybe one earlier in the same group), or refused
/// by its tenant's quota ([`quotas::check_new_orders`]). The keys go in key order: two
/// instances committing groups with the same keys take them in the same order, and never
/// deadlock on them; the tenants' quota locks come after all keys, in tenant order. The
/// first events need no order lock ([`lock_order`]): no other transaction sees a new order
/// before this one commits.
async fn insert_orders(writer: &AnyPool, orders: &[NewOrder]) -> anyhow::Result<Vec<Inserted>> {
    let mut tx = writer.begin().await.context("starting a transaction")?;
    // The quota check must see what committed while this transaction waited for the
    // tenant's lock.
    db::read_committed(&mut tx).await?;
    let mut keyed: Vec<(&Order, &IdempotencyKey)> = orders
        .iter()
        .filter_map(|new| Some((&new.order, new.idempotency.as_ref()?)))
        .collect();
    keyed.sort_by(|(a, a_key), (b, b_key)| (&a.tenant, &a_key.key).cmp(&(&b.tenant, &b_key.key)));
    let mut claimed = std::collections::HashSet::new();
    if !keyed.is_empty() {
        let sql = format!(
            "INSERT INTO idempotency_keys (tenant, key, request_sha256, order_id, created_at) \
             VALUES {} ON CONFLICT (tenant, key) DO NOTHING RETURNING order_id",
            value_rows(5, keyed.len())
        );
        let mut statement = sqlx::query(&sql);
        for (order, key) in &keyed {
            statement = statement
                .bind(&order.tenant)
                .bind(&key.key)
                .bind(&key.request_sha256)
                .bind(order.id.to_string())
                .bind(DbTime(order.created_at));
        }
        let rows = statement
            .fetch_all(&mut *tx)
            .await
            .context("recording the idempotency keys")?;
        for row in rows {
            claimed.insert(parse_uuid(row.try_get("order_id")?)?);
        }
    }
    let unseen: Vec<&NewOrder> = orders
        .iter()
        .filter(|new| new.idempotency.is_none() || claimed.contains(&new.order.id))
        .collect();
    let mut verdicts = quotas::check_new_orders(&mut tx, &unseen)
        .await?
        .into_iter();
    let mut outcomes = Vec::with_capacity(orders.len());
    let mut new: Vec<&NewOrder> = Vec::with_capacity(orders.len());
    // Keys freed below, by tenant and key: a request with the same key later in this group
    // lost the key to an order that is not made, and is refused as that one was (its
    // replay would find no order).
    let mut freed: std::collections::HashMap<(&str, &str), QuotaExceeded> =
        std::collections::HashMap::new();
    for order in orders {
        if let Some(key) = &order.idempotency
            && !claimed.contains(&order.order.id)
        {
            match freed.get(&(order.order.tenant.as_str(), key.key.as_str())) {
                Some(over) => outcomes.push(Inserted::OverQuota(over.clone())),
                None => outcomes.push(Inserted::KeyTaken),
            }
        } else if let Some(over) = verdicts.next().flatten() {
            if let Some(key) = &order.idempotency {
                freed.insert((&order.order.tenant, &key.key), over.clone());
                // The key is free again: a retry after usage fell may make the order.
                sqlx::query("DELETE FROM idempotency_keys WHERE tenant = $1 AND key = $2")
                    .bind(&order.order.tenant)
                    .bind(&key.key)
                    .execute(&mut *tx)
                    .await
                    .context("freeing the key of an order over quota")?;
            }
            outcomes.push(Inserted::OverQuota(over));
        } else {
            outcomes.push(Inserted::New(vec![accepted_event(&order.order)]));
            new.push(order);
        }
    }
    if new.is_empty() {
        tx.commit().await.context("committing new orders")?;
        return Ok(outcomes);
    }
    // The orders and their members, each with its fleet: (order, fleet id, fleet size).
    let rows: Vec<(&Order, Option<Uuid>, Option<u32>)> = new
        .iter()
        .flat_map(|new| {
            let fleet_size = (!new.members.is_empty()).then_some(new.order.count);
            std::iter::once((&new.order, None, fleet_size)).chain(
                new.members
                    .iter()
                    .map(|member| (member, Some(new.order.id), None)),
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO orders (id, tenant, status, vendor, region, size, image, name, ssh_keys, \
         user_data, labels, created_at, updated_at, webhook_url, fleet_id, fleet_size, \
         all_or_nothing, placement) VALUES {}",
        value_rows(18, rows.len())
    );
    let mut statement = sqlx::query(&sql);
    for (order, fleet_id, fleet_size) in &rows {
        statement = statement
            .bind(order.id.to_string())
            .bind(&order.tenant)
            .bind(order.status.as_str())
            .bind(&order.vendor)
            .bind(&order.spec.region)
            .bind(&order.spec.size)
            .bind(&order.spec.image)
            .bind(&order.spec.name)
            .bind(json(&order.spec.ssh_keys))
            .bind(&order.spec.user_data)
            .bind(json(&order.spec.labels))
            .bind(DbTime(order.created_at))
            .bind(DbTime(order.updated_at))
            .bind(&order.webhook_url)
            .bind(fleet_id.map(|id| id.to_string()))
            .bind(fleet_size.map(i64::from))
            .bind(i64::from(order.all_or_nothing))
            .bind(order.placement.as_ref().map(json));
    }
    statement
        .execute(&mut *tx)
        .await
        .context("inserting the orders")?;
    let sql = format!(
        "INSERT INTO order_events (order_id, seq, at, status, message) VALUES {}",
        value_rows(5, rows.len())
    );
    let mut statement = sqlx::query(&sql);
    for (order, _, _) in &rows {
        let event = accepted_event(order);
        statement = statement
            .bind(order.id.to_string())
            .bind(1_i64) // its first event
            .bind(DbTime(event.at))
            .bind(event.status.as_str())
            .bind(event.message);
    }
    statement
        .execute(&mut *tx)
        .await
        .context("recording the orders' first events")?;
    let outbox: Vec<(&Order, &OutboxMessage)> = new
        .iter()
        .flat_map(|new| new.outbox.iter().map(|message| (&new.order, message)))
        .collect();
    let sql = format!(
        "INSERT INTO outbox (message_id, order_id, routing_key, body, traceparent, created_at, \
         next_attempt_at) VALUES {}",
        value_rows(7, outbox.len())
    );
    let mut statement = sqlx::query(&sql);
    for (order, outbox) in &outbox {
        statement = statement
            .bind(outbox.message_id.to_string())
            .bind(outbox.order_id.to_string())
            .bind(&outbox.routing_key)
            .bind(&outbox.body)
            .bind(&outbox.traceparent)
            .bind(DbTime(order.created_at))
            .bind(DbTime(order.created_at));
    }
    statement
        .execute(&mut *tx)
        .await
        .context("inserting the creation requests")?;
    tx.commit().await.context("committing new orders")?;
    Ok(outcomes)
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
