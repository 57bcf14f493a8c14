//! One create at a time per order, across this host's tasks and every host on the broker.
//!
//! At-least-once delivery means two copies of an order's request can be in flight at once:
//! a retry published just before its host died with the original still unacked, a watchdog
//! re-send, an outbox re-publish after a lost confirm. A plugin's create looks its key up
//! before making a server, but two copies doing that at the same moment both find nothing
//! and both make one (the chaos test caught exactly that). So the look-up-and-create runs
//! under a lease: an in-process lock per order, and an exclusive, auto-deleted queue
//! `provision.lease.<order id>` that RabbitMQ grants to one connection at a time and drops
//! when that connection dies, so a killed host holds no lease. Whoever comes second finds
//! the server the first made, and adopts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ErrorKind};
use provisioner_contract::Topology;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

/// The AMQP reply code a second exclusive declare gets: RESOURCE_LOCKED.
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
}

impl Default for Leases {
    fn default() -> Self {
        Self {
            local: Arc::default(),
            channels: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_LEASES)),
            idle: Arc::default(),
        }
    }
}

/// The in-process locks of the orders being leased now (an entry lives while someone holds
/// or waits for it).
type LocalLocks = Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>;

/// A held lease; [`Lease::release`] gives it back (dropping it without does too, once the
/// channel or the connection closes).
pub struct Lease {
    _local: LocalLock,
    _channel_slot: tokio::sync::OwnedSemaphorePermit,
    channel: Channel,
    queue: String,
    idle: Arc<Mutex<Vec<Channel>>>,
}

impl Lease {
    /// Gives the lease back; its channel goes back to the pool when it is still good.
    pub async fn release(self) {
        let deleted = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        if deleted.is_ok() && self.channel.status().connected() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.push(self.channel);
        } else {
            let _ = self.channel.close(200, "lease released".into()).await;
        }
    }
}

/// An order's in-process lock, held.
struct LocalLock {
    order_id: Uuid,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<LocalLocks>,
}

impl Drop for LocalLock {
    /// Unlocks the order in this process and forgets its lock when nobody else wants it.
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .get(&self.order_id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.order_id);
        }
    }
}

impl Leases {
    /// Waits until this task holds the lease of `order_id`.
    pub async fn acquire(
        &self,
        connection: &Connection,
        topology: &Topology,
        order_id: Uuid,
    ) -> anyhow::Result<Lease> {
        let lock = {
            let mut locks = self.local.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(order_id).or_default().clone()
        };
        let local = LocalLock {
            order_id,
            guard: Some(lock.lock_owned().await),
            locks: self.local.clone(),
        };
        let channel_slot = self
            .channels
            .clone()
            .acquire_owned()
            .await
            .context("the lease slots are closed")?;
        let queue = topology.lease_queue(order_id);
        let mut wait = Duration::from_millis(50);
        loop {
            // A refused declare closes its channel: a pooled channel only until then.
            let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let channel = match pooled {
                Some(channel) if channel.status().connected() => channel,
                _ => connection
                    .create_channel()
                    .await
                    .context("opening a channel for a lease")?,
            };
            let declared = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            match declared {
                Ok(_) => {
                    return Ok(Lease {
                        _local: local,
                        _channel_slot: channel_slot,
                        channel,
                        queue,
                        idle: self.idle.clone(),
                    });
                }
                Err(error) if is_locked(&error) => {
                    tracing::debug!(%order_id, "another host holds the order's lease; waiting");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                Err(error) => return Err(error).context("taking an order's lease"),
            }
        }
    }
}

fn is_locked(error: &lapin::Error) -> bool {
    matches!(error.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == RESOURCE_LOCKED)
}
