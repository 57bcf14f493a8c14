//! New orders, committed in groups: [`Store::insert_order`] queues an order for the one
//! writer task ([`commit_new_orders`]), which commits every order waiting (up to
//! [`NEW_ORDERS_PER_COMMIT`]) in one transaction, with their first events, creation requests,
//! idempotency keys and quota checks; the orders that arrive while a commit is on disk share
//! the next. A commit waits a moment ([`GATHER_ANNOUNCED`] at most) for orders announced
//! ([`Store::announce_order`]) but not yet queued, so orders arriving close together share a
//! commit even when the database is quick. Also the idempotency keys' lookup.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use super::Store;
use super::db::{self, DbTime, json, parse_uuid, value_rows};
use super::orders::{Order, OrderEvent};
use super::outbox_rows::OutboxMessage;
use super::quotas::{self, QuotaExceeded};
use crate::lifecycle::OrderStatus;

/// Most orders committed in one transaction.
pub(super) const NEW_ORDERS_PER_COMMIT: usize = 256;

/// Longest a commit waits for orders announced but not yet queued (a POST announces its
/// order before its checks; the plugin check takes a millisecond or two).
pub(super) const GATHER_ANNOUNCED: Duration = Duration::from_millis(2);

/// How many orders are announced and not yet committed: queued, in a commit, or still on
/// their way (their POST between [`Store::announce_order`] and
/// [`Store::insert_announced_order`]).
pub(super) type AnnouncedCount = Arc<AtomicUsize>;

/// An order announced to the commits: counted in [`AnnouncedCount`] until dropped, with its
/// commit's outcome, or with the request that gave up before it.
pub struct AnnouncedOrder(AnnouncedCount);

impl Drop for AnnouncedOrder {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new order waiting for its commit, and who waits for the outcome.
pub(super) struct NewOrder {
    pub(super) order: Order,
    /// An order for several servers: one member order per server (see [`super::fleets`]).
    members: Vec<Order>,
    /// Its creation requests: one, or one per member.
    outbox: Vec<OutboxMessage>,
    idempotency: Option<IdempotencyKey>,
    committed: tokio::sync::oneshot::Sender<anyhow::Result<Inserted>>,
    /// Counted until the commit is done.
    _announced: AnnouncedOrder,
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

impl Store {
    /// Tells the commits that an order is on its way: a commit that starts while it is
    /// waits for it, [`GATHER_ANNOUNCED`] at most. A POST announces its order before its
    /// checks and hands the announcement to [`Store::insert_announced_order`]; dropped, it
    /// withdraws the order.
    pub fn announce_order(&self) -> AnnouncedOrder {
        self.announced.fetch_add(1, Ordering::Relaxed);
        AnnouncedOrder(self.announced.clone())
    }

    /// Records a new order and its creation request (and its idempotency key, unless the key
    /// names an order already), committed, with whatever other new orders arrived meanwhile,
    /// before it returns.
    /// An order for several servers comes with its `members` (see [`super::fleets`]) and one
    /// request in `outbox` per member.
    pub async fn insert_order(
        &self,
        order: &Order,
        members: &[Order],
        outbox: &[OutboxMessage],
        idempotency: Option<&IdempotencyKey>,
    ) -> anyhow::Result<Inserted> {
        let announced = self.announce_order();
        self.insert_announced_order(announced, order, members, outbox, idempotency)
            .await
    }

    /// [`Store::insert_order`] for an order announced before ([`Store::announce_order`]).
    pub async fn insert_announced_order(
        &self,
        announced: AnnouncedOrder,
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
            _announced: announced,
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
}

/// Commits the new orders [`Store::insert_order`] queues: all that are waiting (up to
/// [`NEW_ORDERS_PER_COMMIT`]) in one transaction, with those announced meanwhile that come
/// within [`GATHER_ANNOUNCED`] ([`gather_announced`]). When a group fails, each of its orders
/// is tried alone, so one bad order fails only its own request.
pub(super) async fn commit_new_orders(
    writer: AnyPool,
    mut queue: tokio::sync::mpsc::Receiver<NewOrder>,
    announced: AnnouncedCount,
) {
    let mut group = Vec::with_capacity(NEW_ORDERS_PER_COMMIT);
    while queue.recv_many(&mut group, NEW_ORDERS_PER_COMMIT).await > 0 {
        gather_announced(&mut queue, &mut group, &announced, GATHER_ANNOUNCED).await;
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

/// Adds to `group` the orders that come within `wait` while more are announced than `group`
/// holds (the announced count includes the group's own), up to [`NEW_ORDERS_PER_COMMIT`].
/// Returns at once when none is on its way: an order alone is never held back.
async fn gather_announced<T>(
    queue: &mut tokio::sync::mpsc::Receiver<T>,
    group: &mut Vec<T>,
    announced: &AtomicUsize,
    wait: Duration,
) {
    let deadline = tokio::time::Instant::now() + wait;
    while group.len() < NEW_ORDERS_PER_COMMIT && announced.load(Ordering::Relaxed) > group.len() {
        let room = NEW_ORDERS_PER_COMMIT - group.len();
        match tokio::time::timeout_at(deadline, queue.recv_many(group, room)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
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
/// first events need no order lock ([`super::transitions::lock_order`]): no other
/// transaction sees a new order before this one commits.
async fn insert_orders(writer: &AnyPool, orders: &[NewOrder]) -> anyhow::Result<Vec<Inserted>> {
    let mut tx = writer.begin().await.context("starting a transaction")?;
    // The quota check must see what committed while this transaction waited for the
    // tenant's lock.
    db::read_committed(&mut tx).await?;
    let claimed = claim_keys(&mut tx, orders).await?;
    let (outcomes, new) = judge(&mut tx, orders, &claimed).await?;
    if new.is_empty() {
        tx.commit().await.context("committing new orders")?;
        return Ok(outcomes);
    }
    let rows = order_rows(&new);
    insert_order_rows(&mut tx, &rows).await?;
    insert_first_events(&mut tx, &rows).await?;
    insert_creation_requests(&mut tx, &new).await?;
    tx.commit().await.context("committing new orders")?;
    Ok(outcomes)
}

/// Records the idempotency keys of `orders`, in key order (see [`insert_orders`]); the ids
/// of the orders whose key was free and is theirs now.
async fn claim_keys(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    orders: &[NewOrder],
) -> anyhow::Result<HashSet<Uuid>> {
    let mut keyed: Vec<(&Order, &IdempotencyKey)> = orders
        .iter()
        .filter_map(|new| Some((&new.order, new.idempotency.as_ref()?)))
        .collect();
    keyed.sort_by(|(a, a_key), (b, b_key)| (&a.tenant, &a_key.key).cmp(&(&b.tenant, &b_key.key)));
    let mut claimed = HashSet::new();
    if keyed.is_empty() {
        return Ok(claimed);
    }
    let sql = format!(
        "INSERT INTO idempotency_keys (tenant, key, request_sha256, order_id, created_at) \
         VALUES {} ON CONFLICT (tenant, key) DO NOTHING RETURNING order_id",
        value_rows(db::on_postgres(tx), 5, keyed.len())
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
        .fetch_all(&mut **tx)
        .await
        .context("recording the idempotency keys")?;
    for row in rows {
        claimed.insert(parse_uuid(row.try_get("order_id")?)?);
    }
    Ok(claimed)
}

/// What becomes of each of `orders` (in their order), and those to insert: one whose key
/// another order holds is not made (or, when an order over quota freed that key earlier in
/// this group, refused as that one was); the others go to their tenants' quotas
/// ([`quotas::check_new_orders`]), and the key of one over quota is freed again.
async fn judge<'a>(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    orders: &'a [NewOrder],
    claimed: &HashSet<Uuid>,
) -> anyhow::Result<(Vec<Inserted>, Vec<&'a NewOrder>)> {
    let unseen: Vec<&Order> = orders
        .iter()
        .filter(|new| new.idempotency.is_none() || claimed.contains(&new.order.id))
        .map(|new| &new.order)
        .collect();
    let mut verdicts = quotas::check_new_orders(tx, &unseen).await?.into_iter();
    let mut outcomes = Vec::with_capacity(orders.len());
    let mut new: Vec<&NewOrder> = Vec::with_capacity(orders.len());
    // Keys freed below, by tenant and key: a request with the same key later in this group
    // lost the key to an order that is not made, and is refused as that one was (its
    // replay would find no order).
    let mut freed: HashMap<(&str, &str), QuotaExceeded> = HashMap::new();
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
                    .execute(&mut **tx)
                    .await
                    .context("freeing the key of an order over quota")?;
            }
            outcomes.push(Inserted::OverQuota(over));
        } else {
            outcomes.push(Inserted::New(vec![accepted_event(&order.order)]));
            new.push(order);
        }
    }
    Ok((outcomes, new))
}

/// A row of the `orders` table to insert: an order or a member, with its fleet's id (a
/// member) or its size (a fleet).
struct OrderRow<'a> {
    order: &'a Order,
    fleet_id: Option<Uuid>,
    fleet_size: Option<u32>,
}

/// The rows of the orders in `new` and of their members.
fn order_rows<'a>(new: &[&'a NewOrder]) -> Vec<OrderRow<'a>> {
    new.iter()
        .flat_map(|new| {
            let fleet = OrderRow {
                order: &new.order,
                fleet_id: None,
                fleet_size: (!new.members.is_empty()).then_some(new.order.count),
            };
            std::iter::once(fleet).chain(new.members.iter().map(|member| OrderRow {
                order: member,
                fleet_id: Some(new.order.id),
                fleet_size: None,
            }))
        })
        .collect()
}

/// Inserts `rows` into `orders`, one statement for all.
async fn insert_order_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[OrderRow<'_>],
) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO orders (id, tenant, status, vendor, region, size, image, name, ssh_keys, \
         user_data, labels, created_at, updated_at, webhook_url, fleet_id, fleet_size, \
         all_or_nothing, placement) VALUES {}",
        value_rows(db::on_postgres(tx), 18, rows.len())
    );
    let mut statement = sqlx::query(&sql);
    for row in rows {
        let order = row.order;
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
            .bind(row.fleet_id.map(|id| id.to_string()))
            .bind(row.fleet_size.map(i64::from))
            .bind(i64::from(order.all_or_nothing))
            .bind(order.placement.as_ref().map(json));
    }
    statement
        .execute(&mut **tx)
        .await
        .context("inserting the orders")?;
    Ok(())
}

/// Writes each row's first event ([`accepted_event`]), one statement for all.
async fn insert_first_events(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    rows: &[OrderRow<'_>],
) -> anyhow::Result<()> {
    let sql = format!(
        "INSERT INTO order_events (order_id, seq, at, status, message) VALUES {}",
        value_rows(db::on_postgres(tx), 5, rows.len())
    );
    let mut statement = sqlx::query(&sql);
    for row in rows {
        let event = accepted_event(row.order);
        statement = statement
            .bind(row.order.id.to_string())
            .bind(1_i64) // its first event
            .bind(DbTime(event.at))
            .bind(event.status.as_str())
            .bind(event.message);
    }
    statement
        .execute(&mut **tx)
        .await
        .context("recording the orders' first events")?;
    Ok(())
}

/// Queues the creation requests of the orders in `new`, due at their orders' creation, one
/// statement for all.
async fn insert_creation_requests(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    new: &[&NewOrder],
) -> anyhow::Result<()> {
    let outbox: Vec<(&Order, &OutboxMessage)> = new
        .iter()
        .flat_map(|new| new.outbox.iter().map(|message| (&new.order, message)))
        .collect();
    let sql = format!(
        "INSERT INTO outbox (message_id, order_id, routing_key, body, traceparent, created_at, \
         next_attempt_at, lease_free) VALUES {}",
        value_rows(db::on_postgres(tx), 8, outbox.len())
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
            .bind(DbTime(order.created_at))
            .bind(i64::from(outbox.lease_free));
    }
    statement
        .execute(&mut **tx)
        .await
        .context("inserting the creation requests")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(2);

    /// A group of `first` queued orders out of `announced`, the others sent after `delays`.
    async fn gathered(first: usize, announced: usize, delays: &[u64]) -> (usize, Duration) {
        let (sender, mut queue) = tokio::sync::mpsc::channel(16);
        let count = AtomicUsize::new(announced);
        for order in 0..first {
            sender.send(order).await.unwrap();
        }
        for (order, &delay) in delays.iter().enumerate() {
            let sender = sender.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(delay)).await;
                let _ = sender.send(first + order).await;
            });
        }
        let mut group = Vec::new();
        queue.recv_many(&mut group, NEW_ORDERS_PER_COMMIT).await;
        let started = tokio::time::Instant::now();
        gather_announced(&mut queue, &mut group, &count, WAIT).await;
        (group.len(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn an_order_alone_is_not_held_back() {
        assert_eq!(gathered(1, 1, &[]).await, (1, Duration::ZERO));
        assert_eq!(gathered(3, 3, &[]).await, (3, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn an_announced_order_that_comes_in_time_joins_the_commit() {
        let (orders, waited) = gathered(1, 3, &[1, 1]).await;
        assert_eq!(orders, 3);
        assert!(
            waited < WAIT,
            "it stopped waiting once all had come: {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_announced_order_that_is_late_is_not_waited_for() {
        let (orders, waited) = gathered(1, 3, &[1, 50]).await;
        assert_eq!(orders, 2);
        assert_eq!(waited, WAIT);
    }
}
