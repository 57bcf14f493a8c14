//! The simulator's own endpoints, for tests and operators:
//! - `GET /_sim/stats`: per vendor, servers live now (and how many of them are still
//!   booting), servers ever made, and the idempotency keys with more than one server
//!   (duplicates);
//! - `GET /_sim/servers`: every live server of every vendor with its idempotency key (the
//!   chaos test finds orphans with it);
//! - `GET|POST|DELETE /_sim/faults`: list, arm, disarm injected faults. `POST` takes
//!   `{"vendor": "hetzner", "kind": "rate_limit", "retry_after_secs": 2, "count": 3,
//!   "method": "POST"}` (kinds: `rate_limit`, `server_error` with `status`,
//!   `unauthorized`, `slow` with `delay_ms`).

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use crate::state::{FaultRule, SimState, Vendor};

/// `/_sim/...`
pub fn router() -> Router<Arc<SimState>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/servers", get(servers))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
}

async fn servers(State(state): State<Arc<SimState>>) -> Json<Value> {
    let mut all = Vec::new();
    for vendor in Vendor::ALL {
        state.with_cloud(vendor, |cloud| {
            for server in cloud.servers.values() {
                all.push(json!({
                    "vendor": vendor.name(),
                    "id": server.id,
                    "name": server.spec.name,
                    "idempotency_key": server.spec.idempotency_key,
                }));
            }
        });
    }
    Json(json!({ "servers": all }))
}

async fn stats(State(state): State<Arc<SimState>>) -> Json<Value> {
    let mut vendors = Map::new();
    for vendor in Vendor::ALL {
        let now = chrono::Utc::now();
        let boot_delay = state.config.boot_delay;
        let stats = state.with_cloud(vendor, |cloud| {
            let booting = cloud
                .servers
                .values()
                .filter(|server| !server.is_booted(boot_delay, now))
                .count();
            json!({
                "live": cloud.servers.len(),
                "booting": booting,
                "created_total": cloud.created_total,
                "duplicates": cloud.duplicates(),
            })
        });
        vendors.insert(vendor.name().into(), stats);
    }
    Json(json!({ "vendors": vendors }))
}

async fn list_faults(State(state): State<Arc<SimState>>) -> Json<Value> {
    Json(json!({ "faults": state.faults() }))
}

async fn add_fault(
    State(state): State<Arc<SimState>>,
    rule: Result<Json<FaultRule>, JsonRejection>,
) -> Response {
    match rule {
        Ok(Json(rule)) => {
            state.add_fault(rule);
            (
                StatusCode::CREATED,
                Json(json!({ "faults": state.faults() })),
            )
                .into_response()
        }
        Err(rejection) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": rejection.body_text() })),
        )
            .into_response(),
    }
}

async fn clear_faults(State(state): State<Arc<SimState>>) -> StatusCode {
    state.clear_faults();
    StatusCode::NO_CONTENT
}
