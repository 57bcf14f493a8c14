//! The Microsoft Azure plugin against the simulator's Azure Resource Manager and identity
//! platform, through the whole system: an order goes `active` (a public IP, a NIC and a VM
//! made with `PUT`, the VM carrying the order's SSH key, user data and labels) and its
//! delete makes it `deleted` with nothing left at the simulator (the VM's disk, NIC and IP
//! go with it); a `PUT` of the VM whose answer is lost still makes one VM. And the
//! conformance kit's five suites, against the simulator and through the fault proxy.
//!
//! The app registration (tenant, client id and secret, with its resource group, virtual
//! network and subnet) is made at the simulator at run time, and the plugin gets its
//! credentials as its three secrets.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use provisioner_conformance::{Report, Target};
use provisioner_tests::shipped_manifest;
use provisioner_tests::simulator::{
    QuotaFault, assert_carries_fields, carried_fields, fault_proxy, sim_server_with_key,
    sim_servers_at,
};
use provisioner_tests::{
    Stack, StackOptions, plugin_component, simulator_in_process, workspace_root,
};
use serde_json::{Value, json};
use vendor_sim::azure::AppRegistration;
use vendor_sim::control_client::SimClient;
use vendor_sim::proxy::FaultProfile;

/// The app `plugins/azure/sim.toml` is written for.
const TENANT: &str = "11111111-0000-4000-8000-000000000001";
const CLIENT_ID: &str = "22222222-0000-4000-8000-000000000002";
const CLIENT_SECRET: &str = "sim-azure-secret";
const SUBSCRIPTION: &str = "33333333-0000-4000-8000-000000000003";
const GROUP: &str = "provisioner-rg";
const LOCATION: &str = "westeurope";
const IMAGE: &str = "Canonical:ubuntu-24_04-lts:server:latest";

/// Registers the app of `plugins/azure/sim.toml` at the simulator at `sim_url`, with its
/// resource group, virtual network and subnet; the secrets the plugin then needs.
pub async fn register_app(sim_url: &str) -> anyhow::Result<Vec<(String, String)>> {
    SimClient::new(sim_url)
        .register_azure_app(&AppRegistration {
            tenant_id: TENANT.into(),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            subscription_id: SUBSCRIPTION.into(),
            resource_group: Some(GROUP.into()),
            location: Some(LOCATION.into()),
            virtual_network: Some("provisioner-vnet".into()),
            subnet: Some("default".into()),
            token_ttl_secs: None,
        })
        .await?;
    Ok(vec![
        ("PLUGIN_SECRET_AZURE_TENANT_ID".into(), TENANT.into()),
        ("PLUGIN_SECRET_AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
        (
            "PLUGIN_SECRET_AZURE_CLIENT_SECRET".into(),
            CLIENT_SECRET.into(),
        ),
    ])
}

/// The shipped simulator manifest (`plugins/azure/sim.toml`) pointed at `sim_url`.
pub fn sim_manifest(sim_url: &str) -> anyhow::Result<String> {
    let manifest = shipped_manifest("azure", "sim.toml", "http://127.0.0.1:18190", sim_url)?;
    anyhow::ensure!(
        manifest.contains(&format!("base-url = \"{sim_url}/azure\"")),
        "plugins/azure/sim.toml names no simulator base-url"
    );
    Ok(manifest)
}

/// A stack whose host serves the Azure plugin with the test app's credentials in its
/// secrets folder.
async fn stack_with_azure() -> anyhow::Result<Stack> {
    let secrets = provisioner_tests::target_dir()
        .join("test-runs")
        .join(format!("azure-secrets-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&secrets)?;
    let stack = Stack::start(StackOptions {
        host_env: vec![("PLUGIN_SECRETS_DIR".into(), secrets.display().to_string())],
        ..StackOptions::default()
    })
    .await?;
    for (variable, value) in register_app(&stack.sim_url).await? {
        std::fs::write(Path::new(&secrets).join(variable), value)?;
    }
    stack
        .serve_plugin("azure", &sim_manifest(&stack.sim_url)?)
        .await?;
    Ok(stack)
}

/// The simulator's Azure VMs (its `azure` servers).
async fn sim_vms(sim_url: &str) -> anyhow::Result<Vec<Value>> {
    sim_servers_at(sim_url, "azure").await
}

/// Every ARM resource at the simulator (`GET /_sim/azure/resources`).
async fn sim_resources(sim_url: &str) -> anyhow::Result<Vec<Value>> {
    let resources = SimClient::new(sim_url).azure_resources().await?;
    Ok(resources.iter().map(|resource| json!(resource)).collect())
}

/// Orders an Azure VM named `name` (with the order fields of `extra`); its id.
async fn order_azure(stack: &Stack, name: &str, extra: Value) -> anyhow::Result<String> {
    let body = json!({
        "vendor": "azure", "region": LOCATION, "size": "Standard_B1s", "image": IMAGE,
        "name": name,
    });
    stack.order_with_fields(body, extra).await
}

/// An order at Azure goes `active` through order-api, RabbitMQ, a host and the plugin: a
/// public IP, a NIC and a VM, all tagged with the order id, the VM with the order's SSH key,
/// user data and labels and a public address; its delete makes the order `deleted` and
/// leaves no VM, disk, NIC or public IP of it at the simulator.
#[tokio::test]
async fn an_azure_order_goes_active_and_deleted_leaving_nothing() -> anyhow::Result<()> {
    let stack = stack_with_azure().await?;
    let ssh_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl e2e@azure";
    let id = order_azure(&stack, "azure-e2e-1", carried_fields(ssh_key)).await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(90))
        .await?;
    let vendor_id = active["server"]["vendor_id"].as_str().unwrap_or_default();
    let prefix = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Compute/virtualMachines/azure-e2e-1-"
    );
    assert!(vendor_id.starts_with(&prefix), "{active:#}");
    let vm_name = vendor_id.rsplit('/').next().unwrap_or_default().to_string();
    assert!(
        active["server"]["ipv4"]
            .as_str()
            .is_some_and(|ip| !ip.is_empty()),
        "{active:#}"
    );

    let vm = sim_server_with_key(&stack.sim_url, "azure", &id).await?;
    assert_carries_fields(&vm, ssh_key);
    let resources = sim_resources(&stack.sim_url).await?;
    let of_order = |resources: &[Value]| -> Vec<Value> {
        resources
            .iter()
            .filter(|r| {
                r["tags"]["provisioner-idempotency-key"] == id.as_str()
                    || r["name"]
                        .as_str()
                        .is_some_and(|n| n.to_lowercase().starts_with(&vm_name.to_lowercase()))
            })
            .cloned()
            .collect()
    };
    let made = of_order(&resources);
    for kind in [
        "Microsoft.Network/publicIPAddresses",
        "Microsoft.Network/networkInterfaces",
        "Microsoft.Compute/virtualMachines",
        "Microsoft.Compute/disks",
    ] {
        assert_eq!(
            made.iter().filter(|r| r["type"] == kind).count(),
            1,
            "one {kind}: {made:#?}"
        );
    }

    stack.delete_and_wait(&id, Duration::from_secs(90)).await?;
    let left = of_order(&sim_resources(&stack.sim_url).await?);
    assert!(left.is_empty(), "left behind: {left:#?}");
    assert!(
        sim_vms(&stack.sim_url)
            .await?
            .iter()
            .all(|s| s["idempotency_key"] != id.as_str())
    );
    stack.cleanup().await;
    Ok(())
}

/// The VM `PUT`'s answer lost after the simulator made the VM: the plugin's resend (or
/// the host's retry, which finds the VM by its tag) makes no second VM, and the order goes
/// `active` with one VM.
#[tokio::test]
async fn a_lost_vm_put_answer_makes_one_vm() -> anyhow::Result<()> {
    let stack = stack_with_azure().await?;
    stack
        .order_through_a_lost_answer("azure", "PUT", "/virtualMachines/", async || {
            order_azure(&stack, "azure-lost-answer", json!({})).await
        })
        .await?;
    let vm_count = sim_resources(&stack.sim_url)
        .await?
        .iter()
        .filter(|r| r["type"] == "Microsoft.Compute/virtualMachines")
        .count();
    assert_eq!(vm_count, 1);
    stack.cleanup().await;
    Ok(())
}

/// A VM `PUT` refused for the regional cores quota (409 `OperationNotAllowed`) fails the
/// order at once as `quota_exceeded`, and the plugin takes the NIC and public IP it had
/// already made away again: nothing of the order is left at the simulator.
#[tokio::test]
async fn a_cores_quota_refusal_fails_the_order_and_leaves_nothing() -> anyhow::Result<()> {
    let stack = stack_with_azure().await?;
    let failed = stack
        .order_refused_for_quota(QuotaFault::Azure, async || {
            order_azure(&stack, "azure-no-quota", json!({})).await
        })
        .await?;
    let id = failed["id"].as_str().unwrap_or_default().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<Value> = sim_resources(&stack.sim_url)
            .await?
            .into_iter()
            .filter(|r| r["tags"]["provisioner-idempotency-key"] == id.as_str())
            .collect();
        if left.is_empty() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "left behind: {left:#?}\n{}",
            stack.host_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.cleanup().await;
    Ok(())
}

/// The kit run in-process against the simulator's ARM at `sim_url` (`--vendor-sim`) with
/// the shipped simulator manifest and the app's `secrets`; `adjust` changes its options.
async fn kit_against_sim(
    name: &str,
    sim_url: &str,
    secrets: Vec<(String, String)>,
    adjust: impl FnOnce(&mut provisioner_conformance::KitOptions),
) -> anyhow::Result<Report> {
    crate::conformance::run_kit_against(
        name,
        plugin_component("azure"),
        sim_manifest(sim_url)?,
        Target::Simulator {
            url: sim_url.to_string(),
            vendor: "azure".into(),
        },
        secrets.into_iter().collect::<BTreeMap<_, _>>(),
        adjust,
    )
    .await
}

/// The kit's five suites pass against the simulator's ARM (`--vendor-sim`), and the run
/// leaves no public IP, NIC or disk behind either.
#[tokio::test]
async fn the_azure_plugin_passes_every_suite_against_the_simulator() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let secrets = register_app(&sim_url).await?;
    let report = kit_against_sim("azure-sim", &sim_url, secrets, |_| {}).await?;
    crate::conformance::passed_every_suite(&report);
    crate::conformance::isolation_was_seen(&report);
    let no_leftovers = report.check("lifecycle.no-leftovers").expect("ran");
    assert!(
        no_leftovers.detail.contains("public IPs, NICs and disks"),
        "{}",
        report.table()
    );
    assert_no_network_left(&sim_url).await
}

/// No public IP, NIC or disk at the simulator (every VM the run made is gone, and they
/// with it), once the deletions have run their course.
async fn assert_no_network_left(sim_url: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<Value> = sim_resources(sim_url)
            .await?
            .into_iter()
            .filter(|r| r["type"] != "Microsoft.Network/virtualNetworks")
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "left at the simulator: {left:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The kit's five suites pass through the fault proxy with ARM's own error answers
/// (`plugins/azure/faults.toml`), the kit told nothing about the simulator. The token
/// endpoint is another origin, as login.microsoftonline.com is at Azure: a plain proxy in
/// front of the simulator, beside the fault proxy. ARM's VM list takes no page size, so
/// the simulator's pages are capped at three and `every-page` makes four more servers.
#[tokio::test]
async fn the_azure_plugin_passes_every_suite_through_the_fault_proxy() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let secrets = register_app(&sim_url).await?;
    SimClient::new(&sim_url).cap_pages(Some(3)).await?;
    let profile = workspace_root().join("plugins/azure/faults.toml");
    let token_origin = fault_proxy(&sim_url, FaultProfile::load(&profile)?).await?;
    let manifest = sim_manifest(&sim_url)?
        .replace(
            &format!("authority = \"{sim_url}/azure\""),
            &format!("authority = \"{}/azure\"", token_origin.url),
        )
        .replace(
            &format!("allowed_hosts = [\"{sim_url}\"]"),
            &format!("allowed_hosts = [\"{sim_url}\", \"{}\"]", token_origin.url),
        );
    anyhow::ensure!(manifest.contains(&token_origin.url), "{manifest}");
    let report = crate::conformance::run_kit_against(
        "azure-proxy",
        plugin_component("azure"),
        manifest,
        Target::FaultProxy {
            profile,
            base_url_key: "base-url".into(),
        },
        secrets.into_iter().collect::<BTreeMap<_, _>>(),
        |options| options.paging_servers = Some(4),
    )
    .await?;
    crate::conformance::passed_every_suite(&report);
    assert!(report.target.contains("fault proxy"), "{}", report.target);
    assert_no_network_left(&sim_url).await
}

/// The kit's leftover sweep counts what a VM leaves at Azure besides itself: a public IP
/// tagged with one of the run's keys (here made beside the run, as a plugin that forgot to
/// mark it `deleteOption: Delete` would leave it) fails `lifecycle.no-leftovers`, named
/// by its resource id, and the run is not passed.
#[tokio::test]
async fn the_kits_leftover_sweep_names_a_public_ip_the_run_left() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let secrets = register_app(&sim_url).await?;
    let run_id = "strayip";
    // The simulated ARM itself (not its control API): a resource another tool made.
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{sim_url}/azure/{TENANT}/oauth2/v2.0/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://management.azure.com/.default"),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let stray = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/\
         Microsoft.Network/publicIPAddresses/stray-ip"
    );
    http.put(format!("{sim_url}/azure{stray}?api-version=2024-05-01"))
        .bearer_auth(token["access_token"].as_str().unwrap_or_default())
        .json(&json!({
            "location": LOCATION,
            "sku": {"name": "Standard"},
            "tags": {"provisioner-idempotency-key": format!("conformance-{run_id}-99")},
            "properties": {"publicIPAllocationMethod": "Static"},
        }))
        .send()
        .await?
        .error_for_status()?;

    let report = kit_against_sim("azure-stray-ip", &sim_url, secrets, |options| {
        options.run_id = Some(run_id.into());
        options.suites = vec![provisioner_conformance::Suite::Lifecycle];
    })
    .await?;
    crate::conformance::failed_with(
        &report,
        "lifecycle.no-leftovers",
        "a Microsoft.Network/publicIPAddresses of the run (stray-ip)",
    );
    assert_eq!(report.leftovers.len(), 1, "{}", report.table());
    assert!(
        report.leftovers[0]
            .vendor_id
            .as_deref()
            .is_some_and(|id| id.eq_ignore_ascii_case(&stray)),
        "{:?}",
        report.leftovers
    );
    assert_eq!(report.leftovers[0].key, format!("conformance-{run_id}-99"));
    Ok(())
}
