//! One delivery from a vendor's request queue: decoded, checked to be for the queue's
//! vendor, and handed to what it asks for: an order's create, delete or cancel
//! ([`super::order`]), or the sweep's listing or an orphan's delete ([`super::sweep`]). A
//! request that cannot be read, or is for another vendor, is poison: it goes to the
//! dead-letter queue with the reason, and is acked.

use std::sync::Arc;

use anyhow::Context;
use lapin::BasicProperties;
use lapin::message::Delivery;
use provisioner_contract::{Envelope, HostRequest, Publisher, decode};

use super::order::{self, OrderRequest, SessionLeases};
use super::result_batches::ResultBatcher;
use super::{WorkerSettings, sweep};
use crate::runtime::Plugin;

/// One request: decode, do it (publishing progress on the way), publish the result, ack.
/// An `Err` means the broker side failed; the delivery stays unacked and is redelivered.
pub(super) async fn handle(
    delivery: Delivery,
    plugin: Arc<Plugin>,
    publisher: Publisher,
    results: ResultBatcher,
    settings: Arc<WorkerSettings>,
    leases: SessionLeases,
) -> anyhow::Result<()> {
    let (envelope, request) =
        match request_for(plugin.vendor(), &delivery.properties, &delivery.data) {
            Ok(decoded) => decoded,
            Err(reason) => {
                return dead_letter(&publisher, &settings, plugin.vendor(), &delivery, &reason)
                    .await;
            }
        };
    let request = match request {
        HostRequest::Create(create) => OrderRequest::Create(create),
        HostRequest::Delete(delete) => OrderRequest::Delete(delete),
        HostRequest::Cancel(cancel) => OrderRequest::Cancel(cancel),
        HostRequest::Sweep(sweep) => {
            return sweep::list_vendor(delivery, &plugin, &publisher, &settings, sweep).await;
        }
        HostRequest::DeleteOrphan(orphan) => {
            return sweep::delete_orphan(delivery, &plugin, &publisher, &settings, orphan).await;
        }
    };
    let session = order::Session {
        publisher,
        results,
        settings,
        leases,
    };
    order::handle(delivery, envelope, request, plugin, session).await
}

/// The request a delivery on `vendor`'s queue carries; or, when it cannot be read or is for
/// another vendor, why it is poison (logged here).
fn request_for(
    vendor: &str,
    properties: &BasicProperties,
    data: &[u8],
) -> Result<(Envelope, HostRequest), String> {
    let decoded: Result<(Envelope, HostRequest), _> = decode(properties, data);
    match decoded {
        Ok(decoded) if decoded.1.vendor() == vendor => Ok(decoded),
        Ok((_, request)) => {
            let reason = format!(
                "request for vendor '{}' on the queue of '{vendor}'",
                request.vendor(),
            );
            tracing::error!(order_id = ?request.order_id(), "{reason}; dead-lettering it");
            Err(reason)
        }
        Err(error) => {
            let reason = format!("undecodable request: {error}");
            tracing::error!(vendor, "{reason}; dead-lettering it");
            Err(reason)
        }
    }
}

/// Sends a poison request to `provision.dead` with the reason.
async fn dead_letter(
    publisher: &Publisher,
    settings: &WorkerSettings,
    vendor: &str,
    delivery: &Delivery,
    reason: &str,
) -> anyhow::Result<()> {
    let queue = settings.topology.request_queue(vendor);
    publisher
        .dead_letter(&settings.topology, &queue, delivery, reason)
        .await
        .context("dead-lettering a request")
}

#[cfg(test)]
mod tests {
    use provisioner_contract::{SweepRequest, encode};

    use super::*;

    fn sweep_of(vendor: &str) -> (BasicProperties, Vec<u8>) {
        let request = HostRequest::Sweep(SweepRequest {
            sweep_id: uuid::Uuid::new_v4(),
            vendor: vendor.into(),
        });
        let envelope = Envelope::for_order(uuid::Uuid::nil(), None);
        (envelope.properties(), encode(&request))
    }

    #[test]
    fn a_request_for_the_queues_vendor_is_taken() {
        let (properties, data) = sweep_of("acme");
        let (_, request) = request_for("acme", &properties, &data).expect("taken");
        assert!(matches!(request, HostRequest::Sweep(sweep) if sweep.vendor == "acme"));
    }

    #[test]
    fn a_request_for_another_vendor_is_poison() {
        let (properties, data) = sweep_of("other");
        let reason = request_for("acme", &properties, &data).expect_err("poison");
        assert_eq!(reason, "request for vendor 'other' on the queue of 'acme'");
    }

    #[test]
    fn an_unreadable_request_is_poison() {
        let (properties, _) = sweep_of("acme");
        let reason = request_for("acme", &properties, b"{not json").expect_err("poison");
        assert!(reason.starts_with("undecodable request: "), "{reason}");
        let reason = request_for("acme", &BasicProperties::default(), b"{}").expect_err("poison");
        assert!(reason.starts_with("undecodable request: "), "{reason}");
    }
}
