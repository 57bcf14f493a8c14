//! Example Cloud (vendor id `example`): a deliberately small, typical REST API, made up for
//! the simulator so that a first provider plugin has a simple, fully documented target.
//! This page is its complete API reference.
//!
//! # Base URL
//!
//! Every endpoint is under `<simulator>/example/v1`, e.g.
//! `http://127.0.0.1:8090/example/v1/servers` with the simulator's default address.
//! Paths are exact: no trailing slash (`/servers/` is a 404).
//!
//! # Authentication
//!
//! Every request to an endpoint below carries `Authorization: Bearer <token>`: the scheme
//! `Bearer` spelled exactly so, one space, the token. The simulator accepts one token, set
//! with `--example-token` / `SIM_EXAMPLE_TOKEN` (default `sim-example-token`, also
//! [`crate::state::DEFAULT_EXAMPLE_TOKEN`]). A missing, malformed or wrong header is answered
//! `401 {"error": {"code": "unauthorized", ...}}` with a `WWW-Authenticate: Bearer` header,
//! before the request is looked at (a 401 tells nothing about whether a server exists; a
//! create answered 401 made nothing). Only a path that is no endpoint (404) or a method an
//! endpoint does not take (405) is answered without looking at the token.
//!
//! # Requests and answers
//!
//! Request bodies are JSON (send `Content-Type: application/json`; the simulator does not
//! check it). Every answer with a body is JSON with `Content-Type: application/json`; `204`
//! answers have no body. Numbers in URLs and queries are plain decimal integers. `HEAD` is
//! taken wherever `GET` is (same status and headers, no body).
//!
//! ## Errors
//!
//! Every error answer, whatever its status, has this body:
//!
//! ```json
//! {"error": {"code": "not_found", "message": "no server with id 'srv-7'"}}
//! ```
//!
//! `code` is one of the machine-readable codes below; `message` is for humans and may change.
//!
//! | Status | `code` | When |
//! |---|---|---|
//! | 400 | `bad_request` | The body is not JSON, is not a JSON object, or is over 2 MiB; a query parameter is invalid or repeated. The message says what. |
//! | 401 | `unauthorized` | No, malformed or wrong bearer token (also the injected `unauthorized` fault). |
//! | 404 | `not_found` | No server with that id; or no such endpoint. |
//! | 405 | `method_not_allowed` | The path exists but not with this method; an `Allow` header lists the methods (e.g. `GET,HEAD,POST`). |
//! | 422 | `invalid_field` | A body field is missing, of the wrong type, or has a value the API does not accept. The message starts with the field's name and a colon, e.g. `plan: unknown plan 'huge'; one of small, medium, large`. |
//! | 429 | `rate_limited` | Too many requests. A `Retry-After: <seconds>` header says when to try again. |
//! | 5xx | `server_error` | The API failed (500, 502, 503...). Nothing is known about whether the request was carried out. |
//!
//! # The server object
//!
//! ```json
//! {
//!   "id": "srv-1",
//!   "name": "web-1",
//!   "region": "eu-1",
//!   "plan": "small",
//!   "image": "ubuntu-24.04",
//!   "status": "running",
//!   "ipv4": "203.0.113.2",
//!   "ipv6": "2001:db8:1::1",
//!   "tags": {"env": "prod"},
//!   "created_at": "2025-01-31T12:00:00Z"
//! }
//! ```
//!
//! - `id`: string, `srv-` followed by a number; unique, never reused. Treat it as opaque.
//! - `name`, `region`, `plan`, `image`, `tags`: as given at creation (`tags` is `{}` when
//!   none were given; keys come sorted).
//! - `status`: `"creating"` after creation, then `"running"` once the server has booted (the
//!   simulator's boot delay, `--boot-delay-ms`, 2 s by default). There are no other states.
//! - `ipv4`, `ipv6`: the public addresses, strings once `running`, `null` while `creating`.
//!   The simulator hands out documentation-style addresses such as `203.0.113.2` and
//!   `2001:db8:1::1`; nothing answers on them.
//! - `created_at`: RFC 3339 in UTC with whole seconds, e.g. `2025-01-31T12:00:00Z`.
//!
//! # Endpoints
//!
//! ## `POST /servers`: create a server
//!
//! Body:
//!
//! ```json
//! {
//!   "name": "web-1",
//!   "region": "eu-1",
//!   "plan": "small",
//!   "image": "ubuntu-24.04",
//!   "ssh_keys": ["ssh-ed25519 AAAA... me@laptop"],
//!   "user_data": "#cloud-config\n...",
//!   "tags": {"env": "prod", "provisioner-idempotency-key": "order-42"}
//! }
//! ```
//!
//! - `name` (string, required): an RFC 1123 hostname: dot-separated labels of 1 to 63
//!   ASCII letters, digits and hyphens, no label starting or ending with a hyphen, at most
//!   253 characters in all. Names need not be unique: two creates with the same body make
//!   two servers.
//! - `region` (string, required): one of [`REGIONS`] (`eu-1`, `us-1`).
//! - `plan` (string, required): one of [`PLANS`] (`small`, `medium`, `large`).
//! - `image` (string, required): one of [`IMAGES`] (`ubuntu-24.04`, `debian-12`).
//! - `ssh_keys` (array of strings, optional): OpenSSH public keys to install. Not echoed
//!   back (the simulator shows them in `GET /_sim/servers`).
//! - `user_data` (string, optional): cloud-init user data, as text. Not echoed back (the
//!   simulator shows it in `GET /_sim/servers`).
//! - `tags` (object of string to string, optional): free key-value tags. A key is a
//!   non-empty string without `:` (the list filter splits `key:value` at the first `:`);
//!   a value is any string, empty included.
//!
//! An optional field may be omitted or `null`. Members not listed here are ignored. Fields
//! are checked in the order above and the first problem is reported.
//!
//! Answers:
//! - `201 Created`, `{"server": SERVER}`, `status` `"creating"`. The server exists from
//!   this moment (a lost answer does not undo it: look it up by a tag you set, see below).
//! - `400 bad_request`: the body is not a JSON object.
//! - `422 invalid_field`: a field is missing, of the wrong type, or not accepted (an unknown
//!   region, plan or image, a bad name or tag), e.g.
//!   `{"error": {"code": "invalid_field", "message": "plan: unknown plan 'huge'; one of small, medium, large"}}`.
//!
//! ## `GET /servers/{id}`: one server
//!
//! - `200 OK`, `{"server": SERVER}`.
//! - `404 not_found`: no server has this id (never had, or deleted).
//!
//! ## `GET /servers`: list servers
//!
//! Query parameters, all optional:
//! - `tag=<key>:<value>`: only servers whose tag `<key>` is exactly `<value>` (split at the
//!   first `:`, so the value may contain `:`). URL-encode it (form encoding: `+` is a
//!   space).
//! - `tag_key=<key>`: only servers having a tag `<key>`, whatever its value.
//! - `page` (default 1): the 1-based page, a positive integer.
//! - `per_page` (default 20): servers per page, a positive integer; above 100 counts as 100.
//!
//! Both filters may be given; a server must then match both. Unknown parameters are
//! ignored; a known one given twice, a `tag` without `:`, an empty `tag_key`, or a `page` /
//! `per_page` that is not a positive integer is a `400 bad_request`.
//!
//! `200 OK`:
//!
//! ```json
//! {"servers": [SERVER, ...], "next_page": 2}
//! ```
//!
//! Servers come oldest first (by creation). `next_page` is the number of the next page when
//! more servers follow this page, else `null`; to read everything, start at page 1 and
//! follow `next_page` (keeping the same filters and `per_page`) until it is `null`. A page
//! past the end is `{"servers": [], "next_page": null}`.
//!
//! ## `DELETE /servers/{id}`: delete a server
//!
//! - `204 No Content`: deleted. The server is gone at once: a `GET` of it is a 404 and lists
//!   no longer show it.
//! - `404 not_found`: no server has this id (a second delete of the same server is a 404).
//!
//! # Rate limits and failures
//!
//! Answers carry no rate-limit headers. When a request is refused for its rate, the answer
//! is `429` with `{"error": {"code": "rate_limited", ...}}` and `Retry-After: <seconds>`
//! (an integer); the request was not carried out and may be sent again after that delay. A
//! `5xx` (`server_error`) may come for any request; a connection may also close without any
//! answer, after the request was carried out (a create then made its server).
//!
//! In the simulator these come from injected faults (`--fault example:rate_limit:3`, or
//! `POST /_sim/faults` with `"vendor": "example"`): `rate_limit` answers 429 with
//! `Retry-After: <retry_after_secs>`; `server_error` / `unavailable` answer their status
//! with code `server_error`; `unauthorized` answers 401; `slow` delays the real answer;
//! `lost_response` carries the request out and closes the connection without answering.
//! Faults are applied before authentication, to any endpoint above.
//!
//! # For plugin authors
//!
//! The provisioner's plugins put the order's idempotency key in the tag
//! `provisioner-idempotency-key` ([`crate::conventions::IDEMPOTENCY_LABEL`]): before creating, list with
//! `tag=provisioner-idempotency-key:<key>` and adopt a server found there. The simulator
//! counts servers per key and shows keys with more than one server in `GET /_sim/stats`
//! (`duplicates`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use serde_json::{Map, Value, json};

use crate::conventions::with_bearer_token;
use crate::faults;
use crate::state::{FaultKind, NewServer, SimServer, SimState, Vendor};

/// The base path the simulator serves Example Cloud under.
pub const BASE_PATH: &str = "/example/v1";

/// The regions: `eu-1`, `us-1`.
pub const REGIONS: &[&str] = &["eu-1", "us-1"];

/// The plans (server sizes): `small`, `medium`, `large`.
pub const PLANS: &[&str] = &["small", "medium", "large"];

/// The images: `ubuntu-24.04`, `debian-12`.
pub const IMAGES: &[&str] = &["ubuntu-24.04", "debian-12"];

/// Servers per page when `per_page` is not given.
pub const DEFAULT_PER_PAGE: usize = 20;

/// The largest `per_page`; larger values count as this.
pub const MAX_PER_PAGE: usize = 100;

/// `/example/v1/...`
pub fn router(state: Arc<SimState>) -> Router<Arc<SimState>> {
    let api = with_bearer_token(
        Router::new()
            .route("/servers", get(list_servers).post(create_server))
            .route("/servers/{id}", get(get_server).delete(delete_server)),
        &state.config.example_token,
        unauthorized,
    );
    faults::with_faults(api, &state, Vendor::Example, render_fault)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(no_such_endpoint)
}

/// An Example Cloud error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({"error": {"code": code, "message": message.into()}});
    (status, Json(body)).into_response()
}

fn unauthorized() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid bearer token",
    );
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn bad_request(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// A create body's field the API does not accept: answered `422 invalid_field`.
#[derive(Debug)]
struct InvalidField {
    field: &'static str,
    problem: String,
}

fn invalid_field(field: &'static str, problem: impl Into<String>) -> InvalidField {
    InvalidField {
        field,
        problem: problem.into(),
    }
}

impl IntoResponse for InvalidField {
    fn into_response(self) -> Response {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{}: {}", self.field, self.problem),
        )
    }
}

fn not_found(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no server with id '{id}'"),
    )
}

/// An injected fault as Example Cloud answers it.
fn render_fault(kind: &FaultKind) -> Response {
    let status = faults::status_of(kind);
    match kind {
        FaultKind::RateLimit { retry_after_secs } => faults::retry_after(
            error(
                status,
                "rate_limited",
                format!("too many requests; retry after {retry_after_secs} s"),
            ),
            *retry_after_secs,
        ),
        FaultKind::Unauthorized => unauthorized(),
        FaultKind::NoCapacity => error(status, "no_capacity", "no capacity in this region"),
        _ => error(status, "server_error", "an internal error occurred"),
    }
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method",
    )
}

async fn no_such_endpoint() -> Response {
    error(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// The API id of a server.
fn server_id(id: u64) -> String {
    format!("srv-{id}")
}

/// The simulator's number behind an API id; `None` for anything not exactly `srv-<n>`.
fn parse_server_id(text: &str) -> Option<u64> {
    let id: u64 = text.strip_prefix("srv-")?.parse().ok()?;
    (server_id(id) == text).then_some(id)
}

/// A server in Example Cloud's JSON.
fn render_server(server: &SimServer, state: &SimState) -> Value {
    let booted = server.is_booted(state.config.boot_delay, Utc::now());
    let spec = &server.spec;
    json!({
        "id": server_id(server.id),
        "name": spec.name,
        "region": spec.region,
        "plan": spec.size,
        "image": spec.image,
        "status": if booted { "running" } else { "creating" },
        "ipv4": booted.then(|| server.ipv4.clone()),
        "ipv6": booted.then(|| server.ipv6.clone()),
        "tags": spec.labels,
        "created_at": server.created.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// A required string field of a create body.
fn required_string(body: &Map<String, Value>, field: &'static str) -> Result<String, InvalidField> {
    match body.get(field) {
        None | Some(Value::Null) => Err(invalid_field(field, "required")),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(_) => Err(invalid_field(field, "must be a string")),
    }
}

/// A required string field that must be one of `allowed`.
fn catalogue_field(
    body: &Map<String, Value>,
    field: &'static str,
    allowed: &[&str],
) -> Result<String, InvalidField> {
    let value = required_string(body, field)?;
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(invalid_field(
            field,
            format!("unknown {field} '{value}'; one of {}", allowed.join(", ")),
        ))
    }
}

/// Checks a create body, field by field in the documented order.
fn parse_create(body: &Map<String, Value>) -> Result<NewServer, InvalidField> {
    let name = required_string(body, "name")?;
    if !crate::conventions::valid_hostname(&name) {
        return Err(invalid_field(
            "name",
            format!(
                "'{name}' is not a valid hostname (dot-separated labels of 1 to 63 letters, \
                 digits and hyphens, not starting or ending with a hyphen)"
            ),
        ));
    }
    let region = catalogue_field(body, "region", REGIONS)?;
    let plan = catalogue_field(body, "plan", PLANS)?;
    let image = catalogue_field(body, "image", IMAGES)?;
    let ssh_keys = match body.get("ssh_keys") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(keys)) if keys.iter().all(Value::is_string) => keys
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(_) => return Err(invalid_field("ssh_keys", "must be an array of strings")),
    };
    let user_data = match body.get("user_data") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(invalid_field("user_data", "must be a string")),
    };
    let mut tags = BTreeMap::new();
    match body.get("tags") {
        None | Some(Value::Null) => {}
        Some(Value::Object(given)) => {
            for (key, value) in given {
                if key.is_empty() || key.contains(':') {
                    return Err(invalid_field(
                        "tags",
                        format!("key '{key}' must be non-empty and must not contain ':'"),
                    ));
                }
                let Value::String(value) = value else {
                    return Err(invalid_field(
                        "tags",
                        format!("the value of '{key}' must be a string"),
                    ));
                };
                tags.insert(key.clone(), value.clone());
            }
        }
        Some(_) => {
            return Err(invalid_field("tags", "must be an object of string values"));
        }
    }
    let idempotency_key = tags.get(crate::conventions::IDEMPOTENCY_LABEL).cloned();
    Ok(NewServer {
        name,
        region,
        size: plan,
        image,
        labels: tags,
        idempotency_key,
        ssh_keys,
        user_data,
        ..NewServer::default()
    })
}

async fn create_server(
    State(state): State<Arc<SimState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            return bad_request(format!(
                "the body could not be read: {}",
                rejection.body_text()
            ));
        }
    };
    let body = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(body)) => body,
        Ok(_) => return bad_request("the body must be a JSON object"),
        Err(problem) => return bad_request(format!("the body is not valid JSON: {problem}")),
    };
    let spec = match parse_create(&body) {
        Ok(spec) => spec,
        Err(invalid) => return invalid.into_response(),
    };
    let server = state.with_cloud(Vendor::Example, |cloud| cloud.insert(spec));
    (
        StatusCode::CREATED,
        Json(json!({"server": render_server(&server, &state)})),
    )
        .into_response()
}

async fn get_server(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let server = parse_server_id(&id)
        .and_then(|n| state.with_cloud(Vendor::Example, |cloud| cloud.servers.get(&n).cloned()));
    match server {
        Some(server) => Json(json!({"server": render_server(&server, &state)})).into_response(),
        None => not_found(&id),
    }
}

async fn delete_server(State(state): State<Arc<SimState>>, Path(id): Path<String>) -> Response {
    let removed = parse_server_id(&id)
        .and_then(|n| state.with_cloud(Vendor::Example, |cloud| cloud.servers.remove(&n)));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(&id),
    }
}

/// `GET /servers`'s query, checked.
#[derive(Debug, PartialEq)]
struct ListQuery {
    tag: Option<(String, String)>,
    tag_key: Option<String>,
    page: usize,
    per_page: usize,
}

impl ListQuery {
    fn parse(pairs: Vec<(String, String)>) -> Result<Self, String> {
        let mut given: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, value) in &pairs {
            if matches!(name.as_str(), "tag" | "tag_key" | "page" | "per_page")
                && given.insert(name, value).is_some()
            {
                return Err(format!("query parameter '{name}' is given more than once"));
            }
        }
        let tag = match given.get("tag") {
            None => None,
            Some(tag) => match tag.split_once(':') {
                Some((key, value)) if !key.is_empty() => Some((key.into(), value.into())),
                _ => return Err(format!("tag '{tag}' is not <key>:<value>")),
            },
        };
        let tag_key = match given.get("tag_key") {
            Some(&"") => return Err("tag_key is empty".into()),
            key => key.map(|key| key.to_string()),
        };
        let positive = |name: &str, default: usize| match given.get(name) {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} '{text}' is not a positive integer")),
            },
        };
        Ok(Self {
            tag,
            tag_key,
            page: positive("page", 1)?,
            per_page: positive("per_page", DEFAULT_PER_PAGE)?.min(MAX_PER_PAGE),
        })
    }

    fn matches(&self, tags: &BTreeMap<String, String>) -> bool {
        self.tag
            .as_ref()
            .is_none_or(|(key, value)| tags.get(key) == Some(value))
            && self
                .tag_key
                .as_ref()
                .is_none_or(|key| tags.contains_key(key))
    }
}

async fn list_servers(
    State(state): State<Arc<SimState>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let query = match query.map_err(|rejection| rejection.body_text()) {
        Ok(Query(pairs)) => ListQuery::parse(pairs),
        Err(problem) => Err(problem),
    };
    let query = match query {
        Ok(query) => query,
        Err(problem) => return bad_request(problem),
    };
    let matching: Vec<SimServer> = state.with_cloud(Vendor::Example, |cloud| {
        cloud
            .servers
            .values()
            .filter(|server| query.matches(&server.spec.labels))
            .cloned()
            .collect()
    });
    let per_page = state.page_size(query.per_page);
    let query = ListQuery { per_page, ..query };
    let start = (query.page - 1).saturating_mul(query.per_page);
    let servers: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(query.per_page)
        .map(|server| render_server(server, &state))
        .collect();
    let more = matching.len() > start.saturating_add(query.per_page);
    let next_page = more.then_some(query.page + 1);
    Json(json!({"servers": servers, "next_page": next_page})).into_response()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::state::{DEFAULT_EXAMPLE_TOKEN, SimConfig};

    /// A simulator with this boot delay, served on a local port until the test's runtime
    /// ends; its base URL for Example Cloud.
    async fn start_sim(boot_delay: Duration) -> (SocketAddr, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SimState::new(SimConfig {
            boot_delay,
            ..SimConfig::default()
        }));
        tokio::spawn(crate::serve(listener, state, std::future::pending()));
        (addr, format!("http://{addr}{BASE_PATH}"))
    }

    fn server_body(name: &str, tags: Value) -> Value {
        json!({"name": name, "region": "eu-1", "plan": "small", "image": "ubuntu-24.04",
               "ssh_keys": ["ssh-ed25519 AAAA test"], "user_data": "#cloud-config\n",
               "tags": tags})
    }

    async fn create(client: &reqwest::Client, base: &str, name: &str, tags: Value) -> Value {
        let response = client
            .post(format!("{base}/servers"))
            .bearer_auth(DEFAULT_EXAMPLE_TOKEN)
            .json(&server_body(name, tags))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().await.unwrap()["server"].clone()
    }

    async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
        let response = client
            .get(url)
            .bearer_auth(DEFAULT_EXAMPLE_TOKEN)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    fn names(list: &Value) -> Vec<&str> {
        list["servers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|server| server["name"].as_str().unwrap())
            .collect()
    }

    /// A new server is `creating` without addresses, then `running` with them once the boot
    /// delay has passed; the idempotency tag reaches `/_sim/servers` and `/_sim/stats`.
    #[tokio::test]
    async fn a_server_is_creating_then_running() {
        let (addr, base) = start_sim(Duration::from_millis(300)).await;
        let client = reqwest::Client::new();
        let key = json!({crate::conventions::IDEMPOTENCY_LABEL: "order-1", "env": "prod"});
        let server = create(&client, &base, "web-1", key.clone()).await;
        assert_eq!(server["id"], "srv-1");
        assert_eq!(server["name"], "web-1");
        assert_eq!(server["region"], "eu-1");
        assert_eq!(server["plan"], "small");
        assert_eq!(server["image"], "ubuntu-24.04");
        assert_eq!(server["status"], "creating");
        assert!(server["ipv4"].is_null() && server["ipv6"].is_null());
        assert_eq!(server["tags"], key);
        let created_at = server["created_at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
        assert!(created_at.ends_with('Z'), "{created_at}");

        let (status, body) = get(&client, &format!("{base}/servers/srv-1")).await;
        assert_eq!(status, 200);
        assert_eq!(body["server"]["status"], "creating");

        tokio::time::sleep(Duration::from_millis(400)).await;
        let (_, body) = get(&client, &format!("{base}/servers/srv-1")).await;
        let server = &body["server"];
        assert_eq!(server["status"], "running");
        assert!(server["ipv4"].as_str().unwrap().starts_with("203.0.113."));
        assert!(server["ipv6"].as_str().unwrap().starts_with("2001:db8:"));
        assert!(server["ipv6"].as_str().unwrap().ends_with("::1"));

        // No uniqueness rule: the same body makes a second server, a duplicate for the key.
        let again = create(&client, &base, "web-1", key).await;
        assert_eq!(again["id"], "srv-2");
        let (_, seen) = get(&client, &format!("http://{addr}/_sim/servers")).await;
        let seen: Vec<&Value> = seen["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|server| server["vendor"] == "example")
            .collect();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0]["idempotency_key"], "order-1");
        let (_, stats) = get(&client, &format!("http://{addr}/_sim/stats")).await;
        assert_eq!(stats["vendors"]["example"]["live"], 2);
        assert_eq!(stats["vendors"]["example"]["duplicates"]["order-1"], 2);
    }

    /// `tag` matches key and value exactly, `tag_key` the key alone; pages follow
    /// `next_page`, oldest first.
    #[tokio::test]
    async fn lists_by_tag_and_tag_key_page_by_page() {
        let (_, base) = start_sim(Duration::ZERO).await;
        let client = reqwest::Client::new();
        create(&client, &base, "a", json!({"env": "prod"})).await;
        create(&client, &base, "b", json!({"env": "dev"})).await;
        create(&client, &base, "c", json!({})).await;
        create(
            &client,
            &base,
            "d",
            json!({"env": "prod", "url": "http://x"}),
        )
        .await;
        create(&client, &base, "e", json!({"env": "prod"})).await;

        let (status, all) = get(&client, &format!("{base}/servers")).await;
        assert_eq!(status, 200);
        assert_eq!(names(&all), ["a", "b", "c", "d", "e"]);
        assert!(all["next_page"].is_null());
        assert_eq!(all["servers"][0]["status"], "running");

        let (_, prod) = get(&client, &format!("{base}/servers?tag=env:prod")).await;
        assert_eq!(names(&prod), ["a", "d", "e"]);
        let (_, url) = get(&client, &format!("{base}/servers?tag=url:http%3A%2F%2Fx")).await;
        assert_eq!(names(&url), ["d"]);
        let (_, with_env) = get(&client, &format!("{base}/servers?tag_key=env")).await;
        assert_eq!(names(&with_env), ["a", "b", "d", "e"]);
        let (_, both) = get(&client, &format!("{base}/servers?tag=env:prod&tag_key=url")).await;
        assert_eq!(names(&both), ["d"]);

        let page = |n: u32| format!("{base}/servers?tag_key=env&per_page=3&page={n}");
        let (_, first) = get(&client, &page(1)).await;
        assert_eq!(names(&first), ["a", "b", "d"]);
        assert_eq!(first["next_page"], 2);
        let (_, second) = get(&client, &page(2)).await;
        assert_eq!(names(&second), ["e"]);
        assert!(second["next_page"].is_null());
        let (_, past) = get(&client, &page(3)).await;
        assert_eq!(past, json!({"servers": [], "next_page": null}));
        // An exactly full last page has no next page.
        let (_, exact) = get(&client, &format!("{base}/servers?tag=env:prod&per_page=3")).await;
        assert!(exact["next_page"].is_null());

        for bad in [
            "tag=env",
            "tag_key=",
            "page=0",
            "per_page=x",
            "tag=a:b&tag=c:d",
        ] {
            let (status, body) = get(&client, &format!("{base}/servers?{bad}")).await;
            assert_eq!(status, 400, "{bad}");
            assert_eq!(body["error"]["code"], "bad_request", "{bad}");
        }
    }

    /// `per_page` is capped at 100.
    #[test]
    fn per_page_is_capped() {
        let query = ListQuery::parse(vec![("per_page".into(), "1000".into())]).unwrap();
        assert_eq!(query.per_page, MAX_PER_PAGE);
        assert_eq!(
            ListQuery::parse(Vec::new()).unwrap(),
            ListQuery {
                tag: None,
                tag_key: None,
                page: 1,
                per_page: DEFAULT_PER_PAGE
            }
        );
    }

    /// A deleted server is gone at once; a second delete is a 404.
    #[tokio::test]
    async fn a_deleted_server_is_not_found() {
        let (_, base) = start_sim(Duration::ZERO).await;
        let client = reqwest::Client::new();
        create(&client, &base, "web-1", json!({})).await;
        let delete = || {
            client
                .delete(format!("{base}/servers/srv-1"))
                .bearer_auth(DEFAULT_EXAMPLE_TOKEN)
                .send()
        };
        let deleted = delete().await.unwrap();
        assert_eq!(deleted.status(), 204);
        assert!(deleted.bytes().await.unwrap().is_empty());

        let (status, body) = get(&client, &format!("{base}/servers/srv-1")).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "not_found");
        assert!(body["error"]["message"].is_string());
        let (_, list) = get(&client, &format!("{base}/servers")).await;
        assert_eq!(list["servers"], json!([]));
        let again = delete().await.unwrap();
        assert_eq!(again.status(), 404);
        for id in ["srv-01", "1", "srv-x"] {
            let (status, _) = get(&client, &format!("{base}/servers/{id}")).await;
            assert_eq!(status, 404, "{id}");
        }
    }

    /// No token or a wrong one is a 401 in the error shape.
    #[tokio::test]
    async fn requests_need_the_token() {
        let (_, base) = start_sim(Duration::ZERO).await;
        let client = reqwest::Client::new();
        let url = format!("{base}/servers");
        for request in [client.get(&url), client.get(&url).bearer_auth("wrong")] {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401);
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }

    /// Invalid fields are 422s naming the field; a body that is not JSON is a 400.
    #[tokio::test]
    async fn invalid_bodies_are_refused() {
        let (_, base) = start_sim(Duration::ZERO).await;
        let client = reqwest::Client::new();
        let post = |body: String| {
            client
                .post(format!("{base}/servers"))
                .bearer_auth(DEFAULT_EXAMPLE_TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let cases = [
            ("plan", json!({"plan": "huge"}), "plan: unknown plan 'huge'"),
            (
                "region",
                json!({"region": "mars-1"}),
                "region: unknown region",
            ),
            ("image", json!({"image": "windows"}), "image: unknown image"),
            ("name", json!({"name": "web_1"}), "name: 'web_1' is not"),
            ("name", json!({"name": 7}), "name: must be a string"),
            ("plan", json!({"plan": null}), "plan: required"),
            ("ssh_keys", json!({"ssh_keys": "k"}), "ssh_keys: must be"),
            ("user_data", json!({"user_data": 1}), "user_data: must be"),
            ("tags", json!({"tags": {"a:b": "c"}}), "tags: key 'a:b'"),
            ("tags", json!({"tags": {"a": 1}}), "tags: the value of 'a'"),
        ];
        for (field, change, message) in cases {
            let mut body = server_body("web-1", json!({}));
            for (key, value) in change.as_object().unwrap() {
                body[key] = value.clone();
            }
            let response = post(body.to_string()).await.unwrap();
            assert_eq!(response.status(), 422, "{field}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["error"]["code"], "invalid_field", "{field}");
            let text = answer["error"]["message"].as_str().unwrap();
            assert!(text.starts_with(message), "{field}: {text}");
        }
        let mut missing = server_body("web-1", json!({}));
        missing.as_object_mut().unwrap().remove("image");
        let response = post(missing.to_string()).await.unwrap();
        assert_eq!(response.status(), 422);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["message"], "image: required");

        for body in ["{\"name\": ", "[]", ""] {
            let response = post(body.into()).await.unwrap();
            assert_eq!(response.status(), 400, "{body}");
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["error"]["code"], "bad_request");
        }
        let (_, list) = get(&client, &format!("{base}/servers")).await;
        assert_eq!(list["servers"], json!([]));
    }

    /// An injected `rate_limit` answers 429 with `Retry-After`, without carrying the request
    /// out; `server_error` answers its status; the next request is served.
    #[tokio::test]
    async fn injected_faults_in_the_error_shape() {
        let (addr, base) = start_sim(Duration::ZERO).await;
        let client = reqwest::Client::new();
        let arm = |fault: Value| {
            client
                .post(format!("http://{addr}/_sim/faults"))
                .json(&fault)
                .send()
        };
        let armed = arm(json!({"vendor": "example", "kind": "rate_limit",
                               "retry_after_secs": 3, "method": "POST"}))
        .await
        .unwrap();
        assert_eq!(armed.status(), 201);
        let limited = client
            .post(format!("{base}/servers"))
            .bearer_auth(DEFAULT_EXAMPLE_TOKEN)
            .json(&server_body("web-1", json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(limited.status(), 429);
        assert_eq!(limited.headers()["retry-after"], "3");
        let body: Value = limited.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
        let (_, list) = get(&client, &format!("{base}/servers")).await;
        assert_eq!(list["servers"], json!([]));

        arm(json!({"vendor": "example", "kind": "server_error", "status": 503}))
            .await
            .unwrap();
        let (status, body) = get(&client, &format!("{base}/servers")).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"]["code"], "server_error");

        create(&client, &base, "web-1", json!({})).await;
        let rule = crate::state::FaultRule::parse_flag("example:rate_limit:2").unwrap();
        assert_eq!(rule.vendor, Vendor::Example);
        assert_eq!(rule.count, 2);
    }

    /// `POST /_sim/servers` seeds an Example Cloud server with the key as its tag.
    #[tokio::test]
    async fn seeded_servers_carry_the_key_tag() {
        let (addr, base) = start_sim(Duration::ZERO).await;
        let client = reqwest::Client::new();
        let seeded = client
            .post(format!("http://{addr}/_sim/servers"))
            .json(&json!({"vendor": "example", "name": "orphan", "idempotency_key": "k9"}))
            .send()
            .await
            .unwrap();
        assert_eq!(seeded.status(), 201);
        let url = format!(
            "{base}/servers?tag={}:k9",
            crate::conventions::IDEMPOTENCY_LABEL
        );
        let (_, list) = get(&client, &url).await;
        assert_eq!(names(&list), ["orphan"]);
        assert_eq!(list["servers"][0]["id"], "srv-1");
        assert_eq!(list["servers"][0]["region"], REGIONS[0]);
        assert_eq!(list["servers"][0]["plan"], PLANS[0]);
        assert_eq!(list["servers"][0]["image"], IMAGES[0]);
    }

    /// Unknown endpoints and methods answer in the error shape too.
    #[tokio::test]
    async fn unknown_endpoints_and_methods() {
        let (_, base) = start_sim(Duration::ZERO).await;
        let client = reqwest::Client::new();
        let (status, body) = get(&client, &format!("{base}/volumes")).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "not_found");
        let response = client
            .put(format!("{base}/servers/srv-1"))
            .bearer_auth(DEFAULT_EXAMPLE_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
        let allow = response.headers()["allow"].to_str().unwrap().to_string();
        assert!(allow.contains("GET") && allow.contains("DELETE"), "{allow}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed");
    }

    /// Ids are exactly `srv-<n>`.
    #[test]
    fn server_ids_round_trip() {
        assert_eq!(parse_server_id(&server_id(42)), Some(42));
        assert_eq!(parse_server_id("srv-042"), None);
        assert_eq!(parse_server_id("srv-+42"), None);
        assert_eq!(parse_server_id("42"), None);
    }
}
