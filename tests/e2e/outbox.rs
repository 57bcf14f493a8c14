//! The outbox keeps what the broker refuses: a request nobody can receive yet stays in the
//! outbox and goes out once a queue exists for it.

use std::time::{Duration, Instant};

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use provisioner_contract::{
    Envelope, HostMessage, HostRequest, Publisher, Topology, VendorAnnouncement, decode, encode,
};
use provisioner_tests::{Stack, StackOptions, require_rabbitmq};

/// An order for a vendor whose queue does not exist is accepted and waits (`pending`, with
/// the reason in its event log); once the queue is declared the relay delivers it.
#[tokio::test]
async fn unroutable_requests_wait_in_the_outbox_until_a_queue_exists() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let connection = std::sync::Arc::new(require_rabbitmq().await);
    announce_ghost(&stack, &connection).await?;
    let id = order_ghost(&stack, "boo").await?;

    // Refused by the broker (no queue bound): still pending, the reason recorded.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let order = stack.order(&id).await?;
        assert_eq!(order["status"], "pending", "{order}");
        let told = order["events"].as_array().into_iter().flatten().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("will retry"))
        });
        if told {
            break;
        }
        assert!(Instant::now() < deadline, "no retry event: {order}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The queue appears: the relay's next try delivers the request.
    let channel = connection.create_channel().await?;
    stack.topology.declare_vendor(&connection, "ghost").await?;
    channel.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = channel
        .basic_consume(
            stack.topology.request_queue("ghost").into(),
            "ghost-host".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let delivery = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::StreamExt::next(&mut consumer),
    )
    .await?
    .expect("a delivery")?;
    let (_, request): (Envelope, HostRequest) = decode(&delivery.properties, &delivery.data)?;
    assert_eq!(
        request.order_id().map(|id| id.to_string()).as_deref(),
        Some(id.as_str())
    );
    stack
        .wait_for_status(&id, "queued", Duration::from_secs(10))
        .await?;

    let queue = stack.topology.request_queue("ghost");
    let _ = channel
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}

/// Announces vendor `ghost` to `stack`'s order-api as a host would, one that has not
/// declared its queue (yet): orders for it are accepted, and no host takes them. The
/// publisher on the results exchange it used.
pub(crate) async fn announce_ghost(
    stack: &Stack,
    connection: &std::sync::Arc<lapin::Connection>,
) -> anyhow::Result<Publisher> {
    announce(
        stack,
        connection,
        VendorAnnouncement {
            vendor: "ghost".into(),
            display_name: "Ghost Cloud".into(),
            plugin_version: "0.0.1".into(),
            host_id: "test".into(),
            at: chrono::Utc::now(),
            catalogue: None,
        },
    )
    .await
}

/// Publishes `announcement` to `stack`'s order-api as a host would; the publisher on the
/// results exchange it used.
pub(crate) async fn announce(
    stack: &Stack,
    connection: &std::sync::Arc<lapin::Connection>,
    announcement: VendorAnnouncement,
) -> anyhow::Result<Publisher> {
    let publisher = Publisher::open(connection, stack.topology.results_exchange()).await?;
    let key = Topology::announce_key(&announcement.vendor);
    let envelope = Envelope {
        message_id: uuid::Uuid::new_v4(),
        correlation_id: None,
        traceparent: None,
    };
    publisher
        .publish(
            &key,
            &envelope,
            &encode(&HostMessage::VendorAnnounced(announcement)),
        )
        .await?;
    Ok(publisher)
}

/// Orders a server named `name` at `ghost` ([`announce_ghost`]), once order-api accepts it
/// (it has heard the announcement): the order's id.
pub(crate) async fn order_ghost(stack: &Stack, name: &str) -> anyhow::Result<String> {
    let body =
        format!(r#"{{"vendor":"ghost","region":"r","size":"s","image":"i","name":"{name}"}}"#);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, _, order) = stack.post_order(&body).await?;
        if status == 202 {
            return Ok(order["id"].as_str().unwrap_or_default().to_string());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "ghost was never accepted: {order}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Only the first publish of an order's first creation request goes out marked lease-free:
/// the read that takes it for publishing clears the mark, so when that publish is retried
/// (its channel broke, its confirm was lost, its relay died) the copy goes out unmarked, and
/// a request queued later (the watchdog's, a move's) never has it. Two readers at once (two
/// order-apis on PostgreSQL; on SQLite, where one runs, a stray second relay) get the mark
/// once between them.
#[tokio::test]
async fn only_the_first_publish_of_a_first_create_is_marked_lease_free() -> anyhow::Result<()> {
    let earlier = provisioner_tests::EarlierDatabase::migrated_below(16).await?;
    let store = order_api::store::Store::connect(&earlier.url).await?;
    let other = order_api::store::Store::connect(&earlier.url).await?;
    let (order, request) = crate::postgres::new_order();
    let first = order_api::store::OutboxMessage {
        lease_free: true,
        ..request.clone()
    };
    store
        .insert_order(&order, &[], std::slice::from_ref(&first), None)
        .await?;
    let (mine, theirs) = tokio::join!(store.due_outbox(10), other.due_outbox(10));
    let due: Vec<_> = mine?.into_iter().chain(theirs?).collect();
    assert!(!due.is_empty());
    assert!(
        due.iter()
            .all(|message| message.message_id == first.message_id)
    );
    assert_eq!(
        due.iter().filter(|message| message.lease_free).count(),
        1,
        "the first read carries the mark, once: {due:?}"
    );
    // The publish did not go through: the message is due again, unmarked.
    store.release(&due).await?;
    let again = store.due_outbox(10).await?;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, first.message_id);
    assert!(!again[0].lease_free, "a second publish is marked too");
    store.release(&again).await?;
    assert!(!store.due_outbox(10).await?[0].lease_free);
    drop((store, other));
    earlier.remove().await?;
    Ok(())
}

/// The relay's mark of a batch of published requests: every order still `pending` becomes
/// `queued` with one event, also one with two messages in the batch; one a host's result
/// moved on already keeps its status and gets no event; marking the same messages again
/// changes nothing. Through the store, on the suite's store.
#[tokio::test]
async fn published_requests_move_their_pending_orders_once() -> anyhow::Result<()> {
    use order_api::lifecycle::OrderStatus;
    use provisioner_contract::{OrderUpdate, ServerInfo, ServerStatus, UpdateKind};

    let database = provisioner_tests::EarlierDatabase::migrated_below(i64::MAX).await?;
    let store = order_api::store::Store::connect(&database.url).await?;
    let mut published = Vec::new();
    let mut orders = Vec::new();
    for _ in 0..3 {
        let (order, request) = crate::postgres::new_order();
        store
            .insert_order(&order, &[], std::slice::from_ref(&request), None)
            .await?;
        orders.push(order.id);
        published.push(request);
    }
    // The second order's request went out twice (a retried publish): both confirmed together.
    published.push(order_api::store::OutboxMessage {
        message_id: uuid::Uuid::new_v4(),
        ..published[1].clone()
    });
    // The third's result came first.
    store
        .apply_update(&OrderUpdate {
            order_id: orders[2],
            vendor: "hetzner".into(),
            at: chrono::Utc::now(),
            attempt: 1,
            kind: UpdateKind::Active {
                server: ServerInfo {
                    vendor_id: "7".into(),
                    name: "claimed".into(),
                    status: ServerStatus::Running,
                    ipv4: None,
                    ipv6: None,
                },
            },
        })
        .await?;
    let published_events = |events: &[order_api::store::OrderEvent]| {
        events
            .iter()
            .filter(|event| event.message.starts_with("creation request published"))
            .count()
    };
    for round in 0..2 {
        store.mark_published(&published).await?;
        for (n, &id) in orders.iter().enumerate() {
            let (order, events) = store.order(id).await?.expect("the order");
            let (status, events_of_publish) = if n < 2 {
                (OrderStatus::Queued, 1)
            } else {
                (OrderStatus::Active, 0)
            };
            assert_eq!(order.status, status, "order {n}, round {round}");
            assert_eq!(
                published_events(&events),
                events_of_publish,
                "order {n}, round {round}: {events:?}"
            );
        }
    }
    assert!(
        store.due_outbox(10).await?.is_empty(),
        "the outbox is empty"
    );
    drop(store);
    database.remove().await?;
    Ok(())
}
