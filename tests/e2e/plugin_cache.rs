//! The per-plugin cache (WIT 0.3 `cache`): private to one plugin, bounded by its manifest,
//! expiring, lost on reload; a 0.2 plugin (no cache) still served; and what it buys: the OpenStack plugin logs in to Keystone once
//! per token, not once per call. Also what plugins of each WIT version keep from load: a
//! 0.3 and a 0.4 plugin still served, the 0.5 `catalogue` asked at load, cleaned, and
//! carried by the host's vendor announcement (none for a 0.4 plugin), and a 0.5 plugin's
//! `create-server` standing in for the 0.6 `create-new-server` it lacks.
//!
//! The cache tests load the hostile fixture's `cache-probe` behaviour with the host's own
//! runtime, in process (its exports read and write the cache: `create-server` sets the
//! request's name under its idempotency key, `find-server` gets it, `delete-server` deletes
//! it). The OpenStack tests run whole orders through a [`Stack`] and count Keystone's tokens
//! in the simulator (`GET /openstack/_sim/requests`).

use std::time::Duration;

use provisioner_host::bindings::WitVersion;
use provisioner_host::bindings::types::{ProviderError, Server, ServerRequest};
use provisioner_host::runtime::{CallError, Plugin, PluginRuntime};
use provisioner_tests::{
    Stack, StackOptions, scratch_dir, server_request, test_plugin_component, write_manifest_in,
};
use serde_json::json;

/// Loads the hostile fixture as `vendor` with the `cache-probe` behaviour, its cache bounded
/// by `limits` (`[limits]` lines) and values living `ttl_ms`.
async fn probe(
    runtime: &PluginRuntime,
    vendor: &str,
    limits: &str,
    ttl_ms: u64,
) -> anyhow::Result<Plugin> {
    let manifest = format!(
        "vendor = {vendor:?}\ncomponent = {component:?}\n\
         [config]\nvendor-id = {vendor:?}\nbehaviour = \"cache-probe\"\n\
         cache-ttl-ms = \"{ttl_ms}\"\n[limits]\n{limits}\n",
        component = test_plugin_component("hostile").display().to_string(),
    );
    load_written(runtime, &format!("cache-{vendor}"), vendor, &manifest).await
}

/// Writes `manifest` as `<vendor>.toml` in a scratch folder named for `what` and loads it.
async fn load_written(
    runtime: &PluginRuntime,
    what: &str,
    vendor: &str,
    manifest: &str,
) -> anyhow::Result<Plugin> {
    let path = write_manifest_in(&scratch_dir(what)?, vendor, manifest)?;
    runtime.load(&path).await
}

/// What the plugin's cache holds under `key`, read by the plugin itself.
async fn cached(plugin: &Plugin, key: &str) -> anyhow::Result<Option<String>> {
    Ok(plugin.find_server(key).await?.map(|server| server.name))
}

/// Stores `value` under `key` through the plugin.
async fn store(plugin: &Plugin, key: &str, value: &str) -> Result<(), CallError> {
    plugin
        .create_server(uuid::Uuid::nil(), &server_request(key, value))
        .await
        .map(|_| ())
}

/// A value one plugin caches is seen by its next calls and never by another plugin on the
/// same runtime, even under the same key; each plugin's writes leave the other's alone.
#[tokio::test]
async fn a_plugins_cache_is_its_own() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let a = probe(&runtime, "cache-a", "", 60_000).await?;
    let b = probe(&runtime, "cache-b", "", 60_000).await?;
    assert_eq!(a.wit_version(), WitVersion::V0_6);

    store(&a, "session", "token-of-a").await?;
    assert_eq!(cached(&a, "session").await?.as_deref(), Some("token-of-a"));
    assert_eq!(cached(&b, "session").await?, None, "B read A's key");

    store(&b, "session", "token-of-b").await?;
    assert_eq!(cached(&a, "session").await?.as_deref(), Some("token-of-a"));
    assert_eq!(cached(&b, "session").await?.as_deref(), Some("token-of-b"));
    b.delete_server(None, "session").await?;
    assert_eq!(cached(&b, "session").await?, None);
    assert_eq!(cached(&a, "session").await?.as_deref(), Some("token-of-a"));
    Ok(())
}

/// A reload (a new load of the same manifest) starts with an empty cache.
#[tokio::test]
async fn a_reload_empties_the_cache() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let first = probe(&runtime, "cache-reload", "", 60_000).await?;
    store(&first, "session", "kept").await?;
    assert_eq!(first.cache_entries(), 1);
    let reloaded = probe(&runtime, "cache-reload", "", 60_000).await?;
    assert_eq!(cached(&reloaded, "session").await?, None);
    assert_eq!(cached(&first, "session").await?.as_deref(), Some("kept"));
    Ok(())
}

/// The manifest's `cache_entries` and `cache_bytes` bound the cache: a set beyond them fails
/// for the plugin with `full` (nothing it stored is evicted), a value larger than the whole
/// cache with `too-large`; replacing a key and deleting one make room again.
#[tokio::test]
async fn the_manifest_bounds_the_cache() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = probe(
        &runtime,
        "cache-bounded",
        "cache_entries = 2\ncache_bytes = 64",
        60_000,
    )
    .await?;
    store(&plugin, "k1", "one").await?;
    store(&plugin, "k2", "two").await?;
    let refused = store(&plugin, "k3", "three")
        .await
        .expect_err("a third entry");
    assert!(
        refused.to_string().contains("cache-error full"),
        "{refused}"
    );
    assert_eq!(cached(&plugin, "k1").await?.as_deref(), Some("one"));
    assert_eq!(cached(&plugin, "k2").await?.as_deref(), Some("two"));

    store(&plugin, "k1", "uno").await?;
    let refused = store(&plugin, "k1", &"x".repeat(64))
        .await
        .expect_err("too large");
    assert!(
        refused.to_string().contains("cache-error too-large"),
        "{refused}"
    );
    let refused = store(&plugin, "k2", &"x".repeat(58))
        .await
        .expect_err("over bytes");
    assert!(
        refused.to_string().contains("cache-error full"),
        "{refused}"
    );

    plugin.delete_server(None, "k1").await?;
    store(&plugin, "k3", "three").await?;
    assert_eq!(plugin.cache_entries(), 2);
    Ok(())
}

/// A value is gone once its time to live has passed, and its room is free again.
#[tokio::test]
async fn values_expire() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = probe(&runtime, "cache-expiring", "cache_entries = 1", 200).await?;
    store(&plugin, "k1", "short").await?;
    assert_eq!(cached(&plugin, "k1").await?.as_deref(), Some("short"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cached(&plugin, "k1").await?, None);
    store(&plugin, "k2", "next").await?;
    Ok(())
}

/// A manifest asking for more cache than the host allows is refused at load, naming it.
#[tokio::test]
async fn oversized_cache_limits_are_refused() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let error = probe(&runtime, "cache-greedy", "cache_bytes = 4294967295", 1)
        .await
        .err()
        .expect("refused");
    assert!(
        format!("{error:#}").contains("limits.cache_bytes"),
        "{error:#}"
    );
    Ok(())
}

/// Loads the test plugin `name` (`tests/fixtures/<name>-plugin`) as vendor `name`, with no
/// grants.
async fn load_fixture(runtime: &PluginRuntime, name: &str) -> anyhow::Result<Plugin> {
    let manifest = format!(
        "vendor = \"{name}\"\ncomponent = {:?}\n",
        test_plugin_component(name).display().to_string()
    );
    load_written(runtime, &format!("cache-{name}"), name, &manifest).await
}

/// What a fixture plugin's `create-server` answers for the key `key-1` and the name `web`.
async fn create_key_1(plugin: &Plugin) -> anyhow::Result<Server> {
    Ok(plugin
        .create_server(uuid::Uuid::nil(), &server_request("key-1", "web"))
        .await?)
}

/// A request with the key `key` for a server in the fixtures' region `full`, which has no
/// capacity.
fn in_the_full_region(key: &str) -> ServerRequest {
    ServerRequest {
        region: "full".into(),
        ..server_request(key, "web")
    }
}

/// A plugin built against 0.2 (`tests/fixtures/v02-plugin`, no cache import) still loads
/// on the 0.3 host and every export works, `list-servers` included.
#[tokio::test]
async fn a_0_2_plugin_still_loads_and_serves() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = load_fixture(&runtime, "v02").await?;
    assert_eq!(plugin.wit_version(), WitVersion::V0_2);
    let server = create_key_1(&plugin).await?;
    assert_eq!(server.vendor_id, "v02-key-1");
    let listed = plugin.list_servers().await?.expect("0.2 lists its servers");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].idempotency_key, "kept");
    assert_eq!(plugin.cache_entries(), 0);
    Ok(())
}

/// A plugin built against 0.3 (`tests/fixtures/v03-plugin`, before `no-capacity`) still
/// loads on the 0.4 host: requests reach it whole, its answers and each kind of error come
/// back in the current types, its cache works, and it lists its servers.
#[tokio::test]
async fn a_0_3_plugin_still_loads_and_serves() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = load_fixture(&runtime, "v03").await?;
    assert_eq!(plugin.wit_version(), WitVersion::V0_3);
    assert_eq!(plugin.info().await?.display_name, "WIT 0.3 test plugin");
    let server = create_key_1(&plugin).await?;
    assert_eq!(server.vendor_id, "v03-key-1");
    assert_eq!(server.name, "web");
    assert_eq!(server.ipv4.as_deref(), Some("192.0.2.30"));
    assert_eq!(
        plugin.cache_entries(),
        1,
        "the create counted itself in the cache"
    );
    match plugin.validate(&server_request("key-2", "")).await {
        Err(CallError::Provider(ProviderError::InvalidRequest(message))) => {
            assert!(message.contains("empty"), "{message}")
        }
        other => panic!("expected invalid-request, got {other:?}"),
    }
    let full = in_the_full_region("key-3");
    match plugin.create_server(uuid::Uuid::nil(), &full).await {
        Err(CallError::Provider(ProviderError::Transient(message))) => {
            assert!(message.contains("no capacity"), "{message}")
        }
        other => panic!("a 0.3 plugin says transient for a full region, got {other:?}"),
    }
    assert!(plugin.find_server("key-1").await?.is_none());
    let listed = plugin.list_servers().await?.expect("0.3 lists its servers");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].server.vendor_id, "v03-kept");
    Ok(())
}

/// The OpenStack simulator's request and login counters.
async fn openstack_counts(stack: &Stack) -> anyhow::Result<(u64, u64)> {
    let seen = stack.sim().openstack_requests().await?;
    Ok((seen.requests, seen.tokens_issued))
}

/// Orders at OpenStack, one after the other, share one Keystone login: the token lives in
/// the plugin's cache until it expires (the simulator's last an hour). Each order's vendor
/// requests are printed (BENCHMARKS.md).
#[tokio::test]
async fn openstack_orders_share_one_keystone_login() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let orders = 3;
    let (before, _) = openstack_counts(&stack).await?;
    for n in 0..orders {
        let id = stack.order_at("openstack", &format!("cached-{n}")).await?;
        stack
            .wait_for_status(&id, "active", Duration::from_secs(60))
            .await?;
    }
    // Every call since the host started (an orphan sweep's too) shares the one token.
    let (after, logins) = openstack_counts(&stack).await?;
    println!(
        "openstack: {orders} orders, {} vendor requests ({:.1} per order), {logins} Keystone \
         logins",
        after - before,
        (after - before) as f64 / orders as f64,
    );
    assert_eq!(logins, 1, "one login for {orders} orders");
    stack.cleanup().await;
    Ok(())
}

/// A 401 from Nova (a revoked token) drops the cached token: the plugin logs in once more,
/// retries, and the order still runs; the fresh token then serves the next order.
#[tokio::test]
async fn a_nova_401_makes_one_new_login() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let first = stack.order_at("openstack", "before-revoke").await?;
    stack
        .wait_for_status(&first, "active", Duration::from_secs(60))
        .await?;
    let (_, logins) = openstack_counts(&stack).await?;
    assert_eq!(logins, 1);
    stack
        .inject_fault(json!({
            "vendor": "openstack", "kind": "unauthorized", "count": 1, "path": "/servers",
        }))
        .await?;
    for name in ["after-revoke", "after-relogin"] {
        let id = stack.order_at("openstack", name).await?;
        stack
            .wait_for_status(&id, "active", Duration::from_secs(60))
            .await?;
    }
    let (_, logins) = openstack_counts(&stack).await?;
    assert_eq!(logins, 2, "one new login after the 401, reused after");
    stack.cleanup().await;
    Ok(())
}

/// A plugin built against 0.4 (`tests/fixtures/v04-plugin`, before `catalogue`) still loads
/// on the 0.6 host with the current types: it serves, says `no-capacity`, keeps its cache,
/// and has no catalogue (its vendor is announced with none).
#[tokio::test]
async fn a_0_4_plugin_still_loads_without_a_catalogue() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = load_fixture(&runtime, "v04").await?;
    assert_eq!(plugin.wit_version(), WitVersion::V0_4);
    assert!(plugin.catalogue_cached().is_none());
    assert!(plugin.catalogue().await?.is_none(), "no call for 0.4");
    let server = create_key_1(&plugin).await?;
    assert_eq!(server.vendor_id, "v04-key-1");
    assert_eq!(plugin.cache_entries(), 1);
    let full = in_the_full_region("key-2");
    match plugin.create_server(uuid::Uuid::nil(), &full).await {
        Err(CallError::Provider(ProviderError::NoCapacity(message))) => {
            assert!(message.contains("no capacity"), "{message}")
        }
        other => panic!("a 0.4 plugin says no-capacity, got {other:?}"),
    }
    let listed = plugin.list_servers().await?.expect("0.4 lists its servers");
    assert_eq!(listed[0].server.vendor_id, "v04-kept");
    Ok(())
}

/// A plugin built against 0.5 (`tests/fixtures/v05-plugin`, before `create-new-server`)
/// still loads on the 0.6 host with the current types and its catalogue, and a create the
/// host would send to `create-new-server` reaches its `create-server` (look-up and all):
/// the host asks nothing of an older plugin it cannot answer.
#[tokio::test]
async fn a_0_5_plugin_gets_create_server_for_a_new_create() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = load_fixture(&runtime, "v05").await?;
    assert_eq!(plugin.wit_version(), WitVersion::V0_5);
    assert!(!plugin.wit_version().has_create_new());
    let catalogue = plugin.catalogue_cached().expect("0.5 has a catalogue");
    assert_eq!(
        catalogue.regions.as_deref(),
        Some(&["fsn1".to_string(), "full".to_string()][..])
    );
    let server = plugin
        .create_new_server(uuid::Uuid::nil(), &server_request("key-1", "web"))
        .await?;
    assert_eq!(server.vendor_id, "v05-key-1");
    assert_eq!(
        plugin.cache_entries(),
        1,
        "its create-server counted the create"
    );
    let full = in_the_full_region("key-2");
    match plugin.create_new_server(uuid::Uuid::nil(), &full).await {
        Err(CallError::Provider(ProviderError::NoCapacity(message))) => {
            assert!(message.contains("no capacity"), "{message}")
        }
        other => panic!("a 0.5 plugin says no-capacity, got {other:?}"),
    }
    Ok(())
}

/// Loads the hostile fixture as `vendor` with `behaviour` and more `[config]` lines.
async fn hostile(
    runtime: &PluginRuntime,
    vendor: &str,
    behaviour: &str,
    config: &str,
) -> anyhow::Result<Plugin> {
    let manifest = format!(
        "vendor = {vendor:?}\ncomponent = {component:?}\n\
         allowed_hosts = [\"http://127.0.0.1:9\"]\n\
         [config]\nvendor-id = {vendor:?}\nbehaviour = {behaviour:?}\n\
         target-url = \"http://127.0.0.1:9\"\n{config}\n",
        component = test_plugin_component("hostile").display().to_string(),
    );
    load_written(runtime, &format!("catalogue-{vendor}"), vendor, &manifest).await
}

/// The host asks a 0.5 plugin for its catalogue at load and keeps it cleaned: empty,
/// control-character and repeated entries dropped (the first of a repeat kept, in order),
/// an unset list `none`; what cleaning changed is reported.
#[tokio::test]
async fn the_catalogue_is_asked_at_load_and_cleaned() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = hostile(
        &runtime,
        "catalogued",
        "behave",
        "catalogue-regions = \"nbg1|fsn1||nbg1|evil\\nFORGED\"\ncatalogue-images = \"debian-12\"",
    )
    .await?;
    assert_eq!(plugin.wit_version(), WitVersion::V0_6);
    let catalogue = plugin.catalogue_cached().expect("a 0.6 plugin's catalogue");
    assert_eq!(
        catalogue.regions.as_deref(),
        Some(&["nbg1".to_string(), "fsn1".to_string()][..])
    );
    assert_eq!(catalogue.sizes, None);
    assert_eq!(
        catalogue.images.as_deref(),
        Some(&["debian-12".to_string()][..])
    );
    let asked = plugin.catalogue().await?.expect("asked again");
    assert_eq!(&asked.catalogue, catalogue);
    assert_eq!(asked.changes.len(), 1, "{:?}", asked.changes);
    assert!(
        asked.changes[0].starts_with("regions: 3 of 5 entries dropped"),
        "{:?}",
        asked.changes
    );
    Ok(())
}

/// A `catalogue` that traps leaves the catalogue unknown and the plugin serving; one that
/// tries the network is refused it (the call is offline, as `info` and `validate` are),
/// even to an origin its manifest grants.
#[tokio::test]
async fn a_failing_or_networking_catalogue_leaves_the_plugin_serving() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let trapping = hostile(&runtime, "catalogue-trap", "catalogue-panic", "").await?;
    assert!(trapping.catalogue_cached().is_none());
    assert!(matches!(
        trapping.catalogue().await,
        Err(CallError::Trap {
            call: "catalogue",
            ..
        })
    ));
    trapping.validate(&server_request("key-1", "web")).await?;

    let networking = hostile(&runtime, "catalogue-net", "network-in-catalogue", "").await?;
    let catalogue = networking.catalogue_cached().expect("it answered");
    assert_eq!(
        catalogue.regions.as_deref(),
        Some(&["network-refused".to_string()][..])
    );
    assert!(networking.outbound_requests() >= 1, "it tried");
    Ok(())
}

/// The Hetzner plugin's catalogue is what its `validate` checks: its built-in locations with
/// no `[config]` lists, the manifest's lists when it has them (sizes and images only then).
#[tokio::test]
async fn the_hetzner_catalogue_follows_its_manifest() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let hetzner = provisioner_tests::fixture("hetzner");
    let load = async |manifest: String| -> anyhow::Result<Plugin> {
        let dir = provisioner_tests::scratch_dir("catalogue-hetzner")?;
        provisioner_tests::load_with_secrets(&runtime, &dir, "hetzner", &manifest, |_| {
            Some("token".into())
        })
        .await
    };
    let configured = load(hetzner.manifest_with_catalogue("http://127.0.0.1:9")).await?;
    let catalogue = configured.catalogue_cached().expect("a catalogue");
    assert_eq!(catalogue.regions, Some(vec![hetzner.region.to_string()]));
    assert_eq!(catalogue.sizes, Some(vec![hetzner.size.to_string()]));
    assert_eq!(catalogue.images, Some(vec![hetzner.image.to_string()]));

    let builtin = load(
        hetzner
            .manifest_with_catalogue("http://127.0.0.1:9")
            .replace(&format!("regions = {:?}\n", hetzner.region), "")
            .replace(&format!("sizes = {:?}\n", hetzner.size), "")
            .replace(&format!("images = {:?}\n", hetzner.image), ""),
    )
    .await?;
    let catalogue = builtin.catalogue_cached().expect("a catalogue");
    assert_eq!(
        catalogue.regions,
        Some(
            ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"]
                .map(String::from)
                .to_vec()
        )
    );
    assert_eq!((&catalogue.sizes, &catalogue.images), (&None, &None));
    Ok(())
}

/// What a host publishes on `announce.<vendor>` carries the plugin's catalogue: Hetzner's
/// built-in locations (the stack's manifest lists none), a 0.5 plugin's configured lists,
/// and nothing for a 0.4 plugin.
#[tokio::test]
async fn the_announcement_carries_the_catalogue() -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueBindOptions};
    use lapin::types::FieldTable;
    use provisioner_contract::messages::HostMessage;
    use provisioner_contract::topology::declare_exclusive_queue;

    let stack = Stack::start(StackOptions {
        host_env: vec![("ANNOUNCE_INTERVAL_SECS".into(), "1".into())],
        ..StackOptions::default()
    })
    .await?;
    let connection = provisioner_tests::require_rabbitmq().await;
    let channel = connection.create_channel().await?;
    let queue = format!(
        "{}announcements-{}",
        stack.topology.prefix(),
        uuid::Uuid::new_v4().simple()
    );
    declare_exclusive_queue(&channel, &queue, FieldTable::default()).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            stack.topology.results_exchange().as_str().into(),
            "announce.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let hostile = test_plugin_component("hostile").display().to_string();
    std::fs::write(
        stack.plugins_dir().join("catalogued.toml"),
        format!(
            "vendor = \"catalogued\"\ncomponent = {hostile:?}\n[config]\n\
             vendor-id = \"catalogued\"\ncatalogue-regions = \"north|south\"\n\
             catalogue-sizes = \"small\"\n"
        ),
    )?;
    let v04 = test_plugin_component("v04").display().to_string();
    std::fs::write(
        stack.plugins_dir().join("v04.toml"),
        format!("vendor = \"v04\"\ncomponent = {v04:?}\n[config]\nvendor-id = \"v04\"\n"),
    )?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "announcements".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let mut announced = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while announced.len() < 3 {
        let delivery = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "announcements seen: {:?}\n{}",
                    announced.keys().collect::<Vec<_>>(),
                    stack.host_log()
                )
            })?
            .ok_or_else(|| anyhow::anyhow!("the consumer ended"))??;
        if let HostMessage::VendorAnnounced(announcement) =
            serde_json::from_slice::<HostMessage>(&delivery.data)?
            && ["hetzner", "catalogued", "v04"].contains(&announcement.vendor.as_str())
        {
            announced.insert(announcement.vendor.clone(), announcement.catalogue);
        }
    }
    let hetzner = announced["hetzner"].clone().expect("hetzner's catalogue");
    assert_eq!(
        hetzner.regions,
        Some(
            ["fsn1", "nbg1", "hel1", "ash", "hil", "sin"]
                .map(String::from)
                .to_vec()
        )
    );
    assert_eq!((hetzner.sizes, hetzner.images), (None, None));
    let catalogued = announced["catalogued"].clone().expect("its catalogue");
    assert_eq!(
        catalogued.regions,
        Some(vec!["north".to_string(), "south".to_string()])
    );
    assert_eq!(catalogued.sizes, Some(vec!["small".to_string()]));
    assert_eq!(catalogued.images, None);
    assert_eq!(
        announced["v04"], None,
        "a 0.4 plugin announces no catalogue"
    );
    let _ = connection.close(200, "seen".into()).await;
    Ok(())
}
