//! Webhook deliveries and the tenants' signing secrets in the orders database.

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::Store;
use super::db::{DbTime, parse_status, parse_uuid, time};
use super::fleets::insert_event;
use super::orders::OrderEvent;
use super::transitions::lock_order;
use crate::webhook_receivers::origin;
use crate::webhook_signing::new_secret;

/// A webhook call waiting for its next attempt.
#[derive(Debug, Clone)]
pub struct WebhookDelivery {
    /// The `webhook-id`: the same on every attempt.
    pub delivery_id: Uuid,
    /// The order it tells of.
    pub order_id: Uuid,
    /// The order's tenant (whose secret signs it).
    pub tenant: String,
    /// Where it goes.
    pub url: String,
    /// The JSON body.
    pub payload: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When it became due (the claim compares it).
    pub next_attempt_at: DateTime<Utc>,
}

impl Store {
    /// The tenant's webhook signing secret, made on first use (a read otherwise: every
    /// webhook call asks for it).
    pub async fn webhook_secret(&self, tenant: &str) -> anyhow::Result<String> {
        let known: Option<String> =
            sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .context("reading a webhook secret")?;
        if let Some(secret) = known {
            return Ok(secret);
        }
        sqlx::query(
            "INSERT INTO webhook_secrets (tenant, secret, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant) DO NOTHING",
        )
        .bind(tenant)
        .bind(new_secret())
        .bind(DbTime(Utc::now()))
        .execute(&self.writer)
        .await
        .context("making a webhook secret")?;
        sqlx::query_scalar("SELECT secret FROM webhook_secrets WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .context("reading a webhook secret")
    }

    /// Up to `limit` deliveries due now, tenants taken in turn: every tenant's oldest first,
    /// then every tenant's second oldest, and so on, at most `per_tenant` of each tenant (so
    /// one tenant with many due deliveries does not crowd the others out of a round).
    pub async fn due_webhooks(
        &self,
        limit: u32,
        per_tenant: usize,
    ) -> anyhow::Result<Vec<WebhookDelivery>> {
        let rows = sqlx::query(
            "SELECT delivery_id, order_id, tenant, url, payload, attempts, next_attempt_at \
             FROM (SELECT delivery_id, order_id, tenant, url, payload, attempts, \
                   next_attempt_at, \
                   ROW_NUMBER() OVER (PARTITION BY tenant ORDER BY next_attempt_at) AS turn \
                   FROM webhook_deliveries \
                   WHERE delivered_at IS NULL AND failed_at IS NULL \
                   AND next_attempt_at <= $1) due \
             WHERE turn <= $2 ORDER BY turn, next_attempt_at LIMIT $3",
        )
        .bind(DbTime(Utc::now()))
        .bind(i64::try_from(per_tenant).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .context("reading due webhooks")?;
        rows.iter()
            .map(|row| {
                Ok(WebhookDelivery {
                    delivery_id: parse_uuid(row.try_get("delivery_id")?)?,
                    order_id: parse_uuid(row.try_get("order_id")?)?,
                    tenant: row.try_get("tenant")?,
                    url: row.try_get("url")?,
                    payload: row.try_get("payload")?,
                    attempts: row.try_get::<i64, _>("attempts")? as u32,
                    next_attempt_at: time(row, "next_attempt_at")?,
                })
            })
            .collect()
    }

    /// Claims a due delivery until `until` (so another order-api instance leaves it alone
    /// while this one calls); `false` when someone else claimed it first.
    pub async fn claim_webhook(
        &self,
        delivery: &WebhookDelivery,
        until: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let claimed = sqlx::query(
            "UPDATE webhook_deliveries SET next_attempt_at = $1 \
             WHERE delivery_id = $2 AND next_attempt_at = $3 AND delivered_at IS NULL \
             AND failed_at IS NULL",
        )
        .bind(DbTime(until))
        .bind(delivery.delivery_id.to_string())
        .bind(DbTime(delivery.next_attempt_at))
        .execute(&self.writer)
        .await
        .context("claiming a webhook delivery")?
        .rows_affected();
        Ok(claimed == 1)
    }

    /// Records an attempt: delivered (`Ok`), to be retried at `retry_at`, or given up (no
    /// `retry_at`); a line in the order's event log says the first and the last.
    /// Nothing is recorded when the claim ran out meanwhile and another attempt took it.
    pub async fn webhook_attempted(
        &self,
        delivery: &WebhookDelivery,
        claimed_until: DateTime<Utc>,
        outcome: Result<u16, String>,
        retry_at: Option<DateTime<Utc>>,
    ) -> anyhow::Result<()> {
        let now = Utc::now();
        let attempts = delivery.attempts + 1;
        // The origin only, as in the log: a URL's path or query may carry a token.
        let receiver = origin(&delivery.url);
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        // One update for every outcome: delivered (`delivered_at`), given up (`failed_at`),
        // or due again at `retry_at`.
        let (delivered_at, failed_at, error, message) = match (&outcome, retry_at) {
            (Ok(status), _) => (
                Some(now),
                None,
                None,
                Some(format!(
                    "webhook delivered to {receiver} ({status}, attempt {attempts})"
                )),
            ),
            (Err(error), Some(_)) => (
                None,
                None,
                Some(error.clone()),
                (attempts == 1)
                    .then(|| format!("webhook to {receiver} failed ({error}); retrying")),
            ),
            (Err(error), None) => (
                None,
                Some(now),
                Some(error.clone()),
                Some(format!(
                    "webhook to {receiver} given up after {attempts} attempts: {error}"
                )),
            ),
        };
        lock_order(&mut tx, delivery.order_id).await?;
        let recorded = sqlx::query(
            "UPDATE webhook_deliveries SET attempts = $1, delivered_at = $2, failed_at = $3, \
             last_error = $4, next_attempt_at = COALESCE($5, next_attempt_at) \
             WHERE delivery_id = $6 AND next_attempt_at = $7",
        )
        .bind(i64::from(attempts))
        .bind(delivered_at.map(DbTime))
        .bind(failed_at.map(DbTime))
        .bind(error)
        .bind(retry_at.map(DbTime))
        .bind(delivery.delivery_id.to_string())
        .bind(DbTime(claimed_until))
        .execute(&mut *tx)
        .await
        .context("recording a webhook attempt")?
        .rows_affected();
        if recorded == 0 {
            tracing::warn!(delivery_id = %delivery.delivery_id, "a webhook attempt outlived its claim; not recorded");
            return Ok(());
        }
        if let Some(message) = message {
            let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = $1")
                .bind(delivery.order_id.to_string())
                .fetch_one(&mut *tx)
                .await
                .context("reading the order of a webhook")?;
            let event = OrderEvent {
                at: now,
                status: parse_status(status)?,
                message,
                attempt: None,
            };
            insert_event(&mut tx, delivery.order_id, &event).await?;
        }
        tx.commit().await.context("committing a webhook attempt")?;
        Ok(())
    }
}
