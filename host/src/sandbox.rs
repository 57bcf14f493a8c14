//! What a plugin instance may touch: the per-call store state, the host imports it gets
//! (log, config, secrets), and the outbound HTTP grant.
//!
//! Deny by default: the WASI context has no preopened directories, no environment, no
//! arguments and no sockets; outbound HTTP goes only to the origins the manifest grants.
//! A refused request is answered to the plugin as the wasi:http error `HTTP-request-denied`
//! (not a trap), so the plugin can report it.

use std::collections::BTreeMap;
use std::sync::Arc;

use uuid::Uuid;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::provisioner::provider::host::{self, LogLevel};

/// What one plugin is granted, resolved once at load.
#[derive(Debug)]
pub struct Grants {
    /// The vendor, for log lines.
    pub vendor: String,
    /// `get-config` values.
    pub config: BTreeMap<String, String>,
    /// `get-secret` values, read from the host's environment at load.
    pub secrets: BTreeMap<String, String>,
    /// Origins (`scheme://host:port`) outbound HTTP may reach.
    pub origins: Vec<String>,
}

/// The state of one store: one plugin call.
pub struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: OutboundGrant,
    grants: Arc<Grants>,
    order_id: Option<Uuid>,
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
            },
            grants,
            order_id,
        }
    }
}

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
impl crate::bindings::provisioner::provider::types::Host for PluginState {}

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
        self.grants.secrets.get(&key).cloned()
    }
}

/// The wasi:http hooks that enforce the outbound grant.
struct OutboundGrant {
    grants: Arc<Grants>,
    order_id: Option<Uuid>,
}

/// The canonical `scheme://host:port` of a request URI, if it has one.
pub fn request_origin(uri: &http::Uri) -> Option<String> {
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let port = uri.port_u16().or(match scheme.as_str() {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    })?;
    Some(format!("{scheme}://{host}:{port}"))
}

/// Whether `origin` is one of the granted origins.
pub fn is_granted(origins: &[String], origin: &str) -> bool {
    origins.iter().any(|granted| granted == origin)
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
        let origin = request_origin(request.uri());
        let allowed = origin
            .as_deref()
            .is_some_and(|origin| is_granted(&self.grants.origins, origin));
        if !allowed {
            tracing::warn!(
                plugin = %self.grants.vendor,
                order_id = ?self.order_id,
                uri = %request.uri(),
                "denied outbound request: the manifest does not grant this origin"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only exact granted origins pass; default ports are filled in before comparing.
    #[test]
    fn grants_match_exact_origins_only() {
        let granted = vec!["https://api.hetzner.cloud:443".to_string()];
        let origin = |uri: &str| request_origin(&uri.parse().unwrap()).unwrap();
        assert!(is_granted(
            &granted,
            &origin("https://api.hetzner.cloud/v1/servers")
        ));
        assert!(is_granted(
            &granted,
            &origin("https://API.hetzner.cloud:443/v1")
        ));
        assert!(!is_granted(
            &granted,
            &origin("http://api.hetzner.cloud/v1")
        ));
        assert!(!is_granted(
            &granted,
            &origin("https://api.hetzner.cloud:8443/v1")
        ));
        assert!(!is_granted(&granted, &origin("https://evil.example/v1")));
    }
}
