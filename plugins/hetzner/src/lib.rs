//! Hetzner Cloud provider plugin: a WebAssembly component (wasm32-wasip2) implementing the
//! `provisioner:provider` world against the Hetzner Cloud API.
//!
//! The order's idempotency key travels to Hetzner as the label
//! `provisioner-idempotency-key`, so `create-server` first looks for a server carrying it
//! (`GET /servers?label_selector=...`) and adopts it (the oldest, if several carry it)
//! instead of making a second one; `list-servers` reads every page of the servers carrying
//! the label at all (`label_selector=provisioner-idempotency-key`).
//!
//! Hetzner requires server names to be unique per project, and every tenant's orders share
//! one project: the server is named `<name>-<suffix>` (`provider_sdk::unique_name`, from the
//! idempotency key, at most 63 characters), so no order fails on, or learns of, a name
//! another order used; `server.name` reports that name.
//!
//! SSH keys: each public key of the order is looked up in the project's key store by its
//! MD5 fingerprint (`GET /ssh_keys?fingerprint=`) and filed there when missing
//! (`POST /ssh_keys`, named `provisioner-<fingerprint hex>`, labelled
//! `managed-by=provisioner`; a concurrent filing of the same key is found again); the
//! server is created with the keys' ids. Keys are never deleted by the plugin (other
//! servers may use them). User data goes to Hetzner as raw text; labels as Hetzner labels.
//!
//! Errors: the SDK's status mapping, except that a create refused with a capacity code
//! (`resource_unavailable`, `placement_error`, `no_space_left_in_location`: the server type
//! is sold out in the location) is `no-capacity`, and one refused with
//! `resource_limit_exceeded` (the project's limits) `quota-exceeded`.
//!
//! Configuration (manifest `[config]`): `base-url` (default `https://api.hetzner.cloud/v1`);
//! optional offline catalogues for `validate` (see `provider_sdk::catalogue`), each a
//! comma-separated list: `regions` (location codes; default Hetzner's public locations
//! fsn1, nbg1, hel1, ash, hil, sin; `locations` is read as an older name when `regions` is
//! not set), `sizes` (server type names) and `images` (image names); without `sizes` or
//! `images` any well-formed name passes and Hetzner decides. Secret (manifest
//! `[secrets]`): `token`, the API token.
//!
//! # Layout
//! - [`api`]: Hetzner's JSON shapes, the mapping of Hetzner statuses to the WIT status and
//!   of a refused create's error code to the WIT error.
//! - [`validation`]: offline checks of a request.
//! - this file: the exported `provider` interface and the Hetzner calls.

mod api;
mod validation;

use std::collections::BTreeMap;

use provider_sdk::adopt::{self, Existing};
use provider_sdk::http::{ApiClient, HttpMethod as Method, percent_encode};
use provider_sdk::paging::{self, Page};
use provider_sdk::{
    IDEMPOTENCY_LABEL, LabelledServer, PluginCatalogue, PluginInfo, Provider, ProviderError,
    Server, ServerRequest, block_on, get_config, require_secret,
};

use api::{
    CreateServerRequest, CreateSshKey, HetznerServer, ServerEnvelope, ServerList, SshKeyEnvelope,
    SshKeyList,
};
use provider_sdk::ssh::{self, PublicKey};

const DEFAULT_BASE_URL: &str = "https://api.hetzner.cloud/v1";

struct HetznerPlugin;

/// A client for the configured Hetzner API.
fn client() -> Result<ApiClient, ProviderError> {
    let base_url = get_config("base-url").unwrap_or_else(|| DEFAULT_BASE_URL.into());
    Ok(ApiClient::new(&base_url, api::error_reason).with_bearer(&require_secret("token")?))
}

/// Every server matching the label `selector`, over every page (Hetzner serves at most 50
/// a page).
async fn servers(client: &ApiClient, selector: &str) -> Result<Vec<HetznerServer>, ProviderError> {
    let selector = percent_encode(selector);
    paging::read_all(async |page: Option<u64>| {
        let page = page.unwrap_or(1);
        let path = format!("/servers?label_selector={selector}&page={page}&per_page=50");
        let list: ServerList = client.call(Method::GET, &path, None::<&()>).await?;
        let next = list.next_page();
        Ok(Page {
            items: list.servers,
            next,
        })
    })
    .await
}

/// The server labelled with `key`, if any (the oldest, if several are).
async fn find(client: &ApiClient, key: &str) -> Result<Option<Server>, ProviderError> {
    let found = servers(client, &format!("{IDEMPOTENCY_LABEL}=={key}")).await?;
    Ok(adopt::oldest(found, |s| (s.created.clone(), s.id)).map(Server::from))
}

/// Every server carrying the idempotency label, whatever its value.
async fn labelled(client: &ApiClient) -> Result<Vec<LabelledServer>, ProviderError> {
    let found = servers(client, IDEMPOTENCY_LABEL).await?;
    Ok(adopt::labelled(
        found,
        |server| server.labels.remove(IDEMPOTENCY_LABEL),
        Server::from,
    ))
}

/// The id of `key` in the project's key store, filing it when missing.
async fn key_id(client: &ApiClient, key: &PublicKey) -> Result<u64, ProviderError> {
    let lookup = format!(
        "/ssh_keys?fingerprint={}",
        percent_encode(&key.md5_fingerprint)
    );
    let found: SshKeyList = client.call(Method::GET, &lookup, None::<&()>).await?;
    if let Some(stored) = found.ssh_keys.first() {
        return Ok(stored.id);
    }
    let name = key.store_name();
    let body = CreateSshKey {
        name: &name,
        public_key: &key.openssh,
        labels: BTreeMap::from([("managed-by", "provisioner")]),
    };
    match client
        .call::<SshKeyEnvelope, _>(Method::POST, "/ssh_keys", Some(&body))
        .await
    {
        Ok(created) => Ok(key.filed_as(created.ssh_key.id)),
        // Filed meanwhile by a concurrent order: find it again.
        Err(ProviderError::InvalidRequest(detail)) if detail.contains("uniqueness_error") => {
            let found: SshKeyList = client.call(Method::GET, &lookup, None::<&()>).await?;
            found.ssh_keys.first().map(|k| k.id).ok_or_else(|| {
                ProviderError::InvalidRequest(format!(
                    "the SSH key {} could not be filed at Hetzner: {detail}",
                    key.md5_fingerprint
                ))
            })
        }
        Err(other) => Err(other),
    }
}

fn numeric_id(vendor_id: &str) -> Result<u64, ProviderError> {
    vendor_id.parse().map_err(|_| {
        ProviderError::InvalidRequest(format!("'{vendor_id}' is not a Hetzner server id"))
    })
}

impl Provider for HetznerPlugin {
    fn info() -> PluginInfo {
        PluginInfo {
            vendor: "hetzner".into(),
            display_name: "Hetzner Cloud".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The lists `validate` checks against ([`validation::ACCEPTED`]).
    fn catalogue() -> PluginCatalogue {
        validation::ACCEPTED.catalogue()
    }

    fn validate(request: ServerRequest) -> Result<(), ProviderError> {
        validation::check(&request)
    }

    fn create_server(request: ServerRequest) -> Result<Server, ProviderError> {
        make_server(request, Existing::MayExist)
    }

    fn create_new_server(request: ServerRequest) -> Result<Server, ProviderError> {
        make_server(request, Existing::NoneYet)
    }

    fn find_server(idempotency_key: String) -> Result<Option<Server>, ProviderError> {
        block_on(async { find(&client()?, &idempotency_key).await })
    }

    fn get_server(vendor_id: String) -> Result<Server, ProviderError> {
        block_on(async {
            let path = format!("/servers/{}", numeric_id(&vendor_id)?);
            let found: ServerEnvelope = client()?.call(Method::GET, &path, None::<&()>).await?;
            Ok(found.server.into())
        })
    }

    fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
        block_on(async {
            let path = format!("/servers/{}", numeric_id(&vendor_id)?);
            let _: serde_json::Value = client()?.call(Method::DELETE, &path, None::<&()>).await?;
            Ok(())
        })
    }

    fn list_servers() -> Result<Vec<LabelledServer>, ProviderError> {
        block_on(async { labelled(&client()?).await })
    }
}

/// `create-server` (`existing`: [`Existing::MayExist`]) and `create-new-server`
/// ([`Existing::NoneYet`]: no look-up, the host knows no server carries the key yet).
fn make_server(request: ServerRequest, existing: Existing) -> Result<Server, ProviderError> {
    validation::check(&request)?;
    block_on(async {
        let client = client()?;
        let look_up = async || find(&client, &request.idempotency_key).await;
        adopt::adopt_or_create(existing, look_up, async || {
            let labels = adopt::labels_and_key(&request);
            let name = provider_sdk::unique_name(
                &request.name,
                &request.idempotency_key,
                validation::MAX_NAME,
            )?;
            let mut key_ids = Vec::new();
            for key in ssh::parse_all(&request.ssh_keys)? {
                key_ids.push(key_id(&client, &key).await?);
            }
            let body = CreateServerRequest {
                name: &name,
                server_type: &request.size,
                image: &request.image,
                location: &request.region,
                labels,
                ssh_keys: &key_ids,
                user_data: request.user_data.as_deref(),
                start_after_create: true,
            };
            // Hetzner's code decides what the status alone cannot: out of capacity
            // (`resource_unavailable`...), out of the project's limits.
            let answer = client
                .send(Method::POST, "/servers", Some(&body), &[])
                .await?;
            if !(200..300).contains(&answer.status) {
                let mapped = client.error(&Method::POST, "/servers", &answer);
                let code = api::error_code(&answer.body);
                return Err(api::create_error(code.as_deref(), mapped));
            }
            let created: ServerEnvelope = client.parse(&Method::POST, "/servers", answer)?;
            Ok(created.server.into())
        })
        .await
    })
}

provider_sdk::export_provider!(HetznerPlugin);
