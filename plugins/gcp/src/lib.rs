//! Google Compute Engine provider plugin: a WebAssembly component (wasm32-wasip2)
//! implementing the `provisioner:provider` world (0.4) against Compute Engine's v1 REST API,
//! authenticated as a service account (OAuth 2.0 JWT bearer grant, the token kept in the
//! host's cache).
//!
//! **Orders.** `region` is a zone (`europe-west4-a`), `size` a machine type (`e2-small`),
//! `image` an image or image family path (`projects/debian-cloud/global/images/family/
//! debian-12`, or `.../images/<name>`, or a full URL). The server is one instance made by
//! `instances.insert` in the project (`[config] project`, else the key's `project_id`), on
//! the `default` network with an external IPv4 address (`ONE_TO_ONE_NAT`), a boot disk from
//! the image that is deleted with the instance; labelled with the order's labels and
//! `provisioner-idempotency-key`.
//!
//! **Idempotency, Compute's way.** `create-server` first looks the key up
//! (`instances.aggregatedList` over every zone, filtered on the label, every page) and
//! adopts the oldest instance carrying it; else it inserts with a `requestId` derived from
//! the key ([`ids::request_id`]: a UUID from SHA-256 of the key, never the nil one), so a
//! repeated insert (a lost answer the look-up missed) is answered with the first insert's
//! operation and makes nothing. The instance name is the order's name made RFC 1035 plus 10
//! hex digits of the key ([`ids::instance_name`]): unique per zone across orders, the same
//! for every retry of one order; a `409 alreadyExists` for it is looked up and adopted when
//! the instance carries the key (Google forgets request ids after about an hour).
//!
//! **The label's value.** GCE label values are at most 63 of `[a-z0-9_-]`. Order ids (the
//! host's keys, UUIDs) fit and are used as they are; any other key is carried as
//! `sha256-` and 56 hex digits of its SHA-256 ([`ids::label_value`]), and the key itself
//! goes into the instance metadata under `provisioner-idempotency-key`, which
//! `list-servers` reports.
//!
//! **Vendor ids** are `<zone>/<instance name>` (every Compute call names the zone). States:
//! `PROVISIONING` / `STAGING` -> provisioning, `RUNNING` -> running, `STOPPING` /
//! `SUSPENDING` / `SUSPENDED` / `TERMINATED` (GCE's word for stopped) -> stopped; an
//! instance this host asked to delete (remembered in the cache for ten minutes) shows
//! `STOPPING` until it is gone: deleting. Gone: not-found. An instance not visible yet
//! whose insert operation this host started is provisioning while the operation runs; if
//! the operation ended with an error, `get-server` answers that error
//! (`ZONE_RESOURCE_POOL_EXHAUSTED` -> no-capacity, `QUOTA_EXCEEDED` -> quota-exceeded): the
//! host ends the attempt on no-capacity and retries the create (Compute replays the
//! `requestId`'s failed operation, so within its replay window the retry fails alike). Addresses: the first
//! `natIP` of the network interfaces' access configs, the first external IPv6.
//!
//! **SSH keys and user data.** The order's keys go into the `ssh-keys` metadata item, one
//! `<user>:<key>` line each (`[config] ssh-user`, default `provisioner`), which Google's
//! guest environment turns into that user's `authorized_keys`; the user data goes raw into
//! the `user-data` item, which cloud-init reads on Google's images.
//!
//! **Errors** (see [`api::compute_error`]): 429 and `rateLimitExceeded` -> rate-limited
//! (with `Retry-After`), `quotaExceeded` / `QUOTA_EXCEEDED` -> quota-exceeded,
//! `ZONE_RESOURCE_POOL_EXHAUSTED` / `..._WITH_DETAILS` -> no-capacity (the zone cannot
//! place the instance now; the same whether the insert's answer or its operation says it),
//! 401/403 -> unauthorized, 404 -> not-found, 400/409 -> invalid-request, 5xx -> transient.
//! A 401 from Compute first drops the cached token and exchanges once more.
//!
//! Configuration (manifest `[config]`, all optional): `base-url` (Compute v1, default
//! `https://compute.googleapis.com/compute/v1`; a fake of it such as the simulator's
//! `http://127.0.0.1:18190/gcp/compute/v1`), `project`, `ssh-user`, `regions` / `sizes` /
//! `images` (offline catalogues for `validate`, `provider_sdk::catalogue`). Secrets
//! (`[secrets]`): `service-account-key`, the key JSON of a service account allowed
//! `compute.instances.create/get/list/delete`, `compute.zoneOperations.get` and to use the
//! image and network (`roles/compute.instanceAdmin.v1` does); its `token_uri` is where the
//! JWT is exchanged.
//!
//! # Layout
//! - [`ids`]: the `requestId`, instance name, label value and vendor id, from the order.
//! - [`auth`]: the service-account key, the RS256 JWT, the token exchange and its cache.
//! - [`api`]: Compute's JSON (instances, operations, aggregated pages), the state and error
//!   mappings.
//! - [`compute`]: the authenticated session and its Compute calls.
//! - [`validation`]: offline checks of a request.
//! - this file: the exported `provider` interface.

mod api;
mod auth;
mod compute;
mod ids;
mod validation;

use std::time::Duration;

use provider_sdk::adopt::{self, Existing, id_order};
use provider_sdk::{
    IDEMPOTENCY_LABEL, LabelledServer, PluginCatalogue, PluginInfo, Provider, ProviderError,
    Server, ServerRequest, ServerStatus, block_on, cache, get_config,
};
use serde_json::json;

use api::Instance;
use compute::Session;
use ids::VendorId;

/// How long this host remembers an insert's operation (for `get-server` before the
/// instance shows) and a delete it asked for.
const REMEMBER: Duration = Duration::from_secs(600);

struct GcpPlugin;

/// The cache key of the insert operation of `id`.
fn insert_key(id: &VendorId) -> String {
    format!("insert-op/{id}")
}

/// The cache key marking `id` as being deleted.
fn deleting_key(id: &VendorId) -> String {
    format!("deleting/{id}")
}

/// The oldest of `found` (by creation time, then id).
fn oldest(found: Vec<Instance>) -> Option<Server> {
    adopt::oldest(found, |i| (i.creation_timestamp.clone(), id_order(&i.id)))
        .map(|instance| instance.to_server())
}

/// The SSH user of the keys: `[config] ssh-user`, default `provisioner`.
fn ssh_user() -> String {
    get_config("ssh-user")
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "provisioner".into())
}

/// The body of `instances.insert` for an order, its keys for `user`.
fn insert_body(request: &ServerRequest, name: &str, user: &str) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    for (key, value) in &request.labels {
        labels.insert(key.clone(), json!(value));
    }
    labels.insert(
        IDEMPOTENCY_LABEL.into(),
        json!(ids::label_value(&request.idempotency_key)),
    );
    let mut items = vec![json!({"key": IDEMPOTENCY_LABEL, "value": request.idempotency_key})];
    if !request.ssh_keys.is_empty() {
        let lines: Vec<String> = request
            .ssh_keys
            .iter()
            .map(|key| format!("{user}:{}", key.trim()))
            .collect();
        items.push(json!({"key": "ssh-keys", "value": lines.join("\n")}));
    }
    if let Some(user_data) = &request.user_data {
        items.push(json!({"key": "user-data", "value": user_data}));
    }
    json!({
        "name": name,
        "machineType": Session::machine_type(&request.region, &request.size),
        "labels": labels,
        "metadata": {"items": items},
        "disks": [{
            "boot": true,
            "autoDelete": true,
            "initializeParams": {"sourceImage": request.image},
        }],
        "networkInterfaces": [{
            "network": "global/networks/default",
            "accessConfigs": [{"type": "ONE_TO_ONE_NAT", "name": "External NAT"}],
        }],
    })
}

/// The server an insert's answer stands for: provisioning, or the operation's error.
fn inserted(id: &VendorId, operation: &api::Operation) -> Result<Server, ProviderError> {
    if operation.is_done()
        && let Some(failure) = operation.failure()
    {
        return Err(failure);
    }
    let _ = cache::set(&insert_key(id), operation.name.as_bytes(), REMEMBER);
    Ok(Server {
        vendor_id: id.to_string(),
        name: id.name.clone(),
        status: ServerStatus::Provisioning,
        ipv4: None,
        ipv6: None,
    })
}

/// `instance` as the order's server; a `STOPPING` one this host asked to delete is
/// deleting.
fn current(instance: &Instance) -> Server {
    let mut server = instance.to_server();
    if instance.status == "STOPPING" {
        let id = VendorId {
            zone: instance.zone_name().to_string(),
            name: instance.name.clone(),
        };
        if cache::get(&deleting_key(&id)).is_some() {
            server.status = ServerStatus::Deleting;
        }
    }
    server
}

impl Provider for GcpPlugin {
    fn info() -> PluginInfo {
        PluginInfo {
            vendor: "gcp".into(),
            display_name: "Google Compute Engine".into(),
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
        let label = ids::label_value(&idempotency_key);
        block_on(async {
            let session = Session::open().await?;
            Ok(oldest(session.labelled(Some(&label)).await?))
        })
    }

    fn get_server(vendor_id: String) -> Result<Server, ProviderError> {
        let id = VendorId::parse(&vendor_id)?;
        block_on(async {
            let session = Session::open().await?;
            match session.instance(&id).await {
                Ok(instance) => Ok(current(&instance)),
                Err(ProviderError::NotFound(gone)) => {
                    let Some(operation) = cache::get(&insert_key(&id))
                        .and_then(|bytes| String::from_utf8(bytes).ok())
                    else {
                        return Err(ProviderError::NotFound(gone));
                    };
                    let operation = session.operation(&id.zone, &operation).await?;
                    match (operation.is_done(), operation.failure()) {
                        (false, _) => Ok(Server {
                            vendor_id: id.to_string(),
                            name: id.name.clone(),
                            status: ServerStatus::Provisioning,
                            ipv4: None,
                            ipv6: None,
                        }),
                        (true, Some(failure)) => Err(failure),
                        (true, None) => Err(ProviderError::NotFound(gone)),
                    }
                }
                Err(other) => Err(other),
            }
        })
    }

    fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
        let id = VendorId::parse(&vendor_id)?;
        block_on(async {
            let session = Session::open().await?;
            let operation = match session.delete(&id).await {
                // No such instance (its insert failed, or it is gone): the insert's operation
                // no longer speaks for it, else the poll after this delete would read the
                // failed insert's error (a zone out of resources: no-capacity) for ever.
                Err(ProviderError::NotFound(gone)) => {
                    cache::delete(&insert_key(&id));
                    return Err(ProviderError::NotFound(gone));
                }
                other => other?,
            };
            if operation.is_done()
                && let Some(failure) = operation.failure()
            {
                return Err(failure);
            }
            let _ = cache::set(&deleting_key(&id), b"1", REMEMBER);
            cache::delete(&insert_key(&id));
            Ok(())
        })
    }

    fn list_servers() -> Result<Vec<LabelledServer>, ProviderError> {
        block_on(async {
            let session = Session::open().await?;
            Ok(api::labelled(session.labelled(None).await?))
        })
    }
}

/// `create-server` (`existing`: [`Existing::MayExist`]) and `create-new-server`
/// ([`Existing::NoneYet`]: no look-up, the host knows no server carries the key yet).
fn make_server(request: ServerRequest, existing: Existing) -> Result<Server, ProviderError> {
    validation::check(&request)?;
    let name = ids::instance_name(&request.name, &request.idempotency_key)?;
    let label = ids::label_value(&request.idempotency_key);
    block_on(async {
        let session = Session::open().await?;
        let look_up = async || Ok(oldest(session.labelled(Some(&label)).await?));
        adopt::adopt_or_create(existing, look_up, async || {
            let id = VendorId {
                zone: request.region.clone(),
                name: name.clone(),
            };
            let body = insert_body(&request, &name, &ssh_user());
            let request_id = ids::request_id(&request.idempotency_key);
            match session.insert(&id.zone, &request_id, &body).await {
                Ok(operation) => inserted(&id, &operation),
                // An instance of this name: ours (an insert whose request id Compute
                // has forgotten) is adopted; another's is the conflict it is.
                Err(ProviderError::InvalidRequest(conflict))
                    if conflict.contains("alreadyExists") =>
                {
                    let instance = session.instance(&id).await?;
                    if instance.labels.get(IDEMPOTENCY_LABEL) == Some(&label) {
                        Ok(instance.to_server())
                    } else {
                        Err(ProviderError::InvalidRequest(conflict))
                    }
                }
                Err(other) => Err(other),
            }
        })
        .await
    })
}

provider_sdk::export_provider!(GcpPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ServerRequest {
        ServerRequest {
            idempotency_key: "Order/1".into(),
            name: "web".into(),
            region: "europe-west4-a".into(),
            size: "e2-small".into(),
            image: "projects/debian-cloud/global/images/family/debian-12".into(),
            ssh_keys: vec!["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host".into()],
            user_data: Some("#cloud-config\n".into()),
            labels: vec![("team".into(), "web".into())],
        }
    }

    /// The insert carries the key (label and metadata), the labels, the SSH keys as GCE
    /// wants them, the user data, the machine type path and the image.
    #[test]
    fn the_insert_carries_every_field() {
        let body = insert_body(&request(), "web-0123456789", "provisioner");
        assert_eq!(body["name"], "web-0123456789");
        assert_eq!(
            body["machineType"],
            "zones/europe-west4-a/machineTypes/e2-small"
        );
        assert_eq!(
            body["disks"][0]["initializeParams"]["sourceImage"],
            "projects/debian-cloud/global/images/family/debian-12"
        );
        assert_eq!(body["labels"]["team"], "web");
        let label = body["labels"][IDEMPOTENCY_LABEL].as_str().unwrap();
        assert!(ids::is_label_value(label) && label.starts_with("sha256-"));
        let items = body["metadata"]["items"].as_array().unwrap();
        let item = |key: &str| {
            items
                .iter()
                .find(|i| i["key"] == key)
                .map(|i| i["value"].as_str().unwrap().to_string())
        };
        assert_eq!(item(IDEMPOTENCY_LABEL).as_deref(), Some("Order/1"));
        assert_eq!(
            item("ssh-keys").as_deref(),
            Some(
                "provisioner:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host"
            )
        );
        assert_eq!(item("user-data").as_deref(), Some("#cloud-config\n"));
        assert_eq!(
            body["networkInterfaces"][0]["accessConfigs"][0]["type"],
            "ONE_TO_ONE_NAT"
        );
    }
}
