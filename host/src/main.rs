//! `provisioner-host` binary: loads the plugins, then serves requests until SIGTERM/Ctrl-C.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use provisioner_contract::process;
use provisioner_host::config::HostConfig;
use provisioner_host::runtime::PluginRuntime;
use provisioner_host::worker::{self, WorkerSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    process::init_logging();
    let config = HostConfig::parse();
    let runtime = PluginRuntime::new().context("starting the plugin runtime")?;
    let plugins = runtime.load_dir(&config.plugins_dir).await?;
    if plugins.is_empty() {
        anyhow::bail!(
            "no plugin loaded from {}: put a manifest (*.toml) and its component (*.wasm) there",
            config.plugins_dir.display()
        );
    }
    let shutdown = process::shutdown_token();
    let settings = WorkerSettings {
        amqp_url: config.amqp.amqp_url.clone(),
        topology: config.amqp.topology(),
        host_id: config.host_id(),
        poll: config.poll_policy(),
        announce_interval: Duration::from_secs(config.announce_interval_secs.max(1)),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
    };
    worker::run(settings, plugins, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
