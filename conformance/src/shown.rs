//! How the kit shows what a plugin answered, in a check's details: a call's result, a
//! failed call, a status or an error as its WIT case. Every suite, the clean-up and the
//! catalogue and cache checks write details this way.

use provisioner_host::bindings::types::{ProviderError, ServerStatus};
use provisioner_host::runtime::CallError;

/// How a call ended, for details.
pub fn shown<T: std::fmt::Debug>(result: &Result<T, CallError>) -> String {
    match result {
        Ok(value) => format!("Ok({value:?})"),
        Err(error) => shown_error(error),
    }
}

/// A failed call, for details.
pub fn shown_error(error: &CallError) -> String {
    match error {
        CallError::Provider(error) => provider_case(error),
        error => format!("host fault: {error}"),
    }
}

/// A status as its WIT case.
pub fn status(status: ServerStatus) -> &'static str {
    match status {
        ServerStatus::Provisioning => "provisioning",
        ServerStatus::Running => "running",
        ServerStatus::Stopped => "stopped",
        ServerStatus::Deleting => "deleting",
        ServerStatus::Deleted => "deleted",
        ServerStatus::Error => "error",
    }
}

/// A provider error as its WIT case.
fn provider_case(error: &ProviderError) -> String {
    match error {
        ProviderError::InvalidRequest(m) => format!("invalid-request({m})"),
        ProviderError::Unauthorized(m) => format!("unauthorized({m})"),
        ProviderError::NotFound(m) => format!("not-found({m})"),
        ProviderError::QuotaExceeded(m) => format!("quota-exceeded({m})"),
        ProviderError::RateLimited(ms) => format!("rate-limited({ms:?})"),
        ProviderError::Transient(m) => format!("transient({m})"),
        ProviderError::Internal(m) => format!("internal({m})"),
        ProviderError::NoCapacity(m) => format!("no-capacity({m})"),
    }
}
