//! The fault-injection middleware: answers a request with an armed fault instead of the
//! real answer, in the vendor's own error shape.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::{FaultKind, SimState, Vendor};

/// A vendor's rendering of an injected fault (never called for `Slow`).
pub type FaultRenderer = fn(&FaultKind) -> Response;

/// Middleware state: whose API, and how that vendor answers failures.
#[derive(Clone)]
pub struct FaultLayer {
    /// The simulator.
    pub state: Arc<SimState>,
    /// The vendor this API belongs to.
    pub vendor: Vendor,
    /// How the vendor renders faults.
    pub render: FaultRenderer,
}

/// Applies the first armed fault matching the request, if any.
pub async fn inject(State(layer): State<FaultLayer>, request: Request, next: Next) -> Response {
    match layer
        .state
        .take_fault(layer.vendor, request.method().as_str())
    {
        None => next.run(request).await,
        Some(FaultKind::Slow { delay_ms }) => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            next.run(request).await
        }
        Some(kind) => {
            tracing::info!(vendor = layer.vendor.name(), ?kind, "injecting a fault");
            (layer.render)(&kind)
        }
    }
}

/// The HTTP status of a non-delay fault.
pub fn status_of(kind: &FaultKind) -> StatusCode {
    match kind {
        FaultKind::RateLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
        FaultKind::ServerError { status } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        FaultKind::Unauthorized => StatusCode::UNAUTHORIZED,
        FaultKind::Slow { .. } => StatusCode::OK,
    }
}

/// Adds the vendor's normal rate-limit headers where a fault has not set its own.
pub fn fill_rate_limit_headers(
    headers: &mut HeaderMap,
    limit: &'static str,
    remaining: &'static str,
    reset_secs: u64,
) {
    headers.insert("ratelimit-limit", HeaderValue::from_static(limit));
    if !headers.contains_key("ratelimit-remaining") {
        headers.insert("ratelimit-remaining", HeaderValue::from_static(remaining));
    }
    if !headers.contains_key("ratelimit-reset")
        && let Ok(value) = HeaderValue::from_str(&reset_at(reset_secs))
    {
        headers.insert("ratelimit-reset", value);
    }
}

/// Unix time in seconds `secs` from now, for `RateLimit-Reset`.
pub fn reset_at(secs: u64) -> String {
    (chrono::Utc::now().timestamp() + secs as i64).to_string()
}
