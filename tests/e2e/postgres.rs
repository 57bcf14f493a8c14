//! PostgreSQL as the order store, shared: two order-api instances on one database and two
//! hosts on one broker serve the same orders without double effects. (The rest of the API
//! suite runs on PostgreSQL too, with `TEST_ORDER_STORE=postgres`: `scripts/test.sh` does.)

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use order_api::lifecycle::OrderStatus;
use order_api::store::{Order, OutboxMessage, Store};
use provisioner_contract::ServerSpec;
use provisioner_tests::{
    OrderStore, Stack, StackOptions, create_postgres_database, drop_postgres_database,
    event_messages, fixture, metric_value, post_order_with,
};
use reqwest::Method;
use serde_json::Value;

/// POSTs an order to the order-api at `api`, with an idempotency key when given; the status
/// and the answer.
async fn post_order(
    stack: &Stack,
    api: &str,
    body: &str,
    key: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    post_order_with(&stack.api_at(api), body.to_string(), key).await
}

/// `POST /v1/orders/{id}/<action>` (`cancel`) or `DELETE /v1/orders/{id}` (`delete`) at `api`.
async fn change_order(stack: &Stack, api: &str, id: &str, action: &str) -> anyhow::Result<u16> {
    let (method, path) = match action {
        "delete" => (Method::DELETE, format!("/v1/orders/{id}")),
        _ => (Method::POST, format!("/v1/orders/{id}/{action}")),
    };
    let response = stack.api_at(api).send_raw(method, &path, None).await?;
    Ok(response.status().as_u16())
}

/// `GET path` at the order-api at `api` with the stack's token, as JSON (whatever the
/// status).
async fn get_json(stack: &Stack, api: &str, path: &str) -> anyhow::Result<Value> {
    let api = stack.api_at(api);
    Ok(api.status_and_json(Method::GET, path, None).await?.1)
}

/// Polls the order at `api` until it is `status`.
async fn wait_at(stack: &Stack, api: &str, id: &str, status: &str) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let order = get_json(stack, api, &format!("/v1/orders/{id}")).await?;
        if order["status"] == status {
            return Ok(order);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "order {id} did not become {status} at {api}: {order}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creation requests both instances published, by their metrics.
async fn published_by_both(stack: &Stack, apis: &[String]) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for api in apis {
        let text = stack.api_at(api).metrics().await?;
        total += metric_value(&text, "provisioner_publishes_total{outcome=\"confirmed\"}")
            .unwrap_or(0.0);
    }
    Ok(total)
}

/// Orders placed, read, cancelled and deleted through either of two order-api instances on
/// one PostgreSQL database, served by two hosts: one order per idempotency key, one server
/// per order, every request published once, each order's event log without repeats, and
/// both instances see the same orders.
#[tokio::test]
async fn two_order_apis_and_two_hosts_share_one_postgres_database() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        store: OrderStore::Postgres,
        hosts: 2,
        boot_delay: Duration::from_secs(3),
        ..StackOptions::default()
    })
    .await?;
    let apis = [stack.api_url.clone(), stack.start_another_api().await?];
    let hetzner = fixture("hetzner");

    // Orders through both instances at once.
    const ORDERS: usize = 24;
    let posts = (0..ORDERS).map(|i| {
        let body = hetzner.order_body(&format!("shared-{i}"));
        let (stack, api) = (&stack, apis[i % 2].clone());
        async move { post_order(stack, &api, &body, None).await }
    });
    let mut ids = Vec::new();
    for (status, order) in futures_util::future::try_join_all(posts).await? {
        assert_eq!(status, 202, "{order}");
        ids.push(order["id"].as_str().context("an order id")?.to_string());
    }

    // One idempotency key sent to both instances at once: one order, one 202.
    let keyed_body = hetzner.order_body("keyed");
    let keyed = (0..8).map(|i| post_order(&stack, &apis[i % 2], &keyed_body, Some("shared-key")));
    let answers = futures_util::future::try_join_all(keyed).await?;
    let keyed_ids: HashSet<&str> = answers
        .iter()
        .filter_map(|(_, order)| order["id"].as_str())
        .collect();
    assert_eq!(
        keyed_ids.len(),
        1,
        "one key made several orders: {answers:?}"
    );
    let created = answers.iter().filter(|(status, _)| *status == 202).count();
    assert_eq!(created, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(status, _)| [200, 202].contains(status))
    );
    ids.extend(keyed_ids.iter().map(|id| id.to_string()));

    // Three orders cancelled while their servers boot, each through the instance that did
    // not take it.
    let cancelled: Vec<&String> = ids.iter().take(3).collect();
    for (i, id) in cancelled.iter().enumerate() {
        wait_at(&stack, &apis[i % 2], id, "provisioning").await?;
        assert_eq!(
            change_order(&stack, &apis[(i + 1) % 2], id, "cancel").await?,
            202
        );
    }
    for (i, id) in cancelled.iter().enumerate() {
        wait_at(&stack, &apis[i % 2], id, "cancelled").await?;
    }
    // The rest become active; each is read through both instances alike.
    let mut servers = HashMap::new();
    for (i, id) in ids.iter().enumerate().skip(3) {
        let order = wait_at(&stack, &apis[i % 2], id, "active").await?;
        let other = wait_at(&stack, &apis[(i + 1) % 2], id, "active").await?;
        assert_eq!(order["server"], other["server"]);
        let vendor_id = order["server"]["vendor_id"]
            .as_str()
            .context("a server id")?;
        servers.insert(id.clone(), vendor_id.to_string());
    }
    // Four deleted, through the other instance.
    let deleted: Vec<&String> = ids.iter().skip(3).take(4).collect();
    for (i, id) in deleted.iter().enumerate() {
        assert_eq!(change_order(&stack, &apis[i % 2], id, "delete").await?, 202);
    }
    for (i, id) in deleted.iter().enumerate() {
        wait_at(&stack, &apis[(i + 1) % 2], id, "deleted").await?;
    }

    // One server per active order at the vendor (the one the order recorded), none left for
    // cancelled or deleted ones.
    for id in &deleted {
        servers.remove(*id);
    }
    let live: HashMap<String, String> = stack
        .sim_servers()
        .await?
        .into_iter()
        .map(|server| {
            let key = server["idempotency_key"].as_str().unwrap_or_default();
            let id = match &server["id"] {
                Value::String(id) => id.clone(),
                other => other.to_string(),
            };
            (key.to_string(), id)
        })
        .collect();
    assert_eq!(live, servers, "live servers by order");
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["duplicates"], serde_json::json!({}), "{stats}");

    // Each order's log: accepted once, published at most once; every request went out once.
    for id in &ids {
        let order = get_json(&stack, &apis[1], &format!("/v1/orders/{id}")).await?;
        let messages = event_messages(&order);
        let count = |prefix: &str| messages.iter().filter(|m| m.starts_with(prefix)).count();
        assert_eq!(count("order accepted"), 1, "{id}: {messages:?}");
        // Not there when the host's news came before the relay recorded the publish.
        assert!(
            count("creation request published") <= 1,
            "{id}: {messages:?}"
        );
    }
    let expected = ids.len() + cancelled.len() + deleted.len();
    assert_eq!(
        published_by_both(&stack, &apis).await?,
        expected as f64,
        "requests published by the two instances together"
    );
    // Both instances list the same orders.
    let all: HashSet<&str> = ids.iter().map(String::as_str).collect();
    for api in &apis {
        let page = get_json(&stack, api, "/v1/orders?limit=200").await?;
        let listed: HashSet<&str> = page["orders"]
            .as_array()
            .context("orders")?
            .iter()
            .filter_map(|order| order["id"].as_str())
            .collect();
        assert_eq!(listed, all, "{api} lists other orders");
    }
    assert!(
        !stack.logs().contains("deadlock"),
        "a deadlock between the instances:\n{}",
        stack.logs()
    );
    stack.cleanup().await;
    Ok(())
}

/// A new order with its creation request in the outbox.
pub(crate) fn new_order() -> (Order, OutboxMessage) {
    let now = Utc::now();
    let order = Order {
        id: uuid::Uuid::now_v7(),
        tenant: "test".into(),
        status: OrderStatus::Pending,
        vendor: "hetzner".into(),
        spec: ServerSpec {
            name: "claimed".into(),
            region: "fsn1".into(),
            size: "cx22".into(),
            image: "ubuntu-24.04".into(),
            ssh_keys: Vec::new(),
            user_data: None,
            labels: Default::default(),
        },
        server: None,
        fault: None,
        created_at: now,
        updated_at: now,
        webhook_url: None,
        count: 1,
        all_or_nothing: false,
        servers: None,
        placement: None,
    };
    let outbox = OutboxMessage {
        message_id: uuid::Uuid::new_v4(),
        order_id: order.id,
        routing_key: "provision.hetzner".into(),
        body: b"{}".to_vec(),
        traceparent: None,
        attempts: 0,
        lease_free: false,
    };
    (order, outbox)
}

/// Two instances' relays reading the outbox at the same moment: each message goes to one of
/// them, and stays theirs (not due again) while they publish it.
#[tokio::test]
async fn each_outbox_message_is_claimed_by_one_instance() -> anyhow::Result<()> {
    let name = format!(
        "provisioner_test_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    let url = create_postgres_database(&name).await?;
    let first = Store::connect(&url).await?;
    let second = Store::connect(&url).await?;
    let mut messages = Vec::new();
    for _ in 0..50 {
        let (order, outbox) = new_order();
        first
            .insert_order(&order, &[], std::slice::from_ref(&outbox), None)
            .await?;
        messages.push(outbox.message_id);
    }
    // Both read at once, again and again until nothing is due: no message twice.
    // (50 messages, 20 a read: a few rounds; more mean messages came back.)
    let mut claimed = Vec::new();
    for _ in 0..10 {
        let (mine, theirs) = tokio::join!(first.due_outbox(20), second.due_outbox(20));
        let (mine, theirs) = (mine?, theirs?);
        if mine.is_empty() && theirs.is_empty() {
            break;
        }
        claimed.extend(mine.iter().chain(&theirs).map(|message| message.message_id));
    }
    let mut distinct = claimed.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), claimed.len(), "a message was claimed twice");
    messages.sort();
    assert_eq!(distinct, messages, "every due message was claimed");
    drop(first);
    drop(second);
    drop_postgres_database(&name).await?;
    Ok(())
}
