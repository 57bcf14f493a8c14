//! `order-api tokens create|list|revoke`: API token management on the orders database.

use std::io::Write;

use anyhow::Context;

use crate::config::TokensCommand;
use crate::store::Store;

/// Runs a `tokens` subcommand. `create` prints the token alone on standard output (for
/// scripts) and what it is on standard error.
pub async fn run(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create {
            tenant,
            admin,
            label,
            database,
        } => {
            let store = Store::connect(&database.database_url).await?;
            let tenant = if admin { None } else { tenant };
            let made = store.create_token(tenant.as_deref(), &label).await?;
            let whose = tenant
                .map(|t| format!("tenant '{t}'"))
                .unwrap_or_else(|| "admin".into());
            eprintln!(
                "made a {whose} token (id {}); send it as `Authorization: Bearer <token>`; \
                 it is not shown again",
                made.token_id
            );
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", made.token).context("printing the token")?;
        }
        TokensCommand::List { database } => {
            let store = Store::connect(&database.database_url).await?;
            let tokens = store.tokens().await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<36}  {:<20}  {:<25}  {:<8}  label",
                "token id", "tenant", "created", "state"
            )?;
            for token in tokens {
                let state = if token.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                writeln!(
                    out,
                    "{:<36}  {:<20}  {:<25}  {:<8}  {}",
                    token.token_id,
                    token.tenant.as_deref().unwrap_or("(admin)"),
                    token.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    state,
                    token.label
                )?;
            }
        }
        TokensCommand::Revoke { token_id, database } => {
            let store = Store::connect(&database.database_url).await?;
            anyhow::ensure!(
                store.revoke_token(token_id).await?,
                "no active token has id {token_id} (see `order-api tokens list`)"
            );
            eprintln!("revoked token {token_id}");
        }
    }
    Ok(())
}
