//! What the simulator's integration tests share: a simulator of their own on a local port,
//! and the registration of a vendor credential (an Azure app, a Compute Engine account).

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
#[allow(
    dead_code,
    reason = "only the Azure and Compute Engine tests register credentials"
)]
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
