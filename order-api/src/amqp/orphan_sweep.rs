//! The orphan sweep: now and then (and on `POST /v1/orphans/sweep`), asks a host of every
//! announced vendor to list the servers carrying our idempotency key. The answers
//! ([`provisioner_contract::VendorInventory`]) come back on the results queue, where
//! [`super::results`] records the orphans ([`crate::store::Store::apply_inventory`]) and,
//! under `--orphan-action delete`, sends their deletes.
//!
//! Servers the sweep lists belong to an order while that order is in progress, or active
//! with that very server; every other server with our key is an orphan: its order failed,
//! was deleted, runs another server, or does not exist in this database. A second
//! deployment sharing the vendor account would see this one's servers as orphans: give
//! each deployment its own account or project, or leave the action at `report`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use provisioner_contract::{
    Envelope, HostRequest, OrphanDeleteRequest, Publisher, SweepRequest, Topology, encode,
};
use tokio::sync::Notify;
use uuid::Uuid;

use crate::store::{Orphan, Store};

/// When sweeps run.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// Time between sweeps; none: only when asked.
    pub every: Option<Duration>,
    /// Wakes the sweeper for a sweep now.
    pub now: Arc<Notify>,
    /// When the last sweep was asked for (at first: when the process started), kept across
    /// broker sessions so that reconnecting does not put the next sweep off.
    pub last: Arc<std::sync::Mutex<tokio::time::Instant>>,
}

impl SweepSettings {
    /// Every `every` (none: only when asked), the first one `every` after now.
    pub fn new(every: Option<Duration>, now: Arc<Notify>) -> Self {
        Self {
            every,
            now,
            last: Arc::new(std::sync::Mutex::new(tokio::time::Instant::now())),
        }
    }
}

/// Sweeps on schedule and on request until the broker session ends (it never returns
/// `Ok`; a publish failure ends the session like the relay's does).
pub async fn run(
    store: Store,
    publisher: Publisher,
    settings: SweepSettings,
) -> anyhow::Result<()> {
    loop {
        match settings.every {
            Some(every) => {
                let due = *settings.last.lock().unwrap_or_else(|e| e.into_inner()) + every;
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = settings.now.notified() => {}
                }
            }
            None => settings.now.notified().await,
        }
        let started = tokio::time::Instant::now();
        sweep_all(&store, &publisher).await?;
        // Only a sweep that asked every vendor resets the clock: after a failed publish the
        // next session sweeps again as soon as it is due.
        *settings.last.lock().unwrap_or_else(|e| e.into_inner()) = started;
    }
}

/// Asks for one listing of every announced vendor.
pub async fn sweep_all(store: &Store, publisher: &Publisher) -> anyhow::Result<()> {
    for vendor in store.vendors().await? {
        let sweep_id = Uuid::now_v7();
        store.begin_sweep(&vendor.vendor, sweep_id).await?;
        let request = HostRequest::Sweep(SweepRequest {
            sweep_id,
            vendor: vendor.vendor.clone(),
        });
        let envelope = Envelope {
            message_id: Uuid::new_v4(),
            correlation_id: Some(sweep_id),
            traceparent: None,
        };
        publisher
            .publish(
                &Topology::request_key(&vendor.vendor),
                &envelope,
                &encode(&request),
            )
            .await
            .with_context(|| format!("asking for a sweep of {}", vendor.vendor))?;
        tracing::info!(vendor = %vendor.vendor, %sweep_id, "orphan sweep asked for");
    }
    Ok(())
}

/// Sends the deletes of orphans to their vendor's hosts.
pub async fn delete_orphans(publisher: &Publisher, orphans: Vec<Orphan>) -> anyhow::Result<()> {
    for orphan in orphans {
        let vendor_id = orphan.server.vendor_id.clone();
        let request = HostRequest::DeleteOrphan(OrphanDeleteRequest {
            vendor: orphan.vendor.clone(),
            idempotency_key: orphan.idempotency_key,
            server: orphan.server,
        });
        let envelope = Envelope {
            message_id: Uuid::new_v4(),
            correlation_id: None,
            traceparent: None,
        };
        publisher
            .publish(
                &Topology::request_key(&orphan.vendor),
                &envelope,
                &encode(&request),
            )
            .await
            .with_context(|| format!("asking for the delete of orphan {vendor_id}"))?;
        tracing::warn!(vendor = %orphan.vendor, %vendor_id, "orphan delete sent: {}", orphan.reason);
    }
    Ok(())
}
