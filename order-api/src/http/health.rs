//! `/healthz` (the process answers), `/readyz` (orders can flow: the database answers,
//! the broker session is up, at least one vendor is served; and which broker address the
//! session is on) and `/metrics` (Prometheus).

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use crate::http::AppState;
use crate::http::problem::ApiError;

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// `GET /metrics`: the series of [`crate::metrics`] as OpenMetrics text.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let text = state.metrics.render(&state.store).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

/// `GET /readyz`: 200 when orders can flow, else 503 with the failing checks.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let database = state.store.ping().await;
    let broker = state.broker_up.load(Ordering::Relaxed);
    let vendors = match state.store.vendors().await {
        Ok(vendors) => vendors.len(),
        Err(_) => 0,
    };
    let ready = database && broker && vendors > 0;
    let node = state.metrics.broker_node.get();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {
            "database": if database { "ok" } else { "unreachable" },
            "broker": if broker { "connected" } else { "disconnected" },
            "vendors": vendors,
        },
        "broker_node": node,
    });
    (status, Json(body))
}
