//! `vendor-sim` binary: serves the simulated vendor APIs until Ctrl-C / SIGTERM, or with
//! `--upstream`, the fault-injecting reverse proxy in front of one vendor's API.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use provisioner_process as process;
use vendor_sim::proxy;
use vendor_sim::state::{self, FaultRule};
use vendor_sim::{SimConfig, SimState};

/// A local stand-in for cloud vendors' REST APIs: Hetzner Cloud under /hetzner/v1,
/// DigitalOcean under /digitalocean/v2, OpenStack (Keystone, Nova, Glance) under
/// /openstack, Example Cloud (a small made-up API for first plugins) under /example/v1,
/// Google Compute Engine and its OAuth token endpoint under /gcp, Azure Resource Manager and
/// the Microsoft identity platform's token endpoint under /azure, control endpoints under
/// /_sim.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "SIM_LISTEN_ADDR", default_value = "127.0.0.1:8090")]
    listen_addr: String,
    /// Milliseconds a new server takes to reach `running`.
    #[arg(long, env = "SIM_BOOT_DELAY_MS", default_value_t = 2000)]
    boot_delay_ms: u64,
    /// Bearer token the simulated Hetzner API accepts.
    #[arg(long, env = "SIM_HETZNER_TOKEN", default_value = state::DEFAULT_HETZNER_TOKEN)]
    hetzner_token: String,
    /// Bearer token the simulated DigitalOcean API accepts.
    #[arg(
        long,
        env = "SIM_DIGITALOCEAN_TOKEN",
        default_value = state::DEFAULT_DIGITALOCEAN_TOKEN
    )]
    digitalocean_token: String,
    /// Bearer token the simulated Example Cloud API accepts.
    #[arg(
        long,
        env = "SIM_EXAMPLE_TOKEN",
        default_value = state::DEFAULT_EXAMPLE_TOKEN
    )]
    example_token: String,
    /// The OpenStack user Keystone accepts (project `provisioner`, domain `Default`).
    #[arg(long, env = "SIM_OPENSTACK_USER", default_value = state::DEFAULT_OPENSTACK_USER)]
    openstack_user: String,
    /// The OpenStack user's password.
    #[arg(
        long,
        env = "SIM_OPENSTACK_PASSWORD",
        default_value = state::DEFAULT_OPENSTACK_PASSWORD
    )]
    openstack_password: String,
    /// Seconds a Keystone token stays valid.
    #[arg(long, env = "SIM_OPENSTACK_TOKEN_TTL_SECS", default_value_t = 3600)]
    openstack_token_ttl_secs: u64,
    /// Also serve every API over HTTPS on this address, with a certificate for
    /// `localhost` / `127.0.0.1` from a CA made at start-up.
    #[arg(long, env = "SIM_TLS_LISTEN_ADDR")]
    tls_listen_addr: Option<String>,
    /// Where to write that CA's certificate (PEM) for clients to trust.
    #[arg(long, env = "SIM_TLS_CA_OUT", default_value = "vendor-sim-ca.pem")]
    tls_ca_out: std::path::PathBuf,
    /// A fault for the first requests, `vendor:kind[:count]` (vendors: hetzner,
    /// digitalocean, openstack, example, gcp, azure; kinds: rate_limit,
    /// server_error, unavailable, unauthorized, slow, lost_response: carried out, then the
    /// connection is dropped unanswered); repeatable. More at runtime through
    /// `POST /_sim/faults` (which can also limit a fault to one method).
    #[arg(long = "fault", value_parser = FaultRule::parse_flag)]
    faults: Vec<FaultRule>,
    /// Serve as a fault-injecting reverse proxy in front of this vendor API base URL (a
    /// fake of the vendor, or the live vendor) instead of the simulated vendors: every
    /// request is forwarded, faults armed through `POST /_sim/faults` are answered in the
    /// vendor's shape from `--fault-profile`, and `GET /_sim/requests` lists what was sent.
    #[arg(long, env = "SIM_UPSTREAM", requires = "fault_profile")]
    upstream: Option<url::Url>,
    /// The vendor's fault profile (TOML, e.g. `plugins/hetzner/faults.toml`), with
    /// `--upstream`.
    #[arg(long, env = "SIM_FAULT_PROFILE", requires = "upstream")]
    fault_profile: Option<std::path::PathBuf>,
    /// A CA certificate (PEM) to trust for an HTTPS upstream, besides the webpki roots.
    #[arg(long, env = "SIM_UPSTREAM_CA", requires = "upstream")]
    upstream_ca: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logging = process::init_logging()?;
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen_addr)
        .await
        .with_context(|| format!("binding vendor-sim to {}", args.listen_addr))?;
    if let (Some(upstream), Some(profile)) = (args.upstream, &args.fault_profile) {
        anyhow::ensure!(
            args.faults.is_empty() && args.tls_listen_addr.is_none(),
            "--fault and --tls-listen-addr are the simulator's; the proxy arms faults through POST /_sim/faults"
        );
        return serve_proxy(listener, upstream, profile, args.upstream_ca.as_deref()).await;
    }
    tracing::info!(addr = %listener.local_addr()?, "vendor-sim listening");
    let state = Arc::new(SimState::new(SimConfig {
        boot_delay: Duration::from_millis(args.boot_delay_ms),
        hetzner_token: args.hetzner_token,
        digitalocean_token: args.digitalocean_token,
        example_token: args.example_token,
        openstack_user: args.openstack_user,
        openstack_password: args.openstack_password,
        openstack_token_ttl: Duration::from_secs(args.openstack_token_ttl_secs),
        faults: args.faults,
    }));
    let shutdown = process::shutdown_token();
    // One router for both listeners: the Compute Engine and Azure stores live in it, so an
    // account registered over HTTP must be the one a token request over HTTPS finds.
    let app = vendor_sim::app(state);
    if let Some(addr) = &args.tls_listen_addr {
        let tls = vendor_sim::tls::generate(vec!["localhost".into(), "127.0.0.1".into()])?;
        let tls_listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding vendor-sim's TLS port to {addr}"))?;
        // Written after the port is bound: a client that sees the file can connect.
        std::fs::write(&args.tls_ca_out, &tls.ca_pem).with_context(|| {
            format!(
                "writing the CA certificate to {}",
                args.tls_ca_out.display()
            )
        })?;
        tracing::info!(addr = %tls_listener.local_addr()?, ca = %args.tls_ca_out.display(), "vendor-sim listening over TLS");
        let stop = shutdown.clone();
        tokio::spawn(vendor_sim::tls::serve(
            tls_listener,
            tls.acceptor,
            app.clone(),
            async move { stop.cancelled().await },
        ));
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving vendor-sim")
}

/// `--upstream`: the fault-injecting reverse proxy on `listener`.
async fn serve_proxy(
    listener: tokio::net::TcpListener,
    upstream: url::Url,
    profile: &std::path::Path,
    upstream_ca: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let profile = proxy::FaultProfile::load(profile)?;
    let upstream_ca_pem = match upstream_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the upstream CA {}", path.display()))?,
        ),
        None => None,
    };
    tracing::info!(
        addr = %listener.local_addr()?,
        %upstream,
        vendor = profile.vendor(),
        "vendor-sim proxying with faults"
    );
    let state = Arc::new(proxy::ProxyState::new(proxy::ProxyConfig {
        upstream,
        profile,
        upstream_ca_pem,
    })?);
    let shutdown = process::shutdown_token();
    proxy::serve_proxy(listener, state, async move { shutdown.cancelled().await })
        .await
        .context("serving the fault proxy")
}
