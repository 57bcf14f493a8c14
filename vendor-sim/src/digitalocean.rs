//! The DigitalOcean API v2 subset the DigitalOcean plugin uses, in DigitalOcean's own
//! shapes: `POST /v2/droplets`, `GET /v2/droplets` (with `tag_name`, pagination),
//! `GET /v2/droplets/{id}`, `DELETE /v2/droplets/{id}`; the SSH key store,
//! `GET /v2/account/keys` (paged), `POST /v2/account/keys`,
//! `GET|DELETE /v2/account/keys/{id or fingerprint}`; bearer-token auth; errors as
//! `{"id", "message"}`; `ratelimit-*` headers on every answer.
//!
//! Droplet names need not be unique. A droplet's `ssh_keys` are ids or fingerprints of
//! stored keys (an unknown one is a 422); the droplet records the public keys they stand
//! for and its `user_data`, shown by `GET /_sim/servers`. A key already stored (same
//! fingerprint) is refused with 422, as DigitalOcean does.
//!
//! Reference: the DigitalOcean OpenAPI specification (digitalocean/openapi), `droplets`
//! and `ssh_keys`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::SecondsFormat;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::conventions::with_bearer_token;
use crate::faults;
use crate::state::{FaultKind, NewServer, SimServer, SimState, Vendor};

/// Region slugs and names.
const REGIONS: &[(&str, &str)] = &[
    ("nyc1", "New York 1"),
    ("nyc3", "New York 3"),
    ("sfo3", "San Francisco 3"),
    ("ams3", "Amsterdam 3"),
    ("sgp1", "Singapore 1"),
    ("lon1", "London 1"),
    ("fra1", "Frankfurt 1"),
    ("tor1", "Toronto 1"),
    ("blr1", "Bangalore 1"),
    ("syd1", "Sydney 1"),
];

/// Size slugs: memory MB, vCPUs, disk GB, monthly price.
const SIZES: &[(&str, u32, u32, u32, f64)] = &[
    ("s-1vcpu-512mb-10gb", 512, 1, 10, 4.0),
    ("s-1vcpu-1gb", 1024, 1, 25, 6.0),
    ("s-1vcpu-2gb", 2048, 1, 50, 12.0),
    ("s-2vcpu-2gb", 2048, 2, 60, 18.0),
    ("s-2vcpu-4gb", 4096, 2, 80, 24.0),
    ("s-4vcpu-8gb", 8192, 4, 160, 48.0),
];

/// Image slugs: distribution, name.
const IMAGES: &[(&str, &str, &str)] = &[
    ("ubuntu-24-04-x64", "Ubuntu", "24.04 (LTS) x64"),
    ("ubuntu-22-04-x64", "Ubuntu", "22.04 (LTS) x64"),
    ("debian-12-x64", "Debian", "12 x64"),
    ("fedora-41-x64", "Fedora", "41 x64"),
    ("rockylinux-9-x64", "Rocky Linux", "9 x64"),
];

/// DigitalOcean sends its rate-limit state on every answer.
const RATE_LIMIT: faults::RateLimitHeaders = faults::RateLimitHeaders {
    limit: "5000",
    remaining: "4999",
    reset_secs: 60,
};

/// `/digitalocean/v2/...`
pub fn router(state: Arc<SimState>) -> Router<Arc<SimState>> {
    let api = with_bearer_token(
        Router::new()
            .route("/droplets", get(list_droplets).post(create_droplet))
            .route("/droplets/{id}", get(get_droplet).delete(delete_droplet))
            .route("/account/keys", get(list_keys).post(create_key))
            .route("/account/keys/{key}", get(get_key).delete(delete_key)),
        &state.config.digitalocean_token,
        unauthorized,
    );
    faults::with_faults(api, &state, Vendor::DigitalOcean, render_fault).layer(
        middleware::from_fn_with_state(RATE_LIMIT, faults::add_rate_limit_headers),
    )
}

/// A DigitalOcean error answer.
fn error(status: StatusCode, id: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({"id": id, "message": message.into()}))).into_response()
}

fn render_fault(kind: &FaultKind) -> Response {
    let status = faults::status_of(kind);
    match kind {
        FaultKind::RateLimit { retry_after_secs } => faults::rate_limit_spent(
            error(status, "too_many_requests", "API Rate limit exceeded."),
            *retry_after_secs,
        ),
        FaultKind::Unauthorized => error(status, "unauthorized", "Unable to authenticate you"),
        FaultKind::NoCapacity => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable_entity",
            "Size is not available in this region.",
        ),
        FaultKind::ServerError { status: 503 } => error(
            status,
            "service_unavailable",
            "The service is temporarily unavailable.",
        ),
        _ => error(
            status,
            "server_error",
            "Server was unable to give you a response.",
        ),
    }
}

/// DigitalOcean's answer to a missing or wrong token.
fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unable to authenticate you",
    )
}

fn render_droplet(server: &SimServer, state: &SimState) -> Value {
    let booted = server.is_booted(state.config.boot_delay, chrono::Utc::now());
    let spec = &server.spec;
    let (memory, vcpus, disk, price) = SIZES
        .iter()
        .find(|(slug, ..)| *slug == spec.size)
        .map(|(_, m, v, d, p)| (*m, *v, *d, *p))
        .unwrap_or((1024, 1, 25, 6.0));
    let (distribution, image_name) = IMAGES
        .iter()
        .find(|(slug, ..)| *slug == spec.image)
        .map(|(_, d, n)| (*d, *n))
        .unwrap_or(("Unknown", "unknown"));
    let region_name = REGIONS
        .iter()
        .find(|(slug, _)| *slug == spec.region)
        .map(|(_, name)| *name)
        .unwrap_or("Unknown");
    let created = server.created.to_rfc3339_opts(SecondsFormat::Secs, true);
    let networks = if booted {
        json!({
            "v4": [
                {"ip_address": server.ipv4, "netmask": "255.255.240.0",
                 "gateway": "203.0.113.254", "type": "public"},
                {"ip_address": format!("10.110.{}.{}", server.id / 250 % 250, server.id % 250 + 2),
                 "netmask": "255.255.0.0", "gateway": "10.110.0.1", "type": "private"},
            ],
            "v6": [
                {"ip_address": server.ipv6, "netmask": 64, "gateway": "2001:db8::1", "type": "public"},
            ],
        })
    } else {
        json!({"v4": [], "v6": []})
    };
    json!({
        "id": server.id,
        "name": spec.name,
        "memory": memory,
        "vcpus": vcpus,
        "disk": disk,
        "locked": false,
        "status": if booted { "active" } else { "new" },
        "kernel": null,
        "created_at": created,
        "features": ["ipv6"],
        "backup_ids": [],
        "next_backup_window": null,
        "snapshot_ids": [],
        "image": {
            "id": 100000 + IMAGES.iter().position(|(slug, ..)| *slug == spec.image).unwrap_or(0),
            "name": image_name, "distribution": distribution, "slug": spec.image,
            "public": true, "regions": REGIONS.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            "created_at": created, "type": "base", "min_disk_size": 7,
            "size_gigabytes": 2.36, "description": format!("{distribution} {image_name}"),
            "tags": [], "status": "available", "error_message": "",
        },
        "volume_ids": [],
        "size": {
            "slug": spec.size, "memory": memory, "vcpus": vcpus, "disk": disk,
            "transfer": 1.0, "price_monthly": price, "price_hourly": price / 730.0,
            "regions": REGIONS.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            "available": true, "description": "Basic",
        },
        "size_slug": spec.size,
        "networks": networks,
        "region": {
            "name": region_name, "slug": spec.region,
            "features": ["backups", "ipv6", "metadata", "install_agent"],
            "available": true,
            "sizes": SIZES.iter().map(|(s, ..)| *s).collect::<Vec<_>>(),
        },
        "tags": spec.tags,
        "vpc_uuid": "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
    })
}

#[derive(Debug, Deserialize)]
struct CreateDroplet {
    name: String,
    region: String,
    size: String,
    image: Value,
    #[serde(default)]
    tags: Vec<String>,
    /// Ids (numbers) or fingerprints of stored keys.
    #[serde(default)]
    ssh_keys: Vec<Value>,
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default, rename = "ipv6")]
    _ipv6: Option<bool>,
    #[serde(default, rename = "backups")]
    _backups: Option<bool>,
    #[serde(default, rename = "monitoring")]
    _monitoring: Option<bool>,
    #[serde(default, rename = "vpc_uuid")]
    _vpc_uuid: Option<String>,
}

fn unprocessable(message: impl Into<String>) -> Response {
    error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "unprocessable_entity",
        message,
    )
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 255
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_'))
}

async fn create_droplet(
    State(state): State<Arc<SimState>>,
    body: Result<Json<CreateDroplet>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return unprocessable(rejection.body_text()),
    };
    if !crate::conventions::valid_hostname(&request.name) {
        return unprocessable(format!("{} is not a valid hostname", request.name));
    }
    if !REGIONS.iter().any(|(slug, _)| *slug == request.region) {
        return unprocessable("You specified an invalid region for Droplet creation.");
    }
    if !SIZES.iter().any(|(slug, ..)| *slug == request.size) {
        return unprocessable("You specified an invalid size for Droplet creation.");
    }
    let image = match &request.image {
        Value::String(slug) if IMAGES.iter().any(|(s, ..)| s == slug) => slug.clone(),
        Value::Number(id) => match id
            .as_u64()
            .and_then(|id| IMAGES.get(id.checked_sub(100000)? as usize))
        {
            Some((slug, ..)) => slug.to_string(),
            None => return unprocessable("You specified an invalid image for Droplet creation."),
        },
        _ => return unprocessable("You specified an invalid image for Droplet creation."),
    };
    if let Some(tag) = request.tags.iter().find(|tag| !valid_tag(tag)) {
        return unprocessable(format!(
            "tag {tag} is invalid: tags may contain letters, numbers, colons, dashes, and underscores"
        ));
    }
    let ssh_keys = state.with_cloud(Vendor::DigitalOcean, |cloud| {
        request
            .ssh_keys
            .iter()
            .map(|reference| {
                let found = match reference {
                    Value::Number(id) => id.as_u64().and_then(|id| cloud.ssh_keys.get(&id)),
                    Value::String(text) => find_key(&cloud.ssh_keys, text),
                    _ => None,
                };
                found
                    .map(|key| key.public_key.clone())
                    .ok_or_else(|| format!("SSH key {reference} was not found on your account."))
            })
            .collect::<Result<Vec<String>, String>>()
    });
    let ssh_keys = match ssh_keys {
        Ok(keys) => keys,
        Err(message) => return unprocessable(message),
    };
    if request
        .user_data
        .as_ref()
        .is_some_and(|u| u.len() > 64 * 1024)
    {
        return unprocessable("user_data is limited to 64 KiB.");
    }
    let key_prefix = format!("{}:", crate::conventions::IDEMPOTENCY_LABEL);
    let idempotency_key = request
        .tags
        .iter()
        .find_map(|tag| tag.strip_prefix(&key_prefix).map(str::to_string));
    let spec = NewServer {
        name: request.name,
        region: request.region,
        size: request.size,
        image,
        labels: Default::default(),
        metadata: Default::default(),
        tags: request.tags,
        idempotency_key,
        ssh_keys,
        user_data: request.user_data,
    };
    let server = state.with_cloud(Vendor::DigitalOcean, |cloud| cloud.insert(spec));
    let body = json!({
        "droplet": render_droplet(&server, &state),
        "links": {"actions": [{
            "id": server.id * 10, "rel": "create",
            "href": format!("https://api.digitalocean.com/v2/actions/{}", server.id * 10),
        }]},
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

/// A stored key by id (digits) or fingerprint.
fn find_key<'a>(
    keys: &'a std::collections::BTreeMap<u64, crate::keys::StoredKey>,
    id_or_fingerprint: &str,
) -> Option<&'a crate::keys::StoredKey> {
    match id_or_fingerprint.parse::<u64>() {
        Ok(id) => keys.get(&id),
        Err(_) => keys.values().find(|k| k.fingerprint == id_or_fingerprint),
    }
}

fn render_key(key: &crate::keys::StoredKey) -> Value {
    json!({
        "id": key.id,
        "fingerprint": key.fingerprint,
        "public_key": key.public_key,
        "name": key.name,
    })
}

#[derive(Debug, Deserialize)]
struct CreateKey {
    name: String,
    public_key: String,
}

/// `POST /v2/account/keys`: 201 with the key; 422 for a bad or already stored key.
async fn create_key(
    State(state): State<Arc<SimState>>,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return unprocessable(rejection.body_text()),
    };
    if request.name.trim().is_empty() {
        return unprocessable("Name is invalid");
    }
    let Ok(checked) = crate::keys::check(&request.public_key) else {
        return unprocessable("Key invalid, key should be of the format `type key [comment]`");
    };
    let filed = state.with_cloud(Vendor::DigitalOcean, |cloud| {
        if cloud
            .ssh_keys
            .values()
            .any(|k| k.fingerprint == checked.fingerprint)
        {
            return None;
        }
        Some(cloud.insert_key(request.name, checked, Default::default()))
    });
    match filed {
        Some(key) => (
            StatusCode::CREATED,
            Json(json!({"ssh_key": render_key(&key)})),
        )
            .into_response(),
        None => unprocessable("SSH Key is already in use on your account"),
    }
}

/// DigitalOcean's 400 for a query it cannot read.
fn invalid_query() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        "invalid query parameters",
    )
}

/// The page a list request asks for: `page` from 1, `per_page` 20 by default, 200 (or the
/// simulator's smaller page size) at most.
struct Page {
    number: usize,
    per_page: usize,
}

impl Page {
    fn asked(state: &SimState, page: Option<usize>, per_page: Option<usize>) -> Page {
        Page {
            number: page.unwrap_or(1).max(1),
            per_page: per_page.unwrap_or(20).clamp(1, state.page_size(200)),
        }
    }

    /// This page's items of the whole list.
    fn of<T>(&self, all: impl IntoIterator<Item = T>) -> impl Iterator<Item = T> {
        all.into_iter()
            .skip((self.number - 1) * self.per_page)
            .take(self.per_page)
    }

    /// `links.pages` for a list of `total`: `next`/`last` before the last page,
    /// `first`/`prev` after the first, each the URL `link` makes for a page number.
    fn links(
        &self,
        total: usize,
        link: impl Fn(usize) -> String,
    ) -> serde_json::Map<String, Value> {
        let last = total.div_ceil(self.per_page).max(1);
        let mut pages = serde_json::Map::new();
        if self.number < last {
            pages.insert("next".into(), json!(link(self.number + 1)));
            pages.insert("last".into(), json!(link(last)));
        }
        if self.number > 1 {
            pages.insert("first".into(), json!(link(1)));
            pages.insert("prev".into(), json!(link(self.number - 1)));
        }
        pages
    }
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    page: Option<usize>,
    per_page: Option<usize>,
}

/// `GET /v2/account/keys`, paged like droplets.
async fn list_keys(
    State(state): State<Arc<SimState>>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return invalid_query();
    };
    let keys: Vec<Value> = state.with_cloud(Vendor::DigitalOcean, |cloud| {
        cloud.ssh_keys.values().map(render_key).collect()
    });
    let page = Page::asked(&state, query.page, query.per_page);
    let total = keys.len();
    let pages = page.links(total, |p| {
        format!(
            "https://api.digitalocean.com/v2/account/keys?page={p}&per_page={}",
            page.per_page
        )
    });
    let shown: Vec<Value> = page.of(keys).collect();
    Json(json!({"ssh_keys": shown, "links": {"pages": pages}, "meta": {"total": total}}))
        .into_response()
}

async fn get_key(State(state): State<Arc<SimState>>, Path(key): Path<String>) -> Response {
    let found = state.with_cloud(Vendor::DigitalOcean, |cloud| {
        find_key(&cloud.ssh_keys, &key).cloned()
    });
    match found {
        Some(key) => Json(json!({"ssh_key": render_key(&key)})).into_response(),
        None => not_found(),
    }
}

async fn delete_key(State(state): State<Arc<SimState>>, Path(key): Path<String>) -> Response {
    let removed = state.with_cloud(Vendor::DigitalOcean, |cloud| {
        let id = find_key(&cloud.ssh_keys, &key).map(|k| k.id)?;
        cloud.ssh_keys.remove(&id)
    });
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "The resource you were accessing could not be found.",
    )
}

async fn get_droplet(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    match state.with_cloud(Vendor::DigitalOcean, |cloud| {
        cloud.servers.get(&id).cloned()
    }) {
        Some(server) => Json(json!({"droplet": render_droplet(&server, &state)})).into_response(),
        None => not_found(),
    }
}

async fn delete_droplet(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    match state.with_cloud(Vendor::DigitalOcean, |cloud| cloud.servers.remove(&id)) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    tag_name: Option<String>,
    name: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

async fn list_droplets(
    State(state): State<Arc<SimState>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return invalid_query();
    };
    let droplets: Vec<SimServer> = state.with_cloud(Vendor::DigitalOcean, |cloud| {
        cloud
            .servers
            .values()
            .filter(|s| {
                query
                    .tag_name
                    .as_ref()
                    .is_none_or(|tag| s.spec.tags.contains(tag))
            })
            .filter(|s| query.name.as_ref().is_none_or(|name| &s.spec.name == name))
            .cloned()
            .collect()
    });
    let page = Page::asked(&state, query.page, query.per_page);
    let total = droplets.len();
    let rendered: Vec<Value> = page
        .of(droplets.iter())
        .map(|d| render_droplet(d, &state))
        .collect();
    let pages = page.links(total, |p| {
        let mut url = format!(
            "https://api.digitalocean.com/v2/droplets?page={p}&per_page={}",
            page.per_page
        );
        if let Some(tag) = &query.tag_name {
            url.push_str(&format!("&tag_name={tag}"));
        }
        url
    });
    Json(json!({
        "droplets": rendered,
        "links": {"pages": pages},
        "meta": {"total": total},
    }))
    .into_response()
}
