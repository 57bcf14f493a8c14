//! Errors as RFC 9457 `application/problem+json`. Bad input is always a 4xx that says what
//! is wrong; a 500 is logged with its detail and answered without it.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// How many characters of a value a problem may echo.
pub const ECHO_CHARS: usize = 64;
/// How many characters a problem's `detail` (or a field error's message) may have.
pub const MAX_DETAIL_CHARS: usize = 1024;

/// Most field errors one problem lists (its `detail` still counts them all).
pub const MAX_FIELD_ERRORS: usize = 32;

/// `value` as a problem may echo it: whole when short, else its first [`ECHO_CHARS`]
/// characters and how long it was. A problem never sends back what a client sent in bulk.
pub fn excerpt(value: &str) -> String {
    shorten(value, ECHO_CHARS)
}

/// `text` cut to `max` characters, saying how many bytes it had when it is cut.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
    }
}

/// A field that failed validation.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct FieldError {
    /// The JSON field name.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An error answer (RFC 9457 `application/problem+json`), for the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Names the problem: `/problems/<slug>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this request.
    pub detail: String,
    /// `validation-failed`: each field that was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
    /// `unknown-vendor`: the vendors that are served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_vendors: Option<Vec<String>>,
    /// `refused-by-vendor`: the vendor whose plugin refused; `quota-exceeded`: the vendor
    /// the quota is at (absent: a quota over all vendors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// `quota-exceeded`: which quota (`max_live_servers`, `max_orders_in_flight`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<String>,
    /// `quota-exceeded`: what the tenant used before this order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<u64>,
    /// `quota-exceeded`: the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `quota-exceeded`: what the order asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<u64>,
    /// `rate-limited`: seconds to wait (as the `Retry-After` header says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

/// Everything the API answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid-json`: the body is not JSON.
    #[error("{0}")]
    InvalidJson(String),
    /// 422 `invalid-body`: JSON, but a field is missing, unknown or of the wrong type.
    #[error("{0}")]
    InvalidBody(String),
    /// 415 `unsupported-media-type`: the body is not declared as JSON.
    #[error("the request body must be JSON with `content-type: application/json`")]
    UnsupportedMediaType,
    /// 413 `body-too-large`.
    #[error("the request body is too large")]
    BodyTooLarge,
    /// 422 `validation-failed`: fields with values the API cannot accept.
    #[error("{} field(s) failed validation", .0.len())]
    Validation(Vec<FieldError>),
    /// 422 `unknown-vendor`: no host serves this vendor.
    #[error("no provisioner host serves vendor '{}'", excerpt(vendor))]
    UnknownVendor {
        /// The vendor asked for.
        vendor: String,
        /// The vendors that are served.
        known: Vec<String>,
    },
    /// 422 `refused-by-vendor`: the vendor's plugin refuses the server (its `validate`).
    #[error(
        "the {} plugin refuses this server: {}",
        excerpt(vendor),
        shorten(message, 512)
    )]
    RefusedByVendor {
        /// The vendor.
        vendor: String,
        /// The plugin's reason.
        message: String,
    },
    /// 400 `invalid-query`: a query parameter is wrong.
    #[error("{0}")]
    InvalidQuery(String),
    /// 409 `conflict`: the order is not in a state that allows the request.
    #[error("{0}")]
    Conflict(String),
    /// 400 `invalid-idempotency-key`: the `Idempotency-Key` header is not a usable key.
    #[error("{0}")]
    InvalidIdempotencyKey(String),
    /// 422 `idempotency-key-reused`: the key made an order from a different request.
    #[error(
        "Idempotency-Key '{}' was used before with a different request body; \
         a new order needs a new key", excerpt(.0)
    )]
    IdempotencyKeyReused(String),
    /// 404 `not-found` (also another tenant's order: ids do not leak).
    #[error("{0}")]
    NotFound(String),
    /// 401 `unauthorized`: no API token, or one that is unknown or revoked.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`: the token is valid but not for this (an operator endpoint, or an
    /// admin token ordering).
    #[error("{0}")]
    Forbidden(String),
    /// 429 `too-many-streams`: the caller (or this instance) has as many `/events` streams
    /// open as it may.
    #[error("{0}")]
    TooManyStreams(String),
    /// 422 `quota-exceeded`: the order would pass one of the tenant's quotas.
    #[error("over quota: {0}")]
    QuotaExceeded(crate::store::QuotaExceeded),
    /// 429 `rate-limited`: the tenant sent orders faster than its rate; try again after
    /// the time given (whole seconds in `Retry-After`).
    #[error(
        "too many orders: this tenant may send {per_second} per second (bursts of {burst}); \
         try again in {} s", retry_after_secs(*.retry_after)
    )]
    RateLimited {
        /// How long until a request would be admitted.
        retry_after: std::time::Duration,
        /// The tenant's rate.
        per_second: f64,
        /// The tenant's burst.
        burst: u32,
    },
    /// 500 `internal`: logged, answered without detail.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid-json", "Malformed JSON"),
            ApiError::InvalidBody(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-body",
                "Invalid request body",
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
            ),
            ApiError::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
            ),
            ApiError::Validation(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation-failed",
                "Validation failed",
            ),
            ApiError::UnknownVendor { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-vendor",
                "Unknown vendor",
            ),
            ApiError::RefusedByVendor { .. } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused-by-vendor",
                "Refused by the vendor's plugin",
            ),
            ApiError::InvalidQuery(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query parameter",
            ),
            ApiError::InvalidIdempotencyKey(_) => (
                StatusCode::BAD_REQUEST,
                "invalid-idempotency-key",
                "Invalid Idempotency-Key",
            ),
            ApiError::IdempotencyKeyReused(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency-key-reused",
                "Idempotency-Key reused",
            ),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::TooManyStreams(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-streams",
                "Too many event streams",
            ),
            ApiError::QuotaExceeded(_) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "quota-exceeded",
                "Quota exceeded",
            ),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate-limited",
                "Too many orders",
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
        }
    }
}

/// The media type of every error answer.
pub const PROBLEM_JSON: &str = "application/problem+json";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            ApiError::Internal(error) => {
                tracing::error!("internal error: {error:#}");
                "the server failed to handle the request; it has been logged".to_string()
            }
            other => shorten(&other.to_string(), MAX_DETAIL_CHARS),
        };
        let mut body = json!({
            "type": format!("/problems/{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
        });
        match &self {
            ApiError::Validation(errors) => {
                let errors: Vec<FieldError> = errors
                    .iter()
                    .take(MAX_FIELD_ERRORS)
                    .map(|error| FieldError {
                        field: excerpt(&error.field),
                        message: shorten(&error.message, MAX_DETAIL_CHARS),
                    })
                    .collect();
                body["errors"] = json!(errors)
            }
            ApiError::UnknownVendor { known, .. } => body["known_vendors"] = json!(known),
            ApiError::RefusedByVendor { vendor, .. } => body["vendor"] = json!(excerpt(vendor)),
            ApiError::QuotaExceeded(over) => {
                body["quota"] = json!(over.quota);
                if let Some(vendor) = &over.vendor {
                    body["vendor"] = json!(excerpt(vendor));
                }
                body["usage"] = json!(over.usage);
                body["limit"] = json!(over.limit);
                body["requested"] = json!(over.requested);
            }
            ApiError::RateLimited { retry_after, .. } => {
                body["retry_after"] = json!(retry_after_secs(*retry_after))
            }
            _ => {}
        }
        let mut response = problem_response(status, body);
        if let ApiError::RateLimited { retry_after, .. } = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(*retry_after)),
            );
        }
        if let ApiError::Unauthorized(_) = &self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"provisioner\""),
            );
        }
        response
    }
}

/// `Retry-After` in whole seconds: rounded up, at least 1 (a client that waits what it is
/// told is admitted).
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

fn problem_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
            JsonRejection::JsonDataError(e) => ApiError::InvalidBody(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::BodyTooLarge
            }
            other => ApiError::InvalidJson(other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::InvalidQuery(rejection.body_text())
    }
}

/// The answer for paths the API does not have.
pub async fn no_such_route() -> ApiError {
    ApiError::NotFound("no such endpoint; see GET /v1/orders, POST /v1/orders".into())
}
