//! What a plugin instance may touch: the per-call store state, the host imports it gets
//! (log, config, secrets, and since WIT 0.3 its own cache), and the outbound HTTP grant.
//!
//! The cache ([`crate::cache`]) is the one thing a call sees of earlier calls: it lives in
//! [`Grants`], built once per load, so every call of one loaded plugin shares it and a
//! reload starts with an empty one.
//!
//! Deny by default: the WASI context has no preopened directories, no environment, no
//! arguments and no sockets; outbound HTTP goes only to the origins the manifest grants.
//! A refused request is answered to the plugin as the wasi:http error `HTTP-request-denied`
//! (not a trap), so the plugin can report it.
//!
//! Non-public addresses (loopback, private, link-local such as cloud metadata: everything
//! [`provisioner_contract::netaddr::is_public`] refuses) are reached only when the manifest
//! says `allow_private_addresses = true` or a grant names the IP literal itself: an IP
//! literal is judged here, a granted name by the outbound client's resolver at connect time
//! ([`crate::outbound`]). Both refusals count as a denied origin.
//!
//! `info` and `validate` run offline ([`Network::Offline`]): every request they try is
//! refused as `HTTP-request-denied`, granted origin or not, and still counted in
//! [`Grants::outbound_requests`] (the conformance kit checks `validate` makes none).
//!
//! # What a plugin makes the host hold
//!
//! wasi:http copies what a plugin builds into the host: header names and values of a
//! `fields`, a request's method, authority and path, body bytes waiting to be sent. A
//! call's resource table (every wasi handle the plugin holds) has at most
//! [`host_table_entries`] entries, and no entry holds more than [`HEAVIEST_ENTRY`]:
//! - a `fields`: at most [`FIELD_SIZE_LIMIT`] of names and values (wasmtime counts them);
//! - an `outgoing-request`: its headers (the same limit), its path (at most 64 KiB, the
//!   `http` crate's URI limit), authority and method (at most [`MAX_AUTHORITY_BYTES`] and
//!   [`MAX_METHOD_BYTES`], checked by [`bound_request_strings`]'s setters);
//! - an `outgoing-body`: at most two chunks of [`OUTGOING_BODY_CHUNK`] waiting for hyper.
//!
//! The entries scale with the manifest's `memory_mib`: `memory_mib` MiB / 128 KiB, and
//! at least [`MIN_TABLE_ENTRIES`] (room for every open request's handles). So a plugin with
//! `memory_mib = 64` makes the host hold at most 512 x 128 KiB = 64 MiB besides its own
//! linear memory (one with less than 32 MiB: 32 MiB). What comes back from the vendor
//! (response headers, a body's next frame, hyper's buffers) is bounded per open request
//! ([`crate::outbound`]'s limits). A plugin that runs into the table's end or a `fields`
//! limit traps; the call ends as `plugin_memory` ([`PluginState::ran_out_of_host_budget`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;
use wasmtime::ResourceLimiter;
use wasmtime::component::{Linker, Resource, ResourceTable, ResourceTableError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Method;
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;
use wasmtime_wasi_http::{
    FieldMapError, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use crate::bindings::current::provisioner::provider::cache as wit_cache;
use crate::bindings::current::provisioner::provider::host::{self, LogLevel};
use crate::bindings::v0_1::provisioner::provider::host as host_v0_1;
use crate::bindings::v0_2::provisioner::provider::host as host_v0_2;
use crate::bindings::v0_3::provisioner::provider::cache as cache_v0_3;
use crate::bindings::v0_3::provisioner::provider::host as host_v0_3;
use crate::bindings::v0_4::provisioner::provider::cache as cache_v0_4;
use crate::bindings::v0_4::provisioner::provider::host as host_v0_4;
use crate::bindings::v0_5::provisioner::provider::cache as cache_v0_5;
use crate::bindings::v0_5::provisioner::provider::host as host_v0_5;
use crate::cache::{CacheError, PluginCache};
use crate::grants::{Origin, OriginPattern, ip_literal, is_granted, is_granted_by_name};
use crate::outbound::{CallOpenRequests, OpenRequestLimits, OutboundClient, held_until_done};
use crate::throttle::VendorThrottle;

/// The most bytes of header names and values one wasi:http `fields` may hold (wasmtime's
/// default is 128 KiB; vendors' APIs take 8 to 16 KiB of headers).
pub const FIELD_SIZE_LIMIT: usize = 32 * 1024;
/// The most bytes one write to an outgoing body may carry (wasmtime's default is 1 MiB; the
/// SDK writes what `check-write` allows). Two such chunks may wait for hyper per body.
pub const OUTGOING_BODY_CHUNK: usize = 64 * 1024;
/// The longest authority (`host:port`) a request may have.
pub const MAX_AUTHORITY_BYTES: usize = 1024;
/// The longest method a request may have.
pub const MAX_METHOD_BYTES: usize = 64;
/// The most one resource table entry holds in the host (see the module docs): a body's two
/// chunks.
pub const HEAVIEST_ENTRY: usize = 2 * OUTGOING_BODY_CHUNK;
/// The fewest resource table entries a call gets, whatever its `memory_mib`.
pub const MIN_TABLE_ENTRIES: usize = 256;

/// The resource table entries a call of a plugin with `memory_bytes` of linear memory
/// gets: as many [`HEAVIEST_ENTRY`]s as fit in its memory, at least [`MIN_TABLE_ENTRIES`].
pub fn host_table_entries(memory_bytes: usize) -> usize {
    (memory_bytes / HEAVIEST_ENTRY).max(MIN_TABLE_ENTRIES)
}

/// What one plugin is granted, resolved once at load.
#[derive(Debug)]
pub struct Grants {
    /// The vendor, for log lines.
    pub vendor: String,
    /// `get-config` values.
    pub config: BTreeMap<String, String>,
    /// `get-secret` values, read from the host's environment at load. Their `Debug` is
    /// `[REDACTED]`, so printing the grants never shows one.
    pub secrets: BTreeMap<String, SecretString>,
    /// Origins outbound HTTP may reach.
    pub origins: Vec<OriginPattern>,
    /// Linear memory one call may use.
    pub memory_bytes: usize,
    /// The pooled client outbound requests go through, with the plugin's TLS trust.
    pub client: OutboundClient,
    /// Outbound requests attempted, granted or not (the conformance kit checks `validate`
    /// makes none).
    pub outbound_requests: std::sync::atomic::AtomicU64,
    /// The vendor's request budget: every outbound request waits for its token and for a
    /// rate-limit pause to end.
    pub throttle: VendorThrottle,
    /// How many outbound requests may be open at once (per call, plugin, host).
    pub open_requests: OpenRequestLimits,
    /// The plugin's cache (WIT 0.3), shared by all its calls, gone with this load. Its
    /// `Debug` shows counts only.
    pub cache: PluginCache,
}

/// Whether a call may use the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Requests to granted origins go out (the calls that talk to the vendor).
    Granted,
    /// Every request is refused (`info`, `validate`: they must work offline).
    Offline,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialReason {
    /// No grant names its origin, or a granted name led to a non-public address.
    NotGranted,
    /// The call must work offline.
    Offline,
}

impl fmt::Display for DenialReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenialReason::NotGranted => "which its manifest does not grant",
            DenialReason::Offline => {
                "but that call must work offline (the host allows no request in info or \
                 validate)"
            }
        })
    }
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Where it was going.
    pub origin: Origin,
    /// Why it was refused.
    pub reason: DenialReason,
}

/// Which memory a call ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// Its linear memory (`memory_mib`).
    Linear,
    /// What it made the host hold through wasi:http (see the module docs).
    HostHeld,
}

impl fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryKind::Linear => "memory",
            MemoryKind::HostHeld => {
                "budget of host memory (wasi:http headers, bodies and handles it made the host \
                 hold)"
            }
        })
    }
}

/// The state of one store: one plugin call.
pub struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: OutboundGrant,
    grants: Arc<Grants>,
    order_id: Option<Uuid>,
    /// The memory cap, and whether the plugin ran into it.
    pub memory: MemoryCap,
}

impl PluginState {
    /// A fresh, locked-down state for one call about `order_id`, with or without the
    /// network.
    pub fn new(grants: Arc<Grants>, order_id: Option<Uuid>, network: Network) -> Self {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(FIELD_SIZE_LIMIT);
        let mut table = ResourceTable::new();
        table.set_max_capacity(host_table_entries(grants.memory_bytes));
        Self {
            wasi,
            http,
            table,
            outbound: OutboundGrant {
                grants: grants.clone(),
                order_id,
                network,
                open: grants.open_requests.for_call(),
                told_open_limit: false,
                denied: Arc::default(),
            },
            memory: MemoryCap {
                max_bytes: grants.memory_bytes,
                hit: false,
            },
            grants,
            order_id,
        }
    }

    /// The requests this call tried and the host refused: no grant, a non-public address,
    /// or a call that must work offline.
    pub fn denied(&self) -> Vec<Denial> {
        self.outbound
            .denied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Whether `error` (how the call failed) is the plugin running out of what it may make
    /// the host hold: its resource table is full, or a `fields` went past its limit.
    pub fn ran_out_of_host_budget(&mut self, error: &wasmtime::Error) -> bool {
        let table_full = self.table.iter_mut().count() >= self.table.max_capacity()
            || matches!(
                error.downcast_ref::<ResourceTableError>(),
                Some(ResourceTableError::Full)
            );
        let fields_too_big = matches!(
            error.downcast_ref::<FieldMapError>(),
            Some(FieldMapError::TotalSizeTooBig | FieldMapError::TooManyFields)
        );
        table_full || fields_too_big
    }
}

/// Sets a part of the outgoing request `request` with `set` if the value is `acceptable`;
/// the guest's answer (an error for a value refused, as wasi:http answers a malformed one).
fn set_if_acceptable(
    state: &mut PluginState,
    request: &Resource<HostOutgoingRequest>,
    acceptable: bool,
    set: impl FnOnce(&mut HostOutgoingRequest),
) -> wasmtime::Result<(Result<(), ()>,)> {
    let outgoing = state.table.get_mut(request)?;
    if !acceptable {
        return Ok((Err(()),));
    }
    set(outgoing);
    Ok((Ok(()),))
}

/// Replaces wasi:http's `outgoing-request.set-method` and `set-authority` with the same
/// checks plus a length bound ([`MAX_METHOD_BYTES`], [`MAX_AUTHORITY_BYTES`]): wasmtime
/// keeps any length, so a plugin could park its whole memory's worth in each request. Too
/// long is refused like malformed (the guest's `result` is an error, not a trap). Call after
/// `wasmtime_wasi_http::p2::add_only_http_to_linker_async`.
pub fn bound_request_strings(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    // The version wasmtime-wasi-http 48 defines (its `wit/deps/http.wit`); guests' 0.2.x
    // imports resolve to it. A wasmtime with another version makes every plugin fail to
    // link here, loudly, rather than keep the unbounded setters.
    const WASI_HTTP_TYPES: &str = "wasi:http/types@0.2.12";
    linker.allow_shadowing(true);
    let mut types = linker.instance(WASI_HTTP_TYPES)?;
    types.func_wrap(
        "[method]outgoing-request.set-method",
        |mut store, (request, method): (Resource<HostOutgoingRequest>, Method)| {
            let acceptable = match &method {
                Method::Other(other) => {
                    other.len() <= MAX_METHOD_BYTES && other.parse::<http::Method>().is_ok()
                }
                _ => true,
            };
            set_if_acceptable(store.data_mut(), &request, acceptable, |outgoing| {
                outgoing.method = method;
            })
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.set-authority",
        |mut store, (request, authority): (Resource<HostOutgoingRequest>, Option<String>)| {
            let acceptable = authority.as_deref().is_none_or(|authority| {
                authority.len() <= MAX_AUTHORITY_BYTES
                    && authority.parse::<http::uri::Authority>().is_ok()
            });
            set_if_acceptable(store.data_mut(), &request, acceptable, |outgoing| {
                outgoing.authority = authority;
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Caps a store's linear memory and remembers whether the plugin ran into the cap.
pub struct MemoryCap {
    max_bytes: usize,
    /// Whether a growth past the cap was refused.
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Table elements one instance may have (function references: far more than any plugin
/// needs, far less than a bomb).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// The `types` interface has no functions; its (empty) host trait still has to exist.
impl crate::bindings::types::Host for PluginState {}

impl host::Host for PluginState {
    /// A plugin's log line, contained: only when its level is logged at all, within the
    /// plugin's volume limit (dropped lines are counted, with one summary warning per
    /// interval), cut to a cap and with its control characters escaped, so a newline
    /// cannot forge a line of the host's log ([`crate::plugin_output`]).
    fn log(&mut self, level: LogLevel, message: String) {
        use crate::plugin_output::{MAX_LOG_LINE_BYTES, admit_log_line, contained_text};
        let enabled = match level {
            LogLevel::Trace => tracing::enabled!(tracing::Level::TRACE),
            LogLevel::Debug => tracing::enabled!(tracing::Level::DEBUG),
            LogLevel::Info => tracing::enabled!(tracing::Level::INFO),
            LogLevel::Warn => tracing::enabled!(tracing::Level::WARN),
            LogLevel::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        let vendor = &self.grants.vendor;
        if !enabled || !admit_log_line(vendor) {
            return;
        }
        let message = contained_text(&message, MAX_LOG_LINE_BYTES);
        let order_id = self.order_id.map(|id| id.to_string()).unwrap_or_default();
        match level {
            LogLevel::Trace => tracing::trace!(plugin = %vendor, order_id, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin = %vendor, order_id, "{message}"),
            LogLevel::Info => tracing::info!(plugin = %vendor, order_id, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin = %vendor, order_id, "{message}"),
            LogLevel::Error => tracing::error!(plugin = %vendor, order_id, "{message}"),
        }
    }

    fn get_config(&mut self, key: String) -> Option<String> {
        self.grants.config.get(&key).cloned()
    }

    fn get_secret(&mut self, key: String) -> Option<String> {
        self.grants
            .secrets
            .get(&key)
            .map(|secret| secret.expose_secret().to_string())
    }
}

/// The plugin's own cache: keys and values are never logged (they may be tokens).
impl wit_cache::Host for PluginState {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        self.grants.cache.get(&key)
    }

    fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), wit_cache::CacheError> {
        self.grants
            .cache
            .set(&key, value, std::time::Duration::from_millis(ttl_ms))
            .map_err(|error| match error {
                CacheError::InvalidKey => wit_cache::CacheError::InvalidKey,
                CacheError::TooLarge => wit_cache::CacheError::TooLarge,
                CacheError::Full => wit_cache::CacheError::Full,
            })
    }

    fn delete(&mut self, key: String) {
        self.grants.cache.delete(&key)
    }
}

/// Plugins of older minors get the same host services: the `host` interface did not change,
/// but each version's is its own type.
macro_rules! older_host {
    ($($version:ident),+) => {$(
        impl $version::Host for PluginState {
            fn log(&mut self, level: $version::LogLevel, message: String) {
                let level = match level {
                    $version::LogLevel::Trace => LogLevel::Trace,
                    $version::LogLevel::Debug => LogLevel::Debug,
                    $version::LogLevel::Info => LogLevel::Info,
                    $version::LogLevel::Warn => LogLevel::Warn,
                    $version::LogLevel::Error => LogLevel::Error,
                };
                host::Host::log(self, level, message)
            }

            fn get_config(&mut self, key: String) -> Option<String> {
                host::Host::get_config(self, key)
            }

            fn get_secret(&mut self, key: String) -> Option<String> {
                host::Host::get_secret(self, key)
            }
        }
    )+};
}

older_host!(host_v0_5, host_v0_4, host_v0_3, host_v0_2, host_v0_1);

/// 0.3's `types` interface has no functions either (0.4 shares the current one).
impl crate::bindings::v0_3::provisioner::provider::types::Host for PluginState {}

/// Plugins of older minors with a cache (0.5, 0.4, 0.3) get the same cache: the interface did
/// not change, but each version's is its own type.
macro_rules! older_cache {
    ($($version:ident),+) => {$(
        impl $version::Host for PluginState {
            fn get(&mut self, key: String) -> Option<Vec<u8>> {
                wit_cache::Host::get(self, key)
            }

            fn set(
                &mut self,
                key: String,
                value: Vec<u8>,
                ttl_ms: u64,
            ) -> Result<(), $version::CacheError> {
                wit_cache::Host::set(self, key, value, ttl_ms).map_err(|error| match error {
                    wit_cache::CacheError::InvalidKey => $version::CacheError::InvalidKey,
                    wit_cache::CacheError::TooLarge => $version::CacheError::TooLarge,
                    wit_cache::CacheError::Full => $version::CacheError::Full,
                })
            }

            fn delete(&mut self, key: String) {
                wit_cache::Host::delete(self, key)
            }
        }
    )+};
}

older_cache!(cache_v0_5, cache_v0_4, cache_v0_3);

/// The wasi:http hooks that enforce the outbound grant.
struct OutboundGrant {
    grants: Arc<Grants>,
    order_id: Option<Uuid>,
    network: Network,
    /// This call's open requests.
    open: CallOpenRequests,
    /// Whether this call was told once in the log that it has all its requests open (one
    /// line per call, not one per refused request).
    told_open_limit: bool,
    /// Shared with the send futures: a granted name is refused at connect time.
    denied: Arc<Mutex<Vec<Denial>>>,
}

type SendFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl OutboundGrant {
    fn deny(&self, origin: Origin, reason: DenialReason) {
        self.denied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(Denial { origin, reason });
    }

    fn refused(error: wasmtime_wasi_http::Error) -> SendFuture {
        Box::new(async { Err(error) })
    }
}

impl WasiHttpHooks for OutboundGrant {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        self.grants
            .outbound_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.network == Network::Offline {
            if let Some(origin) = Origin::of(request.uri()) {
                self.deny(origin, DenialReason::Offline);
            }
            tracing::warn!(
                plugin = %self.grants.vendor,
                uri = %request.uri(),
                "denied outbound request: info and validate must work offline"
            );
            return Self::refused(wasmtime_wasi_http::Error::HttpRequestDenied);
        }
        let origin = Origin::of(request.uri());
        let Some(origin) = origin.filter(|origin| is_granted(&self.grants.origins, origin)) else {
            if let Some(origin) = Origin::of(request.uri()) {
                self.deny(origin, DenialReason::NotGranted);
            }
            tracing::warn!(
                plugin = %self.grants.vendor,
                order_id = ?self.order_id,
                uri = %request.uri(),
                "denied outbound request: the manifest does not grant this origin"
            );
            return Self::refused(wasmtime_wasi_http::Error::HttpRequestDenied);
        };
        let client = self.grants.client.clone();
        if let Some(ip) = ip_literal(&origin.host)
            && !provisioner_contract::netaddr::is_public(ip)
            && !client.allows_private_addresses()
            && !is_granted_by_name(&self.grants.origins, &origin)
        {
            tracing::warn!(
                plugin = %self.grants.vendor,
                order_id = ?self.order_id,
                %origin,
                "denied outbound request: a non-public address that no grant names \
                 (allow_private_addresses is off)"
            );
            self.deny(origin, DenialReason::NotGranted);
            return Self::refused(wasmtime_wasi_http::Error::HttpRequestDenied);
        }
        let Some(slot) = self.open.try_open() else {
            if !std::mem::replace(&mut self.told_open_limit, true) {
                tracing::warn!(
                    plugin = %self.grants.vendor,
                    order_id = ?self.order_id,
                    "refused outbound requests: the call has as many open as \
                     limits.max_open_requests_per_call allows (connection-limit-reached)"
                );
            }
            return Self::refused(wasmtime_wasi_http::Error::ConnectionLimitReached);
        };
        _ = fut;
        let denied = self.denied.clone();
        let grants = self.grants.clone();
        let order_id = self.order_id;
        Box::new(async move {
            // The vendor's rate and pause first, then the plugin's and the host's open
            // requests: a request waiting for its token holds no connection.
            grants.throttle.acquire().await;
            let open = slot.open().await;
            let answer = client.send(request, options).await;
            if let Err(wasmtime_wasi_http::Error::HttpRequestDenied) = &answer {
                tracing::warn!(
                    plugin = %grants.vendor,
                    ?order_id,
                    %origin,
                    "denied outbound request: the granted name resolves to no public address"
                );
                denied
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(Denial {
                        origin,
                        reason: DenialReason::NotGranted,
                    });
            }
            answer.map(|(response, io)| (held_until_done(response, open), io))
        })
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        OUTGOING_BODY_CHUNK
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tls_trusting;

    /// Printing a plugin's grants (a `{:?}` in a log line, a panic message) never shows a
    /// secret's value, nor a cached one.
    #[test]
    fn debug_output_never_shows_a_secret() {
        let grants = Grants {
            vendor: "acme".into(),
            config: BTreeMap::from([("base-url".to_string(), "https://acme.example".to_string())]),
            secrets: BTreeMap::from([(
                "token".to_string(),
                "hunter2-very-secret".to_string().into(),
            )]),
            origins: Vec::new(),
            memory_bytes: 1 << 20,
            client: OutboundClient::new(tls_trusting(Vec::new()).unwrap()),
            outbound_requests: Default::default(),
            throttle: VendorThrottle::new(None),
            open_requests: OpenRequestLimits::default(),
            cache: PluginCache::new(crate::cache::CacheLimits {
                entries: 4,
                bytes: 1024,
            }),
        };
        grants
            .cache
            .set(
                "keystone",
                b"hunter3-token".to_vec(),
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        for printed in [format!("{grants:?}"), format!("{grants:#?}")] {
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(!printed.contains("hunter3"), "{printed}");
            assert!(printed.contains("token"), "the key may show: {printed}");
        }
    }
}
