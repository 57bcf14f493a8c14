//! The AMQP properties every message carries, and decoding with the schema check.
//!
//! Every message is `application/json`, persistent, with a unique `message_id`, the order id
//! as `correlation_id` (when it is about an order), the schema version header and a W3C
//! `traceparent` header.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The version of the JSON messages in [`crate::messages`]. A consumer refuses messages of
/// another version (they go to the dead-letter queue) instead of guessing at them.
pub const SCHEMA_VERSION: i64 = 1;

/// Header carrying [`SCHEMA_VERSION`].
pub const SCHEMA_HEADER: &str = "x-schema-version";

/// Header carrying the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Header order-api's relay sets (`true`) on the first publish of an order's first creation
/// request, and on no other message: that copy, on its first delivery, may create without
/// the create lease (the host's `worker::first_copy` has the rules and the argument).
pub const LEASE_FREE_HEADER: &str = "x-lease-free";

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// The identity and tracing data of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique per message; a consumer that sees the same id twice applies it once.
    pub message_id: Uuid,
    /// The order the message is about, if any.
    pub correlation_id: Option<Uuid>,
    /// W3C `traceparent`, when the message belongs to a trace.
    pub traceparent: Option<String>,
}

impl Envelope {
    /// A fresh envelope about `order_id` in the trace `traceparent`.
    pub fn for_order(order_id: Uuid, traceparent: Option<String>) -> Self {
        Self {
            message_id: Uuid::new_v4(),
            correlation_id: Some(order_id),
            traceparent,
        }
    }

    /// The AMQP properties for a message with this envelope.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(SCHEMA_HEADER.into(), AMQPValue::LongLongInt(SCHEMA_VERSION));
        if let Some(traceparent) = &self.traceparent {
            headers.insert(
                TRACEPARENT_HEADER.into(),
                AMQPValue::LongString(traceparent.as_str().into()),
            );
        }
        let mut properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(PERSISTENT)
            .with_message_id(self.message_id.to_string().into())
            .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64)
            .with_headers(headers);
        if let Some(order_id) = self.correlation_id {
            properties = properties.with_correlation_id(order_id.to_string().into());
        }
        properties
    }

    /// Reads the envelope back from a delivery's properties.
    pub fn from_properties(properties: &BasicProperties) -> Result<Self, DecodeError> {
        let message_id = properties
            .message_id()
            .as_ref()
            .ok_or(DecodeError::MissingMessageId)?;
        let message_id =
            Uuid::parse_str(message_id.as_str()).map_err(|_| DecodeError::MissingMessageId)?;
        let correlation_id = properties
            .correlation_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok());
        let traceparent = header(properties, TRACEPARENT_HEADER).and_then(|value| match value {
            AMQPValue::LongString(text) => Some(text.to_string()),
            AMQPValue::ShortString(text) => Some(text.to_string()),
            _ => None,
        });
        Ok(Self {
            message_id,
            correlation_id,
            traceparent,
        })
    }
}

/// Why a delivery could not be turned into a message. Such a delivery is dead-lettered.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// No `message_id`, or one that is not a UUID.
    #[error("the message has no UUID message_id")]
    MissingMessageId,
    /// The schema header is missing or names another version.
    #[error("schema version {found:?} is not the supported version {SCHEMA_VERSION}")]
    WrongSchema {
        /// The version found, if any.
        found: Option<i64>,
    },
    /// The body is not the JSON this queue carries.
    #[error("the body is not a valid message: {0}")]
    Body(#[from] serde_json::Error),
}

/// Serialises a message body.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising these plain data types cannot fail: no maps with non-string keys, no
    // custom serialisers.
    serde_json::to_vec(message).unwrap_or_default()
}

/// Checks the schema header, reads the envelope and parses the JSON body.
pub fn decode<T: DeserializeOwned>(
    properties: &BasicProperties,
    body: &[u8],
) -> Result<(Envelope, T), DecodeError> {
    let found = integer_header(properties, SCHEMA_HEADER);
    if found != Some(SCHEMA_VERSION) {
        return Err(DecodeError::WrongSchema { found });
    }
    let envelope = Envelope::from_properties(properties)?;
    let message = serde_json::from_slice(body)?;
    Ok((envelope, message))
}

/// Whether a boolean header is present and `true`.
pub fn flag_header(properties: &BasicProperties, name: &str) -> bool {
    matches!(header(properties, name), Some(AMQPValue::Boolean(true)))
}

/// Whether a header of that name is present at all.
pub fn has_header(properties: &BasicProperties, name: &str) -> bool {
    header(properties, name).is_some()
}

/// An integer header (any of AMQP's integer types), e.g. RabbitMQ's `x-delivery-count`.
pub fn integer_header(properties: &BasicProperties, name: &str) -> Option<i64> {
    header(properties, name).and_then(integer)
}

fn header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a AMQPValue> {
    let key: ShortString = name.into();
    properties.headers().as_ref()?.inner().get(&key)
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What one side writes, the other reads back unchanged.
    #[test]
    fn envelope_round_trips_through_properties() {
        let order = Uuid::new_v4();
        let envelope = Envelope::for_order(order, Some("00-abc-def-01".into()));
        let (back, body): (Envelope, serde_json::Value) =
            decode(&envelope.properties(), b"{\"a\":1}").unwrap();
        assert_eq!(back, envelope);
        assert_eq!(body["a"], 1);
    }

    /// A message of another schema version is refused, not guessed at.
    #[test]
    fn refuses_other_schema_versions() {
        let properties = BasicProperties::default();
        let error = decode::<serde_json::Value>(&properties, b"{}").unwrap_err();
        assert!(matches!(error, DecodeError::WrongSchema { found: None }));
    }
}
