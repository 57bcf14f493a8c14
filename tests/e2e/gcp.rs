//! The Google Compute Engine plugin against the simulator's Compute Engine and OAuth token
//! endpoint: through the whole system (orders go `active` and `deleted`, one token exchange
//! serves many orders, a lost insert answer makes one instance, a quota refusal fails the
//! order), in process with the host's runtime (zone operations followed to their end: a
//! `ZONE_RESOURCE_POOL_EXHAUSTED` insert, a delete), and through the conformance kit's five
//! suites, against the simulator and through the fault proxy.
//!
//! The service account is registered at the simulator with the public half of the
//! throwaway key in `plugins/gcp/testdata`, and the plugin gets the key JSON as its secret.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use provisioner_conformance::Target;
use provisioner_host::bindings::types::{ProviderError, ServerRequest, ServerStatus};
use provisioner_host::runtime::{CallError, Plugin, PluginRuntime};
use provisioner_tests::simulator::{
    QuotaFault, assert_carries_fields, carried_fields, fault_proxy, shipped_fault_profile,
    sim_server_with_key, sim_servers_at,
};
use provisioner_tests::{
    Stack, StackOptions, plugin_component, simulator_in_process, workspace_root,
};
use provisioner_tests::{load_with_secrets, shipped_manifest};
use serde_json::{Value, json};
use vendor_sim::control_client::SimClient;
use vendor_sim::gcp::{ComputeFault, ServiceAccountRegistration};

const EMAIL: &str = "provisioner@sim-project.iam.gserviceaccount.com";
/// The simulator's project (where `POST /_sim/servers` seeds servers).
const PROJECT: &str = "sim-project";
const SECRET: &str = "PLUGIN_SECRET_GCP_SERVICE_ACCOUNT_KEY";
const ZONE: &str = "us-central1-a";
const IMAGE: &str = "projects/debian-cloud/global/images/family/debian-12";

fn testdata(file: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(
        workspace_root().join("plugins/gcp/testdata").join(file),
    )?)
}

/// Registers the test service account at the simulator at `sim_url` and answers its key
/// JSON, with `token_origin` (the simulator, or a proxy in front of it) in `token_uri`.
async fn service_account(sim_url: &str, token_origin: &str) -> anyhow::Result<String> {
    SimClient::new(sim_url)
        .register_gcp_service_account(&ServiceAccountRegistration {
            client_email: EMAIL.into(),
            project_id: PROJECT.into(),
            public_key: testdata("sim-service-account.pub.pem")?,
            token_ttl_secs: None,
        })
        .await?;
    Ok(json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key_id": "sim-key-1",
        "private_key": testdata("sim-service-account.pem")?,
        "client_email": EMAIL,
        "client_id": "100000000000000000001",
        "token_uri": format!("{token_origin}/gcp/token"),
    })
    .to_string())
}

/// The shipped simulator manifest (`plugins/gcp/sim.toml`) pointed at `sim_url`, granting
/// `extra_origins` besides.
fn sim_manifest(sim_url: &str, extra_origins: &[&str]) -> anyhow::Result<String> {
    let mut grants = vec![format!("{sim_url:?}")];
    grants.extend(extra_origins.iter().map(|o| format!("{o:?}")));
    let manifest = shipped_manifest("gcp", "sim.toml", "http://127.0.0.1:18190", sim_url)?.replace(
        &format!("allowed_hosts = [{sim_url:?}]"),
        &format!("allowed_hosts = [{}]", grants.join(", ")),
    );
    anyhow::ensure!(
        manifest.contains(&format!("{sim_url}/gcp/compute/v1")),
        "plugins/gcp/sim.toml names no simulator base-url"
    );
    Ok(manifest)
}

/// A stack whose host serves the GCP plugin with the test account's key in its secrets
/// folder.
async fn stack_with_gcp() -> anyhow::Result<Stack> {
    stack_with_gcp_and(Vec::new()).await
}

/// [`stack_with_gcp`], its host given `host_env` too.
async fn stack_with_gcp_and(mut host_env: Vec<(String, String)>) -> anyhow::Result<Stack> {
    let secrets = provisioner_tests::target_dir()
        .join("test-runs")
        .join(format!("gcp-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&secrets)?;
    host_env.push(("PLUGIN_SECRETS_DIR".into(), secrets.display().to_string()));
    let stack = Stack::start(StackOptions {
        host_env,
        ..StackOptions::default()
    })
    .await?;
    let key = service_account(&stack.sim_url, &stack.sim_url).await?;
    std::fs::write(Path::new(&secrets).join(SECRET), key)?;
    stack
        .serve_plugin("gcp", &sim_manifest(&stack.sim_url, &[])?)
        .await?;
    Ok(stack)
}

/// [`stack_with_gcp`] retrying quickly, twice, whose next insert's zone operation ends with
/// `ZONE_RESOURCE_POOL_EXHAUSTED`.
async fn stack_with_a_zone_running_dry() -> anyhow::Result<Stack> {
    let stack = stack_with_gcp_and(vec![
        ("RETRY_BASE_MS".into(), "250".into()),
        ("RETRY_MAX_ATTEMPTS".into(), "2".into()),
        ("PROVISION_TIMEOUT_SECS".into(), "120".into()),
    ])
    .await?;
    stack
        .sim()
        .arm_gcp_fault(ComputeFault::ZoneResourcePoolExhausted, 1)
        .await?;
    Ok(stack)
}

/// Checks the simulator has no live instance carrying the idempotency key `id`.
async fn no_instance_of(stack: &Stack, id: &str) -> anyhow::Result<()> {
    let instances = sim_instances(&stack.sim_url).await?;
    anyhow::ensure!(
        instances.iter().all(|s| s["idempotency_key"] != id),
        "an instance of {id} is left: {instances:#?}"
    );
    Ok(())
}

/// The simulator's live Compute Engine instances.
async fn sim_instances(sim_url: &str) -> anyhow::Result<Vec<Value>> {
    sim_servers_at(sim_url, "gcp").await
}

/// Access tokens the simulator's token endpoint issued.
async fn token_grants(sim_url: &str) -> anyhow::Result<u64> {
    Ok(SimClient::new(sim_url).gcp_token_grants().await?.total)
}

/// Orders a Compute Engine instance named `name` (with the order fields of `extra`); its id.
async fn order_gcp(stack: &Stack, name: &str, extra: Value) -> anyhow::Result<String> {
    let body = json!({
        "vendor": "gcp", "region": ZONE, "size": "e2-small", "image": IMAGE, "name": name,
    });
    stack.order_with_fields(body, extra).await
}

/// An order at GCP goes `active` through order-api, RabbitMQ, a host and the plugin; the
/// simulator's instance got its name, labels (the order id as the key), SSH key and user
/// data; its delete makes the order `deleted` and the instance gone. Two
/// more orders go active on the same access token: one exchange for three orders.
#[tokio::test]
async fn a_gcp_order_goes_active_and_deleted_on_one_token() -> anyhow::Result<()> {
    let stack = stack_with_gcp().await?;
    let ssh_key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl e2e@gcp";
    let id = order_gcp(&stack, "gcp-e2e-1", carried_fields(ssh_key)).await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(90))
        .await?;
    let vendor_id = active["server"]["vendor_id"].as_str().unwrap_or_default();
    assert!(
        vendor_id.starts_with(&format!("{ZONE}/gcp-e2e-1-")),
        "{active:#}"
    );
    let instance = sim_server_with_key(&stack.sim_url, "gcp", &id).await?;
    // The simulator refuses a bare machine type or an image path it cannot resolve, so
    // the instance's existence shows both went as Compute wants them.
    assert_eq!(
        instance["name"].as_str(),
        vendor_id.split('/').nth(1),
        "{instance:#}"
    );
    assert_carries_fields(&instance, ssh_key);
    assert_eq!(
        instance["labels"]["provisioner-idempotency-key"],
        id.as_str()
    );
    assert!(
        active["server"]["ipv4"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty()),
        "{active:#}"
    );

    stack.delete_and_wait(&id, Duration::from_secs(90)).await?;
    let left = sim_instances(&stack.sim_url).await?;
    assert!(
        left.iter().all(|s| s["idempotency_key"] != id.as_str()),
        "the instance is still there: {left:#?}"
    );

    let more = [
        order_gcp(&stack, "gcp-e2e-2", json!({})).await?,
        order_gcp(&stack, "gcp-e2e-3", json!({})).await?,
    ];
    for id in &more {
        stack
            .wait_for_status(id, "active", Duration::from_secs(90))
            .await?;
    }
    assert_eq!(
        token_grants(&stack.sim_url).await?,
        1,
        "one token exchange for three orders:\n{}",
        stack.host_log()
    );
    stack.cleanup().await;
    Ok(())
}

/// The insert's answer lost after the simulator made the instance: the host's retry finds
/// it by its label and adopts it, so the order goes `active` with one instance.
#[tokio::test]
async fn a_lost_insert_answer_makes_one_instance() -> anyhow::Result<()> {
    let stack = stack_with_gcp().await?;
    stack
        .order_through_a_lost_answer("gcp", "POST", "/instances", async || {
            order_gcp(&stack, "gcp-lost-answer", json!({})).await
        })
        .await?;
    stack.cleanup().await;
    Ok(())
}

/// The GCP plugin loaded in process with the host's own runtime, against the simulator at
/// `sim_url` (its service account registered).
async fn plugin_at(runtime: &PluginRuntime, sim_url: &str) -> anyhow::Result<Plugin> {
    let key = service_account(sim_url, sim_url).await?;
    let dir = crate::conformance::workdir("gcp-in-process")?;
    load_with_secrets(
        runtime,
        &dir,
        "gcp",
        &sim_manifest(sim_url, &[])?,
        |variable| (variable == SECRET).then(|| key.clone()),
    )
    .await
}

fn server_request(key: &str, name: &str) -> ServerRequest {
    ServerRequest {
        idempotency_key: key.into(),
        name: name.into(),
        region: ZONE.into(),
        size: "e2-small".into(),
        image: IMAGE.into(),
        ssh_keys: vec![],
        user_data: None,
        labels: vec![],
    }
}

/// An insert whose zone operation ends `DONE` with `ZONE_RESOURCE_POOL_EXHAUSTED` (no
/// instance made): `create-server` answers provisioning, then `get-server` follows the
/// operation and answers `no-capacity` (WIT 0.4) naming the error, which the host polls on. A server the
/// plugin deletes reads `deleting` while Compute shows it `STOPPING`, then not-found.
#[tokio::test]
async fn operations_are_followed_to_their_end() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(600)).await?;
    let runtime = PluginRuntime::new()?;
    let plugin = plugin_at(&runtime, &sim_url).await?;
    let order = uuid::Uuid::new_v4();

    SimClient::new(&sim_url)
        .arm_gcp_fault(ComputeFault::ZoneResourcePoolExhausted, 1)
        .await?;
    let made = plugin
        .create_server(order, &server_request("gcp-pool-1", "pool"))
        .await?;
    assert!(
        matches!(made.status, ServerStatus::Provisioning),
        "{made:?}"
    );
    let booting = plugin.get_server(Some(order), &made.vendor_id).await?;
    assert!(
        matches!(booting.status, ServerStatus::Provisioning),
        "{booting:?}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    match plugin.get_server(Some(order), &made.vendor_id).await {
        Err(CallError::Provider(ProviderError::NoCapacity(message))) => {
            assert!(
                message.contains("ZONE_RESOURCE_POOL_EXHAUSTED"),
                "{message}"
            )
        }
        other => panic!("expected no-capacity, got {other:?}"),
    }

    let made = plugin
        .create_server(order, &server_request("gcp-delete-1", "gone"))
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let running = plugin.get_server(Some(order), &made.vendor_id).await?;
    assert!(
        matches!(running.status, ServerStatus::Running),
        "{running:?}"
    );
    plugin.delete_server(Some(order), &made.vendor_id).await?;
    let deleting = plugin.get_server(Some(order), &made.vendor_id).await?;
    assert!(
        matches!(deleting.status, ServerStatus::Deleting),
        "{deleting:?}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    match plugin.get_server(Some(order), &made.vendor_id).await {
        Err(CallError::Provider(ProviderError::NotFound(_))) => {}
        other => panic!("expected not-found, got {other:?}"),
    }
    Ok(())
}

/// The kit's five suites pass against the simulator's Compute Engine (`--vendor-sim`).
#[tokio::test]
async fn the_gcp_plugin_passes_every_suite_against_the_simulator() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let key = service_account(&sim_url, &sim_url).await?;
    let report = crate::conformance::run_kit_against(
        "gcp-sim",
        plugin_component("gcp"),
        sim_manifest(&sim_url, &[])?,
        Target::Simulator {
            url: sim_url.clone(),
            vendor: "gcp".into(),
        },
        BTreeMap::from([(SECRET.to_string(), key)]),
        |_| {},
    )
    .await?;
    crate::conformance::passed_every_suite(&report);
    crate::conformance::isolation_was_seen(&report);
    Ok(())
}

/// The kit's five suites pass through the fault proxy with Compute's own error answers
/// (`plugins/gcp/faults.toml`), the kit told nothing about the simulator. The token
/// endpoint is another origin, as oauth2.googleapis.com is at Google: a plain proxy in
/// front of the simulator, beside the fault proxy.
#[tokio::test]
async fn the_gcp_plugin_passes_every_suite_through_the_fault_proxy() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let token_origin = fault_proxy(&sim_url, shipped_fault_profile("gcp")?).await?;
    let key = service_account(&sim_url, &token_origin.url).await?;
    let report = crate::conformance::run_kit_against(
        "gcp-proxy",
        plugin_component("gcp"),
        sim_manifest(&sim_url, &[&token_origin.url])?,
        Target::FaultProxy {
            profile: workspace_root().join("plugins/gcp/faults.toml"),
            base_url_key: "base-url".into(),
        },
        BTreeMap::from([(SECRET.to_string(), key)]),
        |_| {},
    )
    .await?;
    crate::conformance::passed_every_suite(&report);
    assert!(report.target.contains("fault proxy"), "{}", report.target);
    Ok(())
}

/// Compute's own failures reach the order as the issue maps them: an insert refused with
/// `quotaExceeded` fails the order at once as `quota_exceeded`, not retried.
#[tokio::test]
async fn a_quota_refusal_fails_the_order_as_quota_exceeded() -> anyhow::Result<()> {
    let stack = stack_with_gcp().await?;
    let failed = stack
        .order_refused_for_quota(QuotaFault::Gcp, async || {
            order_gcp(&stack, "gcp-no-quota", json!({})).await
        })
        .await?;
    no_instance_of(&stack, failed["id"].as_str().unwrap_or_default()).await?;
    stack.cleanup().await;
    Ok(())
}

/// An insert whose zone operation ends with `ZONE_RESOURCE_POOL_EXHAUSTED` after the create
/// answered: the host's poll reads no-capacity, which ends the attempt at once as a create
/// refused for capacity would (retried; Compute replays the same `requestId`'s failed
/// operation, so the retry fails alike) instead of polling to the provision timeout, and the
/// order fails `no_capacity`, with no instance made.
#[tokio::test]
async fn a_zone_out_of_resources_while_booting_fails_as_no_capacity_not_a_timeout()
-> anyhow::Result<()> {
    let stack = stack_with_a_zone_running_dry().await?;
    let id = order_gcp(&stack, "gcp-pool-dry", json!({})).await?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "no_capacity", "{failed:#}");
    let messages: Vec<&str> = failed["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("attempt failed (no_capacity)")),
        "the attempt is retried: {messages:#?}"
    );
    no_instance_of(&stack, &id).await?;
    stack.cleanup().await;
    Ok(())
}

/// With a placement, the zone that gave up placing a booting server is left for the next
/// one: the server fails `no_capacity` in the first zone, its clean-up there answers, and it
/// is made in the second; nothing is left in the first.
#[tokio::test]
async fn a_zone_out_of_resources_moves_an_order_with_a_placement_to_the_next_zone()
-> anyhow::Result<()> {
    let stack = stack_with_a_zone_running_dry().await?;
    let candidate =
        |zone: &str| json!({"vendor": "gcp", "region": zone, "size": "e2-small", "image": IMAGE});
    let body =
        json!({"name": "gcp-moves", "placement": [candidate(ZONE), candidate("europe-west1-b")]});
    let (status, _, _, accepted) = stack.post_order(&body.to_string()).await?;
    anyhow::ensure!(status == 202, "{status}: {accepted}");
    let first_key = accepted["servers"][0]["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let id = accepted["id"].as_str().unwrap_or_default().to_string();
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(90))
        .await?;
    let server = &active["servers"][0];
    assert_eq!(
        (server["candidate"].clone(), server["region"].clone()),
        (json!(2), json!("europe-west1-b")),
        "{active:#}"
    );
    let instances = sim_instances(&stack.sim_url).await?;
    assert!(
        instances
            .iter()
            .all(|s| s["idempotency_key"] != first_key.as_str()),
        "{instances:#?}"
    );
    assert_eq!(
        instances
            .iter()
            .filter(|s| s["idempotency_key"] == server["key"])
            .count(),
        1,
        "{instances:#?}"
    );
    stack.cleanup().await;
    Ok(())
}
