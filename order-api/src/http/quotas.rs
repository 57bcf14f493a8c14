//! Tenants' quotas and order rates: `GET /v1/quotas` (a tenant's own limits and usage),
//! `GET` and `PUT /v1/tenants/{tenant}/quotas` (admins: any tenant's; `PUT` replaces every
//! quota and the rate of the tenant). How they are enforced: `store::quotas` (refused at
//! commit with `422 quota-exceeded`) and [`crate::rates`] (`429 rate-limited`).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::auth::{Caller, check_tenant_name};
use crate::http::AppState;
use crate::http::caller::Admin;
use crate::http::problem::{ApiError, FieldError, Problem, excerpt};
use crate::store::{QuotaSet, TenantQuotas};

/// Most vendors one tenant's quotas may name.
const MAX_VENDOR_QUOTAS: usize = 64;

/// `GET /v1/quotas`: the calling tenant's limits, usage and order rate.
#[utoipa::path(
    get,
    path = "/v1/quotas",
    tag = "orders",
    responses(
        (status = 200, description = "The tenant's limits and what it uses", body = TenantQuotas),
        (status = 403, description = "An admin token: use /v1/tenants/{tenant}/quotas", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get_quotas(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TenantQuotas>, ApiError> {
    let Caller::Tenant(tenant) = caller else {
        return Err(ApiError::Forbidden(
            "an admin has no quotas of its own: see GET /v1/tenants/{tenant}/quotas".into(),
        ));
    };
    Ok(Json(tenant_quotas(&state, &tenant).await?))
}

/// `GET /v1/tenants/{tenant}/quotas`: a tenant's limits, usage and order rate (admins).
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/quotas",
    tag = "operators",
    params(("tenant" = String, Path, description = "The tenant: 1 to 63 of a-z, 0-9, '-'", pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    responses(
        (status = 200, description = "The tenant's limits and what it uses", body = TenantQuotas),
        (status = 400, description = "Not a tenant name", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "Not an admin token", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get_tenant_quotas(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant): Path<String>,
) -> Result<Json<TenantQuotas>, ApiError> {
    check_tenant(&tenant)?;
    Ok(Json(tenant_quotas(&state, &tenant).await?))
}

/// `PUT /v1/tenants/{tenant}/quotas`: replaces the tenant's quotas and rate (admins). A
/// limit left out is no limit; `rate` left out is the instance's default. The quotas hold
/// from the next order on every instance; a rate reaches other instances within 5 s.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}/quotas",
    tag = "operators",
    params(("tenant" = String, Path, description = "The tenant: 1 to 63 of a-z, 0-9, '-'", pattern = r"^[a-z0-9][a-z0-9-]{0,62}$")),
    request_body = QuotaSet,
    responses(
        (status = 200, description = "Set; the tenant's limits and what it uses", body = TenantQuotas),
        (status = 400, description = "Malformed JSON or not a tenant name", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "Not an admin token", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "The body is too large", content_type = "application/problem+json", body = Problem),
        (status = 415, description = "The body is not sent as application/json", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "A field unknown or of the wrong type, or a figure out of range", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn put_tenant_quotas(
    State(state): State<AppState>,
    _admin: Admin,
    Path(tenant): Path<String>,
    body: Result<Json<Box<RawValue>>, JsonRejection>,
) -> Result<Json<TenantQuotas>, ApiError> {
    check_tenant(&tenant)?;
    let Json(body) = body?;
    let set = quota_set_of(&body)?;
    let mut errors = Vec::new();
    if set.vendors.len() > MAX_VENDOR_QUOTAS {
        errors.push(FieldError {
            field: "vendors".into(),
            message: format!("at most {MAX_VENDOR_QUOTAS} vendors"),
        });
    }
    for vendor in set.vendors.keys().take(MAX_VENDOR_QUOTAS) {
        if vendor.trim_ascii().is_empty() || vendor.len() > 255 || vendor.contains('\0') {
            errors.push(FieldError {
                field: "vendors".into(),
                message: "vendor ids are 1 to 255 characters, not blank".into(),
            });
        }
    }
    for (scope, limits) in std::iter::once(("limits".to_string(), &set.limits)).chain(
        set.vendors
            .iter()
            .take(MAX_VENDOR_QUOTAS)
            .map(|(vendor, limits)| (format!("vendors.{}", excerpt(vendor)), limits)),
    ) {
        if let Err(message) = limits.check() {
            errors.push(FieldError {
                field: scope,
                message,
            });
        }
    }
    if let Some(Err(message)) = set.rate.map(|rate| rate.check()) {
        errors.push(FieldError {
            field: "rate".into(),
            message,
        });
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    state.store.replace_quotas(&tenant, &set).await?;
    if let Err(error) = state.order_rates.refresh(&state.store).await {
        // Set all the same: the instance reads the rates again within 5 s.
        tracing::warn!("reading the order rates after a change failed: {error:#}");
    }
    tracing::info!(%tenant, "quotas set");
    Ok(Json(tenant_quotas(&state, &tenant).await?))
}

/// The body as a [`QuotaSet`], read from its text so that a rate is judged as written
/// (`OrderRate::per_second`; a field named twice is refused, not the last one taken). Its
/// objects must be JSON objects: serde would also take a record from an array of its fields
/// in order (`"limits": [5, null]`), which the document does not allow.
fn quota_set_of(text: &RawValue) -> Result<QuotaSet, ApiError> {
    // Not JSON (a number out of range, a lone surrogate, too deep: what reading the body
    // as raw text let through) is `invalid-json`, as axum's own reading says; JSON of the
    // wrong shape is `invalid-body`.
    let invalid = |error: serde_json::Error| match error.classify() {
        serde_json::error::Category::Data => ApiError::InvalidBody(error.to_string()),
        _ => ApiError::InvalidJson(error.to_string()),
    };
    let body: Value = serde_json::from_str(text.get()).map_err(invalid)?;
    let not_object = |field: &str| ApiError::InvalidBody(format!("{field} must be a JSON object"));
    let Value::Object(fields) = &body else {
        return Err(not_object("the body"));
    };
    for field in ["limits", "rate"] {
        if fields
            .get(field)
            .is_some_and(|v| !v.is_object() && !v.is_null())
        {
            return Err(not_object(field));
        }
    }
    if let Some(vendors) = fields.get("vendors") {
        let Value::Object(vendors) = vendors else {
            return Err(not_object("vendors"));
        };
        if vendors.values().any(|limits| !limits.is_object()) {
            return Err(not_object("each entry of vendors"));
        }
    }
    serde_json::from_str(text.get()).map_err(invalid)
}

fn check_tenant(tenant: &str) -> Result<(), ApiError> {
    check_tenant_name(tenant).map_err(|error| ApiError::InvalidQuery(error.to_string()))
}

async fn tenant_quotas(state: &AppState, tenant: &str) -> Result<TenantQuotas, ApiError> {
    Ok(state
        .store
        .tenant_quotas(tenant, state.order_rates.default_rate())
        .await?)
}
