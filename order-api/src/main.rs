//! `order-api` binary.

use anyhow::Context;
use clap::Parser;
use order_api::config::ApiConfig;
use provisioner_contract::process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    process::init_logging()?;
    let config = ApiConfig::parse();
    let listener = tokio::net::TcpListener::bind(&config.listen_addr)
        .await
        .with_context(|| format!("binding the HTTP API to {}", config.listen_addr))?;
    tracing::info!(addr = %listener.local_addr()?, "order-api listening");
    let shutdown = process::shutdown_token();
    process::watch_stalls(shutdown.clone());
    order_api::serve(config, listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
