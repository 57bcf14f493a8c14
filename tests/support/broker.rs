//! The RabbitMQ the tests use: this machine's broker, held shared by every stack or alone
//! by one that stops it, `rabbitmqctl`, queue depths, and deleting a stack's queues and
//! exchanges.

use std::sync::{Arc, LazyLock};

use anyhow::{Context, bail};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use provisioner_contract::Topology;
use tokio::process::Command;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::processes::output_of_success;

/// The broker every test uses.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Fails the test, saying what to start, when RabbitMQ does not answer.
pub async fn require_rabbitmq() -> Connection {
    match Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
        Ok(connection) => connection,
        Err(error) => panic!(
            "RabbitMQ is not reachable at {AMQP_URL} ({error}). Start it with \
             `rabbitmq-server -detached` and run the tests again."
        ),
    }
}

/// Every stack holds the broker shared; a stack that stops it holds it alone.
static BROKER: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// Holds the broker shared (no test stops it meanwhile) for a test that uses it without a
/// [`Stack`](crate::Stack); the guard lets go when dropped.
pub async fn hold_broker_shared() -> OwnedRwLockReadGuard<()> {
    BROKER.clone().read_owned().await
}

/// A stack's hold on the broker: shared, or alone (then it may stop it).
pub(crate) struct BrokerHold {
    exclusive: bool,
    _shared: Option<OwnedRwLockReadGuard<()>>,
    _alone: Option<OwnedRwLockWriteGuard<()>>,
}

impl BrokerHold {
    /// Waits for the broker: alone when `exclusive`, else shared.
    pub(crate) async fn take(exclusive: bool) -> Self {
        if exclusive {
            BrokerHold {
                exclusive: true,
                _shared: None,
                _alone: Some(BROKER.clone().write_owned().await),
            }
        } else {
            BrokerHold {
                exclusive: false,
                _shared: Some(BROKER.clone().read_owned().await),
                _alone: None,
            }
        }
    }

    /// Stops the broker's application until the returned outage is ended; only a hold
    /// taken alone may.
    pub(crate) async fn stop_broker(&self) -> anyhow::Result<BrokerOutage> {
        if !self.exclusive {
            bail!("only a stack started with exclusive_broker may stop the broker");
        }
        let outage = BrokerOutage { ended: false };
        rabbitmqctl(&["stop_app"]).await?;
        Ok(outage)
    }
}

/// A broker outage a test made: [`BrokerOutage::end`] starts it again; dropping it
/// unended (a failed test) starts it too, so other tests find it up.
pub struct BrokerOutage {
    ended: bool,
}

impl BrokerOutage {
    /// Starts the broker's application again and waits until it serves.
    pub async fn end(mut self) -> anyhow::Result<()> {
        self.ended = true;
        rabbitmqctl(&["start_app"]).await?;
        rabbitmqctl(&["await_startup"]).await
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        if !self.ended {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["start_app"])
                .status();
        }
    }
}

/// Runs `rabbitmqctl` (this machine's broker only); fails with its output.
pub async fn rabbitmqctl(arguments: &[&str]) -> anyhow::Result<()> {
    output_of_success(
        Command::new("rabbitmqctl").args(arguments),
        &format!("rabbitmqctl {}", arguments.join(" ")),
        "running rabbitmqctl (tests that stop the broker need it on this machine)",
    )
    .await
    .map(drop)
}

/// How many messages wait (ready) in `queue`.
pub async fn message_count(channel: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    provisioner_contract::amqp::ready_messages(channel, queue)
        .await
        .with_context(|| format!("looking at queue {queue}"))
}

/// Deletes every queue and exchange of `topology` on this machine's broker.
pub async fn delete_topology(topology: &Topology, vendors: &[&str]) {
    delete_topology_at(AMQP_URL, topology, vendors).await
}

/// Deletes every queue and exchange of `topology` on the broker at `urls` (an `AMQP_URL`:
/// one URL or a cluster's list, of which the first that answers is used).
pub async fn delete_topology_at(urls: &str, topology: &Topology, vendors: &[&str]) {
    let mut connected = None;
    for url in urls.split(',').map(str::trim) {
        if let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await {
            connected = Some(connection);
            break;
        }
    }
    let Some(connection) = connected else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in topology.queues(vendors) {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in topology.exchanges() {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "cleaned up".into()).await;
}
