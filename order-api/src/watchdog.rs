//! The watchdog: an order that has had no news for `--watchdog-after-secs` while
//! `queued`, `provisioning` or `deleting` gets its request sent again through the outbox.
//!
//! News stops when a message is lost outside our guarantees (a queue purged or deleted by
//! an operator, a result dead-lettered) or a host is stuck. Sending the request again is
//! safe: the host's create adopts the server already made for the order (or makes it, if
//! none was), and its delete of a server already gone reports it deleted; duplicate results
//! change nothing. The order's event log says when the watchdog stepped in.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use provisioner_contract::{CancelRequest, DeleteRequest, HostRequest, ProvisionRequest};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::OrderStatus;
use crate::store::{Order, OutboxMessage, Store};

/// Orders re-sent per sweep at most (the rest wait for the next sweep).
const SWEEP_LIMIT: u32 = 500;

/// When the watchdog steps in.
#[derive(Debug, Clone, Copy)]
pub struct WatchdogSettings {
    /// No news for this long makes an order stalled.
    pub after: Duration,
    /// Time between sweeps.
    pub every: Duration,
    /// A server of an order with a placement that no host took for this long, while no host
    /// of its vendor announced itself, moves to the next candidate (`None`: never).
    pub no_host: Option<Duration>,
}

/// Sweeps until `shutdown`.
pub async fn run(
    store: Store,
    relay_wakeup: Arc<Notify>,
    settings: WatchdogSettings,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.every) => {}
        }
        match sweep(&store, settings.after).await {
            Ok(0) => {}
            Ok(resent) => {
                tracing::warn!(resent, "watchdog re-sent the requests of stalled orders");
                relay_wakeup.notify_one();
            }
            Err(error) => tracing::error!("watchdog sweep failed: {error:#}"),
        }
        match store.release_waiting_moves(settings.after).await {
            Ok(0) => {}
            Ok(released) => {
                tracing::warn!(
                    released,
                    "watchdog sent the creates of moves whose clean-up did not answer"
                );
                relay_wakeup.notify_one();
            }
            Err(error) => tracing::error!("releasing waiting moves failed: {error:#}"),
        }
        if let Some(no_host) = settings.no_host {
            match store.move_unserved(no_host).await {
                Ok(0) => {}
                Ok(moved) => {
                    tracing::warn!(
                        moved,
                        "servers moved to their next placement candidate: no host served their vendor"
                    );
                    relay_wakeup.notify_one();
                }
                Err(error) => tracing::error!("moving unserved servers failed: {error:#}"),
            }
        }
    }
}

/// One sweep; returns how many requests were sent again.
pub async fn sweep(store: &Store, after: Duration) -> anyhow::Result<usize> {
    let after = chrono::Duration::from_std(after)?;
    let stalled = store
        .stalled_orders(Utc::now() - after, SWEEP_LIMIT)
        .await?;
    let mut resent = 0;
    for order in stalled {
        let Some(request) = request_for(&order) else {
            continue;
        };
        let outbox = OutboxMessage::request(order.id, &order.vendor, &request, None);
        let message = format!(
            "no news for {} s while {}: request sent again (watchdog)",
            after.num_seconds(),
            order.status
        );
        if store.redrive(&order, &outbox, &message).await? {
            tracing::warn!(order_id = %order.id, status = %order.status, "stalled order: request sent again");
            resent += 1;
        }
    }
    Ok(resent)
}

/// The request that moves a stalled order on: its create, the delete of its server, or its
/// cancel.
fn request_for(order: &Order) -> Option<HostRequest> {
    match (order.status, &order.server) {
        (OrderStatus::Queued | OrderStatus::Provisioning, _) => {
            Some(HostRequest::Create(ProvisionRequest {
                order_id: order.id,
                vendor: order.vendor.clone(),
                spec: order.spec.clone(),
                ordered_at: Some(order.created_at),
            }))
        }
        (OrderStatus::Deleting, Some(server)) => Some(HostRequest::Delete(DeleteRequest {
            order_id: order.id,
            vendor: order.vendor.clone(),
            server: server.clone(),
        })),
        (OrderStatus::Cancelling, _) => Some(HostRequest::Cancel(CancelRequest {
            order_id: order.id,
            vendor: order.vendor.clone(),
            adopt_running: false,
        })),
        _ => None,
    }
}
