//! Pipeline throughput: orders per second from `POST /v1/orders` to `active`, with a vendor
//! whose servers boot at once, beside a bare lapin loop doing the same four broker hops per
//! order in the same run.
//!
//! With `--cluster` both run on the three-node cluster of `scripts/rabbitmq-cluster.sh`
//! (every queue a quorum queue with three replicas, so each message is written on a majority
//! before its confirm), the programs and the baseline connected to node 1; the broker CPU
//! figure then covers the three nodes.
//!
//! **The pipeline**: one order-api, one host with the three plugins, the simulator with boot
//! delay 0. `--orders` orders are posted, `--post-concurrency` requests at a time (a closed
//! loop: the POSTs themselves are part of the pipeline), spread over the three vendors; the
//! figure is the orders divided by the time from the first order's `created_at` to the last
//! order's `updated_at` (order-api's own clock), read back once every order is `active`.
//!
//! **The baseline**: what RabbitMQ alone does with the same messages: publish with a
//! confirm → consume → publish with a confirm → consume, per order, over a topology declared
//! by the same code as the programs' (quorum queues with the same arguments, persistent
//! messages of the same sizes and properties, mandatory publishes to the same topic
//! exchange), with the programs' parallelism: up to 256 publishes awaiting confirms (the
//! outbox relay's batch), the relay consuming with the manifests' prefetch (1,000) and
//! confirming each forward before its ack (as the host does), the sink consuming with
//! order-api's results prefetch (64). Two connections, as two programs have.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use provisioner_contract::amqp::{confirming_channel, publish_mandatory};
use provisioner_contract::{
    Envelope, HostMessage, HostRequest, OrderUpdate, ProvisionRequest, ServerInfo, ServerSpec,
    ServerStatus, Topology, UpdateKind, encode,
};
use provisioner_tests::cluster::Cluster;
use provisioner_tests::{AMQP_URL, Stack, StackOptions, VENDORS, delete_topology_at};
use uuid::Uuid;

use provisioner_bench::report::{Progress, Summary, Target};
use provisioner_bench::{CheckAt, probe};

use crate::load::Orderer;
use crate::stack_cpu::CpuReading;

/// The pipeline benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Orders through the pipeline.
    #[arg(long, default_value_t = 3_000)]
    orders: usize,
    /// POST requests in flight at once.
    #[arg(long, default_value_t = 64)]
    post_concurrency: usize,
    /// Orders through the bare broker loop (it is much faster: more orders for a stable
    /// figure).
    #[arg(long, default_value_t = 20_000)]
    bare_orders: usize,
    /// Run on the three-node cluster of `scripts/rabbitmq-cluster.sh` (started if it is
    /// not running; quorum queues with three replicas) instead of this machine's broker.
    #[arg(long)]
    cluster: bool,
    /// Where order-api checks new orders with the vendor's plugin: `order-api` itself (its
    /// `VALIDATE_PLUGINS_DIR`, as deployed) or a `host` over RabbitMQ.
    #[arg(long, value_enum, default_value_t = CheckAt::OrderApi)]
    check_at: CheckAt,
}

/// Publishes awaiting confirms at once on the baseline's first hop: the outbox relay's batch.
const BARE_PUBLISH_WINDOW: usize = 256;
/// The baseline relay's prefetch: the manifests' `max_in_flight` in the pipeline run.
const RELAY_PREFETCH: u16 = 1_000;
/// The baseline sink's prefetch: order-api's results consumer's.
const SINK_PREFETCH: u16 = 64;

/// The vendor name of the baseline's queue (never a plugin).
const BARE_VENDOR: &str = "bare";

/// Runs the benchmark.
pub async fn run(args: Args, profile: &'static str) -> anyhow::Result<Summary> {
    let _cluster = match args.cluster {
        true => Some(Cluster::hold().await?),
        false => None,
    };
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::ZERO,
        poll: Duration::from_millis(100),
        poll_max: Some(Duration::from_secs(1)),
        profile,
        amqp_url: args.cluster.then(|| Cluster::urls_from(1)),
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
    let mut progress = Progress::new();

    let broker_before = probe::broker_cpu_secs();
    let bare_url = match args.cluster {
        true => Cluster::url(1),
        false => AMQP_URL.to_string(),
    };
    let bare = bare_broker(&bare_url, args.bare_orders, &mut progress).await?;
    let bare_broker_cpu = probe::broker_cpu_secs()
        .zip(broker_before)
        .map(|(after, before)| after - before);
    let bare_rate = args.bare_orders as f64 / bare.as_secs_f64();

    let cpu_before = CpuReading::now(stack)?;
    let (elapsed, accepted) = through_pipeline(stack, args, &mut progress).await?;
    let cpu = CpuReading::now(stack)?.since(&cpu_before);
    progress.finish();
    let rate = accepted as f64 / elapsed.as_secs_f64();

    let mut summary = Summary::new("pipeline");
    summary.setting("orders", args.orders);
    summary.setting("post_concurrency", args.post_concurrency);
    summary.setting("bare_orders", args.bare_orders);
    summary.setting(
        "broker",
        match args.cluster {
            true => "three-node cluster (quorum queues with 3 replicas)",
            false => "this machine's single node",
        },
    );
    summary.figure(
        "pipeline_orders_per_sec",
        "pipeline: orders POST -> active per second",
        rate,
        "/s",
        None,
    );
    summary.figure(
        "bare_orders_per_sec",
        "bare lapin loop: orders (4 hops) per second",
        bare_rate,
        "/s",
        None,
    );
    summary.figure(
        "ratio",
        "pipeline / bare broker",
        rate / bare_rate,
        "",
        Some(Target::AtLeast(0.5)),
    );
    let per_order = |secs: f64| secs * 1000.0 / accepted as f64;
    summary.figure(
        "api_cpu_ms_per_order",
        "order-api CPU per order",
        per_order(cpu.api),
        "ms",
        None,
    );
    summary.figure(
        "host_cpu_ms_per_order",
        "host CPU per order",
        per_order(cpu.host),
        "ms",
        None,
    );
    summary.figure(
        "sim_cpu_ms_per_order",
        "vendor-sim CPU per order",
        per_order(cpu.sim),
        "ms",
        None,
    );
    summary.figure(
        "broker_cpu_ms_per_order",
        "RabbitMQ CPU per order, pipeline",
        per_order(cpu.broker),
        "ms",
        None,
    );
    if let Some(broker) = bare_broker_cpu {
        summary.figure(
            "bare_broker_cpu_ms_per_order",
            "RabbitMQ CPU per order, bare loop",
            broker * 1000.0 / args.bare_orders as f64,
            "ms",
            None,
        );
    }
    summary.figure(
        "bench_cpu_ms_per_order",
        "benchmark's own HTTP client CPU per order",
        per_order(cpu.bench),
        "ms",
        None,
    );
    Ok(summary)
}

/// Posts the orders and waits until all are `active`; the time from the first `created_at`
/// to the last `updated_at`, and how many orders were accepted.
async fn through_pipeline(
    stack: &Stack,
    args: &Args,
    progress: &mut Progress,
) -> anyhow::Result<(Duration, usize)> {
    let started = Instant::now();
    let orderer = Orderer::start(stack, args.post_concurrency, args.orders);
    let deadline = Duration::from_secs(120) + Duration::from_millis(args.orders as u64 * 100);
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let active = active_count(stack).await?;
        progress.update(&format!(
            "[{:>4}s] pipeline: posted {} · active {active}",
            started.elapsed().as_secs(),
            orderer.posted(),
        ));
        if active >= args.orders {
            break;
        }
        if started.elapsed() > deadline {
            bail!(
                "only {active} of {} orders became active within {deadline:?}\n{}",
                args.orders,
                stack.logs()
            );
        }
    }
    let (accepted, refused) = orderer.stop().await;
    if refused > 0 {
        bail!(
            "order-api refused {refused} of the orders\n{}",
            stack.logs()
        );
    }
    let orders = stack.list_all_orders("status=active").await?;
    if orders.len() != accepted {
        bail!(
            "{} orders are active, {accepted} were accepted",
            orders.len()
        );
    }
    let made = made_at_vendors(stack).await?;
    if made != accepted as u64 {
        bail!("the vendors made {made} servers for {accepted} orders");
    }
    let at = |order: &serde_json::Value, key: &str| -> anyhow::Result<DateTime<Utc>> {
        let text = order[key].as_str().context("an order without timestamps")?;
        Ok(text.parse()?)
    };
    let mut first = None::<DateTime<Utc>>;
    let mut last = None::<DateTime<Utc>>;
    for order in &orders {
        let (created, updated) = (at(order, "created_at")?, at(order, "updated_at")?);
        first = Some(first.map_or(created, |f| f.min(created)));
        last = Some(last.map_or(updated, |l| l.max(updated)));
    }
    let (first, last) = first.zip(last).context("no active orders")?;
    let elapsed = (last - first)
        .to_std()
        .context("the last update precedes the first order")?;
    Ok((elapsed, accepted))
}

/// `provisioner_orders{status="active"}` from order-api's `/metrics`.
async fn active_count(stack: &Stack) -> anyhow::Result<usize> {
    let text = stack.metrics().await?;
    let active = provisioner_tests::metric_value(&text, "provisioner_orders{status=\"active\"}")
        .context("/metrics has no provisioner_orders{status=\"active\"}")?;
    Ok(active as usize)
}

/// Servers the simulator made, over all vendors.
async fn made_at_vendors(stack: &Stack) -> anyhow::Result<u64> {
    let mut made = 0;
    for fixture in VENDORS {
        let stats = stack.sim_stats_of(fixture.vendor).await?;
        made += stats["created_total"].as_u64().unwrap_or(0);
    }
    Ok(made)
}

/// A creation request and an `active` result as the programs send them.
fn sample_messages() -> (Vec<u8>, Vec<u8>) {
    let order_id = Uuid::now_v7();
    let fixture = &VENDORS[0];
    let request = HostRequest::Create(ProvisionRequest {
        order_id,
        vendor: fixture.vendor.into(),
        spec: ServerSpec {
            name: "bench-000001".into(),
            region: fixture.region.into(),
            size: fixture.size.into(),
            image: fixture.image.into(),
            ssh_keys: Vec::new(),
            user_data: None,
            labels: Default::default(),
        },
        ordered_at: Some(chrono::Utc::now()),
    });
    let result = HostMessage::OrderUpdate(OrderUpdate {
        order_id,
        vendor: fixture.vendor.into(),
        at: Utc::now(),
        attempt: 1,
        kind: UpdateKind::Active {
            server: ServerInfo {
                vendor_id: "12345678".into(),
                name: "bench-000001".into(),
                status: ServerStatus::Running,
                ipv4: Some("203.0.113.17".into()),
                ipv6: Some("2001:db8:0:1::/64".into()),
            },
        },
    });
    (encode(&request), encode(&result))
}

/// The properties the programs give a message of `order_id`.
fn properties(order_id: Uuid) -> lapin::BasicProperties {
    Envelope::for_order(
        order_id,
        Some(format!(
            "00-{}-{}-01",
            Uuid::new_v4().simple(),
            &Uuid::new_v4().simple().to_string()[..16]
        )),
    )
    .properties()
}

/// Publishes `body` to the topology's exchange (mandatory, like the programs); the
/// returned future waits for the confirm.
async fn publish(
    channel: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
) -> anyhow::Result<impl Future<Output = anyhow::Result<()>> + use<>> {
    let confirm =
        publish_mandatory(channel, exchange, key, body, properties(Uuid::now_v7())).await?;
    let key = key.to_string();
    Ok(async move {
        let confirmation = confirm.await?;
        if !confirmation.is_ack() || confirmation.take_message().is_some() {
            bail!("the broker did not take a message for {key}");
        }
        Ok(())
    })
}

/// The bare loop: `orders` times publish+confirm → consume → publish+confirm → consume.
/// Returns the time from the first publish to the last consume.
async fn bare_broker(
    url: &str,
    orders: usize,
    progress: &mut Progress,
) -> anyhow::Result<Duration> {
    let id = Uuid::new_v4().simple().to_string();
    // The programs' queue sizes (three replicas on a cluster).
    let topology = Topology::with_prefix(format!("bench-{}.", &id[..12])).with_quorum_group_size(3);
    let outcome = bare_broker_on(url, &topology, orders, progress).await;
    delete_topology_at(url, &topology, &[BARE_VENDOR]).await;
    outcome
}

async fn bare_broker_on(
    url: &str,
    topology: &Topology,
    orders: usize,
    progress: &mut Progress,
) -> anyhow::Result<Duration> {
    let connect = || Connection::connect(url, ConnectionProperties::default());
    let api = connect()
        .await
        .context("connecting the baseline's api side")?;
    let host = connect()
        .await
        .context("connecting the baseline's host side")?;
    topology.declare_order_api(&api).await?;
    topology.declare_vendor(&api, BARE_VENDOR).await?;
    let (request, result) = sample_messages();
    let exchange = topology.requests_exchange();

    // The relay (host side): consume a request, publish the result with a confirm, ack.
    let relay_in = host.create_channel().await?;
    relay_in
        .basic_qos(RELAY_PREFETCH, BasicQosOptions::default())
        .await?;
    let mut requests = relay_in
        .basic_consume(
            topology.request_queue(BARE_VENDOR).as_str().into(),
            "bare-relay".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let relay_out = confirming_channel(&host).await?;
    let relay = {
        let (exchange, result) = (topology.results_exchange(), result.clone());
        let key = Topology::result_key(BARE_VENDOR);
        tokio::spawn(async move {
            while let Some(delivery) = requests.next().await {
                let delivery = delivery?;
                let (channel, exchange, key, result) = (
                    relay_out.clone(),
                    exchange.clone(),
                    key.clone(),
                    result.clone(),
                );
                tokio::spawn(async move {
                    let published =
                        async { publish(&channel, &exchange, &key, &result).await?.await };
                    if published.await.is_ok() {
                        let _ = delivery.ack(BasicAckOptions::default()).await;
                    }
                });
            }
            anyhow::Ok(())
        })
    };

    // The sink (api side): consume the results, ack, count.
    let sink_in = api.create_channel().await?;
    sink_in
        .basic_qos(SINK_PREFETCH, BasicQosOptions::default())
        .await?;
    let mut results = sink_in
        .basic_consume(
            topology.results_queue().as_str().into(),
            "bare-sink".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let received = Arc::new(AtomicUsize::new(0));
    let sink = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(delivery) = results.next().await {
                delivery?.ack(BasicAckOptions::default()).await?;
                if received.fetch_add(1, Ordering::SeqCst) + 1 == orders {
                    return anyhow::Ok(Instant::now());
                }
            }
            bail!("the baseline's results consumer ended early")
        })
    };

    // The publisher (api side): up to BARE_PUBLISH_WINDOW confirms outstanding.
    let publisher = confirming_channel(&api).await?;
    let key = Topology::request_key(BARE_VENDOR);
    let started = Instant::now();
    let mut confirms = FuturesUnordered::new();
    for sent in 0..orders {
        while confirms.len() >= BARE_PUBLISH_WINDOW {
            confirms.next().await.context("no confirm pending")??;
        }
        confirms.push(publish(&publisher, &exchange, &key, &request).await?);
        if sent % 1000 == 0 {
            progress.update(&format!(
                "[{:>4}s] bare broker loop: published {sent} · through {}",
                started.elapsed().as_secs(),
                received.load(Ordering::SeqCst)
            ));
        }
    }
    while let Some(confirmed) = confirms.next().await {
        confirmed?;
    }
    let finished = tokio::time::timeout(Duration::from_secs(120), sink)
        .await
        .context("the baseline's messages did not all arrive within 120 s")???;
    relay.abort();
    let _ = api.close(200, "baseline done".into()).await;
    let _ = host.close(200, "baseline done".into()).await;
    Ok(finished - started)
}
