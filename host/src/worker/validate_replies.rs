//! Answers order-api's validate requests for one vendor (order-api asks them before it
//! accepts an order): consumes `provision.validate.<vendor>`, runs the plugin's `validate`
//! (no network; a millisecond) on the ordered server and replies with the verdict on the
//! results exchange, under the asker's `reply_to` key.
//!
//! A lost validation costs little: the asker gives up after its time-out and accepts the
//! order unchecked (the plugin's create refuses a bad one later).

use anyhow::Context;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use provisioner_contract::{Envelope, Topology, ValidateReply, ValidateRequest, decode, encode};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::plugin_folder::PluginSet;
use crate::wit_convert::verdict;

/// Validations answered at once per vendor and host.
const PREFETCH: u16 = 64;

/// A vendor's running answerer of validate requests; [`ValidateResponder::stop`] ends it.
pub struct ValidateResponder {
    channel: Channel,
    tag: String,
    task: JoinHandle<()>,
}

impl ValidateResponder {
    /// Declares the vendor's validation queue and answers from it with whichever plugin
    /// `plugins` has for the vendor at the time.
    pub async fn start(
        connection: &Connection,
        topology: &Topology,
        vendor: &str,
        host_id: &str,
        plugins: watch::Receiver<PluginSet>,
    ) -> anyhow::Result<Self> {
        let channel = connection
            .create_channel()
            .await
            .context("opening a validation channel")?;
        topology
            .declare_validate_queue(&channel, vendor)
            .await
            .with_context(|| format!("declaring the validation queue of {vendor}"))?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .context("setting the validation prefetch")?;
        let tag = format!("{host_id}-{vendor}-validate");
        let mut consumer = channel
            .basic_consume(
                topology.validate_queue(vendor).as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming the validation queue of {vendor}"))?;
        let replies = channel.clone();
        let exchange = topology.results_exchange();
        let vendor = vendor.to_string();
        // Acked deliveries, so the prefetch bounds what this host holds; each is answered in a
        // task of its own (at most the prefetch at once), and a validation that waited on the
        // queue past its asker's time-out expires there instead of reaching a host.
        let task = tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let delivery = match delivery {
                    Ok(delivery) => delivery,
                    Err(error) => {
                        tracing::warn!(vendor, "the validation consumer ended: {error}");
                        return;
                    }
                };
                let (replies, exchange, plugins, vendor) = (
                    replies.clone(),
                    exchange.clone(),
                    plugins.clone(),
                    vendor.clone(),
                );
                tokio::spawn(async move {
                    answer(&replies, &exchange, &plugins, &vendor, &delivery).await;
                    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                        tracing::warn!(vendor, "acking a validation: {error}");
                    }
                });
            }
        });
        Ok(Self { channel, tag, task })
    }

    /// Stops answering and closes the channel.
    pub async fn stop(self) {
        let _ = self
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        let _ = self.channel.close(200, "validations stopped".into()).await;
        self.task.abort();
    }
}

/// Answers one validation to `exchange` (nothing when it has no `reply_to` of the form
/// `reply.<id>`, or cannot be read).
async fn answer(
    replies: &Channel,
    exchange: &str,
    plugins: &watch::Receiver<PluginSet>,
    vendor: &str,
    delivery: &lapin::message::Delivery,
) {
    let Some(reply_to) = delivery.properties.reply_to().clone() else {
        return;
    };
    // Only a replies queue's key: a reply must never land on the results queue.
    if !reply_to.as_str().starts_with("reply.") {
        tracing::warn!(
            vendor,
            reply_to = reply_to.as_str(),
            "validation with a foreign reply_to"
        );
        return;
    }
    let decoded: Result<(Envelope, ValidateRequest), _> =
        decode(&delivery.properties, &delivery.data);
    let (envelope, request) = match decoded {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::warn!(vendor, "undecodable validation: {error}");
            return;
        }
    };
    let plugin = plugins.borrow().get(vendor).cloned();
    let reply = match plugin {
        Some(plugin) if request.vendor == vendor => {
            verdict(&plugin, request.vendor, request.spec).await
        }
        _ => ValidateReply::Unchecked {
            reason: format!("this host does not serve '{}'", request.vendor),
        },
    };
    let answer = Envelope {
        message_id: uuid::Uuid::new_v4(),
        correlation_id: envelope.correlation_id,
        traceparent: envelope.traceparent,
    };
    let published = replies
        .basic_publish(
            exchange.into(),
            reply_to.as_str().into(),
            BasicPublishOptions::default(),
            &encode(&reply),
            answer.properties().with_delivery_mode(1),
        )
        .await;
    if let Err(error) = published {
        tracing::warn!(vendor, "replying to a validation: {error}");
    }
}
