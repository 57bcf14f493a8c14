//! The provisioner on the three-node RabbitMQ cluster of `scripts/rabbitmq-cluster.sh`
//! (started on first use): what losing a node does to the order path. The chaos run's
//! cluster mode (`chaos --cluster`) kills nodes under load; these tests pin single causes.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use provisioner_contract::{Envelope, LEASE_SHARDS, PublishError, Publisher, Topology};
use provisioner_tests::cluster::Cluster;
use provisioner_tests::{AMQP_URL, Stack, StackOptions};
use uuid::Uuid;

/// A create takes its order's lease on a lock queue, a classic queue that lives on the node
/// that declared it. With that node down the queue can be neither consumed nor declared
/// again: creates must still go on (before the fix, every create of such a shard ended the
/// host's broker session, over and over, so no order went `active` until the node came
/// back, and redeliveries counted towards the delivery limit).
#[tokio::test]
async fn creates_go_on_while_the_node_of_their_lock_queues_is_down() -> anyhow::Result<()> {
    let cluster = Cluster::hold().await?;
    let prefix = format!("test-{}.", &Uuid::new_v4().simple().to_string()[..12]);
    let topology = Topology::with_prefix(prefix.clone());
    // Every lock queue of this stack on node 3.
    let connection = Connection::connect(&Cluster::url(3), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    for shard in 0..LEASE_SHARDS {
        let queue = topology.lease_queue(Uuid::from_u128(u128::from(shard)));
        topology.declare_lease_queue(&channel, &queue).await?;
    }
    let _ = connection.close(200, "lock queues declared".into()).await;
    cluster.kill(3).await?;

    let stack = Stack::start(StackOptions {
        amqp_url: Some(Cluster::urls_from(1)),
        amqp_prefix: Some(prefix),
        ..StackOptions::default()
    })
    .await?;
    let mut ids = Vec::new();
    for index in 0..6 {
        ids.push(
            stack
                .order_at("hetzner", &format!("lockless-{index}"))
                .await?,
        );
    }
    for id in &ids {
        stack
            .wait_for_status(id, "active", Duration::from_secs(60))
            .await?;
    }
    let servers = stack.sim_servers().await?;
    assert_eq!(
        servers.len(),
        ids.len(),
        "one server per order: {servers:?}"
    );
    cluster.revive(3).await?;
    stack.cleanup().await;
    Ok(())
}

/// Quorum queues are made with `AMQP_QUORUM_GROUP_SIZE` replicas (3 by default), by
/// whichever program creates them.
#[tokio::test]
async fn quorum_queues_get_the_configured_number_of_replicas() -> anyhow::Result<()> {
    let cluster = Cluster::hold().await?;
    for (size, expected) in [(None, 3), (Some("2"), 2)] {
        let env: Vec<(String, String)> = size
            .map(|size| vec![("AMQP_QUORUM_GROUP_SIZE".to_string(), size.to_string())])
            .unwrap_or_default();
        let stack = Stack::start(StackOptions {
            amqp_url: Some(Cluster::urls_from(1)),
            api_env: env.clone(),
            host_env: env,
            ..StackOptions::default()
        })
        .await?;
        for queue in [
            stack.topology.results_queue(),
            stack.topology.request_queue("hetzner"),
            stack.topology.dead_letter_queue(),
        ] {
            assert_eq!(
                cluster.members(&queue).await?,
                (expected, Some(expected as i64)),
                "{queue}'s members and initial group size with AMQP_QUORUM_GROUP_SIZE {size:?}"
            );
        }
        stack.cleanup().await;
    }
    Ok(())
}

/// A broker whose queues an earlier version made (no initial group size) keeps them: the
/// programs start and orders flow, instead of every declaration being refused as
/// inequivalent.
#[tokio::test]
async fn queues_made_without_a_group_size_are_kept() -> anyhow::Result<()> {
    let prefix = format!("test-{}.", &Uuid::new_v4().simple().to_string()[..12]);
    let earlier = Topology::with_prefix(prefix.clone());
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default()).await?;
    earlier.declare_order_api(&connection).await?;
    earlier.declare_vendor(&connection, "hetzner").await?;
    let _ = connection.close(200, "declared as before".into()).await;
    let stack = Stack::start(StackOptions {
        amqp_prefix: Some(prefix),
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_at("hetzner", "kept-queues").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    stack.cleanup().await;
    Ok(())
}

/// The node both programs are on, which also leads the request and results queues, dies
/// while orders flow: the programs reconnect to another node, and their new publishing
/// channels first publish while the queues have no leader yet. RabbitMQ (3.10) nacks such
/// a publish and then every later one on that channel, even once a new leader is elected;
/// orders must still go through within seconds (before the fix, order-api retried on the
/// same channel, 1 s, 2 s, 4 s, … 30 s apart, for ever).
#[tokio::test]
async fn orders_go_through_when_their_node_and_queue_leaders_die() -> anyhow::Result<()> {
    let cluster = Cluster::hold().await?;
    let prefix = format!("test-{}.", &Uuid::new_v4().simple().to_string()[..12]);
    // Every queue of this stack led by node 1, where the programs connect first.
    let topology = Topology::with_prefix(prefix.clone()).with_quorum_group_size(3);
    let connection = Connection::connect(&Cluster::url(1), ConnectionProperties::default()).await?;
    topology.declare_order_api(&connection).await?;
    for vendor in ["hetzner", "digitalocean", "openstack"] {
        topology.declare_vendor(&connection, vendor).await?;
    }
    let _ = connection.close(200, "declared".into()).await;
    let stack = Stack::start(StackOptions {
        amqp_url: Some(Cluster::urls_from(1)),
        amqp_prefix: Some(prefix),
        ..StackOptions::default()
    })
    .await?;
    for queue in [topology.request_queue("hetzner"), topology.results_queue()] {
        assert_eq!(cluster.leader(&queue).await?, 1, "{queue}'s leader");
    }
    // Orders every 20 ms from before the kill until after it.
    let posting = async {
        let mut ids = Vec::new();
        for index in 0..100 {
            ids.push(
                stack
                    .order_at("hetzner", &format!("around-the-kill-{index}"))
                    .await?,
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        anyhow::Ok(ids)
    };
    let killing = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.kill(1).await
    };
    let (ids, ()) = tokio::try_join!(posting, killing)?;
    for id in &ids {
        stack
            .wait_for_status(id, "active", Duration::from_secs(20))
            .await?;
    }
    cluster.revive(1).await?;
    stack.cleanup().await;
    Ok(())
}

/// A publishing channel opened just after the node leading its queue died: its first
/// publishes meet a queue without a leader and are nacked, and RabbitMQ (3.10) goes on
/// nacking every later one on that channel, even once a new leader is elected. The
/// programs' publisher must get past that by itself (before the fix it was nacked for as
/// long as the channel lived: order-api's outbox relay retried on it for ever, 1 s to
/// 30 s apart, and the failover benchmark saw no order go through).
#[tokio::test]
async fn a_publisher_gets_past_nacks_after_its_queues_leader_died() -> anyhow::Result<()> {
    let cluster = Cluster::hold().await?;
    let prefix = format!("test-{}.", &Uuid::new_v4().simple().to_string()[..12]);
    let topology = Topology::with_prefix(prefix).with_quorum_group_size(3);
    let leader = Connection::connect(&Cluster::url(1), ConnectionProperties::default()).await?;
    topology.declare_order_api(&leader).await?;
    topology.declare_vendor(&leader, "nacked").await?;
    let connection = std::sync::Arc::new(
        Connection::connect(&Cluster::url(2), ConnectionProperties::default()).await?,
    );
    assert_eq!(cluster.leader(&topology.request_queue("nacked")).await?, 1);
    cluster.kill(1).await?;
    let publisher = Publisher::open(&connection, topology.requests_exchange()).await?;
    let key = Topology::request_key("nacked");
    let started = std::time::Instant::now();
    let mut nacks = 0;
    loop {
        // One try at a time (`publish` itself tries a nacked message again).
        let envelope = Envelope::for_order(Uuid::new_v4(), None);
        let confirm = publisher.send(&key, &envelope, b"{}").await?;
        match publisher.confirmed(confirm, &key).await {
            Ok(()) => break,
            Err(PublishError::Nacked) if started.elapsed() < Duration::from_secs(15) => {
                nacks += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!(
                "still refused {:?} after the leader died ({nacks} nacks): {error}",
                started.elapsed()
            ),
        }
    }
    eprintln!(
        "confirmed {:?} after the kill, {nacks} nacks before",
        started.elapsed()
    );
    cluster.revive(1).await?;
    provisioner_tests::delete_topology_at(&Cluster::urls_from(2), &topology, &["nacked"]).await;
    Ok(())
}
