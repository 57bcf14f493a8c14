//! Accept latency: how long `POST /v1/orders` takes to answer `202` (the order and its
//! outbox row committed to the database) at a fixed offered load, beside a bare axum
//! handler that answers `202` at once, under the same load in the same run.
//!
//! The load is open-loop ([`crate::load::open_loop`]): request `i` is due at
//! `i / rate` seconds and its latency counts from then, so a server that falls behind
//! shows it in the latencies instead of slowing the load down (no coordinated omission).
//! Each rate runs `--warmup-secs` unmeasured, then `--secs` measured, first against the
//! bare handler, then against order-api.
//!
//! The stack is order-api (SQLite, `synchronous = FULL`), the broker and a host that
//! answers validations but creates one server at a time, of a simulator whose servers take
//! an hour to boot, so the figure is the accept path as deployed and little else: HTTP, the
//! token lookup, the check with the plugin (`--validate-timeout-ms`; 0 leaves it out), made
//! by order-api itself or by the host (`--check-at`),
//! the transaction, and the outbox relay publishing with confirms in the background. The
//! orders wait in their queues; the run deletes them at the end.
//!
//! Beside the latencies, the CPU each process of the stack used per request in order-api's
//! measured window: where the accept path's time goes at each rate.
//!
//! The bare handler runs in a process of its own (`bench bare-accept`, the same binary),
//! with the same tokio runtime shape as order-api, so both sides pay for a process hop.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::Json;
use axum::http::StatusCode;
use axum::routing::post;
use provisioner_api_client::ApiClient;
use provisioner_tests::{Stack, StackOptions, VENDORS, free_port};

use provisioner_bench::CheckAt;
use provisioner_bench::report::{Progress, Summary, Target};
use provisioner_bench::stats::Percentiles;

use crate::load::{Answer, Outcome, open_loop};
use crate::stack_cpu::CpuReading;

/// The accept-latency benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Offered loads, requests per second (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [500u32, 2000])]
    rates: Vec<u32>,
    /// Seconds measured at each rate.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// Seconds at each rate before measuring.
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// order-api's `VALIDATE_TIMEOUT_MS`: 0 leaves the check with the plugin out.
    #[arg(long, default_value_t = 2_000)]
    validate_timeout_ms: u64,
    /// Where order-api checks new orders with the vendor's plugin: `order-api` itself (its
    /// `VALIDATE_PLUGINS_DIR`, as deployed) or a `host` over RabbitMQ.
    #[arg(long, value_enum, default_value_t = CheckAt::OrderApi)]
    check_at: CheckAt,
    /// Give the bench's tenant quotas (a million live servers and orders in flight, over all
    /// vendors and at each) and its own order rate (a million per second): every order is
    /// then counted against them and takes a token, as a tenant with quotas is.
    #[arg(long)]
    quotas: bool,
    /// Also write each measured request's latency to `<DIR>/<side>-<rate>.csv` (columns
    /// `due_ms`, when it was due from the window's first request, `due_unix_ms`, the same on the
    /// wall clock, `latency_ms` and `outcome`): when in the window the slow answers came, to
    /// set beside the programs' logs and other samples of the same moments.
    #[arg(long, value_name = "DIR")]
    latencies_dir: Option<std::path::PathBuf>,
}

/// The targets: p99 at these rates at most this many milliseconds (500/s from the first
/// accept-path issue, 2,000/s from issue 22).
const TARGET_RATES: [u32; 2] = [500, 2_000];
const TARGET_P99_MS: f64 = 10.0;

/// A request unanswered this long counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `POST /v1/orders` with a bare handler: parse the JSON body, answer 202 with a
/// small JSON body. Runs until killed.
pub async fn serve_bare(port: u16) -> anyhow::Result<()> {
    async fn accept(Json(order): Json<serde_json::Value>) -> (StatusCode, Json<serde_json::Value>) {
        let name = order.get("name").cloned().unwrap_or_default();
        (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "status": "pending", "name": name })),
        )
    }
    let app = axum::Router::new().route("/v1/orders", post(accept));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// The bare handler's process, killed when dropped.
struct BareServer {
    _child: tokio::process::Child,
    /// Its `POST /v1/orders`, called with the same `reqwest::Client` as order-api's.
    api: ApiClient,
}

impl BareServer {
    async fn start(http: &reqwest::Client) -> anyhow::Result<Self> {
        let port = free_port();
        let child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["bare-accept", "--port", &port.to_string()])
            .kill_on_drop(true)
            .spawn()
            .context("starting `bench bare-accept`")?;
        let api = ApiClient::with_http(&format!("http://127.0.0.1:{port}"), http.clone());
        for _ in 0..100 {
            let answer = api.post_order_body("{}".to_string(), None).await;
            if answer.is_ok_and(|a| a.status() == 202) {
                return Ok(Self { _child: child, api });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the bare handler did not answer on port {port}")
    }
}

/// One side's answers at one rate.
struct Side {
    latencies: Percentiles,
    failed: usize,
    /// Of the failed: unanswered within the time-out, and failed connections.
    timed_out: usize,
    connection_errors: usize,
    answered: usize,
    /// What the stack's processes used while it was measured (order-api's side only).
    cpu: Option<CpuReading>,
}

/// Warms up, then measures `api`'s `POST /v1/orders` at `rate`.
async fn measure_side(
    api: &ApiClient,
    stack: Option<&Stack>,
    rate: u32,
    args: &Args,
    progress: &mut Progress,
    label: &str,
) -> anyhow::Result<Side> {
    let body = |i: usize| VENDORS[i % VENDORS.len()].order_body(&format!("accept-{i}"));
    progress.update(&format!("{label} at {rate}/s: warming up"));
    let warmup = Duration::from_secs(args.warmup_secs);
    open_loop(api, body, rate, warmup, 202, REQUEST_TIMEOUT).await;
    progress.update(&format!("{label} at {rate}/s: measuring {} s", args.secs));
    let cpu_before = stack.map(CpuReading::now).transpose()?;
    let answers: Vec<Answer> = open_loop(
        api,
        body,
        rate,
        Duration::from_secs(args.secs),
        202,
        REQUEST_TIMEOUT,
    )
    .await;
    let cpu = match (stack, cpu_before) {
        (Some(stack), Some(before)) => Some(CpuReading::now(stack)?.since(&before)),
        _ => None,
    };
    if let Some(dir) = &args.latencies_dir {
        let side = if stack.is_some() { "api" } else { "bare" };
        let path = dir.join(format!("{side}-{rate}.csv"));
        write_latencies(&path, &answers)?;
    }
    let counted = |outcome: Outcome| answers.iter().filter(|a| a.outcome == outcome).count();
    Ok(Side {
        latencies: Percentiles::of(answers.iter().map(|a| a.latency).collect()),
        failed: answers.iter().filter(|a| !a.expected()).count(),
        timed_out: counted(Outcome::TimedOut),
        connection_errors: counted(Outcome::ConnectionError),
        answered: answers.len(),
        cpu,
    })
}

/// Writes one line per answer: when it was due (ms from the first answer's due time, and ms
/// since the Unix epoch), its latency (ms) and how it ended.
fn write_latencies(path: &std::path::Path, answers: &[Answer]) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let unix_ms = |at: std::time::SystemTime| -> anyhow::Result<f64> {
        let since = at
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?;
        Ok(since.as_secs_f64() * 1000.0)
    };
    let first_ms = match answers.first() {
        Some(first) => unix_ms(first.due)?,
        None => 0.0,
    };
    let mut csv = String::from("due_ms,due_unix_ms,latency_ms,outcome\n");
    for answer in answers {
        let due_unix_ms = unix_ms(answer.due)?;
        let due_ms = due_unix_ms - first_ms;
        let latency_ms = answer.latency.as_secs_f64() * 1000.0;
        let outcome = match answer.outcome {
            Outcome::Expected => "expected".to_string(),
            Outcome::OtherStatus(status) => status.to_string(),
            Outcome::TimedOut => "timed-out".to_string(),
            Outcome::ConnectionError => "connection-error".to_string(),
        };
        writeln!(
            csv,
            "{due_ms:.3},{due_unix_ms:.0},{latency_ms:.3},{outcome}"
        )?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))
}

/// Runs the benchmark.
pub async fn run(args: Args, profile: &'static str) -> anyhow::Result<Summary> {
    let stack = Stack::start(StackOptions {
        profile,
        // The host answers validations; its creations stay one at a time, booting for an
        // hour, so they take next to no CPU from the accept path.
        max_in_flight: 1,
        boot_delay: Duration::from_secs(3_600),
        poll: Duration::from_secs(5),
        api_env: vec![(
            "VALIDATE_TIMEOUT_MS".into(),
            args.validate_timeout_ms.to_string(),
        )],
        api_checks_with_plugins: args.check_at.at_order_api(),
        ..StackOptions::default()
    })
    .await?;
    let outcome = measure(&stack, &args).await;
    if outcome.is_ok() {
        stack.cleanup().await;
    }
    outcome
}

async fn measure(stack: &Stack, args: &Args) -> anyhow::Result<Summary> {
    stack.wait_for_vendors().await?;
    if args.quotas {
        let limits =
            serde_json::json!({"max_live_servers": 1_000_000, "max_orders_in_flight": 1_000_000});
        let vendors: serde_json::Map<String, serde_json::Value> = VENDORS
            .iter()
            .map(|v| (v.vendor.to_string(), limits.clone()))
            .collect();
        let set = serde_json::json!({
            "limits": limits,
            "vendors": vendors,
            "rate": {"per_second": 1_000_000.0, "burst": 1_000_000},
        });
        ApiClient::new(&stack.api_url, Some(&stack.admin_token))?
            .set_tenant_quotas(provisioner_tests::TEST_TENANT, &set)
            .await
            .context("setting the bench tenant's quotas")?;
    }
    // Both sides get the token; only order-api checks it (a part of its accept path).
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {}", stack.token).parse()?,
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .default_headers(headers)
        .build()?;
    let bare = BareServer::start(&http).await?;
    let api = ApiClient::with_http(&stack.api_url, http);
    let mut progress = Progress::new();
    let mut summary = Summary::new("accept");
    summary.setting(
        "rates",
        args.rates
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
    );
    summary.setting("secs", args.secs);
    summary.setting("warmup_secs", args.warmup_secs);
    summary.setting("validate_timeout_ms", args.validate_timeout_ms);
    summary.setting("quotas", args.quotas);
    for &rate in &args.rates {
        let bare_side =
            measure_side(&bare.api, None, rate, args, &mut progress, "bare axum").await?;
        let api_side =
            measure_side(&api, Some(stack), rate, args, &mut progress, "order-api").await?;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        for (side, name, figures) in [
            ("api", "order-api", &api_side),
            ("bare", "bare axum", &bare_side),
        ] {
            summary.figure(
                format!("{side}_{rate}_p50_ms"),
                format!("{name} at {rate}/s: p50"),
                ms(figures.latencies.p50),
                "ms",
                None,
            );
            let target = (side == "api" && TARGET_RATES.contains(&rate))
                .then_some(Target::AtMost(TARGET_P99_MS));
            summary.figure(
                format!("{side}_{rate}_p99_ms"),
                format!("{name} at {rate}/s: p99"),
                ms(figures.latencies.p99),
                "ms",
                target,
            );
            summary.figure(
                format!("{side}_{rate}_p999_ms"),
                format!("{name} at {rate}/s: p99.9"),
                ms(figures.latencies.p999),
                "ms",
                None,
            );
            summary.figure(
                format!("{side}_{rate}_max_ms"),
                format!("{name} at {rate}/s: max"),
                ms(figures.latencies.max),
                "ms",
                None,
            );
            summary.figure(
                format!("{side}_{rate}_failed"),
                format!("{name} at {rate}/s: not 202 of {}", figures.answered),
                figures.failed as f64,
                "",
                None,
            );
            summary.figure(
                format!("{side}_{rate}_timed_out"),
                format!("{name} at {rate}/s: of those, unanswered within {REQUEST_TIMEOUT:?}"),
                figures.timed_out as f64,
                "",
                None,
            );
            summary.figure(
                format!("{side}_{rate}_connection_errors"),
                format!("{name} at {rate}/s: of those, connection failed under the request"),
                figures.connection_errors as f64,
                "",
                None,
            );
        }
        if let Some(cpu) = api_side.cpu {
            cpu_figures(&mut summary, rate, &cpu, api_side.answered);
        }
        let bare_p99 = ms(bare_side.latencies.p99).max(f64::EPSILON);
        summary.figure(
            format!("ratio_{rate}_p99"),
            format!("order-api p99 / bare p99 at {rate}/s"),
            ms(api_side.latencies.p99) / bare_p99,
            "",
            None,
        );
    }
    progress.finish();
    drop(bare);
    Ok(summary)
}

/// What one accepted request cost each process at `rate` (its measured window's CPU over
/// the requests made in it): where the accept path's time goes. The host's share is the
/// plugin check; the broker's, the check's two messages and the relayed creation request.
fn cpu_figures(summary: &mut Summary, rate: u32, cpu: &CpuReading, requests: usize) {
    let per_request = |secs: f64| secs * 1000.0 / requests.max(1) as f64;
    for (key, what, secs) in [
        ("api", "order-api", cpu.api),
        ("host", "the host", cpu.host),
        ("broker", "RabbitMQ", cpu.broker),
        ("bench", "the load generator", cpu.bench),
        (
            "total",
            "all of them and the simulator",
            cpu.api + cpu.host + cpu.broker + cpu.bench + cpu.sim,
        ),
    ] {
        summary.figure(
            format!("cpu_{rate}_{key}_ms_per_request"),
            format!("at {rate}/s: CPU per request, {what}"),
            per_request(secs),
            "ms",
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latencies_csv_has_a_line_per_answer_with_its_due_time_on_the_wall_clock() {
        let dir = std::env::temp_dir().join(format!("accept-latencies-{}", std::process::id()));
        let path = dir.join("api-500.csv");
        let window_start = std::time::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let answers = [
            Answer {
                due: window_start,
                latency: Duration::from_micros(3_250),
                outcome: Outcome::Expected,
            },
            Answer {
                due: window_start + Duration::from_millis(2),
                latency: Duration::from_millis(12),
                outcome: Outcome::OtherStatus(503),
            },
            Answer {
                due: window_start + Duration::from_millis(4),
                latency: REQUEST_TIMEOUT,
                outcome: Outcome::TimedOut,
            },
        ];
        write_latencies(&path, &answers).unwrap();
        let csv = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let timeout_ms = REQUEST_TIMEOUT.as_secs_f64() * 1000.0;
        assert_eq!(
            csv,
            format!(
                "due_ms,due_unix_ms,latency_ms,outcome\n\
                 0.000,1700000000000,3.250,expected\n\
                 2.000,1700000000002,12.000,503\n\
                 4.000,1700000000004,{timeout_ms:.3},timed-out\n"
            )
        );
    }
}
