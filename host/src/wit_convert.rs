//! Between the plugins' WIT types and the contract's message types: an order as the WIT
//! [`ServerRequest`] a plugin is asked with, a WIT server as the [`ServerInfo`] messages
//! carry, a failed call as the [`Fault`] an order records (with the wait a rate-limited
//! call was told to keep), and a plugin's `validate` as the [`ValidateReply`] of a check
//! ([`verdict`], made by a host or by order-api). Used by the worker, order-api's own plugin
//! check, the conformance kit and the tests alike.

use std::time::Duration;

use provisioner_contract::{
    Fault, ProvisionRequest, ServerInfo, ServerSpec, ServerStatus, ValidateReply,
};

use crate::bindings::types::{ProviderError, Server, ServerRequest, ServerStatus as WitStatus};
use crate::plugin_output;
use crate::runtime::{CallError, Plugin};

/// `plugin`'s verdict on a server of `vendor` (its `validate`), as a host answers
/// order-api's check and as order-api makes the check itself. The plugin's reason was capped
/// and escaped where its answer entered the runtime ([`crate::plugin_output`]), so the
/// verdict, and the `422` order-api makes of it, stay a few KiB whatever the plugin said.
pub async fn verdict(plugin: &Plugin, vendor: String, spec: ServerSpec) -> ValidateReply {
    let request = ProvisionRequest {
        order_id: uuid::Uuid::nil(),
        vendor,
        spec,
        ordered_at: None,
    };
    match plugin.validate(&server_request(&request)).await {
        Ok(()) => ValidateReply::Valid,
        Err(CallError::Provider(ProviderError::InvalidRequest(message))) => {
            ValidateReply::Invalid { message }
        }
        Err(error) => ValidateReply::Unchecked {
            reason: format!("the plugin's validate failed: {error}"),
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A retry waits at most as long as the throttle pauses: `rate-limited(u64::MAX)` is a
    /// ten-minute wait, not an order given up at once.
    #[test]
    fn a_retry_waits_at_most_the_throttles_longest_pause() {
        let forever = CallError::Provider(ProviderError::RateLimited(Some(u64::MAX)));
        assert_eq!(retry_after(&forever), Some(crate::throttle::MAX_PAUSE));
        let second = CallError::Provider(ProviderError::RateLimited(Some(1_000)));
        assert_eq!(retry_after(&second), Some(Duration::from_secs(1)));
    }

    /// A passing failure (the vendor's or the host's) is retried; one that would fail the
    /// same way again is final.
    #[test]
    fn passing_failures_are_retryable_and_the_rest_final() {
        let passing = CallError::Timeout {
            call: "create-server",
            after: Duration::from_secs(30),
        };
        let final_ = CallError::Provider(ProviderError::InvalidRequest("no such size".into()));
        let passing = fault(&passing);
        let final_ = fault(&final_);
        assert_eq!(
            (passing.code.as_str(), passing.retryable),
            ("plugin_timeout", true)
        );
        assert_eq!(
            (final_.code.as_str(), final_.retryable),
            ("invalid_request", false)
        );
        assert!(
            final_.message.contains("no such size"),
            "{}",
            final_.message
        );
    }
}
