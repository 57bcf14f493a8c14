//! The host's outbound HTTP client for plugins: one pooled client per loaded plugin.
//!
//! Plugins reach their vendor through wasi:http; the host sends the request (after the
//! grant check in [`crate::sandbox`]). wasmtime-wasi-http's default sender opens a new
//! TCP (and TLS) connection per request; with thousands of orders polling, that churn costs
//! CPU and ephemeral ports and shows up as resets under load. Here every plugin gets one
//! `hyper-util` client whose connections are kept alive and reused across calls and
//! orders, with the plugin's own TLS trust (the public web PKI plus its manifest's CA
//! certificates).
//!
//! Addresses: a granted host NAME is resolved by the client's own resolver, which hands the
//! connector only public addresses ([`provisioner_contract::netaddr::is_public`]) unless the
//! manifest sets `allow_private_addresses`; the connection goes to exactly the addresses it
//! returned (no second look-up to race). A name with no public address fails the request
//! as `HTTP-request-denied`. IP literals are not resolved: [`crate::sandbox`] judges them
//! against the grants before the request is sent.
//!
//! Timeouts: the plugin's `first-byte-timeout` is honoured per request; the connect
//! timeout is the client's own ([`CONNECT_TIMEOUT`]), because a pooled connection is not
//! tied to one request; everything else is bounded by the call budget around each plugin
//! call.
//!
//! Open requests ([`OpenRequestLimits`]): a request is open from the moment the plugin hands
//! it to the host until its response body is read to the end or dropped (or it fails), and
//! each open request may hold a connection (a file descriptor) and hyper's buffers. A call
//! may have `limits.max_open_requests_per_call` open at once: one more is refused at once
//! with the wasi:http error `connection-limit-reached`, which the plugin sees as a failed
//! request it can handle. A plugin may have `limits.max_open_requests` open over all its
//! calls on this host, and all plugins together the host's `--plugin-max-open-requests`:
//! a request beyond those waits for one to close (within its call's time budget), so a
//! busy vendor is paced rather than failed.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::rt::TokioExecutor;
use provisioner_contract::netaddr::is_public;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// How long opening a connection to a vendor may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle connection stays in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The first-byte budget when the plugin sets none (the call budget still applies).
const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(600);

/// What wasi:http wants back beside the response: a future driving the connection. The
/// pool drives its connections itself, so ours is already done.
pub type ConnectionFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

/// A TLS client configuration trusting the public web PKI and `extra` CA certificates.
pub fn tls_trusting(
    extra: Vec<rustls::pki_types::CertificateDer<'static>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    for certificate in extra {
        roots.add(certificate)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// A granted host name that resolved to no public address, while the plugin may reach only
/// public ones.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves to no public address ({addresses}); a plugin reaches private, loopback \
     and link-local addresses only through a grant naming the IP address or with \
     `allow_private_addresses = true` in its manifest"
)]
pub struct NonPublicAddress {
    /// The name looked up.
    pub host: String,
    /// What it resolved to.
    pub addresses: String,
}

/// Resolves host names with the system resolver and keeps only public addresses, unless
/// `allow_private`. The connector connects to exactly what this returns.
#[derive(Clone)]
struct AddressPolicyResolver {
    system: GaiResolver,
    allow_private: bool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for AddressPolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.system.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow_private = self.allow_private;
        let host = name.as_str().to_string();
        let resolving = self.system.call(name);
        Box::pin(async move {
            let found: Vec<SocketAddr> = resolving.await?.collect();
            if allow_private {
                return Ok(found.into_iter());
            }
            let public: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|address| is_public(address.ip()))
                .collect();
            if public.is_empty() && !found.is_empty() {
                let addresses = found
                    .iter()
                    .map(|address| address.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Box::new(NonPublicAddress { host, addresses }) as BoxError);
            }
            Ok(public.into_iter())
        })
    }
}

/// One plugin's pooled HTTP/HTTPS client. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<HttpsConnector<HttpConnector<AddressPolicyResolver>>, WasiBody>,
    allow_private: bool,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient").finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// A client that trusts what `tls` trusts for HTTPS and also speaks plain HTTP (the
    /// grant decides which origins a plugin may reach) and connects to public addresses only.
    pub fn new(tls: rustls::ClientConfig) -> Self {
        Self::with_address_policy(tls, false)
    }

    /// [`OutboundClient::new`], also connecting to non-public addresses a granted name
    /// resolves to when `allow_private` (the manifest's `allow_private_addresses`).
    pub fn with_address_policy(tls: rustls::ClientConfig, allow_private: bool) -> Self {
        let mut http = HttpConnector::new_with_resolver(AddressPolicyResolver {
            system: GaiResolver::new(),
            allow_private,
        });
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .build(https);
        Self {
            client,
            allow_private,
        }
    }

    /// Whether this client may connect to non-public addresses.
    pub fn allows_private_addresses(&self) -> bool {
        self.allow_private
    }

    /// Sends one request from a plugin over a pooled connection.
    pub async fn send(
        &self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
    ) -> Result<(http::Response<WasiBody>, ConnectionFuture), Error> {
        let first_byte_timeout = options
            .and_then(|options| options.first_byte_timeout)
            .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT);
        let request = without_body_if_bodiless(request);
        let response = tokio::time::timeout(first_byte_timeout, self.client.request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(client_error)?;
        let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
        Ok((response, Box::new(async { Ok(()) })))
    }
}

/// A GET or HEAD goes out without a body, as hyper sends it anyway when the body's length
/// is unknown (a plugin's body always is). hyper then drops the plugin's body, and a guest
/// that writes and finishes its empty body after sending (wstd does) fails with "stream
/// closed", seen as a connection reset although the answer arrived: about half of all
/// polls failed so. The plugin's body is read to its end beside the request instead, so
/// its writes succeed. The same holds for any request saying `content-length: 0` (the
/// SDK's body-less DELETE): hyper knows from the header the body is over and drops it, and
/// many such DELETEs failed after the vendor had done them. hyper keeps the header.
fn without_body_if_bodiless(request: http::Request<WasiBody>) -> http::Request<WasiBody> {
    let headers = request.headers();
    let says_empty = headers
        .get(http::header::CONTENT_LENGTH)
        .is_some_and(|length| length.as_bytes() == b"0");
    let get_or_head_saying_nothing = !headers.contains_key(http::header::CONTENT_LENGTH)
        && matches!(*request.method(), http::Method::GET | http::Method::HEAD);
    let bodiless = (says_empty || get_or_head_saying_nothing)
        && !headers.contains_key(http::header::TRANSFER_ENCODING);
    if !bodiless {
        return request;
    }
    let (parts, mut body) = request.into_parts();
    tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
    let empty = http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    http::Request::from_parts(parts, empty)
}

/// Requests one call may have open at once, unless the manifest says otherwise.
pub const DEFAULT_OPEN_REQUESTS_PER_CALL: u32 = 16;
/// Requests one plugin may have open at once on this host, over all its calls, unless the
/// manifest says otherwise.
pub const DEFAULT_OPEN_REQUESTS_PER_PLUGIN: u32 = 64;
/// Requests all plugins together may have open at once on this host, unless
/// `--plugin-max-open-requests` says otherwise.
pub const DEFAULT_OPEN_REQUESTS_PER_HOST: u32 = 1_024;

/// The bounds on a plugin's open outgoing requests (see the module docs). Cheap to clone:
/// the plugin's and the host's counts are shared.
#[derive(Debug, Clone)]
pub struct OpenRequestLimits {
    per_call: u32,
    plugin: Arc<Semaphore>,
    host: Arc<Semaphore>,
}

impl OpenRequestLimits {
    /// `per_call` open requests per call, `per_plugin` for all calls of the plugin, and the
    /// host's shared count (from [`OpenRequestLimits::host_wide`]).
    pub fn new(per_call: u32, per_plugin: u32, host: Arc<Semaphore>) -> Self {
        Self {
            per_call: per_call.max(1),
            plugin: Arc::new(Semaphore::new(per_plugin.max(1) as usize)),
            host,
        }
    }

    /// The host's count of open requests, shared by every plugin it loads.
    pub fn host_wide(max_open_requests: u32) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(max_open_requests.max(1) as usize))
    }

    /// The open requests of one call: a fresh count.
    pub fn for_call(&self) -> CallOpenRequests {
        CallOpenRequests {
            slots: Arc::new(Semaphore::new(self.per_call as usize)),
            limits: self.clone(),
        }
    }
}

impl Default for OpenRequestLimits {
    /// The defaults, with a host count of its own.
    fn default() -> Self {
        Self::new(
            DEFAULT_OPEN_REQUESTS_PER_CALL,
            DEFAULT_OPEN_REQUESTS_PER_PLUGIN,
            Self::host_wide(DEFAULT_OPEN_REQUESTS_PER_HOST),
        )
    }
}

/// One call's open requests.
#[derive(Debug)]
pub struct CallOpenRequests {
    slots: Arc<Semaphore>,
    limits: OpenRequestLimits,
}

impl CallOpenRequests {
    /// Takes one of the call's own slots at once, or `None` when the call has all its
    /// requests open already (the plugin is refused with `connection-limit-reached`).
    pub fn try_open(&self) -> Option<CallSlot> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        Some(CallSlot {
            slot,
            limits: self.limits.clone(),
        })
    }
}

/// A call's slot for one request, before the plugin's and the host's.
#[derive(Debug)]
pub struct CallSlot {
    slot: OwnedSemaphorePermit,
    limits: OpenRequestLimits,
}

impl CallSlot {
    /// Waits for the plugin's and then the host's slot (in that order everywhere, so no two
    /// requests wait on each other).
    pub async fn open(self) -> OpenRequest {
        let plugin = self.limits.plugin.clone().acquire_owned().await;
        let host = self.limits.host.clone().acquire_owned().await;
        OpenRequest {
            _slots: (Some(self.slot), plugin.ok(), host.ok()),
        }
    }
}

/// The slots an open request holds; dropping it closes the request for the counts.
#[derive(Debug)]
pub struct OpenRequest {
    _slots: (
        Option<OwnedSemaphorePermit>,
        Option<OwnedSemaphorePermit>,
        Option<OwnedSemaphorePermit>,
    ),
}

/// Keeps `open` until the response's body is read to its end or dropped.
pub fn held_until_done(
    response: http::Response<WasiBody>,
    open: OpenRequest,
) -> http::Response<WasiBody> {
    response.map(|body| {
        HeldBody {
            body,
            open: Some(open),
        }
        .boxed_unsync()
    })
}

/// A response body that holds its request's slots until it ends or is dropped.
struct HeldBody {
    body: WasiBody,
    open: Option<OpenRequest>,
}

impl Body for HeldBody {
    type Data = hyper::body::Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.open = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The wasi:http error for a failed send, as close to the cause as the client tells.
fn client_error(error: hyper_util::client::legacy::Error) -> Error {
    use std::error::Error as _;

    let mut cause = error.source();
    while let Some(current) = cause {
        if let Some(refused) = current.downcast_ref::<NonPublicAddress>() {
            tracing::debug!("{refused}");
            return Error::HttpRequestDenied;
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            let io = std::io::Error::new(io.kind(), error.to_string());
            return if error.is_connect() {
                Error::Connect(io)
            } else {
                Error::ConnectionTerminated
            };
        }
        if let Some(hyper) = current.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return Error::ConnectionReadTimeout;
            }
            if hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled() {
                return Error::ConnectionTerminated;
            }
            if hyper.is_parse() {
                return Error::HttpProtocolError;
            }
        }
        cause = current.source();
    }
    if error.is_connect() {
        Error::ConnectionRefused
    } else {
        Error::InternalError(Some(format!("{error:#}")))
    }
}
