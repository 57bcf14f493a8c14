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
//! ([`Store::insert_order`]): the orders that arrive while a commit is on disk share the next,
//! and a commit waits a moment for the orders POSTs have announced ([`Store::announce_order`]).
//!
//! On PostgreSQL several order-api instances share the database. What keeps them from double
//! effects: every state change is a compare-and-set on the order row; the relay claims the
//! outbox rows it publishes ([`Store::due_outbox`]); an order's events are written under its
//! row lock, so they are numbered 1, 2, 3 ... and commit in that order, and a live stream that
//! reads "events after n" misses none (it is woken by [`EventFeed`]); transactions that
//! touch several orders take them in id order ([`fleets::lock_rank`]: a fleet's servers with
//! their fleet, after it), and a tenant's quota lock comes after every order lock its
//! transaction takes, so two instances never deadlock on each other. Orders for several
//! servers are kept as in [`fleets`].
//!
//! # Files
//! - `mod.rs` (here): the [`Store`] handle and how it opens.
//! - [`db`]: SQLite or PostgreSQL, the pools, how columns are encoded.
//! - [`orders`]: [`Order`] and [`OrderEvent`] as stored; the reads of orders.
//! - [`new_orders`]: new orders, committed in groups; idempotency keys.
//! - [`transitions`]: the order lock, the compare-and-set, the event log: what every change
//!   is made of.
//! - [`host_updates`]: applying the updates hosts send ([`Applied`]).
//! - [`user_changes`]: a user's delete or cancel of an order for one server.
//! - [`stalled`]: orders stalled without news, and their requests queued again.
//! - [`outbox_rows`]: the outbox rows a change queues or drops.
//! - [`outbox`]: the requests waiting for the relay.
//! - [`fleet_ids`]: a fleet's and its members' ids, their lock order, placement candidates.
//! - [`fleets`]: orders for several servers and placements: the bookkeeping every member's
//!   event sets off ([`fleets::insert_event`]).
//! - [`webhook_queue`]: the webhook calls a change queues.
//! - [`events`]: the feed that wakes live event streams.
//! - [`vendors`]: the vendors hosts serve or cannot serve, and their catalogues.
//! - [`orphans`], [`quotas`], [`tokens`], [`webhooks`], [`dead_letters`]: the orphan
//!   sweep's records, tenants' quotas and rates, API tokens, webhook deliveries and secrets,
//!   dead letters.
//! - [`recent`]: answers read lately, kept a moment (tokens' callers, vendors served).
//!
//! The files form layers, each using only those under it: [`db`], [`recent`]; [`fleet_ids`];
//! [`orders`]; [`transitions`], [`outbox_rows`], [`webhook_queue`], [`quotas`]; [`fleets`] (whose
//! `insert_event` the changes above write their events with); then [`new_orders`],
//! [`host_updates`], [`user_changes`], [`stalled`], [`outbox`], [`webhooks`], [`events`] and
//! the rest.

use sqlx::AnyPool;

mod db;
mod dead_letters;
mod events;
mod fleet_ids;
pub mod fleets;
mod host_updates;
mod new_orders;
mod orders;
mod orphans;
mod outbox;
mod outbox_rows;
mod quotas;
mod recent;
mod stalled;
mod tokens;
mod transitions;
mod user_changes;
mod vendors;
mod webhook_queue;
mod webhooks;
pub use db::Backend;
pub use dead_letters::{DeadLetter, DeadLetterEnvelope, NewDeadLetter};
pub use events::{AllNews, EventFeed, News, OrderNews};
pub use fleets::{Candidate, FleetServer, MAX_PLACEMENT_CANDIDATES, MAX_SERVERS_PER_ORDER};
pub use host_updates::Applied;
pub use new_orders::{AnnouncedOrder, IdempotencyKey, Inserted, KeyedOrder};
pub use orders::{Order, OrderEvent, OrderQuery};
pub use orphans::{Orphan, OrphanAction, OrphanState, Ownership, Sweep, ownership};
pub use outbox::OUTBOX_CLAIM;
pub use outbox_rows::OutboxMessage;
pub use quotas::{
    IN_FLIGHT_STATUSES, LIVE_STATUSES, Limits, OrderRate, QuotaExceeded, QuotaSet, ScopedQuota,
    TenantQuotas, Usage, keep_folded,
};
pub use tokens::{NewToken, TOKEN_CACHE_TTL, TokenInfo};
pub use vendors::{PluginVersions, UnavailableVendor, VENDOR_CACHE_TTL, Vendor, VendorHost};
pub use webhooks::WebhookDelivery;

use new_orders::{AnnouncedCount, NEW_ORDERS_PER_COMMIT, NewOrder, commit_new_orders};

/// The database handle; cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// Which database this is.
    backend: Backend,
    /// Reads.
    pool: AnyPool,
    /// Writes (one connection on SQLite).
    writer: AnyPool,
    /// New orders on their way to [`new_orders::commit_new_orders`].
    new_orders: tokio::sync::mpsc::Sender<NewOrder>,
    /// Orders announced and not yet committed ([`Store::announce_order`]).
    announced: AnnouncedCount,
    /// API tokens looked up lately.
    known_tokens: tokens::TokenCache,
    /// Vendors found served lately.
    served_vendors: vendors::ServedVendors,
    /// Wakes live event streams when their order has news.
    feed: events::EventFeed,
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
        let announced = AnnouncedCount::default();
        tokio::spawn(commit_new_orders(writes.clone(), queue, announced.clone()));
        Ok(Self {
            backend,
            pool: reads,
            writer: writes,
            new_orders,
            announced,
            known_tokens: tokens::token_cache(),
            served_vendors: vendors::served_vendors(),
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
}
