//! `provisioner-host` binary: loads the plugins, then serves requests until SIGTERM/Ctrl-C,
//! rescanning the plugins folder for drop-ins.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use provisioner_host::config::HostConfig;
use provisioner_host::plugin_folder::{self, PluginFolder};
use provisioner_host::runtime::PluginRuntime;
use provisioner_host::worker::{self, WorkerSettings};
use provisioner_process as process;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logging = process::init_logging()?;
    let config = HostConfig::parse();
    let amqp_addresses = config.amqp.addresses().map_err(anyhow::Error::msg)?;
    let runtime = Arc::new(
        PluginRuntime::with_limits(config.runtime_limits())
            .context("starting the plugin runtime")?,
    );
    let metrics = runtime.metrics();
    let mut folder = PluginFolder::new(runtime, config.plugins_dir.clone()).with_secrets(
        provisioner_host::secrets::SecretSource::new(config.plugin_secrets_dir.clone()),
    );
    folder.rescan().await?;
    if folder.plugins().is_empty() {
        tracing::warn!(
            "no plugin loaded from {} yet: drop a manifest (*.toml) and its component (*.wasm) there",
            config.plugins_dir.display()
        );
    }
    let (plugins, watcher) = tokio::sync::watch::channel(folder.plugins());
    let shutdown = process::shutdown_token();
    process::watch_stalls(shutdown.clone());
    if let Some(addr) = config.metrics_addr {
        // Bound before serving orders, so a taken port stops the host at start.
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            if let Err(error) = provisioner_host::metrics::serve(listener, metrics, shutdown).await
            {
                tracing::error!("the metrics endpoint stopped: {error:#}");
            }
        });
    }
    tokio::spawn(plugin_folder::watch(
        folder,
        Duration::from_millis(config.plugins_rescan_ms.max(100)),
        plugins,
        shutdown.clone(),
    ));
    let settings = WorkerSettings {
        amqp_url: amqp_addresses,
        topology: config.amqp.topology(),
        host_id: config.host_id(),
        poll: config.poll_policy(),
        announce_interval: Duration::from_secs(config.announce_interval_secs.max(1)),
        retry: config.retry_policy(),
        cleanup_retry: config.cleanup_retry_policy(),
        shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
        clock_skew_allowance: Duration::from_millis(config.clock_skew_allowance_ms),
        result_batch_max: usize::from(config.result_batch_max),
        metrics,
    };
    worker::run(settings, watcher, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
