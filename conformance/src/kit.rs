//! Loading the plugin under test as the host does, and what the checks share: its
//! variants (a narrowed grant, a short call budget), the requests it is sent, and the
//! idempotency keys a run used (so nothing it made is forgotten).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use provisioner_host::bindings::types::ServerRequest;
use provisioner_host::manifest::Manifest;
use provisioner_host::runtime::{Plugin, PluginRuntime, RuntimeLimits};

use crate::options::{KitOptions, Target};
use crate::sim::SimControl;

/// The label every server a run makes carries (besides its idempotency key), with the
/// run's id: a person can find a run's servers at the vendor by it.
pub const RUN_LABEL: &str = "provisioner-conformance";

/// The OpenSSH public key the `inputs` check orders a server with (a test key: nobody
/// holds its private half).
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

/// A loaded plugin and everything the checks share.
pub struct Kit {
    /// The run's inputs.
    pub options: KitOptions,
    runtime: PluginRuntime,
    manifest: Manifest,
    manifest_path: PathBuf,
    /// The plugin as its manifest says.
    pub plugin: Plugin,
    /// This run's id (in every key and name it uses).
    pub run_id: String,
    /// The simulator, when the target is one.
    pub sim: Option<SimControl>,
    /// What servers are made with; none when neither flags nor config say.
    pub shape: Option<ServerShape>,
    keys: Mutex<Vec<String>>,
}

impl Kit {
    /// Loads the plugin from `options` as the host would.
    pub async fn load(options: KitOptions) -> anyhow::Result<Self> {
        let runtime = PluginRuntime::with_limits(RuntimeLimits {
            concurrent_calls: 8,
            ..RuntimeLimits::default()
        })?;
        let mut manifest = Manifest::load(&options.manifest)?;
        manifest.component = std::path::absolute(&options.component)
            .with_context(|| format!("resolving {}", options.component.display()))?;
        let manifest_path = options.manifest.clone();
        let plugin = load_with(&runtime, &options, manifest.clone(), &manifest_path).await?;
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
        let sim = match &options.target {
            Target::Simulator { url, vendor } => Some(SimControl::new(url, vendor)),
            Target::Live => None,
        };
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        Ok(Self {
            options,
            runtime,
            manifest,
            manifest_path,
            plugin,
            run_id,
            sim,
            shape,
            keys: Mutex::new(Vec::new()),
        })
    }

    /// The plugin loaded again with its manifest changed by `change` (a narrowed grant, a
    /// shorter budget): the same component, a separate instance pool entry.
    pub async fn variant(&self, change: impl FnOnce(&mut Manifest)) -> anyhow::Result<Plugin> {
        let mut manifest = self.manifest.clone();
        change(&mut manifest);
        load_with(&self.runtime, &self.options, manifest, &self.manifest_path).await
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
            // The key is a valid hostname too.
            name: key.to_string(),
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
