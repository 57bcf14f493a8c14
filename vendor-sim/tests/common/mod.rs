//! What the simulator's integration tests share: a simulator of their own on a local port,
//! the registration of a vendor credential (an Azure app, a Compute Engine account), a token
//! endpoint's form POST, reading the simulator's own endpoints (`/_sim/...`), and checking
//! that a lost answer leaves not a byte on the wire.

#![allow(
    dead_code,
    reason = "each test binary uses some of these helpers, not all"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use vendor_sim::{SimConfig, SimState};

/// A fresh simulator whose servers boot after `boot_delay`, served on a local port until
/// the test's runtime ends.
pub async fn start_sim(boot_delay: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(SimState::new(SimConfig {
        boot_delay,
        ..SimConfig::default()
    }));
    tokio::spawn(vendor_sim::serve(listener, state, std::future::pending()));
    addr
}

/// Registers a vendor credential at the simulator's control endpoint `url` (`POST` of
/// `body`, with `token_ttl_secs` when `ttl` is given), expecting a 201.
pub async fn register_credential(
    http: &reqwest::Client,
    url: String,
    mut body: serde_json::Value,
    ttl: Option<u64>,
) {
    if let Some(ttl) = ttl {
        body["token_ttl_secs"] = serde_json::json!(ttl);
    }
    let answer = http.post(url).json(&body).send().await.unwrap();
    assert_eq!(answer.status(), 201, "{}", answer.text().await.unwrap());
}

/// The JSON answer to `GET url`.
pub async fn get_json(http: &reqwest::Client, url: String) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The first server of `vendor` in a `GET /_sim/servers` answer (callers check how many
/// there are).
pub fn server_of(servers: &serde_json::Value, vendor: &str) -> serde_json::Value {
    servers["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["vendor"] == vendor)
        .unwrap()
        .clone()
}

/// `POST url` of a URL-encoded form (a token grant): the status and the JSON answer.
pub async fn post_form(
    http: &reqwest::Client,
    url: String,
    form: String,
) -> (u16, serde_json::Value) {
    let answer = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    (answer.status().as_u16(), answer.json().await.unwrap())
}

/// Sends the raw HTTP/1.1 `request` to `addr` (`who`: the simulator or the proxy) and checks
/// that the connection closes, cleanly or by a reset, within `within` and without a single
/// byte of an answer.
pub async fn assert_nothing_answered(addr: SocketAddr, request: &str, within: Duration, who: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, tcp.read_to_end(&mut received))
        .await
        .unwrap_or_else(|_| panic!("{who} neither answered nor closed the connection"));
    // A clean close or a reset, but nothing read either way.
    if let Err(error) = read {
        assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}");
    }
    assert!(
        received.is_empty(),
        "the client received {:?}",
        String::from_utf8_lossy(&received)
    );
}
