//! One order's life at the vendor, apart from any messaging: create the server (idempotent
//! by the order id), then poll it with backoff until it runs, fails, or the budget is spent.
//!
//! Between polls no plugin instance exists: a waiting order costs a timer and this
//! function's small state, not a live instance.
//!
//! Polls are scheduled by what the vendor has shown: [`BootTimes`] remembers how long its
//! recent servers took, and the first poll waits until a server is likely up; after that
//! the usual backoff (from `initial_delay`, growing by half up to `max_delay`) finds the
//! moment it runs. Thousands of slow creations then cost a few calls each instead of a
//! poll every few seconds, and the gap between "running" and "active" stays short.
//!
//! [`BootTimes`]: crate::boot_times::BootTimes

use std::time::Duration;

use provisioner_contract::{
    DeleteRequest, Fault, LabelledServer, Listing, ProvisionRequest, ServerInfo, ServerStatus,
    UpdateKind,
};
use tokio::time::Instant;
use uuid::Uuid;

use crate::bindings::types::{ProviderError, Server, ServerRequest, ServerStatus as WitStatus};
use crate::plugin_output;
use crate::runtime::{CallError, Plugin};

/// How the host polls a booting server.
#[derive(Debug, Clone)]
pub struct PollPolicy {
    /// Wait before the first poll.
    pub initial_delay: Duration,
    /// The longest wait between polls (the delay grows by half each poll up to this).
    pub max_delay: Duration,
    /// How long a server may take to run, from the create, before the order fails.
    pub budget: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
            budget: Duration::from_secs(15 * 60),
        }
    }
}

/// The WIT request for an order: the order id is the idempotency key.
pub fn server_request(request: &ProvisionRequest) -> ServerRequest {
    let spec = &request.spec;
    ServerRequest {
        idempotency_key: request.order_id.to_string(),
        name: spec.name.clone(),
        region: spec.region.clone(),
        size: spec.size.clone(),
        image: spec.image.clone(),
        ssh_keys: spec.ssh_keys.clone(),
        user_data: spec.user_data.clone(),
        labels: spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Converts the WIT server into the message type. Every server reaching here passed the
/// runtime's boundary ([`crate::plugin_output`]), which refuses oversized or malformed
/// fields; the same check here keeps a server from anywhere else (a test, a future caller)
/// from pushing megabytes into every message and database row.
pub fn server_info(server: Server) -> Result<ServerInfo, Fault> {
    if let Some(problem) = plugin_output::server_problem(&server) {
        return Err(Fault {
            code: "plugin_bad_answer".into(),
            message: format!("the plugin answered {problem}"),
            retryable: false,
        });
    }
    Ok(ServerInfo {
        vendor_id: server.vendor_id,
        name: server.name,
        status: match server.status {
            WitStatus::Provisioning => ServerStatus::Provisioning,
            WitStatus::Running => ServerStatus::Running,
            WitStatus::Stopped => ServerStatus::Stopped,
            WitStatus::Deleting => ServerStatus::Deleting,
            WitStatus::Deleted => ServerStatus::Deleted,
            WitStatus::Error => ServerStatus::Error,
        },
        ipv4: server.ipv4,
        ipv6: server.ipv6,
    })
}

/// A failed call as the fault the order records. Its message is the error's `Display`: a
/// plugin's text in it was capped and escaped where it entered the host, and is never
/// shown through `Debug` (which would escape it again, several times longer).
pub fn fault(error: &CallError) -> Fault {
    let (code, retryable) = match error {
        CallError::Provider(provider) => match provider {
            ProviderError::InvalidRequest(_) => ("invalid_request", false),
            ProviderError::Unauthorized(_) => ("unauthorized", false),
            ProviderError::NotFound(_) => ("not_found", false),
            ProviderError::QuotaExceeded(_) => ("quota_exceeded", false),
            ProviderError::RateLimited(_) => ("rate_limited", true),
            ProviderError::Transient(_) => ("vendor_unavailable", true),
            ProviderError::Internal(_) => ("plugin_error", false),
            ProviderError::NoCapacity(_) => ("no_capacity", true),
        },
        CallError::BadAnswer { .. } => ("plugin_bad_answer", false),
        CallError::Timeout { .. } => ("plugin_timeout", true),
        CallError::MemoryLimit { .. } => ("plugin_memory", false),
        CallError::CapabilityDenied { .. } => ("capability_denied", false),
        CallError::Trap { .. } => ("plugin_trap", false),
        CallError::HostBusy { .. } => ("host_busy", true),
    };
    Fault {
        code: code.into(),
        message: error.to_string(),
        retryable,
    }
}

/// Asks the plugin to create the server (or adopt the one made earlier for this order).
pub async fn create(
    plugin: &Plugin,
    request: &ProvisionRequest,
) -> Result<ServerInfo, CreateFailure> {
    let server = plugin
        .create_server(request.order_id, &server_request(request))
        .await
        .map_err(|error| CreateFailure {
            fault: fault(&error),
            retry_after: retry_after(&error),
        })?;
    server_info(server).map_err(|fault| CreateFailure {
        fault,
        retry_after: None,
    })
}

/// Why a create failed, and how long the vendor asked us to wait before another.
#[derive(Debug, Clone)]
pub struct CreateFailure {
    /// The fault.
    pub fault: Fault,
    /// The vendor's `Retry-After` (or rate-limit reset), when it gave one.
    pub retry_after: Option<Duration>,
}

/// The wait a rate-limited call was told to keep, at most the throttle's
/// [`MAX_PAUSE`](crate::throttle::MAX_PAUSE): a plugin asking for longer (`u64::MAX`) must not
/// make the retry policy give the order up at once.
pub fn retry_after(error: &CallError) -> Option<Duration> {
    match error {
        CallError::Provider(ProviderError::RateLimited(Some(ms))) => {
            Some(Duration::from_millis(*ms).min(crate::throttle::MAX_PAUSE))
        }
        _ => None,
    }
}

/// Polls until the server runs (`Active`), fails (`Failed`), or the budget runs out.
///
/// Passing failures of a poll (rate limits, 5xx, timeouts) are not the order's failure:
/// the next poll tries again, until the budget ends. But `no-capacity` ends the wait at
/// once (`Failed` with `no_capacity`, which the worker retries like a create refused for
/// capacity): the vendor gave up placing the server (a Compute insert's operation ended
/// `ZONE_RESOURCE_POOL_EXHAUSTED`), and polling on cannot change that.
pub async fn wait_until_running(
    plugin: &Plugin,
    request: &ProvisionRequest,
    mut server: ServerInfo,
    policy: &PollPolicy,
) -> UpdateKind {
    let started = Instant::now();
    let deadline = started + policy.budget;
    let boot_times = plugin.boot_times();
    // The first wait: until this vendor's servers are likely up; then the usual backoff.
    let mut likely_up = boot_times.first_wait();
    let mut delay = policy.initial_delay;
    let mut last_error: Option<CallError> = None;
    // When a poll last saw the server booting.
    let mut last_seen_booting = started;
    loop {
        match server.status {
            ServerStatus::Running => {
                boot_times.record(last_seen_booting - started);
                return UpdateKind::Active { server };
            }
            ServerStatus::Error | ServerStatus::Deleted | ServerStatus::Deleting => {
                return UpdateKind::Failed {
                    fault: Fault {
                        code: "vendor_error".into(),
                        message: format!(
                            "the vendor reports server {} as {:?} instead of running",
                            server.vendor_id, server.status
                        ),
                        retryable: true,
                    },
                    server: Some(server),
                };
            }
            ServerStatus::Provisioning | ServerStatus::Stopped => {}
        }
        let now = Instant::now();
        if now >= deadline {
            let detail = last_error
                .map(|e| format!("; last poll error: {e}"))
                .unwrap_or_default();
            return UpdateKind::Failed {
                fault: Fault {
                    code: "provision_timeout".into(),
                    message: format!(
                        "server {} was not running within {:?}{detail}",
                        server.vendor_id, policy.budget
                    ),
                    retryable: true,
                },
                server: Some(server),
            };
        }
        let planned = match likely_up.take() {
            // The long first wait; the backoff after it starts from `initial_delay`.
            Some(likely) => likely.max(policy.initial_delay),
            None => {
                let planned = delay;
                delay = delay.mul_f32(1.5).min(policy.max_delay);
                planned
            }
        };
        let mut wait = planned.min(deadline - now);
        if let Some(asked) = last_error.as_ref().and_then(retry_after) {
            wait = wait.max(asked).min(deadline - now);
        }
        tokio::time::sleep(wait).await;
        let polled_at = Instant::now();
        match plugin
            .get_server(Some(request.order_id), &server.vendor_id)
            .await
        {
            Ok(current) => match server_info(current) {
                Ok(current) => {
                    if current.status != ServerStatus::Running {
                        last_seen_booting = polled_at;
                    }
                    server = current;
                    last_error = None;
                }
                Err(fault) => {
                    return UpdateKind::Failed {
                        fault,
                        server: Some(server),
                    };
                }
            },
            Err(error)
                if fault(&error).retryable
                    && !matches!(error, CallError::Provider(ProviderError::NoCapacity(_))) =>
            {
                tracing::warn!(order_id = %request.order_id, "poll failed, will retry: {error}");
                last_error = Some(error);
            }
            Err(error) => {
                return UpdateKind::Failed {
                    fault: fault(&error),
                    server: Some(server),
                };
            }
        }
    }
}

/// Deletes an order's server and waits until the vendor no longer has it.
///
/// `not-found`, from the delete or a later poll, means it is gone: a repeated delete (after
/// a redelivery) ends the same way as the first.
pub async fn delete(plugin: &Plugin, request: &DeleteRequest, policy: &PollPolicy) -> UpdateKind {
    match delete_and_wait(plugin, Some(request.order_id), &request.server, policy).await {
        Ok(server) => UpdateKind::Deleted { server },
        Err(fault) => UpdateKind::DeleteFailed { fault },
    }
}

/// Looks for the server an order's create made (by the order's idempotency key). A failed
/// lookup is a [`CreateFailure`]: a passing one is retried like a create.
pub async fn find_for_cancel(
    plugin: &Plugin,
    order_id: Uuid,
) -> Result<Option<ServerInfo>, CreateFailure> {
    let found = plugin
        .find_server(&order_id.to_string())
        .await
        .map_err(|error| CreateFailure {
            fault: fault(&error),
            retry_after: retry_after(&error),
        })?;
    found
        .map(server_info)
        .transpose()
        .map_err(|fault| CreateFailure {
            fault,
            retry_after: None,
        })
}

/// Cancels an order whose server `found` is (or none): deletes it and waits until it is gone.
/// With `adopt_running` (the clean-up a placement move waits for), a server found running
/// is kept and answered as [`UpdateKind::Adopted`]: order-api adopts it and calls the move off.
pub async fn cancel(
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

/// Deletes a server and polls until the vendor says it is gone (an order's, or an orphan's
/// when `order_id` is none). Answers the server with status `deleted`, or why it is still
/// there.
pub async fn delete_and_wait(
    plugin: &Plugin,
    order_id: Option<Uuid>,
    server: &ServerInfo,
    policy: &PollPolicy,
) -> Result<ServerInfo, Fault> {
    let vendor_id = &server.vendor_id;
    let gone = || ServerInfo {
        status: ServerStatus::Deleted,
        ..server.clone()
    };
    match plugin.delete_server(order_id, vendor_id).await {
        Ok(()) | Err(CallError::Provider(ProviderError::NotFound(_))) => {}
        Err(error) => return Err(fault(&error)),
    }
    let deadline = Instant::now() + policy.budget;
    let mut delay = policy.initial_delay;
    loop {
        match plugin.get_server(order_id, vendor_id).await {
            Err(CallError::Provider(ProviderError::NotFound(_))) => return Ok(gone()),
            Ok(server) if matches!(server.status, WitStatus::Deleted) => return Ok(gone()),
            Ok(_) => {}
            Err(error) if fault(&error).retryable => {
                tracing::warn!(?order_id, %vendor_id, "poll after delete failed, will retry: {error}");
            }
            Err(error) => return Err(fault(&error)),
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Fault {
                code: "delete_timeout".into(),
                message: format!(
                    "server {vendor_id} was still there {:?} after the delete",
                    policy.budget
                ),
                retryable: true,
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay.mul_f32(1.5)).min(policy.max_delay);
    }
}

/// Most servers one listing may report: the inventory travels as one message.
pub const MAX_LISTED: usize = 50_000;

/// Lists the vendor's servers carrying our idempotency key (the orphan sweep). A plugin of
/// an older WIT version cannot list: that is said, not treated as an empty vendor.
pub async fn list(plugin: &Plugin) -> Listing {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A retry waits at most as long as the throttle pauses: `rate-limited(u64::MAX)` is a
    /// ten-minute wait, not an order given up at once.
    #[test]
    fn a_retry_waits_at_most_the_throttles_longest_pause() {
        let forever = CallError::Provider(ProviderError::RateLimited(Some(u64::MAX)));
        assert_eq!(retry_after(&forever), Some(crate::throttle::MAX_PAUSE));
        let second = CallError::Provider(ProviderError::RateLimited(Some(1_000)));
        assert_eq!(retry_after(&second), Some(secs(1)));
    }

}
