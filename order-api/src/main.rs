//! `order-api` binary: serves the API, or manages API tokens (`order-api tokens ...`) and
//! tenants' quotas (`order-api tenants ...`).

use anyhow::Context;
use clap::Parser;
use order_api::config::{Cli, Command};
use provisioner_process as process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Token commands print the token on stdout, where the service's logs go: no logging.
    match cli.command {
        Some(Command::Tokens(command)) => return order_api::tokens::run(command).await,
        Some(Command::Tenants(command)) => return order_api::tenants::run(command).await,
        None => {}
    }
    let _logging = process::init_logging()?;
    let config = cli.serve;
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
