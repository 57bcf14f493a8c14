//! The results consumer: applies order updates, vendor announcements and the orphan
//! sweep's answers from `provision.results`, acking each message only after its effect is
//! committed.
//!
//! Updates that arrive together are applied in one transaction (group commit: one disk
//! sync for the batch, not one per update), in arrival order; so are the results a host
//! sent together in one message ([`HostMessage::OrderUpdates`]).
//!
//! Updates are compare-and-set transitions (see [`crate::lifecycle`]), so a redelivered or
//! stale update changes nothing. An undecodable message is dead-lettered, never retried in
//! a loop.

use anyhow::Context;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use provisioner_contract::{
    Envelope, HostMessage, OrderUpdate, Publisher, Topology, UpdateKind, decode,
};
use tokio::sync::Notify;

use super::orphan_sweep;
use crate::metrics::Metrics;
use crate::store::{Applied, OrphanAction, Store};

/// Messages the consumer may hold unacked at once.
const PREFETCH: u16 = 64;

/// Consumes until the channel or connection fails.
pub async fn run(
    channel: &Channel,
    publisher: &Publisher,
    topology: &Topology,
    store: Store,
    orphan_action: OrphanAction,
    metrics: &Metrics,
    [relay_wakeup, webhook_wakeup]: [&Notify; 2],
) -> anyhow::Result<()> {
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .context("setting the prefetch")?;
    let consumer = channel
        .basic_consume(
            topology.results_queue().into(),
            "order-api".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("consuming the results queue")?;
    tracing::info!("consuming {}", topology.results_queue());
    // Whatever has arrived is applied together: one transaction, one disk sync, for up to
    // a prefetch's worth of updates (group commit). Under light load a batch is one
    // message and nothing waits for company.
    let mut batches = consumer.ready_chunks(PREFETCH as usize);
    while let Some(batch) = batches.next().await {
        let deliveries = batch
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .context("receiving results")?;
        handle_batch(
            &store,
            publisher,
            topology,
            orphan_action,
            metrics,
            [relay_wakeup, webhook_wakeup],
            deliveries,
        )
        .await?;
    }
    anyhow::bail!("the broker closed the results consumer")
}

/// Applies one batch: undecodable messages are dead-lettered, vendor announcements applied
/// one by one, order updates together in one transaction; each delivery is acked once its
/// effect is committed, or requeued when the database failed.
async fn handle_batch(
    store: &Store,
    publisher: &Publisher,
    topology: &Topology,
    orphan_action: OrphanAction,
    metrics: &Metrics,
    [relay_wakeup, webhook_wakeup]: [&Notify; 2],
    deliveries: Vec<Delivery>,
) -> anyhow::Result<()> {
    // The order updates, and the deliveries that carried them (one per update, or one for a
    // host's batch of results).
    let mut updates: Vec<(Envelope, OrderUpdate)> = Vec::new();
    let mut update_deliveries: Vec<Delivery> = Vec::new();
    for delivery in deliveries {
        let decoded: Result<(Envelope, HostMessage), _> =
            decode(&delivery.properties, &delivery.data);
        match decoded {
            Err(error) => {
                let reason = format!("undecodable message: {error}");
                tracing::error!("{reason} on the results queue; dead-lettering it");
                publisher
                    .dead_letter(topology, &topology.results_queue(), &delivery, &reason)
                    .await
                    .context("dead-lettering a result")?;
                metrics.dead_lettered(&topology.results_queue());
            }
            Ok((envelope, HostMessage::OrderUpdate(update))) => {
                updates.push((envelope, update));
                update_deliveries.push(delivery);
            }
            Ok((envelope, HostMessage::OrderUpdates(batch))) => {
                updates.extend(
                    batch
                        .updates
                        .into_iter()
                        .map(|update| (envelope.clone(), update)),
                );
                update_deliveries.push(delivery);
            }
            Ok((_, HostMessage::VendorAnnounced(announcement))) => {
                let outcome = store.upsert_vendor(&announcement).await;
                settle(outcome, delivery).await?;
            }
            Ok((_, HostMessage::VendorWithdrawn(withdrawal))) => {
                let outcome = store.withdraw_vendor(&withdrawal).await;
                settle(outcome, delivery).await?;
            }
            Ok((_, HostMessage::Inventory(inventory))) => {
                match store.apply_inventory(&inventory, orphan_action).await {
                    // The deletes go out before the ack: if publishing fails, the inventory
                    // is redelivered and applied again (same orphans, deletes sent again).
                    Ok(to_delete) => {
                        orphan_sweep::delete_orphans(publisher, to_delete).await?;
                        settle(Ok(()), delivery).await?;
                    }
                    Err(error) => settle(Err(error), delivery).await?,
                }
            }
            Ok((_, HostMessage::OrphanDeleted(outcome))) => {
                let recorded = store.orphan_deleted(&outcome).await;
                settle(recorded, delivery).await?;
            }
        }
    }
    if update_deliveries.is_empty() {
        return Ok(());
    }
    let batch: Vec<&OrderUpdate> = updates.iter().map(|(_, update)| update).collect();
    let outcome = store.apply_updates(&batch).await.map(|applied| {
        for ((envelope, update), applied) in updates.iter().zip(applied) {
            log_applied(envelope, update, applied);
            match applied {
                Applied::LateServerDeleted => relay_wakeup.notify_one(),
                Applied::Moved(status) if status.is_settled() => webhook_wakeup.notify_one(),
                _ => {}
            }
            metrics.order_update(&update.vendor, update_kind(&update.kind));
            if let UpdateKind::Failed { fault, .. } | UpdateKind::Retrying { fault, .. } =
                &update.kind
            {
                metrics.fault(&fault.code);
            }
        }
    });
    settle_updates(outcome, update_deliveries).await
}

/// The metrics label of an update's kind.
fn update_kind(kind: &UpdateKind) -> &'static str {
    match kind {
        UpdateKind::Provisioning { .. } => "provisioning",
        UpdateKind::Active { .. } => "active",
        UpdateKind::Failed { .. } => "failed",
        UpdateKind::Deleted { .. } => "deleted",
        UpdateKind::DeleteFailed { .. } => "delete_failed",
        UpdateKind::Retrying { .. } => "retrying",
        UpdateKind::Cancelled { .. } => "cancelled",
        UpdateKind::Adopted { .. } => "adopted",
        UpdateKind::CancelFailed { .. } => "cancel_failed",
    }
}

fn log_applied(envelope: &Envelope, update: &OrderUpdate, applied: Applied) {
    match applied {
        Applied::Moved(status) => {
            tracing::info!(order_id = %update.order_id, %status, attempt = update.attempt, "order moved")
        }
        Applied::Ignored => tracing::debug!(
            order_id = %update.order_id,
            message_id = %envelope.message_id,
            "duplicate or stale update ignored"
        ),
        Applied::LateServerDeleted => tracing::warn!(
            order_id = %update.order_id,
            "the vendor made a server for a cancelled or failed order; its delete is queued"
        ),
        Applied::UnknownOrder => tracing::warn!(
            order_id = %update.order_id,
            "update for an order this database does not have; ignored"
        ),
    }
}

/// Acks one delivery when its effect is committed; requeues it (after a pause) when the
/// database failed. Never a `multiple` ack: the batch's order updates before it are not
/// committed yet.
async fn settle(outcome: anyhow::Result<()>, delivery: Delivery) -> anyhow::Result<()> {
    match outcome {
        Ok(()) => {
            delivery
                .ack(BasicAckOptions::default())
                .await
                .context("acking a result")?;
            Ok(())
        }
        Err(error) => requeue(error, [delivery]).await,
    }
}

/// Acks a batch's order updates when they are committed, or requeues them.
///
/// The ack is one frame for all of them: the last update's, with `multiple`, which settles
/// every unsettled delivery up to it on this channel. That is exactly the updates: this
/// channel carries this consumer alone, batches are handled one after another in delivery
/// order, and every other delivery of this batch and the ones before was settled already,
/// one by one, as it was handled. One settle for a batch instead of one per message is a
/// command fewer per result in the results queue's log.
async fn settle_updates(
    outcome: anyhow::Result<()>,
    updates: impl IntoIterator<Item = Delivery>,
) -> anyhow::Result<()> {
    match outcome {
        Ok(()) => {
            if let Some(last) = updates.into_iter().last() {
                last.ack(BasicAckOptions { multiple: true })
                    .await
                    .context("acking results")?;
            }
            Ok(())
        }
        Err(error) => requeue(error, updates).await,
    }
}

/// Requeues `deliveries` after a pause: the database failed, the messages themselves are fine.
async fn requeue(
    error: anyhow::Error,
    deliveries: impl IntoIterator<Item = Delivery>,
) -> anyhow::Result<()> {
    tracing::error!("applying results failed, requeueing them: {error:#}");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for delivery in deliveries {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await
            .context("requeueing a result")?;
    }
    Ok(())
}
