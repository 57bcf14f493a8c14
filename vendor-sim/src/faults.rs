//! The fault-injection middleware: answers a request with an armed fault instead of the
//! real answer, in the vendor's own error shape; or delays the real answer (`slow`); or
//! carries the request out and loses the answer (`lost_response`).
//!
//! A lost answer is a response whose body fails at its first poll: hyper has then only
//! buffered the status line and headers, not written them, and on a body error it closes
//! the connection without flushing, so the client reads nothing at all (an HTTP/1 client
//! reports the connection closed before the message completed). The simulator's tests
//! (`tests/lost_response.rs`) check that not a byte reaches the client.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use crate::state::{FaultKind, SimState, Vendor};

/// A vendor's rendering of an injected fault (never called for `Slow` or `LostResponse`).
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
        Some(FaultKind::LostResponse) => {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let real = next.run(request).await;
            tracing::info!(
                vendor = layer.vendor.name(),
                %method,
                path,
                status = real.status().as_u16(),
                "injecting a fault: carried out, dropping the connection unanswered"
            );
            lost_response()
        }
        Some(kind) => {
            tracing::info!(vendor = layer.vendor.name(), ?kind, "injecting a fault");
            (layer.render)(&kind)
        }
    }
}

/// A response that is never delivered: its body fails before yielding anything, so hyper
/// aborts the connection before writing the buffered status line (see the module doc).
pub fn lost_response() -> Response {
    let failing = futures_util::stream::once(std::future::ready(Err::<Bytes, _>(
        std::io::Error::other("vendor-sim: lost_response fault"),
    )));
    Response::new(Body::from_stream(failing))
}

/// The HTTP status of a non-delay fault.
pub fn status_of(kind: &FaultKind) -> StatusCode {
    match kind {
        FaultKind::RateLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
        FaultKind::ServerError { status } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        FaultKind::Unauthorized => StatusCode::UNAUTHORIZED,
        FaultKind::Slow { .. } | FaultKind::LostResponse => StatusCode::OK,
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
