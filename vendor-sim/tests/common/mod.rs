//! What the simulator's integration tests share: a simulator of their own on a local port.

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
