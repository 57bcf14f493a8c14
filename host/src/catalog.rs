//! The plugins directory, kept in step with the disk: a rescan loads new plugins, reloads
//! changed ones and drops removed ones, so a vendor is added by copying a `.wasm` and its
//! manifest into `PLUGINS_DIR`, without restarting the host.
//!
//! A replaced plugin serves new orders; calls already running keep the old one (they hold
//! it). A replacement that does not load is logged and the old version keeps serving. A
//! file caught half-copied fails to load and is tried again once it changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::manifest::Manifest;
use crate::runtime::{Plugin, PluginRuntime};

/// The plugins in service, by vendor.
pub type PluginSet = Arc<BTreeMap<String, Arc<Plugin>>>;

/// What a manifest and its component looked like when last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    manifest: Option<(SystemTime, u64)>,
    component: Option<(SystemTime, u64)>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn fingerprint(manifest_path: &Path) -> Fingerprint {
    let component = Manifest::load(manifest_path)
        .ok()
        .and_then(|m| stamp(&m.component_path(manifest_path)));
    Fingerprint {
        manifest: stamp(manifest_path),
        component,
    }
}

struct Loaded {
    fingerprint: Fingerprint,
    plugin: Arc<Plugin>,
}

/// The plugins loaded from one directory.
pub struct Catalog {
    runtime: Arc<PluginRuntime>,
    dir: PathBuf,
    loaded: BTreeMap<PathBuf, Loaded>,
    /// Manifests that failed to load, so the same failure is not retried every scan.
    failed: BTreeMap<PathBuf, Fingerprint>,
}

impl Catalog {
    /// An empty catalog of `dir`; call [`Catalog::rescan`] to fill it.
    pub fn new(runtime: Arc<PluginRuntime>, dir: PathBuf) -> Self {
        Self {
            runtime,
            dir,
            loaded: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// The plugins in service now.
    pub fn plugins(&self) -> PluginSet {
        Arc::new(
            self.loaded
                .values()
                .map(|l| (l.plugin.vendor().to_string(), l.plugin.clone()))
                .collect(),
        )
    }

    /// Brings the catalog in line with the directory; whether the set of plugins changed.
    pub async fn rescan(&mut self) -> anyhow::Result<bool> {
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

        for path in manifests {
            let print = fingerprint(&path);
            if self
                .loaded
                .get(&path)
                .is_some_and(|l| l.fingerprint == print)
                || self.failed.get(&path) == Some(&print)
            {
                continue;
            }
            match self.runtime.load(&path).await {
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
                        continue;
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
                    self.failed.remove(&path);
                    self.loaded.insert(
                        path,
                        Loaded {
                            fingerprint: print,
                            plugin: Arc::new(plugin),
                        },
                    );
                    changed = true;
                }
                Err(error) => {
                    let keeps = if self.loaded.contains_key(&path) {
                        "; the previous version keeps serving"
                    } else {
                        ""
                    };
                    tracing::error!(manifest = %path.display(), "cannot load plugin{keeps}: {error:#}");
                    self.failed.insert(path, print);
                }
            }
        }
        Ok(changed)
    }
}

/// Rescans every `interval` and publishes each changed set on `sender`, until `shutdown`.
pub async fn watch(
    mut catalog: Catalog,
    interval: Duration,
    sender: watch::Sender<PluginSet>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.cancelled() => return,
        }
        match catalog.rescan().await {
            Ok(true) => {
                let _ = sender.send(catalog.plugins());
            }
            Ok(false) => {}
            Err(error) => tracing::error!("rescanning plugins: {error:#}"),
        }
    }
}
