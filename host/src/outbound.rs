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
//! Timeouts: the plugin's `first-byte-timeout` is honoured per request; the connect
//! timeout is the client's own ([`CONNECT_TIMEOUT`]), because a pooled connection is not
//! tied to one request; everything else is bounded by the call budget around each plugin
//! call.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
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

/// One plugin's pooled HTTP/HTTPS client. Cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct OutboundClient {
    client: Client<HttpsConnector<HttpConnector>, WasiBody>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient").finish_non_exhaustive()
    }
}

impl OutboundClient {
    /// A client that trusts what `tls` trusts for HTTPS and also speaks plain HTTP (the
    /// grant decides which origins a plugin may reach, not this client).
    pub fn new(tls: rustls::ClientConfig) -> Self {
        let mut http = HttpConnector::new();
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
        Self { client }
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
/// its writes succeed.
fn without_body_if_bodiless(request: http::Request<WasiBody>) -> http::Request<WasiBody> {
    let bodiless = matches!(*request.method(), http::Method::GET | http::Method::HEAD)
        && !request.headers().contains_key(http::header::CONTENT_LENGTH)
        && !request
            .headers()
            .contains_key(http::header::TRANSFER_ENCODING);
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

/// The wasi:http error for a failed send, as close to the cause as the client tells.
fn client_error(error: hyper_util::client::legacy::Error) -> Error {
    use std::error::Error as _;

    let mut cause = error.source();
    while let Some(current) = cause {
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
