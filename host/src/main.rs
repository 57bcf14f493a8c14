//! `provisioner-host` binary: loads the plugins, then serves requests until SIGTERM/Ctrl-C.

use anyhow::Context;
use clap::Parser;
use provisioner_contract::Topology;
use provisioner_host::config::HostConfig;
use provisioner_host::runtime::PluginRuntime;
use provisioner_host::worker::{self, WorkerSettings};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = HostConfig::parse();
    let runtime = PluginRuntime::new().context("starting the plugin runtime")?;
    let plugins = runtime.load_dir(&config.plugins_dir).await?;
    if plugins.is_empty() {
        anyhow::bail!(
            "no plugin loaded from {}: put a manifest (*.toml) and its component (*.wasm) there",
            config.plugins_dir.display()
        );
    }
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        provisioner_contract::shutdown::signal().await;
        // Cancel before logging: if the log pipe is gone, logging can fail.
        trigger.cancel();
        tracing::info!("shutdown requested");
    });
    let settings = WorkerSettings {
        amqp_url: config.amqp_url.clone(),
        topology: Topology::with_prefix(&config.amqp_name_prefix),
        host_id: config.host_id(),
        poll: config.poll_policy(),
        announce_interval: std::time::Duration::from_secs(config.announce_interval_secs.max(1)),
        shutdown_grace: std::time::Duration::from_secs(config.shutdown_grace_secs),
    };
    worker::run(settings, plugins, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
