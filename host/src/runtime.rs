//! The plugin runtime: one wasmtime `Engine`, one pre-instantiated component per plugin,
//! a fresh `Store` per call.
//!
//! Calls are async (`call_async` under the hood) and the engine's epoch ticks every 10 ms;
//! a running plugin yields to the executor at each tick, so a busy plugin cannot starve
//! other orders and the per-call timeout can always fire. No instance outlives its call;
//! the one thing a plugin's calls share is its cache (WIT 0.3, [`crate::cache`]), owned by
//! the loaded [`Plugin`] and so emptied by a reload.
//!
//! Instances come from wasmtime's pooling allocator: memories, tables, instance data and
//! async stacks are reserved once at start-up and reused call after call (copy-on-write
//! memory images), so instantiating costs no `mmap` and no page faults for the module's
//! data. The pool has [`RuntimeLimits::concurrent_calls`] slots; a call beyond them waits
//! for a slot (it does not fail), and its time budget starts once it has one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use uuid::Uuid;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use crate::bindings::older::{self, Upgrade};
use crate::bindings::types::{
    LabelledServer, PluginCatalogue, PluginInfo, ProviderError, Server, ServerRequest,
};
use crate::bindings::{WitVersion, current, v0_1, v0_2, v0_3, v0_4, v0_5};
use crate::boot_times::BootTimes;
use crate::cache::PluginCache;
use crate::manifest::{Limits, Manifest};
use crate::metrics::HostMetrics;
use crate::outbound::{OpenRequestLimits, OutboundClient, tls_trusting};
use crate::plugin_output::PluginOutput;
use crate::sandbox::{DenialReason, Grants, MemoryKind, Network, PluginState};
use crate::secrets::{MissingSecrets, SecretProblem, SecretSource};
use crate::throttle::VendorThrottle;
use crate::vendor_catalogue::Cleaned;
use provisioner_contract::messages::VendorCatalogue;

/// How often the engine's epoch advances.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a plugin call produced no answer from the plugin's own logic.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin answered with one of its error cases (its text already contained:
    /// [`crate::plugin_output`]); shown as the WIT case and the text, never `Debug`.
    #[error("{}", crate::plugin_output::describe(.0))]
    Provider(ProviderError),
    /// The plugin's answer cannot be taken: an identifier or address in it is oversized
    /// or malformed ([`crate::plugin_output::PluginOutput`]).
    #[error("the plugin answered {call} with {problem}")]
    BadAnswer {
        /// Which export.
        call: &'static str,
        /// What is wrong with the answer (the plugin's values quoted only in part).
        problem: String,
    },
    /// The call ran past the manifest's `call_timeout_ms`.
    #[error("the plugin call {call} did not finish within {after:?}")]
    Timeout {
        /// Which export.
        call: &'static str,
        /// The budget it exceeded.
        after: Duration,
    },
    /// The plugin tried to grow its memory past the manifest's `memory_mib`, or made the
    /// host hold more for it through wasi:http than that buys (see [`crate::sandbox`]).
    #[error("the plugin ran out of its {limit_mib} MiB {kind} in {call}")]
    MemoryLimit {
        /// Which export.
        call: &'static str,
        /// The cap.
        limit_mib: u32,
        /// Its own linear memory, or what it made the host hold.
        kind: MemoryKind,
    },
    /// The plugin tried to reach an origin its manifest does not grant, or any origin in a
    /// call that must work offline (`info`, `validate`), and failed for it.
    #[error(
        "the plugin tried to reach {} in {call}, {reason}",
        crate::plugin_output::contained_text(.origin, 256)
    )]
    CapabilityDenied {
        /// Which export.
        call: &'static str,
        /// The first origin refused.
        origin: String,
        /// Why it was refused.
        reason: DenialReason,
    },
    /// The host had no instance slot free (the pool's own bookkeeping lagged behind a
    /// freed slot): not the plugin's fault, and worth another try.
    #[error("the host had no free plugin instance for {call}: {error:#}")]
    HostBusy {
        /// Which export.
        call: &'static str,
        /// What wasmtime reported.
        error: wasmtime::Error,
    },
    /// The plugin trapped (panic, out of bounds, unreachable) or could not be instantiated.
    #[error(
        "the plugin trapped in {call}: {}",
        crate::plugin_output::contained_error(.error)
    )]
    Trap {
        /// Which export.
        call: &'static str,
        /// What wasmtime reported.
        error: wasmtime::Error,
    },
}

/// The outbound client of a plugin: its TLS trust is the public web PKI plus the CA
/// certificates its manifest names.
fn outbound_client(manifest: &Manifest, manifest_path: &Path) -> anyhow::Result<OutboundClient> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut certificates = Vec::new();
    for path in manifest.ca_certificate_paths(manifest_path) {
        let found: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| {
                format!(
                    "reading CA certificates from {} (named by {})",
                    path.display(),
                    manifest_path.display()
                )
            })?;
        if found.is_empty() {
            anyhow::bail!(
                "{} (named by {}) holds no PEM certificate",
                path.display(),
                manifest_path.display()
            );
        }
        certificates.extend(found);
    }
    let tls = tls_trusting(certificates)
        .with_context(|| format!("the CA certificates named by {}", manifest_path.display()))?;
    Ok(OutboundClient::with_address_policy(
        tls,
        manifest.allow_private_addresses,
    ))
}

/// wasmtime's own error type, as an `anyhow` error for context chains.
fn wasm<T>(result: wasmtime::Result<T>) -> anyhow::Result<T> {
    result.map_err(anyhow::Error::from)
}

/// Host-wide limits of the plugin runtime.
#[derive(Debug, Clone, Copy)]
pub struct RuntimeLimits {
    /// Plugin calls that may run at once, over all plugins: the pooling allocator's slots.
    /// Waiting orders hold no slot (between polls no instance exists), so this bounds the
    /// calls in progress, not the orders in flight.
    pub concurrent_calls: u32,
    /// The largest `limits.memory_mib` a manifest may ask for; every slot reserves room for
    /// it.
    pub max_memory_mib: u32,
    /// Outgoing requests all plugins together may have open at once (each may hold a
    /// connection); a request beyond waits for one to close. Also the largest
    /// `limits.max_open_requests` a manifest may ask for.
    pub max_open_requests: u32,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        Self {
            concurrent_calls: 1_000,
            max_memory_mib: 256,
            max_open_requests: crate::outbound::DEFAULT_OPEN_REQUESTS_PER_HOST,
        }
    }
}

/// Bytes of each slot's linear memory kept resident between calls and reset by `memset`
/// (only the pages a call touched, where the kernel has `PAGEMAP_SCAN`, Linux 6.7 and
/// later): a plugin call touches a few hundred KiB; what lies beyond is given back with
/// `madvise` as before. Resident memory grows by at most this much per linear memory of a
/// slot in use or warm (a plugin instance has at most [`MEMORIES_PER_CALL`]).
const MEMORY_KEPT_RESIDENT: usize = 2 * 1024 * 1024;
/// Bytes of each slot's tables kept resident between calls (the same for tables).
const TABLE_KEPT_RESIDENT: usize = 64 * 1024;

/// Core instances one plugin instance may need: a Rust component built for
/// `wasm32-wasip2` has its main module plus a few adapter shims.
const CORE_INSTANCES_PER_CALL: u32 = 8;
/// Linear memories one plugin instance may need.
const MEMORIES_PER_CALL: u32 = 2;
/// Tables one plugin instance may need.
const TABLES_PER_CALL: u32 = 4;
/// Pool slots per permitted call. The semaphore admits `concurrent_calls` calls, but a
/// slot a finished call freed can reach the pool's free list a moment after the next call
/// asks for one (seen once in 37,000 calls at full load: "maximum concurrent limit of 1000
/// for fibers reached"); twice the slots leaves room for that lag. Unused slots cost
/// address space only.
const SLOT_HEADROOM: u32 = 2;

/// The process-wide engine and linker every plugin shares.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<PluginState>,
    limits: RuntimeLimits,
    slots: Arc<tokio::sync::Semaphore>,
    /// Every plugin's open outgoing requests ([`RuntimeLimits::max_open_requests`]).
    open_requests: Arc<tokio::sync::Semaphore>,
    metrics: Arc<HostMetrics>,
    _ticker: EpochTicker,
}

impl PluginRuntime {
    /// [`PluginRuntime::with_limits`] with the default limits.
    pub fn new() -> anyhow::Result<Self> {
        Self::with_limits(RuntimeLimits::default())
    }

    /// Builds the engine (epoch interruption on, pooling allocator sized by `limits`) and
    /// the linker with WASI, wasi:http and the host interface.
    pub fn with_limits(limits: RuntimeLimits) -> anyhow::Result<Self> {
        anyhow::ensure!(
            limits.concurrent_calls > 0,
            "the plugin runtime needs at least one concurrent call"
        );
        let calls = limits.concurrent_calls;
        let slots = calls.saturating_mul(SLOT_HEADROOM);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(CORE_INSTANCES_PER_CALL))
            .total_memories(slots.saturating_mul(MEMORIES_PER_CALL))
            .total_tables(slots.saturating_mul(TABLES_PER_CALL))
            .total_stacks(slots)
            .max_memory_size(limits.max_memory_mib as usize * 1024 * 1024)
            // A slot's memory goes back to its first contents with `memset` over the pages
            // the call touched instead of `madvise` over all of it: the next call on the slot
            // takes no page faults, and the host no TLB shootdowns between its threads.
            .linear_memory_keep_resident(MEMORY_KEPT_RESIDENT)
            .table_keep_resident(TABLE_KEPT_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasm(Engine::new(&config)).context("creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        wasm(wasmtime_wasi::p2::add_to_linker_async(&mut linker)).context("linking WASI")?;
        wasm(wasmtime_wasi_http::p2::add_only_http_to_linker_async(
            &mut linker,
        ))
        .context("linking wasi:http")?;
        wasm(crate::sandbox::bound_request_strings(&mut linker))
            .context("bounding wasi:http request strings")?;
        // Each version's `host` (and `cache`) interface, under its own versioned name.
        macro_rules! link_host_interface {
            ($bindings:ident, $what:literal) => {
                wasm($bindings::ProviderPlugin::add_to_linker::<_, HasSelf<_>>(
                    &mut linker,
                    |state| state,
                ))
                .context($what)?;
            };
        }
        link_host_interface!(current, "linking the provisioner host interface");
        link_host_interface!(v0_5, "linking the provisioner host interface 0.5");
        link_host_interface!(v0_4, "linking the provisioner host interface 0.4");
        link_host_interface!(v0_3, "linking the provisioner host interface 0.3");
        link_host_interface!(v0_2, "linking the provisioner host interface 0.2");
        link_host_interface!(v0_1, "linking the provisioner host interface 0.1");
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            limits,
            slots: Arc::new(tokio::sync::Semaphore::new(calls as usize)),
            open_requests: OpenRequestLimits::host_wide(limits.max_open_requests),
            metrics: Arc::default(),
            _ticker: ticker,
        })
    }

    /// The series every plugin call of this runtime is recorded in.
    pub fn metrics(&self) -> Arc<HostMetrics> {
        self.metrics.clone()
    }

    /// Compiles a plugin's component, checks it implements the world, and asks it who it
    /// is and (WIT 0.5) what it accepts ([`Plugin::catalogue_cached`]). The answer must
    /// match the manifest's vendor. Its secrets come from this process's
    /// environment; every one the manifest names is required ([`MissingSecrets`]).
    pub async fn load(&self, manifest_path: &Path) -> anyhow::Result<Plugin> {
        let manifest = Manifest::load(manifest_path)?;
        self.load_manifest(manifest, manifest_path).await
    }

    /// [`PluginRuntime::load`] of a manifest already read (the conformance kit narrows its
    /// grants or limits first); relative paths in it are relative to `manifest_path`.
    pub async fn load_manifest(
        &self,
        manifest: Manifest,
        manifest_path: &Path,
    ) -> anyhow::Result<Plugin> {
        let secrets = SecretSource::environment().resolve(&manifest)?;
        self.load_with_secret_values(manifest, manifest_path, secrets)
            .await
    }

    /// [`PluginRuntime::load_manifest`] reading the secrets' environment variables through
    /// `lookup` instead of this process's environment.
    pub async fn load_manifest_with_secrets(
        &self,
        manifest: Manifest,
        manifest_path: &Path,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Plugin> {
        let secrets = SecretSource::environment().resolve_with(&manifest, |variable| {
            lookup(variable).ok_or(std::env::VarError::NotPresent)
        })?;
        self.load_with_secret_values(manifest, manifest_path, secrets)
            .await
    }

    /// [`PluginRuntime::load_manifest`] with its secrets already read (the plugin folder reads
    /// them with the host's [`SecretSource`]): one value for every key of the manifest's
    /// `[secrets]`, or the plugin is refused with [`MissingSecrets`].
    pub async fn load_with_secret_values(
        &self,
        manifest: Manifest,
        manifest_path: &Path,
        mut values: std::collections::BTreeMap<String, secrecy::SecretString>,
    ) -> anyhow::Result<Plugin> {
        if manifest.limits.memory_mib > self.limits.max_memory_mib {
            anyhow::bail!(
                "{}: limits.memory_mib = {} is more than this host allows a plugin ({} MiB, \
                 --plugin-max-memory-mib)",
                manifest_path.display(),
                manifest.limits.memory_mib,
                self.limits.max_memory_mib
            );
        }
        // One plugin may hold at most a quarter of the host's open requests, so a plugin that
        // keeps its requests open cannot make every other vendor's requests wait.
        let plugin_share = (self.limits.max_open_requests / 4).max(1);
        if manifest.limits.max_open_requests > plugin_share {
            anyhow::bail!(
                "{}: limits.max_open_requests = {} is more than this host allows one plugin \
                 (a quarter of --plugin-max-open-requests = {}: {plugin_share})",
                manifest_path.display(),
                manifest.limits.max_open_requests,
                self.limits.max_open_requests
            );
        }
        let mut secrets = std::collections::BTreeMap::new();
        let mut missing = Vec::new();
        for (key, variable) in &manifest.secrets {
            crate::manifest::check_secret_variable(&manifest.vendor, key, variable)
                .map_err(|problem| anyhow::anyhow!("{}: {problem}", manifest_path.display()))?;
            match values.remove(key) {
                Some(value) => {
                    secrets.insert(key.clone(), value);
                }
                None => missing.push(SecretProblem::Missing {
                    key: key.clone(),
                    variable: variable.clone(),
                    dir: None,
                }),
            }
        }
        if !missing.is_empty() {
            return Err(MissingSecrets {
                vendor: manifest.vendor.clone(),
                problems: missing,
            }
            .into());
        }
        let component_path = manifest.component_path(manifest_path);
        let component =
            wasm(Component::from_file(&self.engine, &component_path)).with_context(|| {
                format!(
                    "compiling plugin component {} (named by {})",
                    component_path.display(),
                    manifest_path.display()
                )
            })?;
        let pre = PluginPre::new(&self.linker, &component).with_context(|| {
            format!(
                "{} does not implement the provisioner:provider/provider-plugin world \
                 at a version this host loads (0.5, 0.4, 0.3, 0.2 or 0.1)",
                component_path.display()
            )
        })?;
        let client = outbound_client(&manifest, manifest_path)?;
        let grants = Arc::new(Grants {
            vendor: manifest.vendor.clone(),
            config: manifest.config.clone(),
            secrets,
            origins: manifest.grants(),
            memory_bytes: manifest.limits.memory_bytes(),
            client,
            outbound_requests: Default::default(),
            throttle: VendorThrottle::new(manifest.limits.requests_per_second),
            open_requests: OpenRequestLimits::new(
                manifest.limits.max_open_requests_per_call,
                manifest.limits.max_open_requests,
                self.open_requests.clone(),
            ),
            cache: PluginCache::new(manifest.limits.cache()),
        });
        let mut plugin = Plugin {
            engine: self.engine.clone(),
            boot_times: BootTimes::default(),
            slots: self.slots.clone(),
            metrics: self.metrics.clone(),
            pre,
            grants,
            limits: manifest.limits.clone(),
            info: PluginInfo {
                vendor: manifest.vendor.clone(),
                display_name: String::new(),
                version: String::new(),
            },
            catalogue: None,
        };
        let info = plugin
            .info()
            .await
            .with_context(|| format!("asking {} for its info", component_path.display()))?;
        if info.vendor != manifest.vendor {
            anyhow::bail!(
                "{} says it is the plugin for '{}', but its manifest {} says '{}'",
                component_path.display(),
                info.vendor,
                manifest_path.display(),
                manifest.vendor
            );
        }
        plugin.info = info;
        plugin.catalogue = plugin.ask_catalogue().await;
        tracing::debug!(
            vendor = %manifest.vendor,
            wit_version = %plugin.wit_version(),
            "loaded {}",
            component_path.display()
        );
        Ok(plugin)
    }
}

/// A component pre-instantiated against the newest world it implements.
enum PluginPre {
    /// `provisioner:provider@0.6`.
    Current(current::ProviderPluginPre<PluginState>),
    /// `provisioner:provider@0.5`.
    V0_5(v0_5::ProviderPluginPre<PluginState>),
    /// `provisioner:provider@0.4`.
    V0_4(v0_4::ProviderPluginPre<PluginState>),
    /// `provisioner:provider@0.3`.
    V0_3(v0_3::ProviderPluginPre<PluginState>),
    /// `provisioner:provider@0.2`.
    V0_2(v0_2::ProviderPluginPre<PluginState>),
    /// `provisioner:provider@0.1`.
    V0_1(v0_1::ProviderPluginPre<PluginState>),
}

impl PluginPre {
    /// Links the component and finds its world: the newest first, then older minors.
    fn new(linker: &Linker<PluginState>, component: &Component) -> anyhow::Result<Self> {
        let pre = wasm(linker.instantiate_pre(component))?;
        let newest = match current::ProviderPluginPre::new(pre.clone()) {
            Ok(current) => return Ok(PluginPre::Current(current)),
            Err(newest) => newest,
        };
        if let Ok(v0_5) = v0_5::ProviderPluginPre::new(pre.clone()) {
            return Ok(PluginPre::V0_5(v0_5));
        }
        if let Ok(v0_4) = v0_4::ProviderPluginPre::new(pre.clone()) {
            return Ok(PluginPre::V0_4(v0_4));
        }
        if let Ok(v0_3) = v0_3::ProviderPluginPre::new(pre.clone()) {
            return Ok(PluginPre::V0_3(v0_3));
        }
        if let Ok(v0_2) = v0_2::ProviderPluginPre::new(pre.clone()) {
            return Ok(PluginPre::V0_2(v0_2));
        }
        v0_1::ProviderPluginPre::new(pre)
            .map(PluginPre::V0_1)
            .map_err(|_| anyhow::Error::from(newest))
    }

    fn version(&self) -> WitVersion {
        match self {
            PluginPre::Current(_) => WitVersion::V0_6,
            PluginPre::V0_5(_) => WitVersion::V0_5,
            PluginPre::V0_4(_) => WitVersion::V0_4,
            PluginPre::V0_3(_) => WitVersion::V0_3,
            PluginPre::V0_2(_) => WitVersion::V0_2,
            PluginPre::V0_1(_) => WitVersion::V0_1,
        }
    }

    async fn instantiate(&self, store: &mut Store<PluginState>) -> wasmtime::Result<Instance> {
        Ok(match self {
            PluginPre::Current(pre) => Instance::Current(pre.instantiate_async(store).await?),
            PluginPre::V0_5(pre) => Instance::V0_5(pre.instantiate_async(store).await?),
            PluginPre::V0_4(pre) => Instance::V0_4(pre.instantiate_async(store).await?),
            PluginPre::V0_3(pre) => Instance::V0_3(pre.instantiate_async(store).await?),
            PluginPre::V0_2(pre) => Instance::V0_2(pre.instantiate_async(store).await?),
            PluginPre::V0_1(pre) => Instance::V0_1(pre.instantiate_async(store).await?),
        })
    }
}

/// One call's instance, of whichever version the plugin implements.
enum Instance {
    Current(current::ProviderPlugin),
    V0_5(v0_5::ProviderPlugin),
    V0_4(v0_4::ProviderPlugin),
    V0_3(v0_3::ProviderPlugin),
    V0_2(v0_2::ProviderPlugin),
    V0_1(v0_1::ProviderPlugin),
}

impl Instance {
    fn guest(&self) -> Guest<'_> {
        match self {
            Instance::Current(instance) => Guest::Current(instance.provisioner_provider_provider()),
            Instance::V0_5(instance) => Guest::V0_5(instance.provisioner_provider_provider()),
            Instance::V0_4(instance) => Guest::V0_4(instance.provisioner_provider_provider()),
            Instance::V0_3(instance) => Guest::V0_3(instance.provisioner_provider_provider()),
            Instance::V0_2(instance) => Guest::V0_2(instance.provisioner_provider_provider()),
            Instance::V0_1(instance) => Guest::V0_1(instance.provisioner_provider_provider()),
        }
    }
}

/// The `provider` exports of an instance. The types are shared, so most calls read the
/// same for every version (the `on_any_version!` macro below).
enum Guest<'a> {
    Current(&'a current::exports::provisioner::provider::provider::Guest),
    V0_5(&'a v0_5::exports::provisioner::provider::provider::Guest),
    V0_4(&'a v0_4::exports::provisioner::provider::provider::Guest),
    V0_3(&'a v0_3::exports::provisioner::provider::provider::Guest),
    V0_2(&'a v0_2::exports::provisioner::provider::provider::Guest),
    V0_1(&'a v0_1::exports::provisioner::provider::provider::Guest),
}

/// Makes the same call on whichever version `$guest` is. 0.5 and 0.4 share the current types;
/// older versions have types of their own: the answer is converted up
/// ([`older::Upgrade`]), and a request named after `with` is converted down first
/// ([`older::request`]).
macro_rules! on_any_version {
    ($guest:expr, $exports:ident => $call:expr) => {
        match $guest {
            Guest::Current($exports) => $call,
            Guest::V0_5($exports) => $call,
            Guest::V0_4($exports) => $call,
            Guest::V0_3($exports) => $call.map(Upgrade::upgrade),
            Guest::V0_2($exports) => $call.map(Upgrade::upgrade),
            Guest::V0_1($exports) => $call.map(Upgrade::upgrade),
        }
    };
    ($guest:expr, $exports:ident, with $request:ident => $call:expr) => {
        match $guest {
            Guest::Current($exports) => $call,
            Guest::V0_5($exports) => $call,
            Guest::V0_4($exports) => $call,
            older_guest => {
                let older_request = older::request($request);
                let $request = &older_request;
                on_any_version!(@older older_guest, $exports => $call)
            }
        }
    };
    (@older $guest:expr, $exports:ident => $call:expr) => {
        match $guest {
            Guest::Current(_) | Guest::V0_5(_) | Guest::V0_4(_) => {
                unreachable!("the versions sharing the current types are matched first")
            }
            Guest::V0_3($exports) => $call.map(Upgrade::upgrade),
            Guest::V0_2($exports) => $call.map(Upgrade::upgrade),
            Guest::V0_1($exports) => $call.map(Upgrade::upgrade),
        }
    };
}

/// A loaded plugin: its pre-instantiated component, grants and limits.
pub struct Plugin {
    engine: Engine,
    boot_times: BootTimes,
    slots: Arc<tokio::sync::Semaphore>,
    metrics: Arc<HostMetrics>,
    pre: PluginPre,
    grants: Arc<Grants>,
    limits: Limits,
    info: PluginInfo,
    catalogue: Option<VendorCatalogue>,
}

impl Plugin {
    /// The vendor id this plugin serves.
    pub fn vendor(&self) -> &str {
        &self.grants.vendor
    }

    /// The version of the WIT world the plugin implements.
    pub fn wit_version(&self) -> WitVersion {
        self.pre.version()
    }

    /// Entries in the plugin's cache now (expired ones included until dropped); never
    /// their keys or values.
    pub fn cache_entries(&self) -> usize {
        self.grants.cache.len()
    }

    /// What the plugin said about itself at load.
    pub fn info_cached(&self) -> &PluginInfo {
        &self.info
    }

    /// What the plugin said it accepts at load (its `catalogue`, cleaned): `None` when its
    /// WIT version has no `catalogue` (before 0.5) or the call failed (logged then).
    pub fn catalogue_cached(&self) -> Option<&VendorCatalogue> {
        self.catalogue.as_ref()
    }

    /// How long this vendor's recent servers took to boot (schedules first polls).
    pub fn boot_times(&self) -> &BootTimes {
        &self.boot_times
    }

    /// The manifest's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Outbound HTTP requests this plugin has attempted so far, granted or not.
    pub fn outbound_requests(&self) -> u64 {
        self.grants
            .outbound_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How long from now a rate-limited answer still pauses this vendor (zero when it does
    /// not).
    pub fn paused_for(&self) -> Duration {
        self.grants.throttle.paused_for()
    }

    /// Takes over the pause a 429 set on `previous`, the version this one replaces: a reload
    /// (a new manifest, a rotated secret) does not let the host send at once to a vendor that
    /// asked it to wait.
    pub fn keep_pause_of(&self, previous: &Plugin) {
        let left = previous.paused_for();
        if !left.is_zero() {
            self.grants.throttle.pause(Some(left));
        }
    }

    /// Runs one export in a fresh store, within the call budget.
    async fn invoke<R: ProviderAnswer + PluginOutput>(
        &self,
        call: &'static str,
        order_id: Option<Uuid>,
        run: impl AsyncFnOnce(Guest<'_>, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallError> {
        let budget = self.limits.call_timeout();
        // A slot of the instance pool; released after the store (declared first, dropped
        // last).
        let _slot = self
            .slots
            .acquire()
            .await
            .expect("the runtime never closes its slots");
        let mut store = Store::new(
            &self.engine,
            PluginState::new(self.grants.clone(), order_id, network_of(call)),
        );
        store.limiter(|state| &mut state.memory);
        // Yield to the executor at every epoch tick, so a busy plugin shares the threads and
        // the timeout below can always end the call.
        store.set_epoch_deadline(1);
        store.epoch_deadline_async_yield_and_update(1);
        let work = async {
            let instance = self.pre.instantiate(&mut store).await?;
            run(instance.guest(), &mut store).await
        };
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(budget, work).await;
        let state = store.data_mut();
        let denied = state.denied().into_iter().next();
        let result = match outcome {
            Err(_) => Err(CallError::Timeout {
                call,
                after: budget,
            }),
            Ok(Err(_)) if state.memory.hit => Err(CallError::MemoryLimit {
                call,
                limit_mib: self.limits.memory_mib,
                kind: MemoryKind::Linear,
            }),
            Ok(Err(error)) if state.ran_out_of_host_budget(&error) => Err(CallError::MemoryLimit {
                call,
                limit_mib: self.limits.memory_mib,
                kind: MemoryKind::HostHeld,
            }),
            Ok(Err(error)) if error.is::<wasmtime::PoolConcurrencyLimitError>() => {
                Err(CallError::HostBusy { call, error })
            }
            Ok(Err(error)) => Err(CallError::Trap { call, error }),
            // The plugin answered, but a refused request is why it failed: say so.
            Ok(Ok(answer)) => match denied {
                Some(denial) if answer_is_error(&answer) => Err(CallError::CapabilityDenied {
                    call,
                    origin: denial.origin.to_string(),
                    reason: denial.reason,
                }),
                _ => Ok(answer),
            },
        };
        // The answer enters the host here: its texts capped and escaped, its identifiers
        // checked, before anything formats, logs, stores or publishes it.
        let result = result.and_then(|answer| {
            answer
                .contained()
                .map_err(|problem| CallError::BadAnswer { call, problem })
        });
        let outcome = match &result {
            Ok(answer) if answer_is_error(answer) => "error",
            Ok(_) => "ok",
            Err(CallError::Provider(_)) => "error",
            Err(CallError::BadAnswer { .. }) => "bad_answer",
            Err(CallError::Timeout { .. }) => "timeout",
            Err(CallError::MemoryLimit { .. }) => "memory_limit",
            Err(CallError::CapabilityDenied { .. }) => "capability_denied",
            Err(CallError::HostBusy { .. }) => "host_busy",
            Err(CallError::Trap { .. }) => "trap",
        };
        self.metrics
            .plugin_call(self.vendor(), call, outcome, started.elapsed());
        result
    }

    /// `info`.
    pub async fn info(&self) -> Result<PluginInfo, CallError> {
        self.invoke(
            "info",
            None,
            async |guest, store| on_any_version!(guest, exports => exports.call_info(store).await),
        )
        .await
    }

    /// `catalogue` (WIT 0.5 on; `None` for older plugins, with no call made), cleaned for
    /// announcing ([`crate::vendor_catalogue`]), with what cleaning changed. Offline, within
    /// the same limits as `info`.
    pub async fn catalogue(&self) -> Result<Option<Cleaned>, CallError> {
        if !self.wit_version().has_catalogue() {
            return Ok(None);
        }
        let answer = self
            .invoke("catalogue", None, async |guest, store| match guest {
                Guest::Current(exports) => Ok(Some(exports.call_catalogue(store).await?)),
                Guest::V0_5(exports) => Ok(Some(exports.call_catalogue(store).await?)),
                _ => Ok(None),
            })
            .await?;
        Ok(answer.map(crate::vendor_catalogue::clean))
    }

    /// The catalogue kept at load: [`Plugin::catalogue`], its changes and failures logged
    /// as warnings (a failed call leaves it unknown; the plugin still serves).
    async fn ask_catalogue(&self) -> Option<VendorCatalogue> {
        match self.catalogue().await {
            Ok(Some(Cleaned { catalogue, changes })) => {
                for change in changes {
                    tracing::warn!(
                        vendor = %self.vendor(),
                        "the plugin's catalogue was cleaned before announcing it: {change}"
                    );
                }
                Some(catalogue)
            }
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(
                    vendor = %self.vendor(),
                    %error,
                    "the plugin's catalogue call failed; its regions, sizes and images are \
                     announced as unknown (the plugin serves orders all the same)"
                );
                None
            }
        }
    }

    /// `validate`.
    pub async fn validate(&self, request: &ServerRequest) -> Result<(), CallError> {
        self.invoke("validate", None, async |guest, store| {
            on_any_version!(guest, exports, with request => exports.call_validate(store, request).await)
        })
        .await?
        .map_err(CallError::Provider)
    }

    /// `create-server` (throttled).
    pub async fn create_server(
        &self,
        order_id: Uuid,
        request: &ServerRequest,
    ) -> Result<Server, CallError> {
        self.vendor_call("create-server", Some(order_id), async |guest, store| {
            on_any_version!(guest, exports, with request => exports.call_create_server(store, request).await)
        })
        .await
    }

    /// `create-new-server` (throttled): the create without the look-up, for a create no
    /// server can have been made for yet (an order's lease-free first copy:
    /// `worker::first_copy`). A plugin before WIT 0.6 has no such export: it gets
    /// `create-server`, look-up and all, which is as correct and one vendor request dearer.
    pub async fn create_new_server(
        &self,
        order_id: Uuid,
        request: &ServerRequest,
    ) -> Result<Server, CallError> {
        if !self.wit_version().has_create_new() {
            return self.create_server(order_id, request).await;
        }
        self.vendor_call("create-new-server", Some(order_id), async |guest, store| match guest {
            Guest::Current(exports) => exports.call_create_new_server(store, request).await,
            older => on_any_version!(older, exports, with request => exports.call_create_server(store, request).await),
        })
        .await
    }

    /// `find-server` (throttled).
    pub async fn find_server(&self, idempotency_key: &str) -> Result<Option<Server>, CallError> {
        self.vendor_call("find-server", None, async |guest, store| {
            on_any_version!(guest, exports => exports.call_find_server(store, idempotency_key).await)
        })
        .await
    }

    /// `get-server` (throttled).
    pub async fn get_server(
        &self,
        order_id: Option<Uuid>,
        vendor_id: &str,
    ) -> Result<Server, CallError> {
        self.vendor_call("get-server", order_id, async |guest, store| {
            on_any_version!(guest, exports => exports.call_get_server(store, vendor_id).await)
        })
        .await
    }

    /// `delete-server` (throttled).
    pub async fn delete_server(
        &self,
        order_id: Option<Uuid>,
        vendor_id: &str,
    ) -> Result<(), CallError> {
        self.vendor_call("delete-server", order_id, async |guest, store| {
            on_any_version!(guest, exports => exports.call_delete_server(store, vendor_id).await)
        })
        .await
    }

    /// `list-servers` (throttled): `None` when the plugin's WIT version (0.1) has no such
    /// export.
    pub async fn list_servers(&self) -> Result<Option<Vec<LabelledServer>>, CallError> {
        self.vendor_call("list-servers", None, async |guest, store| match guest {
            Guest::Current(exports) => Ok(exports.call_list_servers(store).await?.map(Some)),
            Guest::V0_5(exports) => Ok(exports.call_list_servers(store).await?.map(Some)),
            Guest::V0_4(exports) => Ok(exports.call_list_servers(store).await?.map(Some)),
            Guest::V0_3(exports) => Ok(exports.call_list_servers(store).await?.upgrade().map(Some)),
            Guest::V0_2(exports) => Ok(exports.call_list_servers(store).await?.upgrade().map(Some)),
            Guest::V0_1(_) => Ok(Ok(None)),
        })
        .await
    }

    /// An export that talks to the vendor: waits out a rate-limit pause, runs it (each of
    /// its requests waits for the vendor's token), and on a rate-limited answer pauses the
    /// vendor's calls and requests for the time it asked, at most
    /// [`crate::throttle::MAX_PAUSE`].
    async fn vendor_call<T: PluginOutput>(
        &self,
        call: &'static str,
        order_id: Option<Uuid>,
        run: impl AsyncFnOnce(
            Guest<'_>,
            &mut Store<PluginState>,
        ) -> wasmtime::Result<Result<T, ProviderError>>,
    ) -> Result<T, CallError> {
        // A call waits out a rate-limit pause; its requests wait for the vendor's tokens.
        self.grants.throttle.wait_out_pause().await;
        let result = self
            .invoke(call, order_id, run)
            .await?
            .map_err(CallError::Provider);
        if let Err(CallError::Provider(ProviderError::RateLimited(delay_ms))) = &result {
            let pause = self
                .grants
                .throttle
                .pause(delay_ms.map(Duration::from_millis));
            if pause.capped {
                tracing::warn!(
                    vendor = %self.vendor(),
                    asked_ms = delay_ms.unwrap_or_default(),
                    honoured = ?pause.honoured,
                    "the plugin asked to pause the vendor longer than the host honours"
                );
            }
        }
        result
    }
}

/// Whether the export `call` may use the network: `info`, `catalogue` and `validate` must
/// work offline.
fn network_of(call: &str) -> Network {
    match call {
        "info" | "catalogue" | "validate" => Network::Offline,
        _ => Network::Granted,
    }
}

/// A plugin export's answer: whether it is the error case (used to tell a denied request
/// apart from a plugin's own failure).
pub trait ProviderAnswer {
    /// Whether the plugin answered with an error.
    fn is_error(&self) -> bool {
        false
    }
}

impl ProviderAnswer for PluginInfo {}

impl ProviderAnswer for Option<PluginCatalogue> {}

impl<T> ProviderAnswer for Result<T, ProviderError> {
    fn is_error(&self) -> bool {
        self.is_err()
    }
}

fn answer_is_error<R: ProviderAnswer>(answer: &R) -> bool {
    answer.is_error()
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a thread of its own, until dropped.
struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map(|_| ())
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cannot start the epoch ticker; plugin calls will not yield")
            });
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
