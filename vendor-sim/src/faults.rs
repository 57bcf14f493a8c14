//! The fault-injection middleware: answers a request with an armed fault instead of the
//! real answer, in the vendor's own error shape; or delays the real answer (`slow`); or
//! carries the request out and loses the answer (`lost_response`).
//!
//! A lost answer is a response whose body fails at its first poll: hyper has then only
//! buffered the status line and headers, not written them, and on a body error it closes
//! the connection without flushing, so the client reads nothing at all (an HTTP/1 client
//! reports the connection closed before the message completed). The simulator's tests
//! (`tests/lost_response.rs`) check that not a byte reaches the client.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get};

use crate::state::{FaultKind, SimState, Vendor, VendorState};

/// The body of `POST /_sim/<vendor>/faults`, which arms a vendor's own failures (GCE's
/// stock-outs, ARM's allocation failures): the kind, and how many of the next operations
/// it hits (default 1).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ArmVendorFault<K> {
    /// The vendor's failure (e.g. [`crate::gcp::ComputeFault`]).
    pub kind: K,
    /// How many of the next operations it hits.
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// Arms the asked failures at the end of `armed` and answers `201` with all armed now, or
/// `422` with why the body was refused.
pub fn arm_vendor_faults<K: Clone + serde::Serialize>(
    armed: &mut Vec<K>,
    body: Result<axum::Json<ArmVendorFault<K>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    use axum::response::IntoResponse;
    match body {
        Ok(axum::Json(arm)) => {
            armed.extend(std::iter::repeat_n(arm.kind, arm.count as usize));
            (
                StatusCode::CREATED,
                axum::Json(serde_json::json!({"faults": armed})),
            )
                .into_response()
        }
        Err(rejection) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(serde_json::json!({"error": rejection.body_text()})),
        )
            .into_response(),
    }
}

/// A vendor store that keeps failures of the vendor's own, armed through
/// `/_sim/<vendor>/faults` (see [`vendor_fault_routes`]).
pub trait ArmedVendorFaults {
    /// The vendor's failure (e.g. [`crate::gcp::ComputeFault`]).
    type Fault: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + 'static;

    /// The failures armed, the next one first.
    fn armed_faults(&mut self) -> &mut Vec<Self::Fault>;
}

/// `/_sim/<vendor>/faults` on a vendor's own store: `GET` lists the armed failures, `POST`
/// arms more ([`arm_vendor_faults`]), `DELETE` disarms them all.
pub fn vendor_fault_routes<S>() -> MethodRouter<VendorState<S>>
where
    S: ArmedVendorFaults + Send + 'static,
{
    get(list_vendor_faults::<S>)
        .post(arm_vendor_fault::<S>)
        .delete(clear_vendor_faults::<S>)
}

async fn arm_vendor_fault<S: ArmedVendorFaults>(
    State(state): State<VendorState<S>>,
    body: Result<axum::Json<ArmVendorFault<S::Fault>>, axum::extract::rejection::JsonRejection>,
) -> Response {
    arm_vendor_faults(state.store().armed_faults(), body)
}

async fn list_vendor_faults<S: ArmedVendorFaults>(
    State(state): State<VendorState<S>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"faults": state.store().armed_faults()}))
}

async fn clear_vendor_faults<S: ArmedVendorFaults>(
    State(state): State<VendorState<S>>,
) -> StatusCode {
    state.store().armed_faults().clear();
    StatusCode::NO_CONTENT
}

/// A vendor's rendering of an injected fault (never called for `Slow` or `LostResponse`).
pub type FaultRenderer = fn(&FaultKind) -> Response;

/// `api`, one vendor's router, answering `vendor`'s armed faults: a request matching one
/// gets it (see [`inject`]), rendered by `render`, before its route or any route layer added
/// to `api` (the vendor's authentication) sees it. Like every route layer it leaves alone
/// requests for no route. Every vendor's router is layered here, at the same place in its
/// chain.
pub fn with_faults<S: Clone + Send + Sync + 'static>(
    api: Router<S>,
    state: &Arc<SimState>,
    vendor: Vendor,
    render: FaultRenderer,
) -> Router<S> {
    let layer = FaultLayer {
        state: state.clone(),
        vendor,
        render,
    };
    api.route_layer(middleware::from_fn_with_state(layer, inject))
}

/// Middleware state: whose API, and how that vendor answers failures.
#[derive(Clone)]
struct FaultLayer {
    /// The simulator.
    state: Arc<SimState>,
    /// The vendor this API belongs to.
    vendor: Vendor,
    /// How the vendor renders faults.
    render: FaultRenderer,
}

/// Applies the first armed fault matching the request, if any.
async fn inject(State(layer): State<FaultLayer>, request: Request, next: Next) -> Response {
    match layer.state.take_fault(
        layer.vendor,
        request.method().as_str(),
        request.uri().path(),
    ) {
        None => next.run(request).await,
        Some(FaultKind::Slow { delay_ms }) => {
            tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
            next.run(request).await
        }
        Some(FaultKind::LostResponse) => {
            let method = request.method().clone();
            let path = request.uri().path().to_owned();
            let real = next.run(request).await;
            tracing::info!(
                vendor = layer.vendor.name(),
                %method,
                path,
                status = real.status().as_u16(),
                "injecting a fault: carried out, dropping the connection unanswered"
            );
            lost_response()
        }
        Some(kind) => {
            tracing::info!(vendor = layer.vendor.name(), ?kind, "injecting a fault");
            (layer.render)(&kind)
        }
    }
}

/// A response that is never delivered: its body fails before yielding anything, so hyper
/// aborts the connection before writing the buffered status line (see the module doc).
pub fn lost_response() -> Response {
    let failing = futures_util::stream::once(std::future::ready(Err::<Bytes, _>(
        std::io::Error::other("vendor-sim: lost_response fault"),
    )));
    Response::new(Body::from_stream(failing))
}

/// The HTTP status of a non-delay fault.
pub fn status_of(kind: &FaultKind) -> StatusCode {
    match kind {
        FaultKind::RateLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
        FaultKind::ServerError { status } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
        FaultKind::Unauthorized => StatusCode::UNAUTHORIZED,
        // Each vendor answers its own status (see its `render_fault`); this is the usual one.
        FaultKind::NoCapacity => StatusCode::SERVICE_UNAVAILABLE,
        FaultKind::Slow { .. } | FaultKind::LostResponse => StatusCode::OK,
    }
}

/// A vendor's usual rate-limit state, sent on every answer (Hetzner, DigitalOcean):
/// `RateLimit-Limit`, `RateLimit-Remaining`, and the seconds until `RateLimit-Reset`.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitHeaders {
    /// `RateLimit-Limit`.
    pub limit: &'static str,
    /// `RateLimit-Remaining`.
    pub remaining: &'static str,
    /// Seconds from now to `RateLimit-Reset`.
    pub reset_secs: u64,
}

/// Middleware: adds the vendor's usual rate-limit headers to every answer, where a fault has
/// not set its own (see [`fill_rate_limit_headers`]).
pub async fn add_rate_limit_headers(
    State(usual): State<RateLimitHeaders>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    fill_rate_limit_headers(
        response.headers_mut(),
        usual.limit,
        usual.remaining,
        usual.reset_secs,
    );
    response
}

/// Adds the vendor's normal rate-limit headers where a fault has not set its own.
pub fn fill_rate_limit_headers(
    headers: &mut HeaderMap,
    limit: &'static str,
    remaining: &'static str,
    reset_secs: u64,
) {
    headers.insert("ratelimit-limit", HeaderValue::from_static(limit));
    if !headers.contains_key("ratelimit-remaining") {
        headers.insert("ratelimit-remaining", HeaderValue::from_static(remaining));
    }
    if !headers.contains_key("ratelimit-reset")
        && let Ok(value) = HeaderValue::from_str(&reset_at(reset_secs))
    {
        headers.insert("ratelimit-reset", value);
    }
}

/// Unix time in seconds `secs` from now, for `RateLimit-Reset`.
pub fn reset_at(secs: u64) -> String {
    (chrono::Utc::now().timestamp() + secs as i64).to_string()
}

/// The `lost_response` fault: the simulator carries the request out (the server is made) and
/// drops the connection before a single byte of the answer, so the client has nothing it
/// could take for an answer.
#[cfg(test)]
mod lost_response_tests {

    use std::net::SocketAddr;
    use std::sync::Arc;

    use crate::{SimConfig, SimState};
    use serde_json::{Value, json};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const TOKEN: &str = "sim-hetzner-token";

    /// Serves a fresh simulator on a local port; it stops when the test's runtime ends.
    pub(super) async fn start_sim() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SimState::new(SimConfig::default()));
        tokio::spawn(crate::serve(listener, state, std::future::pending()));
        addr
    }

    fn create_body(name: &str, key: &str) -> Value {
        json!({
            "name": name, "server_type": "cx22", "image": "ubuntu-24.04", "location": "fsn1",
            "labels": {"provisioner-idempotency-key": key},
        })
    }

    async fn arm_lost_create(client: &reqwest::Client, addr: SocketAddr) {
        let armed = client
        .post(format!("http://{addr}/_sim/faults"))
        .json(&json!({"vendor": "hetzner", "kind": "lost_response", "method": "POST", "count": 1}))
        .send()
        .await
        .unwrap();
        assert_eq!(armed.status(), 201);
    }

    /// The JSON body of a `GET` of the simulator's control endpoint `path`.
    async fn control_get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> Value {
        let answer = client
            .get(format!("http://{addr}{path}"))
            .send()
            .await
            .unwrap();
        answer.json().await.unwrap()
    }

    async fn live_servers(client: &reqwest::Client, addr: SocketAddr) -> Vec<Value> {
        let body = control_get(client, addr, "/_sim/servers").await;
        body["servers"].as_array().unwrap().clone()
    }

    /// An HTTP client's create fails without a status, yet the server exists; the fault hits
    /// once, and the next create is answered normally.
    #[tokio::test]
    async fn a_lost_create_answer_is_an_error_but_the_server_is_made() {
        let addr = start_sim().await;
        let client = reqwest::Client::new();
        arm_lost_create(&client, addr).await;

        let lost = client
            .post(format!("http://{addr}/hetzner/v1/servers"))
            .bearer_auth(TOKEN)
            .json(&create_body("lost-1", "key-1"))
            .send()
            .await;
        let error = match lost {
            Ok(response) => panic!("the client got an answer: {}", response.status()),
            Err(error) => error,
        };
        assert!(error.status().is_none(), "{error:?}");
        assert!(
            format!("{error:?}").contains("IncompleteMessage"),
            "not a connection closed before the message completed: {error:?}"
        );

        let servers = live_servers(&client, addr).await;
        assert_eq!(servers.len(), 1, "{servers:?}");
        assert_eq!(servers[0]["name"], "lost-1");
        assert_eq!(servers[0]["idempotency_key"], "key-1");

        // Disarmed after one hit: a retry is answered (here the name is taken, as at Hetzner).
        let retry = client
            .post(format!("http://{addr}/hetzner/v1/servers"))
            .bearer_auth(TOKEN)
            .json(&create_body("lost-1", "key-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(retry.status(), 409);
        let faults = control_get(&client, addr, "/_sim/faults").await;
        assert_eq!(faults["faults"], json!([]));
    }

    /// On the wire: the connection closes without a single byte, so there is no status line
    /// or header a client could take as an answer.
    #[tokio::test]
    async fn not_a_byte_of_the_answer_reaches_the_wire() {
        let addr = start_sim().await;
        let client = reqwest::Client::new();
        arm_lost_create(&client, addr).await;

        let body = create_body("lost-2", "key-2").to_string();
        let request = format!(
            "POST /hetzner/v1/servers HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tcp.read_to_end(&mut received),
        )
        .await
        .expect("the simulator neither answered nor closed the connection");
        // A clean close or a reset, but nothing read either way.
        if let Err(error) = read {
            assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
        }
        assert!(
            received.is_empty(),
            "the client received {:?}",
            String::from_utf8_lossy(&received)
        );

        let servers = live_servers(&client, addr).await;
        assert_eq!(servers.len(), 1, "{servers:?}");
        assert_eq!(servers[0]["idempotency_key"], "key-2");
    }

    /// Without `method`, the fault hits whatever comes first, a GET too; other requests are
    /// answered.
    #[tokio::test]
    async fn a_lost_get_answer_and_then_normal_answers() {
        let addr = start_sim().await;
        let client = reqwest::Client::new();
        let armed = client
            .post(format!("http://{addr}/_sim/faults"))
            .json(&json!({"vendor": "hetzner", "kind": "lost_response"}))
            .send()
            .await
            .unwrap();
        assert_eq!(armed.status(), 201);
        let url = format!("http://{addr}/hetzner/v1/servers");
        let lost = client.get(&url).bearer_auth(TOKEN).send().await;
        assert!(lost.is_err(), "{lost:?}");
        let answered = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(answered.status(), 200);
    }
}

/// A fault is answered before the simulator needs the request's body; the body is read all
/// the same, as a vendor's front end reads it, and the connection stays open.
#[cfg(test)]
mod early_answer_tests {
    use std::time::Duration;

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Reads one answer's head from `tcp` (up to its blank line), or why it could not.
    async fn read_head(tcp: &mut TcpStream, within: Duration) -> Result<String, String> {
        let mut received = Vec::new();
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(within, async {
            loop {
                match tcp.read(&mut chunk).await {
                    Ok(0) => return Err("the connection was closed".to_string()),
                    Ok(n) => {
                        received.extend_from_slice(&chunk[..n]);
                        if received.windows(4).any(|w| w == b"\r\n\r\n") {
                            return Ok(());
                        }
                    }
                    Err(error) => return Err(error.to_string()),
                }
            }
        })
        .await;
        match read {
            Err(_) => Err(format!(
                "nothing more within {within:?} (read {:?})",
                String::from_utf8_lossy(&received)
            )),
            Ok(Err(why)) => Err(why),
            Ok(Ok(())) => Ok(String::from_utf8_lossy(&received).into_owned()),
        }
    }

    /// A client that streams its body (as a plugin's outgoing request does) sends the head,
    /// then the body a moment later. A simulator that answered the fault at once and closed
    /// the connection with the body unread made that body meet a closed socket: the client's
    /// write was reset, and a plugin racing it saw "connection reset" instead of the capacity
    /// refusal (the kit's `faults.no-capacity`, once in CI). Now the answer waits for the
    /// whole request, and the connection serves the next one.
    #[tokio::test]
    async fn a_fault_is_answered_after_the_whole_request_on_a_connection_that_stays_open() {
        let addr = super::lost_response_tests::start_sim().await;
        let armed = reqwest::Client::new()
            .post(format!("http://{addr}/_sim/faults"))
            .json(&json!({"vendor": "hetzner", "kind": "no_capacity", "method": "POST"}))
            .send()
            .await
            .unwrap();
        assert_eq!(armed.status(), 201);

        let body = json!({
            "name": "late-body", "server_type": "cx22", "image": "ubuntu-24.04",
            "location": "fsn1", "labels": {"provisioner-idempotency-key": "late-1"},
        })
        .to_string();
        let head = format!(
            "POST /hetzner/v1/servers HTTP/1.1\r\nhost: {addr}\r\n\
             authorization: Bearer sim-hetzner-token\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let early = read_head(&mut tcp, Duration::from_millis(300)).await;
        assert!(
            early.is_err(),
            "answered before the request's body was sent: {early:?}"
        );
        tcp.write_all(body.as_bytes()).await.unwrap();
        let answer = read_head(&mut tcp, Duration::from_secs(10)).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
            "{answer}"
        );
        // The rest of the answer's body, by its length.
        let length: usize = answer
            .lines()
            .find_map(|line| {
                line.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("a content-length");
        let already = answer.len() - answer.find("\r\n\r\n").unwrap() - 4;
        let mut rest = vec![0u8; length - already];
        tcp.read_exact(&mut rest).await.unwrap();

        let next = format!(
            "GET /hetzner/v1/servers HTTP/1.1\r\nhost: {addr}\r\n\
             authorization: Bearer sim-hetzner-token\r\n\r\n"
        );
        tcp.write_all(next.as_bytes()).await.unwrap();
        let served = read_head(&mut tcp, Duration::from_secs(10)).await;
        assert!(
            served
                .as_ref()
                .is_ok_and(|head| head.starts_with("HTTP/1.1 200")),
            "the connection did not serve the next request: {served:?}"
        );
    }
}
