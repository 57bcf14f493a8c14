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

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use crate::state::{FaultKind, SimState, Vendor, VendorState};

/// The body of `POST /_sim/<vendor>/faults`, which arms a vendor's own failures (GCE's
/// stock-outs, ARM's allocation failures): the kind, and how many of the next operations
/// it hits (default 1).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArmVendorFault<K> {
    /// The vendor's failure (e.g. [`crate::gcp::ComputeFault`]).
    pub kind: K,
    /// How many of the next operations it hits.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// Arms the asked failures at the end of `armed` and answers `201` with all armed now, or
/// `422` with why the body was refused.
pub fn arm_vendor_faults<K: Clone + serde::Serialize>(
    armed: &mut Vec<K>,
    body: Result<axum::Json<ArmVendorFault<K>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use axum::response::IntoResponse;
    match body {
        Ok(axum::Json(arm)) => {
            armed.extend(std::iter::repeat_n(arm.kind, arm.count as usize));
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({"faults": armed})),
            )
                .into_response()
        }
        Err(rejection) => crate::conventions::unprocessable(rejection.body_text()),
    }
}

/// A vendor store that keeps failures of the vendor's own, armed through
/// `/_sim/<vendor>/faults` (see [`vendor_fault_routes`]).
pub trait ArmedVendorFaults {
    /// The vendor's failure (e.g. [`crate::gcp::ComputeFault`]).
    type Fault: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + 'static;

    /// The failures armed, the next one first.
    fn armed_faults(&mut self) -> &mut Vec<Self::Fault>;
}

/// `/_sim/<vendor>/faults` on a vendor's own store: `GET` lists the armed failures, `POST`
/// arms more ([`arm_vendor_faults`]), `DELETE` disarms them all.
pub fn vendor_fault_routes<S>() -> MethodRouter<VendorState<S>>
where
    S: ArmedVendorFaults + Send + 'static,
{
    get(list_vendor_faults::<S>)
        .post(arm_vendor_fault::<S>)
        .delete(clear_vendor_faults::<S>)
}

async fn arm_vendor_fault<S: ArmedVendorFaults>(
    State(state): State<VendorState<S>>,
    body: Result<axum::Json<ArmVendorFault<S::Fault>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    arm_vendor_faults(state.store().armed_faults(), body)
}

async fn list_vendor_faults<S: ArmedVendorFaults>(
    State(state): State<VendorState<S>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"faults": state.store().armed_faults()}))
}

async fn clear_vendor_faults<S: ArmedVendorFaults>(
    State(state): State<VendorState<S>>,
) -> StatusCode {
    state.store().armed_faults().clear();
    StatusCode::NO_CONTENT
}

/// A vendor's rendering of an injected fault (never called for `Slow` or `LostResponse`).
pub type FaultRenderer = fn(&FaultKind) -> Response;

/// `api`, one vendor's router, answering `vendor`'s armed faults: a request matching one
/// gets it (see [`inject`]), rendered by `render`, before its route or any route layer added
/// to `api` (the vendor's authentication) sees it. Like every route layer it leaves alone
/// requests for no route. Every vendor's router is layered here, at the same place in its
/// chain.
pub fn with_faults<S: Clone + Send + Sync + 'static>(
    api: Router<S>,
    state: &Arc<SimState>,
    vendor: Vendor,
    render: FaultRenderer,
) -> Router<S> {
    let layer = FaultLayer {
        state: state.clone(),
        vendor,
        render,
    };
    api.route_layer(middleware::from_fn_with_state(layer, inject))
}

/// Middleware state: whose API, and how that vendor answers failures.
#[derive(Clone)]
struct FaultLayer {
    /// The simulator.
    state: Arc<SimState>,
    /// The vendor this API belongs to.
    vendor: Vendor,
    /// How the vendor renders faults.
    render: FaultRenderer,
}

/// Applies the first armed fault matching the request, if any.
async fn inject(State(layer): State<FaultLayer>, request: Request, next: Next) -> Response {
    match layer.state.take_fault(
        layer.vendor,
        request.method().as_str(),
        request.uri().path(),
    ) {
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
        // Each vendor answers its own status (see its `render_fault`); this is the usual one.
        FaultKind::NoCapacity => StatusCode::SERVICE_UNAVAILABLE,
        FaultKind::Slow { .. } | FaultKind::LostResponse => StatusCode::OK,
    }
}

/// A vendor's usual rate-limit state, sent on every answer (Hetzner, DigitalOcean):
/// `RateLimit-Limit`, `RateLimit-Remaining`, and the seconds until `RateLimit-Reset`.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitHeaders {
    /// `RateLimit-Limit`.
    pub limit: &'static str,
    /// `RateLimit-Remaining`.
    pub remaining: &'static str,
    /// Seconds from now to `RateLimit-Reset`.
    pub reset_secs: u64,
}

/// Middleware: adds the vendor's usual rate-limit headers to every answer, where a fault has
/// not set its own (see [`fill_rate_limit_headers`]).
pub async fn add_rate_limit_headers(
    State(usual): State<RateLimitHeaders>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    fill_rate_limit_headers(
        response.headers_mut(),
        usual.limit,
        usual.remaining,
        usual.reset_secs,
    );
    response
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

/// A vendor's rate-limit refusal `response` told to retry after `secs` seconds
/// (`Retry-After`, as Compute Engine, ARM, Nova and Example Cloud send it).
pub fn retry_after(mut response: Response, secs: u64) -> Response {
    response
        .headers_mut()
        .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// A vendor's rate-limit refusal `response` with no request left until the limit resets in
/// `secs` seconds (`RateLimit-Remaining: 0`, `RateLimit-Reset`, as Hetzner and DigitalOcean
/// send them).
pub fn rate_limit_spent(mut response: Response, secs: u64) -> Response {
    let headers = response.headers_mut();
    headers.insert("ratelimit-remaining", HeaderValue::from_static("0"));
    if let Ok(reset) = HeaderValue::from_str(&reset_at(secs)) {
        headers.insert("ratelimit-reset", reset);
    }
    response
}

/// Unix time in seconds `secs` from now, for `RateLimit-Reset`.
pub fn reset_at(secs: u64) -> String {
    (chrono::Utc::now().timestamp() + secs as i64).to_string()
}
