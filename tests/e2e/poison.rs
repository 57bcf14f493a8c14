//! Poison messages (undecodable, wrong schema version) on any queue go to `provision.dead`
//! with the reason in a header, once: they never loop, order-api records them with why for
//! `GET /v1/dead-letters` (and counts them in `/metrics`), and the stack keeps serving.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use provisioner_contract::amqp::{DEAD_QUEUE_HEADER, DEAD_REASON_HEADER};
use provisioner_tests::{Stack, StackOptions, message_count, metric_value, require_rabbitmq};
use reqwest::Method;

#[tokio::test]
async fn poison_messages_are_dead_lettered_once_with_a_reason() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let topology = &stack.topology;
    let connection = require_rabbitmq().await;
    let channel = connection.create_channel().await?;
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
                .with_message_id(uuid::Uuid::new_v4().to_string().into())
                .with_headers(wrong_schema),
        ),
        (
            "event.hetzner",
            b"\xff\xfe".to_vec(),
            BasicProperties::default(),
        ),
    ];
    for (key, body, properties) in &poison {
        channel
            .basic_publish(
                topology.exchange_for_key(key).as_str().into(),
                (*key).into(),
                BasicPublishOptions::default(),
                body,
                properties.clone(),
            )
            .await?
            .await?;
    }
    // And one the broker itself dead-lettered (its headers, not ours): a request delivered
    // as often as the queue's delivery limit allows.
    let requests = topology.request_queue("hetzner");
    let mut broker_headers = FieldTable::default();
    broker_headers.insert(
        "x-first-death-reason".into(),
        AMQPValue::LongString("delivery_limit".into()),
    );
    broker_headers.insert(
        "x-first-death-queue".into(),
        AMQPValue::LongString(requests.as_str().into()),
    );
    let order_id = uuid::Uuid::now_v7();
    channel
        .basic_publish(
            topology.dead_letter_exchange().as_str().into(),
            "request.hetzner".into(),
            BasicPublishOptions::default(),
            format!(r#"{{"kind":"create","order_id":"{order_id}"}}"#).as_bytes(),
            BasicProperties::default().with_headers(broker_headers),
        )
        .await?
        .await?;
    // And one whose reason carries a NUL byte (PostgreSQL's text cannot hold one): it is
    // recorded all the same, and the order path never stalls behind it.
    let mut nul_headers = FieldTable::default();
    nul_headers.insert(
        DEAD_REASON_HEADER.into(),
        AMQPValue::LongString("poison\0with a NUL".into()),
    );
    nul_headers.insert(
        DEAD_QUEUE_HEADER.into(),
        AMQPValue::LongString(requests.as_str().into()),
    );
    channel
        .basic_publish(
            topology.dead_letter_exchange().as_str().into(),
            "request.hetzner".into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default().with_headers(nul_headers),
        )
        .await?
        .await?;
    // And a large one, with no reason at all: a list shows its first 16 KiB.
    let large = "x".repeat(20 * 1024);
    channel
        .basic_publish(
            topology.dead_letter_exchange().as_str().into(),
            "event.hetzner".into(),
            BasicPublishOptions::default(),
            large.as_bytes(),
            BasicProperties::default(),
        )
        .await?
        .await?;
    let dead_count = poison.len() + 3;

    // order-api records every dead letter with why (and acks it), and counts them in
    // metrics: the recorded ones, and those it dead-lettered itself.
    let results_series = format!(
        "provisioner_dead_letters_total{{queue=\"{}\"}}",
        topology.results_queue()
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let text = stack.metrics().await?;
        let recorded = metric_value(&text, "provisioner_dead_letters_recorded");
        let counted = metric_value(&text, &results_series);
        if recorded == Some(dead_count as f64) && counted == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the dead letters (recorded {recorded:?}, counted {counted:?}):\n{text}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let admin = stack.admin_api()?;
    let page = admin.get("/v1/dead-letters").await?;
    assert_eq!(page["total"], dead_count, "{page}");
    let dead = page["dead_letters"].as_array().cloned().unwrap_or_default();
    assert_eq!(dead.len(), dead_count, "{page}");
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                d["queue"].as_str().unwrap_or("").to_string(),
                d["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let results = topology.results_queue();
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
    assert_eq!(whole["body"], large.as_str());
    assert_eq!(whole["body_truncated"], false);

    // Tenants never see them; an admin dismisses one, once.
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

    // Nothing loops: no copy comes back, the queues are empty, and orders still work.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for queue in [topology.dead_letter_queue(), requests, results] {
        let waiting = message_count(&channel, &queue).await?;
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
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}
