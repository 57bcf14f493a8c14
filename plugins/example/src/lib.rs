//! Provider plugin for Example Cloud, and the template every new plugin starts from.
//!
//! Example Cloud is the small REST API the vendor simulator serves under `/example/v1`
//! (its complete reference is the module doc of `vendor-sim/src/example.rs`): bearer-token
//! auth, `POST /servers`, `GET /servers/{id}`, `DELETE /servers/{id}`, and `GET /servers`
//! filtered by tag and paged with `page` / `next_page`. The idempotency key travels as the
//! tag `provisioner-idempotency-key`.
//!
//! # Making it another vendor's plugin
//!
//! Make a project of your own from it (`scripts/new-plugin.sh <dir> <vendor>`, or copy the
//! folder into `plugins/`: `docs/plugin-authoring.md`, step 1), then work through every
//! `TODO(vendor)` below. What changes from vendor to vendor:
//! - who the plugin is: `VENDOR`, `DISPLAY_NAME` (and `vendor` in the manifests);
//! - the offline catalogue: built-in lists in `ACCEPTED`, if the vendor's are stable (else
//!   the manifest's `[config] regions` / `sizes` / `images` are the catalogue); `validate`
//!   checks against it and the `catalogue` export lists it, so the two always agree;
//! - the JSON shapes: `VendorServer` and its envelopes, `CreateBody`, `ErrorBody`;
//! - the vendor's statuses, in `STATUSES` (one field or several);
//! - how the client authenticates, in `client` (bearer token, another header, a login);
//! - the paths, and how a list is filtered and paged, in `list_all` and `find`;
//! - where the idempotency key is carried (tag, label, metadata, name) and how a listed
//!   server gives it back, in `create_server` and `list_servers`;
//! - what `validate` can refuse offline (name rules, label rules);
//! - how SSH keys reach the server (every order's `ssh_keys` are OpenSSH public keys): as
//!   given (Example Cloud), filed in the vendor's key store by fingerprint first (the
//!   Hetzner and DigitalOcean plugins), or through cloud-init user data
//!   (`provider_sdk::cloud_init`, the OpenStack plugin); never dropped;
//! - whether server names must be unique at the vendor: then name the server
//!   `provider_sdk::unique_name(..)` (the Hetzner plugin), as all tenants share one account;
//! - the codes with which the vendor refuses a create when it cannot place the server where
//!   it was asked, now (`CAPACITY_CODES`): they make `no-capacity`, whatever the status.
//!
//! What stays: one export per call, a fresh [`ApiClient`] per call (no state between calls),
//! `block_on` around the async client, the SDK's HTTP error mapping (401/403, 404, 400/409/422,
//! 429 with `Retry-After`, 5xx, no answer), the look-up before every create adopting the
//! oldest server carrying the key (`provider_sdk::adopt`), and reading every page of a list
//! (`provider_sdk::paging`).

use std::collections::BTreeMap;

use provider_sdk::adopt::{self, Existing, id_order};
use provider_sdk::catalogue::{Accepted, Known};
use provider_sdk::http::{ApiClient, HttpMethod, no_capacity, percent_encode};
use provider_sdk::paging::{self, Page};
use provider_sdk::status::{self, Rules};
use provider_sdk::{
    IDEMPOTENCY_LABEL, LabelledServer, PluginCatalogue, PluginInfo, Provider, ProviderError,
    Server, ServerRequest, ServerStatus, block_on, get_config, is_hostname, require_secret,
};
use serde::{Deserialize, Serialize};

// TODO(vendor): your vendor id (the crate is `<vendor>-plugin`; the manifest's `vendor` must
// be the same) and a display name for people.
/// The vendor id orders use; the manifest's `vendor`.
const VENDOR: &str = "example";
/// The vendor's name for people.
const DISPLAY_NAME: &str = "Example Cloud";

// TODO(vendor): built-in lists of the vendor's regions, sizes or images, where they are
// stable and public (`Known::region(&["fra1", "ams1"])`); an empty one means "only what the
// manifest's `[config]` lists, else any value". `validate` checks against these lists and the
// `catalogue` export tells the host the same lists (the console's order form offers them).
/// What `validate` accepts offline, and what `catalogue` lists: Example Cloud's regions,
/// sizes and images change, so only the manifest's `[config]` lists them.
const ACCEPTED: Accepted = Accepted {
    region: Known::region(&[]),
    size: Known::size(&[]),
    image: Known::image(&[]),
};

// TODO(vendor): `validate` checks regions, sizes and images against the manifest's
// `[config] regions`, `sizes`, `images` lists. A vendor whose public regions are stable can
// pass them as the built-in list instead of `&[]` below (used when the manifest has none).

// TODO(vendor): the vendor's largest page size, and its paging scheme (see `list_all`).
/// Servers asked for per page (Example Cloud's maximum).
const PER_PAGE: u32 = 100;

// TODO(vendor): rename (`AcmePlugin`), here and in the export below.
/// The plugin. It keeps no state: every call runs in a fresh instance.
struct ExamplePlugin;

// The WIT export: makes `ExamplePlugin` the component's `provider` interface.
provider_sdk::export_provider!(ExamplePlugin);

// TODO(vendor): the JSON shape of a server in the vendor's answers. Keep only the fields the
// plugin uses (serde ignores the rest); a vendor may nest addresses (`networks.v4[0].ip`),
// give labels as a list of `{key, value}`, or name the id differently.
/// A server as the vendor's API returns it.
#[derive(Deserialize)]
struct VendorServer {
    id: String,
    name: String,
    status: String,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    /// RFC 3339 in UTC: sorts as text (the oldest server carrying a key is adopted).
    created_at: String,
}

// TODO(vendor): the envelope of a one-server answer (Example Cloud: `{"server": {...}}`); some
// vendors answer the bare object, others add more around it (an action, links).
/// The answer to a create or a get: `{"server": SERVER}`.
#[derive(Deserialize)]
struct ServerEnvelope {
    server: VendorServer,
}

// TODO(vendor): the shape of a list answer and where it says that more follows (here
// `next_page`; elsewhere `links.next`, a cursor, a total count, a `Link` header).
/// One page of `GET /servers`: `{"servers": [...], "next_page": 2}`.
#[derive(Deserialize)]
struct ServerPage {
    servers: Vec<VendorServer>,
    #[serde(default)]
    next_page: Option<u32>,
}

// TODO(vendor): the create body: the vendor's field names (Example Cloud calls sizes `plan`),
// how SSH keys are passed (Example Cloud takes the public keys; a vendor with a key store
// wants the ids of keys filed there first, see the module doc), how user data is encoded
// (Example Cloud takes the text; Nova wants base64: `provider_sdk::base64`) and where the
// tags/labels/metadata go.
// Every field of the request must reach the vendor, or `validate` must refuse it.
/// The body of `POST /servers`.
#[derive(Serialize)]
struct CreateBody<'a> {
    name: &'a str,
    region: &'a str,
    plan: &'a str,
    image: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    ssh_keys: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    user_data: Option<&'a str>,
    tags: BTreeMap<&'a str, &'a str>,
}

/// Reads `{"error": {"code": ..., "message": ...}}` into "code: message"; `None` (the SDK then
/// shows the start of the raw body) for any other body, e.g. a proxy's HTML page.
// TODO(vendor): read your vendor's error body.
fn reason(body: &str) -> Option<String> {
    let parsed: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = &parsed["error"];
    Some(format!(
        "{}: {}",
        error["code"].as_str()?,
        error["message"].as_str()?
    ))
}

// TODO(vendor): the error codes with which the vendor refuses a create because it cannot
// place the server where it was asked, now: the region, zone or size is out of capacity
// (Hetzner: `resource_unavailable`, `placement_error`; EC2: `InsufficientInstanceCapacity`;
// Compute Engine: `ZONE_RESOURCE_POOL_EXHAUSTED`). Not the account's limits (those are
// `quota-exceeded`), not a size the region never offers (`invalid-request`). A vendor with
// no such code: leave the list empty, and creates keep the status mapping.
/// Example Cloud's code for a region that cannot take the server now (a 503).
const CAPACITY_CODES: &[&str] = &["no_capacity"];

/// The error of a refused create: `no-capacity` when the vendor's code in `body` is one of
/// [`CAPACITY_CODES`] (keeping the message), else `mapped`, the SDK's mapping of the status.
fn create_error(body: &str, mapped: ProviderError) -> ProviderError {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|parsed| parsed["error"]["code"].as_str());
    match code {
        Some(code) if CAPACITY_CODES.contains(&code) => no_capacity(mapped),
        _ => mapped,
    }
}

/// A client for the vendor's API, from the manifest's `[config] base-url` and
/// `[secrets] token`. Made anew in every call: a plugin keeps nothing between calls.
fn client() -> Result<ApiClient, ProviderError> {
    let base_url = get_config("base-url").ok_or_else(|| {
        ProviderError::Internal("the manifest's [config] base-url is not set".into())
    })?;
    // TODO(vendor): the vendor's credentials and where they go. Example Cloud takes
    // `Authorization: Bearer <token>`; another vendor may want another header
    // (`.with_header("x-api-key", &key)`) or a login first (exchange a user and password
    // for a token with one request, then send it).
    let token = require_secret("token")?;
    Ok(ApiClient::new(&base_url, reason).with_bearer(&token))
}

// TODO(vendor): map every status the vendor documents. Example Cloud has only `creating`
// and `running`; most vendors also have stopped/off, deleting, deleted and error states,
// which map to `Stopped`, `Deleting`, `Deleted` and `Error`. A vendor whose status is made
// of several fields gives one pattern per field (`&["active", "running", "ok"]`, `ANY`
// for any value) and passes every field to `status::map` in `to_server`. A status no rule
// matches is logged and reported as provisioning.
/// The vendor's statuses in the host's terms.
const STATUSES: Rules = &[
    (&["creating"], ServerStatus::Provisioning),
    (&["running"], ServerStatus::Running),
];

/// The vendor's server in the host's terms.
// TODO(vendor): where the id, name and addresses are in the vendor's server object.
fn to_server(vendor: VendorServer) -> Server {
    Server {
        status: status::map(&[&vendor.status], STATUSES),
        vendor_id: vendor.id,
        name: vendor.name,
        ipv4: vendor.ipv4,
        ipv6: vendor.ipv6,
    }
}

/// Every server matching `filter` (a query string without paging), every page.
// TODO(vendor): the list path and the paging scheme. Example Cloud: `page` (1-based) and
// `per_page`, following `next_page` until it is `null`. For a cursor or a `links.next` URL,
// make the page's `next` that (`Option<String>`) and put it in the path (`ApiClient::call`
// also takes a full URL). `read_all` stops at a page without a next, and fails rather than
// loop on a next page it already read.
async fn list_all(api: &ApiClient, filter: &str) -> Result<Vec<VendorServer>, ProviderError> {
    paging::read_all(async |page: Option<u32>| {
        let path = format!(
            "/servers?{filter}&per_page={PER_PAGE}&page={}",
            page.unwrap_or(1)
        );
        let answer: ServerPage = api.call(HttpMethod::GET, &path, None::<&()>).await?;
        Ok(Page {
            items: answer.servers,
            next: answer.next_page,
        })
    })
    .await
}

/// The server carrying the idempotency `key`, if any.
async fn find(api: &ApiClient, key: &str) -> Result<Option<VendorServer>, ProviderError> {
    // TODO(vendor): how to ask the vendor for the servers carrying one tag/label value
    // (Example Cloud: `tag=<key>:<value>`; elsewhere `label_selector=k==v`, `tag_name=...`).
    // A vendor that cannot filter: list everything and compare the key in the plugin.
    let filter = format!(
        "tag={}",
        percent_encode(&format!("{IDEMPOTENCY_LABEL}:{key}"))
    );
    let servers = list_all(api, &filter).await?;
    // If a key ever had two servers, always adopt the same one: the oldest.
    Ok(adopt::oldest(servers, |s| {
        (s.created_at.clone(), id_order(&s.id))
    }))
}

impl Provider for ExamplePlugin {
    /// Who the plugin is: no I/O.
    fn info() -> PluginInfo {
        PluginInfo {
            vendor: VENDOR.into(),
            display_name: DISPLAY_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The regions, sizes and images `validate` accepts ([`ACCEPTED`]): no I/O.
    fn catalogue() -> PluginCatalogue {
        ACCEPTED.catalogue()
    }

    /// Refuses, without any network request, what the vendor would always refuse.
    // TODO(vendor): the vendor's rules for names (and for labels, if it has any the API may
    // send it that it would refuse).
    fn validate(request: ServerRequest) -> Result<(), ProviderError> {
        if !is_hostname(&request.name) {
            return Err(ProviderError::InvalidRequest(format!(
                "name '{}' is not a hostname (labels of 1 to 63 letters, digits and inner \
                 hyphens, at most 253 characters)",
                request.name
            )));
        }
        ACCEPTED.check(&request)?;
        // Every entry must be an OpenSSH public key (the vendor installs it as given).
        provider_sdk::ssh::parse_all(&request.ssh_keys).map(drop)
    }

    fn create_server(request: ServerRequest) -> Result<Server, ProviderError> {
        make_server(request, Existing::MayExist)
    }

    fn create_new_server(request: ServerRequest) -> Result<Server, ProviderError> {
        make_server(request, Existing::NoneYet)
    }

    /// The server made for `idempotency_key`, if any.
    fn find_server(idempotency_key: String) -> Result<Option<Server>, ProviderError> {
        let api = client()?;
        block_on(async { Ok(find(&api, &idempotency_key).await?.map(to_server)) })
    }

    /// The server now; `not-found` (the SDK maps the vendor's 404) once it is gone.
    // TODO(vendor): the path of one server, here and in `delete_server`.
    fn get_server(vendor_id: String) -> Result<Server, ProviderError> {
        let api = client()?;
        block_on(async {
            let path = format!("/servers/{}", percent_encode(&vendor_id));
            let answer: ServerEnvelope = api.call(HttpMethod::GET, &path, None::<&()>).await?;
            Ok(to_server(answer.server))
        })
    }

    /// Deletes the server; `not-found` when it is already gone.
    fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
        let api = client()?;
        block_on(async {
            // TODO(vendor): the delete answer. Example Cloud answers `204` with no body (read as
            // `null`); a vendor answering `202` with an action or a body is just as fine.
            let path = format!("/servers/{}", percent_encode(&vendor_id));
            let _: serde::de::IgnoredAny = api.call(HttpMethod::DELETE, &path, None::<&()>).await?;
            Ok(())
        })
    }

    /// Every server carrying the idempotency label, every page, with its key.
    fn list_servers() -> Result<Vec<LabelledServer>, ProviderError> {
        let api = client()?;
        block_on(async {
            // TODO(vendor): how to list the servers having the label at all, whatever its
            // value (Example Cloud: `tag_key=<key>`; elsewhere a label selector `k`), and
            // where a listed server carries the key (here its `tags`).
            let filter = format!("tag_key={}", percent_encode(IDEMPOTENCY_LABEL));
            let servers = list_all(&api, &filter).await?;
            Ok(adopt::labelled(
                servers,
                |vendor| vendor.tags.remove(IDEMPOTENCY_LABEL),
                to_server,
            ))
        })
    }
}

/// `create-server` ([`Existing::MayExist`]: adopts the server already made for the key, or
/// makes one carrying the key) and `create-new-server` ([`Existing::NoneYet`]: the host
/// knows no server carries the key yet, so no look-up). Does not wait for the boot: the
/// host polls `get_server`.
fn make_server(request: ServerRequest, existing: Existing) -> Result<Server, ProviderError> {
    let api = client()?;
    block_on(async {
        let look_up = async || Ok(find(&api, &request.idempotency_key).await?.map(to_server));
        adopt::adopt_or_create(existing, look_up, async || {
            // TODO(vendor): where the idempotency key travels (a tag, label or metadata
            // entry named IDEMPOTENCY_LABEL), next to the labels the order asked for
            // (`labels_and_key` puts it last, so an order's own label of that name
            // cannot replace it).
            let tags = adopt::labels_and_key(&request);
            let body = CreateBody {
                name: &request.name,
                region: &request.region,
                plan: &request.size,
                image: &request.image,
                ssh_keys: &request.ssh_keys,
                user_data: request.user_data.as_deref(),
                tags,
            };
            // TODO(vendor): the create path and answer (Example Cloud: `201`, the server).
            // Sent, then read: a refusal's body may say the vendor is out of capacity.
            let answer = api
                .send(HttpMethod::POST, "/servers", Some(&body), &[])
                .await?;
            if !(200..300).contains(&answer.status) {
                let mapped = api.error(&HttpMethod::POST, "/servers", &answer);
                return Err(create_error(&answer.body, mapped));
            }
            let created: ServerEnvelope = api.parse(&HttpMethod::POST, "/servers", answer)?;
            Ok(to_server(created.server))
        })
        .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A create refused with a capacity code is no-capacity, with the message the status
    /// mapping gave it; any other refusal keeps that mapping.
    #[test]
    fn capacity_refusals_are_no_capacity() {
        let body = r#"{"error": {"code": "no_capacity", "message": "no capacity in this region"}}"#;
        let detail = "POST /servers -> 503: no_capacity: no capacity in this region";
        let error = create_error(body, ProviderError::Transient(detail.into()));
        assert!(
            matches!(&error, ProviderError::NoCapacity(m) if m == detail),
            "{error:?}"
        );
        let other = r#"{"error": {"code": "server_error", "message": "oops"}}"#;
        assert!(matches!(
            create_error(other, ProviderError::Transient("x".into())),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            create_error("<html>busy</html>", ProviderError::Transient("x".into())),
            ProviderError::Transient(_)
        ));
    }
}
