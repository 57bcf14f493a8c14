//! The orphan sweep on this host: a vendor's listing (every server carrying our idempotency
//! key) published as its inventory, and the deletes of the servers order-api found no order
//! owns, each answered with how it went. Both are acked only after their answer is
//! confirmed.

use anyhow::Context;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use provisioner_contract::{
    Fault, HostMessage, LabelledServer, Listing, OrphanDeleteRequest, OrphanDeleted, Publisher,
    SweepRequest, Topology, VendorInventory, encode,
};

use super::polling::delete_and_wait;
use super::{WorkerSettings, publish_host_message};
use crate::runtime::Plugin;
use crate::wit_convert::{fault, server_info};

/// Most servers one listing may report: the inventory travels as one message.
const MAX_LISTED: usize = 50_000;

/// The largest inventory sent as one message (RabbitMQ 4 refuses messages above 16 MiB by
/// default).
const MAX_INVENTORY_BYTES: usize = 8 * 1024 * 1024;

/// The orphan sweep's listing: asks the plugin for every server carrying our key and
/// publishes the inventory (confirmed) before acking.
pub(super) async fn list_vendor(
    delivery: Delivery,
    plugin: &Plugin,
    publisher: &Publisher,
    settings: &WorkerSettings,
    sweep: SweepRequest,
) -> anyhow::Result<()> {
    let listing = list(plugin).await;
    log_listing(plugin.vendor(), &sweep, &listing);
    let mut message = HostMessage::Inventory(VendorInventory {
        sweep_id: sweep.sweep_id,
        vendor: plugin.vendor().to_string(),
        host_id: settings.host_id.clone(),
        at: chrono::Utc::now(),
        listing,
    });
    keep_to_one_message(&mut message);
    publish_host_message(publisher, &Topology::result_key(plugin.vendor()), &message).await?;
    delivery
        .ack(BasicAckOptions::default())
        .await
        .context("acking the sweep request")?;
    Ok(())
}

/// Lists the vendor's servers carrying our idempotency key (the orphan sweep). A plugin of
/// an older WIT version cannot list: that is said, not treated as an empty vendor.
async fn list(plugin: &Plugin) -> Listing {
    let servers = match plugin.list_servers().await {
        Ok(Some(servers)) => servers,
        Ok(None) => {
            return Listing::Unsupported {
                reason: format!(
                    "the {} plugin implements provisioner:provider {}, which has no \
                     list-servers (added in 0.2): rebuild it against the current WIT to \
                     have its vendor swept",
                    plugin.vendor(),
                    plugin.wit_version()
                ),
            };
        }
        Err(error) => {
            return Listing::Failed {
                fault: fault(&error),
            };
        }
    };
    if servers.len() > MAX_LISTED {
        return Listing::Failed {
            fault: Fault {
                code: "plugin_bad_answer".into(),
                message: format!(
                    "the plugin listed {} servers (at most {MAX_LISTED} per sweep)",
                    servers.len()
                ),
                retryable: false,
            },
        };
    }
    // Each key and server was checked where the answer entered the host.
    let mut listed = Vec::with_capacity(servers.len());
    for labelled in servers {
        match server_info(labelled.server) {
            Ok(server) => listed.push(LabelledServer {
                idempotency_key: labelled.idempotency_key,
                server,
            }),
            Err(fault) => return Listing::Failed { fault },
        }
    }
    Listing::Listed { servers: listed }
}

/// Logs what the listing found.
fn log_listing(vendor: &str, sweep: &SweepRequest, listing: &Listing) {
    match listing {
        Listing::Listed { servers } => {
            tracing::info!(vendor, sweep_id = %sweep.sweep_id, servers = servers.len(), "listed the vendor's servers")
        }
        Listing::Unsupported { reason } => {
            tracing::warn!(vendor, sweep_id = %sweep.sweep_id, "cannot sweep: {reason}")
        }
        Listing::Failed { fault } => {
            tracing::warn!(vendor, sweep_id = %sweep.sweep_id, code = %fault.code, "listing failed: {}", fault.message)
        }
    }
}

/// One message carries the inventory: one too large for the broker would fail the publish,
/// end the session and come back for ever. An inventory over [`MAX_INVENTORY_BYTES`] says
/// so instead (`inventory_too_large`).
fn keep_to_one_message(message: &mut HostMessage) {
    let size = encode(&*message).len();
    if size > MAX_INVENTORY_BYTES
        && let HostMessage::Inventory(inventory) = message
    {
        tracing::warn!(
            vendor = inventory.vendor.as_str(),
            size,
            "the inventory is too large to send"
        );
        inventory.listing = Listing::Failed {
            fault: Fault {
                code: "inventory_too_large".into(),
                message: format!(
                    "the listing is {size} bytes, more than one message may carry \
                     ({MAX_INVENTORY_BYTES})"
                ),
                retryable: false,
            },
        };
    }
}

/// Deletes a server the sweep found no order owns and publishes how it went.
pub(super) async fn delete_orphan(
    delivery: Delivery,
    plugin: &Plugin,
    publisher: &Publisher,
    settings: &WorkerSettings,
    orphan: OrphanDeleteRequest,
) -> anyhow::Result<()> {
    let vendor_id = &orphan.server.vendor_id;
    tracing::warn!(vendor = plugin.vendor(), %vendor_id, idempotency_key = %orphan.idempotency_key, "deleting an orphan server");
    let order_id = orphan.idempotency_key.parse().ok();
    let outcome = delete_and_wait(plugin, order_id, &orphan.server, &settings.poll).await;
    if let Err(fault) = &outcome {
        tracing::warn!(vendor = plugin.vendor(), %vendor_id, code = %fault.code, "deleting the orphan failed: {}", fault.message);
    }
    let message = HostMessage::OrphanDeleted(OrphanDeleted {
        vendor: plugin.vendor().to_string(),
        vendor_id: vendor_id.clone(),
        at: chrono::Utc::now(),
        fault: outcome.err(),
    });
    publish_host_message(publisher, &Topology::result_key(plugin.vendor()), &message).await?;
    delivery
        .ack(BasicAckOptions::default())
        .await
        .context("acking the orphan delete")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use provisioner_contract::{ServerInfo, ServerStatus};

    use super::*;

    fn inventory_of(servers: usize, name_bytes: usize) -> HostMessage {
        let servers = (0..servers)
            .map(|n| LabelledServer {
                idempotency_key: format!("key-{n}"),
                server: ServerInfo {
                    vendor_id: format!("srv-{n}"),
                    name: "x".repeat(name_bytes),
                    status: ServerStatus::Running,
                    ipv4: None,
                    ipv6: None,
                },
            })
            .collect();
        HostMessage::Inventory(VendorInventory {
            sweep_id: uuid::Uuid::nil(),
            vendor: "acme".into(),
            host_id: "host-1".into(),
            at: chrono::Utc::now(),
            listing: Listing::Listed { servers },
        })
    }

    fn listing(message: &HostMessage) -> &Listing {
        match message {
            HostMessage::Inventory(inventory) => &inventory.listing,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_inventory_that_fits_one_message_is_sent_as_it_is() {
        let mut message = inventory_of(3, 10);
        keep_to_one_message(&mut message);
        assert!(matches!(listing(&message), Listing::Listed { servers } if servers.len() == 3));
    }

    #[test]
    fn an_inventory_too_large_for_one_message_says_so_instead() {
        let mut message = inventory_of(9, 1024 * 1024);
        keep_to_one_message(&mut message);
        match listing(&message) {
            Listing::Failed { fault } => {
                assert_eq!(fault.code, "inventory_too_large");
                assert!(!fault.retryable);
            }
            other => panic!("{other:?}"),
        }
        assert!(encode(&message).len() < MAX_INVENTORY_BYTES);
    }
}
