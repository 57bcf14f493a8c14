//! `/v1/dead-letters`: what reached the dead-letter queue, with why (recorded by
//! [`crate::amqp::dead_letter_recorder`]); `GET /v1/dead-letters/{id}` reads one with its
//! body whole, and `DELETE` dismisses one an operator dealt with.
//!
//! These are operators' endpoints: they need an admin token (403 for a tenant's). A dead
//! letter's body may be any tenant's order; tenants never see them.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::http::AppState;
use crate::http::caller::Admin;
use crate::http::problem::{ApiError, Problem, excerpt};
use crate::store::DeadLetter;

/// `GET /v1/dead-letters` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterQuery {
    /// Entries per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before.
    #[param(format = Uuid)]
    cursor: Option<String>,
}

/// `GET /v1/dead-letters`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterPage {
    /// Dead letters, newest first.
    dead_letters: Vec<DeadLetter>,
    /// How many are recorded in all (not dismissed).
    total: i64,
    /// Pass as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /v1/dead-letters`: the messages that reached the dead-letter queue, newest first,
/// each with the queue it was refused on and why, its routing key, headers and body (its
/// first 16 KiB: `GET /v1/dead-letters/{id}` has it whole).
#[utoipa::path(
    get,
    path = "/v1/dead-letters",
    tag = "operators",
    params(DeadLetterQuery),
    responses(
        (status = 200, description = "A page of dead letters, newest first", body = DeadLetterPage),
        (status = 400, description = "A malformed query parameter", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "Not an admin token", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn list_dead_letters(
    State(state): State<AppState>,
    _admin: Admin,
    query: Result<Query<DeadLetterQuery>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let Query(query) = query?;
    let (limit, before) = crate::http::orders::page_query(query.limit, query.cursor.as_deref())?;
    let mut dead_letters = state.store.dead_letters(limit + 1, before).await?;
    let more = dead_letters.len() > limit as usize;
    dead_letters.truncate(limit as usize);
    let next_cursor = more
        .then(|| dead_letters.last().map(|letter| letter.id.to_string()))
        .flatten();
    let total = state.store.count_dead_letters().await?;
    Ok(Json(DeadLetterPage {
        dead_letters,
        total,
        next_cursor,
    }))
}

/// `GET /v1/dead-letters/{id}`: one dead letter with its body whole.
#[utoipa::path(
    get,
    path = "/v1/dead-letters/{id}",
    tag = "operators",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "The dead letter, its body whole", body = DeadLetter),
        (status = 403, description = "Not an admin token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such dead letter (or dismissed)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get_dead_letter(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DeadLetter>, ApiError> {
    let not_found = || ApiError::NotFound(format!("no dead letter with id '{}'", excerpt(&id)));
    let parsed = Uuid::parse_str(&id).map_err(|_| not_found())?;
    state
        .store
        .dead_letter(parsed)
        .await?
        .map(Json)
        .ok_or_else(not_found)
}

/// `DELETE /v1/dead-letters/{id}`: forgets a dead letter an operator dealt with.
#[utoipa::path(
    delete,
    path = "/v1/dead-letters/{id}",
    tag = "operators",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses(
        (status = 204, description = "Dismissed"),
        (status = 403, description = "Not an admin token", content_type = "application/problem+json", body = Problem),
        (status = 404, description = "No such dead letter (or already dismissed)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn dismiss_dead_letter(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let not_found = || ApiError::NotFound(format!("no dead letter with id '{}'", excerpt(&id)));
    let parsed = Uuid::parse_str(&id).map_err(|_| not_found())?;
    if state.store.dismiss_dead_letter(parsed).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found())
    }
}
