//! One create at a time per order, across this host's tasks and every host on the broker.
//!
//! At-least-once delivery means two copies of an order's request can be in flight at once:
//! a retry published just before its host died with the original still unacked, a watchdog
//! re-send, an outbox re-publish after a lost confirm. A plugin's create looks its key up
//! before making a server, but two copies doing that at the same moment both find nothing
//! and both make one (the chaos test caught exactly that). So the look-up-and-create runs
//! under a lease, and whoever comes second finds the server the first made, and adopts it.
//!
//! The lease has two levels:
//! - **in this process**, a lock per lock queue (tasks of one host wait for each other
//!   here, without asking the broker);
//! - **across hosts**, an exclusive consumer on the order's lock queue
//!   ([`Topology::lease_queue`]: one of [`LEASE_SHARDS`] pre-declared, durable, always
//!   empty queues). RabbitMQ grants an exclusive consumer to one channel at a time
//!   (a second gets `ACCESS_REFUSED`) and cancels it when the channel or connection dies,
//!   so a killed host holds no lease.
//!
//! **When a lock queue's node is down.** A lock queue is a classic queue: it lives on the
//! cluster node that first declared it, and while that node is down it can be neither
//! consumed nor declared again (`NOT_FOUND - home node … is down`). A create whose shard
//! is there takes a *fallback* lease instead: an exclusive queue of its own order
//! ([`Topology::lease_fallback_queue`]), which RabbitMQ lets one connection declare at a time
//! (another gets `RESOURCE_LOCKED`) and deletes with that connection. It lives on the node
//! of the holder's own connection, so it dies with the holder's session, and the session's
//! work with it. A waiter that found the fallback held keeps to the fallback until it has it,
//! so two copies that both met the node down exclude each other. A holder whose lock
//! queue's node dies *during* a create loses its consumer but goes on; a copy that was
//! already waiting for it then waits the plugin's call time-out (the longest a create can
//! run) before it takes the fallback. What this leaves open (an argument, not a test):
//! a copy that arrives for the first time after the node died, while that create still
//! runs (a duplicate request, a node's death and an overlapping create at once); and a copy
//! arriving after the node is back takes the shard while a fallback holder still works.
//!
//! Taking and giving back a consumer is a message to a queue process the broker already
//! runs; an earlier lease declared and deleted an exclusive queue per create, which creates
//! and removes broker metadata every time and more than doubled RabbitMQ's CPU in the
//! in-flight benchmark (BENCHMARKS.md).
//!
//! [`LEASE_SHARDS`]: provisioner_contract::LEASE_SHARDS

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use provisioner_contract::Topology;
use provisioner_contract::reply::reply_code;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// The AMQP reply code of an exclusive consume on a queue that has a consumer already.
const ACCESS_REFUSED: u16 = 403;

/// The AMQP reply code of a consume on a queue that does not exist (yet, or any more: an
/// unused lock queue expires), and of a consume or declare of a durable queue whose node
/// is down.
const NOT_FOUND: u16 = 404;

/// The AMQP reply code of a declare of an exclusive queue another connection holds.
const RESOURCE_LOCKED: u16 = 405;

/// Leases being taken or held at once on this host: each holds a channel for the length of
/// one create call, and a connection has a limited number of channels (RabbitMQ's default
/// is 2,047), shared with the consumers and publishers.
const CONCURRENT_LEASES: usize = 256;

/// The leases of this host.
#[derive(Debug)]
pub struct Leases {
    local: Arc<LocalLocks>,
    channels: Arc<tokio::sync::Semaphore>,
    /// Channels of released leases, reused (opening and closing a channel per create costs
    /// the broker more than the lease itself).
    idle: Arc<Mutex<Vec<Channel>>>,
    /// Lock queues this host has declared (or found declared); a consume that finds one
    /// gone takes it out, and the next try declares it again.
    declared: Mutex<HashSet<String>>,
}

impl Default for Leases {
    fn default() -> Self {
        Self {
            local: Arc::default(),
            channels: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LEASES)),
            idle: Arc::default(),
            declared: Mutex::default(),
        }
    }
}

/// The in-process locks of the lock queues being leased now (an entry lives while someone
/// holds or waits for it).
type LocalLocks = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// A held lease; [`Lease::release`] gives it back. Dropping it gives it back too (lapin
/// cancels a dropped consumer), without returning its channel to the pool.
pub struct Lease {
    _local: LocalLock,
    _channel_slot: tokio::sync::OwnedSemaphorePermit,
    channel: Channel,
    held: Held,
    idle: Arc<Mutex<Vec<Channel>>>,
}

/// What a lease holds.
enum Held {
    /// The exclusive consumer on the order's lock queue; it must live as long as the lease.
    Consumer(lapin::Consumer),
    /// The order's own exclusive fallback queue (its lock queue's node is down).
    Fallback(String),
}

impl Lease {
    /// Whether this is a fallback lease (the order's lock queue was on a node that is down).
    pub fn is_fallback(&self) -> bool {
        matches!(self.held, Held::Fallback(_))
    }

    /// Gives the lease back; its channel goes back to the pool when it is still good.
    pub async fn release(self) {
        let given_back = match &self.held {
            Held::Consumer(consumer) => self
                .channel
                .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                .await
                .is_ok(),
            Held::Fallback(queue) => self
                .channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await
                .is_ok(),
        };
        drop(self.held);
        if given_back && self.channel.status().connected() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(self.channel);
        } else {
            let _ = self.channel.close(200, "lease released".into()).await;
        }
    }
}

/// A lock queue's in-process lock, held.
struct LocalLock {
    queue: String,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<LocalLocks>,
}

impl Drop for LocalLock {
    /// Unlocks the queue in this process and forgets its lock when nobody else wants it.
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .get(&self.queue)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.queue);
        }
    }
}

impl Leases {
    /// Waits until this task holds the lease of `order_id`. `holder_grace` bounds a
    /// holder's create (the plugin's call time-out): a waiter that found the lease held and
    /// then its lock queue's node gone waits that long before it takes the fallback, so the
    /// holder, which lost its consumer with the node but goes on, has finished.
    pub async fn acquire(
        &self,
        connection: &Connection,
        topology: &Topology,
        order_id: Uuid,
        holder_grace: Duration,
    ) -> anyhow::Result<Lease> {
        let queue = topology.lease_queue(order_id);
        let lock = {
            let mut locks = self.local.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(queue.clone()).or_default().clone()
        };
        let local = LocalLock {
            queue: queue.clone(),
            guard: Some(lock.lock_owned().await),
            locks: self.local.clone(),
        };
        let channel_slot = self
            .channels
            .clone()
            .acquire_owned()
            .await
            .context("the lease slots are closed")?;
        let mut wait = Duration::from_millis(20);
        // Whether someone held this lease while this task waited.
        let mut refused = false;
        loop {
            let channel = self.channel(connection).await?;
            if !self.is_declared(&queue) {
                match topology.declare_lease_queue(&channel, &queue).await {
                    Ok(()) => self.declared_now(&queue, true),
                    Err(error) if reply_code(&error) == Some(NOT_FOUND) => {
                        tracing::warn!(%order_id, %queue, "the lock queue's node is down: {error}; taking a fallback lease");
                        if refused {
                            tracing::warn!(%order_id, grace = ?holder_grace, "the lease was held when its node died: waiting for the holder's create to end first");
                            tokio::time::sleep(holder_grace).await;
                        }
                        let held = self
                            .acquire_fallback(connection, topology, order_id)
                            .await?;
                        let (channel, queue) = held;
                        return Ok(Lease {
                            _local: local,
                            _channel_slot: channel_slot,
                            channel,
                            held: Held::Fallback(queue),
                            idle: self.idle.clone(),
                        });
                    }
                    Err(error) => {
                        return Err(error)
                            .with_context(|| format!("declaring the lock queue {queue}"));
                    }
                }
            }
            let consumed = channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions {
                        exclusive: true,
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match consumed {
                Ok(consumer) => {
                    return Ok(Lease {
                        _local: local,
                        _channel_slot: channel_slot,
                        channel,
                        held: Held::Consumer(consumer),
                        idle: self.idle.clone(),
                    });
                }
                Err(error) if reply_code(&error) == Some(ACCESS_REFUSED) => {
                    refused = true;
                    tracing::debug!(%order_id, %queue, "another host holds the lease; waiting");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(error) if reply_code(&error) == Some(NOT_FOUND) => {
                    // Expired (declaring it again makes it) or on a node that is down
                    // (declaring it again says so).
                    tracing::debug!(%queue, "the lock queue is not there; declaring it again");
                    self.declared_now(&queue, false);
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("taking a lease on {queue}"));
                }
            }
        }
    }

    /// A pooled channel that is still open, or a new one (a refused consume or declare
    /// closes its channel).
    async fn channel(&self, connection: &Connection) -> anyhow::Result<Channel> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(channel) if channel.status().connected() => Ok(channel),
            _ => connection
                .create_channel()
                .await
                .context("opening a channel for a lease"),
        }
    }

    /// Waits until this connection holds `order_id`'s fallback queue; the channel that
    /// declared it (and deletes it on release) and the queue's name.
    async fn acquire_fallback(
        &self,
        connection: &Connection,
        topology: &Topology,
        order_id: Uuid,
    ) -> anyhow::Result<(Channel, String)> {
        let queue = topology.lease_fallback_queue(order_id);
        let mut wait = Duration::from_millis(20);
        loop {
            let channel = self.channel(connection).await?;
            match topology
                .declare_lease_fallback_queue(&channel, &queue)
                .await
            {
                Ok(()) => return Ok((channel, queue)),
                Err(error) if reply_code(&error) == Some(RESOURCE_LOCKED) => {
                    tracing::debug!(%order_id, %queue, "another host holds the fallback lease; waiting");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(error) => {
                    return Err(error)
                        .with_context(|| format!("taking the fallback lease {queue}"));
                }
            }
        }
    }

    fn is_declared(&self, queue: &str) -> bool {
        let declared = self.declared.lock().unwrap_or_else(|e| e.into_inner());
        declared.contains(queue)
    }

    fn declared_now(&self, queue: &str, declared: bool) {
        let mut known = self.declared.lock().unwrap_or_else(|e| e.into_inner());
        if declared {
            known.insert(queue.to_string());
        } else {
            known.remove(queue);
        }
    }
}
