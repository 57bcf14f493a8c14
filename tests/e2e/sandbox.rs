//! Hostile plugins are contained: each misbehaviour fails only its own call, with the fault
//! it deserves, and the host keeps serving the plugin and every other one. These load the
//! components with the host's own runtime, in process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use provisioner_host::plugin_folder::PluginFolder;
use provisioner_host::runtime::{CallError, Plugin, PluginRuntime, RuntimeLimits};
use provisioner_host::wit_convert::fault;
use provisioner_tests::{
    plugin_component, scratch_dir, serve_connections, server_request, test_plugin_component,
    write_hostile_manifest, write_manifest_in,
};

use provisioner_host::bindings::WitVersion;
use provisioner_host::bindings::types::ServerRequest;

fn request() -> ServerRequest {
    server_request("0195f7f2-0000-7000-8000-000000000001", "victim")
}

/// Writes a manifest for the hostile plugin with `behaviour` and loads it.
async fn hostile(runtime: &PluginRuntime, behaviour: &str, limits: &str) -> anyhow::Result<Plugin> {
    hostile_with(runtime, behaviour, "", limits).await
}

/// [`hostile`] with more `[config]` lines (`key = "value"`, one per line).
async fn hostile_with(
    runtime: &PluginRuntime,
    behaviour: &str,
    config: &str,
    limits: &str,
) -> anyhow::Result<Plugin> {
    let path = write_hostile_manifest(
        &format!("sandbox-{behaviour}"),
        behaviour,
        "allowed_hosts = [\"http://127.0.0.1:9\"]",
        config,
        limits,
    )?;
    runtime.load(&path).await
}

fn tempdir(name: &str) -> anyhow::Result<PathBuf> {
    scratch_dir(&format!("sandbox-{name}"))
}

/// Writes the manifest `<vendor>.toml` in `dir` for the component at `component`, with
/// `more` lines after, and returns its path.
fn write_manifest(
    dir: &Path,
    vendor: &str,
    component: &str,
    more: &str,
) -> anyhow::Result<PathBuf> {
    let manifest = format!("vendor = {vendor:?}\ncomponent = {component:?}\n{more}");
    write_manifest_in(dir, vendor, &manifest)
}

/// Runs the hostile `create-server` and checks the host still serves the same plugin after.
async fn contained(plugin: &Plugin) -> CallError {
    let error = plugin
        .create_server(uuid::Uuid::nil(), &request())
        .await
        .expect_err("the hostile call must fail");
    plugin
        .validate(&request())
        .await
        .expect("the plugin still answers after the hostile call");
    error
}

/// Loads the hostile plugin with `behaviour` and `limits` on a runtime of its own and runs
/// its `create-server` ([`contained`]): the error the call failed with.
async fn hostile_call_error(behaviour: &str, limits: &str) -> anyhow::Result<CallError> {
    let runtime = PluginRuntime::new()?;
    let plugin = hostile(&runtime, behaviour, limits).await?;
    Ok(contained(&plugin).await)
}

/// The name of the server the plugin's `create-server` answers.
async fn created_name(plugin: &Plugin) -> anyhow::Result<String> {
    Ok(plugin
        .create_server(uuid::Uuid::nil(), &request())
        .await?
        .name)
}

/// An infinite loop ends at the call budget with `plugin_timeout`.
#[tokio::test]
async fn infinite_loop_times_out() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = hostile(&runtime, "spin", "call_timeout_ms = 500").await?;
    let started = Instant::now();
    let error = contained(&plugin).await;
    assert!(matches!(error, CallError::Timeout { .. }), "{error}");
    assert_eq!(fault(&error).code, "plugin_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the loop was not stopped"
    );
    Ok(())
}

/// Sleeping forever ends at the call budget with `plugin_timeout`.
#[tokio::test]
async fn sleeping_forever_times_out() -> anyhow::Result<()> {
    let error = hostile_call_error("sleep", "call_timeout_ms = 500").await?;
    assert_eq!(fault(&error).code, "plugin_timeout", "{error}");
    Ok(())
}

/// A memory bomb meets the manifest's cap: `plugin_memory`.
#[tokio::test]
async fn memory_bomb_hits_the_cap() -> anyhow::Result<()> {
    let error = hostile_call_error("allocate", "memory_mib = 16").await?;
    assert!(
        matches!(error, CallError::MemoryLimit { limit_mib: 16, .. }),
        "{error}"
    );
    assert_eq!(fault(&error).code, "plugin_memory");
    Ok(())
}

/// A panic is a trap: `plugin_trap`, and the next call gets a fresh instance.
#[tokio::test]
async fn panic_is_a_trap() -> anyhow::Result<()> {
    let error = hostile_call_error("panic", "").await?;
    assert!(matches!(error, CallError::Trap { .. }), "{error}");
    assert_eq!(fault(&error).code, "plugin_trap");
    Ok(())
}

/// A request to an origin the manifest does not grant is refused to the plugin (not a
/// trap) and reported as `capability_denied` naming the origin.
#[tokio::test]
async fn request_to_an_ungranted_host_is_denied() -> anyhow::Result<()> {
    let error = hostile_call_error("call-denied", "").await?;
    match &error {
        CallError::CapabilityDenied { origin, .. } => assert_eq!(origin, "http://203.0.113.9:9"),
        other => panic!("expected capability_denied, got {other}"),
    }
    let fault = fault(&error);
    assert_eq!(fault.code, "capability_denied");
    assert!(fault.message.contains("203.0.113.9"), "{}", fault.message);
    Ok(())
}

/// A huge answer is refused by the host where it enters (`plugin_bad_answer`), and the
/// plugin serves the next call.
#[tokio::test]
async fn oversized_answer_is_refused() -> anyhow::Result<()> {
    let error = hostile_call_error("huge-answer", "memory_mib = 64").await?;
    assert_eq!(fault(&error).code, "plugin_bad_answer", "{error}");
    Ok(())
}

/// While one plugin spins until its budget, the same runtime serves another plugin at once.
#[tokio::test]
async fn a_spinning_plugin_does_not_starve_the_others() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let spinner = hostile(&runtime, "spin", "call_timeout_ms = 3000").await?;
    let good = hostile(&runtime, "none", "").await?;
    let spin_request = request();
    let spinning = spinner.create_server(uuid::Uuid::nil(), &spin_request);
    let served = async {
        let started = Instant::now();
        let server = good.create_server(uuid::Uuid::nil(), &request()).await;
        (server, started.elapsed())
    };
    let (spun, (server, took)) = tokio::join!(spinning, served);
    assert!(matches!(spun, Err(CallError::Timeout { .. })));
    assert_eq!(server?.name, "victim");
    assert!(
        took < Duration::from_millis(2500),
        "the good call waited {took:?} for the spinner"
    );
    Ok(())
}

/// A manifest naming a component that is not a provider plugin is refused with the file
/// named; the catalog goes on loading the real ones.
#[tokio::test]
async fn a_component_that_is_not_a_plugin_is_refused_at_load() -> anyhow::Result<()> {
    let runtime = Arc::new(PluginRuntime::new()?);
    let dir = tempdir("not-a-plugin")?;
    std::fs::write(dir.join("junk.wasm"), b"\0asm\x0d\0\x01\0")?;
    let junk = write_manifest(&dir, "junk", "junk.wasm", "")?;
    let error = runtime.load(&junk).await.err().expect("refused");
    assert!(format!("{error:#}").contains("junk.wasm"), "{error:#}");
    let hetzner = plugin_component("hetzner").display().to_string();
    write_manifest(&dir, "hetzner", &hetzner, "")?;
    let mut catalog = PluginFolder::new(runtime, dir);
    catalog.rescan().await?;
    let vendors: Vec<String> = catalog.plugins().keys().cloned().collect();
    assert_eq!(vendors, ["hetzner"]);
    Ok(())
}

/// The catalog follows the folder: a new plugin loads, a changed one reloads, a broken
/// replacement leaves the old one serving, a removed one goes.
#[tokio::test]
async fn the_catalog_follows_drop_ins_replacements_and_removals() -> anyhow::Result<()> {
    let runtime = Arc::new(PluginRuntime::new()?);
    let dir = tempdir("catalog")?;
    let mut catalog = PluginFolder::new(runtime, dir.clone());
    assert!(!catalog.rescan().await?, "an empty folder changes nothing");
    let component = test_plugin_component("hostile").display().to_string();
    let manifest = |extra: &str| {
        format!(
            "vendor = \"dropped\"\ncomponent = {component:?}\n[config]\nvendor-id = \"dropped\"\n{extra}"
        )
    };
    let path = dir.join("dropped.toml");
    std::fs::write(&path, manifest(""))?;
    assert!(catalog.rescan().await?, "a new plugin is picked up");
    let first = catalog.plugins()["dropped"].clone();
    assert!(!catalog.rescan().await?, "nothing changed");

    // Replace: a different file (size and time) is reloaded.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, manifest("behaviour = \"none\"\n"))?;
    assert!(catalog.rescan().await?);
    let second = catalog.plugins()["dropped"].clone();
    assert!(
        !Arc::ptr_eq(&first, &second),
        "the replacement is a new plugin"
    );

    // A broken replacement is refused and the working version keeps serving.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(
        &path,
        "vendor = \"dropped\"\ncomponent = \"missing.wasm\"\n",
    )?;
    assert!(!catalog.rescan().await?);
    assert!(Arc::ptr_eq(&catalog.plugins()["dropped"], &second));

    std::fs::remove_file(&path)?;
    assert!(catalog.rescan().await?);
    assert!(catalog.plugins().is_empty());
    Ok(())
}

/// A component built against another major version of the WIT package is refused at load,
/// naming the file and the world it lacks (the version policy in wit/README.md).
#[tokio::test]
async fn a_plugin_for_another_major_wit_version_is_refused() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let component = test_plugin_component("future").display().to_string();
    let path = write_manifest(&tempdir("future")?, "future", &component, "")?;
    let error = runtime.load(&path).await.err().expect("refused");
    let message = format!("{error:#}");
    assert!(message.contains("future.wasm"), "{message}");
    assert!(
        message.contains("does not implement the provisioner:provider/provider-plugin world"),
        "{message}"
    );
    Ok(())
}

/// A component of the previous minor (0.1, without `list-servers`) still loads and
/// answers through the current host; asked to list, the host says the plugin cannot.
#[tokio::test]
async fn a_plugin_of_the_previous_minor_wit_version_still_loads() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let component = test_plugin_component("legacy").display().to_string();
    let path = write_manifest(&tempdir("legacy")?, "legacy", &component, "")?;
    let plugin = runtime.load(&path).await?;
    assert_eq!(plugin.wit_version(), WitVersion::V0_1);
    let server = plugin.create_server(uuid::Uuid::nil(), &request()).await?;
    assert!(server.vendor_id.starts_with("legacy-"), "{server:?}");
    assert!(plugin.list_servers().await?.is_none());

    let current = hostile(&runtime, "none", "").await?;
    assert_eq!(current.wit_version(), WitVersion::V0_6);
    assert_eq!(
        current.list_servers().await?.map(|servers| servers.len()),
        Some(0)
    );
    Ok(())
}

/// A manifest naming a CA certificate file that is missing or holds no certificate is
/// refused at load, naming the file.
#[tokio::test]
async fn unreadable_ca_certificates_are_refused_at_load() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let dir = tempdir("ca")?;
    std::fs::write(dir.join("empty.pem"), "not a certificate\n")?;
    let hetzner = plugin_component("hetzner").display().to_string();
    for ca in ["missing.pem", "empty.pem"] {
        let path = write_manifest(
            &dir,
            "hetzner",
            &hetzner,
            &format!("ca_certificates = [{ca:?}]\n"),
        )?;
        let error = runtime.load(&path).await.err().expect("refused");
        assert!(format!("{error:#}").contains(ca), "{error:#}");
    }
    Ok(())
}

/// Calls beyond the instance pool's slots wait for a slot instead of failing: six calls
/// that each sleep to their budget on a runtime with two slots all end `plugin_timeout`
/// (none `plugin_trap` from an exhausted pool), and the plugin answers afterwards.
#[tokio::test]
async fn calls_beyond_the_pool_wait_for_a_slot() -> anyhow::Result<()> {
    let runtime = PluginRuntime::with_limits(RuntimeLimits {
        concurrent_calls: 2,
        ..RuntimeLimits::default()
    })?;
    let plugin = hostile(&runtime, "sleep", "call_timeout_ms = 300").await?;
    let request = request();
    let calls = (0..6).map(|_| plugin.create_server(uuid::Uuid::nil(), &request));
    for outcome in futures_util::future::join_all(calls).await {
        match outcome {
            Err(error @ CallError::Timeout { .. }) => {
                assert_eq!(fault(&error).code, "plugin_timeout")
            }
            other => panic!("expected plugin_timeout, got {other:?}"),
        }
    }
    plugin.validate(&request).await?;
    Ok(())
}

/// A manifest asking for more memory per call than the host's pool allows is refused at
/// load, naming the file and the limit.
#[tokio::test]
async fn memory_beyond_the_hosts_maximum_is_refused_at_load() -> anyhow::Result<()> {
    let runtime = PluginRuntime::with_limits(RuntimeLimits {
        max_memory_mib: 32,
        ..RuntimeLimits::default()
    })?;
    let error = hostile(&runtime, "none", "memory_mib = 64")
        .await
        .err()
        .expect("refused");
    let message = format!("{error:#}");
    assert!(message.contains("hostile-none.toml"), "{message}");
    assert!(message.contains("memory_mib = 64"), "{message}");
    Ok(())
}

/// Writes the hostile plugin's manifest for `behaviour` with `top` (grants, flags),
/// `config` and `tail` (more tables) and returns its path.
fn hostile_manifest_with_tail(
    behaviour: &str,
    top: &str,
    config: &str,
    tail: &str,
) -> anyhow::Result<PathBuf> {
    // An empty `[limits]` (the defaults) before `tail`.
    let manifest = format!(
        "{}{tail}\n",
        provisioner_tests::hostile_manifest(behaviour, top, config, "")
    );
    let path = tempdir(behaviour)?.join(format!("hostile-{behaviour}.toml"));
    std::fs::write(&path, manifest)?;
    Ok(path)
}

/// A manifest's `[secrets]` may name only the variables the operator set aside for that
/// plugin (`PLUGIN_SECRET_<VENDOR>_...`): one naming any other variable of the host (its
/// `PATH` here; `DATABASE_URL` or `AMQP_URL` would hand over passwords) is refused at load,
/// naming the variable and the rule, and so is one naming another plugin's secret.
#[tokio::test]
async fn secrets_come_only_from_the_plugins_own_variables() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    for variable in [
        "PATH",
        "DATABASE_URL",
        "PLUGIN_SECRET_HETZNER_TOKEN",
        "PLUGIN_SECRET_",
    ] {
        let path = hostile_manifest_with_tail(
            "leak-secret",
            "",
            "",
            &format!("[secrets]\ntoken = {variable:?}"),
        )?;
        match runtime.load(&path).await {
            Ok(plugin) => {
                let leaked = plugin.create_server(uuid::Uuid::nil(), &request()).await;
                panic!("a manifest naming {variable} loaded; the plugin got {leaked:?}");
            }
            Err(error) => {
                let message = format!("{error:#}");
                assert!(message.contains(variable), "{message}");
                assert!(
                    message.contains("PLUGIN_SECRET_HOSTILE_LEAK_SECRET_"),
                    "{message}"
                );
            }
        }
    }

    // The plugin's own variable reaches it.
    let path = hostile_manifest_with_tail(
        "leak-secret",
        "",
        "",
        "[secrets]\ntoken = \"PLUGIN_SECRET_HOSTILE_LEAK_SECRET_TOKEN\"",
    )?;
    let manifest = provisioner_host::manifest::Manifest::load(&path)?;
    let plugin = runtime
        .load_manifest_with_secrets(manifest, &path, |variable| {
            (variable == "PLUGIN_SECRET_HOSTILE_LEAK_SECRET_TOKEN").then(|| "its-own".to_string())
        })
        .await?;
    let server = plugin.create_server(uuid::Uuid::nil(), &request()).await?;
    assert_eq!(server.name, "its-own");
    Ok(())
}

/// A one-shot HTTP server on 127.0.0.1 answering every request `200` with an empty body;
/// its port and how many connections reached it.
async fn counting_server() -> anyhow::Result<(u16, Arc<std::sync::atomic::AtomicUsize>)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    let port = serve_connections(move |mut stream| {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    })
    .await?;
    Ok((port, hits))
}

/// A granted host NAME that resolves to a loopback, private or link-local address (cloud
/// metadata at 169.254.169.254, a database next door) is not connected to: the plugin's
/// request is denied (`capability_denied`, naming the origin) unless the manifest sets
/// `allow_private_addresses = true`. A grant of any host does not reach a non-public IP
/// literal either; a grant naming the IP literal itself does.
#[tokio::test]
async fn granted_names_never_reach_private_addresses_without_opt_in() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::SeqCst;

    let runtime = PluginRuntime::new()?;
    let (port, hits) = counting_server().await?;
    let by_name = format!("http://localhost:{port}");
    let by_ip = format!("http://127.0.0.1:{port}");
    let load = |top: String, target: &str| {
        let path = hostile_manifest_with_tail(
            "call-target",
            &top,
            &format!("target-url = {target:?}"),
            "",
        );
        let runtime = &runtime;
        async move { runtime.load(&path?).await }
    };

    // `localhost` resolves to loopback: refused.
    let plugin = load(format!("allowed_hosts = [{by_name:?}]"), &by_name).await?;
    let error = contained(&plugin).await;
    match &error {
        CallError::CapabilityDenied { origin, .. } => assert_eq!(origin, &by_name),
        other => panic!("expected capability_denied, got {other}"),
    }
    assert_eq!(hits.load(SeqCst), 0, "the loopback address was reached");

    // Any host, insecure: a non-public IP literal is still refused.
    let plugin = load(
        "allowed_hosts = [\"*://*:*\"]\ninsecure = true".to_string(),
        &by_ip,
    )
    .await?;
    let error = contained(&plugin).await;
    assert!(
        matches!(error, CallError::CapabilityDenied { .. }),
        "expected capability_denied, got {error}"
    );
    assert_eq!(hits.load(SeqCst), 0, "the loopback address was reached");

    // The opt-in, or a grant naming the literal, reaches it.
    let plugin = load(
        format!("allowed_hosts = [{by_name:?}]\nallow_private_addresses = true"),
        &by_name,
    )
    .await?;
    assert_eq!(created_name(&plugin).await?, "reached");
    let plugin = load(format!("allowed_hosts = [{by_ip:?}]"), &by_ip).await?;
    assert_eq!(created_name(&plugin).await?, "reached");
    assert_eq!(hits.load(SeqCst), 2);
    Ok(())
}

/// Loads the hostile `memory-probe` with a heap block of `probe_bytes`.
async fn memory_probe(
    runtime: &PluginRuntime,
    probe_bytes: usize,
    twice: bool,
) -> anyhow::Result<Plugin> {
    let twice = if twice { "yes" } else { "no" };
    let config = format!("probe-bytes = \"{probe_bytes}\"\nprobe-twice = \"{twice}\"");
    hostile_with(runtime, "memory-probe", &config, "").await
}

/// A call never finds what an earlier call left in memory, whether in the pages a reused
/// pool slot keeps resident between calls (reset in place) or beyond them (given back to the
/// kernel): one slot is used over and over, with data in the module's own pages and in heap
/// blocks of 64 KiB and of 3 MiB. The same probe run twice within one call finds its first
/// run's markers, so it would see them.
#[tokio::test]
async fn a_call_never_sees_an_earlier_calls_memory() -> anyhow::Result<()> {
    let runtime = PluginRuntime::with_limits(RuntimeLimits {
        concurrent_calls: 1,
        ..RuntimeLimits::default()
    })?;
    for probe_bytes in [64 * 1024, 3 * 1024 * 1024] {
        let control = memory_probe(&runtime, probe_bytes, true).await?;
        let within_one_call = control.create_server(uuid::Uuid::nil(), &request()).await?;
        assert_eq!(within_one_call.name, "found in data and heap");
        let plugin = memory_probe(&runtime, probe_bytes, false).await?;
        for call in 0..20 {
            let server = plugin.create_server(uuid::Uuid::nil(), &request()).await?;
            assert_eq!(
                server.name, "clean",
                "call {call} with a {probe_bytes}-byte block found an earlier call's data"
            );
        }
    }
    Ok(())
}
