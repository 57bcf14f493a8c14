//! The dead letters order-api recorded from `provision.dead` (see
//! [`crate::amqp::dead_letter_recorder`]): recorded once each (by fingerprint), listed newest
//! first to admins, dismissed by them.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::Store;
use super::db::{DbTime, time};

/// Where a dead-lettered message was published and refused, why, and its headers: all of
/// it but its body, as read from the dead-letter queue and as `GET /v1/dead-letters` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeadLetterEnvelope {
    /// The queue it was refused on, when known.
    pub queue: Option<String>,
    /// Why it was dead-lettered: a program's reason (undecodable, an unknown schema version
    /// ...) or the broker's (delivered too often without being settled, expired, rejected).
    pub reason: String,
    /// The exchange it was last published to.
    pub exchange: String,
    /// Its routing key, e.g. `request.hetzner`.
    pub routing_key: String,
    /// Its AMQP message id.
    pub message_id: Option<String>,
    /// The order its body names, if any.
    pub order_id: Option<String>,
    /// Its headers, as a JSON object.
    pub headers: serde_json::Value,
}

impl DeadLetterEnvelope {
    /// The envelope recorded in `row`.
    fn from_row(row: &AnyRow) -> anyhow::Result<Self> {
        let headers: String = row.try_get("headers")?;
        Ok(Self {
            queue: row.try_get("queue")?,
            reason: row.try_get("reason")?,
            exchange: row.try_get("exchange")?,
            routing_key: row.try_get("routing_key")?,
            message_id: row.try_get("message_id")?,
            order_id: row.try_get("order_id")?,
            headers: serde_json::from_str(&headers).unwrap_or(serde_json::Value::Null),
        })
    }
}

/// A message from the dead-letter queue, as the consumer read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    /// Identifies the message: a redelivered copy has the same.
    pub fingerprint: String,
    /// Where it went, why it was refused, its headers.
    pub envelope: DeadLetterEnvelope,
    /// Its body, as it was.
    pub body: Vec<u8>,
}

/// A recorded dead letter (`GET /v1/dead-letters`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    /// The entry's id (sorts by recording time).
    pub id: Uuid,
    /// When order-api recorded it from the dead-letter queue.
    pub recorded_at: DateTime<Utc>,
    /// Where it went, why it was refused, its headers.
    #[serde(flatten)]
    pub envelope: DeadLetterEnvelope,
    /// Its body as text, when it is UTF-8.
    pub body: Option<String>,
    /// Its body in base64, when it is not UTF-8.
    pub body_base64: Option<String>,
    /// Its body's size in bytes.
    pub body_bytes: usize,
    /// Whether `body` (or `body_base64`) is only the first [`DeadLetter::EXCERPT_BYTES`] of
    /// it (in lists; `GET /v1/dead-letters/{id}` has it whole).
    pub body_truncated: bool,
}

impl DeadLetter {
    /// The most of a body a list shows.
    pub const EXCERPT_BYTES: usize = 16 * 1024;

    /// The dead letter in `row`, its body cut to `body_limit` bytes (at a character
    /// boundary when it is text).
    fn from_row(row: &AnyRow, body_limit: usize) -> anyhow::Result<Self> {
        use base64::Engine;
        let id: String = row.try_get("id")?;
        let mut body: Vec<u8> = row.try_get("body")?;
        let body_bytes = body.len();
        let body_truncated = body_bytes > body_limit;
        if body_truncated {
            let mut end = body_limit;
            // Cut text where a character ends, so an excerpt of UTF-8 stays UTF-8.
            if let Ok(text) = std::str::from_utf8(&body) {
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
            }
            body.truncate(end);
        }
        let (body, body_base64) = match String::from_utf8(body) {
            Ok(text) => (Some(text), None),
            Err(error) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(error.as_bytes())),
            ),
        };
        Ok(Self {
            id: Uuid::parse_str(&id).context("a dead letter's id")?,
            recorded_at: time(row, "recorded_at")?,
            envelope: DeadLetterEnvelope::from_row(row)?,
            body,
            body_base64,
            body_bytes,
            body_truncated,
        })
    }
}

impl Store {
    /// Records `letter` unless a message with its fingerprint is recorded already; whether
    /// it was new.
    pub async fn record_dead_letter(&self, letter: &NewDeadLetter) -> anyhow::Result<bool> {
        let envelope = &letter.envelope;
        let recorded = sqlx::query(
            "INSERT INTO dead_letters (id, fingerprint, recorded_at, queue, reason, exchange, \
             routing_key, message_id, order_id, headers, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (fingerprint) DO NOTHING",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(&letter.fingerprint)
        .bind(DbTime(Utc::now()))
        .bind(&envelope.queue)
        .bind(&envelope.reason)
        .bind(&envelope.exchange)
        .bind(&envelope.routing_key)
        .bind(&envelope.message_id)
        .bind(&envelope.order_id)
        .bind(envelope.headers.to_string())
        .bind(&letter.body)
        .execute(&self.writer)
        .await
        .context("recording a dead letter")?;
        Ok(recorded.rows_affected() == 1)
    }

    /// Up to `limit` recorded dead letters, newest first, older than the entry `before`
    /// when given (the previous page's last id); bodies cut to
    /// [`DeadLetter::EXCERPT_BYTES`].
    pub async fn dead_letters(
        &self,
        limit: u32,
        before: Option<Uuid>,
    ) -> anyhow::Result<Vec<DeadLetter>> {
        let rows = match before {
            Some(before) => {
                sqlx::query("SELECT * FROM dead_letters WHERE id < $1 ORDER BY id DESC LIMIT $2")
                    .bind(before.to_string())
                    .bind(i64::from(limit))
            }
            None => sqlx::query("SELECT * FROM dead_letters ORDER BY id DESC LIMIT $1")
                .bind(i64::from(limit)),
        }
        .fetch_all(&self.pool)
        .await
        .context("listing dead letters")?;
        rows.iter()
            .map(|row| DeadLetter::from_row(row, DeadLetter::EXCERPT_BYTES))
            .collect()
    }

    /// The dead letter `id`, its body whole; `None` when there is none.
    pub async fn dead_letter(&self, id: Uuid) -> anyhow::Result<Option<DeadLetter>> {
        let row = sqlx::query("SELECT * FROM dead_letters WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .context("reading a dead letter")?;
        row.map(|row| DeadLetter::from_row(&row, usize::MAX))
            .transpose()
    }

    /// How many dead letters are recorded (and not dismissed).
    pub async fn count_dead_letters(&self) -> anyhow::Result<i64> {
        sqlx::query("SELECT COUNT(*) AS n FROM dead_letters")
            .fetch_one(&self.pool)
            .await
            .context("counting dead letters")?
            .try_get("n")
            .context("reading the count of dead letters")
    }

    /// Forgets the dead letter `id` (an operator dealt with it); whether it was there.
    pub async fn dismiss_dead_letter(&self, id: Uuid) -> anyhow::Result<bool> {
        let removed = sqlx::query("DELETE FROM dead_letters WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.writer)
            .await
            .context("dismissing a dead letter")?;
        Ok(removed.rows_affected() == 1)
    }
}
