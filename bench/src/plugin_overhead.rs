//! Plugin overhead: what the host adds to one plugin call, beside bare wasmtime in the same
//! run.
//!
//! Both sides call `validate` of a trivial plugin (the hostile fixture with no misbehaviour:
//! it answers at once, no I/O), one call after another, `--calls` times after `--warmup`:
//! - **host**: `Plugin::validate` as the host runs every call: a slot of the instance pool,
//!   a fresh store with the sandbox state (WASI context, resource table, memory limiter,
//!   outbound grant), the epoch deadline, the call budget's timeout, instantiate from the
//!   `InstancePre`, call, drop;
//! - **bare**: wasmtime alone: an engine with the default (on-demand) allocator, a linker
//!   with the same imports, one `InstancePre`, then per call a store, instantiate, call,
//!   drop;
//! - **bare, pooled**: the same with the pooling allocator the host's engine uses, so the
//!   difference to **host** is what the host itself adds (slot semaphore, sandbox state,
//!   limiter, epoch deadline, timeout).
//!
//! Targets (issue 7): host p99 <= 50 us, and <= 2x the bare p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use provisioner_host::bindings::current::ProviderPluginPre;
use provisioner_host::bindings::types::ServerRequest;
use provisioner_host::outbound::{OpenRequestLimits, OutboundClient, tls_trusting};
use provisioner_host::runtime::PluginRuntime;
use provisioner_host::sandbox::{Grants, Network, PluginState};
use provisioner_host::throttle::VendorThrottle;
use provisioner_tests::test_plugin_component;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use provisioner_bench::report::{Progress, Summary, Target};
use provisioner_bench::stats::percentile;

/// The plugin-overhead benchmark's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Calls measured on each side.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
    /// Calls made first on each side and not measured.
    #[arg(long, default_value_t = 1_000)]
    warmup: usize,
}

fn request() -> ServerRequest {
    ServerRequest {
        idempotency_key: "bench".into(),
        name: "bench".into(),
        region: "r".into(),
        size: "s".into(),
        image: "i".into(),
        ssh_keys: Vec::new(),
        user_data: None,
        labels: Vec::new(),
    }
}

/// The trivial plugin's manifest, written to a temporary folder.
fn manifest() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench-overhead-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("trivial.toml");
    std::fs::write(
        &path,
        format!(
            "vendor = \"trivial\"\ncomponent = {:?}\n[config]\nvendor-id = \"trivial\"\n\
             behaviour = \"none\"\n",
            test_plugin_component("hostile").display().to_string()
        ),
    )?;
    Ok(path)
}

/// Times `calls` runs of `call` after `warmup` unmeasured ones; sorted.
async fn timed<F: AsyncFnMut() -> anyhow::Result<()>>(
    mut call: F,
    warmup: usize,
    calls: usize,
    progress: &mut Progress,
    side: &str,
) -> anyhow::Result<Vec<Duration>> {
    for _ in 0..warmup {
        call().await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for n in 0..calls {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed());
        if n % 1000 == 0 {
            progress.update(&format!("{side}: {n} of {calls} calls"));
        }
    }
    samples.sort();
    Ok(samples)
}

/// Runs the three sides and summarises.
pub async fn run(args: Args) -> anyhow::Result<Summary> {
    let calls = args.calls.max(1);
    let mut progress = Progress::new();
    let path = manifest()?;
    let request = request();

    let runtime = PluginRuntime::new()?;
    let plugin = runtime
        .load(&path)
        .await
        .context("loading the trivial plugin")?;
    let host = timed(
        async || Ok(plugin.validate(&request).await?),
        args.warmup,
        calls,
        &mut progress,
        "host",
    )
    .await?;
    let bare = bare_calls(Config::new(), &request, &args, &mut progress, "bare").await?;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(16)
        .total_core_instances(128)
        .total_memories(32)
        .total_tables(64)
        .total_stacks(16)
        .max_memory_size(256 << 20);
    let mut pooled_config = Config::new();
    pooled_config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let pooled = bare_calls(
        pooled_config,
        &request,
        &args,
        &mut progress,
        "bare, pooled",
    )
    .await?;
    progress.finish();
    let _ = std::fs::remove_dir_all(path.parent().unwrap_or(&path));

    let p99 = |samples: &[Duration]| percentile(samples, 0.99);
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let mut summary = Summary::new("plugin-overhead");
    summary.setting("calls", calls as u64);
    summary.setting("warmup", args.warmup as u64);
    summary.setting("plugin", "tests/fixtures/hostile-plugin, validate (no I/O)");
    let mut figure =
        |key, label, value, unit, target| summary.figure(key, label, value, unit, target);
    figure(
        "host_p50_us",
        "host call p50",
        micros(percentile(&host, 0.50)),
        "us",
        None,
    );
    figure(
        "host_p99_us",
        "host call p99",
        micros(p99(&host)),
        "us",
        Some(Target::AtMost(50.0)),
    );
    figure(
        "bare_p50_us",
        "bare wasmtime p50",
        micros(percentile(&bare, 0.50)),
        "us",
        None,
    );
    figure(
        "bare_p99_us",
        "bare wasmtime p99",
        micros(p99(&bare)),
        "us",
        None,
    );
    figure(
        "p99_ratio",
        "host p99 / bare p99",
        p99(&host).as_secs_f64() / p99(&bare).as_secs_f64(),
        "",
        Some(Target::AtMost(2.0)),
    );
    figure(
        "pooled_p50_us",
        "bare wasmtime, pooling, p50",
        micros(percentile(&pooled, 0.50)),
        "us",
        None,
    );
    figure(
        "pooled_p99_us",
        "bare wasmtime, pooling, p99",
        micros(p99(&pooled)),
        "us",
        None,
    );
    figure(
        "pooled_p99_ratio",
        "host p99 / pooled bare p99",
        p99(&host).as_secs_f64() / p99(&pooled).as_secs_f64(),
        "",
        None,
    );
    Ok(summary)
}

/// Bare wasmtime calls of the trivial plugin with an engine of `config`.
async fn bare_calls(
    config: Config,
    request: &ServerRequest,
    args: &Args,
    progress: &mut Progress,
    side: &str,
) -> anyhow::Result<Vec<Duration>> {
    let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
    let mut linker: Linker<PluginState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(anyhow::Error::from)?;
    provisioner_host::bindings::current::ProviderPlugin::add_to_linker::<_, HasSelf<_>>(
        &mut linker,
        |state| state,
    )
    .map_err(anyhow::Error::from)?;
    let component = Component::from_file(&engine, test_plugin_component("hostile"))
        .map_err(anyhow::Error::from)?;
    let pre = ProviderPluginPre::new(
        linker
            .instantiate_pre(&component)
            .map_err(anyhow::Error::from)?,
    )
    .map_err(anyhow::Error::from)?;
    let grants = Arc::new(Grants {
        vendor: "trivial".into(),
        config: [("behaviour".to_string(), "none".to_string())].into(),
        secrets: Default::default(),
        origins: Vec::new(),
        memory_bytes: 64 << 20,
        client: OutboundClient::new(tls_trusting(Vec::new())?),
        outbound_requests: Default::default(),
        throttle: VendorThrottle::new(None),
        open_requests: OpenRequestLimits::default(),
        cache: provisioner_host::cache::PluginCache::new(
            provisioner_host::manifest::Limits::default().cache(),
        ),
    });
    timed(
        async || {
            let mut store = Store::new(
                &engine,
                PluginState::new(grants.clone(), None, Network::Offline),
            );
            let instance = pre
                .instantiate_async(&mut store)
                .await
                .map_err(anyhow::Error::from)?;
            instance
                .provisioner_provider_provider()
                .call_validate(&mut store, request)
                .await
                .map_err(anyhow::Error::from)?
                .map_err(|error| anyhow::anyhow!("{error:?}"))
        },
        args.warmup,
        args.calls.max(1),
        progress,
        side,
    )
    .await
}
