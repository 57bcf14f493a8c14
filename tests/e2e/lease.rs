//! The create lease (`provisioner_host::worker::lease`) against the real broker: one holder
//! per order across hosts, turns within a host, a dead holder's lease free again, and a
//! lock queue that vanished declared again. Each "host" is a `Leases` with its own
//! connection, as two host processes have.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::Connection;
use lapin::options::QueueDeleteOptions;
use provisioner_contract::{LEASE_SHARDS, Topology};
use provisioner_host::worker::lease::{Lease, Leases};
use provisioner_tests::{hold_broker_shared, require_rabbitmq};
use uuid::Uuid;

/// The plugins' default call time-out, as the host passes it.
const HOLDER_GRACE: Duration = Duration::from_secs(30);

/// How long a waiting acquire is watched to see that it really waits.
const WAITS_AT_LEAST: Duration = Duration::from_millis(600);

/// How long a free lease may take to come.
const COMES_WITHIN: Duration = Duration::from_secs(10);

/// A new order id whose lock queue is shard `shard`.
fn order_in_shard(shard: u32) -> Uuid {
    let mask = u128::from(LEASE_SHARDS) - 1;
    Uuid::from_u128((Uuid::new_v4().as_u128() & !mask) | u128::from(shard))
}

/// Two hosts' connections on a topology of this test's own, holding the broker shared.
struct TwoHosts {
    topology: Topology,
    a: Arc<Connection>,
    b: Arc<Connection>,
    _broker: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl TwoHosts {
    async fn connect() -> Self {
        let _broker = hold_broker_shared().await;
        let id = Uuid::new_v4().simple().to_string();
        Self {
            _broker,
            topology: Topology::with_prefix(format!("test-{}.", &id[..12])),
            a: Arc::new(require_rabbitmq().await),
            b: Arc::new(require_rabbitmq().await),
        }
    }

    /// Deletes the lock queues of `orders`.
    async fn cleanup(self, orders: &[Uuid]) -> anyhow::Result<()> {
        let channel = self.b.create_channel().await?;
        for &order in orders {
            let queue = self.topology.lease_queue(order);
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

/// Host A takes the lease of `order` with `host_a`, then a second host starts taking it in a
/// task of its own ([`acquire_in_task`]); checks that one still waits after a while, saying
/// `if_taken` if not. Host A's lease and the waiting task.
async fn held_by_a_awaited_by_b(
    hosts: &TwoHosts,
    host_a: &Leases,
    order: Uuid,
    if_taken: &str,
) -> anyhow::Result<(
    Lease,
    tokio::task::JoinHandle<anyhow::Result<(Lease, Arc<Connection>)>>,
)> {
    let held = host_a
        .acquire(&hosts.a, &hosts.topology, order, HOLDER_GRACE)
        .await?;
    let host_b = Arc::new(Leases::default());
    let waiting = acquire_in_task(host_b, hosts.b.clone(), hosts.topology.clone(), order);
    tokio::time::sleep(WAITS_AT_LEAST).await;
    assert!(!waiting.is_finished(), "{if_taken}");
    Ok((held, waiting))
}

/// Takes a lease in a task of its own, so the test can watch whether it waits.
fn acquire_in_task(
    leases: Arc<Leases>,
    connection: Arc<Connection>,
    topology: Topology,
    order: Uuid,
) -> tokio::task::JoinHandle<anyhow::Result<(Lease, Arc<Connection>)>> {
    tokio::spawn(async move {
        let lease = leases
            .acquire(&connection, &topology, order, HOLDER_GRACE)
            .await?;
        Ok((lease, connection))
    })
}

/// Waits for a lease taken with [`acquire_in_task`].
async fn lease_comes(
    task: tokio::task::JoinHandle<anyhow::Result<(Lease, Arc<Connection>)>>,
) -> anyhow::Result<(Lease, Arc<Connection>)> {
    tokio::time::timeout(COMES_WITHIN, task)
        .await
        .context("a free lease did not come")?
        .context("the acquiring task panicked")?
}

#[tokio::test]
async fn a_second_host_waits_for_the_holder_and_gets_the_lease_once_it_is_released()
-> anyhow::Result<()> {
    let hosts = TwoHosts::connect().await;
    let order = Uuid::new_v4();
    let host_a = Leases::default();
    let (held, waiting) = held_by_a_awaited_by_b(
        &hosts,
        &host_a,
        order,
        "a second host took the lease of an order while the first held it",
    )
    .await?;

    held.release().await;
    let (lease, _) = lease_comes(waiting).await?;
    lease.release().await;
    // And back: the first host can take it again once the second let go.
    host_a
        .acquire(&hosts.a, &hosts.topology, order, HOLDER_GRACE)
        .await?
        .release()
        .await;
    hosts.cleanup(&[order]).await
}

#[tokio::test]
async fn a_dead_hosts_lease_is_free_again() -> anyhow::Result<()> {
    let hosts = TwoHosts::connect().await;
    let order = Uuid::new_v4();
    let host_a = Leases::default();
    let (held, waiting) =
        held_by_a_awaited_by_b(&hosts, &host_a, order, "the lease was not held").await?;

    // The holder's connection ends without a word about the lease (a killed host).
    hosts.a.close(320, "host died".into()).await?;
    let (lease, _) = lease_comes(waiting).await?;
    lease.release().await;
    drop(held);
    hosts.cleanup(&[order]).await
}

#[tokio::test]
async fn orders_share_a_lease_only_within_a_shard() -> anyhow::Result<()> {
    let hosts = TwoHosts::connect().await;
    let (shard, other_shard) = (5, 6);
    let order = order_in_shard(shard);
    let neighbour = order_in_shard(shard);
    let elsewhere = order_in_shard(other_shard);
    assert_eq!(
        hosts.topology.lease_queue(order),
        hosts.topology.lease_queue(neighbour)
    );
    assert_ne!(
        hosts.topology.lease_queue(order),
        hosts.topology.lease_queue(elsewhere)
    );
    let host_a = Arc::new(Leases::default());
    let host_b = Arc::new(Leases::default());
    let held = host_a
        .acquire(&hosts.a, &hosts.topology, order, HOLDER_GRACE)
        .await?;

    // Another shard: at once, on either host.
    let (lease, _) = lease_comes(acquire_in_task(
        host_b.clone(),
        hosts.b.clone(),
        hosts.topology.clone(),
        elsewhere,
    ))
    .await?;
    lease.release().await;

    // The same shard waits, on the other host (the broker) and on this one (its own lock);
    // each waiter gives the lease back as soon as it has it.
    let take_and_give_back = |leases: Arc<Leases>, connection: Arc<Connection>| {
        let topology = hosts.topology.clone();
        tokio::spawn(async move {
            leases
                .acquire(&connection, &topology, neighbour, HOLDER_GRACE)
                .await?
                .release()
                .await;
            anyhow::Ok(())
        })
    };
    let other_host = take_and_give_back(host_b, hosts.b.clone());
    let same_host = take_and_give_back(host_a.clone(), hosts.a.clone());
    tokio::time::sleep(WAITS_AT_LEAST).await;
    assert!(
        !other_host.is_finished(),
        "another host shared a held shard"
    );
    assert!(
        !same_host.is_finished(),
        "two tasks of one host shared a shard"
    );

    held.release().await;
    for (waiter, task) in [("the other host", other_host), ("this host", same_host)] {
        tokio::time::timeout(COMES_WITHIN, task)
            .await
            .with_context(|| format!("{waiter} never got the released lease"))???;
    }
    hosts.cleanup(&[order, elsewhere]).await
}

#[tokio::test]
async fn a_lock_queue_that_vanished_is_declared_again() -> anyhow::Result<()> {
    let hosts = TwoHosts::connect().await;
    let order = Uuid::new_v4();
    let host_a = Leases::default();
    host_a
        .acquire(&hosts.a, &hosts.topology, order, HOLDER_GRACE)
        .await?
        .release()
        .await;

    // The queue expires (or an operator deletes it) while this host believes it exists.
    let channel = hosts.b.create_channel().await?;
    let queue = hosts.topology.lease_queue(order);
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;

    let lease = tokio::time::timeout(
        COMES_WITHIN,
        host_a.acquire(&hosts.a, &hosts.topology, order, HOLDER_GRACE),
    )
    .await
    .context("no lease after the lock queue vanished")??;
    lease.release().await;
    hosts.cleanup(&[order]).await
}
