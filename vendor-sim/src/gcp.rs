//! The Google Compute Engine subset a GCP plugin uses, in Google's own shapes, with Google's
//! OAuth 2.0 token endpoint for service accounts.
//!
//! # Auth
//! - Service accounts are registered at run time:
//!   `POST /_sim/gcp/service-accounts` `{"client_email", "project_id", "public_key",
//!   "token_ttl_secs"?}` with the account key's public half (PEM, `PUBLIC KEY` or
//!   `RSA PUBLIC KEY`); the holder of the private half writes the usual service-account key
//!   JSON with `token_uri` = `<base>/gcp/token`. An account acts on its own project only
//!   (others are a 403 `PERMISSION_DENIED`).
//! - `POST /gcp/token` (form: `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
//!   `assertion=<JWT>`): the JWT must be RS256, signed by a registered account's key, with
//!   `iss` = its email, `aud` = `https://oauth2.googleapis.com/token` (what Google demands
//!   and google-auth sends) or this endpoint's own URL, `iat`/`exp` no more than an hour
//!   apart and around now, and a `scope`. Answers `{"access_token", "expires_in": 3599,
//!   "token_type": "Bearer"}` (the lifetime is the account's `token_ttl_secs`); failures
//!   are OAuth's `{"error", "error_description"}` (400 `invalid_grant`, `invalid_scope`,
//!   `unsupported_grant_type`).
//! - `GET /_sim/gcp/token-grants` counts the access tokens issued (`{"total", "accounts":
//!   {email: n}}`), so a test sees how many exchanges a client made.
//! - The Compute API takes `Authorization: Bearer` with such an access token or, as Google
//!   does (AIP-4111), a self-signed JWT of a registered account (`aud`
//!   `https://compute.googleapis.com/` or a `scope` claim), which Google's client libraries
//!   send on their own. A missing, unknown or expired token is a 401 `UNAUTHENTICATED`; a
//!   token without a Compute scope (`compute`, `cloud-platform`) a 403
//!   `ACCESS_TOKEN_SCOPE_INSUFFICIENT`.
//!
//! # Compute Engine v1, under `/gcp/compute/v1`
//! - `POST /projects/{p}/zones/{z}/instances?requestId=`: `name` (RFC 1035, unique in the
//!   zone: else 409 `alreadyExists`), `machineType` (`zones/{z}/machineTypes/{t}`, possibly
//!   a full URL; a bare type name is a 400 as at Google), one boot disk with
//!   `initializeParams.sourceImage` (`projects/{p}/global/images/{name}` or
//!   `.../images/family/{family}`), `labels` (Google's rules: keys start with a lowercase
//!   letter; keys and values at most 63 of `[a-z0-9_-]`; at most 64), `metadata.items`
//!   (`ssh-keys`: `user:key` lines; `user-data`), `networkInterfaces` (ignored: every
//!   instance gets `nic0` on `default` with an external address). Answers a zone operation
//!   `RUNNING` that is `DONE` once the boot delay has passed; the instance goes
//!   `PROVISIONING` -> `STAGING` -> `RUNNING` meanwhile. A `requestId` (a UUID, not the nil
//!   one) already seen in the project answers the operation of the first request and makes
//!   nothing (kept for the simulator's lifetime; Google keeps them at least 60 minutes).
//! - `GET /projects/{p}/zones/{z}/instances/{name}`; 404 `notFound` for an unknown one.
//! - `DELETE /projects/{p}/zones/{z}/instances/{name}?requestId=`: a `delete` operation;
//!   the instance is `STOPPING` until the boot delay has passed, then gone.
//! - `GET /projects/{p}/zones/{z}/instances` and `GET /projects/{p}/aggregated/instances`
//!   (`items` keyed `zones/{z}`, zones without instances on the page carry the
//!   `NO_RESULTS_ON_PAGE` warning), with `filter` (space- or `AND`-separated, optionally
//!   parenthesised `field = value`, `field != value` or `field:*` terms over `name`,
//!   `status`, `id`, `labels.<key>`; values optionally quoted), `maxResults` (1..500,
//!   default 500, lowered by `POST /_sim/paging`) and `pageToken` / `nextPageToken`.
//! - `GET /projects/{p}/zones/{z}/operations/{name}` and `POST .../operations/{name}/wait`
//!   (answers once the operation is `DONE`, or after at most two minutes as at Google).
//!
//! Errors are Google's `{"error": {"code", "message", "status", "errors": [{"message",
//! "domain", "reason"}]}}`. Injected faults (`vendor: "gcp"` in `/_sim/faults`) render as
//! Google does: 429 `rateLimitExceeded` / `RESOURCE_EXHAUSTED` with `Retry-After`, 5xx
//! `backendError`, 401 `UNAUTHENTICATED`. Two Compute-specific failures are armed with
//! `POST /_sim/gcp/faults` `{"kind": "quota_exceeded" | "zone_resource_pool_exhausted",
//! "count": 1}`: the next inserts are refused with a 403 `quotaExceeded` (`QUOTA_EXCEEDED`),
//! or answered with an operation that ends `DONE` with the `ZONE_RESOURCE_POOL_EXHAUSTED`
//! error and no instance. `DELETE /_sim/gcp/faults` disarms them.
//!
//! Servers seeded through `POST /_sim/servers` (`"vendor": "gcp"`) are instances in
//! project `sim-project`, zone `us-central1-a`, with the key as the
//! `provisioner-idempotency-key` label.
//!
//! Links (`selfLink`, `zone`, `targetLink`...) are Google's
//! (`https://www.googleapis.com/compute/v1/...`), as a client sees them at Google.
//!
//! Reference: the Compute Engine API v1 reference (instances, zoneOperations), Google's
//! OAuth 2.0 for server-to-server applications, and AIP-4111 (self-signed JWT).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::faults;
use crate::state::{FaultKind, NewServer, SimServer, SimState, Vendor, VendorState};

/// The audience Google's token endpoint demands in a grant assertion.
pub const GOOGLE_TOKEN_AUDIENCE: &str = "https://oauth2.googleapis.com/token";
/// The audience of a self-signed JWT for the Compute API.
pub const COMPUTE_AUDIENCE: &str = "https://compute.googleapis.com/";
/// The grant type of a service account's JWT bearer grant.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Where links point, as at Google.
const LINK_BASE: &str = "https://www.googleapis.com/compute/v1";
/// Scopes that grant the Compute API.
const COMPUTE_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/compute",
    "https://www.googleapis.com/auth/cloud-platform",
];
/// The most a list page holds.
const MAX_RESULTS: usize = 500;
/// The longest `operations.wait` waits, as at Google.
const WAIT_LIMIT: Duration = Duration::from_secs(120);

/// Zones (and their region).
pub const ZONES: &[&str] = &[
    "us-central1-a",
    "us-central1-b",
    "us-central1-c",
    "us-east1-b",
    "us-east1-c",
    "europe-west1-b",
    "europe-west1-c",
    "europe-west3-a",
    "europe-west3-b",
    "asia-east1-a",
];

/// Machine types: vCPUs, memory MB.
pub const MACHINE_TYPES: &[(&str, u32, u32)] = &[
    ("e2-micro", 2, 1024),
    ("e2-small", 2, 2048),
    ("e2-medium", 2, 4096),
    ("e2-standard-2", 2, 8192),
    ("e2-standard-4", 4, 16384),
    ("n2-standard-2", 2, 8192),
    ("n1-standard-1", 1, 3840),
];

/// Public images: project, image name, family.
pub const IMAGES: &[(&str, &str, &str)] = &[
    ("debian-cloud", "debian-12-bookworm-v20241112", "debian-12"),
    ("debian-cloud", "debian-11-bullseye-v20241112", "debian-11"),
    (
        "ubuntu-os-cloud",
        "ubuntu-2404-noble-amd64-v20241115",
        "ubuntu-2404-lts-amd64",
    ),
    (
        "ubuntu-os-cloud",
        "ubuntu-2204-jammy-v20241115",
        "ubuntu-2204-lts",
    ),
    (
        "rocky-linux-cloud",
        "rocky-linux-9-v20241112",
        "rocky-linux-9",
    ),
];

/// A registered service account.
#[derive(Debug, Clone)]
struct ServiceAccount {
    project_id: String,
    public_key: RsaPublicKey,
    token_ttl: Duration,
}

/// An access token the token endpoint issued.
#[derive(Debug, Clone)]
struct AccessToken {
    email: String,
    scopes: Vec<String>,
    expires: DateTime<Utc>,
}

/// What an operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OperationType {
    Insert,
    Delete,
}

/// A zone operation.
#[derive(Debug, Clone)]
struct Operation {
    id: u64,
    name: String,
    project: String,
    zone: String,
    kind: OperationType,
    target_name: String,
    target_id: u64,
    user: String,
    started: DateTime<Utc>,
    finishes: DateTime<Utc>,
    /// The error it ends with (`ZONE_RESOURCE_POOL_EXHAUSTED`).
    error: Option<(String, String)>,
}

/// What Compute Engine keeps about an instance besides the shared server record.
#[derive(Debug, Clone)]
struct InstanceMeta {
    project: String,
    /// When its deletion completes, once deleted.
    deleted_at: Option<DateTime<Utc>>,
}

/// A Compute-specific failure armed through `POST /_sim/gcp/faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeFault {
    /// The next insert is a 403 `quotaExceeded`.
    QuotaExceeded,
    /// The next insert's operation ends with `ZONE_RESOURCE_POOL_EXHAUSTED`.
    ZoneResourcePoolExhausted,
}

/// What Compute Engine's routes hold: the simulator, and Compute Engine's own [`Store`]
/// (made once in [`crate::app`], shared by [`router`] and [`control_router`]).
pub type GcpState = VendorState<Store>;

/// Compute Engine's own state: accounts, tokens, operations, request ids, instance
/// projects and deletions. The instances themselves are the shared [`SimServer`]s.
#[derive(Debug, Default)]
pub struct Store {
    accounts: HashMap<String, ServiceAccount>,
    tokens: HashMap<String, AccessToken>,
    operations: BTreeMap<String, Operation>,
    request_ids: HashMap<(String, String), String>,
    instances: HashMap<u64, InstanceMeta>,
    faults: Vec<ComputeFault>,
    next_operation: u64,
    /// Access tokens issued, per account (`GET /_sim/gcp/token-grants`).
    grants: BTreeMap<String, u64>,
}

impl faults::ArmedVendorFaults for Store {
    type Fault = ComputeFault;

    fn armed_faults(&mut self) -> &mut Vec<ComputeFault> {
        &mut self.faults
    }
}

/// The caller a bearer token stands for.
#[derive(Debug, Clone)]
struct Caller {
    email: String,
    project: String,
}

/// `/gcp/...`: the token endpoint and the Compute API.
pub fn router(state: GcpState) -> Router<Arc<SimState>> {
    let compute = Router::new()
        .route(
            "/projects/{project}/zones/{zone}/instances",
            get(list_zone_instances).post(insert_instance),
        )
        .route(
            "/projects/{project}/zones/{zone}/instances/{name}",
            get(get_instance).delete(delete_instance),
        )
        .route(
            "/projects/{project}/aggregated/instances",
            get(aggregated_instances),
        )
        .route(
            "/projects/{project}/zones/{zone}/operations/{operation}",
            get(get_operation),
        )
        .route(
            "/projects/{project}/zones/{zone}/operations/{operation}/wait",
            post(wait_operation),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let api = Router::new()
        .nest("/compute/v1", compute)
        .route("/token", post(token));
    faults::with_faults(api, state.sim(), Vendor::Gcp, render_fault).with_state(state)
}

/// `/_sim/gcp/...`: service accounts and Compute-specific faults.
pub fn control_router(state: GcpState) -> Router<Arc<SimState>> {
    Router::new()
        .route("/service-accounts", post(register_account))
        .route("/token-grants", get(token_grants))
        .route("/faults", faults::vendor_fault_routes())
        .with_state(state)
}

// ---------------------------------------------------------------------------------------
// Errors

/// Google's API error: `{"error": {"code", "message", "status", "errors": [...]}}`.
fn error(status: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let message = message.into();
    let rpc_status = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let domain = match reason {
        "rateLimitExceeded" | "quotaExceeded" => "usageLimits",
        _ => "global",
    };
    (
        status,
        Json(json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": rpc_status,
        }})),
    )
        .into_response()
}

/// A Compute API error, rendered in Google's shape.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.reason, self.message)
    }
}

impl ApiError {
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            reason: "invalid",
            message: message.into(),
        }
    }

    fn not_found(resource: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            reason: "notFound",
            message: format!("The resource '{resource}' was not found"),
        }
    }
}

fn not_found(resource: &str) -> Response {
    ApiError::not_found(resource).into_response()
}

fn unauthenticated() -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, \
         login cookie or other valid authentication credential. See \
         https://developers.google.com/identity/sign-in/web/devconsole-project.",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(
            r#"Bearer realm="https://accounts.google.com/", error="invalid_token""#,
        ),
    );
    response
}

fn render_fault(kind: &FaultKind) -> Response {
    let status = faults::status_of(kind);
    match kind {
        FaultKind::RateLimit { retry_after_secs } => faults::retry_after(
            error(
                status,
                "rateLimitExceeded",
                "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute' of \
                 service 'compute.googleapis.com'.",
            ),
            *retry_after_secs,
        ),
        FaultKind::Unauthorized => unauthenticated(),
        FaultKind::NoCapacity => error(
            status,
            "ZONE_RESOURCE_POOL_EXHAUSTED",
            "The zone does not have enough resources available to fulfill the request. Try a \
             different zone, or try again later.",
        ),
        FaultKind::ServerError { status: 503 } => error(
            status,
            "backendError",
            "The service is currently unavailable.",
        ),
        _ => error(
            status,
            "backendError",
            "Internal error. Please try again or contact Google Support.",
        ),
    }
}

/// An OAuth token endpoint error.
fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// Service accounts and tokens

/// The body of `POST /_sim/gcp/service-accounts`: a service account the token endpoint
/// will know, by the public half of its key.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceAccountRegistration {
    /// The account's email (the JWT's `iss`).
    pub client_email: String,
    /// The one project it acts on.
    pub project_id: String,
    /// The public half of its key, PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`).
    pub public_key: String,
    /// Its access tokens' lifetime (default 3,599 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_secs: Option<u64>,
}

/// `GET /_sim/gcp/token-grants`'s answer: the access tokens the token endpoint issued
/// (refused grants are not counted), in all and per account.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct TokenGrants {
    /// Tokens issued to every account.
    pub total: u64,
    /// Tokens issued, per account email.
    pub accounts: BTreeMap<String, u64>,
}

async fn register_account(
    State(state): State<GcpState>,
    body: Result<Json<ServiceAccountRegistration>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => {
            return crate::conventions::unprocessable(rejection.body_text());
        }
    };
    let public_key = match RsaPublicKey::from_public_key_pem(request.public_key.trim())
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(request.public_key.trim()))
    {
        Ok(key) => key,
        Err(err) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(
                    json!({"error": format!("public_key is not an RSA public key in PEM: {err}")}),
                ),
            )
                .into_response();
        }
    };
    if request.client_email.is_empty() || request.project_id.is_empty() {
        return crate::conventions::unprocessable("client_email and project_id must not be empty");
    }
    let account = ServiceAccount {
        project_id: request.project_id,
        public_key,
        token_ttl: Duration::from_secs(request.token_ttl_secs.unwrap_or(3599)),
    };
    state
        .store()
        .accounts
        .insert(request.client_email.clone(), account);
    (
        StatusCode::CREATED,
        Json(json!({"client_email": request.client_email})),
    )
        .into_response()
}

/// `GET /_sim/gcp/token-grants`: [`TokenGrants`].
async fn token_grants(State(state): State<GcpState>) -> Json<TokenGrants> {
    let store = state.store();
    Json(TokenGrants {
        total: store.grants.values().sum(),
        accounts: store.grants.clone(),
    })
}

/// A JWT whose RS256 signature a registered account's key verified.
#[derive(Debug)]
struct VerifiedJwt {
    email: String,
    claims: serde_json::Map<String, Value>,
}

/// Why a JWT was refused (the token endpoint's `error_description`).
type JwtRefusal = &'static str;

/// Checks a JWT's form, signature (RS256 by `iss`'s registered key) and lifetime.
fn verify_jwt(store: &Store, jwt: &str) -> Result<VerifiedJwt, JwtRefusal> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [header, payload, signature] = parts.as_slice() else {
        return Err("Invalid JWT: the assertion is not a compact JWS.");
    };
    let decode_json = |part: &str| -> Option<serde_json::Map<String, Value>> {
        let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let header = decode_json(header).ok_or("Invalid JWT: the header is not base64url JSON.")?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err("Invalid JWT: the signing algorithm must be RS256.");
    }
    let claims = decode_json(payload).ok_or("Invalid JWT: the claims are not base64url JSON.")?;
    let email = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or("Invalid JWT: no iss claim.")?
        .to_string();
    let account = store
        .accounts
        .get(&email)
        .ok_or("Invalid grant: account not found")?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .ok()
        .and_then(|bytes| rsa::pkcs1v15::Signature::try_from(bytes.as_slice()).ok())
        .ok_or("Invalid JWT Signature.")?;
    let verifier = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(account.public_key.clone());
    let signed = &jwt[..header_and_payload_len(jwt)];
    verifier
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.")?;
    let now = Utc::now().timestamp();
    let iat = claims.get("iat").and_then(Value::as_i64);
    let exp = claims.get("exp").and_then(Value::as_i64);
    const LIFETIME_REFUSAL: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) \
                                    and in a reasonable timeframe. Check your iat and exp values \
                                    in the JWT claim.";
    match (iat, exp) {
        // A minute of clock skew, as Google allows some.
        (Some(iat), Some(exp))
            if iat <= now + 60 && exp > now && exp > iat && exp - iat <= 3600 => {}
        _ => return Err(LIFETIME_REFUSAL),
    }
    Ok(VerifiedJwt { email, claims })
}

/// The length of `header.payload` in a compact JWS.
fn header_and_payload_len(jwt: &str) -> usize {
    jwt.rfind('.').unwrap_or(0)
}

fn scopes_of(claims: &serde_json::Map<String, Value>) -> Vec<String> {
    claims
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// This endpoint's own URL as the client reached it.
fn own_token_url(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    Some(format!("{scheme}://{host}/gcp/token"))
}

/// `POST /gcp/token`: a service account's JWT bearer grant.
async fn token(State(state): State<GcpState>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    match form.get("grant_type").map(String::as_str) {
        Some(JWT_BEARER_GRANT) => {}
        Some(other) => {
            return oauth_error(
                "unsupported_grant_type",
                &format!("Invalid grant_type: {other}"),
            );
        }
        None => return oauth_error("unsupported_grant_type", "Invalid grant_type: "),
    }
    let Some(assertion) = form.get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    let mut store = state.store();
    let jwt = match verify_jwt(&store, assertion) {
        Ok(jwt) => jwt,
        Err(refusal) => return oauth_error("invalid_grant", refusal),
    };
    let audience = jwt.claims.get("aud").and_then(Value::as_str);
    let own = own_token_url(&headers);
    if audience != Some(GOOGLE_TOKEN_AUDIENCE) && audience != own.as_deref() {
        return oauth_error(
            "invalid_grant",
            &format!(
                "Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_AUDIENCE}"
            ),
        );
    }
    let scopes = scopes_of(&jwt.claims);
    if scopes.is_empty() {
        return oauth_error(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        );
    }
    let ttl = store.accounts[&jwt.email].token_ttl;
    *store.grants.entry(jwt.email.clone()).or_default() += 1;
    let access_token = format!("ya29.sim-{}", uuid::Uuid::new_v4().simple());
    let now = Utc::now();
    store.tokens.retain(|_, t| t.expires > now);
    store.tokens.insert(
        access_token.clone(),
        AccessToken {
            email: jwt.email,
            scopes,
            expires: now + chrono::Duration::from_std(ttl).unwrap_or_default(),
        },
    );
    Json(json!({
        "access_token": access_token,
        "expires_in": ttl.as_secs(),
        "token_type": "Bearer",
    }))
    .into_response()
}

/// Resolves the bearer token (an access token or a self-signed JWT) to its account and
/// checks it grants Compute; the handlers get the [`Caller`].
async fn authenticate(State(state): State<GcpState>, mut request: Request, next: Next) -> Response {
    let Some(token) = crate::conventions::bearer_token(request.headers()) else {
        return unauthenticated();
    };
    let resolved = {
        let store = state.store();
        if token.matches('.').count() == 2 {
            verify_jwt(&store, &token).ok().and_then(|jwt| {
                let audience = jwt.claims.get("aud").and_then(Value::as_str);
                let scopes = scopes_of(&jwt.claims);
                if audience.is_some_and(|a| {
                    a.trim_end_matches('/') == COMPUTE_AUDIENCE.trim_end_matches('/')
                }) || !scopes.is_empty()
                {
                    let scopes = if scopes.is_empty() {
                        vec![COMPUTE_SCOPES[0].to_string()]
                    } else {
                        scopes
                    };
                    Some((jwt.email, scopes))
                } else {
                    None
                }
            })
        } else {
            store
                .tokens
                .get(&token)
                .filter(|t| t.expires > Utc::now())
                .map(|t| (t.email.clone(), t.scopes.clone()))
        }
        .and_then(|(email, scopes)| {
            let project = store.accounts.get(&email)?.project_id.clone();
            Some((email, scopes, project))
        })
    };
    let Some((email, scopes, project)) = resolved else {
        return unauthenticated();
    };
    if !scopes.iter().any(|s| COMPUTE_SCOPES.contains(&s.as_str())) {
        return error(
            StatusCode::FORBIDDEN,
            "insufficientPermissions",
            "Request had insufficient authentication scopes.",
        );
    }
    request.extensions_mut().insert(Caller { email, project });
    next.run(request).await
}

/// The caller may act on `project`.
fn authorize(caller: &Caller, project: &str, permission: &str) -> Result<(), ApiError> {
    if caller.project == project {
        Ok(())
    } else {
        Err(ApiError {
            status: StatusCode::FORBIDDEN,
            reason: "forbidden",
            message: format!("Required '{permission}' permission for 'projects/{project}'"),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Compute-specific faults

// ---------------------------------------------------------------------------------------
// Instances

fn region_of(zone: &str) -> &str {
    zone.rsplit_once('-')
        .map(|(region, _)| region)
        .unwrap_or(zone)
}

fn zone_link(project: &str, zone: &str) -> String {
    format!("{LINK_BASE}/projects/{project}/zones/{zone}")
}

/// A Compute resource name (RFC 1035).
fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !name.ends_with('-')
}

fn valid_label_part(text: &str) -> bool {
    text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `zones/{z}/machineTypes/{t}` (possibly a full URL) -> (zone, type).
fn parse_machine_type(link: &str) -> Option<(&str, &str)> {
    let at = link.find("zones/")?;
    let rest = &link[at + "zones/".len()..];
    let (zone, rest) = rest.split_once('/')?;
    let machine_type = rest.strip_prefix("machineTypes/")?;
    (!machine_type.contains('/')).then_some((zone, machine_type))
}

/// `projects/{p}/global/images/{name}` or `.../images/family/{family}` (possibly a full
/// URL) -> the image (project, name).
fn resolve_image(link: &str) -> Result<(&'static str, &'static str), ApiError> {
    let path = link.find("projects/").map(|at| &link[at..]).unwrap_or(link);
    let parsed = path
        .strip_prefix("projects/")
        .and_then(|rest| rest.split_once("/global/images/"));
    let found = parsed.and_then(|(project, image)| {
        IMAGES.iter().find(|(p, name, family)| {
            *p == project
                && match image.strip_prefix("family/") {
                    Some(wanted) => wanted == *family,
                    None => image == *name,
                }
        })
    });
    match (parsed, found) {
        (_, Some((project, name, _))) => Ok((project, name)),
        (Some(_), None) => Err(ApiError::not_found(path)),
        (None, None) => Err(ApiError::invalid(format!(
            "Invalid value for field 'resource.disks[0].initializeParams.sourceImage': \
             '{link}'. The URL is malformed."
        ))),
    }
}

/// Removes the instances whose deletion has completed.
fn sweep(state: &GcpState) {
    let now = Utc::now();
    let gone: Vec<u64> = {
        let mut store = state.store();
        let gone: Vec<u64> = store
            .instances
            .iter()
            .filter(|(_, meta)| meta.deleted_at.is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            store.instances.remove(id);
        }
        gone
    };
    if !gone.is_empty() {
        state.with_cloud(Vendor::Gcp, |cloud| {
            for id in &gone {
                cloud.servers.remove(id);
            }
        });
    }
}

/// The project of servers made through `POST /_sim/servers` (which names none).
pub const SEED_PROJECT: &str = "sim-project";

/// What Compute keeps about server `id`: its own record, or for a server seeded through
/// `/_sim/servers`, a live one in [`SEED_PROJECT`].
fn meta_of(store: &Store, id: u64) -> InstanceMeta {
    store.instances.get(&id).cloned().unwrap_or(InstanceMeta {
        project: SEED_PROJECT.into(),
        deleted_at: None,
    })
}

/// Compute's id for a simulator server id (Compute ids are large numbers).
fn instance_id(id: u64) -> u64 {
    4_000_000_000_000_000_000 + id
}

fn instance_status(server: &SimServer, meta: &InstanceMeta, state: &GcpState) -> &'static str {
    if meta.deleted_at.is_some() {
        return "STOPPING";
    }
    let boot = state.config.boot_delay;
    let elapsed = Utc::now()
        .signed_duration_since(server.created)
        .to_std()
        .unwrap_or_default();
    if elapsed >= boot {
        "RUNNING"
    } else if elapsed >= boot / 2 {
        "STAGING"
    } else {
        "PROVISIONING"
    }
}

fn fingerprint(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(&digest[..8])
}

fn render_instance(server: &SimServer, meta: &InstanceMeta, state: &GcpState) -> Value {
    let spec = &server.spec;
    let project = &meta.project;
    let zone = &spec.region;
    let status = instance_status(server, meta, state);
    let zone_url = zone_link(project, zone);
    let (image_project, image_name) = spec.image.split_once('/').unwrap_or(("", &spec.image));
    let mut access_config = json!({
        "kind": "compute#accessConfig", "type": "ONE_TO_ONE_NAT", "name": "External NAT",
        "networkTier": "PREMIUM",
    });
    if status == "RUNNING" || status == "STOPPING" {
        access_config["natIP"] = json!(server.ipv4);
    }
    let items: Vec<Value> = spec
        .metadata
        .iter()
        .map(|(key, value)| json!({"key": key, "value": value}))
        .collect();
    let created = server.created.to_rfc3339_opts(SecondsFormat::Millis, false);
    let mut instance = json!({
        "kind": "compute#instance",
        "id": instance_id(server.id).to_string(),
        "creationTimestamp": created,
        "name": spec.name,
        "description": "",
        "tags": {"fingerprint": "42WmSpB8rSM="},
        "machineType": format!("{zone_url}/machineTypes/{}", spec.size),
        "status": status,
        "zone": zone_url,
        "canIpForward": false,
        "networkInterfaces": [{
            "kind": "compute#networkInterface",
            "network": format!("{LINK_BASE}/projects/{project}/global/networks/default"),
            "subnetwork": format!(
                "{LINK_BASE}/projects/{project}/regions/{}/subnetworks/default",
                region_of(zone)
            ),
            "networkIP": format!("10.128.{}.{}", server.id / 250 % 250, server.id % 250 + 2),
            "name": "nic0",
            "accessConfigs": [access_config],
            "fingerprint": fingerprint(&format!("nic{}", server.id)),
            "stackType": "IPV4_ONLY",
        }],
        "disks": [{
            "kind": "compute#attachedDisk",
            "type": "PERSISTENT",
            "mode": "READ_WRITE",
            "source": format!("{zone_url}/disks/{}", spec.name),
            "deviceName": "persistent-disk-0",
            "index": 0,
            "boot": true,
            "autoDelete": true,
            "licenses": [format!("{LINK_BASE}/projects/{image_project}/global/licenses/{image_name}")],
            "interface": "SCSI",
            "diskSizeGb": "10",
            "architecture": "X86_64",
        }],
        "metadata": {
            "kind": "compute#metadata",
            "fingerprint": fingerprint(&format!("{:?}", spec.metadata)),
            "items": items,
        },
        "selfLink": format!("{zone_url}/instances/{}", spec.name),
        "scheduling": {
            "onHostMaintenance": "MIGRATE", "automaticRestart": true, "preemptible": false,
            "provisioningModel": "STANDARD",
        },
        "cpuPlatform": "Intel Broadwell",
        "labels": spec.labels,
        "labelFingerprint": fingerprint(&format!("{:?}", spec.labels)),
        "startRestricted": false,
        "deletionProtection": false,
        "fingerprint": fingerprint(&format!("instance{}", server.id)),
        "lastStartTimestamp": created,
    });
    if status == "RUNNING" {
        instance["lastStartTimestamp"] = json!(
            (server.created
                + chrono::Duration::from_std(state.config.boot_delay).unwrap_or_default())
            .to_rfc3339_opts(SecondsFormat::Millis, false)
        );
    }
    instance
}

fn render_operation(operation: &Operation) -> Value {
    let done = Utc::now() >= operation.finishes;
    let zone_url = zone_link(&operation.project, &operation.zone);
    let timestamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, false);
    let mut rendered = json!({
        "kind": "compute#operation",
        "id": operation.id.to_string(),
        "name": operation.name,
        "zone": zone_url,
        "operationType": match operation.kind {
            OperationType::Insert => "insert",
            OperationType::Delete => "delete",
        },
        "targetLink": format!("{zone_url}/instances/{}", operation.target_name),
        "targetId": operation.target_id.to_string(),
        "status": if done { "DONE" } else { "RUNNING" },
        "user": operation.user,
        "progress": if done { 100 } else { 0 },
        "insertTime": timestamp(operation.started),
        "startTime": timestamp(operation.started),
        "selfLink": format!("{zone_url}/operations/{}", operation.name),
    });
    if done {
        rendered["endTime"] = json!(timestamp(operation.finishes));
        if let Some((code, message)) = &operation.error {
            rendered["error"] = json!({"errors": [{"code": code, "message": message}]});
            rendered["httpErrorStatusCode"] = json!(503);
            rendered["httpErrorMessage"] = json!("SERVICE UNAVAILABLE");
        }
    }
    rendered
}

/// A new operation, filed.
#[allow(clippy::too_many_arguments)]
fn new_operation(
    store: &mut Store,
    project: &str,
    zone: &str,
    kind: OperationType,
    target_name: &str,
    target_id: u64,
    user: &str,
    takes: Duration,
    error: Option<(String, String)>,
) -> Operation {
    store.next_operation += 1;
    let now = Utc::now();
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let operation = Operation {
        id: 7_000_000_000_000_000_000 + store.next_operation,
        name: format!(
            "operation-{}-{}-{}-{}",
            now.timestamp_millis(),
            &unique[..13],
            &unique[13..21],
            &unique[21..29]
        ),
        project: project.into(),
        zone: zone.into(),
        kind,
        target_name: target_name.into(),
        target_id,
        user: user.into(),
        started: now,
        finishes: now + chrono::Duration::from_std(takes).unwrap_or_default(),
        error,
    };
    store
        .operations
        .insert(operation.name.clone(), operation.clone());
    operation
}

#[derive(Debug, Deserialize)]
struct RequestIdQuery {
    #[serde(rename = "requestId")]
    request_id: Option<String>,
}

/// A valid `requestId`: a UUID, not the nil one.
fn check_request_id(request_id: &Option<String>) -> Result<(), ApiError> {
    match request_id {
        None => Ok(()),
        Some(id) => match uuid::Uuid::parse_str(id) {
            Ok(uuid) if !uuid.is_nil() => Ok(()),
            _ => Err(ApiError::invalid(format!(
                "Invalid value for field 'requestId': '{id}'. The request ID must be a valid \
                 UUID with the exception that zero UUID is not supported \
                 (00000000-0000-0000-0000-000000000000)."
            ))),
        },
    }
}

/// The operation an earlier request with this `requestId` got, if any.
fn replayed(state: &GcpState, project: &str, request_id: &Option<String>) -> Option<Response> {
    let request_id = request_id.as_ref()?;
    let store = state.store();
    let name = store
        .request_ids
        .get(&(project.to_string(), request_id.clone()))?;
    let operation = store.operations.get(name)?;
    Some(Json(render_operation(operation)).into_response())
}

fn check_zone(project: &str, zone: &str) -> Result<(), ApiError> {
    if ZONES.contains(&zone) {
        Ok(())
    } else {
        Err(ApiError::not_found(&format!(
            "projects/{project}/zones/{zone}"
        )))
    }
}

/// Reads `metadata.items` into a map.
fn metadata_items(body: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    let mut items = BTreeMap::new();
    let Some(list) = body.pointer("/metadata/items") else {
        return Ok(items);
    };
    let Some(list) = list.as_array() else {
        return Err(ApiError::invalid(
            "Invalid value for field 'resource.metadata.items': not a list.",
        ));
    };
    for (index, item) in list.iter().enumerate() {
        let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
        let value = item
            .get("value")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let valid_key = !key.is_empty()
            && key.len() <= 128
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid_key {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.metadata.items[{index}].key': '{key}'. \
                 Must be a match of regex '[a-zA-Z0-9-_]{{1,128}}'"
            )));
        }
        if items.insert(key.to_string(), value.to_string()).is_some() {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.metadata': duplicate key '{key}'."
            )));
        }
    }
    let total: usize = items.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > 512 * 1024 {
        return Err(ApiError::invalid(
            "Invalid value for field 'resource.metadata': the metadata exceeds 512 KB.",
        ));
    }
    Ok(items)
}

/// The OpenSSH keys of an `ssh-keys` metadata value (`user:key` lines).
fn ssh_keys_of(value: &str) -> Result<Vec<String>, ApiError> {
    let mut keys = Vec::new();
    for line in value.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some((user, key)) = line.split_once(':') else {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.metadata.items': ssh-keys line '{line}' is \
                 not 'username:key'."
            )));
        };
        if user.is_empty() || crate::keys::check(key).is_err() {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.metadata.items': ssh-keys line '{line}' \
                 does not hold a valid public key."
            )));
        }
        keys.push(key.trim().to_string());
    }
    Ok(keys)
}

/// The answer a create or delete gets before its body is looked at: refused (the caller may
/// not, or the `requestId` is not a UUID), or the operation an earlier request with the same
/// `requestId` got.
fn refused_or_replayed(
    state: &GcpState,
    caller: &Caller,
    project: &str,
    request_id: &Option<String>,
    permission: &str,
) -> Option<Response> {
    if let Err(refusal) = authorize(caller, project, permission) {
        return Some(refusal.into_response());
    }
    if let Err(refusal) = check_request_id(request_id) {
        return Some(refusal.into_response());
    }
    replayed(state, project, request_id)
}

async fn insert_instance(
    State(state): State<GcpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((project, zone)): Path<(String, String)>,
    Query(query): Query<RequestIdQuery>,
    body: Bytes,
) -> Response {
    let permission = "compute.instances.create";
    if let Some(answer) =
        refused_or_replayed(&state, &caller, &project, &query.request_id, permission)
    {
        return answer;
    }
    if let Err(refusal) = check_zone(&project, &zone) {
        return refusal.into_response();
    }
    match instance_spec(&body, &project, &zone) {
        Ok(spec) => start_insert(&state, &caller, project, zone, query.request_id, spec),
        Err(refusal) => refusal.into_response(),
    }
}

/// The server an insert's body asks for, checked as Compute Engine checks it: the name, the
/// machine type in the instance's zone, exactly one boot disk with a known image, the
/// labels, the metadata and its SSH keys.
fn instance_spec(body: &Bytes, project: &str, zone: &str) -> Result<NewServer, ApiError> {
    let body: Value = match serde_json::from_slice(body) {
        Ok(body @ Value::Object(_)) => body,
        _ => return Err(ApiError::invalid("Invalid JSON payload received.")),
    };
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default();
    if !valid_name(name) {
        return Err(ApiError::invalid(format!(
            "Invalid value for field 'resource.name': '{name}'. Must be a match of regex \
             '(?:[a-z](?:[-a-z0-9]{{0,61}}[a-z0-9])?)'"
        )));
    }
    let machine_type = instance_machine_type(&body, project, zone)?;
    let (image_project, image_name) = boot_disk_image(&body)?;
    let labels = instance_labels(&body)?;
    let metadata = metadata_items(&body)?;
    let ssh_keys = match metadata.get("ssh-keys") {
        Some(keys) => ssh_keys_of(keys)?,
        None => Vec::new(),
    };
    Ok(NewServer {
        name: name.to_string(),
        region: zone.to_string(),
        size: machine_type.to_string(),
        image: format!("{image_project}/{image_name}"),
        idempotency_key: labels.get(crate::conventions::IDEMPOTENCY_LABEL).cloned(),
        labels,
        tags: Vec::new(),
        user_data: metadata.get("user-data").cloned(),
        metadata,
        ssh_keys,
    })
}

/// The insert's `machineType`: a link to one of [`MACHINE_TYPES`] in the instance's zone.
fn instance_machine_type<'a>(
    body: &'a Value,
    project: &str,
    zone: &str,
) -> Result<&'a str, ApiError> {
    let machine_link = body
        .get("machineType")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let machine_type = match parse_machine_type(machine_link) {
        Some((type_zone, _)) if type_zone != zone => {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.machineType': '{machine_link}'. Machine \
                 type specified '{machine_link}' is in a different scope than the instance."
            )));
        }
        Some((_, machine_type)) => machine_type,
        None => {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.machineType': '{machine_link}'. Must be a \
                 URL to a valid Compute resource of the correct type."
            )));
        }
    };
    if !MACHINE_TYPES.iter().any(|(t, ..)| *t == machine_type) {
        return Err(ApiError::not_found(&format!(
            "projects/{project}/zones/{zone}/machineTypes/{machine_type}"
        )));
    }
    Ok(machine_type)
}

/// The image of the insert's one boot disk (`initializeParams.sourceImage`), resolved.
fn boot_disk_image(body: &Value) -> Result<(&'static str, &'static str), ApiError> {
    let disks = body
        .get("disks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let boot: Vec<&Value> = disks
        .iter()
        .filter(|d| d.get("boot").and_then(Value::as_bool) == Some(true))
        .collect();
    let [boot] = boot.as_slice() else {
        return Err(ApiError::invalid(
            "Invalid value for field 'resource.disks': ''. Exactly one boot disk must be \
             specified.",
        ));
    };
    let Some(source_image) = boot
        .pointer("/initializeParams/sourceImage")
        .and_then(Value::as_str)
    else {
        return Err(ApiError::invalid(
            "Invalid value for field 'resource.disks[0].initializeParams.sourceImage': ''. \
             Source image must be specified.",
        ));
    };
    resolve_image(source_image)
}

/// The insert's `labels`, each key and value in Google's label format, 64 at most.
fn instance_labels(body: &Value) -> Result<BTreeMap<String, String>, ApiError> {
    let map = match body.get("labels") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(ApiError::invalid(
                "Invalid value for field 'resource.labels': not a map.",
            ));
        }
    };
    let mut labels = BTreeMap::new();
    for (key, value) in map {
        let value = value.as_str().unwrap_or_default();
        let key_ok =
            key.chars().next().is_some_and(|c| c.is_ascii_lowercase()) && valid_label_part(key);
        if !key_ok {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.labels': ''. Label key '{key}' \
                 violates format constraints. The key must start with a lowercase \
                 character, can only contain lowercase letters, numeric characters, \
                 underscores and dashes. The key can be at most 63 characters long. \
                 International characters are allowed."
            )));
        }
        if !valid_label_part(value) {
            return Err(ApiError::invalid(format!(
                "Invalid value for field 'resource.labels': ''. Label value \
                 '{value}' violates format constraints. The value can only contain \
                 lowercase letters, numeric characters, underscores and dashes. The \
                 value can be at most 63 characters long. International characters \
                 are allowed."
            )));
        }
        labels.insert(key.clone(), value.to_string());
    }
    if labels.len() > 64 {
        return Err(ApiError::invalid(
            "Invalid value for field 'resource.labels': ''. Resource cannot have more \
             than 64 labels.",
        ));
    }
    Ok(labels)
}

/// A checked insert carried out under the store's lock: replayed if its `requestId` got an
/// operation meanwhile, refused if the name is taken in the zone or a quota fault is armed,
/// else the instance made (or, with a resource-pool fault, not) and its operation answered.
fn start_insert(
    state: &GcpState,
    caller: &Caller,
    project: String,
    zone: String,
    request_id: Option<String>,
    spec: NewServer,
) -> Response {
    sweep(state);
    let boot_delay = state.config.boot_delay;
    // One lock order everywhere: the Compute store, then the cloud.
    let mut store = state.store();
    if let Some(request_id) = &request_id
        && let Some(name) = store
            .request_ids
            .get(&(project.clone(), request_id.clone()))
        && let Some(operation) = store.operations.get(name)
    {
        return Json(render_operation(operation)).into_response();
    }
    let name = spec.name.clone();
    let taken = state.with_cloud(Vendor::Gcp, |cloud| {
        cloud.servers.values().any(|s| {
            s.spec.name == name && s.spec.region == zone && meta_of(&store, s.id).project == project
        })
    });
    if taken {
        return error(
            StatusCode::CONFLICT,
            "alreadyExists",
            format!(
                "The resource 'projects/{project}/zones/{zone}/instances/{name}' already exists"
            ),
        );
    }
    let fault = (!store.faults.is_empty()).then(|| store.faults.remove(0));
    if fault == Some(ComputeFault::QuotaExceeded) {
        return error(
            StatusCode::FORBIDDEN,
            "quotaExceeded",
            format!(
                "Quota 'CPUS' exceeded.  Limit: 8.0 in region {}.",
                region_of(&zone)
            ),
        );
    }
    let (target_id, failure) = if fault == Some(ComputeFault::ZoneResourcePoolExhausted) {
        let message = format!(
            "The zone 'projects/{project}/zones/{zone}' does not have enough resources \
             available to fulfill the request.  Try a different zone, or try again later."
        );
        // Google numbers the instance it could not make; nothing ever shows it.
        (
            9_000_000_000_000_000_000 + store.next_operation + 1,
            Some(("ZONE_RESOURCE_POOL_EXHAUSTED".to_string(), message)),
        )
    } else {
        let server = state.with_cloud(Vendor::Gcp, |cloud| cloud.insert(spec));
        store.instances.insert(
            server.id,
            InstanceMeta {
                project: project.clone(),
                deleted_at: None,
            },
        );
        (instance_id(server.id), None)
    };
    let operation = new_operation(
        &mut store,
        &project,
        &zone,
        OperationType::Insert,
        &name,
        target_id,
        &caller.email,
        boot_delay,
        failure,
    );
    if let Some(request_id) = request_id {
        store
            .request_ids
            .insert((project, request_id), operation.name.clone());
    }
    Json(render_operation(&operation)).into_response()
}

/// The live instance `name` in `project`/`zone`.
fn find_instance(
    state: &GcpState,
    project: &str,
    zone: &str,
    name: &str,
) -> Option<(SimServer, InstanceMeta)> {
    sweep(state);
    let store = state.store();
    state.with_cloud(Vendor::Gcp, |cloud| {
        cloud.servers.values().find_map(|s| {
            let meta = meta_of(&store, s.id);
            (s.spec.name == name && s.spec.region == zone && meta.project == project)
                .then(|| (s.clone(), meta))
        })
    })
}

async fn get_instance(
    State(state): State<GcpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((project, zone, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&caller, &project, "compute.instances.get")?;
    match find_instance(&state, &project, &zone, &name) {
        Some((server, meta)) => Ok(Json(render_instance(&server, &meta, &state))),
        None => Err(ApiError::not_found(&format!(
            "projects/{project}/zones/{zone}/instances/{name}"
        ))),
    }
}

async fn delete_instance(
    State(state): State<GcpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((project, zone, name)): Path<(String, String, String)>,
    Query(query): Query<RequestIdQuery>,
) -> Response {
    let permission = "compute.instances.delete";
    if let Some(answer) =
        refused_or_replayed(&state, &caller, &project, &query.request_id, permission)
    {
        return answer;
    }
    let Some((server, meta)) = find_instance(&state, &project, &zone, &name) else {
        return not_found(&format!("projects/{project}/zones/{zone}/instances/{name}"));
    };
    let boot_delay = state.config.boot_delay;
    let mut store = state.store();
    let takes = match meta.deleted_at {
        // Already going: this operation ends with the first.
        Some(at) => at
            .signed_duration_since(Utc::now())
            .to_std()
            .unwrap_or_default(),
        None => boot_delay,
    };
    let meta = store.instances.entry(server.id).or_insert(meta);
    meta.deleted_at
        .get_or_insert(Utc::now() + chrono::Duration::from_std(takes).unwrap_or_default());
    let operation = new_operation(
        &mut store,
        &project,
        &zone,
        OperationType::Delete,
        &name,
        instance_id(server.id),
        &caller.email,
        takes,
        None,
    );
    if let Some(request_id) = query.request_id {
        store
            .request_ids
            .insert((project, request_id), operation.name.clone());
    }
    Json(render_operation(&operation)).into_response()
}

// ---------------------------------------------------------------------------------------
// Lists

#[derive(Debug, Deserialize)]
struct ListQuery {
    filter: Option<String>,
    #[serde(rename = "maxResults")]
    max_results: Option<usize>,
    #[serde(rename = "pageToken")]
    page_token: Option<String>,
    #[serde(rename = "orderBy")]
    order_by: Option<String>,
    #[serde(rename = "returnPartialSuccess")]
    _return_partial_success: Option<bool>,
    #[serde(rename = "includeAllScopes")]
    _include_all_scopes: Option<bool>,
    #[serde(rename = "serviceProjectNumber")]
    _service_project_number: Option<String>,
}

/// One `field op value` term of a list filter.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Present(String),
}

/// Parses a Compute list filter (the subset in the module doc).
fn parse_filter(filter: &str) -> Result<Vec<Term>, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "Invalid value for field 'filter': '{filter}'. Invalid list filter expression."
        ))
    };
    let mut terms = Vec::new();
    let mut rest = filter.trim();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("AND ") {
            rest = after.trim_start();
            continue;
        }
        // One term: up to its closing parenthesis, or up to the end of its value.
        let (term, after) = if let Some(inner) = rest.strip_prefix('(') {
            let close = inner.find(')').ok_or_else(bad)?;
            (&inner[..close], &inner[close + 1..])
        } else {
            // field op value, the value possibly quoted.
            let op_at = rest.find(['=', '!', ':']).ok_or_else(bad)?;
            let after_op = rest[op_at..]
                .trim_start_matches(['=', '!', ':'])
                .trim_start();
            let value_len = if let Some(quoted) = after_op.strip_prefix('"') {
                quoted.find('"').ok_or_else(bad)? + 2
            } else {
                after_op.find(' ').unwrap_or(after_op.len())
            };
            let end = rest.len() - after_op.len() + value_len;
            (&rest[..end], &rest[end..])
        };
        terms.push(parse_term(term).ok_or_else(bad)?);
        rest = after.trim_start();
    }
    Ok(terms)
}

fn parse_term(term: &str) -> Option<Term> {
    let unquote = |value: &str| {
        let value = value.trim();
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
            .to_string()
    };
    let field_ok = |field: &str| {
        matches!(field, "name" | "status" | "id" | "zone")
            || field.strip_prefix("labels.").is_some_and(|k| !k.is_empty())
    };
    if let Some((field, value)) = term.split_once("!=") {
        let field = field.trim();
        return field_ok(field).then(|| Term::NotEquals(field.into(), unquote(value)));
    }
    if let Some((field, value)) = term.split_once('=') {
        let field = field.trim();
        return field_ok(field).then(|| Term::Equals(field.into(), unquote(value)));
    }
    if let Some((field, value)) = term.split_once(':') {
        let field = field.trim();
        return (field_ok(field) && value.trim() == "*").then(|| Term::Present(field.into()));
    }
    None
}

/// An instance's value for a filter field.
fn field_value(instance: &Value, field: &str) -> Option<String> {
    match field.strip_prefix("labels.") {
        Some(key) => instance["labels"].get(key)?.as_str().map(str::to_string),
        None => {
            let value = instance.get(field)?;
            value.as_str().map(str::to_string)
        }
    }
}

fn matches(instance: &Value, terms: &[Term]) -> bool {
    terms.iter().all(|term| match term {
        Term::Equals(field, value) => field_value(instance, field).as_deref() == Some(value),
        Term::NotEquals(field, value) => field_value(instance, field).as_deref() != Some(value),
        Term::Present(field) => field_value(instance, field).is_some(),
    })
}

/// One page of a list: `(zone, instance)` pairs and the next page's token.
struct Page {
    instances: Vec<(String, Value)>,
    next: Option<String>,
}

/// The instances of `project` (in `zone`, if given) matching the query, one page, and the
/// next page's token.
fn list_page(
    state: &GcpState,
    project: &str,
    zone: Option<&str>,
    query: &ListQuery,
) -> Result<Page, ApiError> {
    if query.order_by.is_some() {
        return Err(ApiError::invalid(
            "Invalid value for field 'orderBy': sorting is not supported by this simulator.",
        ));
    }
    let terms = match &query.filter {
        Some(filter) => parse_filter(filter)?,
        None => Vec::new(),
    };
    let page_size = query
        .max_results
        .unwrap_or(MAX_RESULTS)
        .clamp(1, state.page_size(MAX_RESULTS));
    let after = match &query.page_token {
        None => 0,
        Some(token) => URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.strip_prefix("after:")?.parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "Invalid value for field 'pageToken': '{token}'. Invalid page token."
                ))
            })?,
    };
    sweep(state);
    let store = state.store();
    let mut found: Vec<(u64, String, Value)> = state.with_cloud(Vendor::Gcp, |cloud| {
        cloud
            .servers
            .range(after + 1..)
            .filter_map(|(id, server)| {
                let meta = meta_of(&store, *id);
                (meta.project == project && zone.is_none_or(|z| server.spec.region == z)).then(
                    || {
                        (
                            *id,
                            server.spec.region.clone(),
                            render_instance(server, &meta, state),
                        )
                    },
                )
            })
            .filter(|(_, _, instance)| matches(instance, &terms))
            .take(page_size + 1)
            .collect()
    });
    let next = if found.len() > page_size {
        found.truncate(page_size);
        found
            .last()
            .map(|(id, ..)| URL_SAFE_NO_PAD.encode(format!("after:{id}")))
    } else {
        None
    };
    Ok(Page {
        instances: found.into_iter().map(|(_, zone, v)| (zone, v)).collect(),
        next,
    })
}

async fn list_zone_instances(
    State(state): State<GcpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((project, zone)): Path<(String, String)>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&caller, &project, "compute.instances.list")?;
    let Ok(Query(query)) = query else {
        return Err(ApiError::invalid("Invalid query parameters."));
    };
    check_zone(&project, &zone)?;
    let Page {
        instances: page,
        next,
    } = list_page(&state, &project, Some(&zone), &query)?;
    let zone_url = zone_link(&project, &zone);
    let mut body = json!({
        "kind": "compute#instanceList",
        "id": format!("projects/{project}/zones/{zone}/instances"),
        "items": page.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "selfLink": format!("{zone_url}/instances"),
    });
    if let Some(next) = next {
        body["nextPageToken"] = json!(next);
    }
    Ok(Json(body))
}

async fn aggregated_instances(
    State(state): State<GcpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(project): Path<String>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&caller, &project, "compute.instances.list")?;
    let Ok(Query(query)) = query else {
        return Err(ApiError::invalid("Invalid query parameters."));
    };
    let Page {
        instances: page,
        next,
    } = list_page(&state, &project, None, &query)?;
    let mut items = serde_json::Map::new();
    for zone in ZONES {
        let instances: Vec<&Value> = page
            .iter()
            .filter(|(z, _)| z == zone)
            .map(|(_, v)| v)
            .collect();
        let scope = if instances.is_empty() {
            json!({"warning": {
                "code": "NO_RESULTS_ON_PAGE",
                "message": "There are no results for scope 'zones/".to_string() + zone + "' on this page.",
                "data": [{"key": "scope", "value": format!("zones/{zone}")}],
            }})
        } else {
            json!({"instances": instances})
        };
        items.insert(format!("zones/{zone}"), scope);
    }
    let mut body = json!({
        "kind": "compute#instanceAggregatedList",
        "id": format!("projects/{project}/aggregated/instances"),
        "items": items,
        "selfLink": format!("{LINK_BASE}/projects/{project}/aggregated/instances"),
    });
    if let Some(next) = next {
        body["nextPageToken"] = json!(next);
    }
    Ok(Json(body))
}

// ---------------------------------------------------------------------------------------
// Operations

fn find_operation(
    state: &GcpState,
    project: &str,
    zone: &str,
    name: &str,
) -> Result<Operation, ApiError> {
    let store = state.store();
    store
        .operations
        .get(name)
        .filter(|op| op.project == project && op.zone == zone)
        .cloned()
        .ok_or_else(|| {
            ApiError::not_found(&format!(
                "projects/{project}/zones/{zone}/operations/{name}"
            ))
        })
}

async fn get_operation(
    State(state): State<GcpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((project, zone, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&caller, &project, "compute.zoneOperations.get")?;
    sweep(&state);
    let operation = find_operation(&state, &project, &zone, &name)?;
    Ok(Json(render_operation(&operation)))
}

async fn wait_operation(
    State(state): State<GcpState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path((project, zone, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    authorize(&caller, &project, "compute.zoneOperations.get")?;
    let operation = find_operation(&state, &project, &zone, &name)?;
    let remaining = operation
        .finishes
        .signed_duration_since(Utc::now())
        .to_std()
        .unwrap_or_default();
    // A few milliseconds past the end, so the operation renders `DONE`.
    tokio::time::sleep(remaining.min(WAIT_LIMIT) + Duration::from_millis(5)).await;
    sweep(&state);
    Ok(Json(render_operation(&operation)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_as_compute_writes_them() {
        assert_eq!(
            parse_filter("labels.provisioner-idempotency-key = \"k1\"").ok(),
            Some(vec![Term::Equals(
                "labels.provisioner-idempotency-key".into(),
                "k1".into()
            )])
        );
        assert_eq!(
            parse_filter("(labels.a = x) (status != RUNNING) AND (labels.b:*)").ok(),
            Some(vec![
                Term::Equals("labels.a".into(), "x".into()),
                Term::NotEquals("status".into(), "RUNNING".into()),
                Term::Present("labels.b".into()),
            ])
        );
        assert!(parse_filter("bogus").is_err());
        assert!(parse_filter("cpuPlatform = x").is_err());
    }

    #[test]
    fn machine_types_and_images_resolve_from_links() {
        assert_eq!(
            parse_machine_type("zones/us-central1-a/machineTypes/e2-small"),
            Some(("us-central1-a", "e2-small"))
        );
        assert_eq!(
            parse_machine_type(
                "https://www.googleapis.com/compute/v1/projects/p/zones/us-east1-b/machineTypes/e2-micro"
            ),
            Some(("us-east1-b", "e2-micro"))
        );
        assert_eq!(parse_machine_type("e2-small"), None);
        assert_eq!(
            resolve_image("projects/debian-cloud/global/images/family/debian-12").ok(),
            Some(("debian-cloud", "debian-12-bookworm-v20241112"))
        );
        assert!(resolve_image("projects/debian-cloud/global/images/family/debian-99").is_err());
        assert!(valid_name("web-1") && !valid_name("Web") && !valid_name("web-"));
    }
}
