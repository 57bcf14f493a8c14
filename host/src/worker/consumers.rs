//! The consumers of one session, one per served vendor: its request queue consumed with a
//! prefetch equal to the plugin's in-flight budget, and its validate queue answered
//! ([`super::validate_replies`]). Started and stopped as plugins come and go; a stopped
//! vendor's channel stays open until the session ends, carrying the acks of its in-flight
//! work.

use std::collections::HashMap;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tokio_stream::StreamMap;

use super::WorkerSettings;
use super::validate_replies::ValidateResponder;
use crate::plugin_folder::PluginSet;
use crate::runtime::Plugin;

/// A vendor's deliveries; the stream ends with an error if the broker ends the consumer.
type Deliveries =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = anyhow::Result<Delivery>> + Send>>;

/// The consumers of one session, one per vendor, started and stopped as plugins come and go.
pub(super) struct Consumers<'a> {
    connection: &'a Connection,
    settings: &'a WorkerSettings,
    streams: StreamMap<String, Deliveries>,
    channels: HashMap<String, (Channel, String)>,
    /// Channels of removed vendors: still carrying the acks of their in-flight work.
    retired: Vec<Channel>,
    /// Each vendor's answerer of validate requests.
    validate_responders: HashMap<String, ValidateResponder>,
    /// The plugins in service (the validate responders look their vendor's up).
    plugins: watch::Receiver<PluginSet>,
}

impl<'a> Consumers<'a> {
    /// No consumer yet, on `connection`.
    pub(super) fn new(
        connection: &'a Connection,
        settings: &'a WorkerSettings,
        plugins: watch::Receiver<PluginSet>,
    ) -> Self {
        Self {
            connection,
            settings,
            streams: StreamMap::new(),
            channels: HashMap::new(),
            retired: Vec::new(),
            validate_responders: HashMap::new(),
            plugins,
        }
    }

    /// The next delivery of any vendor, with the vendor; an `Err` when the broker ended a
    /// consumer or a delivery failed; `None` while no vendor is consumed.
    pub(super) async fn next_delivery(&mut self) -> Option<(String, anyhow::Result<Delivery>)> {
        self.streams.next().await
    }

    /// Declares the vendor's queue and consumes it with the plugin's in-flight budget, and
    /// answers its validate requests.
    pub(super) async fn start(&mut self, plugin: &Plugin) -> anyhow::Result<()> {
        let vendor = plugin.vendor().to_string();
        let (channel, tag, deliveries) = self.consume_requests(plugin).await?;
        self.streams.insert(vendor.clone(), deliveries);
        self.channels.insert(vendor.clone(), (channel, tag));
        self.answer_validate_requests(vendor).await;
        Ok(())
    }

    /// Declares the vendor's request queue and consumes it on a channel of its own, with
    /// the plugin's in-flight budget as the prefetch: the channel, the consumer tag and
    /// the deliveries.
    async fn consume_requests(
        &self,
        plugin: &Plugin,
    ) -> anyhow::Result<(Channel, String, Deliveries)> {
        let vendor = plugin.vendor().to_string();
        let topology = &self.settings.topology;
        topology
            .declare_vendor(self.connection, &vendor)
            .await
            .with_context(|| format!("declaring the request queue of {vendor}"))?;
        let channel = self
            .connection
            .create_channel()
            .await
            .context("opening a channel")?;
        channel
            .basic_qos(plugin.limits().max_in_flight, BasicQosOptions::default())
            .await
            .context("setting the prefetch")?;
        let tag = format!("{}-{vendor}", self.settings.host_id);
        let consumer = channel
            .basic_consume(
                topology.request_queue(&vendor).into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .with_context(|| format!("consuming the request queue of {vendor}"))?;
        tracing::info!(
            vendor,
            prefetch = plugin.limits().max_in_flight,
            "consuming {}",
            topology.request_queue(&vendor)
        );
        let ended = vendor.clone();
        let deliveries = consumer
            .map(|delivery| delivery.context("consuming a request"))
            .chain(futures_util::stream::once(async move {
                Err(anyhow::anyhow!("the broker ended the consumer of {ended}"))
            }));
        Ok((channel, tag, Box::pin(deliveries)))
    }

    /// Starts answering the vendor's validate requests. Validations are a help to
    /// order-api, not a condition of serving the vendor: a failure is only logged.
    async fn answer_validate_requests(&mut self, vendor: String) {
        match ValidateResponder::start(
            self.connection,
            &self.settings.topology,
            &vendor,
            &self.settings.host_id,
            self.plugins.clone(),
        )
        .await
        {
            Ok(responder) => {
                self.validate_responders.insert(vendor, responder);
            }
            Err(error) => {
                tracing::warn!(vendor, "not answering validations: {error:#}");
            }
        }
    }

    /// Stops taking the vendor's requests; in-flight work still finishes and acks.
    pub(super) async fn stop(&mut self, vendor: &str) {
        if let Some(responder) = self.validate_responders.remove(vendor) {
            responder.stop().await;
        }
        self.streams.remove(vendor);
        if let Some((channel, tag)) = self.channels.remove(vendor) {
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            self.retired.push(channel);
        }
    }

    /// Stops taking any vendor's requests; in-flight work still finishes and acks.
    pub(super) async fn stop_all(&mut self) {
        let vendors: Vec<String> = self.channels.keys().cloned().collect();
        for vendor in vendors {
            self.stop(&vendor).await;
        }
    }

    /// A replaced plugin may have a new in-flight budget.
    pub(super) async fn update(&mut self, plugin: &Plugin) -> anyhow::Result<()> {
        if let Some((channel, _)) = self.channels.get(plugin.vendor()) {
            channel
                .basic_qos(plugin.limits().max_in_flight, BasicQosOptions::default())
                .await
                .context("updating the prefetch")?;
        }
        Ok(())
    }

    /// Stops every consumer and closes every channel.
    pub(super) async fn close(mut self) {
        self.stop_all().await;
        for channel in self.retired {
            let _ = channel.close(200, "host shutting down".into()).await;
        }
    }
}
