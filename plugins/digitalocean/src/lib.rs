//! DigitalOcean provider plugin: a WebAssembly component (wasm32-wasip2) implementing the
//! `provisioner:provider` world against the DigitalOcean API v2 (droplets).
//!
//! DigitalOcean has no idempotency header, so the order's idempotency key travels as the
//! droplet tag `provisioner-idempotency-key:<key>`; `create-server` first lists droplets by
//! that tag (`GET /v2/droplets?tag_name=...`) and adopts the oldest it finds. Order labels become
//! tags `<key>:<value>`. Each droplet has its own key tag, so `list-servers` reads every page
//! of all droplets (`GET /v2/droplets?page=&per_page=200`) and keeps those carrying one.
//!
//! Droplet names need not be unique at DigitalOcean, so the order's name is used as it is.
//! SSH keys: each public key of the order is looked up in the account's key store by its
//! MD5 fingerprint (`GET /v2/account/keys/{fingerprint}`) and filed there when missing
//! (`POST /v2/account/keys`, named `provisioner-<fingerprint hex>`; one filed meanwhile by a
//! concurrent order is found again); the droplet is created with the keys' ids. Keys are
//! never deleted by the plugin. User data goes as raw text (at most 64 KiB).
//!
//! Configuration (manifest `[config]`): `base-url` (default
//! `https://api.digitalocean.com`); optional offline catalogues for `validate` (see
//! `provider_sdk::catalogue`), each a comma-separated list of slugs: `regions` (default
//! DigitalOcean's public regions), `sizes` and `images`; without `sizes` or `images` any
//! well-formed slug passes and DigitalOcean decides. Secret (manifest `[secrets]`): `token`,
//! a personal access token.
//!
//! Reference: the DigitalOcean OpenAPI specification (digitalocean/openapi), `droplets`.

mod api;

use provider_sdk::adopt::{self, Existing};
use provider_sdk::catalogue::{Accepted, Known};
use provider_sdk::http::{ApiClient, HttpMethod as Method, percent_encode};
use provider_sdk::paging::{self, Page};
use provider_sdk::{
    IDEMPOTENCY_LABEL, LabelledServer, PluginCatalogue, PluginInfo, Provider, ProviderError,
    Server, ServerRequest, block_on, check_user_data_len, get_config, is_hostname, require_secret,
};

use api::{CreateDroplet, CreateSshKey, Droplet, DropletEnvelope, DropletList, SshKeyEnvelope};
use provider_sdk::ssh::{self, PublicKey};

/// DigitalOcean's largest user data, in bytes.
const MAX_USER_DATA: usize = 64 * 1024;

const DEFAULT_BASE_URL: &str = "https://api.digitalocean.com";

/// DigitalOcean's public regions; the manifest's `regions` config overrides the list.
const REGIONS: &[&str] = &[
    "nyc1", "nyc2", "nyc3", "sfo1", "sfo2", "sfo3", "ams2", "ams3", "sgp1", "lon1", "fra1", "tor1",
    "blr1", "syd1", "atl1",
];

/// The regions, sizes and images `validate` accepts offline, and the `catalogue` export's
/// lists: the configured ones, else [`REGIONS`]; sizes and images only when configured.
const ACCEPTED: Accepted = Accepted {
    region: Known::region(REGIONS),
    size: Known::size(&[]),
    image: Known::image(&[]),
};

struct DigitalOceanPlugin;

fn client() -> Result<ApiClient, ProviderError> {
    let base_url = get_config("base-url").unwrap_or_else(|| DEFAULT_BASE_URL.into());
    Ok(ApiClient::new(&base_url, api::error_reason).with_bearer(&require_secret("token")?))
}

/// The tag carrying an idempotency key.
fn key_tag(key: &str) -> String {
    format!("{IDEMPOTENCY_LABEL}:{key}")
}

/// DigitalOcean tags: letters, digits, `:`, `-`, `_`; at most 255 characters.
fn is_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 255
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '_'))
}

fn check(request: &ServerRequest) -> Result<(), ProviderError> {
    let invalid = |message: String| Err(ProviderError::InvalidRequest(message));
    if !is_hostname(&request.name) {
        return invalid(format!(
            "name '{}' is not a valid hostname (letters, digits, hyphens, dots)",
            request.name
        ));
    }
    ACCEPTED.check_slugs(request, "a droplet size slug", "an image slug")?;
    if !is_tag(&key_tag(&request.idempotency_key)) {
        return invalid(format!(
            "idempotency key '{}' cannot be part of a DigitalOcean tag",
            request.idempotency_key
        ));
    }
    ssh::parse_all(&request.ssh_keys)?;
    check_user_data_len(request.user_data.as_deref(), MAX_USER_DATA, "DigitalOcean")?;
    for (key, value) in &request.labels {
        if key == IDEMPOTENCY_LABEL || !is_tag(&format!("{key}:{value}")) {
            return invalid(format!(
                "label '{key}={value}' cannot be a DigitalOcean tag (letters, digits, '-', '_')"
            ));
        }
    }
    Ok(())
}

/// The id of `key` in the account's key store, filing it when missing.
async fn key_id(client: &ApiClient, key: &PublicKey) -> Result<u64, ProviderError> {
    let lookup = format!("/v2/account/keys/{}", percent_encode(&key.md5_fingerprint));
    match client
        .call::<SshKeyEnvelope, _>(Method::GET, &lookup, None::<&()>)
        .await
    {
        Ok(found) => return Ok(found.ssh_key.id),
        Err(ProviderError::NotFound(_)) => {}
        Err(other) => return Err(other),
    }
    let name = key.store_name();
    let body = CreateSshKey {
        name: &name,
        public_key: &key.openssh,
    };
    match client
        .call::<SshKeyEnvelope, _>(Method::POST, "/v2/account/keys", Some(&body))
        .await
    {
        Ok(created) => Ok(key.filed_as(created.ssh_key.id)),
        // "SSH Key is already in use on your account": filed meanwhile, find it again.
        Err(ProviderError::InvalidRequest(detail)) => client
            .call::<SshKeyEnvelope, _>(Method::GET, &lookup, None::<&()>)
            .await
            .map(|found| found.ssh_key.id)
            .map_err(|_| ProviderError::InvalidRequest(detail)),
        Err(other) => Err(other),
    }
}

/// Every droplet matching `filter` (a query, or nothing), over every page.
/// DigitalOcean's `links.pages.next` points at its public host, so the next page is asked
/// by number from the configured base URL, as DigitalOcean's own clients do.
async fn droplets(client: &ApiClient, filter: &str) -> Result<Vec<Droplet>, ProviderError> {
    paging::read_all(async |page: Option<u32>| {
        let page = page.unwrap_or(1);
        let path = format!("/v2/droplets?{filter}page={page}&per_page=200");
        let list: DropletList = client.call(Method::GET, &path, None::<&()>).await?;
        // An empty page ends the walk even if a `next` link says otherwise.
        let more = list.links.pages.next.is_some() && !list.droplets.is_empty();
        Ok(Page {
            items: list.droplets,
            next: more.then_some(page + 1),
        })
    })
    .await
}

/// The droplet tagged with `key`, if any (the oldest, if several are).
async fn find(client: &ApiClient, key: &str) -> Result<Option<Server>, ProviderError> {
    let filter = format!("tag_name={}&", percent_encode(&key_tag(key)));
    let found = droplets(client, &filter).await?;
    Ok(adopt::oldest(found, |d| (d.created_at.clone(), d.id)).map(Server::from))
}

/// Every droplet carrying a key tag.
async fn labelled(client: &ApiClient) -> Result<Vec<LabelledServer>, ProviderError> {
    let prefix = key_tag("");
    let found = droplets(client, "").await?;
    Ok(adopt::labelled(
        found,
        |droplet| {
            droplet
                .tags
                .iter()
                .find_map(|tag| tag.strip_prefix(&prefix).filter(|key| !key.is_empty()))
                .map(str::to_string)
        },
        Server::from,
    ))
}

fn droplet_path(vendor_id: &str) -> Result<String, ProviderError> {
    let id: u64 = vendor_id
        .parse()
        .map_err(|_| ProviderError::InvalidRequest(format!("'{vendor_id}' is not a droplet id")))?;
    Ok(format!("/v2/droplets/{id}"))
}

impl Provider for DigitalOceanPlugin {
    fn info() -> PluginInfo {
        PluginInfo {
            vendor: "digitalocean".into(),
            display_name: "DigitalOcean".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// The lists `validate` checks against ([`ACCEPTED`]).
    fn catalogue() -> PluginCatalogue {
        ACCEPTED.catalogue()
    }

    fn validate(request: ServerRequest) -> Result<(), ProviderError> {
        check(&request)
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
            let path = droplet_path(&vendor_id)?;
            let found: DropletEnvelope = client()?.call(Method::GET, &path, None::<&()>).await?;
            Ok(found.droplet.into())
        })
    }

    fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
        block_on(async {
            let path = droplet_path(&vendor_id)?;
            // 204 No Content: an empty body reads as null.
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
    check(&request)?;
    block_on(async {
        let client = client()?;
        let look_up = async || find(&client, &request.idempotency_key).await;
        adopt::adopt_or_create(existing, look_up, async || {
            let mut tags = vec![key_tag(&request.idempotency_key)];
            tags.extend(request.labels.iter().map(|(k, v)| format!("{k}:{v}")));
            let mut key_ids = Vec::new();
            for key in ssh::parse_all(&request.ssh_keys)? {
                key_ids.push(key_id(&client, &key).await?);
            }
            let body = CreateDroplet {
                name: &request.name,
                region: &request.region,
                size: &request.size,
                image: &request.image,
                ssh_keys: &key_ids,
                user_data: request.user_data.as_deref(),
                tags,
                ipv6: true,
            };
            let created: DropletEnvelope = client
                .call(Method::POST, "/v2/droplets", Some(&body))
                .await?;
            Ok(created.droplet.into())
        })
        .await
    })
}

provider_sdk::export_provider!(DigitalOceanPlugin);
