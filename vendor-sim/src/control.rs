//! The simulator's own endpoints, for tests and operators.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::state::{SimState, VendorCloud};

/// `/_sim/...`
pub fn router() -> Router<Arc<SimState>> {
    Router::new().route("/stats", get(stats))
}

/// `GET /_sim/stats`: per vendor, servers live now, servers ever made, and the idempotency
/// keys that have more than one server (duplicates).
async fn stats(State(state): State<Arc<SimState>>) -> Json<Value> {
    let hetzner = state.hetzner.lock().map(|cloud| vendor_stats(&cloud));
    Json(json!({
        "vendors": {
            "hetzner": hetzner.unwrap_or_else(|_| json!({"error": "state lock poisoned"})),
        }
    }))
}

fn vendor_stats(cloud: &VendorCloud) -> Value {
    json!({
        "live": cloud.servers.len(),
        "created_total": cloud.created_total,
        "duplicates": cloud.duplicates(),
    })
}
