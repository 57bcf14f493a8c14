//! `/v1/orphans`: what the orphan sweep found (servers carrying our key that no order
//! owns) and each vendor's latest sweep; `POST /v1/orphans/sweep` runs a sweep now.
//!
//! These are operators' endpoints: they need an admin token (403 for a tenant's).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::http::AppState;
use crate::http::caller::Admin;
use crate::http::problem::{ApiError, Problem};
use crate::store::{Orphan, Sweep};

/// `GET /v1/orphans`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrphanReport {
    /// Orphans still at the vendor first, then those deleted or gone.
    orphans: Vec<Orphan>,
    /// The latest sweep of each vendor.
    sweeps: Vec<Sweep>,
}

/// `GET /v1/orphans`: orphans still at the vendor first, then those deleted or gone; and
/// the latest sweep of each vendor.
#[utoipa::path(
    get,
    path = "/v1/orphans",
    tag = "operators",
    responses(
        (status = 200, description = "What the orphan sweep found", body = OrphanReport),
        (status = 403, description = "Not an admin token", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn list_orphans(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<OrphanReport>, ApiError> {
    let orphans = state.store.orphans().await?;
    let sweeps = state.store.sweeps().await?;
    Ok(Json(OrphanReport { orphans, sweeps }))
}

/// `POST /v1/orphans/sweep`'s answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SweepRequested {
    /// `requested`.
    sweep: String,
    /// Where to follow it: `/v1/orphans`.
    follow: String,
}

/// `POST /v1/orphans/sweep`: asks for a sweep of every announced vendor now (once the
/// broker session is up); answers at once, follow `GET /v1/orphans`.
#[utoipa::path(
    post,
    path = "/v1/orphans/sweep",
    tag = "operators",
    responses(
        (status = 202, description = "A sweep of every vendor was asked for", body = SweepRequested),
        (status = 403, description = "Not an admin token", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn sweep_now(
    State(state): State<AppState>,
    _admin: Admin,
) -> (StatusCode, Json<SweepRequested>) {
    state.sweep_now.notify_one();
    (
        StatusCode::ACCEPTED,
        Json(SweepRequested {
            sweep: "requested".into(),
            follow: "/v1/orphans".into(),
        }),
    )
}
