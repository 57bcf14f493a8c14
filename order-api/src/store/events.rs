//! An order's event log as live streams follow it: each order's events are numbered 1, 2, 3
//! ... of their own (`seq`, the SSE id), and the [`EventFeed`] wakes a stream when its order
//! has news, so an idle stream costs no database reads.
//!
//! News reaches the feed two ways. Every store write that adds events to an order tells the
//! feed after its commit ([`Store::events_committed`]): enough on SQLite, where one instance
//! owns the database. On PostgreSQL, where several instances share it, the database itself
//! tells every instance: a trigger on `order_events` sends `NOTIFY order_events, '<order id>'`
//! at commit (migration 0008), and each instance that has streams open keeps one connection
//! `LISTEN`ing ([`listen`]) and wakes the streams of the order named. A notification lost
//! while that connection was down is made good by waking every stream once it is back; a
//! stream also reads again on its own now and then, which bounds the damage of anything
//! missed.
//!
//! Streams of many orders (`GET /v1/events`: a tenant's, or every tenant's for the admin)
//! hear of every order with news through [`AllNews`], a broadcast of order ids fed by the same
//! two ways, and by new orders committed on this instance. A stream that falls behind the
//! broadcast, or a listener that was down, is told that news may have been missed
//! ([`News::Missed`]): its client lists the orders again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use super::Store;
use super::db::{Backend, parameters, redacted};
use super::fleet_ids::fleet_of;
use super::orders::{Order, OrderEvent, order_from_row};

/// The PostgreSQL channel the `order_events` trigger notifies.
const CHANNEL: &str = "order_events";
/// The wait before the listener connects again after a failure.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);
/// Order ids a stream of many orders may fall behind by before it is told it missed news.
const ALL_NEWS_BACKLOG: usize = 4096;
/// What the broadcast carries when news may have been missed (never an order's id).
const MISSED: Uuid = Uuid::nil();

/// Wakes the live streams of orders with news; cheap to clone.
#[derive(Clone)]
pub struct EventFeed {
    inner: Arc<Feed>,
}

impl EventFeed {
    /// The feed of a store on `backend` at `url`.
    pub(super) fn new(backend: Backend, url: &str) -> Self {
        Self {
            inner: Arc::new(Feed {
                postgres_url: (backend == Backend::Postgres).then(|| url.to_string()),
                orders: Mutex::default(),
                all: broadcast::channel(ALL_NEWS_BACKLOG).0,
                listening: std::sync::Once::new(),
            }),
        }
    }
}

struct Feed {
    /// PostgreSQL: where to `LISTEN`.
    postgres_url: Option<String>,
    /// Per order with streams open: the sender its streams' receivers watch.
    orders: Mutex<HashMap<Uuid, watch::Sender<()>>>,
    /// Every order with news, for streams of many orders ([`MISSED`]: news may be lost).
    all: broadcast::Sender<Uuid>,
    /// Whether the PostgreSQL listener was started (on the first subscription).
    listening: std::sync::Once,
}

impl Feed {
    /// Wakes the streams of `order_id`, if it has any, and tells the streams of many orders.
    fn wake(&self, order_id: Uuid) {
        // No receiver: no stream of many orders is open.
        let _ = self.all.send(order_id);
        if let Ok(orders) = self.orders.lock()
            && let Some(sender) = orders.get(&order_id)
        {
            sender.send_replace(());
        }
    }

    /// Wakes every stream (news may have been missed).
    fn wake_all(&self) {
        let _ = self.all.send(MISSED);
        if let Ok(orders) = self.orders.lock() {
            for sender in orders.values() {
                sender.send_replace(());
            }
        }
    }
}

/// A stream's subscription to its order's news; leaving it (drop) unsubscribes.
pub struct OrderNews {
    receiver: watch::Receiver<()>,
    order_id: Uuid,
    feed: Arc<Feed>,
}

impl OrderNews {
    /// Forgets the news so far: what [`OrderNews::changed`] waits for is news after this.
    /// Call it before reading the database, so news committed during the read is not lost.
    pub fn mark_seen(&mut self) {
        self.receiver.borrow_and_update();
    }

    /// Waits for news of the order since [`OrderNews::mark_seen`] (at once if there was some).
    pub async fn changed(&mut self) {
        // The sender lives in the feed while any receiver of it does: this never fails.
        if self.receiver.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for OrderNews {
    fn drop(&mut self) {
        if let Ok(mut orders) = self.feed.orders.lock()
            && orders
                .get(&self.order_id)
                .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            // This was the order's last stream.
            orders.remove(&self.order_id);
        }
    }
}

/// What a stream of many orders hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum News {
    /// This order has news (a new event, or it was made).
    Order(Uuid),
    /// News may have been missed (the stream fell behind, or the listener was down).
    Missed,
}

/// A stream's subscription to the news of every order.
pub struct AllNews {
    receiver: broadcast::Receiver<Uuid>,
}

impl AllNews {
    /// The next news; waits for it.
    pub async fn next(&mut self) -> News {
        match self.receiver.recv().await {
            Ok(id) if id == MISSED => News::Missed,
            Ok(id) => News::Order(id),
            Err(broadcast::error::RecvError::Lagged(_)) => News::Missed,
            // The feed lives as long as the store the stream holds: never.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }

    /// News that is already here, without waiting; `None` when there is none now.
    pub fn try_next(&mut self) -> Option<News> {
        match self.receiver.try_recv() {
            Ok(id) if id == MISSED => Some(News::Missed),
            Ok(id) => Some(News::Order(id)),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(News::Missed),
            Err(_) => None,
        }
    }
}

impl Store {
    /// On PostgreSQL, starts this instance's `LISTEN` (once).
    fn start_listening(&self) {
        let feed = &self.feed.inner;
        if let Some(url) = &feed.postgres_url {
            feed.listening.call_once(|| {
                tokio::spawn(listen(url.clone(), Arc::downgrade(feed)));
            });
        }
    }

    /// Subscribes to the news of every order (streams of many orders). On PostgreSQL the
    /// first subscription starts this instance's `LISTEN`.
    pub fn all_news(&self) -> AllNews {
        self.start_listening();
        AllNews {
            receiver: self.feed.inner.all.subscribe(),
        }
    }

    /// Tells the streams of many orders that `order_id` was made (an order's first event
    /// has no stream of its own to wake). On PostgreSQL, other instances do not hear of it
    /// (no NOTIFY for an order's first event): their streams see it with its next event.
    pub(super) fn order_made(&self, order_id: Uuid) {
        let _ = self.feed.inner.all.send(order_id);
    }

    /// Subscribes to the news of `order_id` (its new events). On PostgreSQL the first
    /// subscription starts this instance's `LISTEN`.
    pub fn order_news(&self, order_id: Uuid) -> OrderNews {
        let feed = &self.feed.inner;
        self.start_listening();
        let receiver = match feed.orders.lock() {
            Ok(mut orders) => orders
                .entry(order_id)
                .or_insert_with(|| watch::channel(()).0)
                .subscribe(),
            // A poisoned map: a receiver of its own, woken by the streams' re-reads only.
            Err(_) => watch::channel(()).1,
        };
        OrderNews {
            receiver,
            order_id,
            feed: feed.clone(),
        }
    }

    /// Tells this instance's streams of `order_ids` that the orders have new events, after
    /// the transaction that wrote them committed. (Other instances hear of them through
    /// PostgreSQL's NOTIFY.)
    pub(super) fn events_committed(&self, order_ids: impl IntoIterator<Item = Uuid>) {
        for order_id in order_ids {
            self.feed.inner.wake(order_id);
            // A fleet's server's events are mirrored into the fleet's log.
            if let Some((fleet, _)) = fleet_of(order_id) {
                self.feed.inner.wake(fleet);
            }
        }
    }

    /// The orders of `ids` that are orders of their own (not a server of an order for
    /// several) and belong to `tenant`, if one is given; an id that names no such order is
    /// left out.
    pub async fn orders_with_ids(
        &self,
        ids: &[Uuid],
        tenant: Option<&str>,
    ) -> anyhow::Result<Vec<Order>> {
        use anyhow::Context;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = format!(
            "SELECT * FROM orders WHERE fleet_id IS NULL AND id IN ({})",
            parameters(1, ids.len())
        );
        if tenant.is_some() {
            sql.push_str(&format!(" AND tenant = ${}", ids.len() + 1));
        }
        sql.push_str(" ORDER BY id");
        let mut statement = sqlx::query(&sql);
        for id in ids {
            statement = statement.bind(id.to_string());
        }
        if let Some(tenant) = tenant {
            statement = statement.bind(tenant);
        }
        let rows = statement
            .fetch_all(&self.pool)
            .await
            .context("reading orders with news")?;
        rows.iter().map(order_from_row).collect()
    }

    /// The order `id` names (when it belongs to `tenant`, if one is given) with its events
    /// after number `after`, each with its number in the order's log (1, 2, 3 ...: what an
    /// SSE client sends back as `Last-Event-ID`). `None`: no such order (or another
    /// tenant's).
    pub async fn stream_events(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        after: i64,
    ) -> anyhow::Result<Option<(Order, Vec<(i64, OrderEvent)>)>> {
        self.order_and_events_after(id, after, tenant).await
    }
}

/// PostgreSQL: `LISTEN order_events` on a connection of its own and wakes the streams of each
/// order notified, for as long as the store's feed lives; reconnects after a failure and then
/// wakes every stream (notifications sent meanwhile are lost).
async fn listen(url: String, feed: Weak<Feed>) {
    loop {
        let mut listener = match connect(&url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!("listening for order events: {error:#}; trying again");
                tokio::time::sleep(RELISTEN_AFTER).await;
                continue;
            }
        };
        // Anything committed before the LISTEN took effect has not been heard.
        match feed.upgrade() {
            Some(feed) => feed.wake_all(),
            None => return,
        }
        loop {
            let notification = match listener.try_recv().await {
                Ok(Some(notification)) => notification,
                // The connection broke (and was made again): what came meanwhile is lost.
                Ok(None) => {
                    match feed.upgrade() {
                        Some(feed) => feed.wake_all(),
                        None => return,
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!("listening for order events: {error:#}; reconnecting");
                    break;
                }
            };
            let Some(feed) = feed.upgrade() else { return };
            match Uuid::parse_str(notification.payload()) {
                Ok(order_id) => feed.wake(order_id),
                Err(_) => tracing::warn!(
                    payload = notification.payload(),
                    "a notification on {CHANNEL} that names no order"
                ),
            }
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

/// A listener on [`CHANNEL`].
async fn connect(url: &str) -> anyhow::Result<PgListener> {
    use anyhow::Context;
    let mut listener = PgListener::connect(url)
        .await
        .with_context(|| format!("connecting to {}", redacted(url)))?;
    listener
        .listen(CHANNEL)
        .await
        .with_context(|| format!("LISTEN {CHANNEL}"))?;
    Ok(listener)
}
