//! API tokens in the orders database: made by `order-api tokens create`, stored as their
//! SHA-256 only, looked up on every request, revoked by their public id.

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::Store;
use crate::auth::{self, Caller};

/// A token as `order-api tokens list` shows it (never the token itself).
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    /// Its public id (for `tokens revoke`).
    pub token_id: Uuid,
    /// The tenant whose orders it reaches; `None`: an admin token.
    pub tenant: Option<String>,
    /// What it is for, as its maker said.
    pub label: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just made: the only time the secret is seen.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// Its public id.
    pub token_id: Uuid,
    /// The secret to send as `Authorization: Bearer <token>`.
    pub token: String,
}

impl Store {
    /// Makes a token for `tenant` (`None`: an admin token) and stores its hash.
    pub async fn create_token(
        &self,
        tenant: Option<&str>,
        label: &str,
    ) -> anyhow::Result<NewToken> {
        if let Some(tenant) = tenant {
            auth::check_tenant_name(tenant)?;
        }
        let token = auth::new_token();
        let token_id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO api_tokens (token_id, token_sha256, tenant, label, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(token_id.to_string())
        .bind(auth::token_sha256(&token))
        .bind(tenant)
        .bind(label)
        .bind(Utc::now())
        .execute(&self.writer)
        .await
        .context("storing the new token")?;
        Ok(NewToken { token_id, token })
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> anyhow::Result<Vec<TokenInfo>> {
        let rows = sqlx::query(
            "SELECT token_id, tenant, label, created_at, revoked_at FROM api_tokens \
             ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await
        .context("listing tokens")?;
        rows.iter()
            .map(|row| {
                Ok(TokenInfo {
                    token_id: super::parse_uuid(row.try_get("token_id")?)?,
                    tenant: row.try_get("tenant")?,
                    label: row.try_get("label")?,
                    created_at: row.try_get("created_at")?,
                    revoked_at: row.try_get("revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes a token; `false` when no unrevoked token has that id.
    pub async fn revoke_token(&self, token_id: Uuid) -> anyhow::Result<bool> {
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
        )
        .bind(Utc::now())
        .bind(token_id.to_string())
        .execute(&self.writer)
        .await
        .context("revoking a token")?
        .rows_affected();
        Ok(revoked == 1)
    }

    /// Who a presented token speaks for; `None` when it is unknown or revoked.
    pub async fn caller(&self, token: &str) -> anyhow::Result<Option<Caller>> {
        let row = sqlx::query(
            "SELECT tenant FROM api_tokens WHERE token_sha256 = ? AND revoked_at IS NULL",
        )
        .bind(auth::token_sha256(token))
        .fetch_optional(&self.pool)
        .await
        .context("looking up a token")?;
        row.map(|row| {
            let tenant: Option<String> = row.try_get("tenant")?;
            Ok(match tenant {
                Some(tenant) => Caller::Tenant(tenant),
                None => Caller::Admin,
            })
        })
        .transpose()
    }
}
