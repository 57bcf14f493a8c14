//! The vendors endpoints: `GET /v1/vendors` (who serves which vendor) and
//! `GET /v1/vendors/{vendor}/catalogue` (what a vendor's plugin accepts: the order form's
//! choices).

use axum::Json;
use axum::extract::{Path, State};
use provisioner_contract::VendorCatalogue;
use serde::Serialize;

use crate::auth::Caller;
use crate::http::AppState;
use crate::http::problem::{ApiError, Problem, excerpt};
use crate::store::{UnavailableVendor, Vendor};

/// `GET /v1/vendors`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VendorList {
    /// The vendors some host serves, by id.
    vendors: Vec<Vendor>,
    /// Admins only (absent for a tenant): vendors a host has a plugin for but does not
    /// serve, one entry per vendor and host, with the host's reason (a secret missing, a
    /// plugin that does not load). Orders for a vendor listed only here are refused with
    /// `422 unknown-vendor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    unavailable: Option<Vec<UnavailableVendor>>,
}

/// `GET /v1/vendors`: the vendors hosts have announced; for an admin, also those a host
/// has a plugin for but does not serve, with why.
#[utoipa::path(
    get,
    path = "/v1/vendors",
    tag = "vendors",
    responses((
        status = 200,
        description = "The vendors some host serves (and, for an admin, those a host cannot \
                       serve, with why)",
        body = VendorList
    )),
)]
pub async fn list_vendors(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<VendorList>, ApiError> {
    let vendors = state.store.vendors().await?;
    let unavailable = match caller {
        Caller::Admin => Some(state.store.unavailable_vendors().await?),
        Caller::Tenant(_) => None,
    };
    Ok(Json(VendorList {
        vendors,
        unavailable,
    }))
}

/// `GET /v1/vendors/{vendor}/catalogue`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CatalogueView {
    /// The vendor id.
    pub vendor: String,
    /// What the vendor's plugin accepts without asking the vendor, on every host serving
    /// it. A field that is `null`: any well-formed value passes the plugin's check (the
    /// vendor decides when the server is made), or the hosts' plugins did not say (a plugin
    /// of WIT 0.4 or older).
    #[serde(flatten)]
    pub catalogue: VendorCatalogue,
}

/// `GET /v1/vendors/{vendor}/catalogue`: the regions, sizes and images the vendor's plugin
/// accepts, as its hosts announced them (the same lists its `validate` checks an order
/// against). For any caller: it says nothing about tenants.
#[utoipa::path(
    get,
    path = "/v1/vendors/{vendor}/catalogue",
    tag = "vendors",
    params(("vendor" = String, Path, description = "The vendor id, e.g. `hetzner`")),
    responses(
        (status = 200, description = "What every host serving the vendor accepts", body = CatalogueView),
        (status = 404, description = "No host serves this vendor", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn vendor_catalogue(
    State(state): State<AppState>,
    _caller: Caller,
    Path(vendor): Path<String>,
) -> Result<Json<CatalogueView>, ApiError> {
    let catalogue = state
        .store
        .vendor_catalogue(&vendor)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no host serves vendor '{}'", excerpt(&vendor)))
        })?;
    Ok(Json(CatalogueView { vendor, catalogue }))
}
