//! One broker connection's life: wait for the topology order-api declares, consume every
//! served vendor's queue, announce the vendors, follow the plugin folder's changes, hand
//! each delivery to a task of its own; on shutdown, stop taking work and let in-flight work
//! finish within the grace period. `Ok` only on shutdown: an `Err` ends the session and the
//! worker reconnects.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::BasicNackOptions;
use provisioner_contract::{Publisher, Topology};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::consumers::Consumers;
use super::order::SessionLeases;
use super::result_batches::ResultBatcher;
use super::{WorkerSettings, announce, delivery};
use crate::plugin_folder::PluginSet;
use crate::runtime::Plugin;

/// The tasks of the deliveries in hand.
type InFlight = JoinSet<anyhow::Result<()>>;

/// One connection's life: declare, consume, announce, follow plugin changes; `Ok` only on
/// shutdown.
pub(super) async fn run(
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
    let results = ResultBatcher::start(publisher.clone(), settings.result_batch_max);
    let mut consumers = Consumers::new(connection, settings, plugins.clone());
    let mut current: PluginSet = plugins.borrow_and_update().clone();
    for plugin in current.values() {
        consumers.start(plugin).await?;
    }
    let mut announce = tokio::time::interval(settings.announce_interval);
    let mut in_flight = InFlight::new();
    let mut watching = true;

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = announce.tick() => announce::round(&publisher, settings, &current).await?,
            changed = plugins.changed(), if watching => {
                if changed.is_err() {
                    watching = false;
                    continue;
                }
                let next: PluginSet = plugins.borrow_and_update().clone();
                let change = PluginChange {
                    publisher: &publisher,
                    settings,
                    current: &current,
                    next: &next,
                };
                follow_plugin_change(&mut consumers, &change).await?;
                current = next;
            }
            Some((vendor, delivery)) = consumers.next_delivery() => {
                let plugin = current.get(&vendor);
                let work = Work { publisher: &publisher, results: &results, settings, leases };
                hand_out(delivery?, plugin, &mut in_flight, &work).await;
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                done.context("a provisioning task panicked")??;
            }
        }
    }

    shut_down(consumers, in_flight, publisher, settings).await;
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

/// A change of the plugin folder from `current` to `next`, and where order-api hears of it.
pub(super) struct PluginChange<'a> {
    pub(super) publisher: &'a Publisher,
    pub(super) settings: &'a WorkerSettings,
    pub(super) current: &'a PluginSet,
    pub(super) next: &'a PluginSet,
}

/// The plugin folder changed from `current` to `next`: removed vendors stop being served,
/// replaced plugins get their new in-flight budget, added ones are served, and order-api
/// hears of each.
async fn follow_plugin_change(
    consumers: &mut Consumers<'_>,
    change: &PluginChange<'_>,
) -> anyhow::Result<()> {
    stop_removed_and_update_replaced(consumers, change).await?;
    start_added(consumers, change).await?;
    announce::unavailable_changes(change).await
}

/// Stops serving the vendors `next` no longer has (withdrawn, with why if their plugin is
/// still there but cannot serve) and updates and announces those whose plugin was replaced.
async fn stop_removed_and_update_replaced(
    consumers: &mut Consumers<'_>,
    change: &PluginChange<'_>,
) -> anyhow::Result<()> {
    let (publisher, settings) = (change.publisher, change.settings);
    let (current, next) = (change.current, change.next);
    for (vendor, old) in current.iter() {
        match next.get(vendor) {
            None => {
                consumers.stop(vendor).await;
                let reason = next.unavailable().get(vendor);
                announce::withdraw_vendor(publisher, settings, vendor, reason).await?;
                tracing::info!(vendor, "stopped serving");
            }
            Some(new) if !Arc::ptr_eq(old, new) => {
                consumers.update(new).await?;
                announce::announce_vendor(publisher, settings, new).await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Serves and announces the vendors `next` has and `current` had not.
async fn start_added(
    consumers: &mut Consumers<'_>,
    change: &PluginChange<'_>,
) -> anyhow::Result<()> {
    for (vendor, plugin) in change.next.iter() {
        if !change.current.contains_key(vendor) {
            consumers.start(plugin).await?;
            announce::announce_vendor(change.publisher, change.settings, plugin).await?;
        }
    }
    Ok(())
}

/// What a delivery's task gets of the session.
struct Work<'a> {
    publisher: &'a Publisher,
    results: &'a ResultBatcher,
    settings: &'a Arc<WorkerSettings>,
    leases: &'a SessionLeases,
}

/// Hands a delivery to a task of its own, with the vendor's plugin in service now (a
/// replaced plugin serves new orders); one whose plugin was removed between the delivery and
/// now goes back to the queue for another host.
async fn hand_out(
    delivery: Delivery,
    plugin: Option<&Arc<Plugin>>,
    in_flight: &mut InFlight,
    work: &Work<'_>,
) {
    match plugin {
        Some(plugin) => {
            let task = delivery::handle(
                delivery,
                plugin.clone(),
                work.publisher.clone(),
                work.results.clone(),
                work.settings.clone(),
                work.leases.clone(),
            );
            in_flight.spawn(task);
        }
        None => {
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

/// Shutdown: stop taking work, let in-flight creations finish within the grace period;
/// whatever is left unacked goes back to the queue when the channels close.
async fn shut_down(
    mut consumers: Consumers<'_>,
    mut in_flight: InFlight,
    publisher: Publisher,
    settings: &WorkerSettings,
) {
    consumers.stop_all().await;
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
}
