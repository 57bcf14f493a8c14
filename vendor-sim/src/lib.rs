//! `vendor-sim`: a local stand-in for cloud vendors' REST APIs.
//!
//! It serves the subset of each vendor's API that the provider plugins use, with the
//! vendor's own paths, JSON shapes, status codes and headers, so the demo, the tests and the
//! conformance kit run without a cloud account. State is in memory. Servers boot after a
//! configurable delay. It counts every server it ever made per idempotency key, so a double
//! creation shows at once in `GET /_sim/stats`.
//!
//! # Layout
//! - [`state`]: the simulated clouds' in-memory state, the counters behind the stats, and
//!   the default credentials.
//! - [`hetzner`]: the Hetzner Cloud API (`/hetzner/v1/servers...`).
//! - [`digitalocean`]: the DigitalOcean API (`/digitalocean/v2/droplets...`).
//! - [`openstack`]: an OpenStack cloud: Keystone v3, Nova v2.1, Glance v2 (`/openstack/...`).
//! - [`example`]: Example Cloud, a small made-up REST API for a first plugin
//!   (`/example/v1/servers...`); its module doc is the API's complete reference.
//! - [`gcp`]: Google Compute Engine v1 instances and zone operations with Google's OAuth
//!   token endpoint for service accounts (`/gcp/compute/v1/...`, `/gcp/token`,
//!   `/_sim/gcp/...`); its accounts and operations are its own ([`gcp::GcpState`]).
//! - [`azure`]: Azure Resource Manager (public IPs, NICs, virtual networks, VMs, disks,
//!   resource groups, long-running operations) with the Microsoft identity platform's token
//!   endpoint (`/azure/...`, `/_sim/azure/...`); its apps and resources are its own
//!   ([`azure::AzureState`]).
//! - [`conventions`]: what every vendor reads the same way: bearer tokens, hostnames, the
//!   label carrying the idempotency key.
//! - [`keys`]: SSH public keys: the key stores' checks and MD5 fingerprints, and the keys a
//!   server's cloud-init would install from its user data.
//! - [`faults`]: the middleware that answers with injected faults in each vendor's shape,
//!   layered onto every vendor's router by [`faults::with_faults`].
//! - [`control`]: the simulator's own endpoints (`/_sim/stats`, `/_sim/faults`,
//!   `/_sim/servers` with the SSH keys, user data and labels each server got) and their
//!   bodies and answers.
//! - [`control_client`]: the typed client of those endpoints and of the fault proxy's
//!   `/_sim/faults`, for the tests and the conformance kit.
//! - [`tls`]: the same routes over HTTPS, with a CA made at start-up.
//! - [`proxy`]: the fault-injecting reverse proxy in front of any vendor's API
//!   (`--upstream`), its fault profiles and its record of the requests it forwarded.
//! - [`app`] / [`serve`]: the router and the server loop, taking an already-bound listener.

pub mod azure;
pub mod control;
pub mod control_client;
pub mod conventions;
pub mod digitalocean;
pub mod example;
pub mod faults;
pub mod gcp;
pub mod hetzner;
pub mod keys;
pub mod openstack;
pub mod proxy;
pub mod state;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use state::{SimConfig, SimState};

/// The simulator's router: every vendor API under its own base path, plus `/_sim`.
pub fn app(state: Arc<SimState>) -> Router {
    let gcp = gcp::GcpState::new(state.clone());
    let azure = azure::AzureState::new(state.clone());
    Router::new()
        .nest("/hetzner/v1", hetzner::router(state.clone()))
        .nest("/digitalocean/v2", digitalocean::router(state.clone()))
        .nest("/openstack", openstack::router(state.clone()))
        .nest(example::BASE_PATH, example::router(state.clone()))
        .nest("/gcp", gcp::router(gcp.clone()))
        .nest("/_sim/gcp", gcp::control_router(gcp))
        .nest("/azure", azure::router(azure.clone()))
        .nest("/_sim/azure", azure::control_router(azure.clone()))
        .nest("/_sim", control::router(azure))
        .with_state(state)
        .layer(axum::middleware::from_fn(read_whole_request))
}

/// The largest request body the simulator reads (axum's own default limit for JSON).
const REQUEST_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Reads each request's whole body before any route or fault sees it, as a vendor's front end
/// does. An answer given before the body arrived (an injected fault, a refused token) would
/// otherwise close the connection with the body unread: a client still sending it would have
/// its write reset, and could lose the answer to it.
async fn read_whole_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, REQUEST_BODY_LIMIT).await {
        Ok(bytes) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
            next.run(request).await
        }
        Err(error) => (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!("vendor-sim: the request's body could not be read whole: {error}"),
        )
            .into_response(),
    }
}

/// Serves the simulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: Arc<SimState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
