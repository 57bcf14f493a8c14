//! Microsoft Azure provider plugin: a WebAssembly component (wasm32-wasip2) implementing the
//! `provisioner:provider` world (0.4) against Azure Resource Manager (`Microsoft.Compute`,
//! `Microsoft.Network`), authenticated as an app registration (the Microsoft identity
//! platform's client-credentials grant, the token kept in the host's cache).
//!
//! **Orders.** `region` is an Azure location (`westeurope`), `size` a VM size
//! (`Standard_B1s`), `image` a platform image URN `publisher:offer:sku:version`
//! (`Canonical:ubuntu-24_04-lts:server:latest`) or an image resource id. A server is three
//! resources in the manifest's subscription and resource group, each made with `PUT` and
//! tagged with the order's labels and `provisioner-idempotency-key`: a Standard static
//! public IP `<vm>-ip`, a network interface `<vm>-nic` in the manifest's subnet holding
//! it, and the VM `<vm>` on that NIC, with a managed OS disk from the image. The VM's OS
//! disk, its NIC and (through the NIC) the IP are set to be deleted with it
//! (`deleteOption: Delete`), so one `DELETE` of the VM leaves nothing behind.
//!
//! **Idempotency, ARM's way.** `PUT` is create-or-update by name, and every name derives
//! from the order: the VM is the order's name plus a suffix from the idempotency key
//! ([`names::vm_name`], `provider_sdk::unique_name`, at most 64 characters), so every retry
//! of one order `PUT`s the same three resources and makes nothing twice, and another order
//! of the same name gets other resources. `create-server` first looks the key up (ARM's
//! tag filter on the group's resources, then each VM found read and its tag checked) and
//! adopts the oldest VM carrying it; a VM is `PUT` again only when none is found (a
//! `PUT` whose answer was lost is resent by the SDK, and answered 200 with the same VM).
//! `create-server` makes its three requests and returns (`provisioning`): it does not wait
//! for the operations; the NIC and VM only need the resources they name to exist, which
//! ARM checks at once. A create that fails transiently (ARM's `AnotherOperationInProgress`)
//! or for want of capacity (`SkuNotAvailable`, no-capacity) is retried by the host and
//! `PUT`s the same names again, its NIC and IP kept for that. One refused for good
//! (quota, a bad request) deletes the NIC and IP it made, following the NIC deletion's
//! `Azure-AsyncOperation` before the IP's, so a failed order leaves nothing.
//!
//! **Vendor ids** are the VM's resource id (`/subscriptions/.../virtualMachines/<vm>`).
//! States come from `provisioningState` and the instance view's power state
//! (`$expand=instanceView`, see [`api::STATUSES`]): `Creating` -> provisioning, `Succeeded`
//! with `PowerState/running` -> running, `stopped` / `deallocated` -> stopped, `Deleting`
//! -> deleting, `Failed` -> error, except a failed allocation (`AllocationFailed`,
//! `ZonalAllocationFailed`, `Overconstrained...`), which `get-server` answers `no-capacity`,
//! and a failure of ARM's own that passes (`RetryableError`...), answered `transient` (the
//! host retries either until its budget ends). Gone: not-found. The address is the public
//! IP's `ipAddress`, read once the VM runs.
//!
//! **SSH keys and user data.** The keys go into `osProfile.linuxConfiguration.ssh
//! .publicKeys` for the admin user (`[config] admin-username`, default `azureuser`; path
//! `/home/<admin>/.ssh/authorized_keys`), with password login disabled. An order without
//! keys gets a random password nobody is told (Azure wants one or the other). User data
//! goes base64 into `osProfile.customData`, which cloud-init reads on Azure's images.
//!
//! **Errors** (see [`api::arm_error`]): 429 -> rate-limited (with `Retry-After`);
//! `QuotaExceeded`, `OperationNotAllowed` about cores or quota -> quota-exceeded;
//! `SkuNotAvailable`, `AllocationFailed`, `ZonalAllocationFailed`,
//! `OverconstrainedAllocationRequest`, `OverconstrainedZonalAllocationRequest` ->
//! no-capacity (the location or zone cannot place the VM now); `AnotherOperationInProgress`,
//! `RetryableError` -> transient; 401/403 -> unauthorized; 404 -> not-found; other
//! 400/409 -> invalid-request; 5xx -> transient. A 401 from ARM first drops the cached
//! token and asks for another.
//!
//! Configuration (manifest `[config]`): `subscription-id`, `resource-group` (required);
//! `subnet-id`, or `virtual-network` and `subnet` (default `default`) in the resource
//! group; `admin-username`; `authority` (default `https://login.microsoftonline.com`);
//! `base-url` (ARM, default `https://management.azure.com`; the simulator's
//! `http://127.0.0.1:18190/azure`); `regions` / `sizes` / `images` (offline catalogues for
//! `validate`). Secrets: `tenant-id`, `client-id`, `client-secret` of an app with the
//! Virtual Machine Contributor and Network Contributor roles on the resource group.
//!
//! # Layout
//! - [`names`]: the VM, NIC and IP names from the order, and the vendor id.
//! - [`auth`]: the client-credentials grant and its cache.
//! - [`api`]: ARM's JSON (VMs, public IPs, pages), the state and error mappings.
//! - [`arm`]: the authenticated session and its ARM calls, operations followed.
//! - [`validation`]: offline checks of a request.
//! - this file: the request bodies and the exported `provider` interface.

mod api;
mod arm;
mod auth;
mod names;
mod validation;

use provider_sdk::adopt::{self, Existing, id_order};
use provider_sdk::{
    LabelledServer, LogLevel, PluginCatalogue, PluginInfo, Provider, ProviderError, Server,
    ServerRequest, ServerStatus, block_on, get_config, log,
};
use serde_json::{Value, json};

use api::VirtualMachine;
use arm::Session;
use names::VendorId;

struct AzurePlugin;

/// The admin user: `[config] admin-username`, default `azureuser`.
fn admin_username() -> String {
    get_config("admin-username")
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "azureuser".into())
}

/// The tags of each resource: the order's labels and the idempotency key.
fn tags(request: &ServerRequest) -> Value {
    json!(adopt::labels_and_key(request))
}

/// The public IP's body: Standard, static (so it is deleted with its NIC's VM as set).
fn ip_body(request: &ServerRequest) -> Value {
    json!({
        "location": request.region,
        "tags": tags(request),
        "sku": {"name": "Standard"},
        "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4"},
    })
}

/// The NIC's body: in `subnet`, holding the public IP `ip`, which goes with it.
fn nic_body(request: &ServerRequest, subnet: &str, ip: &str) -> Value {
    json!({
        "location": request.region,
        "tags": tags(request),
        "properties": {"ipConfigurations": [{
            "name": "ipconfig1",
            "properties": {
                "subnet": {"id": subnet},
                "privateIPAllocationMethod": "Dynamic",
                "publicIPAddress": {"id": ip, "properties": {"deleteOption": "Delete"}},
            },
        }]},
    })
}

/// A password nobody is told, for an order without SSH keys (Azure wants one or the other):
/// 128 bits from the host's random source (`RandomState` seeds from it) in hex, with the
/// character classes Azure's password rules ask for.
fn unknowable_password() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bits = String::new();
    for salt in 0u8..2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(salt);
        bits.push_str(&format!("{:016x}", hasher.finish()));
    }
    format!("Az9!{bits}")
}

/// The VM's body: size, image, an OS disk, NIC and (through the NIC) IP deleted with it,
/// the admin user with the order's SSH keys, the user data as `customData`.
fn vm_body(request: &ServerRequest, name: &str, nic: &str, admin: &str) -> Value {
    let image = validation::image_reference(&request.image).unwrap_or(Value::Null);
    let mut linux = json!({"disablePasswordAuthentication": true});
    let mut os_profile = json!({
        "computerName": name,
        "adminUsername": admin,
    });
    if request.ssh_keys.is_empty() {
        linux["disablePasswordAuthentication"] = json!(false);
        os_profile["adminPassword"] = json!(unknowable_password());
    } else {
        let keys: Vec<Value> = request
            .ssh_keys
            .iter()
            .map(|key| {
                json!({"path": format!("/home/{admin}/.ssh/authorized_keys"), "keyData": key.trim()})
            })
            .collect();
        linux["ssh"] = json!({"publicKeys": keys});
    }
    os_profile["linuxConfiguration"] = linux;
    if let Some(user_data) = &request.user_data {
        os_profile["customData"] = json!(provider_sdk::base64(user_data));
    }
    json!({
        "location": request.region,
        "tags": tags(request),
        "properties": {
            "hardwareProfile": {"vmSize": request.size},
            "storageProfile": {
                "imageReference": image,
                "osDisk": {
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "managedDisk": {"storageAccountType": "StandardSSD_LRS"},
                },
            },
            "osProfile": os_profile,
            "networkProfile": {"networkInterfaces": [{
                "id": nic,
                "properties": {"primary": true, "deleteOption": "Delete"},
            }]},
        },
    })
}

/// The server `vm` (in the session's group) is now, with its address once it runs.
async fn current(session: &Session, vm: &VirtualMachine) -> Result<Server, ProviderError> {
    let id = VendorId {
        name: vm.name.clone(),
        ..session.home.clone()
    };
    let mut server = vm.to_server(id.to_string(), None);
    if server.status == ServerStatus::Running {
        server.ipv4 = session.address(&id).await?;
    }
    Ok(server)
}

/// The oldest VM of the group carrying `key`, as a server.
async fn find(session: &Session, key: &str) -> Result<Option<Server>, ProviderError> {
    let mut found = Vec::new();
    for name in session.vms_tagged_with(key).await? {
        let id = VendorId {
            name,
            ..session.home.clone()
        };
        match session.vm(&id).await {
            // ARM's tag filter matches values without regard to case: the tag decides.
            Ok(vm) if vm.idempotency_key() == Some(key) => found.push(vm),
            Ok(_) | Err(ProviderError::NotFound(_)) => {}
            Err(other) => return Err(other),
        }
    }
    match adopt::oldest(found, |vm| {
        (vm.properties.time_created.clone(), id_order(&vm.id))
    }) {
        Some(vm) => Ok(Some(current(session, &vm).await?)),
        None => Ok(None),
    }
}

/// Deletes the NIC and then the public IP of `id` (a create refused for good, or a VM
/// already gone), following the NIC's deletion so the IP is free: whether either was there.
async fn delete_network(session: &Session, id: &VendorId) -> Result<bool, ProviderError> {
    let nic = session.delete(&id.nic()).await?;
    if let Some(started) = &nic
        && !session.follow(started, 10).await?
    {
        return Err(ProviderError::Transient(format!(
            "the network interface {} is still being deleted",
            names::nic_name(&id.name)
        )));
    }
    let ip = match session.delete(&id.ip()).await {
        Ok(ip) => ip,
        // Still held by a NIC whose deletion has not ended: the next try frees it.
        Err(ProviderError::InvalidRequest(message))
            if message.contains("PublicIPAddressCannotBeDeleted") =>
        {
            return Err(ProviderError::Transient(message));
        }
        Err(other) => return Err(other),
    };
    Ok(nic.is_some() || ip.is_some())
}

/// PUTs the public IP, the NIC and the VM of a new server.
async fn create(
    session: &Session,
    request: &ServerRequest,
    name: &str,
) -> Result<Server, ProviderError> {
    let id = VendorId {
        name: name.to_string(),
        ..session.home.clone()
    };
    let subnet = session.subnet_id()?;
    session.put(&id.ip(), &ip_body(request)).await?;
    session
        .put(&id.nic(), &nic_body(request, &subnet, &id.ip()))
        .await?;
    let vm = session
        .put(
            &id.vm(),
            &vm_body(request, name, &id.nic(), &admin_username()),
        )
        .await;
    match vm {
        Ok(_) => Ok(Server {
            vendor_id: id.to_string(),
            name: name.to_string(),
            status: ServerStatus::Provisioning,
            ipv4: None,
            ipv6: None,
        }),
        // Refused for good: the order fails, so take its NIC and IP away with it.
        Err(
            refusal @ (ProviderError::InvalidRequest(_)
            | ProviderError::QuotaExceeded(_)
            | ProviderError::Unauthorized(_)),
        ) => {
            if let Err(error) = delete_network(session, &id).await {
                log(
                    LogLevel::Warn,
                    &format!(
                        "the NIC and public IP of the refused VM {name} are not deleted yet: {error:?}"
                    ),
                );
            }
            Err(refusal)
        }
        Err(other) => Err(other),
    }
}

impl Provider for AzurePlugin {
    fn info() -> PluginInfo {
        PluginInfo {
            vendor: "azure".into(),
            display_name: "Microsoft Azure".into(),
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
        block_on(async {
            let session = Session::open().await?;
            find(&session, &idempotency_key).await
        })
    }

    fn get_server(vendor_id: String) -> Result<Server, ProviderError> {
        let id = VendorId::parse(&vendor_id)?;
        block_on(async {
            let session = Session::open().await?;
            let vm = session.vm(&id).await?;
            if let Some(failure) = vm.retryable_failure() {
                return Err(failure);
            }
            let mut server = vm.to_server(vendor_id.clone(), None);
            if server.status == ServerStatus::Running {
                server.ipv4 = session.address(&id).await?;
            }
            Ok(server)
        })
    }

    fn delete_server(vendor_id: String) -> Result<(), ProviderError> {
        let id = VendorId::parse(&vendor_id)?;
        block_on(async {
            let session = Session::open().await?;
            // The VM takes its OS disk, NIC and IP with it (deleteOption Delete).
            if session.delete(&id.vm()).await?.is_some() {
                return Ok(());
            }
            // No VM: what a half-made create left, if anything.
            if delete_network(&session, &id).await? {
                Ok(())
            } else {
                Err(ProviderError::NotFound(format!(
                    "the VM {} is gone",
                    id.name
                )))
            }
        })
    }

    fn list_servers() -> Result<Vec<LabelledServer>, ProviderError> {
        block_on(async {
            let session = Session::open().await?;
            let vms = session.tagged_vms().await?;
            let addresses = session.addresses().await?;
            Ok(api::labelled(
                vms,
                |vm| {
                    VendorId {
                        name: vm.name.clone(),
                        ..session.home.clone()
                    }
                    .to_string()
                },
                |vm| {
                    addresses
                        .get(&names::ip_name(&vm.name).to_ascii_lowercase())
                        .cloned()
                },
            ))
        })
    }
}

/// `create-server` (`existing`: [`Existing::MayExist`]) and `create-new-server`
/// ([`Existing::NoneYet`]: no look-up, the host knows no server carries the key yet).
fn make_server(request: ServerRequest, existing: Existing) -> Result<Server, ProviderError> {
    validation::check(&request)?;
    let name = names::vm_name(&request.name, &request.idempotency_key)?;
    block_on(async {
        let session = Session::open().await?;
        adopt::adopt_or_create(
            existing,
            async || find(&session, &request.idempotency_key).await,
            async || create(&session, &request, &name).await,
        )
        .await
    })
}

provider_sdk::export_provider!(AzurePlugin);

#[cfg(test)]
mod tests {
    use super::*;
    use provider_sdk::IDEMPOTENCY_LABEL;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@host";

    fn request() -> ServerRequest {
        ServerRequest {
            idempotency_key: "order-1".into(),
            name: "web".into(),
            region: "westeurope".into(),
            size: "Standard_B1s".into(),
            image: "Canonical:ubuntu-24_04-lts:server:latest".into(),
            ssh_keys: vec![KEY.into()],
            user_data: Some("#cloud-config\n".into()),
            labels: vec![("team".into(), "web".into())],
        }
    }

    /// The three bodies carry the key and labels; the VM carries size, image, SSH keys
    /// where Azure wants them, the user data as base64 customData, and every part set to
    /// be deleted with it.
    #[test]
    fn the_bodies_carry_every_field() {
        let request = request();
        for body in [
            ip_body(&request),
            nic_body(&request, "/sub/net", "/ip"),
            vm_body(&request, "web-1", "/nic", "azureuser"),
        ] {
            assert_eq!(body["location"], "westeurope");
            assert_eq!(body["tags"][IDEMPOTENCY_LABEL], "order-1");
            assert_eq!(body["tags"]["team"], "web");
        }
        let nic = nic_body(&request, "/sub/net", "/ip");
        let config = &nic["properties"]["ipConfigurations"][0]["properties"];
        assert_eq!(config["subnet"]["id"], "/sub/net");
        assert_eq!(config["publicIPAddress"]["id"], "/ip");
        assert_eq!(
            config["publicIPAddress"]["properties"]["deleteOption"],
            "Delete"
        );
        let vm = vm_body(&request, "web-1", "/nic", "azureuser");
        let p = &vm["properties"];
        assert_eq!(p["hardwareProfile"]["vmSize"], "Standard_B1s");
        assert_eq!(
            p["storageProfile"]["imageReference"]["offer"],
            "ubuntu-24_04-lts"
        );
        assert_eq!(p["storageProfile"]["osDisk"]["deleteOption"], "Delete");
        assert_eq!(p["networkProfile"]["networkInterfaces"][0]["id"], "/nic");
        assert_eq!(
            p["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"],
            "Delete"
        );
        let os = &p["osProfile"];
        assert_eq!(os["adminUsername"], "azureuser");
        assert_eq!(os["customData"], provider_sdk::base64("#cloud-config\n"));
        assert_eq!(
            os["linuxConfiguration"]["disablePasswordAuthentication"],
            true
        );
        assert_eq!(
            os["linuxConfiguration"]["ssh"]["publicKeys"][0],
            json!({"path": "/home/azureuser/.ssh/authorized_keys", "keyData": KEY})
        );
        assert!(os.get("adminPassword").is_none());
    }

    /// Without SSH keys the VM gets a password nobody knows, different each time.
    #[test]
    fn no_keys_means_an_unknowable_password() {
        let mut request = request();
        request.ssh_keys.clear();
        let vm = vm_body(&request, "web-1", "/nic", "azureuser");
        let os = &vm["properties"]["osProfile"];
        assert_eq!(
            os["linuxConfiguration"]["disablePasswordAuthentication"],
            false
        );
        let password = os["adminPassword"].as_str().unwrap();
        assert!(password.len() >= 32, "{password}");
        assert_ne!(password, unknowable_password());
    }
}
