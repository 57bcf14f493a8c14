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

/// The leases of this host.
#[derive(Debug, Default)]
pub struct Leases {
    local: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
}

/// A held lease; [`Lease::release`] gives it back (dropping it without does too, once the
/// channel or the connection closes).
pub struct Lease {
    _local: OwnedMutexGuard<()>,
    channel: Channel,
    queue: String,
}

impl Lease {
    /// Gives the lease back.
    pub async fn release(self) {
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.channel.close(200, "lease released".into()).await;
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
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            local.retain(|_, lock| Arc::strong_count(lock) > 1);
            local.entry(order_id).or_default().clone()
        };
        let local = lock.lock_owned().await;
        let queue = topology.lease_queue(order_id);
        let mut wait = Duration::from_millis(50);
        loop {
            // A refused declare closes its channel, so each attempt gets its own.
            let channel = connection
                .create_channel()
                .await
                .context("opening a channel for a lease")?;
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
                        channel,
                        queue,
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
