//! `order-api` binary.

use anyhow::Context;
use clap::Parser;
use order_api::config::ApiConfig;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = ApiConfig::parse();
    let listener = tokio::net::TcpListener::bind(&config.listen_addr)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "order-api listening");
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        provisioner_contract::shutdown::signal().await;
        // Cancel before logging: if the log pipe is gone, logging can fail.
        trigger.cancel();
        tracing::info!("shutdown requested");
    });
    order_api::serve(config, listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
