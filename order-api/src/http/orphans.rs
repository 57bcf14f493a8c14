//! `/v1/orphans`: what the orphan sweep found (servers carrying our key that no order
//! owns) and each vendor's latest sweep; `POST /v1/orphans/sweep` runs a sweep now.
//!
//! These are operators' endpoints: once API tokens exist (tenants), they are admin-only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::json;

use crate::http::AppState;
use crate::http::problem::ApiError;

/// `GET /v1/orphans`: orphans still at the vendor first, then those deleted or gone; and
/// the latest sweep of each vendor.
pub async fn list_orphans(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let orphans = state.store.orphans().await?;
    let sweeps = state.store.sweeps().await?;
    Ok(Json(json!({"orphans": orphans, "sweeps": sweeps})))
}

/// `POST /v1/orphans/sweep`: asks for a sweep of every announced vendor now (once the
/// broker session is up); answers at once, follow `GET /v1/orphans`.
pub async fn sweep_now(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    state.sweep_now.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(json!({"sweep": "requested", "follow": "/v1/orphans"})),
    )
}
