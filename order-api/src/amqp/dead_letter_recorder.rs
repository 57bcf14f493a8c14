//! The dead-letter recorder: consumes `provision.dead` and records each message in the
//! database with why it died (`store::dead_letters`), acking it only once recorded, so
//! operators read dead letters through `GET /v1/dead-letters` (and the console) and reading
//! them takes nothing away. Peeking at the queue instead (get, then return) would count as a
//! delivery of each message, and a quorum queue with a delivery limit drops a message
//! returned too often.
//!
//! Why a message died comes from the headers of whoever put it there: a program's
//! ([`DEAD_REASON_HEADER`] and [`DEAD_QUEUE_HEADER`]: undecodable, an unknown schema version
//! ...), or the broker's own (`x-first-death-reason`, `x-first-death-queue`: delivered too
//! often, expired, rejected). Every order-api instance records; a message redelivered after
//! a crash between the commit and the ack has the same fingerprint and is recorded once. A
//! record the database refuses is tried again with growing waits, holding only this recorder:
//! the session, and with it the order path, goes on.

use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use provisioner_contract::Topology;
use provisioner_contract::amqp::{DEAD_QUEUE_HEADER, DEAD_REASON_HEADER};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::store::{DeadLetterEnvelope, NewDeadLetter, Store};

/// Dead letters the recorder may hold unacked at once.
const PREFETCH: u16 = 16;
/// Headers the broker adds or changes on each redelivery: left out of the fingerprint.
const REDELIVERY_HEADERS: &[&str] = &["x-delivery-count"];

/// Records dead letters until the channel or connection fails.
pub async fn run(channel: &Channel, topology: &Topology, store: Store) -> anyhow::Result<()> {
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .context("setting the dead-letter prefetch")?;
    let queue = topology.dead_letter_queue();
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "order-api-dead-letters".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    let mut consumer = match consumer {
        Ok(consumer) => consumer,
        Err(error) => {
            // Most likely a broker user made before order-api read the dead-letter queue.
            // Orders flow all the same: the dead letters wait in the queue (counted in
            // `provisioner_dead_letter_queue_messages`) until order-api may read them.
            tracing::error!(
                "cannot consume {queue} ({error}): dead letters are not recorded; grant \
                 order-api's broker user read on it (scripts/rabbitmq-users.sh does)"
            );
            return std::future::pending().await;
        }
    };
    tracing::info!("recording the dead letters of {queue}");
    while let Some(delivery) = consumer.next().await {
        let delivery = delivery.context("receiving a dead letter")?;
        let letter = read(&delivery);
        // A database that refuses the record holds this recorder only: the delivery stays
        // unacked (in the queue) and the record is tried again, later and later, while the
        // rest of the session (the order path) goes on.
        let mut wait = RETRY_FIRST;
        let new = loop {
            match store.record_dead_letter(&letter).await {
                Ok(new) => break new,
                Err(error) => {
                    tracing::error!(
                        routing_key = %letter.envelope.routing_key,
                        "recording a dead letter: {error:#}; trying again in {wait:?}"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_LAST);
                }
            }
        };
        if new {
            tracing::warn!(
                queue = letter.envelope.queue.as_deref().unwrap_or("?"),
                routing_key = %letter.envelope.routing_key,
                reason = %letter.envelope.reason,
                "recorded a dead letter"
            );
        }
        delivery
            .ack(BasicAckOptions::default())
            .await
            .context("acking a recorded dead letter")?;
    }
    anyhow::bail!("the broker closed the dead-letter consumer")
}

/// The first wait before a dead letter the database refused is recorded again; it doubles
/// up to [`RETRY_LAST`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between attempts to record one dead letter.
const RETRY_LAST: Duration = Duration::from_secs(60);

/// `text` as the database takes it: PostgreSQL's text holds no NUL byte, so each becomes
/// U+FFFD (a header or routing key may carry anything).
fn storable(text: &str) -> String {
    text.replace('\0', "\u{FFFD}")
}

/// What is recorded of `delivery`.
pub fn read(delivery: &Delivery) -> NewDeadLetter {
    let properties = &delivery.properties;
    let headers: Vec<(String, &AMQPValue)> = properties
        .headers()
        .as_ref()
        .map(|table| {
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect()
        })
        .unwrap_or_default();
    let text = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .and_then(|(_, value)| as_text(value))
    };
    let (queue, reason) = match text(DEAD_REASON_HEADER) {
        Some(reason) => (text(DEAD_QUEUE_HEADER), reason),
        None => (
            text("x-first-death-queue"),
            broker_reason(text("x-first-death-reason").as_deref()),
        ),
    };
    let headers_json: Map<String, Value> = headers
        .iter()
        .map(|(key, value)| (key.clone(), to_json(value)))
        .collect();
    let message_id = properties.message_id().as_ref().map(|id| id.to_string());
    let order_id = serde_json::from_slice::<Value>(&delivery.data)
        .ok()
        .and_then(|body| body.get("order_id")?.as_str().map(str::to_string))
        .filter(|id| uuid::Uuid::parse_str(id).is_ok());
    let mut fingerprint = Sha256::new();
    for part in [
        delivery.exchange.as_str(),
        delivery.routing_key.as_str(),
        message_id.as_deref().unwrap_or(""),
        queue.as_deref().unwrap_or(""),
        &reason,
    ] {
        fingerprint.update((part.len() as u64).to_be_bytes());
        fingerprint.update(part.as_bytes());
    }
    let identifying: Map<String, Value> = headers_json
        .iter()
        .filter(|(key, _)| !REDELIVERY_HEADERS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    let identifying = Value::Object(identifying).to_string();
    fingerprint.update((identifying.len() as u64).to_be_bytes());
    fingerprint.update(identifying.as_bytes());
    fingerprint.update(&delivery.data);
    NewDeadLetter {
        fingerprint: format!("{:x}", fingerprint.finalize()),
        envelope: DeadLetterEnvelope {
            queue: queue.as_deref().map(storable),
            reason: storable(&reason),
            exchange: storable(delivery.exchange.as_str()),
            routing_key: storable(delivery.routing_key.as_str()),
            message_id: message_id.as_deref().map(storable),
            order_id,
            headers: Value::Object(headers_json),
        },
        body: delivery.data.clone(),
    }
}

/// The broker's reason for a dead letter (`x-first-death-reason`) in words.
fn broker_reason(code: Option<&str>) -> String {
    match code {
        Some("delivery_limit") => {
            "the broker: delivered as often as the queue's x-delivery-limit allows without being \
             settled"
                .into()
        }
        Some("rejected") => "the broker: a consumer rejected it without requeueing".into(),
        Some("expired") => "the broker: its time to live ran out".into(),
        Some("maxlen") => "the broker: the queue was at its length limit".into(),
        Some(other) => format!("the broker: {other}"),
        None => "unknown: the message carries no reason".into(),
    }
}

fn as_text(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// A header's value as JSON (strings lossily decoded, byte arrays as their length).
fn to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        AMQPValue::Timestamp(n) => json!(n),
        AMQPValue::DecimalValue(d) => json!(format!("{d:?}")),
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => json!(as_text(value)),
        AMQPValue::FieldArray(items) => {
            Value::Array(items.as_slice().iter().map(to_json).collect())
        }
        AMQPValue::FieldTable(table) => Value::Object(
            table
                .inner()
                .iter()
                .map(|(key, value)| (key.to_string(), to_json(value)))
                .collect(),
        ),
        AMQPValue::ByteArray(bytes) => json!(format!("<{} bytes>", bytes.as_slice().len())),
        AMQPValue::Void => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    fn delivery(headers: &[(&str, AMQPValue)], data: &[u8]) -> Delivery {
        let mut table = FieldTable::default();
        for (key, value) in headers {
            table.insert((*key).into(), value.clone());
        }
        let mut delivery = Delivery::mock(
            1,
            "provisioner.dlx".into(),
            "request.hetzner".into(),
            false,
            data.to_vec(),
        );
        delivery.properties = BasicProperties::default()
            .with_message_id("m-1".into())
            .with_headers(table);
        delivery
    }

    fn text(value: &str) -> AMQPValue {
        AMQPValue::LongString(value.into())
    }

    /// A program's reason and queue come from its headers; the broker's from its own.
    #[test]
    fn the_reason_is_whoever_dead_lettered_it() {
        let ours = read(&delivery(
            &[
                (DEAD_REASON_HEADER, text("undecodable message: eof")),
                (DEAD_QUEUE_HEADER, text("provision.requests.hetzner")),
            ],
            b"{",
        ));
        assert_eq!(ours.envelope.reason, "undecodable message: eof");
        assert_eq!(
            ours.envelope.queue.as_deref(),
            Some("provision.requests.hetzner")
        );
        let brokers = read(&delivery(
            &[
                ("x-first-death-reason", text("expired")),
                (
                    "x-first-death-queue",
                    text("provision.retry.requests.250ms"),
                ),
            ],
            br#"{"order_id":"0190e1c6-7c3b-7000-8000-000000000001"}"#,
        ));
        assert!(
            brokers.envelope.reason.contains("time to live"),
            "{}",
            brokers.envelope.reason
        );
        assert_eq!(
            brokers.envelope.queue.as_deref(),
            Some("provision.retry.requests.250ms")
        );
        assert_eq!(
            brokers.envelope.order_id.as_deref(),
            Some("0190e1c6-7c3b-7000-8000-000000000001")
        );
        let unknown = read(&delivery(&[], b"x"));
        assert!(
            unknown.envelope.reason.starts_with("unknown"),
            "{}",
            unknown.envelope.reason
        );
        assert_eq!(unknown.envelope.order_id, None);
    }

    /// PostgreSQL's text holds no NUL byte: one in a reason is kept as U+FFFD.
    #[test]
    fn a_nul_byte_is_stored_as_a_replacement_character() {
        let letter = read(&delivery(
            &[(DEAD_REASON_HEADER, text("bad\0reason"))],
            b"x",
        ));
        assert_eq!(letter.envelope.reason, "bad\u{FFFD}reason");
    }

    /// A copy the broker delivers again (after order-api stopped before its ack) has the same
    /// fingerprint, though the broker counted the delivery; another message has another.
    #[test]
    fn a_redelivered_copy_has_the_same_fingerprint() {
        let reason = (DEAD_REASON_HEADER, text("undecodable"));
        let first = read(&delivery(std::slice::from_ref(&reason), b"body"));
        let again = read(&delivery(
            &[
                reason.clone(),
                ("x-delivery-count", AMQPValue::LongLongInt(1)),
            ],
            b"body",
        ));
        assert_eq!(first.fingerprint, again.fingerprint);
        let other_body = read(&delivery(std::slice::from_ref(&reason), b"body2"));
        assert_ne!(first.fingerprint, other_body.fingerprint);
        let other_reason = read(&delivery(&[(DEAD_REASON_HEADER, text("other"))], b"body"));
        assert_ne!(first.fingerprint, other_reason.fingerprint);
    }
}
