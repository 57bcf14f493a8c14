//! The simulator's own endpoints, for tests and operators:
//! - `GET /_sim/stats`: per vendor, servers live now (and how many of them are still
//!   booting), servers ever made, and the idempotency keys with more than one server
//!   (duplicates);
//! - `GET /_sim/servers`: every live server of every vendor with its idempotency key (the
//!   chaos test finds orphans with it), its `ssh_keys` (the OpenSSH public keys the server
//!   gets: from the key store, as given, or from its cloud-config), its `user_data` (as
//!   text) and its `labels` (Hetzner labels, DigitalOcean tags split at the first `:`,
//!   OpenStack metadata, Example Cloud tags), so tests and the conformance kit see what
//!   reached the vendor; `GET /_sim/ssh_keys`: every vendor's key store;
//! - `POST /_sim/servers`: makes a server the way another tool (or a lost deployment)
//!   would, `{"vendor": "hetzner", "name": "web", "idempotency_key": "k"}`: the key goes
//!   where that vendor's plugin puts it (Hetzner label, DigitalOcean tag, OpenStack
//!   metadata, Example Cloud tag, GCP label, Azure tag; a GCP server is in project
//!   `sim-project`, an Azure VM, with its NIC and public IP, in the first registered app's
//!   resource group);
//!   without a key the server carries none. The orphan sweep tests seed
//!   servers no order owns with it;
//! - `POST /_sim/paging` `{"max_per_page": 3}`: every vendor's list answers hold at most
//!   that many servers (with their usual next-page links), so a few servers span several
//!   pages; `{"max_per_page": null}` restores each vendor's own maximum. The conformance
//!   kit checks `list-servers` reads every page with it;
//! - `POST /_sim/capacity` `{"vendor": "hetzner", "region": "fsn1", "available": false}`:
//!   the region refuses every create for capacity (Hetzner's 412 `resource_unavailable`, as
//!   a `no_capacity` fault answers) until `"available": true`; a region sold out, not a
//!   count of faults, so tests can drive an order's move to its next placement;
//! - `GET|POST|DELETE /_sim/faults`: list, arm, disarm injected faults (optional `method`,
//!   and `path`: only requests whose path below the vendor's prefix contains it). `POST` takes
//!   `{"vendor": "hetzner", "kind": "rate_limit", "retry_after_secs": 2, "count": 3,
//!   "method": "POST"}` (kinds: `rate_limit`, `server_error` with `status`,
//!   `unauthorized`, `slow` with `delay_ms`, `lost_response`: the request is carried out,
//!   e.g. the server is made, and the connection is then dropped before any byte of the
//!   answer, so the client sees the connection closed as when a response is lost in the
//!   network; `{"vendor": "hetzner", "kind": "lost_response", "method": "POST"}` loses one
//!   create's answer; `no_capacity`: the vendor's own capacity refusal, see
//!   [`crate::state::FaultKind::NoCapacity`]).
//!
//! The bodies and answers are the types below; [`crate::control_client`] is their client.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::azure::AzureState;
use crate::conventions::{IDEMPOTENCY_LABEL, unprocessable};
use crate::state::{FaultRule, NewServer, SimState, Vendor};

/// `GET /_sim/stats`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every vendor's counts.
    pub vendors: BTreeMap<Vendor, VendorStats>,
}

/// One vendor's counts in `GET /_sim/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorStats {
    /// Servers live now.
    pub live: usize,
    /// Of them, those still booting.
    pub booting: usize,
    /// Servers ever made.
    pub created_total: u64,
    /// The idempotency keys with more than one server ever made, with how many.
    pub duplicates: BTreeMap<String, u64>,
}

/// One live server in `GET /_sim/servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerRecord {
    /// Whose.
    pub vendor: Vendor,
    /// The simulator's number for it, unique per vendor (not always the id a plugin sees:
    /// OpenStack's are UUIDs, Example Cloud's `srv-<n>`).
    pub id: u64,
    /// Its name.
    pub name: String,
    /// The idempotency key its labels, tags or metadata carry.
    pub idempotency_key: Option<String>,
    /// The OpenSSH public keys it gets: from the key store, as given, or from its
    /// cloud-config.
    pub ssh_keys: Vec<String>,
    /// Its user data, as text.
    pub user_data: Option<String>,
    /// Hetzner labels, DigitalOcean tags split at the first `:`, OpenStack metadata,
    /// Example Cloud tags.
    pub labels: BTreeMap<String, String>,
}

/// One key of a vendor's key store in `GET /_sim/ssh_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Whose store.
    pub vendor: Vendor,
    /// Its id in the store.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// Its MD5 fingerprint.
    pub fingerprint: String,
    /// The OpenSSH public key.
    pub public_key: String,
}

/// `POST /_sim/servers`'s body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedServer {
    /// Whose server.
    pub vendor: Vendor,
    /// Its name.
    pub name: String,
    /// The idempotency key it carries where that vendor's plugin puts it; none when absent.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

/// `POST /_sim/servers`'s answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeededServer {
    /// Whose server.
    pub vendor: Vendor,
    /// The simulator's number for it.
    pub id: u64,
}

/// `POST /_sim/capacity`'s body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Whose region (`hetzner` only).
    pub vendor: Vendor,
    /// The region.
    pub region: String,
    /// `false`: the region refuses every create for capacity; `true`: it serves them again.
    pub available: bool,
}

async fn set_capacity(
    State(state): State<Arc<SimState>>,
    body: Result<Json<Capacity>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(Capacity {
            vendor: vendor @ Vendor::Hetzner,
            region,
            available,
        })) => {
            state.set_capacity(vendor, &region, available);
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Json(capacity)) => unprocessable(format!(
            "a region's capacity is simulated for hetzner only, not {}",
            capacity.vendor.name()
        )),
        Err(rejection) => unprocessable(rejection.body_text()),
    }
}

/// `POST /_sim/paging`'s body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// The most servers any list answer holds; `None`: each vendor's own maximum.
    pub max_per_page: Option<usize>,
}

async fn set_paging(
    State(state): State<Arc<SimState>>,
    body: Result<Json<Paging>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(paging)) => {
            state.set_page_cap(paging.max_per_page.filter(|cap| *cap > 0));
            StatusCode::NO_CONTENT.into_response()
        }
        Err(rejection) => unprocessable(rejection.body_text()),
    }
}

async fn seed_server(
    State(state): State<Arc<SimState>>,
    Extension(azure): Extension<AzureState>,
    body: Result<Json<SeedServer>, JsonRejection>,
) -> Response {
    let seed = match body {
        Ok(Json(seed)) => seed,
        Err(rejection) => {
            return unprocessable(rejection.body_text());
        }
    };
    // A region, size and image the vendor's catalogue has, so the server renders as any
    // other.
    let (region, size, image) = match seed.vendor {
        Vendor::Hetzner => ("fsn1", "cx22", "ubuntu-24.04"),
        Vendor::DigitalOcean => ("nyc3", "s-1vcpu-1gb", "ubuntu-24-04-x64"),
        Vendor::OpenStack => ("RegionOne", "m1.small", "ubuntu-24.04"),
        Vendor::Example => (
            crate::example::REGIONS[0],
            crate::example::PLANS[0],
            crate::example::IMAGES[0],
        ),
        Vendor::Gcp => (
            crate::gcp::ZONES[0],
            crate::gcp::MACHINE_TYPES[0].0,
            "debian-cloud/debian-12-bookworm-v20241112",
        ),
        Vendor::Azure => (
            crate::azure::SEED_LOCATION,
            crate::azure::VM_SIZES[0].0,
            "Canonical:ubuntu-24_04-lts:server:latest",
        ),
    };
    let mut spec = NewServer {
        name: seed.name,
        region: region.into(),
        size: size.into(),
        image: image.into(),
        idempotency_key: seed.idempotency_key.clone(),
        ..NewServer::default()
    };
    if let Some(key) = seed.idempotency_key {
        match seed.vendor {
            Vendor::Hetzner | Vendor::Example | Vendor::Gcp | Vendor::Azure => {
                spec.labels.insert(IDEMPOTENCY_LABEL.into(), key);
            }
            Vendor::DigitalOcean => spec.tags.push(format!("{IDEMPOTENCY_LABEL}:{key}")),
            Vendor::OpenStack => {
                spec.metadata.insert(IDEMPOTENCY_LABEL.into(), key);
            }
        }
    }
    let server = match seed.vendor {
        Vendor::Azure => crate::azure::seed_vm(&azure, spec),
        vendor => state.with_cloud(vendor, |cloud| cloud.insert(spec)),
    };
    let seeded = SeededServer {
        vendor: seed.vendor,
        id: server.id,
    };
    (StatusCode::CREATED, Json(json!(seeded))).into_response()
}

/// `/_sim/...`; `azure` is Azure's, where `POST /_sim/servers` seeds Azure VMs.
pub fn router(azure: AzureState) -> Router<Arc<SimState>> {
    Router::new()
        .route("/stats", get(stats))
        .route("/servers", get(servers).post(seed_server))
        .route("/ssh_keys", get(key_stores))
        .route("/paging", axum::routing::post(set_paging))
        .route("/capacity", axum::routing::post(set_capacity))
        .route(
            "/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .layer(Extension(azure))
}

async fn servers(State(state): State<Arc<SimState>>) -> Json<Value> {
    let mut all = Vec::new();
    for vendor in Vendor::ALL {
        state.with_cloud(vendor, |cloud| {
            for server in cloud.servers.values() {
                let spec = &server.spec;
                let mut labels = spec.labels.clone();
                labels.extend(spec.metadata.clone());
                for tag in &spec.tags {
                    let (key, value) = tag.split_once(':').unwrap_or((tag, ""));
                    labels.insert(key.to_string(), value.to_string());
                }
                all.push(ServerRecord {
                    vendor,
                    id: server.id,
                    name: spec.name.clone(),
                    idempotency_key: spec.idempotency_key.clone(),
                    ssh_keys: spec.ssh_keys.clone(),
                    user_data: spec.user_data.clone(),
                    labels,
                });
            }
        });
    }
    Json(json!({ "servers": all }))
}

/// Every vendor's key store: `{"keys": [{"vendor", "id", "name", "fingerprint",
/// "public_key"}]}`.
async fn key_stores(State(state): State<Arc<SimState>>) -> Json<Value> {
    let mut all = Vec::new();
    for vendor in Vendor::ALL {
        state.with_cloud(vendor, |cloud| {
            for key in cloud.ssh_keys.values() {
                all.push(KeyRecord {
                    vendor,
                    id: key.id,
                    name: key.name.clone(),
                    fingerprint: key.fingerprint.clone(),
                    public_key: key.public_key.clone(),
                });
            }
        });
    }
    Json(json!({ "keys": all }))
}

async fn stats(State(state): State<Arc<SimState>>) -> Json<Value> {
    let mut vendors = BTreeMap::new();
    for vendor in Vendor::ALL {
        let now = chrono::Utc::now();
        let boot_delay = state.config.boot_delay;
        let stats = state.with_cloud(vendor, |cloud| {
            let booting = cloud
                .servers
                .values()
                .filter(|server| !server.is_booted(boot_delay, now))
                .count();
            VendorStats {
                live: cloud.servers.len(),
                booting,
                created_total: cloud.created_total,
                duplicates: cloud.duplicates(),
            }
        });
        vendors.insert(vendor, stats);
    }
    Json(json!(Stats { vendors }))
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
        Err(rejection) => unprocessable(rejection.body_text()),
    }
}

async fn clear_faults(State(state): State<Arc<SimState>>) -> StatusCode {
    state.clear_faults();
    StatusCode::NO_CONTENT
}
