//! What a plugin makes the HOST spend is bounded: the memory it makes the host hold
//! through wasi:http (headers, bodies, handles), the requests it keeps open (and so the
//! host's file descriptors), the rate of its requests to the vendor, the network where a
//! call must work offline (`validate`, `info`), and how long a rate-limited answer pauses
//! the vendor.
//!
//! The hostile fixture (`tests/fixtures/hostile-plugin`, module `host_budget`) misbehaves
//! as its manifest says; these tests load it in process with the host's own runtime and
//! measure this process (its resident memory, its open file descriptors) while the
//! hostile call runs. A test measuring this process runs in a process of its own
//! ([`in_own_process`]), so nothing else this binary runs meanwhile counts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use provisioner_host::bindings::types::{Server, ServerRequest};
use provisioner_host::runtime::{CallError, Plugin, PluginRuntime};
use provisioner_host::wit_convert::fault;
use provisioner_tests::{serve_connections, server_request, write_hostile_manifest};

/// Runs this binary's ignored test `name` in a process of its own and shows what it
/// printed; fails with that output when it failed.
fn in_own_process(name: &str) -> anyhow::Result<()> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(
        output.status.success() && printed.contains("1 passed"),
        "{name} failed in its own process:\n{printed}"
    );
    eprintln!("{printed}");
    Ok(())
}

fn request() -> ServerRequest {
    server_request("0195f7f2-0000-7000-8000-000000000003", "victim")
}

/// Writes the hostile plugin's manifest for `behaviour` (with `top` lines such as grants,
/// more `config` lines and `limits`) and returns its path.
fn manifest(behaviour: &str, top: &str, config: &str, limits: &str) -> anyhow::Result<PathBuf> {
    let what = format!("host-budget-{behaviour}");
    write_hostile_manifest(&what, behaviour, top, config, limits)
}

/// This process's resident memory in bytes (`VmRSS`).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// This process's open file descriptors.
fn open_descriptors() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count() as u64)
}

/// Runs the plugin's `create-server` while sampling `measure`: the call's outcome and how
/// much the highest value seen during the call exceeds the value before it.
async fn create_measuring(
    plugin: &Plugin,
    measure: fn() -> u64,
) -> (Result<Server, CallError>, u64) {
    let before = measure();
    let peak = Peak::of(measure);
    let outcome = plugin.create_server(uuid::Uuid::nil(), &request()).await;
    (outcome, peak.end().saturating_sub(before))
}

/// Checks the plugin still answers `validate` after what it did.
async fn still_answers(plugin: &Plugin) {
    plugin
        .validate(&request())
        .await
        .expect("the plugin still answers");
}

/// Samples `measure` every 10 ms on a thread of its own until dropped; the highest value
/// seen.
struct Peak {
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<u64>>,
}

impl Peak {
    fn of(measure: fn() -> u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = measure();
            while !stopped.load(Ordering::Relaxed) {
                peak = peak.max(measure());
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(measure())
        });
        Self {
            stop,
            sampler: Some(sampler),
        }
    }

    fn end(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler
            .take()
            .and_then(|sampler| sampler.join().ok())
            .unwrap_or(0)
    }
}

/// A plugin that keeps wasi:http `fields` of 124 KiB (the figure) or of 30 KiB
/// (under any per-object limit) makes the host hold their copies: those copies count
/// against a budget that scales with the plugin's `memory_mib`, and running past it is
/// `plugin_memory`. The host's resident memory grows by less than the plugin's 64 MiB
/// while the plugin holds what it made.
#[test]
fn wasi_http_fields_a_plugin_keeps_count_against_its_memory() -> anyhow::Result<()> {
    in_own_process("host_budget::measure_fields_kept_in_the_host")
}

/// The measuring half of [`wasi_http_fields_a_plugin_keeps_count_against_its_memory`].
#[tokio::test]
#[ignore = "measures its process: its outer test runs it in a process of its own"]
async fn measure_fields_kept_in_the_host() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    for (header_bytes, objects) in [(124 * 1024, 4_000), (30 * 1024, 8_000)] {
        let path = manifest(
            "hoard-fields",
            "",
            &format!(
                "header-bytes = \"{header_bytes}\"\nobjects = \"{objects}\"\nhold-ms = \"1500\""
            ),
            "memory_mib = 64\ncall_timeout_ms = 60000",
        )?;
        let plugin = runtime.load(&path).await?;
        let (outcome, grew) = create_measuring(&plugin, resident_bytes).await;
        eprintln!(
            "{objects} fields of {header_bytes} bytes: resident memory grew {} MiB; {:?}",
            grew >> 20,
            outcome.as_ref().map(|server| &server.name)
        );
        match &outcome {
            Err(error @ CallError::MemoryLimit { .. }) => {
                assert_eq!(fault(error).code, "plugin_memory")
            }
            other => panic!("expected plugin_memory, got {other:?}"),
        }
        assert!(
            grew < 64 << 20,
            "the host's resident memory grew {} MiB for a 64 MiB plugin",
            grew >> 20
        );
        still_answers(&plugin).await;
    }
    Ok(())
}

/// A TCP listener on 127.0.0.1 that accepts every connection and keeps it open, reading
/// what comes and never answering; its port and how many connections it holds at most at
/// once.
async fn silent_server() -> anyhow::Result<(u16, Arc<AtomicUsize>)> {
    use tokio::io::AsyncReadExt;

    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let seen = most.clone();
    let port = serve_connections(move |mut stream| {
        let now = open.fetch_add(1, Ordering::SeqCst) + 1;
        seen.fetch_max(now, Ordering::SeqCst);
        let open = open.clone();
        async move {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stream.read(&mut buffer).await {
                if read == 0 {
                    break;
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
        }
    })
    .await?;
    Ok((port, most))
}

/// A call opening 3,000 requests with unfinished bodies to a granted origin gets 16 at
/// most (the default per call); the rest fail for the plugin with the wasi:http error
/// `connection-limit-reached` (not a trap, not a hang), and the host's open file
/// descriptors stay bounded.
#[test]
fn a_call_cannot_open_requests_without_bound() -> anyhow::Result<()> {
    in_own_process("host_budget::measure_unfinished_requests")
}

/// The measuring half of [`a_call_cannot_open_requests_without_bound`].
#[tokio::test]
#[ignore = "measures its process: its outer test runs it in a process of its own"]
async fn measure_unfinished_requests() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let (port, most) = silent_server().await?;
    let plugin = opener(&runtime, port, 3000, "").await?;
    let (outcome, grew) = create_measuring(&plugin, open_descriptors).await;
    let held = most.load(Ordering::SeqCst);
    eprintln!(
        "3000 unfinished requests: open descriptors grew by {grew}, the origin held {held} \
         at once; {:?}",
        outcome.as_ref().map(|server| &server.name)
    );
    let answer = outcome?.name;
    assert!(
        answer.contains("ConnectionLimitReached"),
        "the plugin was not told the limit: {answer}"
    );
    assert!(
        answer.contains("refused 2984"),
        "all but 16 are refused: {answer}"
    );
    assert!(held <= 16, "the origin held {held} connections at once");
    // Two descriptors per request here (the host's socket and this test's listener's),
    // plus room for what other work in this process opens meanwhile.
    assert!(grew <= 2 * 16 + 64, "open descriptors grew by {grew}");
    still_answers(&plugin).await;
    Ok(())
}

/// A one-shot HTTP server on 127.0.0.1 answering every request `200` with an empty body and
/// closing the connection; its port and how many requests reached it.
async fn counting_server() -> anyhow::Result<(u16, Arc<AtomicUsize>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let port = serve_connections(move |mut stream| {
        let counted = counted.clone();
        async move {
            let mut buffer = [0u8; 4096];
            if matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    })
    .await?;
    Ok((port, hits))
}

/// Loads the `flood` hostile plugin against a [`counting_server`] of its own, sending for
/// `flood_ms`, with `limits`; the plugin and the server's count of requests.
async fn flooder(
    runtime: &PluginRuntime,
    flood_ms: u32,
    limits: &str,
) -> anyhow::Result<(Plugin, Arc<AtomicUsize>)> {
    let (port, hits) = counting_server().await?;
    let origin = format!("http://127.0.0.1:{port}");
    let path = manifest(
        "flood",
        &format!("allowed_hosts = [{origin:?}]"),
        &format!("target-url = {origin:?}\nflood-ms = \"{flood_ms}\""),
        limits,
    )?;
    Ok((runtime.load(&path).await?, hits))
}

/// `requests_per_second` paces the plugin's outgoing requests, not its calls: one call
/// sending requests as fast as they are answered for two seconds reaches the origin no
/// more often than the bucket allows (a second's burst, then the rate).
#[tokio::test]
async fn requests_per_second_paces_the_plugins_requests() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let (plugin, hits) = flooder(
        &runtime,
        2000,
        "requests_per_second = 5\ncall_timeout_ms = 20000",
    )
    .await?;
    let started = Instant::now();
    let answer = plugin
        .create_server(uuid::Uuid::nil(), &request())
        .await?
        .name;
    let took = started.elapsed().as_secs_f64();
    let received = hits.load(Ordering::SeqCst);
    eprintln!(
        "a 2 s flood at 5 requests per second: the origin received {received} in {took:.2} s ({answer})"
    );
    // The burst (5), then 5 a second; one more for a request waiting at the end.
    let allowed = 5.0 + 5.0 * took + 1.0;
    assert!(
        received as f64 <= allowed,
        "the origin received {received} requests in {took:.2} s at 5 per second"
    );
    assert!(received >= 5, "the burst went through: {received}");
    Ok(())
}

/// `validate` and `info` may not use the network: a request in them is refused by the host
/// (the plugin sees `HTTP-request-denied`), never reaches the origin although the manifest
/// grants it, and is still counted (the conformance kit reads the count). A `validate` that
/// fails for it is reported as `capability_denied`.
#[tokio::test]
async fn validate_and_info_may_not_use_the_network() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let (port, hits) = counting_server().await?;
    let origin = format!("http://127.0.0.1:{port}");
    let grant = format!("allowed_hosts = [{origin:?}]");
    let target = format!("target-url = {origin:?}");

    let plugin = runtime
        .load(&manifest("network-in-info", &grant, &target, "")?)
        .await?;
    assert_eq!(
        plugin.info_cached().display_name,
        "network in info: refused"
    );
    assert!(plugin.outbound_requests() >= 1, "the attempt is counted");

    let plugin = runtime
        .load(&manifest("network-in-validate", &grant, &target, "")?)
        .await?;
    let error = plugin
        .validate(&request())
        .await
        .expect_err("validate could not reach its vendor");
    assert!(
        matches!(error, CallError::CapabilityDenied { .. }),
        "expected capability_denied, got {error}"
    );
    let fault = fault(&error);
    assert_eq!(fault.code, "capability_denied");
    assert!(fault.message.contains("validate"), "{}", fault.message);
    assert!(plugin.outbound_requests() >= 1, "the attempt is counted");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the origin was reached");

    // The same grant serves the calls that talk to the vendor.
    let plugin = runtime
        .load(&manifest("call-target", &grant, &target, "")?)
        .await?;
    let server = plugin.create_server(uuid::Uuid::nil(), &request()).await?;
    assert_eq!(server.name, "reached");
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    Ok(())
}

/// A reloaded plugin (a replaced manifest, a rotated secret) keeps its vendor's 429 pause: a
/// reload does not let the host send at once to a vendor that asked it to wait.
#[tokio::test]
async fn a_reload_keeps_the_vendors_pause() -> anyhow::Result<()> {
    use provisioner_host::plugin_folder::PluginFolder;

    let path = manifest("rate-limited-forever", "", "", "")?;
    let dir = path.parent().expect("in a folder").to_path_buf();
    let mut catalog = PluginFolder::new(std::sync::Arc::new(PluginRuntime::new()?), dir);
    catalog.rescan().await?;
    let vendor = "hostile-rate-limited-forever";
    let plugin = catalog.plugins()[vendor].clone();
    plugin
        .create_server(uuid::Uuid::nil(), &request())
        .await
        .expect_err("rate limited");
    assert!(plugin.paused_for() > Duration::from_secs(590));

    let mut text = std::fs::read_to_string(&path)?;
    text = text.replace("[limits]", "[limits]\ncall_timeout_ms = 29000");
    std::fs::write(&path, text)?;
    assert!(catalog.rescan().await?, "the changed manifest is reloaded");
    let reloaded = catalog.plugins()[vendor].clone();
    assert!(!std::sync::Arc::ptr_eq(&plugin, &reloaded), "a new version");
    let paused = reloaded.paused_for();
    assert!(
        paused > Duration::from_secs(590),
        "the reloaded plugin forgot the vendor's pause: {paused:?}"
    );
    Ok(())
}

/// A rate-limited answer asking for `u64::MAX` milliseconds pauses the vendor for ten
/// minutes at most: the plugin's throttle admits calls again by then.
#[tokio::test]
async fn a_rate_limit_pause_is_capped() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = runtime
        .load(&manifest("rate-limited-forever", "", "", "")?)
        .await?;
    let error = plugin
        .create_server(uuid::Uuid::nil(), &request())
        .await
        .expect_err("rate limited");
    assert_eq!(fault(&error).code, "rate_limited");
    let paused = plugin.paused_for();
    eprintln!("rate-limited(u64::MAX) pauses the vendor for {paused:?}");
    assert!(
        paused <= Duration::from_secs(600),
        "the vendor is paused for {paused:?}"
    );
    assert!(
        paused > Duration::from_secs(590),
        "the pause holds: {paused:?}"
    );
    Ok(())
}

/// wasmtime keeps any length of authority or method a plugin sets on a request; the host
/// refuses long ones (the plugin's setter fails, it is not a trap), so 300 requests with a
/// 1 MiB authority or method each cannot park 300 MiB in the host.
#[test]
fn long_authorities_and_methods_are_refused() -> anyhow::Result<()> {
    in_own_process("host_budget::measure_long_request_strings")
}

/// The measuring half of [`long_authorities_and_methods_are_refused`].
#[tokio::test]
#[ignore = "measures its process: its outer test runs it in a process of its own"]
async fn measure_long_request_strings() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    for what in ["authority", "method"] {
        let path = manifest(
            "park-strings",
            "",
            &format!("what = {what:?}\nobjects = \"300\"\nbytes = \"1048576\"\nhold-ms = \"1000\""),
            "memory_mib = 64\ncall_timeout_ms = 60000",
        )?;
        let plugin = runtime.load(&path).await?;
        let (outcome, grew) = create_measuring(&plugin, resident_bytes).await;
        eprintln!(
            "300 requests with a 1 MiB {what}: resident memory grew {} MiB; {:?}",
            grew >> 20,
            outcome.as_ref().map(|server| &server.name)
        );
        assert_eq!(outcome?.name, "accepted 0 of 300", "{what}");
        assert!(grew < 64 << 20, "grew {} MiB", grew >> 20);
    }
    Ok(())
}

/// Loads the `open-many` hostile plugin against the silent server on `port`, with `limits`.
async fn opener(
    runtime: &PluginRuntime,
    port: u16,
    requests: u32,
    limits: &str,
) -> anyhow::Result<Plugin> {
    let path = manifest(
        "open-many",
        &format!("allowed_hosts = [\"http://127.0.0.1:{port}\"]"),
        &format!("target = \"127.0.0.1:{port}\"\nrequests = \"{requests}\"\nhold-ms = \"1500\""),
        &format!("call_timeout_ms = 60000\n{limits}"),
    )?;
    runtime.load(&path).await
}

/// A plugin's calls share its `max_open_requests`: two calls allowed 8 each, of a plugin
/// allowed 12, never hold more than 12 connections to the origin at once. The requests
/// beyond wait (they are not refused) and both calls answer.
#[tokio::test]
async fn a_plugins_calls_share_its_open_requests() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let (port, most) = silent_server().await?;
    let plugin = opener(
        &runtime,
        port,
        100,
        "max_open_requests_per_call = 8\nmax_open_requests = 12",
    )
    .await?;
    let request = request();
    let (first, second) = tokio::join!(
        plugin.create_server(uuid::Uuid::nil(), &request),
        plugin.create_server(uuid::Uuid::nil(), &request)
    );
    let held = most.load(Ordering::SeqCst);
    eprintln!("two calls, 8 each, 12 per plugin: the origin held {held} at once");
    for answer in [first?.name, second?.name] {
        assert!(answer.contains("pending 8, refused 92"), "{answer}");
    }
    assert!(held <= 12, "the origin held {held} connections at once");
    Ok(())
}

/// The host's `max_open_requests` bounds all plugins together, and a manifest may not ask
/// for more than a quarter of it (one plugin keeping its requests open leaves the rest to the
/// other vendors).
#[tokio::test]
async fn the_host_bounds_the_open_requests_of_all_plugins() -> anyhow::Result<()> {
    let runtime = PluginRuntime::with_limits(provisioner_host::runtime::RuntimeLimits {
        max_open_requests: 20,
        ..Default::default()
    })?;
    let (port, most) = silent_server().await?;
    let refused = opener(&runtime, port, 100, "")
        .await
        .err()
        .expect("a manifest asking for 64 open requests is refused by a host allowing 20");
    assert!(
        format!("{refused:#}").contains("--plugin-max-open-requests"),
        "{refused:#}"
    );
    let too_much = "max_open_requests_per_call = 6\nmax_open_requests = 6";
    let refused = opener(&runtime, port, 100, too_much)
        .await
        .err()
        .expect("a manifest asking for 6 of a host's 20 (more than a quarter) is refused");
    assert!(format!("{refused:#}").contains("quarter"), "{refused:#}");
    let limits = "max_open_requests_per_call = 5\nmax_open_requests = 5";
    let mut plugins = Vec::new();
    for _ in 0..5 {
        plugins.push(opener(&runtime, port, 100, limits).await?);
    }
    let request = request();
    let calls = plugins
        .iter()
        .map(|plugin| plugin.create_server(uuid::Uuid::nil(), &request));
    let answers = futures_util::future::join_all(calls).await;
    let held = most.load(Ordering::SeqCst);
    eprintln!("five plugins, 5 each, 20 per host: the origin held {held} at once");
    for answer in answers {
        answer?;
    }
    assert!(held <= 20, "the origin held {held} connections at once");
    Ok(())
}

/// A request stops counting as open once its response is read: a call allowed one open
/// request sends many, one after another.
#[tokio::test]
async fn a_request_read_to_its_end_is_no_longer_open() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let (plugin, hits) = flooder(
        &runtime,
        500,
        "max_open_requests_per_call = 1\nmax_open_requests = 1",
    )
    .await?;
    let answer = plugin
        .create_server(uuid::Uuid::nil(), &request())
        .await?
        .name;
    let received = hits.load(Ordering::SeqCst);
    assert!(
        received >= 10,
        "only {received} requests went out: {answer}"
    );
    assert_eq!(answer, format!("answered {received}"));
    Ok(())
}
