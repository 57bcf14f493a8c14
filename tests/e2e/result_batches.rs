//! Results in batches (`provisioner_host::worker::result_batches`): results handed over
//! together leave as one message per vendor, within the count and byte limits, a lone one as
//! a plain update; and order-api applies every update of a batch. The batcher against the
//! real broker on an exchange of the test's own; the applying through a whole stack.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::Connection;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
};
use lapin::types::FieldTable;
use provisioner_contract::topology::declare_exclusive_queue;
use provisioner_contract::{
    Envelope, Fault, HostMessage, OrderUpdate, OrderUpdateBatch, Publisher, ServerInfo,
    ServerStatus, Topology, UpdateKind, decode, encode,
};
use provisioner_host::worker::result_batches::{MAX_BATCH_BYTES, ResultBatcher};
use provisioner_tests::{Stack, StackOptions, hold_broker_shared, require_rabbitmq};
use uuid::Uuid;

/// How long a message may take to arrive.
const ARRIVES_WITHIN: Duration = Duration::from_secs(10);

/// An exchange of the test's own and a queue taking everything published to it.
struct Results {
    connection: Arc<Connection>,
    exchange: String,
    messages: lapin::Consumer,
    _broker: tokio::sync::OwnedRwLockReadGuard<()>,
}

impl Results {
    async fn open() -> anyhow::Result<Self> {
        let _broker = hold_broker_shared().await;
        let connection = Arc::new(require_rabbitmq().await);
        let channel = connection.create_channel().await?;
        let id = Uuid::new_v4().simple().to_string();
        let exchange = format!("test-{}.results", &id[..12]);
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    auto_delete: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let queue = format!("test-{}.taken", &id[..12]);
        declare_exclusive_queue(&channel, &queue, FieldTable::default()).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let messages = channel
            .basic_consume(
                queue.as_str().into(),
                "test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(Self {
            connection,
            exchange,
            messages,
            _broker,
        })
    }

    async fn batcher(&self, max_results: usize) -> anyhow::Result<ResultBatcher> {
        let publisher = Publisher::open(&self.connection, self.exchange.as_str()).await?;
        Ok(ResultBatcher::start(publisher, max_results))
    }

    /// The next message: its routing key, envelope and content.
    async fn next(&mut self) -> anyhow::Result<(String, Envelope, HostMessage)> {
        let delivery = tokio::time::timeout(ARRIVES_WITHIN, self.messages.next())
            .await
            .context("no message came")?
            .context("the consumer ended")??;
        let (envelope, message) = decode(&delivery.properties, &delivery.data)?;
        Ok((delivery.routing_key.to_string(), envelope, message))
    }

    /// The order ids of the next message's updates, and whether it was a batch.
    async fn next_orders(&mut self) -> anyhow::Result<(String, Vec<Uuid>, bool)> {
        let (key, _, message) = self.next().await?;
        Ok(match message {
            HostMessage::OrderUpdate(update) => (key, vec![update.order_id], false),
            HostMessage::OrderUpdates(batch) => (
                key,
                batch.updates.iter().map(|update| update.order_id).collect(),
                true,
            ),
            other => anyhow::bail!("not an update: {other:?}"),
        })
    }

    async fn close(self) {
        if let Ok(channel) = self.connection.create_channel().await {
            let _ = channel
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}

/// A running server whose name is `name`.
fn running(name: String) -> ServerInfo {
    ServerInfo {
        vendor_id: "4711".into(),
        name,
        status: ServerStatus::Running,
        ipv4: Some("203.0.113.7".into()),
        ipv6: None,
    }
}

/// `vendor`'s result that order `order_id`'s server runs, named `name`.
fn active(vendor: &str, order_id: Uuid, name: String) -> OrderUpdate {
    OrderUpdate {
        order_id,
        vendor: vendor.into(),
        at: chrono::Utc::now(),
        attempt: 1,
        kind: UpdateKind::Active {
            server: running(name),
        },
    }
}

/// Hands `updates` to `batcher` all at once, as order tasks finishing together do: on the
/// test's one thread every hand-over happens before the publishing task next runs. Waits for
/// every confirm.
async fn hand_over(batcher: &ResultBatcher, updates: &[OrderUpdate]) -> anyhow::Result<()> {
    let publishes = updates.iter().map(|update| {
        let envelope = Envelope::for_order(update.order_id, Some("00-trace-span-01".into()));
        let body = encode(&HostMessage::OrderUpdate(update.clone()));
        batcher.publish(update.routing_key(), envelope, update.clone(), body)
    });
    for outcome in futures_util::future::join_all(publishes).await {
        outcome?;
    }
    Ok(())
}

/// Ten results ready at once go as one message, in the order they were handed over; a
/// result alone goes as a plain update with its own envelope, as before batches.
#[tokio::test]
async fn results_ready_together_go_as_one_message() -> anyhow::Result<()> {
    let mut results = Results::open().await?;
    let batcher = results.batcher(64).await?;
    let orders: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    let updates: Vec<OrderUpdate> = orders
        .iter()
        .map(|&id| active("hetzner", id, format!("web-{id}")))
        .collect();
    hand_over(&batcher, &updates).await?;
    let (key, envelope, message) = results.next().await?;
    assert_eq!(key, Topology::result_key("hetzner"));
    assert_eq!(envelope.correlation_id, None, "about no one order");
    assert_eq!(
        message,
        HostMessage::OrderUpdates(OrderUpdateBatch { updates }),
        "one message with the ten results, in order"
    );

    let alone = active("hetzner", Uuid::new_v4(), "alone".into());
    hand_over(&batcher, std::slice::from_ref(&alone)).await?;
    let (key, envelope, message) = results.next().await?;
    assert_eq!(key, Topology::result_key("hetzner"));
    assert_eq!(envelope.correlation_id, Some(alone.order_id));
    assert_eq!(envelope.traceparent.as_deref(), Some("00-trace-span-01"));
    assert_eq!(message, HostMessage::OrderUpdate(alone));
    results.close().await;
    Ok(())
}

/// A batch holds at most its count and [`MAX_BATCH_BYTES`]; the rest go in the next ones,
/// nothing left behind; one vendor's results never ride in another's message; with a
/// count of 1 every result goes alone.
#[tokio::test]
async fn batches_keep_their_limits_and_their_vendor() -> anyhow::Result<()> {
    let mut results = Results::open().await?;

    let batcher = results.batcher(4).await?;
    let updates: Vec<OrderUpdate> = (0..10)
        .map(|n| active("hetzner", Uuid::from_u128(n), format!("web-{n}")))
        .collect();
    hand_over(&batcher, &updates).await?;
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let (_, orders, _) = results.next_orders().await?;
        sizes.push(orders.len());
        seen.extend(orders);
    }
    assert_eq!(sizes, [4, 4, 2], "at most four a message");
    assert_eq!(seen, updates.iter().map(|u| u.order_id).collect::<Vec<_>>());

    // Five results of nearly a quarter of the byte limit each: four fit, the fifth waits.
    let large = MAX_BATCH_BYTES / 4 - 2_000;
    let updates: Vec<OrderUpdate> = (0..5)
        .map(|n| active("hetzner", Uuid::from_u128(100 + n), "x".repeat(large)))
        .collect();
    let batcher = results.batcher(64).await?;
    hand_over(&batcher, &updates).await?;
    let (_, first, _) = results.next_orders().await?;
    let (_, second, _) = results.next_orders().await?;
    assert_eq!((first.len(), second.len()), (4, 1), "bytes bound the batch");

    // Two vendors' results handed over together: one message each.
    let mixed: Vec<OrderUpdate> = (0..6)
        .map(|n| {
            let vendor = if n % 2 == 0 {
                "hetzner"
            } else {
                "digitalocean"
            };
            active(vendor, Uuid::from_u128(200 + n), format!("web-{n}"))
        })
        .collect();
    hand_over(&batcher, &mixed).await?;
    for _ in 0..2 {
        let (key, orders, batch) = results.next_orders().await?;
        let vendor = key.trim_start_matches("result.");
        let expected: Vec<Uuid> = mixed
            .iter()
            .filter(|u| u.vendor == vendor)
            .map(|u| u.order_id)
            .collect();
        assert!(batch, "{key}");
        assert_eq!(orders, expected, "{key} carries its vendor's results only");
    }

    let alone = results.batcher(1).await?;
    hand_over(&alone, &updates[..3]).await?;
    for update in &updates[..3] {
        let (_, orders, batch) = results.next_orders().await?;
        assert_eq!((orders, batch), (vec![update.order_id], false));
    }
    results.close().await;
    Ok(())
}

/// order-api applies each update of a batch as it applies one alone: two orders become
/// `active` with their servers, a third `failed` with its fault, each with its event.
/// The orders are for a vendor a test "host" announced without a queue, so no host takes
/// them and the batch is their only news.
#[tokio::test]
async fn order_api_applies_every_update_of_a_batch() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let connection = Arc::new(require_rabbitmq().await);
    let publisher = crate::outbox::announce_ghost(&stack, &connection).await?;
    let mut orders = Vec::new();
    for n in 0..3 {
        let id = crate::outbox::order_ghost(&stack, &format!("batch-{n}")).await?;
        orders.push(id.parse::<Uuid>()?);
    }
    let fault = Fault {
        code: "invalid_request".into(),
        message: "no such size".into(),
        retryable: false,
    };
    let failed = OrderUpdate {
        kind: UpdateKind::Failed {
            fault,
            server: None,
        },
        ..active("ghost", orders[2], String::new())
    };
    let batch = HostMessage::OrderUpdates(OrderUpdateBatch {
        updates: vec![
            active("ghost", orders[0], "batch-0".into()),
            active("ghost", orders[1], "batch-1".into()),
            failed,
        ],
    });
    let envelope = Envelope {
        message_id: Uuid::new_v4(),
        correlation_id: None,
        traceparent: None,
    };
    publisher
        .publish(&Topology::result_key("ghost"), &envelope, &encode(&batch))
        .await?;
    for (n, id) in orders[..2].iter().enumerate() {
        let order = stack
            .wait_for_status(&id.to_string(), "active", ARRIVES_WITHIN)
            .await?;
        assert_eq!(order["server"]["name"], format!("batch-{n}"), "{order}");
    }
    let order = stack
        .wait_for_status(&orders[2].to_string(), "failed", ARRIVES_WITHIN)
        .await?;
    assert_eq!(order["fault"]["code"], "invalid_request", "{order}");
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}

/// One store with the orders of [`a_batch_applies_as_its_updates_one_by_one`].
async fn store_with(
    orders: &[order_api::store::Order],
) -> anyhow::Result<(order_api::store::Store, provisioner_tests::EarlierDatabase)> {
    use provisioner_contract::{CancelRequest, HostRequest};

    let database = provisioner_tests::EarlierDatabase::migrated_below(i64::MAX).await?;
    let store = order_api::store::Store::connect(&database.url).await?;
    let mut requests = Vec::new();
    for order in orders {
        let request = order_api::store::OutboxMessage {
            order_id: order.id,
            ..crate::postgres::new_order().1
        };
        store
            .insert_order(order, &[], std::slice::from_ref(&request), None)
            .await?;
        requests.push(request);
    }
    store.mark_published(&requests).await?;
    // The fifth is being cancelled.
    let cancel = HostRequest::Cancel(CancelRequest {
        order_id: orders[4].id,
        vendor: "hetzner".into(),
        adopt_running: false,
    });
    let cancel = order_api::store::OutboxMessage::request(orders[4].id, "hetzner", &cancel, None);
    anyhow::ensure!(store.request_cancel(orders[4].id, &cancel).await?);
    Ok((store, database))
}

/// What a store holds of `orders`, to compare: each order's status, server, fault and event
/// log (without the times of its own events), the outbox's messages and the webhook calls.
async fn held(
    store: &order_api::store::Store,
    orders: &[order_api::store::Order],
) -> anyhow::Result<Vec<String>> {
    let mut held = Vec::new();
    for order in orders {
        let (now, events) = store.order(order.id).await?.context("the order")?;
        let events: Vec<_> = events
            .iter()
            .map(|event| (event.status, event.message.clone(), event.attempt))
            .collect();
        held.push(format!(
            "{}: {} {:?} {:?} {events:?}",
            order.spec.name, now.status, now.server, now.fault
        ));
    }
    let mut outbox: Vec<String> = store
        .due_outbox(1_000)
        .await?
        .iter()
        .map(|m| {
            format!(
                "outbox {} {} {}",
                m.order_id,
                m.routing_key,
                String::from_utf8_lossy(&m.body)
            )
        })
        .collect();
    outbox.sort();
    let mut webhooks: Vec<String> = store
        .due_webhooks(1_000, 1_000)
        .await?
        .iter()
        .map(|call| format!("webhook {} {}", call.order_id, call.url))
        .collect();
    webhooks.sort();
    held.extend(outbox);
    held.extend(webhooks);
    Ok(held)
}

/// Updates applied in one batch leave the store as they do applied one by one: orders that
/// move together (a group of results, a group of failures, one of them with the clean-up
/// lookup it sets off, one with a webhook), beside ones that cannot (a late server for a
/// cancelling order, an order with two updates, an unknown order, a lone progress event).
#[tokio::test]
async fn a_batch_applies_as_its_updates_one_by_one() -> anyhow::Result<()> {
    let orders: Vec<order_api::store::Order> = (0..10)
        .map(|n| {
            let mut order = crate::postgres::new_order().0;
            order.spec.name = format!("order-{n}");
            if n == 9 {
                order.webhook_url = Some("https://hooks.example.test/orders".into());
            }
            order
        })
        .collect();
    let id = |n: usize| orders[n].id;
    let server = |n: usize| running(format!("order-{n}"));
    let update = |order_id: Uuid, attempt: u32, kind: UpdateKind| OrderUpdate {
        order_id,
        vendor: "hetzner".into(),
        at: chrono::Utc::now(),
        attempt,
        kind,
    };
    let failed = |code: &str| UpdateKind::Failed {
        fault: Fault {
            code: code.into(),
            message: "m".into(),
            retryable: false,
        },
        server: None,
    };
    let updates = vec![
        update(id(0), 1, UpdateKind::Active { server: server(0) }),
        update(id(5), 1, failed("invalid_request")),
        update(id(1), 1, UpdateKind::Active { server: server(1) }),
        update(id(8), 1, UpdateKind::Provisioning { server: server(8) }),
        update(id(4), 1, UpdateKind::Active { server: server(4) }),
        update(id(2), 1, UpdateKind::Active { server: server(2) }),
        update(id(6), 1, failed("invalid_request")),
        update(Uuid::new_v4(), 1, UpdateKind::Active { server: server(99) }),
        update(id(8), 1, UpdateKind::Active { server: server(8) }),
        update(id(7), 2, failed("vendor_unavailable")),
        update(id(3), 1, UpdateKind::Provisioning { server: server(3) }),
        update(id(9), 1, UpdateKind::Active { server: server(9) }),
    ];

    let (batched, batched_db) = store_with(&orders).await?;
    let all: Vec<&OrderUpdate> = updates.iter().collect();
    let applied_together = batched.apply_updates(&all).await?;
    let (single, single_db) = store_with(&orders).await?;
    let mut applied_alone = Vec::new();
    for update in &updates {
        applied_alone.push(single.apply_update(update).await?);
    }
    assert_eq!(applied_together, applied_alone);
    let (together, alone) = (
        held(&batched, &orders).await?,
        held(&single, &orders).await?,
    );
    assert_eq!(together.len(), alone.len(), "{together:#?}\n{alone:#?}");
    for (together, alone) in together.iter().zip(&alone) {
        // The outbox rows name the same orders with the same requests.
        assert_eq!(together, alone);
    }
    // And the batch did move what it should.
    assert!(
        together
            .iter()
            .any(|line| line.starts_with("order-0: active"))
    );
    assert!(
        together
            .iter()
            .any(|line| line.starts_with("order-7: failed"))
    );
    assert!(together.iter().any(|line| line.starts_with("webhook")));
    drop((batched, single));
    batched_db.remove().await?;
    single_db.remove().await?;
    Ok(())
}
