//! OpenStack provider plugin: a WebAssembly component (wasm32-wasip2) implementing the
//! `provisioner:provider` world against an OpenStack cloud (Keystone v3 + Nova v2.1 +
//! Glance v2), as OpenStack-based public clouds expose it.
//!
//! Every call authenticates with a password (`POST /v3/auth/tokens`, the token from the
//! `X-Subject-Token` header), takes the compute and image endpoints from the service
//! catalog, and re-authenticates once when the compute API answers 401 (an expired token).
//! The order's idempotency key travels as the server metadata
//! `provisioner-idempotency-key`; `create-server` first lists servers of the same name
//! (`GET /servers/detail?name=^<name>$`) and adopts the one carrying the key (the oldest,
//! if several do: Nova lists newest first);
//! `find-server` and `list-servers` read every page of `GET /servers/detail?limit=&marker=`
//! and keep the servers whose metadata carries a key.
//!
//! Server names need not be unique in Nova, so the order's name is used as it is. SSH keys
//! reach the server through cloud-init (`provider_sdk::cloud_init`): Nova takes one key pair
//! per server, cloud-init any number. With keys and no user data the server gets a
//! `#cloud-config` listing them; with both, a MIME multipart message with the order's user
//! data unchanged as its first part and the keys in a second cloud-config part that appends
//! to (does not replace) the first's lists. User data cloud-init would not recognise cannot
//! carry keys: such an order is refused by `validate`. Nova takes the user data base64
//! encoded, at most 65535 bytes so; a larger one is refused too. Labels become metadata.
//!
//! Configuration (manifest `[config]`): `auth-url` (Keystone v3, e.g.
//! `https://keystone.example:5000/v3`), `username`, `project-name`, optional
//! `user-domain-name` / `project-domain-name` (default `Default`), `interface` (default
//! `public`), `network-id` (a network to attach; Nova's default otherwise). The order's
//! `region` selects the catalog region, `size` a flavor (name or id), `image` an image
//! (name or id). Optional offline catalogues for `validate` (see `provider_sdk::catalogue`),
//! each a comma-separated list: `regions` (catalog regions), `sizes` (flavor names or ids),
//! `images` (image names or ids); regions, flavors and images differ from cloud to cloud,
//! so without a list any value of 1-255 characters passes and the cloud decides. Secret
//! (manifest `[secrets]`): `password`.
//!
//! # Layout
//! - [`api`]: Keystone, Nova and Glance JSON shapes, status mapping.
//! - [`session`]: authentication (the Keystone token and catalog kept in the host's cache
//!   until shortly before the token expires), requests with re-authentication on 401.
//! - this file: the exported `provider` interface.

mod api;
mod session;

use provider_sdk::adopt::{self, Existing};
use provider_sdk::catalogue::{Accepted, Known};
use provider_sdk::http::HttpMethod as Method;
use provider_sdk::{
    IDEMPOTENCY_LABEL, LabelledServer, LogLevel, PluginCatalogue, PluginInfo, Provider,
    ProviderError, Server, ServerRequest, block_on, log,
};
use provider_sdk::{cloud_init, ssh};

use api::{CreateServer, CreateServerBody, CreatedEnvelope, ServerEnvelope};
use session::Session;

struct OpenStackPlugin;

/// The regions, sizes and images `validate` accepts offline, and the `catalogue` export's
/// lists. Regions, flavors and images differ from cloud to cloud: no built-in lists, only
/// the manifest's.
const ACCEPTED: Accepted = Accepted {
    region: Known::region(&[]),
    size: Known::size(&[]),
    image: Known::image(&[]),
};

/// Nova's largest `user_data`, base64-encoded.
const MAX_USER_DATA_BASE64: usize = 65535;

/// The user data the server gets, base64-encoded for Nova: the order's own, with its SSH
/// keys added for cloud-init; `invalid-request` when they cannot be carried.
fn user_data(request: &ServerRequest) -> Result<Option<String>, ProviderError> {
    let keys = ssh::parse_all(&request.ssh_keys)?;
    let text = cloud_init::with_ssh_keys(request.user_data.as_deref(), &keys)
        .map_err(ProviderError::InvalidRequest)?;
    let encoded = text.as_deref().map(provider_sdk::base64);
    if let Some(encoded) = &encoded
        && encoded.len() > MAX_USER_DATA_BASE64
    {
        return Err(ProviderError::InvalidRequest(format!(
            "user_data with the ssh_keys is {} bytes base64-encoded; Nova takes at most \
             {MAX_USER_DATA_BASE64}",
            encoded.len()
        )));
    }
    Ok(encoded)
}

fn check(request: &ServerRequest) -> Result<(), ProviderError> {
    let invalid = |message: String| Err(ProviderError::InvalidRequest(message));
    if request.name.trim().is_empty() || request.name.len() > 255 {
        return invalid(format!("name '{}' must be 1-255 characters", request.name));
    }
    for (field, value) in [
        ("region", &request.region),
        ("size", &request.size),
        ("image", &request.image),
    ] {
        if value.trim().is_empty() || value.len() > 255 {
            return invalid(format!("{field} '{value}' must be 1-255 characters"));
        }
    }
    ACCEPTED.check(request)?;
    if request.idempotency_key.is_empty() || request.idempotency_key.len() > 255 {
        return invalid("the idempotency key must be 1-255 characters".into());
    }
    user_data(request)?;
    for (key, value) in &request.labels {
        if key == IDEMPOTENCY_LABEL || key.is_empty() || key.len() > 255 || value.len() > 255 {
            return invalid(format!(
                "label '{key}={value}' cannot be Nova metadata (keys 1-255, values up to 255 characters; '{IDEMPOTENCY_LABEL}' is reserved)"
            ));
        }
    }
    Ok(())
}

impl Provider for OpenStackPlugin {
    fn info() -> PluginInfo {
        PluginInfo {
            vendor: "openstack".into(),
            display_name: "OpenStack".into(),
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
        block_on(async {
            let session = Session::open(None).await?;
            let all = session.all_servers().await?;
            Ok(api::carrying_key(all, &idempotency_key).map(Server::from))
        })
    }

    fn get_server(vendor_id: String) -> Result<Server, ProviderError> {
        block_on(async {
            let session = Session::open(None).await?;
            let url = session.server_url(&vendor_id)?;
            let found: ServerEnvelope = session.request(Method::GET, &url, None::<&()>).await?;
            if let Some(fault) = &found.server.fault {
                log(
                    LogLevel::Warn,
                    &format!("server {vendor_id} fault: {}", fault.message),
                );
            }
            Ok(found.server.into())
        })
    }

    fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
        block_on(async {
            let session = Session::open(None).await?;
            let url = session.server_url(&vendor_id)?;
            let _: serde_json::Value = session.request(Method::DELETE, &url, None::<&()>).await?;
            Ok(())
        })
    }

    fn list_servers() -> Result<Vec<LabelledServer>, ProviderError> {
        block_on(async {
            let session = Session::open(None).await?;
            Ok(api::labelled(session.all_servers().await?))
        })
    }
}

/// `create-server` (`existing`: [`Existing::MayExist`]) and `create-new-server`
/// ([`Existing::NoneYet`]: no look-up, the host knows no server carries the key yet).
fn make_server(request: ServerRequest, existing: Existing) -> Result<Server, ProviderError> {
    check(&request)?;
    block_on(async {
        let session = Session::open(Some(&request.region)).await?;
        let look_up = async || {
            let same_name = session.servers_named(&request.name).await?;
            Ok(api::carrying_key(same_name, &request.idempotency_key).map(Server::from))
        };
        adopt::adopt_or_create(existing, look_up, async || {
            let flavor = session.flavor_id(&request.size).await?;
            let image = session.image_id(&request.image).await?;
            let mut metadata = std::collections::BTreeMap::new();
            for (key, value) in &request.labels {
                metadata.insert(key.clone(), value.clone());
            }
            metadata.insert(
                IDEMPOTENCY_LABEL.to_string(),
                request.idempotency_key.clone(),
            );
            let body = CreateServerBody {
                server: CreateServer {
                    name: request.name.clone(),
                    image_ref: image,
                    flavor_ref: flavor,
                    metadata,
                    user_data: user_data(&request)?,
                    networks: session.networks(),
                },
            };
            let url = format!("{}/servers", session.compute());
            let created: CreatedEnvelope = session.request(Method::POST, &url, Some(&body)).await?;
            Ok(Server {
                vendor_id: created.server.id,
                name: request.name.clone(),
                status: provider_sdk::ServerStatus::Provisioning,
                ipv4: None,
                ipv6: None,
            })
        })
        .await
    })
}

provider_sdk::export_provider!(OpenStackPlugin);
