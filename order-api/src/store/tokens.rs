//! API tokens in the orders database: made by `order-api tokens create`, stored as their
//! SHA-256 only, looked up on every request, revoked by their public id.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::Store;
use super::db::{DbTime, optional_time, parse_uuid, time};
use super::recent::RecentAnswers;
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
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_id.to_string())
        .bind(auth::token_sha256(&token))
        .bind(tenant)
        .bind(label)
        .bind(DbTime(Utc::now()))
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
                    token_id: parse_uuid(row.try_get("token_id")?)?,
                    tenant: row.try_get("tenant")?,
                    label: row.try_get("label")?,
                    created_at: time(row, "created_at")?,
                    revoked_at: optional_time(row, "revoked_at")?,
                })
            })
            .collect()
    }

    /// Revokes a token; `false` when no unrevoked token has that id.
    pub async fn revoke_token(&self, token_id: Uuid) -> anyhow::Result<bool> {
        let revoked = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE token_id = $2 AND revoked_at IS NULL",
        )
        .bind(DbTime(Utc::now()))
        .bind(token_id.to_string())
        .execute(&self.writer)
        .await
        .context("revoking a token")?
        .rows_affected();
        Ok(revoked == 1)
    }

    /// Who a presented token speaks for; `None` when it is unknown or revoked. A known
    /// token's answer is remembered for [`TOKEN_CACHE_TTL`] (a revoke takes effect within it,
    /// on every instance); unknown tokens are always looked up.
    pub async fn caller(&self, token: &str) -> anyhow::Result<Option<Caller>> {
        self.caller_known_within(token, TOKEN_CACHE_TTL).await
    }

    /// [`Store::caller`], trusting a remembered answer only if it is younger than `max_age`
    /// (an event stream, which re-checks its token every second, asks for a second less than
    /// the cache's time so that it ends within the same time as plain requests).
    pub async fn caller_known_within(
        &self,
        token: &str,
        max_age: Duration,
    ) -> anyhow::Result<Option<Caller>> {
        let sha256 = auth::token_sha256(token);
        if let Some(caller) = self.known_tokens.get(&sha256, max_age) {
            return Ok(Some(caller));
        }
        let row = sqlx::query(
            "SELECT tenant FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(&sha256)
        .fetch_optional(&self.pool)
        .await
        .context("looking up a token")?;
        let caller = row
            .map(|row| {
                let tenant: Option<String> = row.try_get("tenant")?;
                anyhow::Ok(match tenant {
                    Some(tenant) => Caller::Tenant(tenant),
                    None => Caller::Admin,
                })
            })
            .transpose()?;
        if let Some(caller) = &caller {
            self.known_tokens.put(sha256, caller.clone());
        }
        Ok(caller)
    }
}

/// How long a looked-up token is trusted without asking the database again.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);
/// Most tokens remembered at once (the cache starts afresh beyond).
const TOKEN_CACHE_MAX: usize = 10_000;

/// Tokens looked up lately, by SHA-256: spares the database a read on every request.
pub type TokenCache = RecentAnswers<String, Caller>;

/// An empty [`TokenCache`].
pub fn token_cache() -> TokenCache {
    RecentAnswers::new(TOKEN_CACHE_TTL, TOKEN_CACHE_MAX)
}
