//! The plugins directory, kept in step with the disk: a rescan loads new plugins, reloads
//! changed ones and drops removed ones, so a vendor is added by copying a `.wasm` and its
//! manifest into `PLUGINS_DIR`, without restarting the host.
//!
//! A replaced plugin serves new orders; calls already running keep the old one (they hold
//! it). A replacement that does not load is logged and the old version keeps serving. A
//! file caught half-copied fails to load and is tried again once it changes.
//!
//! Secrets are part of what a rescan looks at: a secret file (see [`crate::secrets`])
//! appearing, changing or going reloads its plugin like a replaced manifest. A plugin whose
//! secrets are missing is not served (a removed secret stops the version in service: its
//! value was probably revoked); it and a plugin that does not load at all are listed as
//! *unavailable* with the reason, which the worker tells order-api (admins see it in
//! `GET /v1/vendors`; the vendor's orders are refused as for an unknown vendor).

use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::manifest::Manifest;
use crate::runtime::{Plugin, PluginRuntime};
use crate::secrets::{FileStamp, SecretProblem, SecretSource};

/// What the plugin folder holds at one moment; shared with the worker.
pub type PluginSet = Arc<FolderSnapshot>;

/// The plugins in service by vendor (the snapshot derefs to that map), and the vendors
/// whose plugin is in the folder but cannot serve, with why.
#[derive(Default)]
pub struct FolderSnapshot {
    plugins: BTreeMap<String, Arc<Plugin>>,
    unavailable: BTreeMap<String, String>,
}

impl FolderSnapshot {
    /// Vendors whose manifest is in the folder but which are not served (a secret is
    /// missing, the plugin does not load), with the reason for operators. Never a vendor
    /// that is served.
    pub fn unavailable(&self) -> &BTreeMap<String, String> {
        &self.unavailable
    }
}

impl Deref for FolderSnapshot {
    type Target = BTreeMap<String, Arc<Plugin>>;

    fn deref(&self) -> &Self::Target {
        &self.plugins
    }
}

/// The longest reason an unavailable vendor carries (a wasmtime error can be long; it
/// travels in every announcement round).
const MAX_REASON_CHARS: usize = 2_000;

/// What a manifest, its component and its secret files looked like when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    manifest: Option<(SystemTime, u64)>,
    component: Option<(SystemTime, u64)>,
    secrets: Vec<Option<FileStamp>>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

struct Loaded {
    fingerprint: Fingerprint,
    plugin: Arc<Plugin>,
}

/// The plugins loaded from one directory.
pub struct PluginFolder {
    runtime: Arc<PluginRuntime>,
    dir: PathBuf,
    secrets: SecretSource,
    loaded: BTreeMap<PathBuf, Loaded>,
    /// Manifests that failed to load, so the same failure is not retried every scan.
    failed: BTreeMap<PathBuf, Fingerprint>,
    /// Manifests whose vendor is not served, by manifest: the vendor and why.
    unavailable: BTreeMap<PathBuf, (String, String)>,
    /// Plugins loaded for `validate` alone ([`PluginFolder::for_validation_only`]).
    validation_only: bool,
}

impl PluginFolder {
    /// An empty plugin folder `dir` reading secrets from the environment; call
    /// [`PluginFolder::rescan`] to fill it.
    pub fn new(runtime: Arc<PluginRuntime>, dir: PathBuf) -> Self {
        Self {
            runtime,
            dir,
            secrets: SecretSource::environment(),
            loaded: BTreeMap::new(),
            failed: BTreeMap::new(),
            unavailable: BTreeMap::new(),
            validation_only: false,
        }
    }

    /// Loads every plugin for its `validate` alone, as order-api does to check orders in its
    /// own process: no secret is read (the manifest's `[secrets]` are dropped, so a plugin
    /// that names some still loads, and asks for them in vain) and no outbound request is
    /// granted (`allowed_hosts`, `ca_certificates`, `insecure` and `allow_private_addresses`
    /// are dropped too), whatever the manifest says. The component, its `[config]` and its
    /// limits are the manifest's. `validate` needs nothing more: the WIT promises it does no
    /// network I/O.
    pub fn for_validation_only(mut self) -> Self {
        self.validation_only = true;
        self
    }

    /// Reads plugin secrets from `secrets` (a secrets folder, then the environment).
    pub fn with_secrets(mut self, secrets: SecretSource) -> Self {
        if let Some(dir) = secrets.dir() {
            if dir.is_dir() {
                tracing::info!(folder = %dir.display(), "plugin secrets come from this folder, then the environment");
            } else {
                tracing::warn!(
                    folder = %dir.display(),
                    "the plugin secrets folder does not exist (yet): secrets come from the \
                     environment until files appear there"
                );
            }
        }
        self.secrets = secrets;
        self
    }

    /// The plugins in service now, and the vendors that are not.
    pub fn plugins(&self) -> PluginSet {
        let plugins: BTreeMap<String, Arc<Plugin>> = self
            .loaded
            .values()
            .map(|l| (l.plugin.vendor().to_string(), l.plugin.clone()))
            .collect();
        let unavailable = self
            .unavailable
            .values()
            .filter(|(vendor, _)| !plugins.contains_key(vendor))
            .map(|(vendor, reason)| (vendor.clone(), reason.clone()))
            .collect();
        Arc::new(FolderSnapshot {
            plugins,
            unavailable,
        })
    }

    fn fingerprint(&self, manifest_path: &Path) -> Fingerprint {
        let manifest = Manifest::load(manifest_path)
            .ok()
            .map(|manifest| self.as_loaded(manifest));
        Fingerprint {
            manifest: stamp(manifest_path),
            component: manifest
                .as_ref()
                .and_then(|m| stamp(&m.component_path(manifest_path))),
            secrets: manifest
                .as_ref()
                .map(|m| self.secrets.stamps(m))
                .unwrap_or_default(),
        }
    }

    /// Records that the manifest at `path` names `vendor`, which is not served; whether
    /// that is news.
    fn mark_unavailable(&mut self, path: &Path, vendor: &str, reason: String) -> bool {
        let reason = bounded(reason);
        let entry = (vendor.to_string(), reason);
        if self.unavailable.get(path) == Some(&entry) {
            return false;
        }
        self.unavailable.insert(path.to_path_buf(), entry);
        true
    }

    /// Brings the loaded plugins in line with the directory; whether the set of plugins (or of
    /// unavailable vendors) changed.
    pub async fn rescan(&mut self) -> anyhow::Result<bool> {
        use anyhow::Context;

        let entries = std::fs::read_dir(&self.dir)
            .with_context(|| format!("reading the plugins directory {}", self.dir.display()))?;
        let mut manifests: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        manifests.sort();
        let mut changed = false;

        let gone: Vec<PathBuf> = self
            .loaded
            .keys()
            .filter(|path| !manifests.contains(path))
            .cloned()
            .collect();
        for path in gone {
            if let Some(old) = self.loaded.remove(&path) {
                tracing::info!(vendor = old.plugin.vendor(), manifest = %path.display(), "plugin removed");
                changed = true;
            }
        }
        self.failed.retain(|path, _| manifests.contains(path));
        let before = self.unavailable.len();
        self.unavailable.retain(|path, _| manifests.contains(path));
        changed |= self.unavailable.len() != before;

        for path in manifests {
            let print = self.fingerprint(&path);
            if self
                .loaded
                .get(&path)
                .is_some_and(|l| l.fingerprint == print)
                || self.failed.get(&path) == Some(&print)
            {
                continue;
            }
            changed |= self.load(path, print).await;
        }
        Ok(changed)
    }

    /// Loads (or reloads) the manifest at `path`; whether the plugins in service changed.
    async fn load(&mut self, path: PathBuf, print: Fingerprint) -> bool {
        let manifest = match Manifest::load(&path) {
            Ok(manifest) => self.as_loaded(manifest),
            Err(error) => {
                self.refused(&path, None, &anyhow::Error::from(error));
                self.failed.insert(path.clone(), print);
                return self.unavailable.remove(&path).is_some();
            }
        };
        let vendor = manifest.vendor.clone();
        let secrets = match self.secrets.resolve(&manifest) {
            Ok(secrets) => secrets,
            Err(missing) => {
                // A file rewritten in place reads empty (or half-written) for a moment: the
                // version in service keeps its secrets until the file settles (its next
                // change is read again).
                let passing = missing.problems.iter().all(|problem| {
                    matches!(
                        problem,
                        SecretProblem::Empty { .. } | SecretProblem::Unreadable { .. }
                    )
                });
                if passing && self.loaded.contains_key(&path) {
                    tracing::warn!(
                        %vendor,
                        manifest = %path.display(),
                        "kept serving the vendor with its previous secrets: {missing}"
                    );
                    self.failed.insert(path.clone(), print);
                    return false;
                }
                // Never served without its secrets: a version in service whose secret went
                // stops too (the value was most likely revoked at the vendor).
                let stopped = self.loaded.remove(&path).is_some();
                let reason = missing.to_string();
                let consequence = if stopped {
                    "stopped serving the vendor"
                } else {
                    "not serving the vendor"
                };
                tracing::warn!(%vendor, manifest = %path.display(), "{consequence}: {reason}");
                self.failed.insert(path.clone(), print);
                return self.mark_unavailable(&path, &vendor, reason) || stopped;
            }
        };
        match self
            .runtime
            .load_with_secret_values(manifest, &path, secrets)
            .await
        {
            Ok(plugin) => {
                let clash = self
                    .loaded
                    .iter()
                    .find(|(other, l)| **other != path && l.plugin.vendor() == plugin.vendor());
                if let Some((other, _)) = clash {
                    tracing::error!(
                        manifest = %path.display(),
                        "skipping plugin: vendor '{}' is already served by {}",
                        plugin.vendor(),
                        other.display()
                    );
                    self.failed.insert(path, print);
                    return false;
                }
                let info = plugin.info_cached();
                let verb = if self.loaded.contains_key(&path) {
                    "reloaded"
                } else {
                    "loaded"
                };
                tracing::info!(
                    vendor = plugin.vendor(),
                    version = %info.version,
                    manifest = %path.display(),
                    "{verb} plugin {}",
                    info.display_name
                );
                if let Some(previous) = self.loaded.get(&path) {
                    plugin.keep_pause_of(&previous.plugin);
                }
                self.failed.remove(&path);
                self.unavailable.remove(&path);
                self.loaded.insert(
                    path,
                    Loaded {
                        fingerprint: print,
                        plugin: Arc::new(plugin),
                    },
                );
                true
            }
            Err(error) => {
                self.refused(&path, Some(&vendor), &error);
                self.failed.insert(path.clone(), print);
                // A version in service keeps serving; otherwise the vendor is unavailable.
                !self.loaded.contains_key(&path)
                    && self.mark_unavailable(&path, &vendor, format!("{error:#}"))
            }
        }
    }

    /// The manifest as this folder loads it: as written, or without its secrets and
    /// outbound grants for validation alone ([`PluginFolder::for_validation_only`]).
    fn as_loaded(&self, mut manifest: Manifest) -> Manifest {
        if self.validation_only {
            manifest.secrets.clear();
            manifest.allowed_hosts.clear();
            manifest.ca_certificates.clear();
            manifest.insecure = false;
            manifest.allow_private_addresses = false;
        }
        manifest
    }

    /// Logs why the manifest at `path` was refused.
    fn refused(&self, path: &Path, vendor: Option<&str>, error: &anyhow::Error) {
        let keeps = if self.loaded.contains_key(path) {
            "; the previous version keeps serving"
        } else {
            ""
        };
        tracing::error!(vendor, manifest = %path.display(), "cannot load plugin{keeps}: {error:#}");
    }
}

/// `reason`, cut to [`MAX_REASON_CHARS`].
fn bounded(reason: String) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}...", &reason[..cut]),
        None => reason,
    }
}

/// Rescans every `interval` and publishes each changed set on `sender`, until `shutdown`.
pub async fn watch(
    mut folder: PluginFolder,
    interval: Duration,
    sender: watch::Sender<PluginSet>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        match folder.rescan().await {
            Ok(true) => {
                let _ = sender.send(folder.plugins());
            }
            Ok(false) => {}
            Err(error) => tracing::error!("rescanning plugins: {error:#}"),
        }
    }
}
