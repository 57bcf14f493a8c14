//! Every vendor plugin, through the whole system against the simulator: create to
//! `active`, delete to `deleted`, adoption after a redelivery, and the vendor's refusals
//! mapped to the order's fault.

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions, fixture};
use reqwest::Method;
use serde_json::json;

/// An order reaches `active` with the vendor's id and address; `DELETE` takes it through
/// `deleting` to `deleted` and the simulator no longer has the server.
async fn create_then_delete(vendor: &str) -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let served = stack.vendors().await?;
    assert!(
        served.iter().any(|v| v == vendor),
        "{vendor} not in {served:?}"
    );

    let id = stack.order_at(vendor, "lifecycle-1").await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let server = &active["server"];
    assert!(
        server["vendor_id"].as_str().is_some_and(|v| !v.is_empty()),
        "{active}"
    );
    assert!(
        server["ipv4"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("203.0.")),
        "{active}"
    );
    assert_eq!(stack.sim_stats_of(vendor).await?["live"], 1);

    let (status, deleting) = stack.delete_order(&id).await?;
    assert_eq!(status, 202, "{deleting}");
    assert!(
        deleting["status"] == "deleting" || deleting["status"] == "deleted",
        "{deleting}"
    );
    let deleted = stack
        .wait_for_status(&id, "deleted", Duration::from_secs(60))
        .await?;
    assert_eq!(deleted["server"]["status"], "deleted");
    assert_eq!(
        stack.sim_stats_of(vendor).await?["live"],
        0,
        "the simulator still lists it"
    );
    // Asking again is harmless and answers the order as it is.
    let (again, order) = stack.delete_order(&id).await?;
    assert_eq!(again, 202);
    assert_eq!(order["status"], "deleted");
    stack.cleanup().await;
    Ok(())
}

/// 401 from the vendor fails the order with `unauthorized`, once, without retrying;
/// a size the vendor refuses (400/422) fails it with `invalid_request`.
async fn refusals_become_faults(vendor: &str) -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    stack
        .inject_fault(json!({"vendor": vendor, "kind": "unauthorized", "count": 100}))
        .await?;
    let id = stack.order_at(vendor, "refused-1").await?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "unauthorized", "{failed}");
    assert_eq!(failed["fault"]["retryable"], false);
    let failures = failed["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["status"] == "failed")
        .count();
    assert_eq!(failures, 1, "not retried: {failed}");
    let retried = failed["events"].as_array().into_iter().flatten().any(|e| {
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("retrying")
    });
    assert!(!retried, "a 401 is not retried: {failed}");
    assert_eq!(stack.sim_stats_of(vendor).await?["created_total"], 0);

    stack.clear_faults().await?;
    let fixture = fixture(vendor);
    let body = json!({
        "vendor": vendor, "region": fixture.region, "size": fixture.unknown_size,
        "image": fixture.image, "name": "refused-2",
    });
    let (status, _, _, order) = stack.post_order(&body.to_string()).await?;
    assert_eq!(status, 202, "{order}");
    let id = order["id"].as_str().unwrap_or_default().to_string();
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "invalid_request", "{failed}");
    assert_eq!(stack.sim_stats_of(vendor).await?["created_total"], 0);
    stack.cleanup().await;
    Ok(())
}

/// The host dies after the vendor made the server; the redelivered create adopts it (by the
/// idempotency key the plugin carried to the vendor) and the vendor holds exactly one.
pub async fn redelivered_create_adopts(vendor: &str) -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(3),
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_at(vendor, "survivor").await?;
    // Kill the moment the simulator has the server: the server needs 3 s to boot, so the
    // result cannot be out yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.sim_stats_of(vendor).await?["created_total"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the host never created the server\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack.kill_host().await;
    let before = stack.order(&id).await?;
    assert_ne!(
        before["status"], "active",
        "the result must not be out before the kill"
    );

    stack.start_host()?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let stats = stack.sim_stats_of(vendor).await?;
    assert_eq!(
        stats["created_total"], 1,
        "a second server was made: {stats}"
    );
    assert_eq!(stats["duplicates"], json!({}));
    let last = active["events"]
        .as_array()
        .and_then(|events| events.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["status"], "active");
    assert_eq!(
        last["attempt"], 2,
        "the result came from the redelivered request: {active}"
    );
    stack.cleanup().await;
    Ok(())
}

/// Hetzner: create to `active`, delete to `deleted`.
#[tokio::test]
async fn hetzner_order_runs_and_delete_removes_it() -> anyhow::Result<()> {
    create_then_delete("hetzner").await
}

/// DigitalOcean: create to `active`, delete to `deleted`.
#[tokio::test]
async fn digitalocean_order_runs_and_delete_removes_it() -> anyhow::Result<()> {
    create_then_delete("digitalocean").await
}

/// Hetzner: 401 -> `unauthorized`, 400 -> `invalid_request`.
#[tokio::test]
async fn hetzner_refusals_become_faults() -> anyhow::Result<()> {
    refusals_become_faults("hetzner").await
}

/// DigitalOcean: 401 -> `unauthorized`, 422 -> `invalid_request`.
#[tokio::test]
async fn digitalocean_refusals_become_faults() -> anyhow::Result<()> {
    refusals_become_faults("digitalocean").await
}

/// DigitalOcean: a redelivered create adopts the droplet tagged with the order id.
#[tokio::test]
async fn digitalocean_redelivered_create_adopts_the_droplet() -> anyhow::Result<()> {
    redelivered_create_adopts("digitalocean").await
}

/// Only an active order's server can be deleted; others get a 409 problem.
#[tokio::test]
async fn deleting_an_order_that_is_not_active_is_a_conflict() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(30),
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_at("hetzner", "still-booting").await?;
    let (status, problem) = stack.delete_order(&id).await?;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["type"], "/problems/conflict");
    let (status, _) = stack
        .delete_order("01a214ad-8f77-7594-b368-8b00cb215ee4")
        .await?;
    assert_eq!(status, 404);
    stack.cleanup().await;
    Ok(())
}

/// OpenStack: create to `active`, delete to `deleted`.
#[tokio::test]
async fn openstack_order_runs_and_delete_removes_it() -> anyhow::Result<()> {
    create_then_delete("openstack").await
}

/// OpenStack: 401 from Keystone -> `unauthorized`, an unknown flavor -> `invalid_request`.
#[tokio::test]
async fn openstack_refusals_become_faults() -> anyhow::Result<()> {
    refusals_become_faults("openstack").await
}

/// OpenStack: a redelivered create adopts the server carrying the order id in its metadata.
#[tokio::test]
async fn openstack_redelivered_create_adopts_the_server() -> anyhow::Result<()> {
    redelivered_create_adopts("openstack").await
}

/// Rate limits and 5xx while polling a booting server are not the order's failure: the host
/// waits (honouring the vendor's reset time) and polls again, and the order still runs.
#[tokio::test]
async fn passing_vendor_failures_while_polling_do_not_fail_the_order() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(2),
        ..StackOptions::default()
    })
    .await?;
    for (vendor, kind) in [
        (
            "digitalocean",
            json!({"kind": "rate_limit", "retry_after_secs": 1}),
        ),
        ("hetzner", json!({"kind": "server_error", "status": 503})),
    ] {
        let mut rule = kind.clone();
        rule["vendor"] = json!(vendor);
        rule["method"] = json!("GET");
        rule["count"] = json!(3);
        let id = stack.order_at(vendor, "flaky-1").await?;
        // Arm once the create is through, so only the polls meet the faults.
        stack
            .wait_for_status(&id, "provisioning", Duration::from_secs(30))
            .await?;
        stack.inject_fault(rule).await?;
        let active = stack
            .wait_for_status(&id, "active", Duration::from_secs(60))
            .await?;
        assert_eq!(active["server"]["status"], "running", "{active}");
        let faults = stack.sim().faults().armed().await?;
        assert!(faults.is_empty(), "every armed fault was hit: {faults:?}");
    }
    stack.cleanup().await;
    Ok(())
}

/// Every plugin works over HTTPS: the simulator serves TLS with a CA it made, and each
/// plugin's manifest trusts that CA (`ca_certificates`); orders run and delete as over HTTP.
#[tokio::test]
async fn every_vendor_works_over_tls_with_a_private_ca() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        tls: true,
        ..StackOptions::default()
    })
    .await?;
    for vendor in ["hetzner", "digitalocean", "openstack"] {
        let id = stack.order_at(vendor, "tls-1").await?;
        let active = stack
            .wait_for_status(&id, "active", Duration::from_secs(60))
            .await?;
        assert_eq!(active["server"]["status"], "running", "{vendor}: {active}");
        let (status, _) = stack.delete_order(&id).await?;
        assert_eq!(status, 202);
        stack
            .wait_for_status(&id, "deleted", Duration::from_secs(60))
            .await?;
    }
    stack.cleanup().await;
    Ok(())
}

/// `GET /v1/vendors/{vendor}/catalogue` serves what the vendor's plugin accepts, as its host
/// announced it (hetzner's plugin lists its public locations when the manifest lists none),
/// to any caller; a vendor no host serves is a 404.
#[tokio::test]
async fn a_vendors_catalogue_comes_from_its_plugin() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let catalogue = stack.api().get("/v1/vendors/hetzner/catalogue").await?;
    assert_eq!(catalogue["vendor"], "hetzner", "{catalogue}");
    let regions = catalogue["regions"]
        .as_array()
        .unwrap_or_else(|| panic!("no regions listed: {catalogue}"));
    for location in ["fsn1", "nbg1", "hel1"] {
        assert!(regions.iter().any(|r| r == location), "{catalogue}");
    }
    // Sizes and images: the test manifest lists none, and the plugin has no built-in list.
    assert!(catalogue["sizes"].is_null(), "{catalogue}");
    let unknown = stack
        .api()
        .send_raw(Method::GET, "/v1/vendors/nowhere/catalogue", None)
        .await?;
    assert_eq!(unknown.status(), 404);
    stack.cleanup().await;
    Ok(())
}
