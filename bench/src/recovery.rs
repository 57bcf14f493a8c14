//! Recovery: seconds from the broker being back up to both programs consuming again.
//!
//! One stack (order-api, a host with the three plugins, the simulator) on this machine's
//! RabbitMQ, which the benchmark stops and starts (`rabbitmqctl stop_app` / `start_app`)
//! `--cycles` times, each outage lasting `--down-secs`. The clock starts when the broker
//! serves again (`rabbitmqctl await_startup` has returned; the programs may reconnect while
//! it is still starting, so the summary also gives the time from `start_app` being issued,
//! which includes the broker's own start) and stops, for each program, when its queues have
//! a consumer again: order-api's `provision.results`, the host's
//! `provision.requests.<vendor>` of every vendor (read with passive declares every 50 ms).
//! Then an order must go through (`active`), so consuming means working.
//!
//! Target (issue 7): <= 10 s. Both programs reconnect with backoff capped at 10 s, so a
//! reconnect attempt that just missed the broker can wait nearly that long.

use std::time::{Duration, Instant};

use anyhow::Context;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use provisioner_tests::{AMQP_URL, Stack, StackOptions, VENDORS};

use provisioner_bench::report::{Progress, Summary, Target};

/// The recovery benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Broker restarts measured.
    #[arg(long, default_value_t = 5)]
    cycles: usize,
    /// Seconds the broker stays down each time.
    #[arg(long, default_value_t = 5)]
    down_secs: u64,
}

/// Consumers of `queue` now, or `None` when the broker cannot tell yet.
async fn consumers(connection: &Connection, queue: &str) -> Option<u32> {
    let channel = connection.create_channel().await.ok()?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok();
    let _ = channel.close(200, "looked".into()).await;
    declared.map(|queue| queue.consumer_count())
}

/// Waits (up to a minute) until every queue of `queues` has a consumer; seconds since
/// `since`.
async fn consuming_again(queues: &[String], since: Instant) -> anyhow::Result<f64> {
    consuming_again_at(AMQP_URL, queues, since, || true).await
}

/// Waits (up to a minute) until `ready` holds and every queue of `queues` has a consumer,
/// as the broker at `url` sees them; seconds since `since`.
pub(crate) async fn consuming_again_at(
    url: &str,
    queues: &[String],
    since: Instant,
    ready: impl Fn() -> bool,
) -> anyhow::Result<f64> {
    let deadline = since + Duration::from_secs(60);
    let mut connection = None;
    loop {
        if connection.is_none() {
            connection = Connection::connect(url, ConnectionProperties::default())
                .await
                .ok();
        }
        if let Some(open) = &connection
            && ready()
        {
            let mut all = true;
            for queue in queues {
                if consumers(open, queue).await.unwrap_or(0) == 0 {
                    all = false;
                    break;
                }
            }
            if all {
                let seconds = since.elapsed().as_secs_f64();
                let _ = open.close(200, "done".into()).await;
                return Ok(seconds);
            }
            if !open.status().connected() {
                connection = None;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{queues:?} had no consumer again within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs the cycles and summarises.
pub async fn run(args: Args, profile: &'static str) -> anyhow::Result<Summary> {
    let mut progress = Progress::new();
    let stack = Stack::start(StackOptions {
        profile,
        exclusive_broker: true,
        ..StackOptions::default()
    })
    .await?;
    let result = cycles(&stack, &args, &mut progress).await;
    progress.finish();
    if result.is_err() {
        eprintln!("{}", stack.logs());
    }
    stack.cleanup().await;
    let (api, host, order, starts) = result?;
    let max = |values: &[f64]| values.iter().copied().fold(0.0, f64::max);
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    let mut summary = Summary::new("recovery");
    summary.setting("cycles", args.cycles as u64);
    summary.setting("down_secs", args.down_secs);
    summary.figure(
        "api_mean_secs",
        "order-api consuming again, mean",
        mean(&api),
        "s",
        None,
    );
    summary.figure(
        "api_max_secs",
        "order-api consuming again, worst",
        max(&api),
        "s",
        Some(Target::AtMost(10.0)),
    );
    summary.figure(
        "host_mean_secs",
        "host consuming again, mean",
        mean(&host),
        "s",
        None,
    );
    summary.figure(
        "host_max_secs",
        "host consuming again, worst",
        max(&host),
        "s",
        Some(Target::AtMost(10.0)),
    );
    summary.figure(
        "broker_start_mean_secs",
        "the broker's own start (start_app to serving), mean",
        mean(&starts),
        "s",
        None,
    );
    summary.figure(
        "order_max_secs",
        "an order active after the broker is back, worst",
        max(&order),
        "s",
        None,
    );
    Ok(summary)
}

/// Per cycle, seconds from the broker serving again to order-api consuming, to the host
/// consuming, to an order `active`; and the broker's own start (`start_app` to serving).
type Cycles = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

/// Runs the outages; see [`Cycles`].
async fn cycles(stack: &Stack, args: &Args, progress: &mut Progress) -> anyhow::Result<Cycles> {
    let results = vec![stack.topology.results_queue()];
    let requests: Vec<String> = VENDORS
        .iter()
        .map(|fixture| stack.topology.request_queue(fixture.vendor))
        .collect();
    let (mut api, mut host, mut order) = (Vec::new(), Vec::new(), Vec::new());
    let mut starts = Vec::new();
    for cycle in 1..=args.cycles {
        progress.update(&format!("cycle {cycle} of {}: broker down", args.cycles));
        let outage = stack.stop_broker().await?;
        tokio::time::sleep(Duration::from_secs(args.down_secs)).await;
        let issued = Instant::now();
        outage.end().await.context("starting the broker again")?;
        let back = Instant::now();
        starts.push(back.duration_since(issued).as_secs_f64());
        progress.update(&format!("cycle {cycle} of {}: broker back", args.cycles));
        let (api_secs, host_secs) = tokio::try_join!(
            consuming_again(&results, back),
            consuming_again(&requests, back)
        )?;
        api.push(api_secs);
        host.push(host_secs);
        let id = stack.order_server(&format!("recovery-{cycle}")).await?;
        stack
            .wait_for_status(&id, "active", Duration::from_secs(60))
            .await?;
        order.push(back.elapsed().as_secs_f64());
    }
    Ok((api, host, order, starts))
}
