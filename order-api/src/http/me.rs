//! `GET /v1/me`: whom the request's token speaks for, so a client (the console) can say who
//! is signed in and which views to offer. It reveals nothing beyond the token's own tenant.

use axum::Json;
use serde::Serialize;

use crate::auth::Caller;

/// `GET /v1/me`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The tenant the token orders for; absent for an admin token.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "acme")]
    pub tenant: Option<String>,
    /// Whether the token is an admin's (every tenant's orders and the operator endpoints).
    pub admin: bool,
}

/// `GET /v1/me`: the caller.
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "orders",
    responses((status = 200, description = "Whom the token speaks for", body = Me)),
)]
pub async fn me(caller: Caller) -> Json<Me> {
    Json(match caller {
        Caller::Tenant(tenant) => Me {
            tenant: Some(tenant),
            admin: false,
        },
        Caller::Admin => Me {
            tenant: None,
            admin: true,
        },
    })
}
