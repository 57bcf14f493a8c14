//! Loading the plugin under test as the host does, and what the checks share: its
//! variants (a narrowed grant, a short call budget), the requests it is sent, the vendor
//! calls made patiently (passing errors waited out as the host does), and what a run made
//! (its idempotency keys, and every server the plugin answered for one of them), so
//! nothing it made is forgotten.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use provisioner_host::bindings::types::{LabelledServer, ProviderError, Server, ServerRequest};
use provisioner_host::manifest::Manifest;
use provisioner_host::runtime::{CallError, Plugin, PluginRuntime, RuntimeLimits};
use tokio::time::Instant;

use crate::options::{KitOptions, Target};
use crate::patience;
use crate::proxy::ProxyControl;
use vendor_sim::control::ServerRecord;
use vendor_sim::control_client::{FaultsClient, SimClient};

/// The label every server a run makes carries (besides its idempotency key), with the
/// run's id: a person can find a run's servers at the vendor by it.
pub const RUN_LABEL: &str = "provisioner-conformance";

/// The OpenSSH public key the `inputs` check orders a server with: a real ed25519 key (a
/// test key: nobody holds its private half).
pub const TEST_SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW provisioner-conformance";

/// Region, size and image of the servers a run makes.
#[derive(Debug, Clone)]
pub struct ServerShape {
    /// A region the vendor has.
    pub region: String,
    /// A size the vendor has.
    pub size: String,
    /// An image the vendor has.
    pub image: String,
}

/// How much of the vendor's side a run sees.
#[derive(Debug)]
pub enum Vantage {
    /// The simulator: faults, and its own record of every server.
    Simulator(Simulator),
    /// The fault proxy: faults, and its record of every request that reached the vendor.
    Proxy(ProxyControl),
    /// Only what the plugin answers (a live vendor without the proxy).
    Blind,
}

/// The simulator of a `--vendor-sim` run, acting as one vendor.
#[derive(Debug)]
pub struct Simulator {
    /// Its control API.
    pub control: SimClient,
    /// Its fault API, arming rules for `vendor`.
    pub faults: FaultsClient,
    /// The vendor it acts as (`--sim-vendor`, else the manifest's).
    pub vendor: String,
}

impl Simulator {
    /// The simulator at `url`, acting as `vendor`.
    pub fn new(url: &str, vendor: &str) -> Self {
        Self {
            control: SimClient::new(url),
            faults: FaultsClient::new(url).for_vendor(vendor),
            vendor: vendor.to_string(),
        }
    }

    /// Whether the simulator answers and serves this vendor.
    pub async fn check(&self) -> anyhow::Result<()> {
        let stats =
            self.control.stats().await.with_context(|| {
                format!("reaching the simulator at {}", self.control.base_url())
            })?;
        if !vendor_sim::state::Vendor::parse(&self.vendor)
            .is_some_and(|vendor| stats.vendors.contains_key(&vendor))
        {
            anyhow::bail!(
                "the simulator at {} does not serve a vendor '{}' (give --sim-vendor)",
                self.control.base_url(),
                self.vendor
            );
        }
        Ok(())
    }

    /// The method and a part of the path of this vendor's create request at the simulator,
    /// for a fault aimed at it.
    pub fn create_request(&self) -> (&'static str, &'static str) {
        vendor_sim::state::Vendor::parse(&self.vendor).map_or(
            ("POST", "/servers"),
            vendor_sim::state::Vendor::create_request,
        )
    }

    /// The simulator's records of this vendor's live servers, with the `ssh_keys`,
    /// `user_data` and `labels` each got.
    pub async fn servers(&self) -> anyhow::Result<Vec<ServerRecord>> {
        let mut servers = self.control.servers().await?;
        servers.retain(|server| server.vendor.name() == self.vendor);
        Ok(servers)
    }

    /// The simulator's records of this vendor's live servers carrying `key`.
    pub async fn servers_with_key(&self, key: &str) -> anyhow::Result<Vec<ServerRecord>> {
        let mut servers = self.servers().await?;
        servers.retain(|server| server.idempotency_key.as_deref() == Some(key));
        Ok(servers)
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The host would refuse the plugin (its manifest, its component, its secrets).
    #[error("the host would refuse it: {0:#}")]
    Refused(anyhow::Error),
    /// The run's own set-up failed (the fault proxy, its profile, the base URL it stands
    /// in front of): not the plugin's fault.
    #[error("the run could not start: {0:#}")]
    Setup(anyhow::Error),
}

/// A loaded plugin and everything the checks share.
pub struct Kit {
    /// The run's inputs.
    pub options: KitOptions,
    runtime: PluginRuntime,
    /// The manifest as loaded for the run (pointed at the proxy in a `--fault-proxy` run).
    manifest: Manifest,
    manifest_path: PathBuf,
    /// The plugin as its manifest says.
    pub plugin: Plugin,
    /// This run's id (in every key and name it uses).
    pub run_id: String,
    /// What the run sees of the vendor's side.
    pub vantage: Vantage,
    /// What servers are made with; none when neither flags nor config say.
    pub shape: Option<ServerShape>,
    keys: Mutex<Vec<String>>,
    /// Every server the plugin answered for one of the run's keys: vendor id -> key.
    seen: Mutex<BTreeMap<String, String>>,
    /// Vendor ids whose delete the plugin answered Ok or not-found.
    deleted: Mutex<BTreeSet<String>>,
}

impl Kit {
    /// Loads the plugin from `options` as the host would (in a `--fault-proxy` run, after
    /// starting the proxy and pointing the manifest at it).
    pub async fn load(options: KitOptions) -> Result<Self, LoadError> {
        let runtime = PluginRuntime::with_limits(RuntimeLimits {
            concurrent_calls: 8,
            ..RuntimeLimits::default()
        })
        .map_err(LoadError::Setup)?;
        let mut manifest =
            Manifest::load(&options.manifest).map_err(|error| LoadError::Refused(error.into()))?;
        manifest.component = std::path::absolute(&options.component)
            .with_context(|| format!("resolving {}", options.component.display()))
            .map_err(LoadError::Setup)?;
        let manifest_path = options.manifest.clone();
        let vantage = match &options.target {
            Target::Simulator { url, vendor } => Vantage::Simulator(Simulator::new(url, vendor)),
            Target::FaultProxy {
                profile,
                base_url_key,
            } => Vantage::Proxy(
                ProxyControl::start(&mut manifest, &manifest_path, profile, base_url_key)
                    .await
                    .map_err(LoadError::Setup)?,
            ),
            Target::Live => Vantage::Blind,
        };
        let plugin = load_with(&runtime, &options, manifest.clone(), &manifest_path)
            .await
            .map_err(LoadError::Refused)?;
        let first = |key: &str| {
            manifest
                .config
                .get(key)
                .and_then(|list| list.split(',').map(str::trim).find(|v| !v.is_empty()))
                .map(str::to_string)
        };
        let shape = match (
            options.region.clone().or_else(|| first("regions")),
            options.size.clone().or_else(|| first("sizes")),
            options.image.clone().or_else(|| first("images")),
        ) {
            (Some(region), Some(size), Some(image)) => Some(ServerShape {
                region,
                size,
                image,
            }),
            _ => None,
        };
        if let Some(id) = &options.run_id {
            crate::options::parse_run_id(id)
                .map_err(|error| LoadError::Setup(anyhow::anyhow!(error)))?;
        }
        let run_id = options
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string());
        Ok(Self {
            options,
            runtime,
            manifest,
            manifest_path,
            plugin,
            run_id,
            vantage,
            shape,
            keys: Mutex::new(Vec::new()),
            seen: Mutex::new(BTreeMap::new()),
            deleted: Mutex::new(BTreeSet::new()),
        })
    }

    /// The plugin loaded again with its manifest changed by `change` (a narrowed grant, a
    /// shorter budget): the same component, a separate instance pool entry.
    pub async fn variant(&self, change: impl FnOnce(&mut Manifest)) -> anyhow::Result<Plugin> {
        let mut manifest = self.manifest.clone();
        change(&mut manifest);
        load_with(&self.runtime, &self.options, manifest, &self.manifest_path).await
    }

    /// The simulator, in a simulator run.
    pub fn sim(&self) -> Option<&Simulator> {
        match &self.vantage {
            Vantage::Simulator(sim) => Some(sim),
            _ => None,
        }
    }

    /// The fault proxy, in a `--fault-proxy` run.
    pub fn proxy(&self) -> Option<&ProxyControl> {
        match &self.vantage {
            Vantage::Proxy(proxy) => Some(proxy),
            _ => None,
        }
    }

    /// Where faults are armed, unless the run is blind.
    pub fn faults(&self) -> Option<&FaultsClient> {
        match &self.vantage {
            Vantage::Simulator(sim) => Some(&sim.faults),
            Vantage::Proxy(proxy) => Some(proxy.faults()),
            Vantage::Blind => None,
        }
    }

    /// A fresh idempotency key, remembered for the leftover sweep.
    pub fn new_key(&self) -> String {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let key = format!("conformance-{}-{}", self.run_id, keys.len() + 1);
        keys.push(key.clone());
        key
    }

    /// Every key this run used.
    pub fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `key` is one of this run's.
    pub fn is_ours(&self, key: &str) -> bool {
        key.starts_with(&format!("conformance-{}-", self.run_id))
    }

    /// Remembers that the plugin answered server `vendor_id` for `key` (one of the run's).
    pub fn saw(&self, vendor_id: &str, key: &str) {
        if self.is_ours(key) && !vendor_id.is_empty() {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(vendor_id.to_string(), key.to_string());
        }
    }

    /// Every server the plugin answered for one of the run's keys, as (vendor id, key).
    pub fn seen(&self) -> Vec<(String, String)> {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, key)| (id.clone(), key.clone()))
            .collect()
    }

    /// When a call made now must have its answer, passing errors waited out.
    pub fn call_deadline(&self) -> Instant {
        Instant::now() + self.options.retry_budget
    }

    /// `create-server`, patiently; the server is remembered.
    pub async fn create(
        &self,
        order_id: uuid::Uuid,
        request: &ServerRequest,
    ) -> Result<Server, CallError> {
        self.remembered(request, || self.plugin.create_server(order_id, request))
            .await
    }

    /// `create-new-server` (WIT 0.6; `create-server` for older plugins), patiently; the
    /// server is remembered.
    pub async fn create_new(
        &self,
        order_id: uuid::Uuid,
        request: &ServerRequest,
    ) -> Result<Server, CallError> {
        self.remembered(request, || self.plugin.create_new_server(order_id, request))
            .await
    }

    /// A create `call` for `request`, patiently; the server it answers is remembered.
    async fn remembered<Fut>(
        &self,
        request: &ServerRequest,
        call: impl FnMut() -> Fut,
    ) -> Result<Server, CallError>
    where
        Fut: Future<Output = Result<Server, CallError>>,
    {
        let result = patience::until(self.call_deadline(), call).await;
        if let Ok(server) = &result {
            self.saw(&server.vendor_id, &request.idempotency_key);
        }
        result
    }

    /// `find-server`, patiently until `deadline`; a server found is remembered.
    pub async fn find_until(
        &self,
        key: &str,
        deadline: Instant,
    ) -> Result<Option<Server>, CallError> {
        let result = patience::until(deadline, || self.plugin.find_server(key)).await;
        if let Ok(Some(server)) = &result {
            self.saw(&server.vendor_id, key);
        }
        result
    }

    /// `find-server`, patiently; a server found is remembered.
    pub async fn find(&self, key: &str) -> Result<Option<Server>, CallError> {
        self.find_until(key, self.call_deadline()).await
    }

    /// `get-server`, patiently until `deadline`.
    pub async fn get_until(&self, vendor_id: &str, deadline: Instant) -> Result<Server, CallError> {
        patience::until(deadline, || self.plugin.get_server(None, vendor_id)).await
    }

    /// `delete-server`, patiently until `deadline`; a delete answered Ok or not-found is
    /// remembered.
    pub async fn delete_until(&self, vendor_id: &str, deadline: Instant) -> Result<(), CallError> {
        let result = patience::until(deadline, || self.plugin.delete_server(None, vendor_id)).await;
        if matches!(
            result,
            Ok(()) | Err(CallError::Provider(ProviderError::NotFound(_)))
        ) {
            self.deleted
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(vendor_id.to_string());
        }
        result
    }

    /// Whether the plugin answered a delete of `vendor_id` with Ok or not-found.
    pub fn was_deleted(&self, vendor_id: &str) -> bool {
        self.deleted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(vendor_id)
    }

    /// `delete-server`, patiently.
    pub async fn delete(&self, vendor_id: &str) -> Result<(), CallError> {
        self.delete_until(vendor_id, self.call_deadline()).await
    }

    /// `list-servers`, patiently until `deadline`; the run's servers listed are remembered.
    pub async fn list_until(
        &self,
        deadline: Instant,
    ) -> Result<Option<Vec<LabelledServer>>, CallError> {
        let result = patience::until(deadline, || self.plugin.list_servers()).await;
        if let Ok(Some(servers)) = &result {
            for listed in servers {
                self.saw(&listed.server.vendor_id, &listed.idempotency_key);
            }
        }
        result
    }

    /// `list-servers`, patiently.
    pub async fn list(&self) -> Result<Option<Vec<LabelledServer>>, CallError> {
        self.list_until(self.call_deadline()).await
    }

    /// A request for a server with `key`, of the run's shape (placeholders when it has
    /// none: only for calls that fail before the shape matters).
    pub fn request(&self, key: &str) -> ServerRequest {
        let (region, size, image) = match &self.shape {
            Some(shape) => (
                shape.region.clone(),
                shape.size.clone(),
                shape.image.clone(),
            ),
            None => ("unset".into(), "unset".into(), "unset".into()),
        };
        ServerRequest {
            idempotency_key: key.to_string(),
            // A valid hostname naming the key, yet never the key itself: the fault proxy's
            // record tells servers apart by the key they carry, and another key's request
            // with this name (`idempotency.same-name`) must not pass for this key's.
            name: format!("{key}-server"),
            region,
            size,
            image,
            ssh_keys: Vec::new(),
            user_data: None,
            labels: vec![(RUN_LABEL.to_string(), self.run_id.clone())],
        }
    }

    /// A request like [`Kit::request`] carrying [`TEST_SSH_KEY`] and `#cloud-config` user
    /// data naming the run.
    pub fn request_with_inputs(&self, key: &str) -> ServerRequest {
        ServerRequest {
            ssh_keys: vec![TEST_SSH_KEY.to_string()],
            user_data: Some(self.user_data()),
            ..self.request(key)
        }
    }

    /// The user data of [`Kit::request_with_inputs`].
    pub fn user_data(&self) -> String {
        format!(
            "#cloud-config
write_files:
  - path: /etc/provisioner-conformance
    \
             content: \"run {}\"\n",
            self.run_id
        )
    }

    /// The plugin's call budget.
    pub fn call_budget(&self) -> Duration {
        self.manifest.limits.call_timeout()
    }
}

async fn load_with(
    runtime: &PluginRuntime,
    options: &KitOptions,
    manifest: Manifest,
    manifest_path: &std::path::Path,
) -> anyhow::Result<Plugin> {
    match &options.secrets {
        Some(secrets) => {
            runtime
                .load_manifest_with_secrets(manifest, manifest_path, |variable| {
                    secrets.get(variable).cloned()
                })
                .await
        }
        None => runtime.load_manifest(manifest, manifest_path).await,
    }
}

#[cfg(test)]
mod tests {
    /// The key the kit orders servers with is a well-formed ed25519 public key, as a key
    /// store checks it.
    #[test]
    fn the_test_key_is_a_real_ed25519_public_key() {
        let checked = vendor_sim::keys::check(super::TEST_SSH_KEY).expect("a valid key");
        assert!(checked.openssh.starts_with("ssh-ed25519 "));
    }
}
