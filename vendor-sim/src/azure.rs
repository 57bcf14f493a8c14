//! The Azure Resource Manager subset an Azure plugin uses (`Microsoft.Network` public IPs,
//! network interfaces and virtual networks, `Microsoft.Compute` virtual machines and their
//! OS disks, resource groups, the generic resource list), in ARM's own shapes, with the
//! Microsoft identity platform's token endpoint for the client-credentials grant.
//!
//! Everything is under `/azure`: the identity platform at `/azure/{tenant}/...` (an
//! authority of `https://<sim>/azure`, as azure-identity's `authority` takes it), ARM at
//! `/azure/subscriptions/...` (a `base_url` of `https://<sim>/azure`). azure-core sends
//! bearer tokens over HTTPS only, so the SDKs use the simulator's TLS listener.
//!
//! # Identity platform
//! - App registrations are made at run time: `POST /_sim/azure/apps` `{"tenant_id",
//!   "client_id", "client_secret", "subscription_id", "token_ttl_secs"?, "resource_group"?,
//!   "location"?, "virtual_network"?, "subnet"?}`. With `resource_group` the group is made
//!   in `location` (default `westeurope`); with `virtual_network` and `subnet` too, a
//!   virtual network `10.0.0.0/16` with that subnet (`10.0.0.0/24`) in it, as a manifest
//!   names them. Answers 201 `{"client_id"}`.
//! - `GET /azure/{tenant}/v2.0/.well-known/openid-configuration`: the tenant's OpenID
//!   configuration (`token_endpoint`, `authorization_endpoint`, `issuer`...), which MSAL
//!   reads before its first token; an unknown tenant is a 400 `invalid_tenant` (AADSTS90002).
//!   MSAL checks an authority outside Microsoft's clouds with Microsoft's instance discovery
//!   first, so azure-identity's credentials take `disable_instance_discovery=True`.
//! - `POST /azure/{tenant}/oauth2/v2.0/token` (form: `grant_type=client_credentials`,
//!   `client_id`, `client_secret`, `scope=https://management.azure.com/.default`; the
//!   client may also authenticate with HTTP Basic): `{"token_type": "Bearer", "expires_in",
//!   "ext_expires_in", "access_token"}` (the lifetime is the app's `token_ttl_secs`,
//!   default 3599; the token is JWT-shaped with `aud`, `tid`, `appid`, `exp`, but only the
//!   simulator can read it). Failures are AAD's `{"error", "error_description":
//!   "AADSTS...: ...", "error_codes", "timestamp", "trace_id", "correlation_id",
//!   "error_uri"}`: 401 `invalid_client` (AADSTS7000215, a wrong secret), 400
//!   `unauthorized_client` (AADSTS700016, an unknown client id), 400 `invalid_request`
//!   (AADSTS90002 unknown tenant, AADSTS900144 a missing parameter), 400
//!   `unsupported_grant_type` (AADSTS70003), 400 `invalid_scope` (AADSTS1002012 a scope
//!   without `/.default`, AADSTS500011 a resource other than ARM).
//!
//! # Azure Resource Manager, under `/azure/subscriptions/{sub}`
//! Every request needs `api-version` (else 400 `MissingApiVersionParameter`; a malformed one
//! is 400 `InvalidApiVersionParameter`) and a bearer token from the token endpoint for the
//! subscription's app (else 401 `AuthenticationFailed` / `InvalidAuthenticationToken` /
//! `ExpiredAuthenticationToken` with `WWW-Authenticate`; another app's subscription is a
//! 403 `AuthorizationFailed`, an unknown one 404 `SubscriptionNotFound`). Paths match
//! case-insensitively, as at ARM.
//! - `PUT|GET|HEAD /resourcegroups/{rg}` (`{"location", "tags"?}`; 201, then 200 on a repeat;
//!   no `DELETE`);
//!   an unknown group under any resource path is a 404 `ResourceGroupNotFound`.
//! - `PUT|GET|DELETE /resourceGroups/{rg}/providers/{type}/{name}` for
//!   `Microsoft.Network/publicIPAddresses`, `Microsoft.Network/networkInterfaces`,
//!   `Microsoft.Network/virtualNetworks` (subnets inline; `GET .../subnets/{name}` too),
//!   `Microsoft.Compute/virtualMachines` and `Microsoft.Compute/disks` (made only as a
//!   VM's OS disk; no `PUT`). `PUT` is create-or-update, idempotent by name
//!   (case-insensitive): the first answers 201, a repeat 200 and changes tags (and a VM's
//!   size and delete options) in place, making nothing new; another `location` than the
//!   existing resource's is a 400 `InvalidResourceLocation`, another VM image a 409
//!   `PropertyChangeNotAllowed`. Both answer the resource with `provisioningState`
//!   `Creating` (a new VM) or `Updating`, an `Azure-AsyncOperation` header and
//!   `Retry-After`; the resource goes `Succeeded` once the operation is done (a VM after the
//!   boot delay, network resources after a quarter of it). `DELETE` answers 202 with
//!   `Azure-AsyncOperation`, `Location` and `Retry-After`; the resource is `Deleting`, then
//!   gone (a 404 `ResourceNotFound`); deleting a missing resource is a 204.
//! - Checks as ARM makes them: `location` required (400 `LocationRequired`), names (400
//!   `InvalidResourceName`), tags (strings, at most 50: 400 `InvalidTag`); a NIC's subnet and
//!   public IP must exist (400 `InvalidResourceReference`) and a public IP serves one NIC
//!   (400 `PublicIPAddressInUse`); a VM needs a known `hardwareProfile.vmSize` (400
//!   `InvalidParameter`), a platform image `storageProfile.imageReference` (404
//!   `PlatformImageNotFound` for an unknown one), `osProfile.adminUsername` and an SSH key
//!   or password, base64 `customData`/`userData`, and existing NICs no other VM holds (400
//!   `NotFound`, 400 `NicInUse`).
//! - Deleting: a public IP a NIC references is a 400 `PublicIPAddressCannotBeDeleted`, a
//!   NIC a VM holds a 400 `NicInUse`, a disk a VM holds a 409 `OperationNotAllowed`, a
//!   virtual network with NICs in a subnet a 400 `InUseSubnetCannotBeDeleted`. A VM's
//!   deletion removes its OS disk if `storageProfile.osDisk.deleteOption` is `Delete`, each
//!   NIC whose `networkProfile.networkInterfaces[].properties.deleteOption` is `Delete`, and
//!   with such a NIC the public IPs its `ipConfigurations[].properties.publicIPAddress
//!   .properties.deleteOption` marks `Delete`; the default (`Detach`) leaves them behind,
//!   detached, where `GET /_sim/azure/resources` counts them.
//! - `GET .../virtualMachines/{name}/instanceView` and `?$expand=instanceView`: statuses
//!   `ProvisioningState/creating|succeeded|failed/<code>|deleting` and
//!   `PowerState/starting|running|deallocated|deallocating`.
//! - Lists: `GET /resourceGroups/{rg}/providers/{type}` and `GET /providers/{type}` (the
//!   whole subscription) for each type above, and ARM's generic `GET /resources` and
//!   `GET /resourceGroups/{rg}/resources` with `$filter` (`tagName eq 'k'`, `tagName eq 'k'
//!   and tagValue eq 'v'`, or `resourceType eq 't'`, `name eq 'n'`, `location eq 'l'` joined
//!   by `and`; tag filters stand alone, and, as ARM documents, resources found by a tag
//!   filter come without their tags) and `$top`. Pages hold at most 1000 (lowered by
//!   `POST /_sim/paging`) with `nextLink` (`$skiptoken`).
//! - Operations: `GET /providers/{namespace}/locations/{loc}/operations/{id}` (the
//!   `Azure-AsyncOperation` target): `{"name", "status": "InProgress" | "Succeeded" |
//!   "Failed", "startTime", "endTime"?, "error"?: {"code", "message"}}`;
//!   `GET .../operationResults/{id}` (the `Location` target): 202 while in progress, then 204
//!   (or the operation's error).
//!
//! Errors are ARM's `{"error": {"code", "message", "target"?}}`; every ARM answer carries
//! `x-ms-request-id` and `x-ms-correlation-request-id`. Injected faults (`vendor: "azure"`
//! in `/_sim/faults`) render as ARM does: 429 `TooManyRequests` with `Retry-After`, 5xx
//! `InternalServerError` / `ServiceUnavailable`, 401 `InvalidAuthenticationToken`.
//! Compute-specific failures are armed with `POST /_sim/azure/faults` `{"kind":
//! "quota_exceeded" | "allocation_failed" | "sku_not_available", "count": 1}` and hit the
//! next VM creations: a 409 `OperationNotAllowed` (the regional cores quota), a 409
//! `SkuNotAvailable`, or an operation that ends `Failed` with `AllocationFailed` (the VM
//! then exists, `Failed`, as at Azure, until deleted). `GET` lists them, `DELETE` disarms
//! them.
//!
//! # The simulator's views
//! VMs are the simulator's `azure` servers (`GET /_sim/servers`, `/_sim/stats`; the tags are
//! the labels, `provisioner-idempotency-key` the key, SSH keys from
//! `osProfile.linuxConfiguration.ssh.publicKeys`, user data from `customData` or
//! `userData`). `POST /_sim/servers` with `"vendor": "azure"` makes a running VM with its
//! NIC and public IP (all set to be deleted with it) in the first registered app's
//! subscription, resource group and virtual network (else subscription
//! `00000000-0000-0000-0000-000000000000`, group `sim-rg`, virtual network `sim-vnet`).
//! `GET /_sim/azure/resources` lists every ARM resource (`id`, `type`, `name`,
//! `subscription`, `resource_group`, `location`, `provisioning_state`, `tags`) with `counts`
//! per type, so a kit can count leftover IPs, NICs and disks.
//!
//! Reference: the ARM REST reference (Compute 2024-07-01, Network 2024-05-01, Resources
//! 2021-04-01), "Track asynchronous Azure operations", the Microsoft identity platform's
//! client-credentials flow and its AADSTS error codes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::faults;
use crate::state::{FaultKind, NewServer, SimServer, SimState, Vendor, VendorState};

/// The resource ARM tokens are for (the `scope` is this plus `/.default`).
pub const ARM_RESOURCE: &str = "https://management.azure.com/";
/// ARM's older resource identifier, which ARM accepts too.
const ARM_RESOURCE_LEGACY: &str = "https://management.core.windows.net/";
/// The most a list page holds.
const MAX_PAGE: usize = 1000;
/// The subscription of servers seeded through `/_sim/servers` when no app is registered.
pub const SEED_SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000000";
/// Their resource group then.
pub const SEED_RESOURCE_GROUP: &str = "sim-rg";
/// Their location.
pub const SEED_LOCATION: &str = "westeurope";

/// Locations a resource may be in.
pub const LOCATIONS: &[&str] = &[
    "westeurope",
    "northeurope",
    "germanywestcentral",
    "uksouth",
    "eastus",
    "eastus2",
    "westus2",
    "centralus",
    "southeastasia",
    "japaneast",
];

/// VM sizes: name, vCPUs, memory MB.
pub const VM_SIZES: &[(&str, u32, u32)] = &[
    ("Standard_B1s", 1, 1024),
    ("Standard_B1ms", 1, 2048),
    ("Standard_B2s", 2, 4096),
    ("Standard_B2ms", 2, 8192),
    ("Standard_D2s_v5", 2, 8192),
    ("Standard_D4s_v5", 4, 16384),
    ("Standard_D2as_v5", 2, 8192),
    ("Standard_F2s_v2", 2, 4096),
];

/// Platform images: publisher, offer, sku, the version `latest` resolves to.
pub const IMAGES: &[(&str, &str, &str, &str)] = &[
    ("Canonical", "ubuntu-24_04-lts", "server", "24.04.202411030"),
    (
        "Canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts-gen2",
        "22.04.202411060",
    ),
    ("Debian", "debian-12", "12-gen2", "0.20241111.1928"),
    ("Debian", "debian-11", "11-gen2", "0.20241111.1928"),
    ("RedHat", "RHEL", "9-lvm-gen2", "9.4.2024081915"),
];

/// The kinds of ARM resources served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    PublicIp,
    Nic,
    Vnet,
    Vm,
    Disk,
}

impl Kind {
    const ALL: [Kind; 5] = [Kind::PublicIp, Kind::Nic, Kind::Vnet, Kind::Vm, Kind::Disk];

    fn namespace(self) -> &'static str {
        match self {
            Kind::PublicIp | Kind::Nic | Kind::Vnet => "Microsoft.Network",
            Kind::Vm | Kind::Disk => "Microsoft.Compute",
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Kind::PublicIp => "publicIPAddresses",
            Kind::Nic => "networkInterfaces",
            Kind::Vnet => "virtualNetworks",
            Kind::Vm => "virtualMachines",
            Kind::Disk => "disks",
        }
    }

    fn full_type(self) -> String {
        format!("{}/{}", self.namespace(), self.type_name())
    }

    fn parse(namespace: &str, type_name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            k.namespace().eq_ignore_ascii_case(namespace)
                && k.type_name().eq_ignore_ascii_case(type_name)
        })
    }

    fn is_network(self) -> bool {
        self.namespace() == "Microsoft.Network"
    }
}

/// A registered app (service principal) and what it may act on.
#[derive(Debug, Clone)]
struct App {
    tenant: String,
    secret: String,
    subscription: String,
    token_ttl: Duration,
    resource_group: Option<String>,
}

/// An access token the token endpoint issued.
#[derive(Debug, Clone)]
struct Token {
    client_id: String,
    tenant: String,
    subscription: String,
    expires: DateTime<Utc>,
}

/// A resource group.
#[derive(Debug, Clone)]
struct Group {
    id: String,
    name: String,
    location: String,
    tags: Map<String, Value>,
}

/// An ARM resource as the simulator keeps it.
#[derive(Debug, Clone)]
struct Resource {
    /// Creation order, for stable lists and page tokens.
    seq: u64,
    kind: Kind,
    id: String,
    subscription: String,
    group: String,
    name: String,
    location: String,
    tags: Map<String, Value>,
    sku: Option<Value>,
    zones: Option<Value>,
    /// The stored properties, without `provisioningState` and the references ARM derives.
    properties: Value,
    guid: String,
    created: DateTime<Utc>,
    /// The running PUT operation's end.
    busy_until: DateTime<Utc>,
    /// The running operation is the resource's creation.
    creating: bool,
    /// The error the creation ended with (`AllocationFailed`).
    failure: Option<(String, String)>,
    /// When a deletion completes, once deleted.
    deleting_until: Option<DateTime<Utc>>,
    /// The simulator server of a VM.
    server_id: Option<u64>,
    /// A public IP's address (shown when allocated).
    address: Option<String>,
}

/// An asynchronous operation.
#[derive(Debug, Clone)]
struct Operation {
    namespace: &'static str,
    location: String,
    subscription: String,
    started: DateTime<Utc>,
    finishes: DateTime<Utc>,
    failure: Option<(String, String)>,
}

/// A Compute-specific failure armed through `POST /_sim/azure/faults`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComputeFault {
    /// The next VM creation is a 409 `OperationNotAllowed` (cores quota).
    QuotaExceeded,
    /// The next VM creation's operation ends `Failed` with `AllocationFailed`.
    AllocationFailed,
    /// The next VM creation is a 409 `SkuNotAvailable`.
    SkuNotAvailable,
}

/// What Azure's routes hold: the simulator, and Azure's own [`Store`] (made once in
/// [`crate::app`], shared by [`router`], [`control_router`] and the simulator's
/// `POST /_sim/servers`).
pub type AzureState = VendorState<Store>;

/// Azure's own state: apps, tokens, resource groups, resources, operations. The VMs'
/// servers are the shared [`SimServer`]s.
#[derive(Debug, Default)]
pub struct Store {
    /// By client id, in registration order of ids.
    apps: BTreeMap<String, App>,
    /// Client ids in registration order.
    app_order: Vec<String>,
    tokens: HashMap<String, Token>,
    /// By `sub/rg`, lowercase.
    groups: BTreeMap<String, Group>,
    /// By id, lowercase.
    resources: BTreeMap<String, Resource>,
    operations: HashMap<String, Operation>,
    faults: Vec<ComputeFault>,
    next_seq: u64,
    next_address: u64,
}

impl faults::ArmedVendorFaults for Store {
    type Fault = ComputeFault;

    fn armed_faults(&mut self) -> &mut Vec<ComputeFault> {
        &mut self.faults
    }
}

fn group_key(subscription: &str, group: &str) -> String {
    format!("{}/{}", subscription.to_lowercase(), group.to_lowercase())
}

/// Whose token a request carries.
#[derive(Debug, Clone)]
struct Caller {
    subscription: String,
    client_id: String,
}

// ---------------------------------------------------------------------------------------
// Routers

/// `/azure/...`: the identity platform and ARM.
pub fn router(state: AzureState) -> Router<Arc<SimState>> {
    let arm = Router::new()
        .route("/subscriptions/{*rest}", any(arm))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(middleware::map_response(request_ids));
    let api = Router::new()
        .merge(arm)
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        );
    faults::with_faults(api, state.sim(), Vendor::Azure, render_fault).with_state(state)
}

/// `/_sim/azure/...`: app registrations, Compute-specific faults, the resource census.
pub fn control_router(state: AzureState) -> Router<Arc<SimState>> {
    Router::new()
        .route("/apps", post(register_app))
        .route("/resources", get(census))
        .route("/faults", faults::vendor_fault_routes())
        .with_state(state)
}

async fn request_ids(mut response: Response) -> Response {
    for name in ["x-ms-request-id", "x-ms-correlation-request-id"] {
        if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error answer on its way up from a check (boxed: a response is large).
struct Refusal(Box<Response>);

impl From<Response> for Refusal {
    fn from(response: Response) -> Self {
        Refusal(Box::new(response))
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// A NIC's IP configuration: its name, subnet id, and public IP id with whether the IP goes
/// with a VM (ids lowercase).
type NicConfig = (String, Option<String>, Option<(String, bool)>);

/// ARM's error: `{"error": {"code", "message"}}`.
fn arm_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// ARM's error with the parameter it is about.
fn arm_error_at(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    target: &str,
) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into(), "target": target}})),
    )
        .into_response()
}

fn bad_request(code: &str, message: impl Into<String>) -> Response {
    arm_error(StatusCode::BAD_REQUEST, code, message)
}

fn unauthenticated(code: &str, message: &str) -> Response {
    let mut response = arm_error(StatusCode::UNAUTHORIZED, code, message);
    let challenge = format!(
        r#"Bearer authorization_uri="https://login.microsoftonline.com/common", error="invalid_token", error_description="{}""#,
        message.replace('"', "'")
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

fn render_fault(kind: &FaultKind) -> Response {
    let status = faults::status_of(kind);
    match kind {
        FaultKind::RateLimit { retry_after_secs } => faults::retry_after(
            arm_error(
                status,
                "TooManyRequests",
                format!(
                    "The request is being throttled as the limit has been reached for operation \
                     type - Read_ObservationWindow_00:05:00. For more information, see - \
                     https://aka.ms/armthrottling. Retry after {retry_after_secs} seconds."
                ),
            ),
            *retry_after_secs,
        ),
        FaultKind::Unauthorized => {
            unauthenticated("InvalidAuthenticationToken", "The access token is invalid.")
        }
        FaultKind::NoCapacity => arm_error(
            StatusCode::CONFLICT,
            "SkuNotAvailable",
            "The requested VM size for resource 'Following SKUs have failed for Capacity \
             Restrictions' is currently not available in this location. Please try another size \
             or deploy to a different location or different zone.",
        ),
        FaultKind::ServerError { status: 503 } => arm_error(
            status,
            "ServiceUnavailable",
            "The server is currently unable to handle the request. Please retry your request.",
        ),
        _ => arm_error(
            status,
            "InternalServerError",
            format!(
                "Encountered internal server error. Diagnostic information: timestamp '{}', \
                 tracking id '{}'.",
                Utc::now().format("%Y%m%dT%H%M%SZ"),
                uuid::Uuid::new_v4()
            ),
        ),
    }
}

/// An error of the identity platform's token endpoint.
fn aad_error(status: StatusCode, error: &str, code: u32, message: &str) -> Response {
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let timestamp = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    (
        status,
        Json(json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message} Trace ID: {trace} Correlation ID: {correlation} \
                 Timestamp: {timestamp}"
            ),
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        })),
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// App registrations and the identity platform

/// The body of `POST /_sim/azure/apps`: an app registration (a service principal with a
/// client secret) the identity platform will know, with the subscription it may act on and,
/// optionally, the resource group, virtual network and subnet made for it.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppRegistration {
    /// The directory (tenant) it lives in.
    pub tenant_id: String,
    /// The application (client) id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: String,
    /// The one subscription it acts on.
    pub subscription_id: String,
    /// Its access tokens' lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl_secs: Option<u64>,
    /// A resource group made with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_group: Option<String>,
    /// Where that group and its network are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A virtual network made in the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_network: Option<String>,
    /// A subnet made in that network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

async fn register_app(
    State(state): State<AzureState>,
    body: Result<Json<AppRegistration>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return crate::conventions::unprocessable(rejection.body_text()),
    };
    if [
        &request.tenant_id,
        &request.client_id,
        &request.client_secret,
        &request.subscription_id,
    ]
    .iter()
    .any(|v| v.is_empty())
    {
        return crate::conventions::unprocessable(
            "tenant_id, client_id, client_secret and subscription_id must not be empty",
        );
    }
    if request.virtual_network.is_some() != request.subnet.is_some() {
        return crate::conventions::unprocessable("virtual_network and subnet go together");
    }
    if request.virtual_network.is_some() && request.resource_group.is_none() {
        return crate::conventions::unprocessable("a virtual_network needs a resource_group");
    }
    let location = request
        .location
        .clone()
        .unwrap_or_else(|| SEED_LOCATION.into());
    if !LOCATIONS.contains(&location.as_str()) {
        return crate::conventions::unprocessable(format!(
            "unknown location {location}; known: {LOCATIONS:?}"
        ));
    }
    let now = Utc::now();
    let mut store = state.store();
    let subscription = request.subscription_id.clone();
    if let Some(group) = &request.resource_group {
        ensure_group(&mut store, &subscription, group, &location);
        if let (Some(vnet), Some(subnet)) = (&request.virtual_network, &request.subnet) {
            let id = resource_id(&subscription, group, Kind::Vnet, vnet);
            if !store.resources.contains_key(&id.to_lowercase()) {
                let properties = json!({
                    "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                    "subnets": [{"name": subnet, "properties": {"addressPrefix": "10.0.0.0/24"}}],
                });
                insert_resource(
                    &mut store,
                    Kind::Vnet,
                    &subscription,
                    group,
                    vnet,
                    &location,
                    Map::new(),
                    properties,
                    now,
                );
            }
        }
    }
    store.apps.insert(
        request.client_id.clone(),
        App {
            tenant: request.tenant_id,
            secret: request.client_secret,
            subscription,
            token_ttl: Duration::from_secs(request.token_ttl_secs.unwrap_or(3599)),
            resource_group: request.resource_group,
        },
    );
    if !store.app_order.contains(&request.client_id) {
        store.app_order.push(request.client_id.clone());
    }
    (
        StatusCode::CREATED,
        Json(json!({"client_id": request.client_id})),
    )
        .into_response()
}

fn ensure_group(store: &mut Store, subscription: &str, name: &str, location: &str) {
    store
        .groups
        .entry(group_key(subscription, name))
        .or_insert_with(|| Group {
            id: format!("/subscriptions/{subscription}/resourceGroups/{name}"),
            name: name.into(),
            location: location.into(),
            tags: Map::new(),
        });
}

/// The scheme and host the client reached, and the `/azure` prefix.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    format!("{scheme}://{host}/azure")
}

fn tenant_known(store: &Store, tenant: &str) -> bool {
    store
        .apps
        .values()
        .any(|app| app.tenant.eq_ignore_ascii_case(tenant))
}

async fn openid_configuration(
    State(state): State<AzureState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !tenant_known(&state.store(), &tenant) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud. Check with your subscription \
                 administrator, this may happen if there are no active subscriptions for the \
                 tenant."
            ),
        );
    }
    let base = format!("{}/{tenant}", base_url(&headers));
    Json(json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
            "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
            "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }))
    .into_response()
}

/// The client id and secret of an HTTP Basic `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("v={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((unescape(id), unescape(secret)))
}

/// `POST /azure/{tenant}/oauth2/v2.0/token`: the client-credentials grant.
async fn token(
    State(state): State<AzureState>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut store = state.store();
    let granted = client_credentials(&store, &tenant, &form, &headers).and_then(|credentials| {
        let app = authenticated_app(&store, &tenant, &credentials)?;
        check_arm_scope(&tenant, &credentials.scope)?;
        Ok((credentials.client_id, app))
    });
    match granted {
        Ok((client_id, app)) => issue_token(&mut store, &tenant, client_id, &app),
        Err(refusal) => refusal.into_response(),
    }
}

/// What a client-credentials token request names: the app, its secret (in the form or the
/// Basic credentials) and the scope.
struct ClientCredentials {
    client_id: String,
    secret: Option<String>,
    scope: String,
}

/// A token request's form read as the identity platform reads it: a known tenant, the
/// client-credentials grant, a client id and a scope.
fn client_credentials(
    store: &Store,
    tenant: &str,
    form: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<ClientCredentials, Refusal> {
    let missing = |name: &str| -> Refusal {
        aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            &format!("The request body must contain the following parameter: '{name}'."),
        )
        .into()
    };
    if !tenant_known(store, tenant) {
        return Err(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud."
            ),
        )
        .into());
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            )
            .into());
        }
        None => return Err(missing("grant_type")),
    }
    let (client_id, secret) = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), secret) => (id.clone(), secret.cloned()),
        (None, _) => match basic_credentials(headers) {
            Some((id, secret)) => (id, Some(secret)),
            None => return Err(missing("client_id")),
        },
    };
    let secret = secret.or_else(|| basic_credentials(headers).map(|(_, s)| s));
    let Some(scope) = form.get("scope") else {
        return Err(missing("scope"));
    };
    Ok(ClientCredentials {
        client_id,
        secret,
        scope: scope.clone(),
    })
}

/// The app the credentials name, registered in `tenant`, when its secret matches.
fn authenticated_app(
    store: &Store,
    tenant: &str,
    credentials: &ClientCredentials,
) -> Result<App, Refusal> {
    let client_id = &credentials.client_id;
    let Some(app) = store
        .apps
        .get(client_id)
        .filter(|app| app.tenant.eq_ignore_ascii_case(tenant))
        .cloned()
    else {
        return Err(aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{tenant}'. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You may \
                 have sent your authentication request to the wrong tenant."
            ),
        )
        .into());
    };
    let Some(secret) = &credentials.secret else {
        return Err(aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        )
        .into());
    };
    if *secret != app.secret {
        return Err(aad_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        )
        .into());
    }
    Ok(app)
}

/// The scope must be one resource's `/.default`, and that resource Resource Manager.
fn check_arm_scope(tenant: &str, scope: &str) -> Result<(), Refusal> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let resource = match scopes.as_slice() {
        [one] => one.strip_suffix(".default"),
        _ => None,
    };
    let Some(resource) = resource else {
        return Err(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows \
                 must have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        )
        .into());
    };
    let is_arm = [ARM_RESOURCE, ARM_RESOURCE_LEGACY]
        .iter()
        .any(|arm| resource.trim_end_matches('/') == arm.trim_end_matches('/'));
    if !is_arm {
        return Err(aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {tenant}. This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant."
            ),
        )
        .into());
    }
    Ok(())
}

/// A fresh JWT-shaped access token for the app, stored (expired ones dropped) and answered
/// as the identity platform answers.
fn issue_token(store: &mut Store, tenant: &str, client_id: String, app: &App) -> Response {
    let now = Utc::now();
    let expires = now + chrono::Duration::from_std(app.token_ttl).unwrap_or_default();
    let header = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT","alg":"RS256","kid":"sim"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({
            "aud": ARM_RESOURCE,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": now.timestamp(),
            "nbf": now.timestamp(),
            "exp": expires.timestamp(),
            "appid": client_id,
            "tid": tenant,
            "oid": client_id,
            "sub": client_id,
            "idtyp": "app",
            "ver": "1.0",
        })
        .to_string(),
    );
    let signature = URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    let access_token = format!("{header}.{claims}.{signature}");
    store.tokens.retain(|_, t| t.expires > now);
    store.tokens.insert(
        access_token.clone(),
        Token {
            client_id,
            tenant: app.tenant.clone(),
            subscription: app.subscription.clone(),
            expires,
        },
    );
    let ttl = app.token_ttl.as_secs();
    Json(json!({
        "token_type": "Bearer",
        "expires_in": ttl,
        "ext_expires_in": ttl,
        "access_token": access_token,
    }))
    .into_response()
}

/// Resolves the bearer token to its app; the handler gets the [`Caller`].
async fn authenticate(
    State(state): State<AzureState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return unauthenticated(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        );
    };
    let Some(token) = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return unauthenticated(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format.",
        );
    };
    let found = state.store().tokens.get(token).cloned();
    let Some(found) = found else {
        return unauthenticated("InvalidAuthenticationToken", "The access token is invalid.");
    };
    let now = Utc::now();
    if found.expires <= now {
        return unauthenticated(
            "ExpiredAuthenticationToken",
            &format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                found.expires.format("%-m/%-d/%Y %-I:%M:%S %p"),
                now.format("%-m/%-d/%Y %-I:%M:%S %p")
            ),
        );
    }
    let _ = &found.tenant;
    request.extensions_mut().insert(Caller {
        subscription: found.subscription,
        client_id: found.client_id,
    });
    next.run(request).await
}

// ---------------------------------------------------------------------------------------
// Compute-specific faults and the census

/// `GET /_sim/azure/resources`: every ARM resource, and how many of each type.
/// `GET /_sim/azure/resources`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Census {
    /// Every resource, oldest first.
    pub resources: Vec<CensusEntry>,
    /// How many resources of each type (every type, 0 included).
    pub counts: BTreeMap<String, u64>,
}

/// One resource in `GET /_sim/azure/resources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CensusEntry {
    /// Its resource id.
    pub id: String,
    /// Its type (`Microsoft.Network/publicIPAddresses`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its subscription.
    pub subscription: String,
    /// Its resource group.
    pub resource_group: String,
    /// Its location.
    pub location: String,
    /// `Creating`, `Updating`, `Succeeded`, `Failed`, `Deleting`...
    pub provisioning_state: String,
    /// Its tags.
    pub tags: Map<String, Value>,
}

async fn census(State(state): State<AzureState>) -> Json<Value> {
    sweep(&state);
    let now = Utc::now();
    let store = state.store();
    let mut counts: BTreeMap<String, u64> = Kind::ALL
        .into_iter()
        .map(|kind| (kind.full_type(), 0))
        .collect();
    let mut resources: Vec<&Resource> = store.resources.values().collect();
    resources.sort_by_key(|r| r.seq);
    let listed: Vec<CensusEntry> = resources
        .into_iter()
        .map(|r| {
            *counts.entry(r.kind.full_type()).or_default() += 1;
            CensusEntry {
                id: r.id.clone(),
                kind: r.kind.full_type(),
                name: r.name.clone(),
                subscription: r.subscription.clone(),
                resource_group: r.group.clone(),
                location: r.location.clone(),
                provisioning_state: provisioning_state(r, now).to_string(),
                tags: r.tags.clone(),
            }
        })
        .collect();
    Json(json!(Census {
        resources: listed,
        counts,
    }))
}

// ---------------------------------------------------------------------------------------
// Resources: records, states, rendering

fn resource_id(subscription: &str, group: &str, kind: Kind, name: &str) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{group}/providers/{}/{}/{name}",
        kind.namespace(),
        kind.type_name()
    )
}

#[allow(clippy::too_many_arguments)]
fn insert_resource(
    store: &mut Store,
    kind: Kind,
    subscription: &str,
    group: &str,
    name: &str,
    location: &str,
    tags: Map<String, Value>,
    properties: Value,
    busy_until: DateTime<Utc>,
) -> String {
    store.next_seq += 1;
    let id = resource_id(subscription, group, kind, name);
    let resource = Resource {
        seq: store.next_seq,
        kind,
        id: id.clone(),
        subscription: subscription.into(),
        group: group.into(),
        name: name.into(),
        location: location.into(),
        tags,
        sku: None,
        zones: None,
        properties,
        guid: uuid::Uuid::new_v4().to_string(),
        created: Utc::now(),
        busy_until,
        creating: true,
        failure: None,
        deleting_until: None,
        server_id: None,
        address: None,
    };
    store.resources.insert(id.to_lowercase(), resource);
    id
}

fn provisioning_state(resource: &Resource, now: DateTime<Utc>) -> &'static str {
    if resource.deleting_until.is_some() {
        "Deleting"
    } else if now < resource.busy_until {
        if resource.kind == Kind::Vm && resource.creating {
            "Creating"
        } else {
            "Updating"
        }
    } else if resource.failure.is_some() {
        "Failed"
    } else {
        "Succeeded"
    }
}

fn lower(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_lowercase)
}

/// The ids (lowercase) of a VM's NICs, with their delete options.
fn vm_nics(vm: &Resource) -> Vec<(String, bool)> {
    vm.properties
        .pointer("/networkProfile/networkInterfaces")
        .and_then(Value::as_array)
        .map(|nics| {
            nics.iter()
                .filter_map(|nic| {
                    let id = lower(nic.get("id"))?;
                    let delete = nic
                        .pointer("/properties/deleteOption")
                        .and_then(Value::as_str)
                        .is_some_and(|o| o.eq_ignore_ascii_case("Delete"));
                    Some((id, delete))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A NIC's IP configurations: (name, subnet id, public IP id and whether it goes with a VM).
fn nic_configs(nic: &Resource) -> Vec<NicConfig> {
    nic.properties
        .get("ipConfigurations")
        .and_then(Value::as_array)
        .map(|configs| {
            configs
                .iter()
                .map(|config| {
                    let name = config
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let subnet = lower(config.pointer("/properties/subnet/id"));
                    let public =
                        lower(config.pointer("/properties/publicIPAddress/id")).map(|id| {
                            let delete = config
                                .pointer("/properties/publicIPAddress/properties/deleteOption")
                                .and_then(Value::as_str)
                                .is_some_and(|o| o.eq_ignore_ascii_case("Delete"));
                            (id, delete)
                        });
                    (name, subnet, public)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The VM holding the NIC `nic_id` (lowercase), if any.
fn holder_of_nic<'a>(store: &'a Store, nic_id: &str) -> Option<&'a Resource> {
    store
        .resources
        .values()
        .find(|r| r.kind == Kind::Vm && vm_nics(r).iter().any(|(id, _)| id == nic_id))
}

/// The NIC (and its IP configuration's name) using the public IP `ip_id` (lowercase).
fn user_of_ip<'a>(store: &'a Store, ip_id: &str) -> Option<(&'a Resource, String)> {
    store.resources.values().find_map(|r| {
        if r.kind != Kind::Nic {
            return None;
        }
        nic_configs(r)
            .into_iter()
            .find(|(_, _, public)| public.as_ref().is_some_and(|(id, _)| id == ip_id))
            .map(|(name, ..)| (r, name))
    })
}

fn os_disk_id(vm: &Resource) -> Option<String> {
    lower(
        vm.properties
            .pointer("/storageProfile/osDisk/managedDisk/id"),
    )
}

fn is_booted(resource: &Resource, now: DateTime<Utc>) -> bool {
    now >= resource.busy_until && resource.failure.is_none()
}

fn render(store: &Store, resource: &Resource, now: DateTime<Utc>) -> Value {
    let state = provisioning_state(resource, now);
    let mut properties = resource.properties.clone();
    let id_lower = resource.id.to_lowercase();
    match resource.kind {
        Kind::PublicIp => {
            properties["resourceGuid"] = json!(resource.guid);
            let user = user_of_ip(store, &id_lower);
            if let Some((nic, config)) = &user {
                properties["ipConfiguration"] =
                    json!({"id": format!("{}/ipConfigurations/{config}", nic.id)});
            }
            let static_ip = properties["publicIPAllocationMethod"] == "Static";
            let running = user.as_ref().is_some_and(|(nic, _)| {
                holder_of_nic(store, &nic.id.to_lowercase()).is_some_and(|vm| is_booted(vm, now))
            });
            if let Some(address) = &resource.address
                && ((static_ip && now >= resource.busy_until) || running)
            {
                properties["ipAddress"] = json!(address);
            }
        }
        Kind::Nic => {
            properties["resourceGuid"] = json!(resource.guid);
            if let Some(configs) = properties
                .get_mut("ipConfigurations")
                .and_then(Value::as_array_mut)
            {
                for config in configs {
                    let name = config["name"].as_str().unwrap_or_default().to_string();
                    config["id"] = json!(format!("{}/ipConfigurations/{name}", resource.id));
                    config["etag"] = json!(format!("W/\"{}\"", resource.guid));
                    config["type"] = json!("Microsoft.Network/networkInterfaces/ipConfigurations");
                    config["properties"]["provisioningState"] = json!(state);
                }
            }
            if let Some(vm) = holder_of_nic(store, &id_lower) {
                properties["virtualMachine"] = json!({"id": vm.id});
                properties["primary"] = json!(true);
                if is_booted(vm, now) {
                    properties["macAddress"] = json!(format!(
                        "00-0D-3A-{:02X}-{:02X}-{:02X}",
                        (resource.seq >> 16) & 0xff,
                        (resource.seq >> 8) & 0xff,
                        resource.seq & 0xff
                    ));
                }
            }
        }
        Kind::Vnet => {
            properties["resourceGuid"] = json!(resource.guid);
            if let Some(subnets) = properties.get_mut("subnets").and_then(Value::as_array_mut) {
                for subnet in subnets {
                    let name = subnet["name"].as_str().unwrap_or_default().to_string();
                    let subnet_id = format!("{}/subnets/{name}", resource.id);
                    subnet["id"] = json!(subnet_id);
                    subnet["etag"] = json!(format!("W/\"{}\"", resource.guid));
                    subnet["type"] = json!("Microsoft.Network/virtualNetworks/subnets");
                    subnet["properties"]["provisioningState"] = json!(state);
                    let users = nics_in_subnet(store, &subnet_id.to_lowercase());
                    if !users.is_empty() {
                        subnet["properties"]["ipConfigurations"] =
                            users.into_iter().map(|id| json!({"id": id})).collect();
                    }
                }
            }
        }
        Kind::Vm => {
            properties["vmId"] = json!(resource.guid);
            properties["timeCreated"] = json!(timestamp(resource.created));
        }
        Kind::Disk => {
            let holder = store
                .resources
                .values()
                .find(|r| r.kind == Kind::Vm && os_disk_id(r).as_deref() == Some(&id_lower));
            properties["diskState"] = json!(if holder.is_some() {
                "Attached"
            } else {
                "Unattached"
            });
            properties["uniqueId"] = json!(resource.guid);
            properties["timeCreated"] = json!(timestamp(resource.created));
        }
    }
    properties["provisioningState"] = json!(state);
    let mut rendered = json!({
        "name": resource.name,
        "id": resource.id,
        "type": resource.kind.full_type(),
        "location": resource.location,
    });
    if !resource.tags.is_empty() {
        rendered["tags"] = Value::Object(resource.tags.clone());
    }
    if resource.kind.is_network() {
        rendered["etag"] = json!(format!("W/\"{}\"", resource.guid));
    }
    if let Some(sku) = &resource.sku {
        rendered["sku"] = sku.clone();
    }
    if let Some(zones) = &resource.zones {
        rendered["zones"] = zones.clone();
    }
    if resource.kind == Kind::Disk
        && let Some(vm) = store
            .resources
            .values()
            .find(|r| r.kind == Kind::Vm && os_disk_id(r).as_deref() == Some(&id_lower))
    {
        rendered["managedBy"] = json!(vm.id);
    }
    rendered["properties"] = properties;
    rendered
}

/// The ids of the NIC IP configurations in the subnet `subnet_id` (lowercase).
fn nics_in_subnet(store: &Store, subnet_id: &str) -> Vec<String> {
    store
        .resources
        .values()
        .filter(|r| r.kind == Kind::Nic)
        .flat_map(|nic| {
            nic_configs(nic)
                .into_iter()
                .filter(|(_, subnet, _)| subnet.as_deref() == Some(subnet_id))
                .map(|(name, ..)| format!("{}/ipConfigurations/{name}", nic.id))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A VM's instance view.
fn instance_view(resource: &Resource, now: DateTime<Utc>) -> Value {
    let state = provisioning_state(resource, now);
    let status = |code: &str, display: &str, level: &str| json!({"code": code, "level": level, "displayStatus": display});
    let mut provisioning = match state {
        "Creating" => status("ProvisioningState/creating", "Creating", "Info"),
        "Updating" => status("ProvisioningState/updating", "Updating", "Info"),
        "Deleting" => status("ProvisioningState/deleting", "Deleting", "Info"),
        "Failed" => {
            let (code, message) = resource.failure.clone().unwrap_or_default();
            let mut failed = status(
                &format!("ProvisioningState/failed/{code}"),
                "Provisioning failed",
                "Error",
            );
            failed["message"] = json!(message);
            failed
        }
        _ => status(
            "ProvisioningState/succeeded",
            "Provisioning succeeded",
            "Info",
        ),
    };
    if state == "Succeeded" || state == "Failed" {
        provisioning["time"] = json!(timestamp(resource.busy_until));
    }
    let power = match state {
        "Creating" => status("PowerState/starting", "VM starting", "Info"),
        "Deleting" => status("PowerState/deallocating", "VM deallocating", "Info"),
        "Failed" => status("PowerState/deallocated", "VM deallocated", "Info"),
        _ => status("PowerState/running", "VM running", "Info"),
    };
    let disk_name = resource
        .properties
        .pointer("/storageProfile/osDisk/name")
        .cloned()
        .unwrap_or(Value::Null);
    let mut view = json!({
        "computerName": resource.properties.pointer("/osProfile/computerName"),
        "hyperVGeneration": "V2",
        "disks": [{"name": disk_name, "statuses": [provisioning.clone()]}],
        "statuses": [provisioning, power],
    });
    if state == "Succeeded" || state == "Updating" {
        let (publisher, offer) = (
            resource
                .properties
                .pointer("/storageProfile/imageReference/publisher")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            resource
                .properties
                .pointer("/storageProfile/imageReference/offer")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        view["osName"] = json!(publisher.to_lowercase());
        view["osVersion"] = json!(offer);
        view["vmAgent"] = json!({
            "vmAgentVersion": "2.12.0.2",
            "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info",
                "displayStatus": "Ready", "message": "Guest Agent is running",
                "time": timestamp(now)}],
        });
    }
    view
}

/// Removes what finished deleting, with what goes with it.
fn sweep(state: &AzureState) {
    let now = Utc::now();
    let mut store = state.store();
    let done: Vec<String> = store
        .resources
        .iter()
        .filter(|(_, r)| r.deleting_until.is_some_and(|at| at <= now))
        .map(|(id, _)| id.clone())
        .collect();
    let mut servers = Vec::new();
    for id in done {
        let Some(resource) = store.resources.remove(&id) else {
            continue;
        };
        if resource.kind != Kind::Vm {
            continue;
        }
        servers.extend(resource.server_id);
        let disk_goes = resource
            .properties
            .pointer("/storageProfile/osDisk/deleteOption")
            .and_then(Value::as_str)
            .is_some_and(|o| o.eq_ignore_ascii_case("Delete"));
        if disk_goes && let Some(disk) = os_disk_id(&resource) {
            store.resources.remove(&disk);
        }
        for (nic_id, nic_goes) in vm_nics(&resource) {
            if !nic_goes {
                continue;
            }
            if let Some(nic) = store.resources.remove(&nic_id) {
                for (_, _, public) in nic_configs(&nic) {
                    if let Some((ip_id, true)) = public {
                        store.resources.remove(&ip_id);
                    }
                }
            }
        }
    }
    drop(store);
    if !servers.is_empty() {
        state.with_cloud(Vendor::Azure, |cloud| {
            for id in servers {
                cloud.servers.remove(&id);
            }
        });
    }
}

// ---------------------------------------------------------------------------------------
// ARM requests

/// What one ARM request carries, parsed.
struct ArmRequest {
    method: Method,
    /// The path below `/azure`, as the client wrote it.
    path: String,
    query: Vec<(String, String)>,
    api_version: String,
    base: String,
    body: Bytes,
}

impl ArmRequest {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn valid_api_version(version: &str) -> bool {
    let date = version.strip_suffix("-preview").unwrap_or(version);
    date.len() == 10 && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
}

/// `/azure/subscriptions/{*rest}`: every ARM request, dispatched on its path segments.
async fn arm(
    State(state): State<AzureState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(rest): Path<String>,
    OriginalUri(original): OriginalUri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: Vec<(String, String)> = original
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let Some(api_version) = query
        .iter()
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v.clone())
    else {
        return bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        );
    };
    if !valid_api_version(&api_version) {
        return bad_request(
            "InvalidApiVersionParameter",
            format!(
                "The api-version '{api_version}' is invalid. The supported versions are \
                 dates in the form 'YYYY-MM-DD', optionally with '-preview'."
            ),
        );
    }
    let path = original
        .path()
        .strip_prefix("/azure")
        .unwrap_or(original.path())
        .to_string();
    let request = ArmRequest {
        method,
        path,
        query,
        api_version,
        base: base_url(&headers),
        body,
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some(subscription) = segments.first().copied() else {
        return arm_error(StatusCode::NOT_FOUND, "NotFound", "No such resource.");
    };
    if !subscription.eq_ignore_ascii_case(&caller.subscription) {
        let known = state
            .store()
            .apps
            .values()
            .any(|app| app.subscription.eq_ignore_ascii_case(subscription));
        return if known {
            arm_error(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                format!(
                    "The client '{0}' with object id '{0}' does not have authorization to \
                     perform action over scope '/subscriptions/{subscription}' or the scope is \
                     invalid. If access was recently granted, please refresh your credentials.",
                    caller.client_id
                ),
            )
        } else {
            arm_error(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{subscription}' could not be found."),
            )
        };
    }
    let subscription = caller.subscription.clone();
    sweep(&state);
    let lowered: Vec<String> = segments.iter().map(|s| s.to_lowercase()).collect();
    let lowered: Vec<&str> = lowered.iter().map(String::as_str).collect();
    let get = request.method == Method::GET;
    match lowered.as_slice() {
        [_, "resources"] if get => list_generic(&state, &request, &subscription, None),
        [_, "providers", namespace, "locations", _, "operations", id] if get => {
            operation_status(&state, &request, namespace, id, false)
        }
        [
            _,
            "providers",
            namespace,
            "locations",
            _,
            "operationresults",
            id,
        ] if get => operation_status(&state, &request, namespace, id, true),
        [_, "providers", namespace, type_name] if get => match Kind::parse(namespace, type_name) {
            Some(kind) => list_kind(&state, &request, &subscription, None, kind),
            None => unknown_type(&segments[2..4], &request.api_version),
        },
        [_, "resourcegroups", _] => resource_group(&state, &request, &subscription, segments[2]),
        [_, "resourcegroups", _, rest @ ..] => {
            let group = match find_group(&state, &subscription, segments[2]) {
                Ok(group) => group,
                Err(refusal) => return refusal.into_response(),
            };
            match rest {
                ["resources"] if get => list_generic(&state, &request, &subscription, Some(&group)),
                ["providers", namespace, type_name, tail @ ..] => {
                    let Some(kind) = Kind::parse(namespace, type_name) else {
                        return unknown_type(&segments[4..6], &request.api_version);
                    };
                    let names = &segments[6..];
                    match (tail, kind) {
                        ([], _) if get => {
                            list_kind(&state, &request, &subscription, Some(&group), kind)
                        }
                        ([_], _) => {
                            resource(&state, &request, &subscription, &group, kind, names[0])
                        }
                        ([_, "instanceview"], Kind::Vm) if get => {
                            vm_instance_view(&state, &subscription, &group, names[0])
                        }
                        ([_, "subnets", _], Kind::Vnet) if get => {
                            get_subnet(&state, &subscription, &group, names[0], names[2])
                        }
                        _ => not_allowed(&request),
                    }
                }
                _ => not_allowed(&request),
            }
        }
        _ => not_allowed(&request),
    }
}

fn not_allowed(request: &ArmRequest) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!(
            "The {} request to '{}' matches nothing this simulator serves.",
            request.method, request.path
        ),
    )
}

fn unknown_type(parts: &[&str], api_version: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "InvalidResourceType",
        format!(
            "The resource type '{}' could not be found in the namespace '{}' for api version \
             '{api_version}'.",
            parts.get(1).unwrap_or(&""),
            parts.first().unwrap_or(&"")
        ),
    )
}

fn group_not_found(name: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceGroupNotFound",
        format!("Resource group '{name}' could not be found."),
    )
}

/// The resource group's name as it was created.
fn find_group(state: &AzureState, subscription: &str, name: &str) -> Result<String, Refusal> {
    state
        .store()
        .groups
        .get(&group_key(subscription, name))
        .map(|g| g.name.clone())
        .ok_or_else(|| group_not_found(name).into())
}

fn render_group(group: &Group) -> Value {
    let mut rendered = json!({
        "id": group.id,
        "name": group.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": group.location,
        "properties": {"provisioningState": "Succeeded"},
    });
    if !group.tags.is_empty() {
        rendered["tags"] = Value::Object(group.tags.clone());
    }
    rendered
}

fn parse_object(body: &Bytes) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad_request(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: the body is not a \
             JSON object.",
        )
        .into()),
        Err(err) => Err(bad_request(
            "InvalidRequestContent",
            format!("The request content was invalid and could not be deserialized: '{err}'."),
        )
        .into()),
    }
}

fn parse_tags(body: &Map<String, Value>) -> Result<Map<String, Value>, Refusal> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(tags)) => {
            if tags.len() > 50 {
                return Err(bad_request(
                    "InvalidTag",
                    format!("The tags count '{}' exceeds maximum '50'.", tags.len()),
                )
                .into());
            }
            for (name, value) in tags {
                let Some(value) = value.as_str() else {
                    return Err(bad_request(
                        "InvalidRequestContent",
                        format!(
                            "The request content was invalid and could not be deserialized: \
                             the value of tag '{name}' is not a string."
                        ),
                    )
                    .into());
                };
                if name.is_empty()
                    || name.len() > 512
                    || value.len() > 256
                    || name.contains(['<', '>', '%', '&', '\\', '?', '/'])
                {
                    return Err(bad_request(
                        "InvalidTag",
                        format!(
                            "The tag name '{name}' or its value is invalid: names are at most 512 \
                             characters without '<>%&\\?/', values at most 256."
                        ),
                    )
                    .into());
                }
            }
            Ok(tags.clone())
        }
        Some(_) => Err(bad_request(
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: 'tags' is not an \
             object.",
        )
        .into()),
    }
}

fn parse_location(body: &Map<String, Value>) -> Result<String, Refusal> {
    let Some(location) = body.get("location").and_then(Value::as_str) else {
        return Err(bad_request(
            "LocationRequired",
            "The location property is required for this definition.",
        )
        .into());
    };
    let normalized = location.to_lowercase().replace(' ', "");
    if LOCATIONS.contains(&normalized.as_str()) {
        Ok(normalized)
    } else {
        Err(bad_request(
            "LocationNotAvailableForResourceType",
            format!(
                "The provided location '{location}' is not available for resource type. List of \
                 available regions is '{}'.",
                LOCATIONS.join(",")
            ),
        )
        .into())
    }
}

/// `PUT|GET|HEAD /subscriptions/{sub}/resourcegroups/{rg}`.
fn resource_group(
    state: &AzureState,
    request: &ArmRequest,
    subscription: &str,
    name: &str,
) -> Response {
    let key = group_key(subscription, name);
    match request.method {
        Method::GET | Method::HEAD => match state.store().groups.get(&key) {
            Some(group) if request.method == Method::GET => {
                Json(render_group(group)).into_response()
            }
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => group_not_found(name),
        },
        Method::PUT => {
            let body = match parse_object(&request.body) {
                Ok(body) => body,
                Err(refusal) => return refusal.into_response(),
            };
            let location = match parse_location(&body) {
                Ok(location) => location,
                Err(refusal) => return refusal.into_response(),
            };
            let tags = match parse_tags(&body) {
                Ok(tags) => tags,
                Err(refusal) => return refusal.into_response(),
            };
            if name.is_empty()
                || name.len() > 90
                || name.ends_with('.')
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "-_.()".contains(c))
            {
                return bad_request(
                    "InvalidResourceGroupName",
                    format!("The resource group name '{name}' is invalid."),
                );
            }
            let mut store = state.store();
            match store.groups.get_mut(&key) {
                Some(group) => {
                    if group.location != location {
                        return bad_request(
                            "InvalidResourceGroupLocation",
                            format!(
                                "Invalid resource group location '{location}'. The Resource \
                                 group already exists in location '{}'.",
                                group.location
                            ),
                        );
                    }
                    group.tags = tags;
                    Json(render_group(group)).into_response()
                }
                None => {
                    let group = Group {
                        id: format!("/subscriptions/{subscription}/resourceGroups/{name}"),
                        name: name.into(),
                        location,
                        tags,
                    };
                    let rendered = render_group(&group);
                    store.groups.insert(key, group);
                    (StatusCode::CREATED, Json(rendered)).into_response()
                }
            }
        }
        _ => not_allowed(request),
    }
}

fn not_found(kind: Kind, name: &str, group: &str) -> Response {
    arm_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        format!(
            "The Resource '{}/{name}' under resource group '{group}' was not found. For more \
             details please go to https://aka.ms/ARMResourceNotFoundFix",
            kind.full_type()
        ),
    )
}

/// `PUT|GET|DELETE .../providers/{type}/{name}`.
fn resource(
    state: &AzureState,
    request: &ArmRequest,
    subscription: &str,
    group: &str,
    kind: Kind,
    name: &str,
) -> Response {
    let id = resource_id(subscription, group, kind, name).to_lowercase();
    match request.method {
        Method::GET => {
            let now = Utc::now();
            let store = state.store();
            match store.resources.get(&id) {
                Some(resource) => {
                    let mut rendered = render(&store, resource, now);
                    let expand = request.param("$expand").unwrap_or_default();
                    if kind == Kind::Vm && expand.eq_ignore_ascii_case("instanceView") {
                        rendered["properties"]["instanceView"] = instance_view(resource, now);
                    }
                    Json(rendered).into_response()
                }
                None => not_found(kind, name, group),
            }
        }
        Method::PUT => put_resource(state, request, subscription, group, kind, name)
            .unwrap_or_else(IntoResponse::into_response),
        Method::DELETE => delete_resource(state, request, kind, &id),
        _ => not_allowed(request),
    }
}

fn vm_instance_view(state: &AzureState, subscription: &str, group: &str, name: &str) -> Response {
    let id = resource_id(subscription, group, Kind::Vm, name).to_lowercase();
    let store = state.store();
    match store.resources.get(&id) {
        Some(vm) => Json(instance_view(vm, Utc::now())).into_response(),
        None => not_found(Kind::Vm, name, group),
    }
}

fn get_subnet(
    state: &AzureState,
    subscription: &str,
    group: &str,
    vnet: &str,
    subnet: &str,
) -> Response {
    let id = resource_id(subscription, group, Kind::Vnet, vnet).to_lowercase();
    let store = state.store();
    let Some(resource) = store.resources.get(&id) else {
        return not_found(Kind::Vnet, vnet, group);
    };
    let rendered = render(&store, resource, Utc::now());
    let found = rendered["properties"]["subnets"]
        .as_array()
        .and_then(|subnets| {
            subnets.iter().find(|s| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(subnet))
            })
        })
        .cloned();
    match found {
        Some(found) => Json(found).into_response(),
        None => arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("Resource {}/subnets/{subnet} not found.", resource.id),
        ),
    }
}

/// A name ARM accepts for the kind.
fn valid_name(kind: Kind, name: &str) -> bool {
    let max = match kind {
        Kind::Vm => 64,
        _ => 80,
    };
    let word = |c: char| c.is_alphanumeric() || c == '_';
    !name.is_empty()
        && name.len() <= max
        && name.chars().all(|c| word(c) || c == '.' || c == '-')
        && name.chars().next().is_some_and(word)
        && name.chars().last().is_some_and(word)
}

/// The operation headers of an asynchronous answer.
fn operation_headers(
    response: &mut Response,
    request: &ArmRequest,
    subscription: &str,
    operation_id: &str,
    operation: &Operation,
    with_location: bool,
) {
    let prefix = format!(
        "{}/subscriptions/{subscription}/providers/{}/locations/{}",
        request.base, operation.namespace, operation.location
    );
    let version = &request.api_version;
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{prefix}/operations/{operation_id}?api-version={version}"
    )) {
        headers.insert("azure-asyncoperation", value);
    }
    if with_location
        && let Ok(value) = HeaderValue::from_str(&format!(
            "{prefix}/operationResults/{operation_id}?api-version={version}"
        ))
    {
        headers.insert(header::LOCATION, value);
    }
    headers.insert(header::RETRY_AFTER, retry_after(operation.finishes));
}

/// Seconds until `finishes`, rounded up, at least 1 (a 0 makes clients fall back to their own,
/// much longer, interval) and at most 10.
fn retry_after(finishes: DateTime<Utc>) -> HeaderValue {
    let remaining = finishes
        .signed_duration_since(Utc::now())
        .num_milliseconds()
        .max(0) as u64;
    let secs = remaining.div_ceil(1000).clamp(1, 10);
    HeaderValue::from(secs)
}

fn new_operation(
    store: &mut Store,
    kind: Kind,
    subscription: &str,
    location: &str,
    finishes: DateTime<Utc>,
    failure: Option<(String, String)>,
) -> (String, Operation) {
    let id = uuid::Uuid::new_v4().to_string();
    let operation = Operation {
        namespace: kind.namespace(),
        location: location.into(),
        subscription: subscription.into(),
        started: Utc::now(),
        finishes,
        failure,
    };
    store.operations.insert(id.clone(), operation.clone());
    (id, operation)
}

fn durations(state: &AzureState, kind: Kind) -> chrono::Duration {
    let boot = state.config.boot_delay;
    let takes = if kind == Kind::Vm { boot } else { boot / 4 };
    chrono::Duration::from_std(takes).unwrap_or_default()
}

fn delete_resource(state: &AzureState, request: &ArmRequest, kind: Kind, id: &str) -> Response {
    let now = Utc::now();
    let mut store = state.store();
    let Some(resource) = store.resources.get(id).cloned() else {
        return StatusCode::NO_CONTENT.into_response();
    };
    match kind {
        Kind::PublicIp => {
            if let Some((nic, config)) = user_of_ip(&store, id) {
                return bad_request(
                    "PublicIPAddressCannotBeDeleted",
                    format!(
                        "Public IP address {} can not be deleted since it is still allocated to \
                         resource {}/ipConfigurations/{config}. In order to delete the public IP, \
                         disassociate/detach the Public IP address from the resource.  To learn \
                         how to do this, see aka.ms/deletepublicip.",
                        resource.id, nic.id
                    ),
                );
            }
        }
        Kind::Nic => {
            if let Some(vm) = holder_of_nic(&store, id) {
                return bad_request(
                    "NicInUse",
                    format!(
                        "Network Interface {} is used by existing resource {}. In order to \
                         delete the network interface, it must be dissociated from the resource. \
                         To learn more, see aka.ms/deletenic.",
                        resource.id, vm.id
                    ),
                );
            }
        }
        Kind::Disk => {
            if let Some(vm) = store
                .resources
                .values()
                .find(|r| r.kind == Kind::Vm && os_disk_id(r).as_deref() == Some(id))
            {
                return arm_error(
                    StatusCode::CONFLICT,
                    "OperationNotAllowed",
                    format!("Disk {} is attached to VM {}.", resource.name, vm.id),
                );
            }
        }
        Kind::Vnet => {
            let prefix = format!("{id}/subnets/");
            let in_use = store.resources.values().any(|r| {
                r.kind == Kind::Nic
                    && nic_configs(r).iter().any(|(_, subnet, _)| {
                        subnet.as_deref().is_some_and(|s| s.starts_with(&prefix))
                    })
            });
            if in_use {
                return bad_request(
                    "InUseSubnetCannotBeDeleted",
                    format!(
                        "Subnet of {} is in use by network interfaces and cannot be deleted. In \
                         order to delete the subnet, delete all the resources within the subnet.",
                        resource.id
                    ),
                );
            }
        }
        Kind::Vm => {}
    }
    let finishes = resource
        .deleting_until
        .unwrap_or(now + durations(state, kind));
    if let Some(record) = store.resources.get_mut(id) {
        record.deleting_until = Some(finishes);
    }
    let (operation_id, operation) = new_operation(
        &mut store,
        kind,
        &resource.subscription,
        &resource.location,
        finishes,
        None,
    );
    let mut response = StatusCode::ACCEPTED.into_response();
    operation_headers(
        &mut response,
        request,
        &resource.subscription,
        &operation_id,
        &operation,
        true,
    );
    response
}

/// Validated PUT content of one resource kind.
struct Put {
    location: String,
    tags: Map<String, Value>,
    properties: Value,
    sku: Option<Value>,
    zones: Option<Value>,
    /// For a VM: the server spec, the OS disk to make, the vCPUs.
    vm: Option<(NewServer, String, u32)>,
}

impl Put {
    /// A kind's validated `properties` alone: no SKU, zones or VM (the location and tags
    /// are the request's).
    fn of_properties(properties: Value) -> Put {
        Put {
            location: String::new(),
            tags: Map::new(),
            properties,
            sku: None,
            zones: None,
            vm: None,
        }
    }
}

/// A resource's `PUT`: the request checked, the kind's properties validated, the resource
/// updated in place or made, and the answer with its long-running operation.
fn put_resource(
    state: &AzureState,
    request: &ArmRequest,
    subscription: &str,
    group: &str,
    kind: Kind,
    name: &str,
) -> Result<Response, Refusal> {
    let PutRequest {
        body,
        location,
        tags,
        properties,
    } = parse_put_request(request, kind, name)?;
    let id = resource_id(subscription, group, kind, name);
    let now = Utc::now();
    let mut store = state.store();
    let existing = store.resources.get(&id.to_lowercase()).cloned();
    if let Some(existing) = &existing {
        check_replaceable(existing, name, group, &location)?;
    }
    let mut put = match kind {
        Kind::PublicIp => put_public_ip(&body, properties),
        Kind::Nic => put_nic(&store, &id, properties),
        Kind::Vnet => put_vnet(properties),
        Kind::Vm => put_vm(&store, &id, name, &location, properties, existing.as_ref()),
        Kind::Disk => unreachable!("refused by parse_put_request"),
    }?;
    put.location = location;
    put.tags = tags;
    let (status, failure) = match existing {
        Some(existing) => {
            update_resource(state, &mut store, kind, &id, &existing, &put, now);
            (StatusCode::OK, None)
        }
        None => {
            let failure =
                create_resource(state, &mut store, kind, subscription, group, name, put, now)?;
            (StatusCode::CREATED, failure)
        }
    };
    let record = store.resources[&id.to_lowercase()].clone();
    let (operation_id, operation) = new_operation(
        &mut store,
        kind,
        subscription,
        &record.location,
        record.busy_until,
        failure,
    );
    let rendered = render(&store, &record, now);
    drop(store);
    let mut response = (status, Json(rendered)).into_response();
    operation_headers(
        &mut response,
        request,
        subscription,
        &operation_id,
        &operation,
        false,
    );
    Ok(response)
}

/// What a `PUT`'s body says, checked: the whole body, location, tags and properties.
struct PutRequest {
    body: Map<String, Value>,
    location: String,
    tags: Map<String, Value>,
    properties: Map<String, Value>,
}

/// A `PUT`'s body and name checked as ARM checks them before looking at the resource kind's
/// properties; disks are not `PUT` here.
fn parse_put_request(request: &ArmRequest, kind: Kind, name: &str) -> Result<PutRequest, Refusal> {
    let body = parse_object(&request.body)?;
    if !valid_name(kind, name) {
        return Err(bad_request(
            "InvalidResourceName",
            format!(
                "Resource name {name} is invalid. The name can be up to {} characters long. It \
                 must begin with a word character, and it must end with a word character. The \
                 name may contain word characters or '.', '-'.",
                if kind == Kind::Vm { 64 } else { 80 }
            ),
        )
        .into());
    }
    if kind == Kind::Disk {
        return Err(arm_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "This simulator makes disks only as a virtual machine's OS disk.",
        )
        .into());
    }
    let location = parse_location(&body)?;
    let tags = parse_tags(&body)?;
    let properties = match body.get("properties") {
        Some(Value::Object(properties)) => properties.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => {
            return Err(bad_request(
                "InvalidRequestContent",
                "The request content was invalid and could not be deserialized: 'properties' is \
                 not an object.",
            )
            .into());
        }
    };
    Ok(PutRequest {
        body,
        location,
        tags,
        properties,
    })
}

/// An existing resource may be `PUT` again only in its own location and while it is not
/// being deleted.
fn check_replaceable(
    existing: &Resource,
    name: &str,
    group: &str,
    location: &str,
) -> Result<(), Refusal> {
    if existing.location != location {
        return Err(bad_request(
            "InvalidResourceLocation",
            format!(
                "The resource '{name}' already exists in location '{}' in resource group \
                 '{group}'. A resource with the same name cannot be created in location \
                 '{location}'. Please select a new resource name.",
                existing.location
            ),
        )
        .into());
    }
    if existing.deleting_until.is_some() {
        return Err(arm_error(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            format!("The resource '{}' is being deleted.", existing.id),
        )
        .into());
    }
    Ok(())
}

/// A `PUT` over an existing resource: tags always; for a VM its size, OS disk delete option
/// and NICs (and its server's labels), the rest staying; for other kinds all properties.
fn update_resource(
    state: &AzureState,
    store: &mut Store,
    kind: Kind,
    id: &str,
    existing: &Resource,
    put: &Put,
    now: DateTime<Utc>,
) {
    let update_takes = chrono::Duration::from_std(state.config.boot_delay / 4).unwrap_or_default();
    let record = store
        .resources
        .get_mut(&id.to_lowercase())
        .expect("looked up under the same lock");
    record.tags = put.tags.clone();
    record.busy_until = now + update_takes;
    record.creating = false;
    match kind {
        Kind::Vm => {
            // Size, delete options and tags change in place; the rest stays.
            let props = &mut record.properties;
            if let Some(size) = put.properties.pointer("/hardwareProfile/vmSize") {
                props["hardwareProfile"]["vmSize"] = size.clone();
            }
            if let Some(option) = put
                .properties
                .pointer("/storageProfile/osDisk/deleteOption")
            {
                props["storageProfile"]["osDisk"]["deleteOption"] = option.clone();
            }
            if let Some(nics) = put.properties.pointer("/networkProfile") {
                props["networkProfile"] = nics.clone();
            }
            if let Some(server_id) = existing.server_id {
                let labels = string_tags(&put.tags);
                state.with_cloud(Vendor::Azure, |cloud| {
                    if let Some(server) = cloud.servers.get_mut(&server_id) {
                        server.spec.idempotency_key =
                            labels.get(crate::conventions::IDEMPOTENCY_LABEL).cloned();
                        server.spec.labels = labels;
                    }
                });
            }
        }
        _ => {
            record.properties = put.properties.clone();
            if put.sku.is_some() {
                record.sku = put.sku.clone();
            }
        }
    }
}

/// A `PUT` making a new resource: a VM's armed fault taken first, then the resource, for a
/// VM its server and OS disk, for a public IP its address. The failure its operation will
/// end with, if any.
#[allow(clippy::too_many_arguments)]
fn create_resource(
    state: &AzureState,
    store: &mut Store,
    kind: Kind,
    subscription: &str,
    group: &str,
    name: &str,
    mut put: Put,
    now: DateTime<Utc>,
) -> Result<Option<(String, String)>, Refusal> {
    let failure = match &put.vm {
        Some((spec, _, cores)) => take_vm_fault(store, spec, *cores, subscription)?,
        None => None,
    };
    let takes = durations(state, kind);
    let inserted = insert_resource(
        store,
        kind,
        subscription,
        group,
        name,
        &put.location,
        put.tags.clone(),
        put.properties.clone(),
        now + takes,
    );
    let key = inserted.to_lowercase();
    let server = put.vm.take().map(|(mut spec, disk_name, _)| {
        // The VM's tags are the server's labels, its idempotency tag the key.
        spec.labels = string_tags(&put.tags);
        spec.idempotency_key = spec
            .labels
            .get(crate::conventions::IDEMPOTENCY_LABEL)
            .cloned();
        let server = state.with_cloud(Vendor::Azure, |cloud| cloud.insert(spec));
        (server, disk_name)
    });
    if let Some((_, disk_name)) = &server {
        insert_os_disk(store, subscription, group, disk_name, &put, now + takes);
    }
    store.next_address += 1;
    let address = address_for(store.next_address);
    if let Some(record) = store.resources.get_mut(&key) {
        record.sku = put.sku.clone();
        record.zones = put.zones.clone();
        record.failure = failure.clone();
        record.server_id = server.as_ref().map(|(s, _)| s.id);
        if kind == Kind::PublicIp {
            record.address = Some(address);
        }
    }
    Ok(failure)
}

/// The next armed Compute fault, taken for a new VM: a refusal (quota, SKU), or the failure
/// its operation will end with (allocation).
fn take_vm_fault(
    store: &mut Store,
    spec: &NewServer,
    cores: u32,
    subscription: &str,
) -> Result<Option<(String, String)>, Refusal> {
    let fault = (!store.faults.is_empty()).then(|| store.faults.remove(0));
    match fault {
        Some(ComputeFault::QuotaExceeded) => Err(arm_error(
            StatusCode::CONFLICT,
            "OperationNotAllowed",
            format!(
                "Operation could not be completed as it results in exceeding \
                 approved Total Regional Cores quota. Additional details - \
                 Deployment Model: Resource Manager, Location: {}, Current \
                 Limit: 10, Current Usage: 10, Additional Required: {cores}, \
                 (Minimum) New Limit Required: {}. Setup Alerts when Quota \
                 reaches threshold. Learn more at https://aka.ms/quotamonitoringalerting . \
                 Submit a request for Quota increase at https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView/Parameters/%7B%22subscriptionId%22:%22{subscription}%22%7D",
                spec.region,
                10 + cores
            ),
        )
        .into()),
        Some(ComputeFault::SkuNotAvailable) => Err(arm_error(
            StatusCode::CONFLICT,
            "SkuNotAvailable",
            format!(
                "The requested VM size for resource 'Following SKUs have failed \
                 for Capacity Restrictions: {}' is currently not available in \
                 location '{}'. Please try another size or deploy to a different \
                 location or different zone. See \
                 https://aka.ms/azureskunotavailable for details.",
                spec.size, spec.region
            ),
        )
        .into()),
        Some(ComputeFault::AllocationFailed) => Ok(Some((
            "AllocationFailed".to_string(),
            "Allocation failed. We do not have sufficient capacity for the \
             requested VM size in this region. Read more about improving \
             likelihood of allocation success at http://aka.ms/allocation-guidance"
                .to_string(),
        ))),
        None => Ok(None),
    }
}

/// A new VM's OS disk, made with it.
fn insert_os_disk(
    store: &mut Store,
    subscription: &str,
    group: &str,
    disk_name: &str,
    put: &Put,
    busy_until: DateTime<Utc>,
) {
    let disk = disk_for(
        subscription,
        group,
        disk_name,
        &put.location,
        &put.properties,
    );
    let disk_id = insert_resource(
        store,
        Kind::Disk,
        subscription,
        group,
        disk_name,
        &put.location,
        Map::new(),
        disk,
        busy_until,
    );
    if let Some(record) = store.resources.get_mut(&disk_id.to_lowercase()) {
        record.sku = Some(json!({"name": storage_type(&put.properties), "tier": "Standard"}));
    }
}

/// A public IP in TEST-NET-2, never routable.
fn address_for(n: u64) -> String {
    format!("198.51.100.{}", 1 + (n - 1) % 254)
}

fn string_tags(tags: &Map<String, Value>) -> BTreeMap<String, String> {
    tags.iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

fn storage_type(vm_properties: &Value) -> String {
    vm_properties
        .pointer("/storageProfile/osDisk/managedDisk/storageAccountType")
        .and_then(Value::as_str)
        .unwrap_or("Premium_LRS")
        .to_string()
}

fn disk_for(subscription: &str, _group: &str, _name: &str, location: &str, vm: &Value) -> Value {
    let image = vm
        .pointer("/storageProfile/imageReference")
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "osType": "Linux",
        "hyperVGeneration": "V2",
        "creationData": {
            "createOption": "FromImage",
            "imageReference": {"id": format!(
                "/Subscriptions/{subscription}/Providers/Microsoft.Compute/Locations/{location}/Publishers/{}/ArtifactTypes/VMImage/Offers/{}/Skus/{}/Versions/{}",
                image["publisher"].as_str().unwrap_or_default(),
                image["offer"].as_str().unwrap_or_default(),
                image["sku"].as_str().unwrap_or_default(),
                image["exactVersion"].as_str().unwrap_or_default(),
            )},
        },
        "diskSizeGB": vm.pointer("/storageProfile/osDisk/diskSizeGB").cloned().unwrap_or(json!(30)),
        "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
        "networkAccessPolicy": "AllowAll",
        "publicNetworkAccess": "Enabled",
    })
}

fn put_public_ip(
    body: &Map<String, Value>,
    mut properties: Map<String, Value>,
) -> Result<Put, Refusal> {
    let sku = body
        .get("sku")
        .cloned()
        .unwrap_or_else(|| json!({"name": "Standard"}));
    let sku_name = sku
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("Standard")
        .to_string();
    if !["Basic", "Standard"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(&sku_name))
    {
        return Err(bad_request(
            "InvalidRequestFormat",
            format!(
                "Cannot parse the request: the public IP SKU '{sku_name}' is not Basic or Standard."
            ),
        )
        .into());
    }
    let standard = sku_name.eq_ignore_ascii_case("Standard");
    let method = properties
        .get("publicIPAllocationMethod")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| if standard { "Static" } else { "Dynamic" }.into());
    let method = if method.eq_ignore_ascii_case("Static") {
        "Static"
    } else if method.eq_ignore_ascii_case("Dynamic") {
        "Dynamic"
    } else {
        return Err(bad_request(
            "InvalidRequestFormat",
            format!("Cannot parse the request: '{method}' is not Static or Dynamic."),
        )
        .into());
    };
    if standard && method == "Dynamic" {
        return Err(bad_request(
            "StandardSkuPublicIPAddressesMustBeStatic",
            "Standard sku publicIp addresses cannot be created with allocation method Dynamic. \
             Please use Static.",
        )
        .into());
    }
    properties.insert("publicIPAllocationMethod".into(), json!(method));
    properties
        .entry("publicIPAddressVersion")
        .or_insert(json!("IPv4"));
    properties.entry("idleTimeoutInMinutes").or_insert(json!(4));
    properties.entry("ipTags").or_insert(json!([]));
    // ARM keeps neither of these on the address: they are the NIC's and the VM's business.
    properties.remove("deleteOption");
    properties.remove("ipAddress");
    properties.remove("ipConfiguration");
    properties.remove("provisioningState");
    Ok(Put {
        sku: Some(json!({"name": if standard { "Standard" } else { "Basic" }, "tier": "Regional"})),
        zones: body.get("zones").cloned(),
        ..Put::of_properties(Value::Object(properties))
    })
}

fn invalid_reference(target: &str, by: &str) -> Response {
    bad_request(
        "InvalidResourceReference",
        format!(
            "Resource {target} referenced by resource {by} was not found. Please make sure that \
             the referenced resource exists, and that both resources are in the same region."
        ),
    )
}

/// Whether `subnet_id` names a subnet of a live virtual network.
fn subnet_exists(store: &Store, subnet_id: &str) -> bool {
    let lowered = subnet_id.to_lowercase();
    let Some((vnet_id, subnet)) = lowered.split_once("/subnets/") else {
        return false;
    };
    store.resources.get(vnet_id).is_some_and(|vnet| {
        vnet.kind == Kind::Vnet
            && vnet.properties["subnets"]
                .as_array()
                .is_some_and(|subnets| {
                    subnets.iter().any(|s| {
                        s["name"]
                            .as_str()
                            .is_some_and(|n| n.eq_ignore_ascii_case(subnet))
                    })
                })
    })
}

fn put_nic(
    store: &Store,
    nic_id: &str,
    mut properties: Map<String, Value>,
) -> Result<Put, Refusal> {
    let Some(Value::Array(configs)) = properties.get("ipConfigurations").cloned() else {
        return Err(bad_request(
            "NetworkInterfaceMustHaveAtLeastOneIpConfiguration",
            format!("Network interface {nic_id} must have at least one IP configuration."),
        )
        .into());
    };
    if configs.is_empty() {
        return Err(bad_request(
            "NetworkInterfaceMustHaveAtLeastOneIpConfiguration",
            format!("Network interface {nic_id} must have at least one IP configuration."),
        )
        .into());
    }
    let mut kept = Vec::new();
    for (index, config) in configs.into_iter().enumerate() {
        let name = config
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("ipconfig{}", index + 1));
        let mut config_properties = config
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let Some(subnet) = config_properties
            .get("subnet")
            .and_then(|s| s.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(bad_request(
                "SubnetIsRequired",
                format!(
                    "Subnet is required for IP configuration {nic_id}/ipConfigurations/{name}."
                ),
            )
            .into());
        };
        if !subnet_exists(store, &subnet) {
            return Err(invalid_reference(&subnet, nic_id).into());
        }
        if let Some(public) = config_properties
            .get("publicIPAddress")
            .and_then(|p| p.get("id"))
            .and_then(Value::as_str)
        {
            let public_lower = public.to_lowercase();
            if !store
                .resources
                .get(&public_lower)
                .is_some_and(|r| r.kind == Kind::PublicIp && r.deleting_until.is_none())
            {
                return Err(invalid_reference(public, nic_id).into());
            }
            if let Some((other, config)) = user_of_ip(store, &public_lower)
                && other.id.to_lowercase() != nic_id.to_lowercase()
            {
                return Err(bad_request(
                    "PublicIPAddressInUse",
                    format!(
                        "Resource {public} is already in use by {}/ipConfigurations/{config}.",
                        other.id
                    ),
                )
                .into());
            }
            let delete_option = config_properties
                .get("publicIPAddress")
                .and_then(|p| p.pointer("/properties/deleteOption"))
                .and_then(Value::as_str)
                .unwrap_or("Detach")
                .to_string();
            config_properties.insert(
                "publicIPAddress".into(),
                json!({"id": public, "properties": {"deleteOption": delete_option}}),
            );
        }
        config_properties
            .entry("privateIPAllocationMethod")
            .or_insert(json!("Dynamic"));
        config_properties
            .entry("privateIPAddressVersion")
            .or_insert(json!("IPv4"));
        config_properties
            .entry("primary")
            .or_insert(json!(index == 0));
        config_properties.insert("subnet".into(), json!({"id": subnet}));
        if !config_properties.contains_key("privateIPAddress") {
            let in_use = nics_in_subnet(store, &subnet.to_lowercase()).len() as u64;
            let seq = store.next_seq;
            config_properties.insert(
                "privateIPAddress".into(),
                json!(format!(
                    "10.0.{}.{}",
                    (seq / 250) % 250,
                    4 + (in_use + seq) % 250
                )),
            );
        }
        config_properties.remove("provisioningState");
        kept.push(json!({"name": name, "properties": config_properties}));
    }
    properties.insert("ipConfigurations".into(), Value::Array(kept));
    properties
        .entry("dnsSettings")
        .or_insert(json!({"dnsServers": [], "appliedDnsServers": []}));
    properties
        .entry("enableAcceleratedNetworking")
        .or_insert(json!(false));
    properties
        .entry("enableIPForwarding")
        .or_insert(json!(false));
    properties.entry("nicType").or_insert(json!("Standard"));
    for derived in [
        "virtualMachine",
        "macAddress",
        "primary",
        "provisioningState",
        "resourceGuid",
    ] {
        properties.remove(derived);
    }
    Ok(Put::of_properties(Value::Object(properties)))
}

fn put_vnet(mut properties: Map<String, Value>) -> Result<Put, Refusal> {
    let prefixes = properties
        .get("addressSpace")
        .and_then(|a| a.get("addressPrefixes"))
        .filter(|p| p.is_array())
        .cloned()
        .unwrap_or_else(|| json!(["10.0.0.0/16"]));
    properties.insert("addressSpace".into(), json!({"addressPrefixes": prefixes}));
    let subnets = properties
        .get("subnets")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut kept = Vec::new();
    for subnet in subnets {
        let Some(name) = subnet.get("name").and_then(Value::as_str) else {
            return Err(bad_request(
                "InvalidRequestFormat",
                "Cannot parse the request: a subnet has no name.",
            )
            .into());
        };
        let prefix = subnet
            .pointer("/properties/addressPrefix")
            .cloned()
            .unwrap_or(json!("10.0.0.0/24"));
        kept.push(json!({"name": name, "properties": {"addressPrefix": prefix}}));
    }
    properties.insert("subnets".into(), Value::Array(kept));
    properties.remove("provisioningState");
    Ok(Put::of_properties(Value::Object(properties)))
}

/// ARM's 400 `InvalidParameter` about the parameter `target`.
fn invalid_parameter(message: impl Into<String>, target: &str) -> Refusal {
    arm_error_at(StatusCode::BAD_REQUEST, "InvalidParameter", message, target).into()
}

fn put_vm(
    store: &Store,
    vm_id: &str,
    name: &str,
    location: &str,
    properties: Map<String, Value>,
    existing: Option<&Resource>,
) -> Result<Put, Refusal> {
    let (size, cores) = vm_size(&properties)?;
    let image = vm_image(&properties, existing)?;
    let os = vm_os_profile(&properties)?;
    let user_data = decode_base64_parameter(properties.get("userData"), "userData")?;
    let kept_nics = checked_vm_nics(store, vm_id, location, &properties)?;
    let os_disk = properties
        .get("storageProfile")
        .and_then(|p| p.get("osDisk"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let disk_name = match existing {
        Some(existing) => existing
            .properties
            .pointer("/storageProfile/osDisk/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        None => os_disk
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("{name}_OsDisk_1_{}", uuid::Uuid::new_v4().simple())),
    };
    let stored = stored_vm_properties(
        vm_id, name, size, &image, &os, &os_disk, &disk_name, kept_nics,
    );
    let spec = NewServer {
        name: name.to_string(),
        region: location.to_string(),
        size: size.to_string(),
        image: image.urn(),
        labels: BTreeMap::new(),
        tags: Vec::new(),
        metadata: BTreeMap::new(),
        idempotency_key: None,
        ssh_keys: os.ssh_keys,
        user_data: os.custom_data.or(user_data),
    };
    Ok(Put {
        vm: Some((spec, disk_name, cores)),
        ..Put::of_properties(stored)
    })
}

/// A VM's `hardwareProfile.vmSize`, one of [`VM_SIZES`] (any case): its name as listed and
/// its vCPUs.
fn vm_size(properties: &Map<String, Value>) -> Result<(&'static str, u32), Refusal> {
    let size = properties
        .get("hardwareProfile")
        .and_then(|h| h.get("vmSize"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let Some((size, cores, _)) = VM_SIZES.iter().find(|(s, ..)| s.eq_ignore_ascii_case(size))
    else {
        return Err(invalid_parameter(
            format!(
                "The value '{size}' of parameter 'vmSize' is not allowed. Allowed values are: {}.",
                VM_SIZES
                    .iter()
                    .map(|(s, ..)| *s)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "vmSize",
        ));
    };
    Ok((size, *cores))
}

/// A VM's platform image: the reference as asked for, resolved against [`IMAGES`].
struct VmImage {
    publisher: &'static str,
    offer: &'static str,
    sku: &'static str,
    /// As asked for: `latest` or the exact version.
    version: String,
    exact: &'static str,
}

impl VmImage {
    /// `publisher:offer:sku:exactVersion`, the server's image.
    fn urn(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.publisher, self.offer, self.sku, self.exact
        )
    }
}

/// A VM's `storageProfile.imageReference`, found among [`IMAGES`]; an existing VM's image
/// cannot change.
fn vm_image(
    properties: &Map<String, Value>,
    existing: Option<&Resource>,
) -> Result<VmImage, Refusal> {
    let image = properties
        .get("storageProfile")
        .and_then(|p| p.get("imageReference"))
        .cloned()
        .unwrap_or(Value::Null);
    let part = |key: &str| {
        image
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (publisher, offer, sku, version) = (
        part("publisher"),
        part("offer"),
        part("sku"),
        part("version"),
    );
    if image.is_null() {
        return Err(invalid_parameter(
            "Required parameter 'imageReference' is missing (null).",
            "imageReference",
        ));
    }
    let found = IMAGES.iter().find(|(p, o, s, latest)| {
        p.eq_ignore_ascii_case(&publisher)
            && o.eq_ignore_ascii_case(&offer)
            && s.eq_ignore_ascii_case(&sku)
            && (version.eq_ignore_ascii_case("latest") || version == *latest)
    });
    let Some((publisher, offer, sku, exact)) = found else {
        return Err(arm_error(
            StatusCode::NOT_FOUND,
            "PlatformImageNotFound",
            format!(
                "The platform image '{publisher}:{offer}:{sku}:{version}' is not available. \
                 Verify that all fields in the storage profile are correct. For more details \
                 about storage profile information, please refer to https://aka.ms/storageprofile"
            ),
        )
        .into());
    };
    if let Some(existing) = existing {
        let before = existing
            .properties
            .pointer("/storageProfile/imageReference/exactVersion")
            .and_then(Value::as_str);
        let before_offer = existing
            .properties
            .pointer("/storageProfile/imageReference/offer")
            .and_then(Value::as_str);
        if before != Some(exact) || before_offer != Some(offer) {
            return Err(arm_error_at(
                StatusCode::CONFLICT,
                "PropertyChangeNotAllowed",
                "Changing property 'imageReference' is not allowed.",
                "imageReference",
            )
            .into());
        }
    }
    Ok(VmImage {
        publisher,
        offer,
        sku,
        version,
        exact,
    })
}

/// A VM's `osProfile`, checked: an admin user who can log in by SSH key or password.
struct VmOsProfile {
    /// The `osProfile` object as sent.
    os: Map<String, Value>,
    admin: String,
    ssh_keys: Vec<String>,
    /// Whether password login ends up off: turned off, or no password given.
    password_off: bool,
    /// `customData`, decoded.
    custom_data: Option<String>,
}

/// A VM's `osProfile` checked as ARM checks it: an admin name, valid SSH keys, a way to log
/// in, Base64 custom data.
fn vm_os_profile(properties: &Map<String, Value>) -> Result<VmOsProfile, Refusal> {
    let os = properties
        .get("osProfile")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let admin = os
        .get("adminUsername")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if admin.is_empty() {
        return Err(invalid_parameter(
            "Required parameter 'osProfile.adminUsername' is missing (null).",
            "adminUsername",
        ));
    }
    let mut ssh_keys = Vec::new();
    if let Some(keys) = os
        .get("linuxConfiguration")
        .and_then(|l| l.pointer("/ssh/publicKeys"))
        .and_then(Value::as_array)
    {
        for key in keys {
            let data = key
                .get("keyData")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if crate::keys::check(data).is_err() {
                return Err(invalid_parameter(
                    "The value of parameter linuxConfiguration.ssh.publicKeys.keyData is invalid.",
                    "linuxConfiguration.ssh.publicKeys.keyData",
                ));
            }
            ssh_keys.push(data.trim().to_string());
        }
    }
    let password = os.get("adminPassword").and_then(Value::as_str);
    let password_turned_off = os
        .get("linuxConfiguration")
        .and_then(|l| l.get("disablePasswordAuthentication"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if ssh_keys.is_empty() && (password.is_none() || password_turned_off) {
        return Err(invalid_parameter(
            if password_turned_off {
                "Authentication using either SSH or by user name and password must be enabled in \
                 Linux profile."
            } else {
                "Required parameter 'adminPassword' is missing (null)."
            },
            "adminPassword",
        ));
    }
    let password_off = password_turned_off || password.is_none();
    let custom_data = decode_base64_parameter(os.get("customData"), "customData")?;
    Ok(VmOsProfile {
        os,
        admin,
        ssh_keys,
        password_off,
        custom_data,
    })
}

/// A Base64 text parameter (`customData`, `userData`), decoded; absent is `None`.
fn decode_base64_parameter(value: Option<&Value>, target: &str) -> Result<Option<String>, Refusal> {
    match value.and_then(Value::as_str) {
        None => Ok(None),
        Some(encoded) => STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(|| {
                invalid_parameter(
                    format!(
                        "{target} must be in Base64 encoding and with a maximum length of \
                         87380 characters."
                    ),
                    target,
                )
            }),
    }
}

/// A VM's `networkProfile.networkInterfaces`: at least one, each an existing NIC in the
/// VM's location that no other VM holds; kept with its delete option and whether it is
/// primary (the first by default).
fn checked_vm_nics(
    store: &Store,
    vm_id: &str,
    location: &str,
    properties: &Map<String, Value>,
) -> Result<Vec<Value>, Refusal> {
    let nics = properties
        .get("networkProfile")
        .and_then(|p| p.get("networkInterfaces"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if nics.is_empty() {
        return Err(invalid_parameter(
            "Virtual Machine must have at least one network interface.",
            "networkProfile",
        ));
    }
    let mut kept_nics = Vec::new();
    for (index, nic) in nics.iter().enumerate() {
        let Some(nic_id) = nic.get("id").and_then(Value::as_str) else {
            return Err(invalid_parameter(
                "Required parameter 'networkInterface.id' is missing (null).",
                "networkProfile.networkInterfaces.id",
            ));
        };
        let lowered = nic_id.to_lowercase();
        let Some(found) = store
            .resources
            .get(&lowered)
            .filter(|r| r.kind == Kind::Nic && r.deleting_until.is_none())
        else {
            return Err(bad_request("NotFound", format!("Resource {nic_id} not found.")).into());
        };
        if let Some(holder) = holder_of_nic(store, &lowered)
            && holder.id.to_lowercase() != vm_id.to_lowercase()
        {
            return Err(bad_request(
                "NicInUse",
                format!(
                    "Network Interface {} is used by existing resource {}. In order to attach it \
                     to another virtual machine, it must be dissociated from the resource.",
                    found.id, holder.id
                ),
            )
            .into());
        }
        if found.location != location {
            return Err(bad_request(
                "NicNotInVmLocation",
                format!(
                    "Network interface {} is in location '{}', the virtual machine in '{location}'. \
                     They must be in the same location.",
                    found.id, found.location
                ),
            ).into());
        }
        let option = nic
            .pointer("/properties/deleteOption")
            .and_then(Value::as_str)
            .unwrap_or("Detach");
        let primary = nic
            .pointer("/properties/primary")
            .and_then(Value::as_bool)
            .unwrap_or(index == 0);
        kept_nics.push(
            json!({"id": nic_id, "properties": {"deleteOption": option, "primary": primary}}),
        );
    }
    Ok(kept_nics)
}

/// The properties a VM is stored with: what was sent, checked, with ARM's defaults filled in.
#[allow(clippy::too_many_arguments)]
fn stored_vm_properties(
    vm_id: &str,
    name: &str,
    size: &str,
    image: &VmImage,
    os: &VmOsProfile,
    os_disk: &Value,
    disk_name: &str,
    kept_nics: Vec<Value>,
) -> Value {
    let (subscription, group) = {
        let parts: Vec<&str> = vm_id.split('/').collect();
        (parts[2].to_string(), parts[4].to_string())
    };
    let storage = os_disk
        .pointer("/managedDisk/storageAccountType")
        .and_then(Value::as_str)
        .unwrap_or("Premium_LRS");
    let disk_id = resource_id(&subscription, &group, Kind::Disk, disk_name);
    let computer_name = os
        .os
        .get("computerName")
        .and_then(Value::as_str)
        .unwrap_or(name)
        .to_string();
    let mut linux = os
        .os
        .get("linuxConfiguration")
        .cloned()
        .unwrap_or_else(|| json!({}));
    linux["disablePasswordAuthentication"] = json!(os.password_off);
    if linux.get("provisionVMAgent").is_none() {
        linux["provisionVMAgent"] = json!(true);
    }
    json!({
        "hardwareProfile": {"vmSize": size},
        "storageProfile": {
            "imageReference": {
                "publisher": image.publisher, "offer": image.offer, "sku": image.sku,
                "version": image.version, "exactVersion": image.exact,
            },
            "osDisk": {
                "osType": "Linux",
                "name": disk_name,
                "createOption": "FromImage",
                "caching": os_disk.get("caching").cloned().unwrap_or(json!("ReadWrite")),
                "managedDisk": {"storageAccountType": storage, "id": disk_id},
                "deleteOption": os_disk.get("deleteOption").cloned().unwrap_or(json!("Detach")),
                "diskSizeGB": os_disk.get("diskSizeGB").cloned().unwrap_or(json!(30)),
            },
            "dataDisks": [],
            "diskControllerType": "SCSI",
        },
        "osProfile": {
            "computerName": computer_name,
            "adminUsername": os.admin,
            "linuxConfiguration": linux,
            "secrets": [],
            "allowExtensionOperations": true,
            "requireGuestProvisionSignal": true,
        },
        "networkProfile": {"networkInterfaces": kept_nics},
    })
}

// ---------------------------------------------------------------------------------------
// Lists and operations

/// The resources after the page token, in creation order, matching `keep`; one page and the
/// next page's link.
fn page_of(
    store: &Store,
    request: &ArmRequest,
    page_size: usize,
    keep: impl Fn(&Resource) -> bool,
) -> Result<(Vec<Resource>, Option<String>), Refusal> {
    let after = match request.param("$skiptoken") {
        None => 0,
        Some(token) => URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|t| t.strip_prefix("after:")?.parse::<u64>().ok())
            .ok_or_else(|| {
                bad_request(
                    "InvalidSkipToken",
                    format!("The provided skip token '{token}' is not valid."),
                )
            })?,
    };
    let mut found: Vec<Resource> = store
        .resources
        .values()
        .filter(|r| r.seq > after && keep(r))
        .cloned()
        .collect();
    found.sort_by_key(|r| r.seq);
    let next = if found.len() > page_size {
        found.truncate(page_size);
        let token = URL_SAFE_NO_PAD.encode(format!("after:{}", found.last().map_or(0, |r| r.seq)));
        let mut serializer = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in &request.query {
            if !key.eq_ignore_ascii_case("$skiptoken") {
                serializer.append_pair(key, value);
            }
        }
        serializer.append_pair("$skiptoken", &token);
        Some(format!(
            "{}{}?{}",
            request.base,
            request.path,
            serializer.finish()
        ))
    } else {
        None
    };
    Ok((found, next))
}

fn list_body(items: Vec<Value>, next: Option<String>) -> Response {
    let mut body = json!({"value": items});
    if let Some(next) = next {
        body["nextLink"] = json!(next);
    }
    Json(body).into_response()
}

fn list_kind(
    state: &AzureState,
    request: &ArmRequest,
    subscription: &str,
    group: Option<&str>,
    kind: Kind,
) -> Response {
    let now = Utc::now();
    let store = state.store();
    let page_size = state.page_size(MAX_PAGE);
    let page = page_of(&store, request, page_size, |r| {
        r.kind == kind
            && r.subscription.eq_ignore_ascii_case(subscription)
            && group.is_none_or(|g| r.group.eq_ignore_ascii_case(g))
    });
    match page {
        Ok((found, next)) => {
            list_body(found.iter().map(|r| render(&store, r, now)).collect(), next)
        }
        Err(refusal) => refusal.into_response(),
    }
}

/// One `$filter` term of the generic resource list.
#[derive(Debug, Clone, PartialEq)]
enum FilterTerm {
    TagName(String),
    TagValue(String),
    ResourceType(String),
    Name(String),
    Location(String),
}

/// Parses the generic list's `$filter` (see the module doc).
fn parse_resource_filter(filter: &str) -> Result<Vec<FilterTerm>, String> {
    let mut terms = Vec::new();
    for part in split_and(filter) {
        let part = part.trim();
        let (field, value) = part
            .split_once(" eq ")
            .ok_or_else(|| format!("Invalid $filter '{filter}'."))?;
        let value = value.trim();
        let value = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(|| format!("Invalid $filter '{filter}': values are quoted with '."))?
            .replace("''", "'");
        let term = match field.trim() {
            f if f.eq_ignore_ascii_case("tagName") => FilterTerm::TagName(value),
            f if f.eq_ignore_ascii_case("tagValue") => FilterTerm::TagValue(value),
            f if f.eq_ignore_ascii_case("resourceType") => FilterTerm::ResourceType(value),
            f if f.eq_ignore_ascii_case("name") => FilterTerm::Name(value),
            f if f.eq_ignore_ascii_case("location") => FilterTerm::Location(value),
            other => return Err(format!("Invalid $filter: unsupported property '{other}'.")),
        };
        terms.push(term);
    }
    let tag_names = terms
        .iter()
        .filter(|t| matches!(t, FilterTerm::TagName(_)))
        .count();
    let tag_values = terms
        .iter()
        .filter(|t| matches!(t, FilterTerm::TagValue(_)))
        .count();
    let others = terms.len() - tag_names - tag_values;
    if tag_values > 0 && tag_names == 0 {
        return Err("Invalid $filter: tagValue can only be used with tagName.".into());
    }
    if (tag_names > 0 && others > 0) || tag_names > 1 || tag_values > 1 {
        return Err(
            "Invalid $filter: a tag filter (tagName, optionally with tagValue) cannot be \
             combined with other filters."
                .into(),
        );
    }
    Ok(terms)
}

/// Splits a filter at ` and ` outside quotes.
fn split_and(filter: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut rest = filter;
    while let Some(c) = rest.chars().next() {
        if c == '\'' {
            quoted = !quoted;
        }
        if !quoted && rest.len() >= 5 && rest[..5].eq_ignore_ascii_case(" and ") {
            parts.push(std::mem::take(&mut current));
            rest = &rest[5..];
            continue;
        }
        current.push(c);
        rest = &rest[c.len_utf8()..];
    }
    parts.push(current);
    parts
}

fn matches_filter(resource: &Resource, terms: &[FilterTerm]) -> bool {
    let tag_name = terms.iter().find_map(|t| match t {
        FilterTerm::TagName(n) => Some(n),
        _ => None,
    });
    let tag_value = terms.iter().find_map(|t| match t {
        FilterTerm::TagValue(v) => Some(v),
        _ => None,
    });
    if let Some(name) = tag_name {
        // Tag names match case-insensitively, values exactly (as ARM does).
        let value = resource
            .tags
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str().unwrap_or_default());
        return match (value, tag_value) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(found), Some(wanted)) => found == wanted,
        };
    }
    terms.iter().all(|term| match term {
        FilterTerm::ResourceType(t) => resource.kind.full_type().eq_ignore_ascii_case(t),
        FilterTerm::Name(n) => resource.name.eq_ignore_ascii_case(n),
        FilterTerm::Location(l) => resource.location.eq_ignore_ascii_case(l),
        FilterTerm::TagName(_) | FilterTerm::TagValue(_) => true,
    })
}

/// `GET /subscriptions/{sub}[/resourceGroups/{rg}]/resources`: ARM's generic list.
fn list_generic(
    state: &AzureState,
    request: &ArmRequest,
    subscription: &str,
    group: Option<&str>,
) -> Response {
    let terms = match request.param("$filter").map(parse_resource_filter) {
        None => Vec::new(),
        Some(Ok(terms)) => terms,
        Some(Err(message)) => return bad_request("InvalidFilterInQueryString", message),
    };
    let top = match request.param("$top").map(str::parse::<usize>) {
        None => MAX_PAGE,
        Some(Ok(top)) if top >= 1 => top.min(MAX_PAGE),
        Some(_) => {
            return bad_request(
                "InvalidTopInQueryString",
                "The $top value must be a positive integer.",
            );
        }
    };
    let by_tag = terms.iter().any(|t| matches!(t, FilterTerm::TagName(_)));
    let store = state.store();
    let page_size = state.page_size(top);
    let page = page_of(&store, request, page_size, |r| {
        r.subscription.eq_ignore_ascii_case(subscription)
            && group.is_none_or(|g| r.group.eq_ignore_ascii_case(g))
            && matches_filter(r, &terms)
    });
    match page {
        Ok((found, next)) => list_body(
            found
                .iter()
                .map(|r| {
                    let mut item = json!({
                        "id": r.id, "name": r.name, "type": r.kind.full_type(),
                        "location": r.location,
                    });
                    if !by_tag && !r.tags.is_empty() {
                        item["tags"] = Value::Object(r.tags.clone());
                    }
                    if let Some(sku) = &r.sku {
                        item["sku"] = sku.clone();
                    }
                    if let Some(zones) = &r.zones {
                        item["zones"] = zones.clone();
                    }
                    if r.kind == Kind::Disk
                        && let Some(vm) = store.resources.values().find(|vm| {
                            vm.kind == Kind::Vm
                                && os_disk_id(vm).as_deref() == Some(&r.id.to_lowercase())
                        })
                    {
                        item["managedBy"] = json!(vm.id);
                    }
                    item
                })
                .collect(),
            next,
        ),
        Err(refusal) => refusal.into_response(),
    }
}

/// `GET .../locations/{loc}/operations/{id}` (`result: false`) and
/// `.../operationResults/{id}` (`result: true`).
fn operation_status(
    state: &AzureState,
    request: &ArmRequest,
    namespace: &str,
    id: &str,
    result: bool,
) -> Response {
    let store = state.store();
    let Some(operation) = store
        .operations
        .get(id)
        .filter(|op| op.namespace.eq_ignore_ascii_case(namespace))
        .cloned()
    else {
        return arm_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("The operation '{id}' could not be found."),
        );
    };
    drop(store);
    let now = Utc::now();
    let done = now >= operation.finishes;
    if result {
        if !done {
            let mut response = StatusCode::ACCEPTED.into_response();
            operation_headers(
                &mut response,
                request,
                &operation.subscription,
                id,
                &operation,
                true,
            );
            return response;
        }
        return match &operation.failure {
            Some((code, message)) => arm_error(StatusCode::CONFLICT, code, message.clone()),
            None => StatusCode::NO_CONTENT.into_response(),
        };
    }
    let status = match (&operation.failure, done) {
        (_, false) => "InProgress",
        (Some(_), true) => "Failed",
        (None, true) => "Succeeded",
    };
    let mut body = json!({
        "name": id,
        "status": status,
        "startTime": timestamp(operation.started),
    });
    if done {
        body["endTime"] = json!(timestamp(operation.finishes));
    }
    if done && let Some((code, message)) = &operation.failure {
        body["error"] = json!({"code": code, "message": message});
    }
    let mut response = Json(body).into_response();
    if !done {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after(operation.finishes));
    }
    response
}

// ---------------------------------------------------------------------------------------
// Seeding

/// Makes a running VM with its NIC and public IP (all deleted with it) the way another tool
/// would, for `POST /_sim/servers`: in the first registered app's subscription and resource
/// group (made if missing), else in [`SEED_SUBSCRIPTION`] / [`SEED_RESOURCE_GROUP`].
pub fn seed_vm(state: &AzureState, mut spec: NewServer) -> SimServer {
    let now = Utc::now();
    let mut store = state.store();
    let (subscription, group) = store
        .app_order
        .iter()
        .filter_map(|id| store.apps.get(id))
        .map(|app| {
            (
                app.subscription.clone(),
                app.resource_group
                    .clone()
                    .unwrap_or_else(|| SEED_RESOURCE_GROUP.into()),
            )
        })
        .next()
        .unwrap_or_else(|| (SEED_SUBSCRIPTION.into(), SEED_RESOURCE_GROUP.into()));
    let location = store
        .groups
        .get(&group_key(&subscription, &group))
        .map(|g| g.location.clone())
        .unwrap_or_else(|| SEED_LOCATION.into());
    ensure_group(&mut store, &subscription, &group, &location);
    spec.region = location.clone();
    let mut tags = Map::new();
    for (key, value) in &spec.labels {
        tags.insert(key.clone(), json!(value));
    }
    let name = spec.name.clone();
    // The group's first virtual network and its first subnet (the app's), else `sim-vnet`.
    let existing = store
        .resources
        .values()
        .filter(|r| {
            r.kind == Kind::Vnet
                && r.deleting_until.is_none()
                && r.subscription.eq_ignore_ascii_case(&subscription)
                && r.group.eq_ignore_ascii_case(&group)
        })
        .min_by_key(|r| r.seq)
        .and_then(|vnet| {
            let subnet = vnet.properties.pointer("/subnets/0/name")?.as_str()?;
            Some(format!("{}/subnets/{subnet}", vnet.id))
        });
    let subnet_id = match existing {
        Some(subnet_id) => subnet_id,
        None => {
            let vnet = insert_resource(
                &mut store,
                Kind::Vnet,
                &subscription,
                &group,
                "sim-vnet",
                &location,
                Map::new(),
                json!({"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
                       "subnets": [{"name": "default", "properties": {"addressPrefix": "10.1.0.0/24"}}]}),
                now,
            );
            format!("{vnet}/subnets/default")
        }
    };
    let ip_id = insert_resource(
        &mut store,
        Kind::PublicIp,
        &subscription,
        &group,
        &format!("{name}-ip"),
        &location,
        tags.clone(),
        json!({"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4",
               "idleTimeoutInMinutes": 4, "ipTags": []}),
        now,
    );
    store.next_address += 1;
    let address = address_for(store.next_address);
    if let Some(ip) = store.resources.get_mut(&ip_id.to_lowercase()) {
        ip.address = Some(address);
        ip.sku = Some(json!({"name": "Standard", "tier": "Regional"}));
    }
    let nic_id = insert_resource(
        &mut store,
        Kind::Nic,
        &subscription,
        &group,
        &format!("{name}-nic"),
        &location,
        tags.clone(),
        json!({"ipConfigurations": [{"name": "ipconfig1", "properties": {
                   "subnet": {"id": subnet_id}, "privateIPAllocationMethod": "Dynamic",
                   "privateIPAddress": "10.1.0.4", "privateIPAddressVersion": "IPv4", "primary": true,
                   "publicIPAddress": {"id": ip_id, "properties": {"deleteOption": "Delete"}}}}],
               "dnsSettings": {"dnsServers": [], "appliedDnsServers": []},
               "enableAcceleratedNetworking": false, "enableIPForwarding": false,
               "nicType": "Standard"}),
        now,
    );
    let disk_name = format!("{name}_OsDisk_1_{}", uuid::Uuid::new_v4().simple());
    let (publisher, offer, sku, exact) = IMAGES[0];
    let properties = json!({
        "hardwareProfile": {"vmSize": spec.size},
        "storageProfile": {
            "imageReference": {"publisher": publisher, "offer": offer, "sku": sku,
                "version": "latest", "exactVersion": exact},
            "osDisk": {"osType": "Linux", "name": disk_name, "createOption": "FromImage",
                "caching": "ReadWrite", "deleteOption": "Delete", "diskSizeGB": 30,
                "managedDisk": {"storageAccountType": "Premium_LRS",
                    "id": resource_id(&subscription, &group, Kind::Disk, &disk_name)}},
            "dataDisks": [], "diskControllerType": "SCSI",
        },
        "osProfile": {"computerName": name, "adminUsername": "azureuser",
            "linuxConfiguration": {"disablePasswordAuthentication": true, "provisionVMAgent": true},
            "secrets": [], "allowExtensionOperations": true, "requireGuestProvisionSignal": true},
        "networkProfile": {"networkInterfaces": [{"id": nic_id,
            "properties": {"deleteOption": "Delete", "primary": true}}]},
    });
    let boot = chrono::Duration::from_std(state.config.boot_delay).unwrap_or_default();
    let disk = disk_for(&subscription, &group, &disk_name, &location, &properties);
    insert_resource(
        &mut store,
        Kind::Disk,
        &subscription,
        &group,
        &disk_name,
        &location,
        Map::new(),
        disk,
        now,
    );
    let vm_id = insert_resource(
        &mut store,
        Kind::Vm,
        &subscription,
        &group,
        &name,
        &location,
        tags,
        properties,
        now + boot,
    );
    let server = state.with_cloud(Vendor::Azure, |cloud| cloud.insert(spec));
    if let Some(vm) = store.resources.get_mut(&vm_id.to_lowercase()) {
        vm.server_id = Some(server.id);
    }
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_filters_parse_as_arm_documents_them() {
        assert_eq!(
            parse_resource_filter("tagName eq 'provisioner-idempotency-key' and tagValue eq 'k 1'"),
            Ok(vec![
                FilterTerm::TagName("provisioner-idempotency-key".into()),
                FilterTerm::TagValue("k 1".into()),
            ])
        );
        assert_eq!(
            parse_resource_filter(
                "resourceType eq 'Microsoft.Compute/virtualMachines' and name eq 'a and b'"
            ),
            Ok(vec![
                FilterTerm::ResourceType("Microsoft.Compute/virtualMachines".into()),
                FilterTerm::Name("a and b".into()),
            ])
        );
        assert!(parse_resource_filter("tagValue eq 'v'").is_err());
        assert!(parse_resource_filter("tagName eq 'k' and resourceType eq 'x'").is_err());
        assert!(parse_resource_filter("tagName eq k").is_err());
        assert!(parse_resource_filter("plan eq 'x'").is_err());
    }

    #[test]
    fn names_and_api_versions() {
        assert!(valid_name(Kind::Vm, "web-1"));
        assert!(!valid_name(Kind::Vm, "-web"));
        assert!(!valid_name(Kind::Nic, "nic-"));
        assert!(valid_name(Kind::Nic, "nic_"));
        assert!(valid_api_version("2024-07-01"));
        assert!(valid_api_version("2024-07-01-preview"));
        assert!(!valid_api_version("latest"));
    }
}
