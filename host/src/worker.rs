//! The host's AMQP side: one consumer per vendor, each with a prefetch equal to that
//! vendor's in-flight budget; one task per delivery that creates, publishes progress,
//! waits, publishes the result (confirmed) and only then acks.
//!
//! If the host dies at any point before the ack, RabbitMQ redelivers the request and the
//! plugin adopts the server it already made (the order id is its idempotency key), so no
//! server is made twice. A connection failure ends the session: in-flight tasks are
//! dropped, the connection is closed (their deliveries go back to the queue) and the host
//! reconnects with backoff.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use std::collections::HashMap;

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use provisioner_contract::amqp::connect_with_backoff;
use provisioner_contract::envelope::integer_header;
use provisioner_contract::{
    CancelRequest, DeleteRequest, Envelope, Fault, HostMessage, HostRequest, Listing, OrderUpdate,
    OrphanDeleteRequest, OrphanDeleted, ProvisionRequest, Publisher, ServerInfo, ServerStatus,
    SweepRequest, Topology, UpdateKind, VendorAnnouncement, VendorInventory, VendorWithdrawal,
    decode, encode,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::plugin_folder::PluginSet;
use crate::lease::Leases;
use crate::plugin_output;
use crate::provision::{self, PollPolicy};
use crate::retry::{Decision, RetryPolicy, RetryState, retry_properties};
use crate::runtime::Plugin;
use crate::validations::ValidationService;

/// The leases of this host with the session's connection they are taken on.
#[derive(Clone)]
struct SessionLeases {
    connection: Arc<Connection>,
    leases: Arc<Leases>,
}

impl SessionLeases {
    /// Waits until this task holds the create lease of `order_id` (a holder elsewhere gets
    /// the plugin's call time-out to finish).
    async fn acquire(
        &self,
        settings: &WorkerSettings,
        plugin: &Plugin,
        order_id: uuid::Uuid,
    ) -> anyhow::Result<crate::lease::Lease> {
        self.leases
            .acquire(
                &self.connection,
                &settings.topology,
                order_id,
                plugin.limits().call_timeout(),
            )
            .await
    }
}

/// What the worker needs besides the plugins.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The brokers to connect to (one, or a cluster's nodes).
    pub amqp_url: provisioner_contract::amqp::BrokerAddresses,
    /// AMQP names.
    pub topology: Topology,
    /// This host's name.
    pub host_id: String,
    /// How booting servers are polled.
    pub poll: PollPolicy,
    /// Time between vendor announcements.
    pub announce_interval: Duration,
    /// How failed creates are retried.
    pub retry: RetryPolicy,
    /// How failed cancels (a user's, or the clean-up after a failed order) are retried.
    pub cleanup_retry: RetryPolicy,
    /// Time in-flight work gets to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Where the broker address the session is on is shown.
    pub metrics: Arc<crate::metrics::HostMetrics>,
}

/// Serves the plugins `plugins` holds (and follows its changes) until `shutdown` is
/// cancelled, reconnecting after broker failures.
pub async fn run(
    settings: WorkerSettings,
    plugins: watch::Receiver<PluginSet>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let leases = Arc::new(Leases::default());
    // The address to try first: after a lost connection, the next in the list.
    let mut start = 0;
    loop {
        let Some((connection, address)) = connect_with_backoff(
            &settings.amqp_url,
            start,
            &format!("provisioner-host {}", settings.host_id),
            shutdown.cancelled(),
        )
        .await
        else {
            return Ok(());
        };
        start = address + 1;
        let node = settings.amqp_url.node(address);
        settings.metrics.broker_connected(Some(&node.address));
        let connection = Arc::new(connection);
        let session_leases = SessionLeases {
            connection: connection.clone(),
            leases: leases.clone(),
        };
        match session(
            &connection,
            &settings,
            &session_leases,
            plugins.clone(),
            &shutdown,
        )
        .await
        {
            Ok(()) => {
                let _ = connection.close(200, "host shutting down".into()).await;
                return Ok(());
            }
            Err(error) => {
                settings.metrics.broker_connected(None);
                tracing::error!("broker session ended: {error:#}; reconnecting");
                // Hands every unacked delivery back to the queue.
                let _ = connection.close(320, "host reconnecting".into()).await;
            }
        }
    }
}

/// A vendor's deliveries; the stream ends with an error if the broker ends the consumer.
type Deliveries =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = anyhow::Result<Delivery>> + Send>>;

/// The consumers of one session, one per vendor, started and stopped as plugins come and go.
struct Consumers<'a> {
    connection: &'a Connection,
    settings: &'a WorkerSettings,
    streams: StreamMap<String, Deliveries>,
    channels: HashMap<String, (Channel, String)>,
    /// Channels of removed vendors: still carrying the acks of their in-flight work.
    retired: Vec<Channel>,
    /// Each vendor's validation service.
    validations: HashMap<String, ValidationService>,
    /// The plugins in service (the validation services look their vendor's up).
    plugins: watch::Receiver<PluginSet>,
}

impl Consumers<'_> {
    /// Declares the vendor's queue and consumes it with the plugin's in-flight budget.
    async fn start(&mut self, plugin: &Plugin) -> anyhow::Result<()> {
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
        self.streams.insert(vendor.clone(), Box::pin(deliveries));
        self.channels.insert(vendor.clone(), (channel, tag));
        // Validations are a help to order-api, not a condition of serving the vendor.
        match ValidationService::start(
            self.connection,
            topology,
            &vendor,
            &self.settings.host_id,
            self.plugins.clone(),
        )
        .await
        {
            Ok(validations) => {
                self.validations.insert(vendor, validations);
            }
            Err(error) => {
                tracing::warn!(vendor, "not answering validations: {error:#}");
            }
        }
        Ok(())
    }

    /// Stops taking the vendor's requests; in-flight work still finishes and acks.
    async fn stop(&mut self, vendor: &str) {
        if let Some(validations) = self.validations.remove(vendor) {
            validations.stop().await;
        }
        self.streams.remove(vendor);
        if let Some((channel, tag)) = self.channels.remove(vendor) {
            let _ = channel
                .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                .await;
            self.retired.push(channel);
        }
    }

    /// A replaced plugin may have a new in-flight budget.
    async fn update(&mut self, plugin: &Plugin) -> anyhow::Result<()> {
        if let Some((channel, _)) = self.channels.get(plugin.vendor()) {
            channel
                .basic_qos(plugin.limits().max_in_flight, BasicQosOptions::default())
                .await
                .context("updating the prefetch")?;
        }
        Ok(())
    }

    /// Stops every consumer and closes every channel.
    async fn close(mut self) {
        let vendors: Vec<String> = self.channels.keys().cloned().collect();
        for vendor in vendors {
            self.stop(&vendor).await;
        }
        for channel in self.retired {
            let _ = channel.close(200, "host shutting down".into()).await;
        }
    }
}

/// One connection's life: declare, consume, announce, follow plugin changes; `Ok` only on
/// shutdown.
async fn session(
    connection: &Arc<Connection>,
    settings: &Arc<WorkerSettings>,
    leases: &SessionLeases,
    mut plugins: watch::Receiver<PluginSet>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let topology = &settings.topology;
    if !wait_for_shared_topology(connection, topology, shutdown).await? {
        return Ok(());
    }
    let publisher = Publisher::open(connection, topology.results_exchange())
        .await
        .context("opening the publishing channel")?;
    let mut consumers = Consumers {
        connection,
        settings,
        streams: StreamMap::new(),
        channels: HashMap::new(),
        retired: Vec::new(),
        validations: HashMap::new(),
        plugins: plugins.clone(),
    };
    let mut current: PluginSet = plugins.borrow_and_update().clone();
    for plugin in current.values() {
        consumers.start(plugin).await?;
    }
    let mut announce = tokio::time::interval(settings.announce_interval);
    let mut in_flight: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let mut watching = true;

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = announce.tick() => {
                for plugin in current.values() {
                    announce_vendor(&publisher, settings, plugin).await?;
                }
                for (vendor, reason) in current.unavailable() {
                    withdraw_vendor(&publisher, settings, vendor, Some(reason)).await?;
                }
            }
            changed = plugins.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let next: PluginSet = plugins.borrow_and_update().clone();
                for (vendor, old) in current.iter() {
                    match next.get(vendor) {
                        None => {
                            consumers.stop(vendor).await;
                            let reason = next.unavailable().get(vendor);
                            withdraw_vendor(&publisher, settings, vendor, reason).await?;
                            tracing::info!(vendor, "stopped serving");
                        }
                        Some(new) if !Arc::ptr_eq(old, new) => {
                            consumers.update(new).await?;
                            announce_vendor(&publisher, settings, new).await?;
                        }
                        Some(_) => {}
                    }
                }
                for (vendor, plugin) in next.iter() {
                    if !current.contains_key(vendor) {
                        consumers.start(plugin).await?;
                        announce_vendor(&publisher, settings, plugin).await?;
                    }
                }
                // Vendors whose plugin is here but cannot serve: news of it, or of its end
                // when the manifest went (one that now serves was announced above).
                for (vendor, reason) in next.unavailable() {
                    let news = current.unavailable().get(vendor) != Some(reason);
                    if news && !current.contains_key(vendor) {
                        withdraw_vendor(&publisher, settings, vendor, Some(reason)).await?;
                    }
                }
                for vendor in current.unavailable().keys() {
                    if !next.contains_key(vendor) && !next.unavailable().contains_key(vendor) {
                        withdraw_vendor(&publisher, settings, vendor, None).await?;
                    }
                }
                current = next;
            }
            Some((vendor, delivery)) = consumers.streams.next() => {
                let delivery = delivery?;
                match current.get(&vendor) {
                    // The plugin in service now: a replaced plugin serves new orders.
                    Some(plugin) => {
                        let work = handle_delivery(delivery, plugin.clone(), publisher.clone(), settings.clone(), leases.clone());
                        in_flight.spawn(work);
                    }
                    // Removed between the delivery and now: hand it back for another host.
                    None => {
                        let _ = delivery
                            .nack(BasicNackOptions { requeue: true, ..BasicNackOptions::default() })
                            .await;
                    }
                }
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                done.context("a provisioning task panicked")??;
            }
        }
    }

    // Shutdown: stop taking work, let in-flight creations finish within the grace period;
    // whatever is left unacked goes back to the queue when the channels close.
    let vendors: Vec<String> = consumers.channels.keys().cloned().collect();
    for vendor in &vendors {
        consumers.stop(vendor).await;
    }
    let pending = in_flight.len();
    if pending > 0 {
        tracing::info!(pending, grace = ?settings.shutdown_grace, "waiting for in-flight creations");
        let drained = tokio::time::timeout(settings.shutdown_grace, async {
            while let Some(done) = in_flight.join_next().await {
                if let Ok(Err(error)) = done {
                    tracing::warn!("in-flight creation ended with an error: {error:#}");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::info!(
                left = in_flight.len(),
                "grace period over; handing the rest back to RabbitMQ"
            );
        }
    }
    in_flight.abort_all();
    consumers.close().await;
    let _ = publisher.close().await;
    Ok(())
}

/// Waits until order-api has declared the exchanges and queues a host relies on (a host
/// may not declare them: see [`Topology::declare_order_api`]); `false` when `shutdown`
/// came first.
async fn wait_for_shared_topology(
    connection: &Connection,
    topology: &Topology,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let mut delay = Duration::from_millis(100);
    let mut told = false;
    loop {
        let missing = topology
            .missing_shared(connection)
            .await
            .context("checking for the exchanges and queues order-api declares")?;
        let Some(missing) = missing else {
            return Ok(true);
        };
        if !told {
            tracing::warn!(
                missing,
                "waiting for order-api to declare the shared topology"
            );
            told = true;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(false),
        }
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// Tells order-api this host serves the plugin's vendor.
async fn announce_vendor(
    publisher: &Publisher,
    settings: &WorkerSettings,
    plugin: &Plugin,
) -> anyhow::Result<()> {
    let info = plugin.info_cached();
    let message = HostMessage::VendorAnnounced(VendorAnnouncement {
        vendor: plugin.vendor().to_string(),
        display_name: info.display_name.clone(),
        plugin_version: info.version.clone(),
        host_id: settings.host_id.clone(),
        at: chrono::Utc::now(),
        // What its `catalogue` export (WIT 0.5) answered at load; none before 0.5.
        catalogue: plugin.catalogue_cached().cloned(),
    });
    publish_host_message(
        publisher,
        &Topology::announce_key(plugin.vendor()),
        &message,
    )
    .await
}

/// Tells order-api this host no longer serves `vendor`: its plugin was removed, or (with
/// `unavailable`, the reason) it is here but cannot serve.
async fn withdraw_vendor(
    publisher: &Publisher,
    settings: &WorkerSettings,
    vendor: &str,
    unavailable: Option<&String>,
) -> anyhow::Result<()> {
    let message = HostMessage::VendorWithdrawn(VendorWithdrawal {
        vendor: vendor.to_string(),
        host_id: settings.host_id.clone(),
        at: chrono::Utc::now(),
        unavailable: unavailable.cloned(),
    });
    publish_host_message(publisher, &Topology::announce_key(vendor), &message).await
}

/// Publishes a message that is about no order (announcements, inventories), confirmed.
async fn publish_host_message(
    publisher: &Publisher,
    routing_key: &str,
    message: &HostMessage,
) -> anyhow::Result<()> {
    let envelope = Envelope {
        message_id: uuid::Uuid::new_v4(),
        correlation_id: None,
        traceparent: None,
    };
    // Bounded like an order's updates: the plugin-made part of an oversized message is
    // replaced, so it cannot be refused by the broker and end the session.
    let bounded = plugin_output::bounded_body(message);
    if let Some(size) = bounded.replaced {
        tracing::error!(
            size,
            limit = plugin_output::MAX_UPDATE_BYTES,
            "a message too large to publish on {routing_key}; its plugin-made part was replaced"
        );
    }
    publisher
        .publish(routing_key, &envelope, &bounded.body)
        .await
        .with_context(|| format!("publishing {routing_key}"))
}

/// Which attempt at this request this is: 1, then more after retries and redeliveries.
fn attempt(delivery: &Delivery) -> u32 {
    let retries = integer_header(&delivery.properties, crate::retry::RETRY_COUNT_HEADER)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    // Quorum queues count earlier deliveries in `x-delivery-count`.
    let redeliveries = match integer_header(&delivery.properties, "x-delivery-count") {
        Some(count) => u32::try_from(count).unwrap_or(0),
        None if delivery.redelivered => 1,
        None => 0,
    };
    retries.saturating_add(redeliveries).saturating_add(1)
}

/// One request: decode, do it at the vendor (publishing progress on the way), publish the
/// result, ack. An `Err` means the broker side failed; the delivery stays unacked and is
/// redelivered.
async fn handle_delivery(
    delivery: Delivery,
    plugin: Arc<Plugin>,
    publisher: Publisher,
    settings: Arc<WorkerSettings>,
    leases: SessionLeases,
) -> anyhow::Result<()> {
    let decoded: Result<(Envelope, HostRequest), _> = decode(&delivery.properties, &delivery.data);
    let (envelope, request) = match decoded {
        Ok(decoded) if decoded.1.vendor() == plugin.vendor() => decoded,
        Ok((_, request)) => {
            let reason = format!(
                "request for vendor '{}' on the queue of '{}'",
                request.vendor(),
                plugin.vendor()
            );
            tracing::error!(order_id = ?request.order_id(), "{reason}; dead-lettering it");
            return dead_letter(&publisher, &settings, plugin.vendor(), &delivery, &reason).await;
        }
        Err(error) => {
            let reason = format!("undecodable request: {error}");
            tracing::error!(vendor = plugin.vendor(), "{reason}; dead-lettering it");
            return dead_letter(&publisher, &settings, plugin.vendor(), &delivery, &reason).await;
        }
    };
    let request = match request {
        HostRequest::Create(create) => OrderRequest::Create(create),
        HostRequest::Delete(delete) => OrderRequest::Delete(delete),
        HostRequest::Cancel(cancel) => OrderRequest::Cancel(cancel),
        HostRequest::Sweep(sweep) => {
            return sweep_vendor(delivery, &plugin, &publisher, &settings, sweep).await;
        }
        HostRequest::DeleteOrphan(orphan) => {
            return delete_orphan(delivery, &plugin, &publisher, &settings, orphan).await;
        }
    };
    let attempt = attempt(&delivery);
    let order_id = request.order_id();
    let vendor = plugin.vendor().to_string();
    let span = tracing::info_span!(
        "request",
        %order_id,
        %vendor,
        attempt,
        traceparent = envelope.traceparent.as_deref().unwrap_or(""),
    );
    async move {
        let publish = async |kind: UpdateKind| -> anyhow::Result<()> {
            let update = OrderUpdate {
                order_id,
                vendor: vendor.clone(),
                at: chrono::Utc::now(),
                attempt,
                kind,
            };
            let key = update.routing_key();
            // Never more than the broker takes: an oversized update (a bug upstream let
            // plugin data through uncapped) becomes the order's `plugin_bad_answer`
            // failure, a result, instead of a refused publish that ends the session. Work
            // after a replaced progress event goes on, but order-api keeps the failure.
            let bounded = plugin_output::bounded_body(&HostMessage::OrderUpdate(update));
            let key = match bounded.replaced {
                None => key,
                Some(size) => {
                    tracing::error!(
                        size,
                        limit = plugin_output::MAX_UPDATE_BYTES,
                        "an update too large to publish; failing the order with plugin_bad_answer"
                    );
                    Topology::result_key(&vendor)
                }
            };
            let reply = Envelope::for_order(order_id, envelope.traceparent.clone());
            publisher
                .publish(&key, &reply, &bounded.body)
                .await
                .with_context(|| format!("publishing {key} for order {order_id}"))
        };
        let outcome = match &request {
            OrderRequest::Create(create) => 'create: {
                tracing::info!("creating server");
                let lease = leases.acquire(&settings, &plugin, order_id).await?;
                let created = provision::create(&plugin, create).await;
                lease.release().await;
                let (failure, server) = match created {
                    Ok(server) => {
                        tracing::info!(vendor_id = %server.vendor_id, "vendor accepted the server");
                        // A server that runs already needs no progress event: its `Active`
                        // is the only result (one persistent message fewer per order).
                        if server.status != ServerStatus::Running {
                            publish(UpdateKind::Provisioning {
                                server: server.clone(),
                            })
                            .await?;
                        }
                        match provision::wait_until_running(&plugin, create, server, &settings.poll)
                            .await
                        {
                            // The vendor gave up placing it while it booted: the attempt
                            // failed as a create refused for capacity does, and is retried
                            // as one (the next attempt's lookup adopts what is left).
                            UpdateKind::Failed { fault, server } if fault.code == "no_capacity" => (
                                provision::CreateFailure {
                                    fault,
                                    retry_after: None,
                                },
                                server,
                            ),
                            done => break 'create done,
                        }
                    }
                    Err(failure) => (failure, None),
                };
                let next = after_failed_attempt(
                    &publisher,
                    &settings.retry,
                    &settings.topology,
                    &delivery,
                    &vendor,
                    order_id,
                    failure,
                )
                .await?;
                match next {
                    AfterFailure::Failed(fault) => UpdateKind::Failed { fault, server },
                    AfterFailure::Retried { fault, delay_ms } => {
                        publish(UpdateKind::Retrying {
                            fault,
                            retry_in_ms: delay_ms,
                        })
                        .await?;
                        delivery
                            .ack(BasicAckOptions::default())
                            .await
                            .context("acking the request after queueing its retry")?;
                        return Ok(());
                    }
                }
            }
            OrderRequest::Delete(delete) => {
                tracing::info!(vendor_id = %delete.server.vendor_id, "deleting server");
                provision::delete(&plugin, delete, &settings.poll).await
            }
            OrderRequest::Cancel(cancel) => 'cancel: {
                tracing::info!("cancelling: looking for the order's server");
                // A passing fault in the lookup or the delete sends the whole cancel to a
                // delay queue, on the clean-up's budget: the next run looks again.
                let (failure, server) =
                    match find_under_lease(&plugin, &settings, &leases, order_id).await? {
                        Err(failure) => (failure, None),
                        Ok(found) => {
                            let adopt = cancel.adopt_running;
                            match provision::cancel(&plugin, order_id, found, adopt, &settings.poll)
                                .await
                            {
                                UpdateKind::CancelFailed { fault, server } if fault.retryable => (
                                    provision::CreateFailure {
                                        fault,
                                        retry_after: None,
                                    },
                                    server,
                                ),
                                done => break 'cancel done,
                            }
                        }
                    };
                let next = after_failed_attempt(
                    &publisher,
                    &settings.cleanup_retry,
                    &settings.topology,
                    &delivery,
                    &vendor,
                    order_id,
                    failure,
                )
                .await?;
                match next {
                    AfterFailure::Failed(fault) => UpdateKind::CancelFailed { fault, server },
                    // News for order-api (and its watchdog): the cancel waits for its retry.
                    AfterFailure::Retried { fault, .. } => {
                        publish(UpdateKind::CancelFailed { fault, server }).await?;
                        delivery
                            .ack(BasicAckOptions::default())
                            .await
                            .context("acking the cancel after queueing its retry")?;
                        return Ok(());
                    }
                }
            }
        };
        match &outcome {
            UpdateKind::Active { server } => {
                tracing::info!(vendor_id = %server.vendor_id, ipv4 = ?server.ipv4, "server running")
            }
            UpdateKind::Deleted { server } => {
                tracing::info!(vendor_id = %server.vendor_id, "server deleted")
            }
            UpdateKind::Adopted { server } => {
                tracing::info!(vendor_id = %server.vendor_id, "found running: kept for the order to adopt")
            }
            UpdateKind::Cancelled { server } => {
                tracing::info!(vendor_id = ?server.as_ref().map(|s| &s.vendor_id), "order cancelled")
            }
            UpdateKind::Failed { fault, .. }
            | UpdateKind::DeleteFailed { fault }
            | UpdateKind::CancelFailed { fault, .. } => {
                tracing::warn!(code = %fault.code, "request failed: {}", fault.message)
            }
            UpdateKind::Provisioning { .. } | UpdateKind::Retrying { .. } => {}
        }
        publish(outcome).await?;
        delivery
            .ack(BasicAckOptions::default())
            .await
            .context("acking the request")?;
        Ok(())
    }
    .instrument(span)
    .await
}

/// Looks for the server an order's create made (by its idempotency key), under the order's
/// create lease: a create of this order running on another host finishes first, so its server
/// is found.
async fn find_under_lease(
    plugin: &Plugin,
    settings: &WorkerSettings,
    leases: &SessionLeases,
    order_id: uuid::Uuid,
) -> anyhow::Result<Result<Option<ServerInfo>, provision::CreateFailure>> {
    let lease = leases.acquire(settings, plugin, order_id).await?;
    let found = provision::find_for_cancel(plugin, order_id).await;
    lease.release().await;
    Ok(found)
}

/// A request about one order.
enum OrderRequest {
    Create(ProvisionRequest),
    Delete(DeleteRequest),
    Cancel(CancelRequest),
}

impl OrderRequest {
    fn order_id(&self) -> uuid::Uuid {
        match self {
            OrderRequest::Create(create) => create.order_id,
            OrderRequest::Delete(delete) => delete.order_id,
            OrderRequest::Cancel(cancel) => cancel.order_id,
        }
    }
}

/// The largest inventory sent as one message (RabbitMQ 4 refuses messages above 16 MiB by
/// default).
const MAX_INVENTORY_BYTES: usize = 8 * 1024 * 1024;

/// The orphan sweep's listing: asks the plugin for every server carrying our key and
/// publishes the inventory (confirmed) before acking.
async fn sweep_vendor(
    delivery: Delivery,
    plugin: &Plugin,
    publisher: &Publisher,
    settings: &WorkerSettings,
    sweep: SweepRequest,
) -> anyhow::Result<()> {
    let listing = provision::list(plugin).await;
    match &listing {
        Listing::Listed { servers } => {
            tracing::info!(vendor = plugin.vendor(), sweep_id = %sweep.sweep_id, servers = servers.len(), "listed the vendor's servers")
        }
        Listing::Unsupported { reason } => {
            tracing::warn!(vendor = plugin.vendor(), sweep_id = %sweep.sweep_id, "cannot sweep: {reason}")
        }
        Listing::Failed { fault } => {
            tracing::warn!(vendor = plugin.vendor(), sweep_id = %sweep.sweep_id, code = %fault.code, "listing failed: {}", fault.message)
        }
    }
    let mut message = HostMessage::Inventory(VendorInventory {
        sweep_id: sweep.sweep_id,
        vendor: plugin.vendor().to_string(),
        host_id: settings.host_id.clone(),
        at: chrono::Utc::now(),
        listing,
    });
    // One message carries the inventory: one too large for the broker would fail the
    // publish, end the session and come back for ever. Say so instead.
    let size = encode(&message).len();
    if size > MAX_INVENTORY_BYTES
        && let HostMessage::Inventory(inventory) = &mut message
    {
        tracing::warn!(
            vendor = plugin.vendor(),
            size,
            "the inventory is too large to send"
        );
        inventory.listing = Listing::Failed {
            fault: Fault {
                code: "inventory_too_large".into(),
                message: format!(
                    "the listing is {size} bytes, more than one message may carry \
                     ({MAX_INVENTORY_BYTES})"
                ),
                retryable: false,
            },
        };
    }
    publish_host_message(publisher, &Topology::result_key(plugin.vendor()), &message).await?;
    delivery
        .ack(BasicAckOptions::default())
        .await
        .context("acking the sweep request")?;
    Ok(())
}

/// Deletes a server the sweep found no order owns and publishes how it went.
async fn delete_orphan(
    delivery: Delivery,
    plugin: &Plugin,
    publisher: &Publisher,
    settings: &WorkerSettings,
    orphan: OrphanDeleteRequest,
) -> anyhow::Result<()> {
    let vendor_id = &orphan.server.vendor_id;
    tracing::warn!(vendor = plugin.vendor(), %vendor_id, idempotency_key = %orphan.idempotency_key, "deleting an orphan server");
    let order_id = orphan.idempotency_key.parse().ok();
    let outcome =
        provision::delete_and_wait(plugin, order_id, &orphan.server, &settings.poll).await;
    if let Err(fault) = &outcome {
        tracing::warn!(vendor = plugin.vendor(), %vendor_id, code = %fault.code, "deleting the orphan failed: {}", fault.message);
    }
    let message = HostMessage::OrphanDeleted(OrphanDeleted {
        vendor: plugin.vendor().to_string(),
        vendor_id: vendor_id.clone(),
        at: chrono::Utc::now(),
        fault: outcome.err(),
    });
    publish_host_message(publisher, &Topology::result_key(plugin.vendor()), &message).await?;
    delivery
        .ack(BasicAckOptions::default())
        .await
        .context("acking the orphan delete")?;
    Ok(())
}

/// What follows a failed create.
enum AfterFailure {
    /// The request went to a delay queue (confirmed); the order waits for the next attempt.
    Retried {
        /// The fault of the failed attempt.
        fault: Fault,
        /// The delay queue's delay.
        delay_ms: u64,
    },
    /// The order fails with this fault (final, or the retry budget is spent).
    Failed(Fault),
}

/// Decides about a failed create (on the create's budget) or cancel (on the clean-up's): a
/// passing fault within `policy`'s budget sends the request to a delay queue; anything else
/// fails it.
async fn after_failed_attempt(
    publisher: &Publisher,
    policy: &RetryPolicy,
    topology: &Topology,
    delivery: &Delivery,
    vendor: &str,
    order_id: uuid::Uuid,
    failure: provision::CreateFailure,
) -> anyhow::Result<AfterFailure> {
    if !failure.fault.retryable {
        return Ok(AfterFailure::Failed(failure.fault));
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    let state = RetryState::of(&delivery.properties, now_ms);
    let decision = policy.decide(state, failure.retry_after, now_ms, rand::random());
    let delay_ms = match decision {
        Decision::Retry { delay_ms } => delay_ms,
        Decision::GiveUp { reason } => {
            return Ok(AfterFailure::Failed(Fault {
                message: format!("{} ({reason})", failure.fault.message),
                ..failure.fault
            }));
        }
    };
    tracing::warn!(
        code = %failure.fault.code,
        delay_ms,
        "attempt failed, retrying: {}",
        failure.fault.message
    );
    publisher
        .publish_to(
            &topology.retry_exchange(),
            &Topology::request_key(vendor),
            retry_properties(topology, &delivery.properties, state, delay_ms),
            &delivery.data,
        )
        .await
        .with_context(|| format!("sending order {order_id} to the retry queue"))?;
    Ok(AfterFailure::Retried {
        fault: failure.fault,
        delay_ms,
    })
}

/// Sends a poison request to `provision.dead` with the reason.
async fn dead_letter(
    publisher: &Publisher,
    settings: &WorkerSettings,
    vendor: &str,
    delivery: &Delivery,
    reason: &str,
) -> anyhow::Result<()> {
    let queue = settings.topology.request_queue(vendor);
    publisher
        .dead_letter(&settings.topology, &queue, delivery, reason)
        .await
        .context("dead-lettering a request")
}
