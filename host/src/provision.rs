//! One order's life at the vendor, apart from any messaging: create the server (idempotent
//! by the order id), then poll it with backoff until it runs, fails, or the budget is spent.
//!
//! Between polls no plugin instance exists: a waiting order costs a timer and this
//! function's small state, not a live instance.

use std::time::Duration;

use provisioner_contract::{
    DeleteRequest, Fault, ProvisionRequest, ServerInfo, ServerStatus, UpdateKind,
};
use tokio::time::Instant;

use crate::bindings::provisioner::provider::types::{
    ProviderError, Server, ServerRequest, ServerStatus as WitStatus,
};
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

/// Longest vendor id or server name the host accepts from a plugin.
const MAX_NAME: usize = 255;
/// Longest address the host accepts from a plugin.
const MAX_ADDRESS: usize = 64;

/// Converts the WIT server into the message type, refusing oversized answers (a plugin must
/// not be able to push megabytes into every message and database row).
pub fn server_info(server: Server) -> Result<ServerInfo, Fault> {
    let too_long = |field: &str, value: &str, max: usize| {
        (value.len() > max).then(|| Fault {
            code: "plugin_bad_answer".into(),
            message: format!(
                "the plugin answered a {field} of {} bytes (at most {max})",
                value.len()
            ),
            retryable: false,
        })
    };
    let checks = [
        too_long("vendor id", &server.vendor_id, MAX_NAME),
        too_long("server name", &server.name, MAX_NAME),
        too_long(
            "IPv4 address",
            server.ipv4.as_deref().unwrap_or(""),
            MAX_ADDRESS,
        ),
        too_long(
            "IPv6 address",
            server.ipv6.as_deref().unwrap_or(""),
            MAX_ADDRESS,
        ),
    ];
    if let Some(fault) = checks.into_iter().flatten().next() {
        return Err(fault);
    }
    if server.vendor_id.is_empty() {
        return Err(Fault {
            code: "plugin_bad_answer".into(),
            message: "the plugin answered an empty vendor id".into(),
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

/// A failed call as the fault the order records.
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
        },
        CallError::Timeout { .. } => ("plugin_timeout", true),
        CallError::MemoryLimit { .. } => ("plugin_memory", false),
        CallError::CapabilityDenied { .. } => ("capability_denied", false),
        CallError::Trap { .. } => ("plugin_trap", false),
    };
    Fault {
        code: code.into(),
        message: error.to_string(),
        retryable,
    }
}

/// Asks the plugin to create the server (or adopt the one made earlier for this order).
pub async fn create(plugin: &Plugin, request: &ProvisionRequest) -> Result<ServerInfo, Fault> {
    let server = plugin
        .create_server(request.order_id, &server_request(request))
        .await
        .map_err(|error| fault(&error))?;
    server_info(server)
}

/// Polls until the server runs (`Active`), fails (`Failed`), or the budget runs out.
///
/// Passing failures of a poll (rate limits, 5xx, timeouts) are not the order's failure:
/// the next poll tries again, until the budget ends.
pub async fn wait_until_running(
    plugin: &Plugin,
    request: &ProvisionRequest,
    mut server: ServerInfo,
    policy: &PollPolicy,
) -> UpdateKind {
    let deadline = Instant::now() + policy.budget;
    let mut delay = policy.initial_delay;
    let mut last_error: Option<CallError> = None;
    loop {
        match server.status {
            ServerStatus::Running => return UpdateKind::Active { server },
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
        let mut wait = delay.min(deadline - now);
        if let Some(CallError::Provider(ProviderError::RateLimited(Some(ms)))) = &last_error {
            wait = wait.max(Duration::from_millis(*ms)).min(deadline - now);
        }
        tokio::time::sleep(wait).await;
        delay = (delay.mul_f32(1.5)).min(policy.max_delay);
        match plugin.get_server(request.order_id, &server.vendor_id).await {
            Ok(current) => match server_info(current) {
                Ok(current) => {
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
            Err(error) if fault(&error).retryable => {
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
    let vendor_id = &request.server.vendor_id;
    let gone = || UpdateKind::Deleted {
        server: ServerInfo {
            status: ServerStatus::Deleted,
            ..request.server.clone()
        },
    };
    match plugin.delete_server(request.order_id, vendor_id).await {
        Ok(()) | Err(CallError::Provider(ProviderError::NotFound(_))) => {}
        Err(error) => {
            return UpdateKind::DeleteFailed {
                fault: fault(&error),
            };
        }
    }
    let deadline = Instant::now() + policy.budget;
    let mut delay = policy.initial_delay;
    loop {
        match plugin.get_server(request.order_id, vendor_id).await {
            Err(CallError::Provider(ProviderError::NotFound(_))) => return gone(),
            Ok(server) if matches!(server.status, WitStatus::Deleted) => {
                return gone();
            }
            Ok(_) => {}
            Err(error) if fault(&error).retryable => {
                tracing::warn!(order_id = %request.order_id, "poll after delete failed, will retry: {error}");
            }
            Err(error) => {
                return UpdateKind::DeleteFailed {
                    fault: fault(&error),
                };
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return UpdateKind::DeleteFailed {
                fault: Fault {
                    code: "delete_timeout".into(),
                    message: format!(
                        "server {vendor_id} was still there {:?} after the delete",
                        policy.budget
                    ),
                    retryable: true,
                },
            };
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay.mul_f32(1.5)).min(policy.max_delay);
    }
}
