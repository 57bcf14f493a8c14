//! Who a request speaks for, as axum extractors: [`Caller`] from the request's bearer token
//! (401 when it is missing, unknown or revoked), [`Admin`] for the operators' endpoints (403
//! to a tenant's token). What a caller may reach is in [`crate::auth`].

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::auth::Caller;
use crate::http::AppState;
use crate::http::problem::ApiError;

/// An admin caller: extracting it answers 403 to a tenant's token.
#[derive(Debug, Clone)]
pub struct Admin;

/// The bearer token of a request.
fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "this endpoint needs an API token: send `Authorization: Bearer <token>`".into(),
            )
        })?
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized(
            "the Authorization header must be `Bearer <token>`".into(),
        ));
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        state
            .store
            .caller(token)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("the API token is unknown or was revoked".into()))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(Admin),
            Caller::Tenant(_) => Err(ApiError::Forbidden(
                "this endpoint is for operators: it needs an admin token".into(),
            )),
        }
    }
}
