//! The vendors' plugins order-api runs itself, for their `validate` alone
//! (`--validate-plugins-dir`): a check made here costs this process about a tenth of a
//! millisecond (a fresh instance and the call), where a check through a host
//! (`amqp::plugin_check`) takes two messages through RabbitMQ, the host's delivery, instance
//! and reply, and the wait for all of it (BENCHMARKS.md, *The plugin check made by order-api
//! itself*).
//!
//! The folder is the hosts' own kind (manifests and components, kept in step with the disk
//! by the host's [`PluginFolder`]), loaded for validation only: no secrets are read and no
//! outbound request is granted, whatever a manifest says ([`PluginFolder::for_validation_only`]).
//! A plugin here judges an order only when it is the version every host serving the vendor
//! announced; otherwise (another version, a rolling upgrade half done, no plugin here) the
//! check goes to a host as without the folder, so a stale copy never decides.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use provisioner_contract::ServerSpec;
use provisioner_host::plugin_folder::{self, PluginFolder, PluginSet};
use provisioner_host::runtime::{PluginRuntime, RuntimeLimits};
use provisioner_host::wit_convert;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::amqp::plugin_check::Verdict;

/// How often the folder is read again (the hosts' default `--plugins-rescan-ms`).
const RESCAN_INTERVAL: Duration = Duration::from_millis(2_000);

/// Plugin calls that may run here at once. A check takes about a tenth of a millisecond, so
/// even 2,000 orders a second keep only a few at once; a check beyond waits for a slot.
const CONCURRENT_CALLS: u32 = 64;

/// The plugins in this process, as the folder holds them now.
#[derive(Clone)]
pub struct LocalPlugins {
    plugins: watch::Receiver<PluginSet>,
}

impl LocalPlugins {
    /// Loads the plugins in `dir` for validation, in the background, and keeps them in step
    /// with it until `shutdown`. Until a plugin is compiled and loaded (a second or two each),
    /// its vendor's checks go to a host, so order-api serves at once. A plugin that does not
    /// load is logged and left out (its vendor's checks go to a host); a folder that cannot
    /// be read at all is an error.
    pub fn open(dir: PathBuf, shutdown: CancellationToken) -> anyhow::Result<Self> {
        std::fs::read_dir(&dir).with_context(|| {
            format!(
                "reading the plugins folder of --validate-plugins-dir {}",
                dir.display()
            )
        })?;
        let runtime = PluginRuntime::with_limits(RuntimeLimits {
            concurrent_calls: CONCURRENT_CALLS,
            ..RuntimeLimits::default()
        })
        .context("starting the plugin runtime for the plugin check")?;
        let mut folder = PluginFolder::new(Arc::new(runtime), dir.clone()).for_validation_only();
        let (sender, receiver) = watch::channel(PluginSet::default());
        tokio::spawn(async move {
            if let Err(error) = folder.rescan().await {
                tracing::error!("loading the plugins of --validate-plugins-dir: {error:#}");
            }
            let plugins = folder.plugins();
            tracing::info!(
                folder = %dir.display(),
                vendors = ?plugins.keys().collect::<Vec<_>>(),
                "checking new orders with these vendors' plugins here (validate only)"
            );
            let _ = sender.send(plugins);
            plugin_folder::watch(folder, RESCAN_INTERVAL, sender, shutdown).await;
        });
        Ok(Self { plugins: receiver })
    }

    /// `vendor`'s plugin here judges `spec`, when it is the version every host serving the
    /// vendor runs (`host_versions`, as announced); `None` when it is not (or there is none
    /// here): ask a host.
    pub async fn check(
        &self,
        vendor: &str,
        spec: &ServerSpec,
        host_versions: &[String],
    ) -> Option<Verdict> {
        let plugin = self.plugins.borrow().get(vendor).cloned()?;
        let version = &plugin.info_cached().version;
        if host_versions.is_empty() || host_versions.iter().any(|v| v != version) {
            return None;
        }
        Some(
            wit_convert::verdict(&plugin, vendor.to_string(), spec.clone())
                .await
                .into(),
        )
    }
}
