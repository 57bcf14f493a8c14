//! An OpenStack cloud as a public cloud exposes it, the subset the OpenStack plugin and
//! `openstacksdk` use:
//! - Keystone v3 (`/openstack/identity`): version discovery, password auth
//!   `POST /v3/auth/tokens` (token in `X-Subject-Token`, service catalog in the body);
//! - Nova v2.1 (`/openstack/compute`): version discovery, flavors, `POST /servers`
//!   (with `metadata`), `GET /servers/{id}`, `GET /servers[/detail]?name=&limit=&marker=`
//!   (newest first, `servers_links` `next` on a full page), `DELETE /servers/{id}`;
//!   `BUILD -> ACTIVE`; addresses under `addresses`;
//! - Glance v2 (`/openstack/image`): images by name.
//!
//! Nova takes `user_data` base64-encoded (anything else is a 400) and records it decoded;
//! the simulator has no key pairs, so a `key_name` is refused (400) rather than dropped.
//! A server's public keys are those its cloud-init would install from the user data's
//! cloud-config (`ssh_authorized_keys`), shown with the user data by `GET /_sim/servers`.
//!
//! `GET /openstack/_sim/requests` says how many requests this cloud has had (every API,
//! faulted ones included) and how many tokens Keystone issued
//! (`{"requests": n, "tokens_issued": m}`): tests and benchmarks count the plugin's
//! requests and logins with it.
//!
//! Every API but discovery and auth wants `X-Auth-Token` with a live token. Errors have
//! Nova's shape, `{"itemNotFound": {"code": 404, "message": ...}}`.
//!
//! Reference: the OpenStack API references for Identity v3, Compute v2.1 and Image v2.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults;
use crate::state::{FaultKind, NewServer, SimServer, SimState, Vendor};

/// The project every token is scoped to.
const PROJECT: (&str, &str) = ("5a3f9b6c2d1e4f708192a3b4c5d6e7f8", "provisioner");
/// The region of every endpoint.
const REGION: &str = "RegionOne";
/// Nova's `[api] max_limit`: the most servers one list answer holds.
const MAX_LIMIT: usize = 1000;

/// Flavors: id, name, vCPUs, RAM MB, disk GB.
const FLAVORS: &[(&str, &str, u32, u32, u32)] = &[
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
];

/// Images: id, name.
const IMAGES: &[(&str, &str)] = &[
    ("8f0c6a3e-6b1d-4c5e-9f4a-1d2e3f4a5b6c", "ubuntu-24.04"),
    ("2b7d9e1f-3a4c-4d5e-8f6a-7b8c9d0e1f2a", "debian-12"),
    ("c4e5f6a7-b8c9-4dae-9fb0-c1d2e3f4a5b6", "cirros-0.6"),
];

/// The id Nova shows for the simulator's server `id`.
fn server_uuid(id: u64) -> String {
    format!("00000000-0000-4000-8000-{id:012x}")
}

fn parse_server_uuid(text: &str) -> Option<u64> {
    let tail = text.strip_prefix("00000000-0000-4000-8000-")?;
    u64::from_str_radix(tail, 16).ok()
}

/// `/openstack/...`
pub fn router(state: Arc<SimState>) -> Router<Arc<SimState>> {
    let requests = Arc::new(AtomicU64::new(0));
    let counted = requests.clone();
    let protected = Router::new()
        .route("/compute/v2.1/flavors", get(list_flavors))
        .route("/compute/v2.1/flavors/detail", get(list_flavors))
        .route("/compute/v2.1/flavors/{id}", get(get_flavor))
        .route(
            "/compute/v2.1/servers",
            get(list_servers).post(create_server),
        )
        .route("/compute/v2.1/servers/detail", get(list_servers_detail))
        .route(
            "/compute/v2.1/servers/{id}",
            get(get_server).delete(delete_server),
        )
        .route("/image/v2/images", get(list_images))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let api = Router::new()
        .route("/identity", get(identity_versions))
        .route("/identity/v3", get(identity_version))
        .route("/identity/v3/", get(identity_version))
        .route("/identity/v3/auth/tokens", post(issue_token))
        .route("/compute", get(compute_versions))
        .route("/compute/v2.1", get(compute_version))
        .route("/compute/v2.1/", get(compute_version))
        .route("/image", get(image_versions))
        .merge(protected);
    faults::with_faults(api, &state, Vendor::OpenStack, render_fault)
        .route_layer(middleware::from_fn(move |request: Request, next: Next| {
            counted.fetch_add(1, Ordering::Relaxed);
            next.run(request)
        }))
        // The simulator's own: neither counted nor faulted.
        .route(
            "/_sim/requests",
            get(move |State(state): State<Arc<SimState>>| requests_seen(state, requests.clone())),
        )
}

/// `GET /openstack/_sim/requests`'s answer: the requests this cloud has had so far (every
/// API, the simulator's own calls not counted), and the tokens Keystone issued (every
/// password login; none is ever forgotten).
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
pub struct RequestsSeen {
    /// Requests to any OpenStack API.
    pub requests: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
}

/// `GET /_sim/requests`: [`RequestsSeen`].
async fn requests_seen(state: Arc<SimState>, requests: Arc<AtomicU64>) -> Json<RequestsSeen> {
    let issued = state
        .openstack_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len();
    Json(RequestsSeen {
        requests: requests.load(Ordering::Relaxed),
        tokens_issued: issued as u64,
    })
}

/// A Nova-shaped error: `{"<kind>": {"code": <status>, "message": ...}}`.
fn error(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    let body = json!({ kind: {"code": status.as_u16(), "message": message.into()} });
    (status, Json(body)).into_response()
}

/// Keystone's 401.
fn unauthorized() -> Response {
    let body = json!({"error": {
        "code": 401, "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }});
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

fn render_fault(kind: &FaultKind) -> Response {
    let status = faults::status_of(kind);
    match kind {
        FaultKind::RateLimit { retry_after_secs } => faults::retry_after(
            error(status, "overLimit", "This request was rate-limited."),
            *retry_after_secs,
        ),
        FaultKind::Unauthorized => unauthorized(),
        // Nova's scheduler says this in the server's `fault` once it went ERROR; the
        // simulator answers it at once, as the API's own 500.
        FaultKind::NoCapacity => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "computeFault",
            "No valid host was found. There are not enough hosts available.",
        ),
        _ => error(
            status,
            "computeFault",
            "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/",
        ),
    }
}

/// The scheme and host the client used, for the absolute URLs OpenStack answers with.
fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}/openstack")
}

fn v3_document(base: &str) -> Value {
    json!({
        "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.identity-v3+json"}],
    })
}

async fn identity_versions(headers: HeaderMap) -> Response {
    let base = origin(&headers);
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": {"values": [v3_document(&base)]}})),
    )
        .into_response()
}

async fn identity_version(headers: HeaderMap) -> Json<Value> {
    Json(json!({"version": v3_document(&origin(&headers))}))
}

fn compute_document(base: &str) -> Value {
    json!({
        "id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1",
        "updated": "2013-07-23T11:33:21Z",
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/")}],
        "media-types": [{"base": "application/json",
                         "type": "application/vnd.openstack.compute+json;version=2.1"}],
    })
}

async fn compute_versions(headers: HeaderMap) -> Json<Value> {
    Json(json!({"versions": [compute_document(&origin(&headers))]}))
}

async fn compute_version(headers: HeaderMap) -> Json<Value> {
    Json(json!({"version": compute_document(&origin(&headers))}))
}

async fn image_versions(headers: HeaderMap) -> Response {
    let base = origin(&headers);
    let body = json!({"versions": [{
        "id": "v2.16", "status": "CURRENT",
        "links": [{"rel": "self", "href": format!("{base}/image/v2/")}],
    }]});
    (StatusCode::MULTIPLE_CHOICES, Json(body)).into_response()
}

#[derive(Debug, Deserialize)]
struct AuthRequest {
    auth: Auth,
}

#[derive(Debug, Deserialize)]
struct Auth {
    identity: Identity,
}

#[derive(Debug, Deserialize)]
struct Identity {
    methods: Vec<String>,
    password: Option<PasswordMethod>,
}

#[derive(Debug, Deserialize)]
struct PasswordMethod {
    user: PasswordUser,
}

#[derive(Debug, Deserialize)]
struct PasswordUser {
    name: Option<String>,
    id: Option<String>,
    password: String,
}

/// `POST /v3/auth/tokens`: password auth; the token comes back in `X-Subject-Token`.
async fn issue_token(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Result<Json<AuthRequest>, JsonRejection>,
) -> Response {
    let Ok(Json(request)) = body else {
        return error(
            StatusCode::BAD_REQUEST,
            "error",
            "Malformed authentication request.",
        );
    };
    let identity = request.auth.identity;
    let user = identity
        .password
        .filter(|_| identity.methods.iter().any(|m| m == "password"))
        .map(|p| p.user);
    let Some(user) = user else {
        return unauthorized();
    };
    let name = user.name.or(user.id).unwrap_or_default();
    if name != state.config.openstack_user || user.password != state.config.openstack_password {
        return unauthorized();
    }
    let token = format!("gAAAAA{}", uuid::Uuid::new_v4().simple());
    let now = Utc::now();
    let expires =
        now + chrono::Duration::from_std(state.config.openstack_token_ttl).unwrap_or_default();
    state
        .openstack_tokens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(token.clone(), expires);
    let base = origin(&headers);
    let endpoint = |service: &str, path: &str| {
        json!({"id": format!("{service}-public"), "interface": "public", "region": REGION,
               "region_id": REGION, "url": format!("{base}{path}")})
    };
    let body = json!({"token": {
        "methods": ["password"],
        "expires_at": expires.to_rfc3339_opts(SecondsFormat::Micros, true),
        "issued_at": now.to_rfc3339_opts(SecondsFormat::Micros, true),
        "audit_ids": [uuid::Uuid::new_v4().simple().to_string()],
        "user": {"id": "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b", "name": name,
                 "domain": {"id": "default", "name": "Default"}, "password_expires_at": null},
        "project": {"id": PROJECT.0, "name": PROJECT.1,
                    "domain": {"id": "default", "name": "Default"}},
        "is_domain": false,
        "roles": [{"id": "3c4d5e6f7a8b49c0b1d2e3f4a5b6c7d8", "name": "member"}],
        "catalog": [
            {"type": "identity", "name": "keystone", "id": "identity",
             "endpoints": [endpoint("identity", "/identity")]},
            {"type": "compute", "name": "nova", "id": "compute",
             "endpoints": [endpoint("compute", "/compute/v2.1")]},
            {"type": "image", "name": "glance", "id": "image",
             "endpoints": [endpoint("image", "/image")]},
        ],
    }});
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&token) {
        response.headers_mut().insert("x-subject-token", value);
    }
    response
}

/// Every API but discovery and auth needs a live token.
async fn require_token(
    State(state): State<Arc<SimState>>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let live = token.is_some_and(|token| {
        state
            .openstack_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&token)
            .is_some_and(|expires| *expires > Utc::now())
    });
    if live {
        next.run(request).await
    } else {
        unauthorized()
    }
}

fn render_flavor(flavor: &(&str, &str, u32, u32, u32), base: &str) -> Value {
    let (id, name, vcpus, ram, disk) = *flavor;
    json!({
        "id": id, "name": name, "vcpus": vcpus, "ram": ram, "disk": disk,
        "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": false, "swap": "",
        "rxtx_factor": 1.0, "os-flavor-access:is_public": true, "description": null,
        "extra_specs": {},
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/flavors/{id}")}],
    })
}

async fn list_flavors(headers: HeaderMap) -> Json<Value> {
    let base = origin(&headers);
    let flavors: Vec<Value> = FLAVORS.iter().map(|f| render_flavor(f, &base)).collect();
    Json(json!({"flavors": flavors}))
}

async fn get_flavor(headers: HeaderMap, Path(id): Path<String>) -> Response {
    match FLAVORS.iter().find(|f| f.0 == id) {
        Some(flavor) => {
            Json(json!({"flavor": render_flavor(flavor, &origin(&headers))})).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "itemNotFound",
            format!("Flavor {id} could not be found."),
        ),
    }
}

#[derive(Debug, Deserialize)]
struct ImageQuery {
    name: Option<String>,
}

async fn list_images(headers: HeaderMap, Query(query): Query<ImageQuery>) -> Json<Value> {
    let base = origin(&headers);
    let images: Vec<Value> = IMAGES
        .iter()
        .filter(|(_, name)| query.name.as_deref().is_none_or(|n| n == *name))
        .map(|(id, name)| {
            json!({
                "id": id, "name": name, "status": "active", "visibility": "public",
                "disk_format": "qcow2", "container_format": "bare", "min_disk": 0,
                "min_ram": 0, "size": 3_000_000_000u64, "protected": false, "tags": [],
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "self": format!("/v2/images/{id}"), "file": format!("/v2/images/{id}/file"),
                "schema": "/v2/schemas/image",
            })
        })
        .collect();
    Json(
        json!({"images": images, "first": "/v2/images", "schema": "/v2/schemas/images", "_base": base}),
    )
}

fn render_server(server: &SimServer, state: &SimState, base: &str) -> Value {
    let booted = server.is_booted(state.config.boot_delay, Utc::now());
    let spec = &server.spec;
    let id = server_uuid(server.id);
    let created = server.created.to_rfc3339_opts(SecondsFormat::Secs, true);
    let flavor = FLAVORS
        .iter()
        .find(|f| f.1 == spec.size)
        .copied()
        .unwrap_or(FLAVORS[0]);
    let image_id = IMAGES
        .iter()
        .find(|(_, name)| *name == spec.image)
        .map(|(id, _)| *id)
        .unwrap_or(IMAGES[0].0);
    let addresses = if booted {
        json!({"public": [
            {"addr": server.ipv4, "version": 4, "OS-EXT-IPS:type": "fixed",
             "OS-EXT-IPS-MAC:mac_addr": format!("fa:16:3e:00:{:02x}:{:02x}", server.id / 256 % 256, server.id % 256)},
            {"addr": server.ipv6, "version": 6, "OS-EXT-IPS:type": "fixed",
             "OS-EXT-IPS-MAC:mac_addr": format!("fa:16:3e:00:{:02x}:{:02x}", server.id / 256 % 256, server.id % 256)},
        ]})
    } else {
        json!({})
    };
    json!({
        "id": id,
        "name": spec.name,
        "status": if booted { "ACTIVE" } else { "BUILD" },
        "tenant_id": PROJECT.0,
        "user_id": "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b",
        "metadata": spec.metadata,
        "hostId": "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8",
        "image": {"id": image_id, "links": [{"rel": "bookmark", "href": format!("{base}/image/v2/images/{image_id}")}]},
        "flavor": {
            "vcpus": flavor.2, "ram": flavor.3, "disk": flavor.4, "ephemeral": 0, "swap": 0,
            "original_name": flavor.1, "extra_specs": {},
        },
        "created": created,
        "updated": created,
        "addresses": addresses,
        "accessIPv4": "",
        "accessIPv6": "",
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/servers/{id}")},
                  {"rel": "bookmark", "href": format!("{base}/compute/servers/{id}")}],
        "OS-DCF:diskConfig": "MANUAL",
        "progress": if booted { 100 } else { 0 },
        "OS-EXT-AZ:availability_zone": "nova",
        "config_drive": "",
        "key_name": null,
        "OS-SRV-USG:launched_at": if booted { Value::String(created.clone()) } else { Value::Null },
        "OS-SRV-USG:terminated_at": null,
        "security_groups": [{"name": "default"}],
        "OS-EXT-STS:task_state": if booted { Value::Null } else { json!("spawning") },
        "OS-EXT-STS:vm_state": if booted { "active" } else { "building" },
        "OS-EXT-STS:power_state": if booted { 1 } else { 0 },
        "os-extended-volumes:volumes_attached": [],
        "locked": false,
        "description": null,
        "tags": [],
        "trusted_image_certificates": null,
        "host_status": "UP",
        "server_groups": [],
    })
}

#[derive(Debug, Deserialize)]
struct CreateServerBody {
    server: CreateServer,
}

#[derive(Debug, Deserialize)]
struct CreateServer {
    name: String,
    #[serde(rename = "imageRef")]
    image_ref: Option<String>,
    #[serde(rename = "flavorRef")]
    flavor_ref: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default, rename = "networks")]
    _networks: Option<Value>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default, rename = "availability_zone")]
    _availability_zone: Option<String>,
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "badRequest", message)
}

/// The last path segment of a `...Ref`, which may be an id or a URL.
fn reference_id(reference: &str) -> &str {
    reference.rsplit('/').next().unwrap_or(reference)
}

async fn create_server(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Result<Json<CreateServerBody>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(body)) => body.server,
        Err(rejection) => {
            return bad_request(format!(
                "Invalid input for field/attribute server: {}",
                rejection.body_text()
            ));
        }
    };
    if request.name.trim().is_empty() || request.name.len() > 255 {
        return bad_request("Invalid input for field/attribute name.");
    }
    let Some(flavor) = FLAVORS
        .iter()
        .find(|f| f.0 == reference_id(&request.flavor_ref))
    else {
        return bad_request(format!("Flavor {} could not be found.", request.flavor_ref));
    };
    let image = match request.image_ref.as_deref().map(reference_id) {
        Some(id) => match IMAGES.iter().find(|(image_id, _)| *image_id == id) {
            Some((_, name)) => name.to_string(),
            None => return bad_request(format!("Image {id} could not be found.")),
        },
        None => return bad_request("Block Device Mapping is Invalid: imageRef is required."),
    };
    if let Some(key_name) = &request.key_name {
        return bad_request(format!("Invalid key_name provided: {key_name}"));
    }
    // Nova's limit: 65535 bytes of base64.
    if request.user_data.as_ref().is_some_and(|u| u.len() > 65535) {
        return bad_request(
            "User data too large. User data must be no larger than 65535 bytes once base64 encoded.",
        );
    }
    let user_data = match request
        .user_data
        .as_deref()
        .map(crate::keys::decode_user_data)
    {
        None => None,
        Some(Ok(text)) => Some(text),
        Some(Err(message)) => return bad_request(message),
    };
    let ssh_keys = user_data
        .as_deref()
        .map(crate::keys::cloud_config_keys)
        .unwrap_or_default();
    let idempotency_key = request
        .metadata
        .get(crate::conventions::IDEMPOTENCY_LABEL)
        .cloned();
    let spec = NewServer {
        name: request.name,
        region: REGION.into(),
        size: flavor.1.into(),
        image,
        labels: Default::default(),
        tags: Vec::new(),
        metadata: request.metadata,
        idempotency_key,
        ssh_keys,
        user_data,
    };
    let server = state.with_cloud(Vendor::OpenStack, |cloud| cloud.insert(spec));
    let id = server_uuid(server.id);
    let base = origin(&headers);
    let body = json!({"server": {
        "id": id,
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/servers/{id}")},
                  {"rel": "bookmark", "href": format!("{base}/compute/servers/{id}")}],
        "OS-DCF:diskConfig": "MANUAL",
        "security_groups": [{"name": "default"}],
        "adminPass": "sim-admin-pass",
    }});
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "itemNotFound",
        format!("Instance {id} could not be found."),
    )
}

async fn get_server(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let found = parse_server_uuid(&id)
        .and_then(|n| state.with_cloud(Vendor::OpenStack, |cloud| cloud.servers.get(&n).cloned()));
    match found {
        Some(server) => Json(json!({"server": render_server(&server, &state, &origin(&headers))}))
            .into_response(),
        None => not_found(&id),
    }
}

async fn delete_server(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let removed = parse_server_uuid(&id)
        .and_then(|n| state.with_cloud(Vendor::OpenStack, |cloud| cloud.servers.remove(&n)));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&id),
    }
}

/// Nova's `name` filter is a regular expression; the simulator supports the forms clients
/// send: `^exact$` (with `\`-escaped characters) and a plain substring.
fn name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix('^').and_then(|p| p.strip_suffix('$')) {
        Some(exact) => {
            let mut unescaped = String::with_capacity(exact.len());
            let mut chars = exact.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => unescaped.extend(chars.next()),
                    other => unescaped.push(other),
                }
            }
            unescaped == name
        }
        None => name.contains(pattern),
    }
}

async fn list_servers(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    list(&state, &headers, params, "servers")
}

async fn list_servers_detail(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    list(&state, &headers, params, "servers/detail")
}

/// A server list as Nova answers it: filtered by `name`, newest first (Nova's default sort,
/// `created_at` then id, descending), at most `limit` (capped at `max_limit`) servers after
/// the `marker` server; a page holding exactly that many gets a `servers_links` `next` link
/// carrying the request's parameters with `marker` set to the page's last id.
fn list(
    state: &SimState,
    headers: &HeaderMap,
    params: Vec<(String, String)>,
    collection: &str,
) -> Response {
    // Like webob's `request.params`: the last value of a repeated parameter wins.
    let params: BTreeMap<String, String> = params.into_iter().collect();
    let limit = match params.get("limit") {
        None => state.page_size(MAX_LIMIT),
        Some(text) => match text.parse::<usize>() {
            Ok(limit) => limit.min(state.page_size(MAX_LIMIT)),
            Err(_) => {
                return bad_request(format!(
                    "Invalid input for query parameters limit. Value: {text}. '{text}' does not match '^[0-9]*$'"
                ));
            }
        },
    };
    let (servers, marker_known) = state.with_cloud(Vendor::OpenStack, |cloud| {
        // A deleted server stays a valid marker, as Nova's soft-deleted rows do.
        let marker_known = |id: u64| (1..=cloud.created_total).contains(&id);
        let marker = match params.get("marker") {
            None => None,
            Some(marker) => match parse_server_uuid(marker).filter(|id| marker_known(*id)) {
                Some(id) => Some(id),
                None => return (Vec::new(), false),
            },
        };
        let servers: Vec<SimServer> = cloud
            .servers
            .values()
            .rev()
            .filter(|s| marker.is_none_or(|marker| s.id < marker))
            .filter(|s| {
                params
                    .get("name")
                    .is_none_or(|p| name_matches(p, &s.spec.name))
            })
            .take(limit)
            .cloned()
            .collect();
        (servers, true)
    });
    if !marker_known {
        let marker = params.get("marker").map(String::as_str).unwrap_or_default();
        return bad_request(format!("marker [{marker}] not found"));
    }
    let base = origin(headers);
    let rendered: Vec<Value> = servers
        .iter()
        .map(|s| render_server(s, state, &base))
        .collect();
    let mut body = json!({"servers": rendered});
    if let Some(last) = servers
        .last()
        .filter(|_| limit > 0 && servers.len() == limit)
    {
        let mut next = params;
        next.insert("marker".into(), server_uuid(last.id));
        let query: Vec<String> = next
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect();
        let href = format!("{base}/compute/v2.1/{collection}?{}", query.join("&"));
        body["servers_links"] = json!([{"rel": "next", "href": href}]);
    }
    Json(body).into_response()
}

/// Form-encodes a query key or value as Python's `urlencode` does (Nova builds its links
/// with it): unreserved characters stay, a space becomes `+`, the rest `%XX`.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Server ids are UUIDs and read back to the simulator's number.
    #[test]
    fn server_ids_round_trip() {
        assert_eq!(parse_server_uuid(&server_uuid(42)), Some(42));
        assert_eq!(parse_server_uuid("not-a-server"), None);
    }

    /// A project of `count` servers, each carrying its number as an idempotency key.
    fn project(count: usize) -> SimState {
        let state = SimState::new(crate::SimConfig::default());
        state.with_cloud(Vendor::OpenStack, |cloud| {
            for n in 1..=count {
                let key = format!("order-{n}");
                cloud.insert(NewServer {
                    name: format!("web-{n}"),
                    metadata: [(
                        crate::conventions::IDEMPOTENCY_LABEL.to_string(),
                        key.clone(),
                    )]
                    .into(),
                    idempotency_key: Some(key),
                    ..Default::default()
                });
            }
        });
        state
    }

    /// One list answer, as status and JSON body.
    async fn answer(state: &SimState, query: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("sim.test"));
        let params = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let response = list(state, &headers, params, "servers/detail");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// `limit` and `marker` page through the servers newest first; a full page links to the
    /// next with the request's parameters and the page's last id as `marker`; a deleted
    /// server stays a valid marker, an unknown one is a 400; the detail carries `metadata`.
    #[tokio::test]
    async fn servers_page_like_nova() {
        let state = project(5);
        let (status, first) = answer(&state, &[("limit", "2"), ("name", "web")]).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = first["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["web-5", "web-4"]);
        assert_eq!(
            first["servers"][0]["metadata"][crate::conventions::IDEMPOTENCY_LABEL],
            "order-5"
        );
        let next = &first["servers_links"][0];
        assert_eq!(next["rel"], "next");
        let marker = server_uuid(4);
        assert_eq!(
            next["href"],
            format!(
                "http://sim.test/openstack/compute/v2.1/servers/detail?limit=2&marker={marker}&name=web"
            )
        );

        state.with_cloud(Vendor::OpenStack, |cloud| cloud.servers.remove(&4));
        let (_, second) = answer(&state, &[("limit", "2"), ("marker", &marker)]).await;
        assert_eq!(second["servers"][0]["id"], server_uuid(3));
        assert_eq!(second["servers"][1]["id"], server_uuid(2));
        assert!(second["servers_links"][0]["href"].is_string());
        let (_, last) = answer(&state, &[("limit", "2"), ("marker", &server_uuid(2))]).await;
        assert_eq!(last["servers"].as_array().unwrap().len(), 1);
        assert!(last.get("servers_links").is_none());

        let (_, all) = answer(&state, &[]).await;
        assert_eq!(all["servers"].as_array().unwrap().len(), 4);
        assert!(all.get("servers_links").is_none());
        let (status, error) = answer(&state, &[("marker", &server_uuid(99))]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            error["badRequest"]["message"]
                .as_str()
                .unwrap()
                .contains("not found")
        );
        let (status, _) = answer(&state, &[("limit", "many")]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(form_encode("^web 1$"), "%5Eweb+1%24");
    }

    /// The name filter handles the anchored and the plain form.
    #[test]
    fn name_filter_matches_like_nova() {
        assert!(name_matches("^web-1$", "web-1"));
        assert!(!name_matches("^web-1$", "web-10"));
        assert!(name_matches("web", "my-web-1"));
        assert!(name_matches("^web\\.1$", "web.1"));
    }
}
