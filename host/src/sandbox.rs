//! What a plugin instance may touch: the per-call store state, the host imports it gets
//! (log, config, secrets), and the outbound HTTP grant.
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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::current::provisioner::provider::host::{self, LogLevel};
use crate::bindings::v0_1::provisioner::provider::host as host_v0_1;
use crate::grants::{Origin, OriginPattern, ip_literal, is_granted, is_granted_by_name};
use crate::outbound::OutboundClient;

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
    /// A fresh, locked-down state for one call about `order_id`.
    pub fn new(grants: Arc<Grants>, order_id: Option<Uuid>) -> Self {
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: OutboundGrant {
                grants: grants.clone(),
                order_id,
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

    /// The origins this call tried to reach without a grant (or at a non-public address).
    pub fn denied(&self) -> Vec<Origin> {
        self.outbound
            .denied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
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
    fn log(&mut self, level: LogLevel, message: String) {
        let vendor = &self.grants.vendor;
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

/// 0.1 plugins get the same host services (the interface did not change).
impl host_v0_1::Host for PluginState {
    fn log(&mut self, level: host_v0_1::LogLevel, message: String) {
        let level = match level {
            host_v0_1::LogLevel::Trace => LogLevel::Trace,
            host_v0_1::LogLevel::Debug => LogLevel::Debug,
            host_v0_1::LogLevel::Info => LogLevel::Info,
            host_v0_1::LogLevel::Warn => LogLevel::Warn,
            host_v0_1::LogLevel::Error => LogLevel::Error,
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

/// The wasi:http hooks that enforce the outbound grant.
struct OutboundGrant {
    grants: Arc<Grants>,
    order_id: Option<Uuid>,
    /// Shared with the send futures: a granted name is refused at connect time.
    denied: Arc<Mutex<Vec<Origin>>>,
}

impl OutboundGrant {
    fn deny(&self, origin: Origin) {
        self.denied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(origin);
    }
}

impl WasiHttpHooks for OutboundGrant {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        self.grants
            .outbound_requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let origin = Origin::of(request.uri());
        let Some(origin) = origin.filter(|origin| is_granted(&self.grants.origins, origin)) else {
            if let Some(origin) = Origin::of(request.uri()) {
                self.deny(origin);
            }
            tracing::warn!(
                plugin = %self.grants.vendor,
                order_id = ?self.order_id,
                uri = %request.uri(),
                "denied outbound request: the manifest does not grant this origin"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
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
            self.deny(origin);
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        _ = fut;
        let denied = self.denied.clone();
        let vendor = self.grants.vendor.clone();
        let order_id = self.order_id;
        Box::new(async move {
            let answer = client.send(request, options).await;
            if let Err(wasmtime_wasi_http::Error::HttpRequestDenied) = &answer {
                tracing::warn!(
                    plugin = %vendor,
                    ?order_id,
                    %origin,
                    "denied outbound request: the granted name resolves to no public address"
                );
                denied
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push(origin);
            }
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::tls_trusting;

    /// Printing a plugin's grants (a `{:?}` in a log line, a panic message) never shows a
    /// secret's value.
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
        };
        for printed in [format!("{grants:?}"), format!("{grants:#?}")] {
            assert!(!printed.contains("hunter2"), "{printed}");
            assert!(printed.contains("token"), "the key may show: {printed}");
        }
    }
}
