//! What the create lease costs: `--leases` acquire-and-release cycles of the host's
//! [`Leases`] for distinct orders, `--concurrency` at a time, in this process, beside the
//! broker operations of the first lease design (an exclusive, auto-deleted queue declared
//! and deleted per create, on pooled channels) in the same run. For each: wall time per
//! lease, this process's CPU per lease (the host's share), RabbitMQ's CPU per lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::QueueDeleteOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use provisioner_contract::Topology;
use provisioner_contract::topology::declare_exclusive_queue;
use provisioner_host::worker::lease::Leases;
use provisioner_tests::AMQP_URL;
use uuid::Uuid;

use provisioner_bench::probe;
use provisioner_bench::report::{Progress, Summary};

/// The lease benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Leases taken and given back per side.
    #[arg(long, default_value_t = 5_000)]
    leases: usize,
    /// Leases in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// What one side cost.
struct Cost {
    wall: Duration,
    own_cpu: f64,
    broker_cpu: Option<f64>,
}

/// Runs `leases` calls of `one`, `concurrency` at a time, and what they cost.
async fn measure<F, Fut>(leases: usize, concurrency: usize, mut one: F) -> anyhow::Result<Cost>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let own = || probe::sample(std::process::id()).map_or(0.0, |s| s.cpu_secs);
    let (own_before, broker_before) = (own(), probe::broker_cpu_secs());
    let started = Instant::now();
    let mut running = FuturesUnordered::new();
    for _ in 0..leases {
        while running.len() >= concurrency {
            running.next().await.context("nothing running")??;
        }
        running.push(one());
    }
    while let Some(done) = running.next().await {
        done?;
    }
    Ok(Cost {
        wall: started.elapsed(),
        own_cpu: own() - own_before,
        broker_cpu: probe::broker_cpu_secs()
            .zip(broker_before)
            .map(|(after, before)| after - before),
    })
}

/// The first lease design: declare an exclusive, auto-deleted queue named after the order
/// on a pooled channel, then delete it.
async fn queue_lease(
    connection: &Connection,
    pool: &std::sync::Mutex<Vec<Channel>>,
    topology: &Topology,
) -> anyhow::Result<()> {
    let pooled = pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
    let channel = match pooled {
        Some(channel) => channel,
        None => connection.create_channel().await?,
    };
    let queue = format!("{}provision.lease.{}", topology.prefix(), Uuid::new_v4());
    declare_exclusive_queue(&channel, &queue, FieldTable::default()).await?;
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    pool.lock().unwrap_or_else(|e| e.into_inner()).push(channel);
    Ok(())
}

/// Runs the benchmark.
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .with_context(|| format!("connecting to RabbitMQ at {AMQP_URL}"))?;
    let id = Uuid::new_v4().simple().to_string();
    let topology = Topology::with_prefix(format!("bench-{}.", &id[..12]));
    let mut progress = Progress::new();

    progress.update("lock-queue leases (current)");
    let leases = Arc::new(Leases::default());
    let mut orders = Vec::with_capacity(args.leases);
    let current = measure(args.leases, args.concurrency, || {
        let order = Uuid::now_v7();
        orders.push(order);
        let (leases, connection, topology) = (leases.clone(), &connection, &topology);
        async move {
            leases
                .acquire(connection, topology, order, Duration::from_secs(30))
                .await?
                .release()
                .await;
            Ok(())
        }
    })
    .await;

    progress.update("queue-per-create leases (the first design)");
    let pool = std::sync::Mutex::new(Vec::new());
    let per_create = measure(args.leases, args.concurrency, || {
        queue_lease(&connection, &pool, &topology)
    })
    .await;
    progress.finish();

    // The lock queues this run declared.
    if let Ok(channel) = connection.create_channel().await {
        let mut queues: Vec<String> = orders.iter().map(|o| topology.lease_queue(*o)).collect();
        queues.sort();
        queues.dedup();
        for queue in queues {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "bench done".into()).await;
    let (current, per_create) = (current?, per_create?);

    let mut summary = Summary::new("lease");
    summary.setting("leases", args.leases);
    summary.setting("concurrency", args.concurrency);
    let per = |value: f64| value * 1e6 / args.leases as f64;
    for (side, name, cost) in [
        ("lock_queue", "lock-queue lease", &current),
        ("queue_per_create", "queue-per-create lease", &per_create),
    ] {
        summary.figure(
            format!("{side}_per_sec"),
            format!("{name}: leases per second"),
            args.leases as f64 / cost.wall.as_secs_f64(),
            "/s",
            None,
        );
        summary.figure(
            format!("{side}_own_cpu_us"),
            format!("{name}: host-side CPU per lease"),
            per(cost.own_cpu),
            "us",
            None,
        );
        if let Some(broker) = cost.broker_cpu {
            summary.figure(
                format!("{side}_broker_cpu_us"),
                format!("{name}: RabbitMQ CPU per lease"),
                per(broker),
                "us",
                None,
            );
        }
    }
    Ok(summary)
}
