//! Create call: one `create-server` of a real vendor plugin exactly as the host makes it
//! (`Plugin::create_server`: pool slot, sandbox, throttle, wasi:http through the host's
//! outbound client), against a canned vendor served in this process, for three plugins side
//! by side:
//! - **Hetzner**: JSON, a bearer token; the look-up (`GET /servers?label_selector=...`)
//!   then the create (`POST /servers`);
//! - **EC2**: the Query API, every request signed with SigV4 inside the plugin, form-encoded
//!   body, XML answers; the look-up (`GET /?Action=DescribeInstances` with a tag filter)
//!   then the create (`POST /` with `Action=RunInstances`).
//! - **Compute Engine** (`plugins/gcp`), twice: with the access token in the host's cache
//!   (the look-up, `GET .../aggregated/instances?filter=...`, then the insert, `POST
//!   .../instances?requestId=...`), and with a cache bounded to nothing (`cache_entries =
//!   0`), so every call first signs an RS256 JWT with the service-account key and exchanges
//!   it (`POST /token`): the price of a call without a cached token.
//!
//! - **Hetzner's `create-new-server`** (WIT 0.6), against a canned vendor of its own: the
//!   create alone, no look-up, as the host calls it for an order's lease-free first copy.
//!
//! Hetzner's and EC2's `create-server` make two vendor requests per call, and both vendors' answers are recorded real
//! ones of similar size (`bench/fixtures/`: vendor-sim's Hetzner server, 3.3 KB; moto's
//! `RunInstances` answer, 3.5 KB), so the difference between the two is what the plugins do
//! with them: signing, form encoding and XML against JSON. The canned vendor checks every
//! request names the action it answers, and counts them, so a plugin that made other calls
//! would fail the run, not speed it up.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use provisioner_host::bindings::types::ServerRequest;
use provisioner_host::manifest::Manifest;
use provisioner_host::runtime::{Plugin, PluginRuntime};
use provisioner_tests::plugin_component;

use provisioner_bench::report::{Progress, Summary};
use provisioner_bench::stats::percentile;

/// The create-call benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Calls measured per plugin.
    #[arg(long, default_value_t = 3_000)]
    calls: usize,
    /// Calls made first per plugin and not measured.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
}

const HETZNER_LIST: &str = include_str!("../fixtures/hetzner-list-servers-empty.json");
const HETZNER_CREATE: &str = include_str!("../fixtures/hetzner-create-server.json");
const EC2_DESCRIBE: &str = include_str!("../fixtures/ec2-describe-instances-empty.xml");
const EC2_RUN: &str = include_str!("../fixtures/ec2-run-instances.xml");
const GCE_LIST: &str = include_str!("../fixtures/gce-aggregated-instances-empty.json");
const GCE_INSERT: &str = include_str!("../fixtures/gce-insert-operation.json");
/// The token endpoint's answer (the simulator's shape; the token is the bench's own).
const GCE_TOKEN: &str =
    r#"{"access_token":"ya29.bench-access-token","expires_in":3599,"token_type":"Bearer"}"#;
/// The throwaway service-account key of the GCP plugin's tests (grants nothing anywhere).
const GCE_KEY_PEM: &str = include_str!("../../plugins/gcp/testdata/sim-service-account.pem");

/// Requests the canned vendor answered, and the ones it refused.
#[derive(Debug, Default)]
struct Served {
    answered: AtomicU64,
    refused: AtomicU64,
}

impl Served {
    fn answer(&self, content_type: &'static str, body: &'static str) -> Response {
        self.answered.fetch_add(1, Ordering::Relaxed);
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    }

    fn refuse(&self, what: String) -> Response {
        self.refused.fetch_add(1, Ordering::Relaxed);
        (StatusCode::BAD_REQUEST, what).into_response()
    }
}

/// Hetzner's two answers: the empty look-up and the made server.
fn hetzner_vendor(served: Arc<Served>) -> Router {
    Router::new()
        .route(
            "/servers",
            get(
                async |State(served): State<Arc<Served>>, RawQuery(query): RawQuery| match query {
                    Some(q) if q.contains("label_selector=") => {
                        served.answer("application/json", HETZNER_LIST)
                    }
                    other => served.refuse(format!("unexpected look-up {other:?}")),
                },
            )
            .post(async |State(served): State<Arc<Served>>, body: Bytes| {
                // Read whole (an unread body ends the connection), and checked.
                match std::str::from_utf8(&body) {
                    Ok(json) if json.contains("\"server_type\"") => {
                        served.answer("application/json", HETZNER_CREATE)
                    }
                    _ => served.refuse(format!("unexpected create {body:?}")),
                }
            }),
        )
        .with_state(served)
}

/// EC2's two answers, each checked for its action and for a SigV4 signature.
fn ec2_vendor(served: Arc<Served>) -> Router {
    Router::new()
        .route(
            "/",
            get(
                async |State(served): State<Arc<Served>>,
                       headers: axum::http::HeaderMap,
                       RawQuery(query): RawQuery| {
                    let query = query.unwrap_or_default();
                    if !signed(&headers) || !query.contains("Action=DescribeInstances") {
                        return served.refuse(format!("unexpected GET ?{query}"));
                    }
                    served.answer("text/xml;charset=UTF-8", EC2_DESCRIBE)
                },
            )
            .post(
                async |State(served): State<Arc<Served>>,
                       headers: axum::http::HeaderMap,
                       body: Bytes| {
                    let form = String::from_utf8_lossy(&body);
                    if !signed(&headers) || !form.contains("Action=RunInstances") {
                        return served.refuse(format!("unexpected POST {form}"));
                    }
                    served.answer("text/xml;charset=UTF-8", EC2_RUN)
                },
            ),
        )
        .with_state(served)
}

/// Compute Engine's answers: the token endpoint (a JWT bearer grant), the empty look-up and
/// the insert's operation, each checked for its shape and, at Compute, the bench's token.
fn gce_vendor(served: Arc<Served>, tokens: Arc<AtomicU64>) -> Router {
    let bearer = |headers: &axum::http::HeaderMap| {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            == Some("Bearer ya29.bench-access-token")
    };
    Router::new()
        .route(
            "/token",
            axum::routing::post(
                async move |State(served): State<Arc<Served>>, body: Bytes| {
                    let form = String::from_utf8_lossy(&body);
                    let grant = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
                    if !form.contains(grant) || !form.contains("&assertion=") {
                        return served.refuse(format!("unexpected token request {form}"));
                    }
                    tokens.fetch_add(1, Ordering::Relaxed);
                    served.answer("application/json", GCE_TOKEN)
                },
            ),
        )
        .route(
            "/projects/bench-project/aggregated/instances",
            get(
                async move |State(served): State<Arc<Served>>,
                            headers: axum::http::HeaderMap,
                            RawQuery(query): RawQuery| {
                    match query {
                        Some(q) if bearer(&headers) && q.contains("filter=labels.") => {
                            served.answer("application/json", GCE_LIST)
                        }
                        other => served.refuse(format!("unexpected look-up {other:?}")),
                    }
                },
            ),
        )
        .route(
            "/projects/bench-project/zones/us-central1-a/instances",
            axum::routing::post(
                async move |State(served): State<Arc<Served>>,
                            headers: axum::http::HeaderMap,
                            RawQuery(query): RawQuery,
                            body: Bytes| {
                    let json = String::from_utf8_lossy(&body);
                    let request_id = query.is_some_and(|q| q.contains("requestId="));
                    if !bearer(&headers) || !request_id || !json.contains("\"machineType\"") {
                        return served.refuse(format!("unexpected insert {json}"));
                    }
                    served.answer("application/json", GCE_INSERT)
                },
            ),
        )
        .with_state(served)
}

/// Whether a request carries a SigV4 `Authorization` header.
fn signed(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("AWS4-HMAC-SHA256 Credential="))
}

/// Serves `router` on a free port of 127.0.0.1; its origin.
async fn serve(router: Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the canned vendor's port")?;
    let origin = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(origin)
}

/// Loads `vendor`'s component with `manifest_text`, its secrets from `secrets`.
async fn load(
    runtime: &PluginRuntime,
    dir: &Path,
    vendor: &str,
    manifest_text: &str,
    secrets: &[(&str, &str)],
) -> anyhow::Result<Plugin> {
    let path = dir.join(format!("{vendor}.toml"));
    std::fs::write(&path, manifest_text)?;
    let manifest = Manifest::load(&path)?;
    let secrets: Vec<(String, String)> = secrets
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    runtime
        .load_manifest_with_secrets(manifest, &path, move |variable| {
            secrets
                .iter()
                .find(|(name, _)| name == variable)
                .map(|(_, value)| value.clone())
        })
        .await
        .with_context(|| format!("loading the {vendor} plugin"))
}

/// A create request for `region`, `size` and `image`.
fn request(region: &str, size: &str, image: &str) -> ServerRequest {
    ServerRequest {
        idempotency_key: "bench-create-call".into(),
        name: "bench".into(),
        region: region.into(),
        size: size.into(),
        image: image.into(),
        ssh_keys: Vec::new(),
        user_data: None,
        labels: vec![("team".into(), "bench".into())],
    }
}

/// Which of the plugin's two create exports a side calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateExport {
    /// `create-server`: the look-up, then the create.
    Create,
    /// `create-new-server`: the create alone.
    CreateNew,
}

/// Times `calls` creates after `warmup` ones; sorted.
async fn time_creates(
    plugin: &Plugin,
    request: &ServerRequest,
    args: &Args,
    progress: &mut Progress,
    (side, export): (&str, CreateExport),
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(args.calls);
    for n in 0..args.warmup + args.calls {
        let started = Instant::now();
        let order_id = uuid::Uuid::new_v4();
        match export {
            CreateExport::Create => plugin.create_server(order_id, request).await,
            CreateExport::CreateNew => plugin.create_new_server(order_id, request).await,
        }
        .map_err(|error| anyhow::anyhow!("{side}: {export:?} failed: {error:?}"))?;
        if n >= args.warmup {
            samples.push(started.elapsed());
        }
        if n % 500 == 0 {
            progress.update(&format!(
                "{side}: {n} of {} calls",
                args.warmup + args.calls
            ));
        }
    }
    samples.sort();
    Ok(samples)
}

/// Loads the Hetzner plugin against a canned vendor of its own; what the vendor served, and
/// the plugin.
async fn load_hetzner(
    runtime: &PluginRuntime,
    dir: &Path,
) -> anyhow::Result<(Arc<Served>, Plugin)> {
    let served = Arc::new(Served::default());
    let origin = serve(hetzner_vendor(served.clone())).await?;
    let plugin = load(
        runtime,
        dir,
        "hetzner",
        &format!(
            "vendor = \"hetzner\"\ncomponent = {:?}\nallowed_hosts = [\"{origin}\"]\n\
             [config]\nbase-url = \"{origin}\"\n\
             [secrets]\ntoken = \"PLUGIN_SECRET_HETZNER_TOKEN\"\n",
            plugin_component("hetzner").display().to_string()
        ),
        &[("PLUGIN_SECRET_HETZNER_TOKEN", "bench-token")],
    )
    .await?;
    Ok((served, plugin))
}

/// Loads the AWS plugin against a canned EC2 of its own; what the vendor served, and the
/// plugin.
async fn load_ec2(runtime: &PluginRuntime, dir: &Path) -> anyhow::Result<(Arc<Served>, Plugin)> {
    let served = Arc::new(Served::default());
    let origin = serve(ec2_vendor(served.clone())).await?;
    let plugin = load(
        runtime,
        dir,
        "aws",
        &format!(
            "vendor = \"aws\"\ncomponent = {:?}\nallowed_hosts = [\"{origin}\"]\n\
             [config]\nendpoint = \"{origin}\"\nregions = \"us-east-1\"\n\
             [secrets]\naccess-key-id = \"PLUGIN_SECRET_AWS_ACCESS_KEY_ID\"\n\
             secret-access-key = \"PLUGIN_SECRET_AWS_SECRET_ACCESS_KEY\"\n",
            plugin_component("aws").display().to_string()
        ),
        &[
            ("PLUGIN_SECRET_AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            (
                "PLUGIN_SECRET_AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
        ],
    )
    .await?;
    Ok((served, plugin))
}

/// One Compute Engine plugin under measure, with its own canned vendor.
struct GceSide {
    /// `gce-cached` or `gce-uncached`.
    side: &'static str,
    served: Arc<Served>,
    /// Token exchanges the vendor answered.
    tokens: Arc<AtomicU64>,
    plugin: Plugin,
}

/// Loads the GCP plugin twice, each against a canned vendor of its own: with the token
/// cached, and with no cache at all.
async fn load_gce_sides(runtime: &PluginRuntime, dir: &Path) -> anyhow::Result<Vec<GceSide>> {
    let gce_key = serde_json::json!({
        "type": "service_account",
        "project_id": "bench-project",
        "private_key_id": "bench-1",
        "private_key": GCE_KEY_PEM,
        "client_email": "bench@bench-project.iam.gserviceaccount.com",
        "token_uri": "TOKEN_URI",
    });
    let mut gce = Vec::new();
    for (side, limits) in [("gce-cached", ""), ("gce-uncached", "cache_entries = 0\n")] {
        let served = Arc::new(Served::default());
        let tokens = Arc::new(AtomicU64::new(0));
        let origin = serve(gce_vendor(served.clone(), tokens.clone())).await?;
        std::fs::create_dir_all(dir.join(side))?;
        let key = gce_key
            .to_string()
            .replace("TOKEN_URI", &format!("{origin}/token"));
        let plugin = load(
            runtime,
            &dir.join(side),
            "gcp",
            &format!(
                "vendor = \"gcp\"\ncomponent = {:?}\nallowed_hosts = [\"{origin}\"]\n\
                 [config]\nbase-url = \"{origin}\"\n\
                 [secrets]\nservice-account-key = \"PLUGIN_SECRET_GCP_SERVICE_ACCOUNT_KEY\"\n\
                 [limits]\n{limits}",
                plugin_component("gcp").display().to_string()
            ),
            &[("PLUGIN_SECRET_GCP_SERVICE_ACCOUNT_KEY", &key)],
        )
        .await?;
        gce.push(GceSide {
            side,
            served,
            tokens,
            plugin,
        });
    }
    Ok(gce)
}

/// Fails if a canned vendor was asked something it does not answer (a plugin that made
/// other calls must fail the run, not speed it up).
fn ensure_nothing_refused<'a>(
    sides: impl IntoIterator<Item = (&'a str, &'a Served)>,
) -> anyhow::Result<()> {
    for (side, served) in sides {
        let refused = served.refused.load(Ordering::Relaxed);
        anyhow::ensure!(
            refused == 0,
            "the {side} plugin made {refused} requests the canned vendor does not answer"
        );
    }
    Ok(())
}

/// A duration in microseconds.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A side's create p50 and p99 (`<key>_p50_us`, `<key>_p99_us`, labelled `<label> p50`,
/// ...) and its vendor requests per call (`<key>_requests_per_call`).
fn latency_figures(
    summary: &mut Summary,
    (key, label): (&str, &str),
    requests_label: String,
    times: &[Duration],
    requests_per_call: f64,
) {
    for (name, quantile) in [("p50", 0.50), ("p99", 0.99)] {
        summary.figure(
            format!("{key}_{name}_us"),
            format!("{label} {name}"),
            micros(percentile(times, quantile)),
            "us",
            None,
        );
    }
    summary.figure(
        format!("{key}_requests_per_call"),
        requests_label,
        requests_per_call,
        "",
        None,
    );
}

/// Runs both plugins and summarises.
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    let args = Args {
        calls: args.calls.max(1),
        ..args
    };
    let mut progress = Progress::new();
    let dir: PathBuf = std::env::temp_dir().join(format!("bench-create-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let runtime = PluginRuntime::new()?;
    let (hetzner_served, hetzner) = load_hetzner(&runtime, &dir).await?;
    std::fs::create_dir_all(dir.join("new"))?;
    let (hetzner_new_served, hetzner_new) = load_hetzner(&runtime, &dir.join("new")).await?;
    let (ec2_served, ec2) = load_ec2(&runtime, &dir).await?;
    let gce = load_gce_sides(&runtime, &dir).await?;

    let hetzner_request = request("fsn1", "cx22", "ubuntu-24.04");
    let hetzner_times = time_creates(
        &hetzner,
        &hetzner_request,
        &args,
        &mut progress,
        ("hetzner", CreateExport::Create),
    )
    .await?;
    let hetzner_new_times = time_creates(
        &hetzner_new,
        &hetzner_request,
        &args,
        &mut progress,
        ("hetzner-new", CreateExport::CreateNew),
    )
    .await?;
    let ec2_times = time_creates(
        &ec2,
        &request("us-east-1", "t3.micro", "ami-03cf127a"),
        &args,
        &mut progress,
        ("ec2", CreateExport::Create),
    )
    .await?;
    let gce_request = request(
        "us-central1-a",
        "e2-small",
        "projects/debian-cloud/global/images/family/debian-12",
    );
    let mut gce_times = Vec::new();
    for side in &gce {
        gce_times.push(
            time_creates(
                &side.plugin,
                &gce_request,
                &args,
                &mut progress,
                (side.side, CreateExport::Create),
            )
            .await?,
        );
    }
    progress.finish();
    let _ = std::fs::remove_dir_all(&dir);

    let gce_sides = gce.iter().map(|side| (side.side, &*side.served));
    ensure_nothing_refused(
        [
            ("hetzner", &*hetzner_served),
            ("hetzner-new", &*hetzner_new_served),
            ("ec2", &*ec2_served),
        ]
        .into_iter()
        .chain(gce_sides),
    )?;
    let total = (args.warmup + args.calls) as f64;
    let per_call = |served: &Served| served.answered.load(Ordering::Relaxed) as f64 / total;

    let mut summary = Summary::new("create-call");
    summary.setting("calls", args.calls as u64);
    summary.setting("warmup", args.warmup as u64);
    summary.setting(
        "vendor",
        "canned answers in this process (bench/fixtures), over loopback HTTP",
    );
    latency_figures(
        &mut summary,
        ("hetzner", "Hetzner create"),
        "Hetzner vendor requests per call".into(),
        &hetzner_times,
        per_call(&hetzner_served),
    );
    latency_figures(
        &mut summary,
        ("hetzner_new", "Hetzner create-new-server"),
        "Hetzner create-new-server: vendor requests per call".into(),
        &hetzner_new_times,
        per_call(&hetzner_new_served),
    );
    latency_figures(
        &mut summary,
        ("ec2", "EC2 create"),
        "EC2 vendor requests per call".into(),
        &ec2_times,
        per_call(&ec2_served),
    );
    summary.figure(
        "p50_ratio",
        "EC2 p50 / Hetzner p50",
        percentile(&ec2_times, 0.50).as_secs_f64() / percentile(&hetzner_times, 0.50).as_secs_f64(),
        "",
        None,
    );
    for (side, times) in gce.iter().zip(&gce_times) {
        let label = if side.side == "gce-cached" {
            "GCE create, token cached"
        } else {
            "GCE create, no cache (JWT signed and exchanged per call)"
        };
        let key = side.side.replace('-', "_");
        latency_figures(
            &mut summary,
            (&key, label),
            format!("{label}: vendor requests per call"),
            times,
            per_call(&side.served),
        );
        summary.figure(
            format!("{key}_token_exchanges"),
            format!("{label}: token exchanges in all"),
            side.tokens.load(Ordering::Relaxed) as f64,
            "",
            None,
        );
    }
    Ok(summary)
}
