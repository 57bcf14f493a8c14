//! One order's life on this host, from its request's delivery to the ack: the request
//! (create, delete or cancel), the order's create lease, the plugin's calls (create the
//! server, idempotent by the order id, then wait until it runs ([`super::polling`]); or
//! delete it and wait until it is gone), the progress published on the way, the result
//! published (confirmed), and only then the ack. A passing failure sends the request to a
//! delay queue instead ([`super::retry`]).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::{BasicProperties, Connection};
use provisioner_contract::envelope::integer_header;
use provisioner_contract::{
    CancelRequest, DeleteRequest, Envelope, HostMessage, OrderUpdate, ProvisionRequest, Publisher,
    ServerInfo, ServerStatus, Topology, UpdateKind,
};
use tracing::Instrument;
use uuid::Uuid;

use super::WorkerSettings;
use super::first_copy::{self, CreateLease};
use super::lease::{Lease, Leases};
use super::polling::{PollPolicy, delete_and_wait, wait_until_running};
use super::result_batches::ResultBatcher;
use super::retry::{AfterFailure, AttemptFailure, RETRY_COUNT_HEADER, RetryPolicy};
use crate::bindings::types::Server;
use crate::plugin_output;
use crate::runtime::{CallError, Plugin};
use crate::wit_convert::{server_info, server_request};

/// The leases of this host with the session's connection they are taken on.
#[derive(Clone)]
pub(super) struct SessionLeases {
    pub(super) connection: Arc<Connection>,
    pub(super) leases: Arc<Leases>,
}

impl SessionLeases {
    /// Waits until this task holds the create lease of `order_id` (a holder elsewhere gets
    /// the plugin's call time-out to finish).
    async fn acquire(
        &self,
        settings: &WorkerSettings,
        plugin: &Plugin,
        order_id: Uuid,
    ) -> anyhow::Result<Lease> {
        self.leases
            .acquire(
                &self.connection,
                &settings.topology,
                order_id,
                plugin.limits().call_timeout(),
            )
            .await
    }
}

/// What an order's task gets of its broker session.
pub(super) struct Session {
    /// Publishes progress, retries and dead letters (confirmed).
    pub(super) publisher: Publisher,
    /// Publishes results, with the others ready at the same time.
    pub(super) results: ResultBatcher,
    /// The worker's settings.
    pub(super) settings: Arc<WorkerSettings>,
    /// The create leases, taken on the session's connection.
    pub(super) leases: SessionLeases,
}

/// A request about one order.
pub(super) enum OrderRequest {
    Create(ProvisionRequest),
    Delete(DeleteRequest),
    Cancel(CancelRequest),
}

impl OrderRequest {
    fn order_id(&self) -> Uuid {
        match self {
            OrderRequest::Create(create) => create.order_id,
            OrderRequest::Delete(delete) => delete.order_id,
            OrderRequest::Cancel(cancel) => cancel.order_id,
        }
    }
}

/// Handles an order's request: does it at the vendor (publishing progress on the way),
/// publishes the result, acks. An `Err` means the broker side failed; the delivery stays
/// unacked and is redelivered.
pub(super) async fn handle(
    delivery: Delivery,
    envelope: Envelope,
    request: OrderRequest,
    plugin: Arc<Plugin>,
    session: Session,
) -> anyhow::Result<()> {
    let attempt = attempt(&delivery.properties, delivery.redelivered);
    let order_id = request.order_id();
    let vendor = plugin.vendor().to_string();
    let span = tracing::info_span!(
        "request",
        %order_id,
        %vendor,
        attempt,
        traceparent = envelope.traceparent.as_deref().unwrap_or(""),
    );
    let task = OrderTask {
        plugin: &plugin,
        publisher: &session.publisher,
        results: &session.results,
        settings: &session.settings,
        leases: &session.leases,
        delivery: &delivery,
        order_id,
        vendor: &vendor,
        attempt,
        traceparent: envelope.traceparent.as_deref(),
    };
    async move {
        let ending = match &request {
            OrderRequest::Create(create) => task.create(create).await?,
            OrderRequest::Delete(delete) => task.delete(delete).await,
            OrderRequest::Cancel(cancel) => task.cancel(cancel).await?,
        };
        task.finish(ending, &request).await
    }
    .instrument(span)
    .await
}

/// Which attempt at this request this is: 1, then more after retries and redeliveries.
fn attempt(properties: &BasicProperties, redelivered: bool) -> u32 {
    let retries = integer_header(properties, RETRY_COUNT_HEADER)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    // Quorum queues count earlier deliveries in `x-delivery-count`.
    let redeliveries = match integer_header(properties, "x-delivery-count") {
        Some(count) => u32::try_from(count).unwrap_or(0),
        None if redelivered => 1,
        None => 0,
    };
    retries.saturating_add(redeliveries).saturating_add(1)
}

/// One order's request in hand: what its steps need.
struct OrderTask<'a> {
    plugin: &'a Plugin,
    publisher: &'a Publisher,
    results: &'a ResultBatcher,
    settings: &'a WorkerSettings,
    leases: &'a SessionLeases,
    delivery: &'a Delivery,
    order_id: Uuid,
    vendor: &'a str,
    attempt: u32,
    traceparent: Option<&'a str>,
}

/// How a request ends on this host.
enum Ending {
    /// The order's result: logged, published (confirmed), then the request is acked.
    Result(UpdateKind),
    /// The request went to a delay queue: this news of it is published, then the request
    /// is acked (a later attempt brings the result).
    RetryQueued(UpdateKind),
}

/// How one attempt at the vendor went.
enum AttemptOutcome {
    /// It ended the request: this is the result.
    Ended(UpdateKind),
    /// It failed in a way the retry policy decides about, leaving this server (if any).
    Failed {
        failure: AttemptFailure,
        server: Option<ServerInfo>,
    },
}

impl OrderTask<'_> {
    /// A create: one attempt at the vendor and, after a failure, the retry policy's
    /// decision on the create's budget.
    async fn create(&self, request: &ProvisionRequest) -> anyhow::Result<Ending> {
        tracing::info!("creating server");
        let (failure, server) = match self.attempt_create(request).await? {
            AttemptOutcome::Ended(result) => return Ok(Ending::Result(result)),
            AttemptOutcome::Failed { failure, server } => (failure, server),
        };
        Ok(
            match self.after_failure(&self.settings.retry, failure).await? {
                AfterFailure::Failed(fault) => Ending::Result(UpdateKind::Failed { fault, server }),
                AfterFailure::Retried { fault, delay_ms } => {
                    Ending::RetryQueued(UpdateKind::Retrying {
                        fault,
                        retry_in_ms: delay_ms,
                    })
                }
            },
        )
    }

    /// One create attempt: the create under the order's lease, a progress event unless the
    /// server runs already, then the polls until it runs.
    async fn attempt_create(&self, request: &ProvisionRequest) -> anyhow::Result<AttemptOutcome> {
        let server = match self.create_under_lease(request).await? {
            Ok(server) => server,
            Err(failure) => {
                return Ok(AttemptOutcome::Failed {
                    failure,
                    server: None,
                });
            }
        };
        tracing::info!(vendor_id = %server.vendor_id, "vendor accepted the server");
        // A server that runs already needs no progress event: its `Active` is the only
        // result (one persistent message fewer per order).
        if server.status != ServerStatus::Running {
            self.publish(UpdateKind::Provisioning {
                server: server.clone(),
            })
            .await?;
        }
        Ok(
            match wait_until_running(self.plugin, request, server, &self.settings.poll).await {
                // The vendor gave up placing it while it booted: the attempt failed as a
                // create refused for capacity does, and is retried as one (the next
                // attempt's lookup adopts what is left).
                UpdateKind::Failed { fault, server } if fault.code == "no_capacity" => {
                    AttemptOutcome::Failed {
                        failure: AttemptFailure::of_fault(fault),
                        server,
                    }
                }
                done => AttemptOutcome::Ended(done),
            },
        )
    }

    /// The create under the order's create lease: a copy of this request running here or on
    /// another host finishes first, and this one then adopts the server it made. The
    /// order's first copy on its first delivery skips the lease, cut off in time, and every
    /// other copy waits for that moment first ([`super::first_copy`]).
    async fn create_under_lease(
        &self,
        request: &ProvisionRequest,
    ) -> anyhow::Result<Result<ServerInfo, AttemptFailure>> {
        let plan = first_copy::plan(
            &self.delivery.properties,
            self.delivery.redelivered,
            request,
            chrono::Utc::now(),
            self.settings.clock_skew_allowance,
        );
        let metrics = &self.settings.metrics;
        match plan {
            CreateLease::Skip { cut_off } => {
                metrics.create_lease("skipped");
                tracing::debug!(
                    ?cut_off,
                    "the order's first copy: creating without the lease"
                );
                return Ok(create_new_server_within(self.plugin, request, cut_off).await);
            }
            CreateLease::Take { wait_first } if wait_first.is_zero() => {
                metrics.create_lease("taken");
            }
            CreateLease::Take { wait_first } => {
                metrics.create_lease("taken_after_wait");
                tracing::info!(
                    wait = ?wait_first,
                    "the order's first copy may still be creating without the lease: waiting until it has surely ended"
                );
                tokio::time::sleep(wait_first).await;
            }
        }
        let lease = self
            .leases
            .acquire(self.settings, self.plugin, self.order_id)
            .await?;
        let created = create_server(self.plugin, request).await;
        lease.release().await;
        Ok(created)
    }

    /// A delete: the order's server deleted and waited for until it is gone.
    async fn delete(&self, request: &DeleteRequest) -> Ending {
        tracing::info!(vendor_id = %request.server.vendor_id, "deleting server");
        Ending::Result(delete_server(self.plugin, request, &self.settings.poll).await)
    }

    /// A cancel: one attempt (look up the order's server, delete it) and, after a passing
    /// fault in the lookup or the delete, the retry policy's decision on the clean-up's
    /// budget: the next run looks again.
    async fn cancel(&self, request: &CancelRequest) -> anyhow::Result<Ending> {
        tracing::info!("cancelling: looking for the order's server");
        let (failure, server) = match self.attempt_cancel(request).await? {
            AttemptOutcome::Ended(result) => return Ok(Ending::Result(result)),
            AttemptOutcome::Failed { failure, server } => (failure, server),
        };
        Ok(
            match self
                .after_failure(&self.settings.cleanup_retry, failure)
                .await?
            {
                AfterFailure::Failed(fault) => {
                    Ending::Result(UpdateKind::CancelFailed { fault, server })
                }
                // News for order-api (and its watchdog): the cancel waits for its retry.
                AfterFailure::Retried { fault, .. } => {
                    Ending::RetryQueued(UpdateKind::CancelFailed { fault, server })
                }
            },
        )
    }

    /// One cancel attempt: the lookup under the order's lease, then the delete of what it
    /// found (or its adoption).
    async fn attempt_cancel(&self, request: &CancelRequest) -> anyhow::Result<AttemptOutcome> {
        let found = match self.find_under_lease().await? {
            Ok(found) => found,
            Err(failure) => {
                return Ok(AttemptOutcome::Failed {
                    failure,
                    server: None,
                });
            }
        };
        let adopt = request.adopt_running;
        Ok(
            match cancel_found(
                self.plugin,
                self.order_id,
                found,
                adopt,
                &self.settings.poll,
            )
            .await
            {
                UpdateKind::CancelFailed { fault, server } if fault.retryable => {
                    AttemptOutcome::Failed {
                        failure: AttemptFailure::of_fault(fault),
                        server,
                    }
                }
                done => AttemptOutcome::Ended(done),
            },
        )
    }

    /// Looks for the server an order's create made (by its idempotency key), under the
    /// order's create lease: a create of this order running on another host finishes
    /// first, so its server is found.
    async fn find_under_lease(&self) -> anyhow::Result<Result<Option<ServerInfo>, AttemptFailure>> {
        let lease = self
            .leases
            .acquire(self.settings, self.plugin, self.order_id)
            .await?;
        let found = find_for_cancel(self.plugin, self.order_id).await;
        lease.release().await;
        Ok(found)
    }

    /// The retry policy's decision about a failed attempt (the request is in the delay
    /// queue when this answers `Retried`).
    async fn after_failure(
        &self,
        policy: &RetryPolicy,
        failure: AttemptFailure,
    ) -> anyhow::Result<AfterFailure> {
        super::retry::after_failed_attempt(
            self.publisher,
            policy,
            &self.settings.topology,
            self.delivery,
            self.vendor,
            self.order_id,
            failure,
        )
        .await
    }

    /// Publishes how the request ended, then acks it.
    async fn finish(&self, ending: Ending, request: &OrderRequest) -> anyhow::Result<()> {
        match ending {
            Ending::Result(outcome) => {
                log_outcome(&outcome);
                self.publish_result(outcome).await?;
                self.delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .context("acking the request")?;
            }
            Ending::RetryQueued(news) => {
                self.publish(news).await?;
                let what = match request {
                    OrderRequest::Cancel(_) => "cancel",
                    OrderRequest::Create(_) | OrderRequest::Delete(_) => "request",
                };
                self.delivery
                    .ack(BasicAckOptions::default())
                    .await
                    .with_context(|| format!("acking the {what} after queueing its retry"))?;
            }
        }
        Ok(())
    }

    /// Publishes an update of the order (confirmed), on its own.
    async fn publish(&self, kind: UpdateKind) -> anyhow::Result<()> {
        let (key, envelope, _, body) = self.update_message(kind);
        self.publisher
            .publish(&key, &envelope, &body)
            .await
            .with_context(|| format!("publishing {key} for order {}", self.order_id))
    }

    /// Publishes the order's result (confirmed), with other results ready at the same time
    /// ([`ResultBatcher`]).
    async fn publish_result(&self, kind: UpdateKind) -> anyhow::Result<()> {
        let (key, envelope, update, body) = self.update_message(kind);
        let order_id = self.order_id;
        self.results
            .publish(key.clone(), envelope, update, body)
            .await
            .with_context(|| format!("publishing {key} for order {order_id}"))
    }

    /// The routing key, envelope, update and body of an update of the order: an oversized
    /// one replaced by its `plugin_bad_answer` failure (a result).
    fn update_message(&self, kind: UpdateKind) -> (String, Envelope, OrderUpdate, Vec<u8>) {
        let order_id = self.order_id;
        let update = OrderUpdate {
            order_id,
            vendor: self.vendor.to_string(),
            at: chrono::Utc::now(),
            attempt: self.attempt,
            kind,
        };
        let key = update.routing_key();
        // Never more than the broker takes: an oversized update (a bug upstream let plugin
        // data through uncapped) becomes the order's `plugin_bad_answer` failure, a result,
        // instead of a refused publish that ends the session. Work after a replaced progress
        // event goes on, but order-api keeps the failure.
        let bounded = plugin_output::bounded_body(&HostMessage::OrderUpdate(update.clone()));
        let (key, sent) = match (bounded.replaced, bounded.replacement) {
            (Some(size), Some(HostMessage::OrderUpdate(smaller))) => {
                tracing::error!(
                    size,
                    limit = plugin_output::MAX_UPDATE_BYTES,
                    "an update too large to publish; failing the order with plugin_bad_answer"
                );
                (Topology::result_key(self.vendor), smaller)
            }
            _ => (key, update),
        };
        let envelope = Envelope::for_order(order_id, self.traceparent.map(str::to_string));
        (key, envelope, sent, bounded.body)
    }
}

/// Logs the result of a request.
fn log_outcome(outcome: &UpdateKind) {
    match outcome {
        UpdateKind::Active { server } => {
            tracing::info!(vendor_id = %server.vendor_id, ipv4 = ?server.ipv4, "server running")
        }
        UpdateKind::Deleted { server } => {
            tracing::info!(vendor_id = %server.vendor_id, "server deleted")
        }
        UpdateKind::Adopted { server } => {
            tracing::info!(vendor_id = %server.vendor_id, "found running: kept for the order to adopt")
        }
        UpdateKind::Cancelled { server } => {
            tracing::info!(vendor_id = ?server.as_ref().map(|s| &s.vendor_id), "order cancelled")
        }
        UpdateKind::Failed { fault, .. }
        | UpdateKind::DeleteFailed { fault }
        | UpdateKind::CancelFailed { fault, .. } => {
            tracing::warn!(code = %fault.code, "request failed: {}", fault.message)
        }
        UpdateKind::Provisioning { .. } | UpdateKind::Retrying { .. } => {}
    }
}

/// Asks the plugin to create the server (or adopt the one made earlier for this order).
async fn create_server(
    plugin: &Plugin,
    request: &ProvisionRequest,
) -> Result<ServerInfo, AttemptFailure> {
    created(
        plugin
            .create_server(request.order_id, &server_request(request))
            .await,
    )
}

/// The lease-free first copy's create, cut off after `cut_off`: `create-new-server`, the
/// vendor's create without the look-up before it, since no copy of the order's creates can
/// have made a server yet ([`super::first_copy`]). A create cut off is a passing failure,
/// retried under the lease with the look-up (which adopts what this one made).
async fn create_new_server_within(
    plugin: &Plugin,
    request: &ProvisionRequest,
    cut_off: Duration,
) -> Result<ServerInfo, AttemptFailure> {
    let server_request = server_request(request);
    let create = plugin.create_new_server(request.order_id, &server_request);
    match tokio::time::timeout(cut_off, create).await {
        Ok(answer) => created(answer),
        Err(_) => Err(AttemptFailure::of_call(&CallError::Timeout {
            call: "create-new-server",
            after: cut_off,
        })),
    }
}

/// A create call's answer as the attempt sees it.
fn created(answer: Result<Server, CallError>) -> Result<ServerInfo, AttemptFailure> {
    let server = answer.map_err(|error| AttemptFailure::of_call(&error))?;
    server_info(server).map_err(AttemptFailure::of_fault)
}

/// Deletes an order's server and waits until the vendor no longer has it.
///
/// `not-found`, from the delete or a later poll, means it is gone: a repeated delete (after
/// a redelivery) ends the same way as the first.
async fn delete_server(
    plugin: &Plugin,
    request: &DeleteRequest,
    policy: &PollPolicy,
) -> UpdateKind {
    match delete_and_wait(plugin, Some(request.order_id), &request.server, policy).await {
        Ok(server) => UpdateKind::Deleted { server },
        Err(fault) => UpdateKind::DeleteFailed { fault },
    }
}

/// Looks for the server an order's create made (by the order's idempotency key). A failed
/// lookup is an [`AttemptFailure`]: a passing one is retried like a create.
async fn find_for_cancel(
    plugin: &Plugin,
    order_id: Uuid,
) -> Result<Option<ServerInfo>, AttemptFailure> {
    let found = plugin
        .find_server(&order_id.to_string())
        .await
        .map_err(|error| AttemptFailure::of_call(&error))?;
    found
        .map(server_info)
        .transpose()
        .map_err(AttemptFailure::of_fault)
}

/// Cancels an order whose server `found` is (or none): deletes it and waits until it is gone.
/// With `adopt_running` (the clean-up a placement move waits for), a server found running
/// is kept and answered as [`UpdateKind::Adopted`]: order-api adopts it and calls the move off.
async fn cancel_found(
    plugin: &Plugin,
    order_id: Uuid,
    found: Option<ServerInfo>,
    adopt_running: bool,
    policy: &PollPolicy,
) -> UpdateKind {
    let Some(server) = found else {
        return UpdateKind::Cancelled { server: None };
    };
    if adopt_running && server.status == ServerStatus::Running {
        return UpdateKind::Adopted { server };
    }
    match delete_and_wait(plugin, Some(order_id), &server, policy).await {
        Ok(gone) => UpdateKind::Cancelled { server: Some(gone) },
        Err(fault) => UpdateKind::CancelFailed {
            fault,
            server: Some(server),
        },
    }
}

#[cfg(test)]
mod tests {
    use lapin::types::{AMQPValue, FieldTable};

    use super::*;

    fn with_headers(headers: &[(&str, i64)]) -> BasicProperties {
        let mut table = FieldTable::default();
        for (key, value) in headers {
            table.insert((*key).into(), AMQPValue::LongLongInt(*value));
        }
        BasicProperties::default().with_headers(table)
    }

    #[test]
    fn the_first_attempt_is_one_and_retries_and_redeliveries_count() {
        assert_eq!(attempt(&BasicProperties::default(), false), 1);
        assert_eq!(attempt(&BasicProperties::default(), true), 2);
        assert_eq!(attempt(&with_headers(&[(RETRY_COUNT_HEADER, 2)]), false), 3);
        // A quorum queue's count of earlier deliveries is taken over the redelivered flag.
        let counted = with_headers(&[(RETRY_COUNT_HEADER, 1), ("x-delivery-count", 3)]);
        assert_eq!(attempt(&counted, true), 5);
    }
}
