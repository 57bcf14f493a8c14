//! The Hetzner Cloud API subset the Hetzner plugin uses, in Hetzner's own shapes:
//! `POST /servers`, `GET /servers` (with `label_selector`, `name`, pagination),
//! `GET /servers/{id}`, `DELETE /servers/{id}`; the SSH key store, `GET /ssh_keys` (with
//! `fingerprint`, `name`, `label_selector`, pagination), `POST /ssh_keys`,
//! `GET|DELETE /ssh_keys/{id}`; the actions the server calls hand out, as the official
//! SDKs wait for them: `GET /actions/{id}` (hcloud's `wait_until_finished` polls this),
//! `GET /servers/actions/{id}`, `GET /servers/{id}/actions` (with `status`, `sort`,
//! pagination) and `GET /servers/{id}/actions/{action_id}`; bearer-token auth; errors as
//! `{"error": {"code", "message", "details"}}`; `RateLimit-*` headers on every answer.
//!
//! A create hands out a `create_server` action and a `start_server` next action, both
//! `running` until the server has booted (the boot delay) and `success` with `progress` 100
//! and `finished` set from then on; a delete removes the server at once and hands out a
//! `delete_server` action that is already a `success`. Actions stay readable after their
//! server is gone, as Hetzner's do.
//!
//! Server names are unique per project (`409 uniqueness_error`), so are SSH key names and
//! fingerprints. A server's `ssh_keys` are ids or names of stored keys (an unknown one is a
//! `400 invalid_input`); the server records the public keys they stand for and its
//! `user_data`, shown by `GET /_sim/servers`.
//!
//! Reference: <https://docs.hetzner.cloud/#servers>, <https://docs.hetzner.cloud/#ssh-keys>,
//! <https://docs.hetzner.cloud/#actions>, <https://docs.hetzner.cloud/#server-actions>.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, RawQuery, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::conventions::with_bearer_token;
use crate::faults;
use crate::state::{FaultKind, NewServer, SimAction, SimServer, SimState, Vendor, VendorCloud};

/// Locations the simulated project offers.
const LOCATIONS: &[(&str, &str, &str, &str)] = &[
    ("fsn1", "Falkenstein", "DE", "eu-central"),
    ("nbg1", "Nuremberg", "DE", "eu-central"),
    ("hel1", "Helsinki", "FI", "eu-central"),
    ("ash", "Ashburn, VA", "US", "us-east"),
    ("hil", "Hillsboro, OR", "US", "us-west"),
    ("sin", "Singapore", "SG", "ap-southeast"),
];

/// Server types: name, cores, memory GB, disk GB.
const SERVER_TYPES: &[(&str, u32, f64, u32)] = &[
    ("cx22", 2, 4.0, 40),
    ("cx32", 4, 8.0, 80),
    ("cx42", 8, 16.0, 160),
    ("cpx11", 2, 2.0, 40),
    ("cpx21", 3, 4.0, 80),
    ("cax11", 2, 4.0, 40),
];

/// Images: name, OS flavour, OS version.
const IMAGES: &[(&str, &str, &str)] = &[
    ("ubuntu-24.04", "ubuntu", "24.04"),
    ("ubuntu-22.04", "ubuntu", "22.04"),
    ("debian-12", "debian", "12"),
    ("fedora-41", "fedora", "41"),
    ("rocky-9", "rocky", "9"),
];

/// Hetzner sends its rate-limit state on every answer.
const RATE_LIMIT: faults::RateLimitHeaders = faults::RateLimitHeaders {
    limit: "3600",
    remaining: "3599",
    reset_secs: 1,
};

/// `/hetzner/v1/...`
pub fn router(state: Arc<SimState>) -> Router<Arc<SimState>> {
    let api = with_bearer_token(
        Router::new()
            .route("/servers", get(list_servers).post(create_server))
            .route("/servers/{id}", get(get_server).delete(delete_server))
            .route("/actions/{id}", get(get_action))
            .route("/servers/actions/{id}", get(get_action))
            .route("/servers/{id}/actions", get(list_server_actions))
            .route("/servers/{id}/actions/{action_id}", get(get_server_action))
            .route("/ssh_keys", get(list_keys).post(create_key))
            .route("/ssh_keys/{id}", get(get_key).delete(delete_key)),
        &state.config.hetzner_token,
        unauthorized,
    );
    faults::with_faults(api, &state, Vendor::Hetzner, render_fault).layer(
        middleware::from_fn_with_state(RATE_LIMIT, faults::add_rate_limit_headers),
    )
}

/// An injected fault as Hetzner answers it.
fn render_fault(kind: &FaultKind) -> Response {
    let status = faults::status_of(kind);
    match kind {
        FaultKind::RateLimit { retry_after_secs } => faults::rate_limit_spent(
            error(
                status,
                "rate_limit_exceeded",
                "limit of 3600 requests per hour reached",
            ),
            *retry_after_secs,
        ),
        FaultKind::Unauthorized => error(status, "unauthorized", "unable to authenticate"),
        FaultKind::NoCapacity => error(
            status,
            "resource_unavailable",
            "the requested resource is currently unavailable: the server type is sold out \
             in this location",
        ),
        FaultKind::ServerError { status: 503 } => {
            error(status, "unavailable", "service temporarily unavailable")
        }
        _ => error(status, "server_error", "an internal error occurred"),
    }
}

/// A Hetzner error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into(), "details": {}}});
    (status, Json(body)).into_response()
}

/// Hetzner's answer to a missing or wrong token.
fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unable to authenticate",
    )
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A server in Hetzner's JSON.
fn render_server(server: &SimServer, state: &SimState) -> Value {
    let booted = server.is_booted(state.config.boot_delay, Utc::now());
    let status = if booted { "running" } else { "initializing" };
    let (city, country, zone) = LOCATIONS
        .iter()
        .find(|(name, ..)| *name == server.spec.region)
        .map(|(_, city, country, zone)| (*city, *country, *zone))
        .unwrap_or(("Falkenstein", "DE", "eu-central"));
    let (cores, memory, disk) = SERVER_TYPES
        .iter()
        .find(|(name, ..)| *name == server.spec.size)
        .map(|(_, cores, memory, disk)| (*cores, *memory, *disk))
        .unwrap_or((2, 4.0, 40));
    let (os_flavor, os_version) = IMAGES
        .iter()
        .find(|(name, ..)| *name == server.spec.image)
        .map(|(_, flavor, version)| (*flavor, *version))
        .unwrap_or(("unknown", "unknown"));
    let location_id = LOCATIONS
        .iter()
        .position(|(name, ..)| *name == server.spec.region)
        .unwrap_or(0)
        + 1;
    let type_id = SERVER_TYPES
        .iter()
        .position(|(name, ..)| *name == server.spec.size)
        .unwrap_or(0)
        + 1;
    let created = timestamp(server.created);
    json!({
        "id": server.id,
        "name": server.spec.name,
        "status": status,
        "created": created,
        "public_net": {
            "ipv4": {"id": server.id, "ip": server.ipv4, "blocked": false,
                     "dns_ptr": format!("static.{}.clients.your-server.de", server.ipv4)},
            "ipv6": {"id": server.id, "ip": server.ipv6_network(), "blocked": false, "dns_ptr": []},
            "floating_ips": [],
            "firewalls": [],
        },
        "private_net": [],
        "server_type": {
            "id": type_id, "name": server.spec.size, "description": server.spec.size.to_uppercase(),
            "cores": cores, "memory": memory, "disk": disk, "deprecated": false,
            "prices": [], "storage_type": "local", "cpu_type": "shared", "architecture": "x86",
        },
        // Hetzner replaced `datacenter` with a top-level `location` (removed July 2026).
        "location": {
            "id": location_id, "name": server.spec.region, "description": format!("{city} DC Park 1"),
            "country": country, "city": city, "latitude": 50.47612, "longitude": 12.370071,
            "network_zone": zone,
        },
        "image": {
            "id": 1, "type": "system", "status": "available", "name": server.spec.image,
            "description": server.spec.image, "image_size": null, "disk_size": 5,
            "created": created, "created_from": null, "bound_to": null,
            "os_flavor": os_flavor, "os_version": os_version, "rapid_deploy": true,
            "protection": {"delete": false}, "deprecated": null, "deleted": null,
            "labels": {}, "architecture": "x86",
        },
        "iso": null,
        "rescue_enabled": false,
        "locked": false,
        "backup_window": null,
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": 21990232555520u64,
        "protection": {"delete": false, "rebuild": false},
        "labels": server.spec.labels,
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": disk,
        "placement_group": null,
    })
}

/// Files an action on a server, running from `started` until `finishes`. Its id follows
/// the server's: `10 * server` for `create_server`, `+ 1` for `start_server`, `+ 2` for
/// `delete_server` (each happens once per server).
fn record_action(
    cloud: &mut VendorCloud,
    id: u64,
    command: &str,
    server_id: u64,
    started: DateTime<Utc>,
    finishes: DateTime<Utc>,
) -> SimAction {
    let action = SimAction {
        id,
        command: command.into(),
        server_id,
        started,
        finishes,
    };
    cloud.actions.insert(id, action.clone());
    action
}

/// When a server made at `created` has booted.
fn booted_at(created: DateTime<Utc>, boot_delay: std::time::Duration) -> DateTime<Utc> {
    TimeDelta::from_std(boot_delay)
        .ok()
        .and_then(|delay| created.checked_add_signed(delay))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Where an action stands at `now`: `running` with its progress so far, or `success`.
fn action_status(action: &SimAction, now: DateTime<Utc>) -> (&'static str, i64) {
    if now >= action.finishes {
        return ("success", 100);
    }
    let total = (action.finishes - action.started).num_milliseconds().max(1);
    let done = (now - action.started).num_milliseconds();
    ("running", (done * 100 / total).clamp(0, 99))
}

/// A Hetzner action object as it stands at `now`.
fn render_action(action: &SimAction, now: DateTime<Utc>) -> Value {
    let (status, progress) = action_status(action, now);
    let finished = if status == "success" {
        Value::String(timestamp(action.finishes))
    } else {
        Value::Null
    };
    json!({
        "id": action.id,
        "command": action.command,
        "status": status,
        "progress": progress,
        "started": timestamp(action.started),
        "finished": finished,
        "resources": [{"id": action.server_id, "type": "server"}],
        "error": null,
    })
}

#[derive(Debug, Deserialize)]
struct CreateServer {
    name: String,
    server_type: String,
    image: String,
    location: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Ids (numbers) or names of stored keys.
    #[serde(default)]
    ssh_keys: Vec<Value>,
    #[serde(default)]
    user_data: Option<String>,
}

/// The public keys a server's `ssh_keys` (ids or names of stored keys) stand for; the
/// error message for the first unknown one.
fn resolve_keys(state: &SimState, given: &[Value]) -> Result<Vec<String>, String> {
    state.with_cloud(Vendor::Hetzner, |cloud| {
        given
            .iter()
            .map(|reference| {
                let found = match reference {
                    Value::Number(id) => id.as_u64().and_then(|id| cloud.ssh_keys.get(&id)),
                    Value::String(name) => cloud.ssh_keys.values().find(|k| &k.name == name),
                    _ => None,
                };
                found.map(|key| key.public_key.clone()).ok_or_else(|| {
                    format!("invalid input in field 'ssh_keys': SSH key {reference} not found")
                })
            })
            .collect()
    })
}

async fn create_server(
    State(state): State<Arc<SimState>>,
    body: Result<Json<CreateServer>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                rejection.body_text(),
            );
        }
    };
    if !crate::conventions::valid_hostname(&request.name) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!(
                "invalid input in field 'name': '{}' is not a valid hostname",
                request.name
            ),
        );
    }
    if !SERVER_TYPES
        .iter()
        .any(|(name, ..)| *name == request.server_type)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("server type {} not found", request.server_type),
        );
    }
    if !IMAGES.iter().any(|(name, ..)| *name == request.image) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("image {} not found", request.image),
        );
    }
    let location = request.location.clone().unwrap_or_else(|| "fsn1".into());
    if !LOCATIONS.iter().any(|(name, ..)| *name == location) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("location {location} not found"),
        );
    }
    if state.sold_out(Vendor::Hetzner, &location) {
        return render_fault(&FaultKind::NoCapacity);
    }
    let ssh_keys = match resolve_keys(&state, &request.ssh_keys) {
        Ok(keys) => keys,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_input", message),
    };
    if request
        .user_data
        .as_ref()
        .is_some_and(|u| u.len() > 32 * 1024)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid input in field 'user_data': is too long (at most 32 KiB)",
        );
    }
    let idempotency_key = request
        .labels
        .get(crate::conventions::IDEMPOTENCY_LABEL)
        .cloned();
    let spec = NewServer {
        name: request.name,
        region: location,
        size: request.server_type,
        image: request.image,
        labels: request.labels,
        tags: Vec::new(),
        metadata: Default::default(),
        idempotency_key,
        ssh_keys,
        user_data: request.user_data,
    };
    let boot_delay = state.config.boot_delay;
    let created = state.with_cloud(Vendor::Hetzner, |cloud| {
        if cloud
            .servers
            .values()
            .any(|server| server.spec.name == spec.name)
        {
            return None;
        }
        let server = cloud.insert(spec);
        let (id, made) = (server.id, server.created);
        let booted = booted_at(made, boot_delay);
        let create = record_action(cloud, id * 10, "create_server", id, made, booted);
        let start = record_action(cloud, id * 10 + 1, "start_server", id, made, booted);
        Some((server, create, start))
    });
    let Some((server, create, start)) = created else {
        return error(
            StatusCode::CONFLICT,
            "uniqueness_error",
            "server name is already used",
        );
    };
    let now = Utc::now();
    let body = json!({
        "server": render_server(&server, &state),
        "action": render_action(&create, now),
        "next_actions": [render_action(&start, now)],
        "root_password": null,
    });
    (StatusCode::CREATED, Json(body)).into_response()
}

async fn get_server(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid server ID",
        );
    };
    let server = state.with_cloud(Vendor::Hetzner, |cloud| cloud.servers.get(&id).cloned());
    match server {
        Some(server) => Json(json!({"server": render_server(&server, &state)})).into_response(),
        None => not_found("server", id),
    }
}

/// Hetzner's 404 for the `what` (`server`, `action`, `SSH key`) with this id.
fn not_found(what: &str, id: impl std::fmt::Display) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("{what} with ID '{id}' not found"),
    )
}

async fn delete_server(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid server ID",
        );
    };
    let now = Utc::now();
    let removed = state.with_cloud(Vendor::Hetzner, |cloud| {
        cloud.servers.remove(&id)?;
        // The server is gone at once, so is its deletion done.
        Some(record_action(
            cloud,
            id * 10 + 2,
            "delete_server",
            id,
            now,
            now,
        ))
    });
    match removed {
        Some(action) => Json(json!({"action": render_action(&action, now)})).into_response(),
        None => not_found("server", id),
    }
}

/// `GET /actions/{id}` and `GET /servers/actions/{id}` (every action here is a server's).
async fn get_action(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let action = id
        .parse::<u64>()
        .ok()
        .and_then(|n| state.with_cloud(Vendor::Hetzner, |cloud| cloud.actions.get(&n).cloned()));
    match action {
        Some(action) => Json(json!({"action": render_action(&action, Utc::now())})).into_response(),
        None => not_found("action", &id),
    }
}

/// `GET /servers/{id}/actions/{action_id}`: one of that server's actions.
async fn get_server_action(
    State(state): State<Arc<SimState>>,
    Path((server_id, action_id)): Path<(String, String)>,
) -> Response {
    let Ok(server_id) = server_id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid server ID",
        );
    };
    let action = action_id.parse::<u64>().ok().and_then(|n| {
        state.with_cloud(Vendor::Hetzner, |cloud| {
            cloud
                .actions
                .get(&n)
                .filter(|action| action.server_id == server_id)
                .cloned()
        })
    });
    match action {
        Some(action) => Json(json!({"action": render_action(&action, Utc::now())})).into_response(),
        None => not_found("action", &action_id),
    }
}

/// `GET /servers/{id}/actions`: the server's actions, filtered by `status` (repeatable),
/// sorted by `sort` (`id`, `command`, `status`, `started`, `finished`, each with an
/// optional `:asc` or `:desc`; by id when absent), paged by `page` and `per_page`.
async fn list_server_actions(
    State(state): State<Arc<SimState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid server ID",
        );
    };
    let mut statuses = Vec::new();
    let mut sorts = Vec::new();
    let (mut page, mut per_page) = (1usize, 25usize);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "status" if matches!(value.as_ref(), "running" | "success" | "error") => {
                statuses.push(value.into_owned())
            }
            "status" => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("invalid input in field 'status': '{value}' is not a status"),
                );
            }
            "sort" => sorts.push(value.into_owned()),
            "page" | "per_page" => {
                let Ok(number) = value.parse::<usize>() else {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_input",
                        format!("invalid input in field '{name}'"),
                    );
                };
                if name == "page" {
                    page = number.max(1);
                } else {
                    per_page = number.clamp(1, state.page_size(50));
                }
            }
            _ => {}
        }
    }
    let now = Utc::now();
    let (known, mut actions) = state.with_cloud(Vendor::Hetzner, |cloud| {
        let actions: Vec<SimAction> = cloud
            .actions
            .values()
            .filter(|action| action.server_id == id)
            .cloned()
            .collect();
        (cloud.servers.contains_key(&id), actions)
    });
    if !known {
        return not_found("server", id);
    }
    actions.retain(|action| {
        statuses.is_empty() || statuses.iter().any(|s| s == action_status(action, now).0)
    });
    for sort in sorts.iter().rev() {
        let (field, descending) = match sort.split_once(':') {
            Some((field, "asc")) => (field, false),
            Some((field, "desc")) => (field, true),
            _ => (sort.as_str(), false),
        };
        let order: fn(&SimAction, &SimAction, DateTime<Utc>) -> std::cmp::Ordering = match field {
            "id" => |a, b, _| a.id.cmp(&b.id),
            "command" => |a, b, _| a.command.cmp(&b.command),
            "status" => |a, b, now| action_status(a, now).0.cmp(action_status(b, now).0),
            "started" => |a, b, _| a.started.cmp(&b.started),
            "finished" => |a, b, now| {
                let finished = |x: &SimAction| (now >= x.finishes).then_some(x.finishes);
                finished(a).cmp(&finished(b))
            },
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("invalid input in field 'sort': '{sort}' is not a sort"),
                );
            }
        };
        // Stable sorts applied last key first: the first `sort` decides, later ones break ties.
        actions.sort_by(|a, b| {
            let ordering = order(a, b, now);
            if descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    one_page("actions", actions, page, per_page, |action| {
        render_action(&action, now)
    })
}

/// A stored key in Hetzner's JSON.
fn render_key(key: &crate::keys::StoredKey) -> Value {
    json!({
        "id": key.id,
        "name": key.name,
        "fingerprint": key.fingerprint,
        "public_key": key.public_key,
        "labels": key.labels,
        "created": timestamp(key.created),
    })
}

#[derive(Debug, Deserialize)]
struct CreateKey {
    name: String,
    public_key: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// `POST /ssh_keys`: names and fingerprints are unique per project.
async fn create_key(
    State(state): State<Arc<SimState>>,
    body: Result<Json<CreateKey>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                rejection.body_text(),
            );
        }
    };
    if request.name.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "invalid input in field 'name'",
        );
    }
    let checked = match crate::keys::check(&request.public_key) {
        Ok(checked) => checked,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_input",
                "invalid input in field 'public_key'",
            );
        }
    };
    let filed = state.with_cloud(Vendor::Hetzner, |cloud| {
        if cloud.ssh_keys.values().any(|k| k.name == request.name) {
            return Err("SSH key with the same name already exists");
        }
        if cloud
            .ssh_keys
            .values()
            .any(|k| k.fingerprint == checked.fingerprint)
        {
            return Err("SSH key with the same fingerprint already exists");
        }
        Ok(cloud.insert_key(request.name, checked, request.labels))
    });
    match filed {
        Ok(key) => (
            StatusCode::CREATED,
            Json(json!({"ssh_key": render_key(&key)})),
        )
            .into_response(),
        Err(message) => error(StatusCode::CONFLICT, "uniqueness_error", message),
    }
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    fingerprint: Option<String>,
    name: Option<String>,
    label_selector: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

/// `GET /ssh_keys`, filtered by `fingerprint`, `name`, `label_selector`; paged.
async fn list_keys(State(state): State<Arc<SimState>>, Query(query): Query<KeyQuery>) -> Response {
    let selector = match query.label_selector.as_deref().map(LabelSelector::parse) {
        Some(Ok(selector)) => Some(selector),
        Some(Err(message)) => return error(StatusCode::BAD_REQUEST, "invalid_input", message),
        None => None,
    };
    let keys: Vec<Value> = state.with_cloud(Vendor::Hetzner, |cloud| {
        cloud
            .ssh_keys
            .values()
            .filter(|k| {
                query
                    .fingerprint
                    .as_ref()
                    .is_none_or(|f| &k.fingerprint == f)
            })
            .filter(|k| query.name.as_ref().is_none_or(|n| &k.name == n))
            .filter(|k| selector.as_ref().is_none_or(|s| s.matches(&k.labels)))
            .map(render_key)
            .collect()
    });
    let (page, per_page) = page_asked(&state, query.page, query.per_page);
    one_page("ssh_keys", keys, page, per_page, |key| key)
}

async fn get_key(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let key = id
        .parse::<u64>()
        .ok()
        .and_then(|n| state.with_cloud(Vendor::Hetzner, |cloud| cloud.ssh_keys.get(&n).cloned()));
    match key {
        Some(key) => Json(json!({"ssh_key": render_key(&key)})).into_response(),
        None => not_found("SSH key", &id),
    }
}

async fn delete_key(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let removed = id
        .parse::<u64>()
        .ok()
        .and_then(|n| state.with_cloud(Vendor::Hetzner, |cloud| cloud.ssh_keys.remove(&n)));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found("SSH key", &id),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    label_selector: Option<String>,
    name: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn list_servers(
    State(state): State<Arc<SimState>>,
    Query(query): Query<ListQuery>,
) -> Response {
    let selector = match query.label_selector.as_deref().map(LabelSelector::parse) {
        Some(Ok(selector)) => Some(selector),
        Some(Err(message)) => return error(StatusCode::BAD_REQUEST, "invalid_input", message),
        None => None,
    };
    let servers: Vec<SimServer> = state.with_cloud(Vendor::Hetzner, |cloud| {
        cloud
            .servers
            .values()
            .filter(|server| {
                selector
                    .as_ref()
                    .is_none_or(|s| s.matches(&server.spec.labels))
            })
            .filter(|server| {
                query
                    .name
                    .as_ref()
                    .is_none_or(|name| &server.spec.name == name)
            })
            .cloned()
            .collect()
    });
    let (page, per_page) = page_asked(&state, query.page, query.per_page);
    one_page("servers", servers, page, per_page, |server| {
        render_server(&server, &state)
    })
}

/// The page a list request asks for: `page` from 1, `per_page` 25 by default, 50 (or the
/// simulator's smaller page size) at most.
fn page_asked(state: &SimState, page: Option<usize>, per_page: Option<usize>) -> (usize, usize) {
    let per_page = per_page.unwrap_or(25).clamp(1, state.page_size(50));
    (page.unwrap_or(1).max(1), per_page)
}

/// Page `page` (from 1) of `items`, `per_page` a page, each rendered, under `list_key` with
/// Hetzner's `meta.pagination`.
fn one_page<T>(
    list_key: &str,
    items: Vec<T>,
    page: usize,
    per_page: usize,
    render: impl FnMut(T) -> Value,
) -> Response {
    let total = items.len();
    let last_page = total.div_ceil(per_page).max(1);
    let shown: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(render)
        .collect();
    Json(json!({
        list_key: shown,
        "meta": {"pagination": {
            "page": page,
            "per_page": per_page,
            "previous_page": if page > 1 { json!(page - 1) } else { Value::Null },
            "next_page": if page < last_page { json!(page + 1) } else { Value::Null },
            "last_page": last_page,
            "total_entries": total,
        }},
    }))
    .into_response()
}

/// Hetzner's label selector: comma-separated `k=v`, `k==v`, `k!=v`, `k`, `!k`.
#[derive(Debug)]
struct LabelSelector(Vec<Requirement>);

#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl LabelSelector {
    fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let requirement = if let Some((key, value)) = part.split_once("!=") {
                Requirement::NotEquals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once("==") {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some((key, value)) = part.split_once('=') {
                Requirement::Equals(key.trim().into(), value.trim().into())
            } else if let Some(key) = part.strip_prefix('!') {
                Requirement::Absent(key.trim().into())
            } else {
                Requirement::Exists(part.into())
            };
            requirements.push(requirement);
        }
        if requirements.is_empty() {
            return Err("label_selector is empty".into());
        }
        Ok(Self(requirements))
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The selector forms Hetzner documents all filter as Hetzner does.
    #[test]
    fn label_selector_matches_like_hetzner() {
        let labels: BTreeMap<String, String> = [("env".to_string(), "prod".to_string())]
            .into_iter()
            .collect();
        assert!(LabelSelector::parse("env=prod").unwrap().matches(&labels));
        assert!(LabelSelector::parse("env==prod").unwrap().matches(&labels));
        assert!(!LabelSelector::parse("env!=prod").unwrap().matches(&labels));
        assert!(LabelSelector::parse("env").unwrap().matches(&labels));
        assert!(!LabelSelector::parse("!env").unwrap().matches(&labels));
        assert!(
            !LabelSelector::parse("env=prod,team")
                .unwrap()
                .matches(&labels)
        );
        assert!(LabelSelector::parse(" , ").is_err());
    }

    /// A bare key selects every server carrying that label, page by page with
    /// `meta.pagination.next_page`.
    #[tokio::test]
    async fn lists_servers_with_a_label_page_by_page() {
        let state = Arc::new(SimState::new(crate::SimConfig::default()));
        state.with_cloud(Vendor::Hetzner, |cloud| {
            for (name, key) in [("a", Some("k1")), ("b", None), ("c", Some("k2"))] {
                cloud.insert(NewServer {
                    name: name.into(),
                    labels: key
                        .map(|k| {
                            (
                                crate::conventions::IDEMPOTENCY_LABEL.to_string(),
                                k.to_string(),
                            )
                        })
                        .into_iter()
                        .collect(),
                    ..Default::default()
                });
            }
        });
        let page = |page| ListQuery {
            label_selector: Some(crate::conventions::IDEMPOTENCY_LABEL.into()),
            name: None,
            page: Some(page),
            per_page: Some(1),
        };
        let read = |response: Response| async {
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&body).unwrap()
        };
        let first = read(list_servers(State(state.clone()), Query(page(1))).await).await;
        assert_eq!(first["servers"][0]["name"], "a");
        assert_eq!(first["meta"]["pagination"]["next_page"], 2);
        assert_eq!(first["meta"]["pagination"]["total_entries"], 2);
        let second = read(list_servers(State(state.clone()), Query(page(2))).await).await;
        assert_eq!(second["servers"][0]["name"], "c");
        assert_eq!(
            second["servers"][0]["labels"][crate::conventions::IDEMPOTENCY_LABEL],
            "k2"
        );
        assert!(second["meta"]["pagination"]["next_page"].is_null());
    }
}
