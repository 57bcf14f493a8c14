//! Poison messages (undecodable, wrong schema version) on any queue go to `provision.dead`
//! with the reason in a header, once: they never loop, order-api records them with why for
//! `GET /v1/dead-letters` (and counts them in `/metrics`), and the stack keeps serving.

use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use provisioner_contract::Topology;
use provisioner_contract::amqp::{DEAD_QUEUE_HEADER, DEAD_REASON_HEADER};
use provisioner_tests::{
    ApiClient, Stack, StackOptions, message_count, metric_value, require_rabbitmq,
};
use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

#[tokio::test]
async fn poison_messages_are_dead_lettered_once_with_a_reason() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let topology = &stack.topology;
    let connection = require_rabbitmq().await;
    let channel = connection.create_channel().await?;
    let poisoned = publish_poison(&channel, topology).await?;
    let dead_lettered = publish_dead_letters(&channel, topology).await?;
    let dead_count = poisoned + 3;

    wait_for_the_dead_letter_metrics(&stack, dead_count).await?;
    let admin = stack.admin_api()?;
    let page = admin.get("/v1/dead-letters").await?;
    assert_eq!(page["total"], dead_count, "{page}");
    let dead = page["dead_letters"].as_array().cloned().unwrap_or_default();
    assert_eq!(dead.len(), dead_count, "{page}");
    each_is_listed_with_its_queue_and_reason(topology, &dead);
    the_broker_dead_letter_its_body_and_headers_are_listed(&page, &dead, dead_lettered.order_id);
    a_large_body_is_cut_in_the_list_and_whole_alone(&admin, &page, &dead, &dead_lettered.large)
        .await?;
    tenants_never_see_them_and_an_admin_dismisses_one_once(&stack, &admin, &dead, dead_count)
        .await?;
    nothing_loops_and_orders_still_work(&stack, &channel, dead_count).await?;
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}

/// Publishes `body` with `properties` to `exchange` under `key`, confirmed.
async fn publish(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?
        .await?;
    Ok(())
}

/// AMQP headers holding `values` as long strings.
fn string_headers(values: [(&str, &str); 2]) -> FieldTable {
    let mut headers = FieldTable::default();
    for (name, value) in values {
        headers.insert(name.into(), AMQPValue::LongString(value.into()));
    }
    headers
}

/// Publishes three poison messages to the stack's own exchanges (undecodable, a wrong schema
/// version, not UTF-8); how many.
async fn publish_poison(channel: &Channel, topology: &Topology) -> anyhow::Result<usize> {
    let mut wrong_schema = FieldTable::default();
    wrong_schema.insert("x-schema-version".into(), AMQPValue::LongLongInt(99));
    let poison = [
        // (routing key, body, properties)
        (
            "request.hetzner",
            b"not json".to_vec(),
            BasicProperties::default(),
        ),
        (
            "request.hetzner",
            br#"{"kind":"create"}"#.to_vec(),
            BasicProperties::default()
                .with_message_id(Uuid::new_v4().to_string().into())
                .with_headers(wrong_schema),
        ),
        (
            "event.hetzner",
            b"\xff\xfe".to_vec(),
            BasicProperties::default(),
        ),
    ];
    for (key, body, properties) in &poison {
        let exchange = topology.exchange_for_key(key);
        publish(channel, &exchange, key, body, properties.clone()).await?;
    }
    Ok(poison.len())
}

/// What [`publish_dead_letters`] sent that the list must show again.
struct DeadLettered {
    /// The order of the request the broker dead-lettered.
    order_id: Uuid,
    /// The large body.
    large: String,
}

/// Publishes three messages straight to the dead-letter exchange: one the broker itself
/// dead-lettered, one whose reason carries a NUL byte, a large one with no reason.
async fn publish_dead_letters(
    channel: &Channel,
    topology: &Topology,
) -> anyhow::Result<DeadLettered> {
    let dead_letters = topology.dead_letter_exchange();
    let requests = topology.request_queue("hetzner");
    // One the broker itself dead-lettered (its headers, not ours): a request delivered as
    // often as the queue's delivery limit allows.
    let order_id = Uuid::now_v7();
    publish(
        channel,
        &dead_letters,
        "request.hetzner",
        format!(r#"{{"kind":"create","order_id":"{order_id}"}}"#).as_bytes(),
        BasicProperties::default().with_headers(string_headers([
            ("x-first-death-reason", "delivery_limit"),
            ("x-first-death-queue", &requests),
        ])),
    )
    .await?;
    // One whose reason carries a NUL byte (PostgreSQL's text cannot hold one): it is
    // recorded all the same, and the order path never stalls behind it.
    publish(
        channel,
        &dead_letters,
        "request.hetzner",
        b"{}",
        BasicProperties::default().with_headers(string_headers([
            (DEAD_REASON_HEADER, "poison\0with a NUL"),
            (DEAD_QUEUE_HEADER, &requests),
        ])),
    )
    .await?;
    // A large one, with no reason at all: a list shows its first 16 KiB.
    let large = "x".repeat(20 * 1024);
    publish(
        channel,
        &dead_letters,
        "event.hetzner",
        large.as_bytes(),
        BasicProperties::default(),
    )
    .await?;
    Ok(DeadLettered { order_id, large })
}

/// Waits until order-api has recorded every dead letter with why (and acked it), and
/// counts them in metrics: the recorded ones, and those it dead-lettered itself.
async fn wait_for_the_dead_letter_metrics(stack: &Stack, dead_count: usize) -> anyhow::Result<()> {
    let results_series = format!(
        "provisioner_dead_letters_total{{queue=\"{}\"}}",
        stack.topology.results_queue()
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let text = stack.metrics().await?;
        let recorded = metric_value(&text, "provisioner_dead_letters_recorded");
        let counted = metric_value(&text, &results_series);
        if recorded == Some(dead_count as f64) && counted == Some(1.0) {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the dead letters (recorded {recorded:?}, counted {counted:?}):\n{text}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Checks the listed dead letters name their queues and reasons: four from the requests
/// queue, an undecodable one from the results queue, a wrong schema version, and the NUL
/// byte's reason without it.
fn each_is_listed_with_its_queue_and_reason(topology: &Topology, dead: &[Value]) {
    let requests = topology.request_queue("hetzner");
    let results = topology.results_queue();
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                d["queue"].as_str().unwrap_or("").to_string(),
                d["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        reasons
            .iter()
            .filter(|(queue, _)| *queue == requests)
            .count(),
        4,
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(queue, reason)| *queue == results && reason.contains("undecodable")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(_, reason)| reason.contains("schema version")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(_, reason)| reason.starts_with("poison")
                && reason.ends_with("with a NUL")
                && !reason.contains('\0')),
        "{reasons:?}"
    );
}

/// Checks the broker's dead letter is listed with its order and routing key, a body that is
/// not UTF-8 comes in base64, and the headers of whoever dead-lettered one are there.
fn the_broker_dead_letter_its_body_and_headers_are_listed(
    page: &Value,
    dead: &[Value],
    order_id: Uuid,
) {
    let by_broker = dead
        .iter()
        .find(|d| {
            d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("delivery-limit"))
        })
        .unwrap_or_else(|| panic!("the broker's dead letter is not listed: {page}"));
    assert_eq!(by_broker["order_id"], order_id.to_string(), "{by_broker}");
    assert_eq!(by_broker["routing_key"], "request.hetzner", "{by_broker}");
    // A body that is not UTF-8 comes in base64, byte for byte.
    assert!(
        dead.iter()
            .any(|d| d["body_base64"] == "//4=" && d["body"].is_null()),
        "{page}"
    );
    // The headers of whoever dead-lettered it are there, as JSON.
    assert!(dead.iter().all(|d| d["headers"].is_object()), "{page}");
    assert!(
        dead.iter()
            .any(|d| d["headers"][DEAD_REASON_HEADER].is_string()
                && d["headers"][DEAD_QUEUE_HEADER].is_string()),
        "{page}"
    );
}

/// Checks the large dead letter is listed cut to 16 KiB (its reason unknown) and read alone
/// whole.
async fn a_large_body_is_cut_in_the_list_and_whole_alone(
    admin: &ApiClient,
    page: &Value,
    dead: &[Value],
    large: &str,
) -> anyhow::Result<()> {
    let cut = dead
        .iter()
        .find(|d| d["body_bytes"] == large.len())
        .unwrap_or_else(|| panic!("the large dead letter is not listed: {page}"));
    assert_eq!(cut["body_truncated"], true, "{cut}");
    assert_eq!(cut["body"].as_str().map(str::len), Some(16 * 1024));
    assert!(
        cut["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("unknown")),
        "{cut}"
    );
    let whole = admin
        .get(&format!(
            "/v1/dead-letters/{}",
            cut["id"].as_str().unwrap_or_default()
        ))
        .await?;
    assert_eq!(whole["body"], large);
    assert_eq!(whole["body_truncated"], false);
    Ok(())
}

/// Checks a tenant is refused the dead letters, and an admin dismisses one once (a second
/// dismissal is a 404; the list then holds one fewer).
async fn tenants_never_see_them_and_an_admin_dismisses_one_once(
    stack: &Stack,
    admin: &ApiClient,
    dead: &[Value],
    dead_count: usize,
) -> anyhow::Result<()> {
    let forbidden = stack
        .api()
        .send_raw(Method::GET, "/v1/dead-letters", None)
        .await?;
    assert_eq!(forbidden.status(), 403);
    let first = dead[0]["id"].as_str().unwrap_or_default().to_string();
    let dismissal = format!("/v1/dead-letters/{first}");
    let dismiss = || admin.send_raw(Method::DELETE, &dismissal, None);
    assert_eq!(dismiss().await?.status(), 204);
    assert_eq!(dismiss().await?.status(), 404);
    let page = admin.get("/v1/dead-letters?limit=1").await?;
    assert_eq!(page["total"], dead_count - 1, "{page}");
    assert!(page["next_cursor"].is_string(), "{page}");
    Ok(())
}

/// Checks nothing loops: no copy comes back, the queues are empty, the dismissed dead letter
/// is counted no more, and an order still goes active.
async fn nothing_loops_and_orders_still_work(
    stack: &Stack,
    channel: &Channel,
    dead_count: usize,
) -> anyhow::Result<()> {
    let topology = &stack.topology;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for queue in [
        topology.dead_letter_queue(),
        topology.request_queue("hetzner"),
        topology.results_queue(),
    ] {
        let waiting = message_count(channel, &queue).await?;
        assert_eq!(waiting, 0, "{queue} is not empty");
    }
    let text = stack.metrics().await?;
    assert_eq!(
        metric_value(&text, "provisioner_dead_letters_recorded"),
        Some((dead_count - 1) as f64),
        "a dismissed dead letter is counted no more, nor a recorded one twice:\n{text}"
    );
    let id = stack.order_server("after-poison").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    Ok(())
}
