//! Poison messages (undecodable, wrong schema version) on any queue go to `provision.dead`
//! with the reason in a header, once: they never loop, they are counted in `/metrics`, and
//! the stack keeps serving.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use provisioner_contract::amqp::{DEAD_QUEUE_HEADER, DEAD_REASON_HEADER};
use provisioner_tests::{Stack, StackOptions, message_count, metric_value, require_rabbitmq};

fn text_header(properties: &BasicProperties, name: &str) -> String {
    match properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(name))
    {
        Some(AMQPValue::LongString(text)) => text.to_string(),
        other => panic!("header {name} is {other:?}"),
    }
}

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

    // Counted in metrics: order-api's own dead letters, and the dead-letter queue's length
    // (sampled every 15 s) whoever put them there.
    let results_series = format!(
        "provisioner_dead_letters_total{{queue=\"{}\"}}",
        topology.results_queue()
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let text = stack.metrics().await?;
        let waiting = metric_value(&text, "provisioner_dead_letter_queue_messages");
        let counted = metric_value(&text, &results_series);
        if waiting == Some(poison.len() as f64) && counted == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the dead letters (waiting {waiting:?}, counted {counted:?}):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.len() < poison.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} poison messages reached {}\n{}",
            dead.len(),
            poison.len(),
            topology.dead_letter_queue(),
            stack.logs()
        );
        match channel
            .basic_get(
                topology.dead_letter_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await?
        {
            Some(message) => dead.push(message.delivery),
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                text_header(&d.properties, DEAD_QUEUE_HEADER),
                text_header(&d.properties, DEAD_REASON_HEADER),
            )
        })
        .collect();
    let requests = topology.request_queue("hetzner");
    let results = topology.results_queue();
    assert_eq!(
        reasons
            .iter()
            .filter(|(queue, _)| *queue == requests)
            .count(),
        2,
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

    // Nothing loops: no copy comes back, the queues are empty, and orders still work.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for queue in [topology.dead_letter_queue(), requests, results] {
        let waiting = message_count(&channel, &queue).await?;
        assert_eq!(waiting, 0, "{queue} is not empty");
    }
    let id = stack.order_server("after-poison").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}
