//! The results consumer: applies order updates and vendor announcements from
//! `provision.results`, acking each message only after its effect is committed.
//!
//! Updates are compare-and-set transitions (see [`crate::lifecycle`]), so a redelivered or
//! stale update changes nothing. An undecodable message is dead-lettered, never retried in
//! a loop.

use anyhow::Context;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use provisioner_contract::{Envelope, HostMessage, Topology, decode};

use crate::store::{Applied, Store};

/// Messages the consumer may hold unacked at once.
const PREFETCH: u16 = 64;

/// Consumes until the channel or connection fails.
pub async fn run(channel: &Channel, topology: &Topology, store: Store) -> anyhow::Result<()> {
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .context("setting the prefetch")?;
    let mut consumer = channel
        .basic_consume(
            topology.results_queue().into(),
            "order-api".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .context("consuming the results queue")?;
    tracing::info!("consuming {}", topology.results_queue());
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.context("receiving a result")?;
        handle(&store, delivery).await?;
    }
    anyhow::bail!("the broker closed the results consumer")
}

async fn handle(store: &Store, delivery: Delivery) -> anyhow::Result<()> {
    let decoded: Result<(Envelope, HostMessage), _> = decode(&delivery.properties, &delivery.data);
    let (envelope, message) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::error!("undecodable message on the results queue, dead-lettering it: {error}");
            delivery
                .reject(BasicRejectOptions { requeue: false })
                .await
                .context("dead-lettering a result")?;
            return Ok(());
        }
    };
    let outcome = match &message {
        HostMessage::OrderUpdate(update) => store.apply_update(update).await.map(|applied| {
            match applied {
                Applied::Moved(status) => {
                    tracing::info!(order_id = %update.order_id, %status, attempt = update.attempt, "order moved")
                }
                Applied::Ignored => tracing::debug!(
                    order_id = %update.order_id,
                    message_id = %envelope.message_id,
                    "duplicate or stale update ignored"
                ),
                Applied::UnknownOrder => tracing::warn!(
                    order_id = %update.order_id,
                    "update for an order this database does not have; ignored"
                ),
            }
        }),
        HostMessage::VendorAnnounced(announcement) => store.upsert_vendor(announcement).await,
        HostMessage::VendorWithdrawn(withdrawal) => store.withdraw_vendor(withdrawal).await,
    };
    match outcome {
        Ok(()) => {
            delivery
                .ack(BasicAckOptions::default())
                .await
                .context("acking a result")?;
        }
        Err(error) => {
            // The database failed, not the message: put it back and slow down.
            tracing::error!("applying a result failed, requeueing it: {error:#}");
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
                .context("requeueing a result")?;
        }
    }
    Ok(())
}
