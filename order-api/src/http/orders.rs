//! The orders endpoints: `POST /v1/orders`, `GET /v1/orders/{id}`, `GET /v1/orders`,
//! `DELETE /v1/orders/{id}`, `POST /v1/orders/{id}/cancel`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use provisioner_contract::{
    CancelRequest, DeleteRequest, HostRequest, ProvisionRequest, ServerSpec,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::amqp::plugin_check::Verdict;
use crate::auth::Caller;
use crate::http::AppState;
use crate::http::problem::{ApiError, FieldError, Problem, excerpt};
use crate::lifecycle::{self, OrderStatus};
use crate::store::{
    Candidate, IdempotencyKey, Inserted, MAX_PLACEMENT_CANDIDATES, MAX_SERVERS_PER_ORDER, Order,
    OrderEvent, OrderQuery, OutboxMessage, fleets,
};

/// The request header that makes a POST safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The answer header that says a POST was a retry answered with the order it made before.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Longest accepted value of `name`, `region`, `size`, `image`, `vendor`.
pub const MAX_FIELD_LEN: usize = 255;
/// Longest accepted cloud-init user data (the common vendor limit).
pub const MAX_USER_DATA: usize = 32 * 1024;
/// Most labels per order.
pub const MAX_LABELS: usize = 64;
/// Longest label key and value: the strictest of the vendors' own limits (Hetzner's and
/// Google Cloud's 63), so a label that passes here passes at every vendor.
pub const MAX_LABEL_LEN: usize = 63;
/// Most SSH keys per order.
pub const MAX_SSH_KEYS: usize = 32;
/// Longest accepted SSH public key line (an RSA-16384 key is under 3 KiB).
pub const MAX_SSH_KEY_LEN: usize = 16 * 1024;
/// Most bytes all of an order's strings may add up to (the URL, user data, keys, labels,
/// names): bounds what one order costs to store, list and send to a host.
pub const MAX_ORDER_BYTES: usize = 64 * 1024;

/// Most bytes of orders one `GET /v1/orders` page carries (the page ends early, with a
/// `next_cursor`, rather than pass it).
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// `POST /v1/orders` body.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// A vendor some host serves (`GET /v1/vendors`).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\t\n\f\r ]([\s\S]*[^\t\n\f\r ])?$",
        example = "hetzner"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vendor: Option<String>,
    /// The vendor's region or location code.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\t\n\f\r ]([\s\S]*[^\t\n\f\r ])?$",
        example = "fsn1"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
    /// The vendor's server type.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\t\n\f\r ]([\s\S]*[^\t\n\f\r ])?$",
        example = "cx22"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<String>,
    /// The vendor's image name.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\t\n\f\r ]([\s\S]*[^\t\n\f\r ])?$",
        example = "ubuntu-24.04"
    )]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    /// The server's name at the vendor.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\t\n\f\r ]([\s\S]*[^\t\n\f\r ])?$",
        example = "web-1"
    )]
    name: String,
    /// OpenSSH public keys (`<type> <base64> [comment]`, as in `authorized_keys`), at most
    /// 32 of at most 16 KiB each; each reaches the server at every vendor.
    #[serde(default)]
    #[schema(max_items = 32, example = json!(["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"]))]
    ssh_keys: Vec<String>,
    /// Cloud-init user data, raw text (at most 32 KiB).
    #[serde(default)]
    #[schema(max_length = 32768)]
    user_data: Option<String>,
    /// Labels for the server: at most 64, keys and values of 1 to 63 bytes (keys) and at
    /// most 63 bytes (values).
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// An `http://` or `https://` URL called (signed, retried) when the order settles:
    /// `active`, `failed`, `deleted` or `cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048, example = "https://example.com/hooks/orders")]
    webhook_url: Option<String>,
    /// How many servers (1 to 100, default 1). With more than one, the servers are named
    /// `<name>-1`, `<name>-2` ..., each has its own idempotency key, state, retries and
    /// address (the order's `servers`), and the order's status sums them up: `active` when all
    /// run, `partially_active` when some run and the others failed after their retries,
    /// `failed` when none came up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100, example = 3)]
    count: Option<u32>,
    /// With several servers: when one fails for good, delete those that came up (and cancel
    /// those still on their way) and fail the order, instead of keeping what came up.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    all_or_nothing: bool,
    /// Instead of `vendor`, `region`, `size` and `image`: the places the order may be served,
    /// in order (1 to 8). Its servers go to the first; one that fails there for good because
    /// the place cannot serve it (`no_capacity`, `quota_exceeded`, `vendor_unavailable`) moves
    /// to the next, after the clean-up at the first answered. Each candidate is checked with
    /// its vendor's plugin before the order is accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 8)]
    placement: Option<Vec<Candidate>>,
}

/// Why a string holding U+0000 is refused: no vendor takes one, and PostgreSQL's text cannot
/// hold one (SQLite can, so without this check the two stores would answer differently).
const NUL_REFUSED: &str = "must not contain a NUL character (U+0000)";

impl CreateOrder {
    /// Checks every field and reports all problems at once.
    /// `allow_private`: whether a webhook URL may point to a private address.
    fn validate(&self, allow_private: bool) -> Result<(), ApiError> {
        let mut errors = Vec::new();
        let mut reject = |field: &str, message: String| {
            errors.push(FieldError {
                field: field.into(),
                message,
            })
        };
        let place = [
            ("vendor", &self.vendor),
            ("region", &self.region),
            ("size", &self.size),
            ("image", &self.image),
        ];
        let mut fields: Vec<(String, &String)> = place
            .iter()
            .filter_map(|(field, value)| Some((field.to_string(), value.as_ref()?)))
            .collect();
        fields.push(("name".into(), &self.name));
        match &self.placement {
            Some(_) if place.iter().any(|(_, value)| value.is_some()) => reject(
                "placement",
                "give either vendor, region, size and image, or placement, not both".into(),
            ),
            Some(candidates)
                if candidates.is_empty() || candidates.len() > MAX_PLACEMENT_CANDIDATES =>
            {
                reject(
                    "placement",
                    format!("must list 1 to {MAX_PLACEMENT_CANDIDATES} candidates"),
                )
            }
            Some(candidates) => {
                for (index, candidate) in candidates.iter().enumerate() {
                    for (field, value) in [
                        ("vendor", &candidate.vendor),
                        ("region", &candidate.region),
                        ("size", &candidate.size),
                        ("image", &candidate.image),
                    ] {
                        fields.push((format!("placement[{index}].{field}"), value));
                    }
                }
            }
            None => {}
        }
        for (field, value) in fields {
            let field = field.as_str();
            // ASCII white space only, exactly as the document's pattern says.
            if value.trim_ascii().is_empty() {
                reject(field, "must not be empty".into());
            } else if value.chars().count() > MAX_FIELD_LEN {
                reject(field, format!("must be at most {MAX_FIELD_LEN} characters"));
            } else if value.trim_ascii() != value {
                reject(field, "must not start or end with white space".into());
            } else if value.contains('\0') {
                reject(field, NUL_REFUSED.into());
            }
        }
        let count = self.servers();
        if !(1..=MAX_SERVERS_PER_ORDER).contains(&count) {
            reject(
                "count",
                format!("must be from 1 to {MAX_SERVERS_PER_ORDER}"),
            );
        } else if count > 1
            && self.name.chars().count() + 1 + count.to_string().len() > MAX_FIELD_LEN
        {
            reject(
                "name",
                format!(
                    "with count {count} the servers are named '<name>-<n>': at most {} characters leave room for the number",
                    MAX_FIELD_LEN - 1 - count.to_string().len()
                ),
            );
        }
        if self.user_data.as_ref().is_some_and(|u| u.contains('\0')) {
            reject("user_data", NUL_REFUSED.into());
        }
        if self
            .user_data
            .as_ref()
            .is_some_and(|u| u.len() > MAX_USER_DATA)
        {
            reject(
                "user_data",
                format!("must be at most {MAX_USER_DATA} bytes"),
            );
        }
        // Entries are judged one by one only within the count: a body of a million bad
        // entries gets one error, not a million.
        if self.labels.len() > MAX_LABELS {
            reject("labels", format!("at most {MAX_LABELS} labels"));
        }
        for (key, value) in self.labels.iter().take(MAX_LABELS) {
            let field = format!("labels.{}", excerpt(key));
            if key.trim_ascii() != key || key.is_empty() {
                reject(
                    "labels",
                    "label keys must not be empty or start or end with white space".into(),
                );
            } else if key.len() > MAX_LABEL_LEN {
                reject(
                    &field,
                    format!("label keys must be at most {MAX_LABEL_LEN} bytes"),
                );
            } else if value.len() > MAX_LABEL_LEN {
                reject(
                    &field,
                    format!("label values must be at most {MAX_LABEL_LEN} bytes"),
                );
            } else if key.contains('\0') {
                reject("labels", format!("label keys: {NUL_REFUSED}"));
            } else if value.contains('\0') {
                reject(&field, NUL_REFUSED.into());
            }
        }
        if self.ssh_keys.len() > MAX_SSH_KEYS {
            reject("ssh_keys", format!("at most {MAX_SSH_KEYS} keys"));
        }
        for (index, key) in self.ssh_keys.iter().enumerate().take(MAX_SSH_KEYS) {
            if let Err(message) = check_ssh_key(key) {
                reject(&format!("ssh_keys[{index}]"), message);
            }
        }
        let total = self.string_bytes();
        if total > MAX_ORDER_BYTES {
            reject(
                "(order)",
                format!(
                    "the order's strings add up to {total} bytes; at most {MAX_ORDER_BYTES} are accepted"
                ),
            );
        }
        if let Some(url) = &self.webhook_url {
            if url.contains('\0') {
                reject("webhook_url", NUL_REFUSED.into());
            } else if let Err(message) = crate::webhook_receivers::check_url(url, allow_private) {
                reject("webhook_url", message);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(errors))
        }
    }
}

impl CreateOrder {
    /// The places the order may be served, in order: its `placement`, or its own vendor,
    /// region, size and image; a missing field of those is an `invalid-body` (as serde would
    /// say it).
    fn candidates(&self) -> Result<Vec<Candidate>, ApiError> {
        if let Some(placement) = &self.placement {
            return Ok(placement.clone());
        }
        let field = |name: &str, value: &Option<String>| {
            value.clone().ok_or_else(|| {
                ApiError::InvalidBody(format!(
                    "missing field `{name}` (give vendor, region, size and image, or placement)"
                ))
            })
        };
        Ok(vec![Candidate {
            vendor: field("vendor", &self.vendor)?,
            region: field("region", &self.region)?,
            size: field("size", &self.size)?,
            image: field("image", &self.image)?,
        }])
    }

    /// How many servers the order is for.
    fn servers(&self) -> u32 {
        self.count.unwrap_or(1)
    }

    /// The bytes of every string the order carries.
    fn string_bytes(&self) -> usize {
        [&self.vendor, &self.region, &self.size, &self.image]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum::<usize>()
            + self.name.len()
            + self
                .placement
                .iter()
                .flatten()
                .map(|c| c.vendor.len() + c.region.len() + c.size.len() + c.image.len())
                .sum::<usize>()
            + self.ssh_keys.iter().map(String::len).sum::<usize>()
            + self.user_data.as_ref().map_or(0, String::len)
            + self
                .labels
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
            + self.webhook_url.as_ref().map_or(0, String::len)
    }
}

/// Checks one `ssh_keys` entry: an OpenSSH public key line (`<type> <base64> [comment]`) of
/// at most [`MAX_SSH_KEY_LEN`] bytes. Vendors' names or ids of stored keys are not accepted:
/// every plugin registers the public key itself, so an order means the same at every vendor.
fn check_ssh_key(line: &str) -> Result<(), String> {
    if line.len() > MAX_SSH_KEY_LEN {
        return Err(format!(
            "must be at most {MAX_SSH_KEY_LEN} bytes (a public key is far shorter)"
        ));
    }
    if line.contains('\0') {
        return Err(NUL_REFUSED.into());
    }
    if line.contains(['\n', '\r']) {
        return Err("must be one line: one public key per entry".into());
    }
    ssh_key::PublicKey::from_openssh(line.trim())
        .map(|_| ())
        .map_err(|error| {
            format!(
                "is not an OpenSSH public key such as 'ssh-ed25519 AAAAC3Nza... user@host' \
                 ({error}); give the public key itself, not a vendor's key name"
            )
        })
}

/// An order as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    #[serde(flatten)]
    order: Order,
    /// The order's event log, oldest first (not in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<OrderEvent>>,
}

/// A page of `GET /v1/orders`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderPage {
    /// The orders, newest first, without their event logs.
    orders: Vec<OrderView>,
    /// Pass as `cursor` for the next page; none on the last page.
    next_cursor: Option<String>,
}

impl OrderView {
    /// The order without its event log (lists, the end of an event stream).
    pub fn without_events(order: Order) -> Self {
        Self {
            order,
            events: None,
        }
    }
}

/// A W3C `traceparent` for a new order: the caller's trace if it sent one, else a new one.
fn traceparent(headers: &HeaderMap) -> String {
    let span_id = &Uuid::new_v4().simple().to_string()[..16];
    let incoming_trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let parts: Vec<&str> = v.split('-').collect();
            (parts.len() == 4
                && parts[1].len() == 32
                && parts[1].bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| parts[1].to_ascii_lowercase())
        });
    let trace_id = incoming_trace.unwrap_or_else(|| Uuid::new_v4().simple().to_string());
    format!("00-{trace_id}-{span_id}-01")
}

/// The request's `Idempotency-Key`, when it has one: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::InvalidIdempotencyKey(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} visible ASCII characters \
             (a UUID is a good key)"
        ))
    };
    let key = value.to_str().map_err(|_| invalid())?;
    let visible = key.bytes().all(|b| b.is_ascii_graphic());
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !visible {
        return Err(invalid());
    }
    Ok(Some(key.to_string()))
}

/// SHA-256 (hex) of the parsed body, so that a retry sent with other whitespace or field order
/// is still the same request.
fn request_sha256(body: &CreateOrder) -> String {
    use sha2::Digest;
    let canonical = serde_json::to_vec(body).unwrap_or_default();
    format!("{:x}", sha2::Sha256::digest(&canonical))
}

/// The answer to a retried POST: the order the key made (200, `Idempotent-Replayed: true`),
/// or 422 when the key came with a different request.
async fn replay(
    state: &AppState,
    tenant: &str,
    key: &IdempotencyKey,
) -> Result<Response, ApiError> {
    let keyed = state
        .store
        .keyed_order(tenant, &key.key)
        .await?
        .ok_or_else(|| anyhow::anyhow!("idempotency key '{}' vanished", key.key))?;
    if keyed.request_sha256 != key.request_sha256 {
        return Err(ApiError::IdempotencyKeyReused(key.key.clone()));
    }
    let (order, events) = state
        .store
        .order(keyed.order_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the order of idempotency key '{}' is gone", key.key))?;
    let location = format!("/v1/orders/{}", order.id);
    let mut response = (
        StatusCode::OK,
        Json(OrderView {
            order,
            events: Some(events),
        }),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&location) {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    Ok(response)
}

/// `POST /v1/orders`: validate, record order + outbox row in one transaction, answer 202.
/// Nothing is published here: the relay does that after the commit. With an
/// `Idempotency-Key` the key is recorded in the same transaction, and a retry with the same
/// key and body answers 200 with the order the first request made.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    request_body = CreateOrder,
    params(
        ("Idempotency-Key" = Option<String>, Header,
         description = "Makes the POST safe to retry: the same key and body answer the order the first request made (1 to 255 visible ASCII characters; per tenant)"),
    ),
    responses(
        (status = 202, description = "Accepted: recorded, to be made in the background", body = OrderView,
         headers(("location" = String, description = "The order's URL"))),
        (status = 200, description = "A retry of an earlier POST with the same Idempotency-Key: the order it made", body = OrderView,
         headers(("location" = String, description = "The order's URL"),
                 ("idempotent-replayed" = String, description = "`true`"))),
        (status = 400, description = "Malformed JSON or Idempotency-Key", content_type = "application/problem+json", body = Problem),
        (status = 403, description = "An admin token: orders belong to a tenant", content_type = "application/problem+json", body = Problem),
        (status = 413, description = "The body is too large", content_type = "application/problem+json", body = Problem),
        (status = 415, description = "The body is not sent as application/json", content_type = "application/problem+json", body = Problem),
        (status = 422, description = "Invalid fields, an unknown vendor, a server the vendor's plugin refuses, an Idempotency-Key reused with another body, or an order over one of the tenant's quotas (`quota-exceeded`: `quota`, `usage`, `limit`, `requested`, and `vendor` for a quota at one vendor)", content_type = "application/problem+json", body = Problem),
        (status = 429, description = "The tenant sent orders faster than its rate (`rate-limited`); try again after `Retry-After` seconds", content_type = "application/problem+json", body = Problem,
         headers(("retry-after" = String, description = "Seconds to wait"))),
    ),
)]
pub async fn create_order(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Json<CreateOrder>, JsonRejection>,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let tenant = ordering_tenant(caller)?;
    admit_at_rate(&state, &tenant)?;
    let key = idempotency_key(&headers)?;
    let Json(body) = body?;
    let candidates = body.candidates()?;
    body.validate(state.webhook_allow_private)?;
    let idempotency = key.map(|key| IdempotencyKey {
        key,
        request_sha256: request_sha256(&body),
    });
    // From here the order is on its way to a commit, which waits a moment for it.
    let announced = state.store.announce_order();
    if let Some(idempotency) = &idempotency
        && state
            .store
            .keyed_order(&tenant, &idempotency.key)
            .await?
            .is_some()
    {
        return replay(&state, &tenant, idempotency).await;
    }
    check_vendors_known(&state, &candidates).await?;
    let count = body.servers();
    // Kept as a fleet (store::fleets): several servers, or a placement to move along.
    let fleet = count > 1 || body.placement.is_some();
    let first = &candidates[0];
    let spec = ServerSpec {
        name: body.name,
        region: first.region.clone(),
        size: first.size.clone(),
        image: first.image.clone(),
        ssh_keys: body.ssh_keys,
        user_data: body.user_data,
        labels: body.labels,
    };
    if let Some(timeout) = state.validate_timeout {
        let placed = body.placement.is_some();
        check_with_plugins(&state, &spec, &candidates, count, placed, timeout).await?;
    }
    let now = Utc::now();
    let order = Order {
        id: if fleet {
            fleets::new_fleet_id()
        } else {
            Uuid::now_v7()
        },
        tenant,
        status: OrderStatus::Pending,
        vendor: first.vendor.clone(),
        spec,
        server: None,
        fault: None,
        created_at: now,
        updated_at: now,
        webhook_url: body.webhook_url,
        count,
        all_or_nothing: count > 1 && body.all_or_nothing,
        servers: None,
        placement: body.placement,
    };
    let members = match fleet {
        false => Vec::new(),
        true => member_orders(&order),
    };
    let traceparent = traceparent(&headers);
    let outbox = creation_requests(&order, &members, &traceparent);
    let events = match state
        .store
        .insert_announced_order(announced, &order, &members, &outbox, idempotency.as_ref())
        .await?
    {
        Inserted::New(events) => events,
        // A request with the same key was committed first (at the same moment as this one).
        Inserted::KeyTaken => match &idempotency {
            Some(idempotency) => return replay(&state, &order.tenant, idempotency).await,
            None => return Err(anyhow::anyhow!("an order without a key lost its key").into()),
        },
        Inserted::OverQuota(over) => {
            state.metrics.order_refused("quota_exceeded");
            return Err(ApiError::QuotaExceeded(over));
        }
    };
    state.relay_wakeup.notify_one();
    tracing::info!(order_id = %order.id, vendor = %order.vendor, count, %traceparent, "order accepted");
    let response = accepted(&state, order, events, fleet).await?;
    state.metrics.accepted(started.elapsed());
    Ok(response)
}

/// The tenant a caller orders for: an admin token orders nothing.
fn ordering_tenant(caller: Caller) -> Result<String, ApiError> {
    match caller {
        Caller::Tenant(tenant) => Ok(tenant),
        Caller::Admin => Err(ApiError::Forbidden(
            "an admin token orders nothing: orders belong to a tenant, so use a tenant's token"
                .into(),
        )),
    }
}

/// Takes a token from `tenant`'s bucket (`POST /v1/orders` rate), or refuses the order.
fn admit_at_rate(state: &AppState, tenant: &str) -> Result<(), ApiError> {
    let Err(retry_after) = state.order_rates.admit(tenant) else {
        return Ok(());
    };
    let rate = state.order_rates.rate_of(tenant);
    state.metrics.order_refused("rate_limited");
    Err(ApiError::RateLimited {
        retry_after,
        per_second: rate.map_or(0.0, |r| r.per_second),
        burst: rate.map_or(0, |r| r.burst),
    })
}

/// Refuses the order when a candidate's vendor is one no host serves, naming those known.
async fn check_vendors_known(state: &AppState, candidates: &[Candidate]) -> Result<(), ApiError> {
    for candidate in candidates {
        if !state.store.vendor_known(&candidate.vendor).await? {
            let known = state
                .store
                .vendors()
                .await?
                .into_iter()
                .map(|v| v.vendor)
                .collect();
            return Err(ApiError::UnknownVendor {
                vendor: candidate.vendor.clone(),
                known,
            });
        }
    }
    Ok(())
}

/// The verdict of `vendor`'s plugin in this process on `spec`, when it has one in the
/// version the vendor's hosts run (`--validate-plugins-dir`); `None`: ask a host.
async fn check_here(
    state: &AppState,
    vendor: &str,
    spec: &ServerSpec,
) -> Result<Option<Verdict>, ApiError> {
    let Some(local) = &state.local_plugins else {
        return Ok(None);
    };
    let Some(versions) = state.store.served_plugin_versions(vendor).await? else {
        return Ok(None);
    };
    Ok(local.check(vendor, spec, &versions).await)
}

/// Has each candidate's vendor plugin check `spec`, here ([`check_here`]) or at a host
/// (within `timeout`), refusing the order when one refuses it; `placed`: the order listed its
/// candidates (a refusal then names which).
async fn check_with_plugins(
    state: &AppState,
    spec: &ServerSpec,
    candidates: &[Candidate],
    count: u32,
    placed: bool,
    timeout: std::time::Duration,
) -> Result<(), ApiError> {
    for (index, candidate) in candidates.iter().enumerate() {
        // Several servers: the plugin judges the longest of their names.
        let judged = ServerSpec {
            name: match count {
                1 => spec.name.clone(),
                count => fleets::member_name(&spec.name, count),
            },
            region: candidate.region.clone(),
            size: candidate.size.clone(),
            image: candidate.image.clone(),
            ..spec.clone()
        };
        let (verdict, checked_by) = match check_here(state, &candidate.vendor, &judged).await? {
            Some(verdict) => (verdict, "order-api"),
            None => {
                let verdict = state
                    .validator
                    .check(&candidate.vendor, &judged, timeout)
                    .await;
                (verdict, "host")
            }
        };
        state.metrics.validated(
            match &verdict {
                Verdict::Valid => "valid",
                Verdict::Invalid(_) => "refused",
                Verdict::Unchecked(_) => "unchecked",
            },
            checked_by,
        );
        match verdict {
            Verdict::Valid => {}
            Verdict::Invalid(message) => {
                return Err(ApiError::RefusedByVendor {
                    vendor: candidate.vendor.clone(),
                    message: match placed {
                        true => format!("placement[{index}] ({candidate}): {message}"),
                        false => message,
                    },
                });
            }
            Verdict::Unchecked(reason) => {
                tracing::info!(vendor = %candidate.vendor, "accepting an order without the plugin's check: {reason}");
            }
        }
    }
    Ok(())
}

/// A fleet's member orders: one per server, at the first candidate, which the hosts serve.
fn member_orders(order: &Order) -> Vec<Order> {
    (1..=order.count)
        .map(|number| Order {
            id: fleets::member_id(order.id, number, 0),
            spec: ServerSpec {
                name: match order.count {
                    1 => order.spec.name.clone(),
                    _ => fleets::member_name(&order.spec.name, number),
                },
                ..order.spec.clone()
            },
            webhook_url: None,
            count: 1,
            all_or_nothing: false,
            placement: None,
            ..order.clone()
        })
        .collect()
}

/// The creation request of each server of `order`: its members', or its own without.
fn creation_requests(order: &Order, members: &[Order], traceparent: &str) -> Vec<OutboxMessage> {
    let servers = match members.is_empty() {
        true => std::slice::from_ref(order),
        false => members,
    };
    servers
        .iter()
        .map(|server| {
            let create = HostRequest::Create(ProvisionRequest {
                order_id: server.id,
                vendor: server.vendor.clone(),
                spec: server.spec.clone(),
                ordered_at: Some(server.created_at),
            });
            // The order's first create: its first publish may go out lease-free.
            OutboxMessage {
                lease_free: true,
                ..OutboxMessage::request(
                    server.id,
                    &server.vendor,
                    &create,
                    Some(traceparent.into()),
                )
            }
        })
        .collect()
}

/// The 202 for an order just accepted, with its first `events` and its location (and, for
/// a `fleet`, its servers).
async fn accepted(
    state: &AppState,
    mut order: Order,
    events: Vec<OrderEvent>,
    fleet: bool,
) -> Result<Response, ApiError> {
    let location = format!("/v1/orders/{}", order.id);
    if fleet {
        order.servers = Some(state.store.fleet_servers(order.id).await?);
    }
    let mut response = (
        StatusCode::ACCEPTED,
        Json(OrderView {
            order,
            events: Some(events),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// The order `id` names with its event log, if `caller` may see it: another tenant's order
/// is not found, exactly as one that does not exist.
async fn visible_order(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<(Order, Vec<OrderEvent>), ApiError> {
    let not_found = || ApiError::NotFound(format!("no order with id '{}'", excerpt(id)));
    let uuid = Uuid::parse_str(id).map_err(|_| not_found())?;
    // A server of an order for several is part of that order, not an order of its own.
    if fleets::fleet_of(uuid).is_some() {
        return Err(not_found());
    }
    // The tenant is in the query itself: another tenant's order is not read at all, so it
    // answers exactly as fast as an id that does not exist.
    state
        .store
        .order_of(uuid, caller.tenant())
        .await?
        .ok_or_else(not_found)
}

/// The outbox row that sends `request` about `order` to its vendor's queue.
fn outbox_for(order: &Order, request: &HostRequest, headers: &HeaderMap) -> OutboxMessage {
    OutboxMessage::request(order.id, &order.vendor, request, Some(traceparent(headers)))
}

/// `202` with the order as it is now (after a delete or cancel was asked for).
async fn accepted_order(state: &AppState, caller: &Caller, id: &str) -> Result<Response, ApiError> {
    let (order, events) = visible_order(state, caller, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(OrderView {
            order,
            events: Some(events),
        }),
    )
        .into_response())
}

/// `GET /v1/orders/{id}`: the order with its event log.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "The order id")),
    responses(
        (status = 200, description = "The order with its event log", body = OrderView),
        (status = 404, description = "No such order (or another tenant's)", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    let (order, events) = visible_order(&state, &caller, &id).await?;
    Ok(Json(OrderView {
        order,
        events: Some(events),
    }))
}

/// `DELETE /v1/orders/{id}`: deletes an active order's server (`deleting -> deleted`).
/// Asking again while it is deleting or deleted answers the order as it is.
#[utoipa::path(
    delete,
    path = "/v1/orders/{id}",
    tag = "orders",
    params(("id" = String, Path, description = "The order id")),
    responses(
        (status = 202, description = "Its server is being deleted (or was)", body = OrderView),
        (status = 404, description = "No such order (or another tenant's)", content_type = "application/problem+json", body = Problem),
        (status = 409, description = "The order is not active", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn delete_order(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (order, _) = visible_order(&state, &caller, &id).await?;
    let reach = match (order.status, &order.server) {
        (OrderStatus::Deleting | OrderStatus::Deleted, _) => {
            return accepted_order(&state, &caller, &id).await;
        }
        (OrderStatus::Active | OrderStatus::PartiallyActive, _) if order.servers.is_some() => {
            Reach::EveryServer
        }
        (OrderStatus::Active, Some(server)) => {
            Reach::OneServer(Box::new(HostRequest::Delete(DeleteRequest {
                order_id: order.id,
                vendor: order.vendor.clone(),
                server: server.clone(),
            })))
        }
        (status, _) => {
            return Err(ApiError::Conflict(format!(
                "order {id} is {status}; only an active (or partially active) order's servers can be deleted"
            )));
        }
    };
    // A concurrent update may have moved the order since it was read; then the answer below
    // shows where it is now.
    request_change(&state, &headers, &order, UserChange::Delete, reach).await?;
    accepted_order(&state, &caller, &id).await
}

/// `POST /v1/orders/{id}/cancel`: cancels an order on its way (`pending`, `queued`,
/// `provisioning` -> `cancelling` -> `cancelled`); a host deletes the server its create
/// made, if any. Asking again while it is cancelling or cancelled answers the order as it is;
/// a settled order is a 409 (an active one's server goes with `DELETE`).
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    tag = "orders",
    params(("id" = String, Path, description = "The order id")),
    responses(
        (status = 202, description = "Cancelling (or cancelled)", body = OrderView),
        (status = 404, description = "No such order (or another tenant's)", content_type = "application/problem+json", body = Problem),
        (status = 409, description = "The order settled: it cannot be cancelled", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (order, _) = visible_order(&state, &caller, &id).await?;
    let reach = match order.status {
        OrderStatus::Cancelling | OrderStatus::Cancelled => {
            return accepted_order(&state, &caller, &id).await;
        }
        status if status.is_cancellable() && order.servers.is_some() => Reach::EveryServer,
        status if status.is_cancellable() => {
            Reach::OneServer(Box::new(HostRequest::Cancel(CancelRequest {
                order_id: order.id,
                vendor: order.vendor.clone(),
                adopt_running: false,
            })))
        }
        status => return Err(not_cancellable(&id, status)),
    };
    // The order may have moved since it was read: unless another cancel moved it (then the
    // answer shows it cancelling), that is a 409 (one that became active says that a DELETE
    // removes its server).
    if !request_change(&state, &headers, &order, UserChange::Cancel, reach).await? {
        let (now, _) = visible_order(&state, &caller, &id).await?;
        if !matches!(now.status, OrderStatus::Cancelling | OrderStatus::Cancelled) {
            return Err(not_cancellable(&id, now.status));
        }
    }
    accepted_order(&state, &caller, &id).await
}

/// A user's change of an order that `DELETE /v1/orders/{id}` or
/// `POST /v1/orders/{id}/cancel` asks for.
#[derive(Debug, Clone, Copy)]
enum UserChange {
    /// Delete an active order's servers.
    Delete,
    /// Cancel an order on its way.
    Cancel,
}

impl UserChange {
    /// What the order's log and ours call it.
    fn name(self) -> &'static str {
        match self {
            UserChange::Delete => "deletion",
            UserChange::Cancel => "cancellation",
        }
    }
}

/// How a delete or cancel reaches an order's servers.
enum Reach {
    /// An order for several servers: it moves, and each of its servers still on its way is
    /// cancelled and each running one deleted ([`crate::store::Store::wind_down_fleet`]).
    EveryServer,
    /// An order for one server: this request goes to a host of its vendor.
    OneServer(Box<HostRequest>),
}

/// Moves `order` for `change` and queues the requests that carry it out, in one transaction,
/// and wakes the relay for them. `false` when the order was no longer where the change
/// starts from (a concurrent update moved it since it was read): nothing changed.
async fn request_change(
    state: &AppState,
    headers: &HeaderMap,
    order: &Order,
    change: UserChange,
    reach: Reach,
) -> Result<bool, ApiError> {
    let message = format!("{} requested", change.name());
    let (moved, what) = match reach {
        Reach::EveryServer => {
            let step = match change {
                UserChange::Delete => fleets::FLEET_DELETE_REQUESTED,
                UserChange::Cancel => lifecycle::CANCEL_REQUESTED,
            };
            let moved = state
                .store
                .wind_down_fleet(order.id, step, &message, &traceparent(headers))
                .await?;
            (moved, format!("{} of every server", change.name()))
        }
        Reach::OneServer(request) => {
            let outbox = outbox_for(order, &request, headers);
            let step = match change {
                UserChange::Delete => lifecycle::DELETE_REQUESTED,
                UserChange::Cancel => lifecycle::CANCEL_REQUESTED,
            };
            let moved = state
                .store
                .request_change(order.id, step, &message, &outbox)
                .await?;
            (moved, change.name().to_string())
        }
    };
    if moved {
        state.relay_wakeup.notify_one();
        tracing::info!(order_id = %order.id, "{what} requested");
    }
    Ok(moved)
}

/// The 409 for cancelling a settled order.
fn not_cancellable(id: &str, status: OrderStatus) -> ApiError {
    let hint = match status {
        OrderStatus::Active => "; DELETE /v1/orders/{id} deletes its server",
        _ => "",
    };
    ApiError::Conflict(format!(
        "order {id} is {status}; only a pending, queued or provisioning order can be cancelled{}",
        hint.replace("{id}", id)
    ))
}

/// `GET /v1/orders` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Admin tokens: only this tenant's orders. A tenant's token lists its own orders only.
    tenant: Option<String>,
    /// Only orders in this status.
    #[param(value_type = Option<OrderStatus>)]
    status: Option<String>,
    /// Only orders for this vendor.
    vendor: Option<String>,
    /// Only orders created at or after this time (RFC 3339).
    #[param(format = DateTime)]
    created_after: Option<String>,
    /// Only orders created before this time (RFC 3339).
    #[param(format = DateTime)]
    created_before: Option<String>,
    /// Orders per page, 1 to 200 (default 50). A page also ends before its orders pass
    /// 1 MiB of JSON (then with a `next_cursor`).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the page before (an order id).
    #[param(format = Uuid, pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")]
    cursor: Option<String>,
}

/// A page's `limit` (1 to 200, default 50) and `cursor` (the id of the previous page's last
/// entry, a UUID) as a list endpoint takes them.
pub(crate) fn page_query(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(u32, Option<Uuid>), ApiError> {
    let limit = limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(ApiError::InvalidQuery(
            "limit must be between 1 and 200".into(),
        ));
    }
    let before = cursor
        .map(Uuid::parse_str)
        .transpose()
        .map_err(|_| ApiError::InvalidQuery("cursor is not one this API gave out".into()))?;
    Ok((limit, before))
}

/// A time query parameter, RFC 3339.
fn query_time(name: &str, value: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text)
                .map(|time| time.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::InvalidQuery(format!(
                        "{name} must be an RFC 3339 time such as 2026-11-26T07:00:00Z, not '{}'",
                        excerpt(text)
                    ))
                })
        })
        .transpose()
}

/// `GET /v1/orders`: newest first (by id, which is time-ordered: a page never shifts when
/// orders are added meanwhile); `next_cursor` fetches the next page. Filters: `status`,
/// `vendor`, `created_after` (inclusive) and `created_before` (exclusive); for an admin
/// token also `tenant` (else every tenant's orders). A tenant's token lists its own orders.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of orders, newest first", body = OrderPage),
        (status = 400, description = "A malformed query parameter", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<OrderPage>, ApiError> {
    let Query(query) = query?;
    // Every parameter is checked first, also when the answer is an empty page.
    let status = query
        .status
        .as_deref()
        .map(str::parse::<OrderStatus>)
        .transpose()
        .map_err(ApiError::InvalidQuery)?;
    let (limit, before) = page_query(query.limit, query.cursor.as_deref())?;
    let created_after = query_time("created_after", query.created_after.as_deref())?;
    let created_before = query_time("created_before", query.created_before.as_deref())?;
    let tenant = match (caller.tenant(), query.tenant) {
        (None, asked) => asked,
        (Some(own), None) => Some(own.to_string()),
        (Some(own), Some(asked)) if asked == own => Some(asked),
        // Another tenant's orders: none that this token may see.
        (Some(_), Some(_)) => {
            return Ok(Json(OrderPage {
                orders: Vec::new(),
                next_cursor: None,
            }));
        }
    };
    // No vendor or tenant holds a NUL byte (both are checked when stored), and PostgreSQL
    // cannot even compare text with one: such a filter matches nothing.
    let unmatchable = |filter: &Option<String>| filter.as_deref().is_some_and(|f| f.contains('\0'));
    if unmatchable(&tenant) || unmatchable(&query.vendor) {
        return Ok(Json(OrderPage {
            orders: Vec::new(),
            next_cursor: None,
        }));
    }
    let mut orders = state
        .store
        .orders(&OrderQuery {
            tenant,
            status,
            vendor: query.vendor,
            created_after,
            created_before,
            before,
            limit: limit + 1,
        })
        .await?;
    let more = orders.len() > limit as usize;
    orders.truncate(limit as usize);
    let fetched = orders.len();
    // A page also ends before it would pass MAX_PAGE_BYTES (always at least one order), so
    // large orders make shorter pages, never larger answers.
    let mut page = Vec::with_capacity(fetched);
    let mut bytes = 0;
    for order in orders {
        let view = OrderView::without_events(order);
        let size = serde_json::to_vec(&view).map_or(0, |json| json.len() + 1);
        if !page.is_empty() && bytes + size > MAX_PAGE_BYTES {
            break;
        }
        bytes += size;
        page.push(view);
    }
    let next_cursor = (more || page.len() < fetched)
        .then(|| page.last().map(|view| view.order.id.to_string()))
        .flatten();
    Ok(Json(OrderPage {
        orders: page,
        next_cursor,
    }))
}

/// `GET /v1/webhooks/secret`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookSecret {
    /// The tenant whose webhooks it signs.
    tenant: String,
    /// `whsec_` and the base64 of the HMAC-SHA256 key.
    secret: String,
}

/// `GET /v1/webhooks/secret`: the caller's tenant's webhook signing secret (made on first
/// use).
#[utoipa::path(
    get,
    path = "/v1/webhooks/secret",
    tag = "orders",
    responses(
        (status = 200, description = "The key that signs this tenant's webhooks", body = WebhookSecret),
        (status = 403, description = "An admin token: secrets belong to tenants", content_type = "application/problem+json", body = Problem),
    ),
)]
pub async fn webhook_secret(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookSecret>, ApiError> {
    let Caller::Tenant(tenant) = caller else {
        return Err(ApiError::Forbidden(
            "webhook secrets belong to tenants: use a tenant's token".into(),
        ));
    };
    let secret = state.store.webhook_secret(&tenant).await?;
    Ok(Json(WebhookSecret { tenant, secret }))
}
