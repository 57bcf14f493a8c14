//! What order-api hears of this host's vendors: every served vendor announced (its plugin's
//! name, version and catalogue) each round and when its plugin changes, and a withdrawal
//! when a plugin goes or is in the folder but cannot serve (with why).

use provisioner_contract::{
    HostMessage, Publisher, Topology, VendorAnnouncement, VendorWithdrawal,
};

use super::session::PluginChange;
use super::{WorkerSettings, publish_host_message};
use crate::plugin_folder::PluginSet;
use crate::runtime::Plugin;

/// One announcement round: every served vendor announced, every unavailable one withdrawn
/// with its reason.
pub(super) async fn round(
    publisher: &Publisher,
    settings: &WorkerSettings,
    plugins: &PluginSet,
) -> anyhow::Result<()> {
    for plugin in plugins.values() {
        announce_vendor(publisher, settings, plugin).await?;
    }
    for (vendor, reason) in plugins.unavailable() {
        withdraw_vendor(publisher, settings, vendor, Some(reason)).await?;
    }
    Ok(())
}

/// Vendors whose plugin is here but cannot serve, from `current` to `next`: news of it (a
/// new reason), or of its end when the manifest went. One that now serves was announced
/// when it was started.
pub(super) async fn unavailable_changes(change: &PluginChange<'_>) -> anyhow::Result<()> {
    let (publisher, settings) = (change.publisher, change.settings);
    let (current, next) = (change.current, change.next);
    for (vendor, reason) in next.unavailable() {
        let news = current.unavailable().get(vendor) != Some(reason);
        if news && !current.contains_key(vendor) {
            withdraw_vendor(publisher, settings, vendor, Some(reason)).await?;
        }
    }
    for vendor in current.unavailable().keys() {
        if !next.contains_key(vendor) && !next.unavailable().contains_key(vendor) {
            withdraw_vendor(publisher, settings, vendor, None).await?;
        }
    }
    Ok(())
}

/// Tells order-api this host serves the plugin's vendor.
pub(super) async fn announce_vendor(
    publisher: &Publisher,
    settings: &WorkerSettings,
    plugin: &Plugin,
) -> anyhow::Result<()> {
    let info = plugin.info_cached();
    let message = HostMessage::VendorAnnounced(VendorAnnouncement {
        vendor: plugin.vendor().to_string(),
        display_name: info.display_name.clone(),
        plugin_version: info.version.clone(),
        host_id: settings.host_id.clone(),
        at: chrono::Utc::now(),
        // What its `catalogue` export (WIT 0.5) answered at load; none before 0.5.
        catalogue: plugin.catalogue_cached().cloned(),
    });
    publish_host_message(
        publisher,
        &Topology::announce_key(plugin.vendor()),
        &message,
    )
    .await
}

/// Tells order-api this host no longer serves `vendor`: its plugin was removed, or (with
/// `unavailable`, the reason) it is here but cannot serve.
pub(super) async fn withdraw_vendor(
    publisher: &Publisher,
    settings: &WorkerSettings,
    vendor: &str,
    unavailable: Option<&String>,
) -> anyhow::Result<()> {
    let message = HostMessage::VendorWithdrawn(VendorWithdrawal {
        vendor: vendor.to_string(),
        host_id: settings.host_id.clone(),
        at: chrono::Utc::now(),
        unavailable: unavailable.cloned(),
    });
    publish_host_message(publisher, &Topology::announce_key(vendor), &message).await
}
