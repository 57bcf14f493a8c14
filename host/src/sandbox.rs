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
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::provisioner::provider::host::{self, LogLevel};
use crate::grants::{Origin, OriginPattern, is_granted};

/// What one plugin is granted, resolved once at load.
#[derive(Debug)]
pub struct Grants {
    /// The vendor, for log lines.
    pub vendor: String,
    /// `get-config` values.
    pub config: BTreeMap<String, String>,
    /// `get-secret` values, read from the host's environment at load.
    pub secrets: BTreeMap<String, String>,
    /// Origins outbound HTTP may reach.
    pub origins: Vec<OriginPattern>,
    /// Linear memory one call may use.
    pub memory_bytes: usize,
    /// The TLS trust for HTTPS when the manifest adds CA certificates (the public web PKI
    /// plus those); `None` uses the public web PKI alone.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A TLS client configuration trusting the public web PKI and `extra` CA certificates.
pub fn tls_trusting(
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    for certificate in extra {
        roots.add(certificate)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
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
                denied: Vec::new(),
            },
            memory: MemoryCap {
                max_bytes: grants.memory_bytes,
                hit: false,
            },
            grants,
            order_id,
        }
    }

    /// The origins this call tried to reach without a grant.
    pub fn denied(&self) -> &[Origin] {
        &self.outbound.denied
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
    denied: Vec<Origin>,
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
        let origin = Origin::of(request.uri());
        let allowed = origin
            .as_ref()
            .is_some_and(|origin| is_granted(&self.grants.origins, origin));
        if !allowed {
            if let Some(origin) = origin {
                self.denied.push(origin);
            }
            tracing::warn!(
                plugin = %self.grants.vendor,
                order_id = ?self.order_id,
                uri = %request.uri(),
                "denied outbound request: the manifest does not grant this origin"
            );
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        _ = fut;
        let https = request.uri().scheme_str() == Some("https");
        match (&self.grants.tls, https) {
            (Some(tls), true) => Box::new(send_with_trust(request, options, tls.clone())),
            _ => Box::new(async move {
                use http_body_util::BodyExt;
                let (response, io) =
                    wasmtime_wasi_http::default_send_request(request, options).await?;
                Ok((
                    response.map(BodyExt::boxed_unsync),
                    Box::new(io) as Box<dyn Future<Output = _> + Send>,
                ))
            }),
        }
    }
}

/// The connection's driver, as wasi:http wants it back.
type ConnectionFuture = Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>;

/// An HTTPS request with the plugin's own trust (the public web PKI plus the manifest's CA
/// certificates). Mirrors wasmtime-wasi-http's default sender, whose trust is fixed.
async fn send_with_trust(
    mut request: http::Request<wasmtime_wasi_http::WasiBody>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        ConnectionFuture,
    ),
    wasmtime_wasi_http::Error,
> {
    use http_body_util::BodyExt;
    use wasmtime_wasi_http::Error;

    let no_timeout = std::time::Duration::from_secs(600);
    let connect_timeout = options
        .as_ref()
        .and_then(|o| o.connect_timeout)
        .unwrap_or(no_timeout);
    let first_byte_timeout = options
        .as_ref()
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(no_timeout);
    let uri = request.uri().clone();
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?.to_string();
    let port = uri.port_u16().unwrap_or(443);
    // IPv6 literals come bracketed in URIs; names and the socket address want them bare.
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tcp = tokio::time::timeout(
        connect_timeout,
        tokio::net::TcpStream::connect((bare_host.as_str(), port)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::Connect)?;
    let name = rustls::pki_types::ServerName::try_from(bare_host)
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(Error::Tls)?;
    let (mut sender, connection) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)?
    .map_err(Error::from)?;
    // The connection runs beside the request until the response body is read.
    let driver = tokio::spawn(connection);
    // On the wire the request line carries only the path (no proxy here).
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
        .await
        .map_err(|_| Error::ConnectionReadTimeout)?
        .map_err(Error::from)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io: ConnectionFuture = Box::new(async move {
        match driver.await {
            Ok(result) => result.map_err(Error::from),
            Err(_) => Ok(()),
        }
    });
    Ok((response, io))
}
