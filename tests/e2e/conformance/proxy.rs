//! The conformance kit through its fault proxy, for a vendor it knows nothing about: the
//! bundled plugins and the template pass every suite through it; a one-page lister and a
//! plugin that drops user data fail it (a blind `--live` run cannot see either and skips,
//! saying why); a rate-limited vendor neither fails a good plugin nor keeps a server the
//! run made; deletes that never succeed end with every leftover's vendor id named and a
//! failed exit.
//!
//! The "vendor the kit does not know" is one of the simulator's APIs (Hetzner's for the
//! broken fixture) reached as an ordinary upstream: the kit is given no `--vendor-sim`, only
//! the manifest's base URL and the vendor's fault profile, so it sees what any vendor would
//! show it. Where a test needs a rate-limited vendor, a second proxy (vendor-sim's, with a
//! standing `rate_limit_per_second`, or a 429 for every delete) stands in front of the
//! simulator as that vendor.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use provisioner_conformance::{Outcome, Report, Target};
use provisioner_tests::simulator::{arm_fault_at, fault_proxy};
use provisioner_tests::{
    VENDORS, binary, fixture, plugin_component, simulator_in_process, test_plugin_component,
    workspace_root,
};
use serde_json::{Value, json};
use vendor_sim::control_client::SimClient;
use vendor_sim::proxy::{FaultProfile, ProxyHandle};

use super::{
    broken_manifest, broken_secrets, failed_with,
    nothing_skipped_but_capacity_where_the_vendor_has_none, run_kit_against, workdir,
};

/// A shipped plugin's fault profile.
fn profile(vendor: &str) -> PathBuf {
    workspace_root()
        .join("plugins")
        .join(vendor)
        .join("faults.toml")
}

/// A `--fault-proxy` target with `vendor`'s profile in front of the manifest's `key`.
fn through_proxy(vendor: &str, key: &str) -> Target {
    Target::FaultProxy {
        profile: profile(vendor),
        base_url_key: key.to_string(),
    }
}

/// A vendor-sim proxy in front of the simulator at `sim_url`, rendering faults as
/// `vendor` does, with `rule` armed: a rate-limited vendor.
async fn limited_vendor(sim_url: &str, vendor: &str, rule: Value) -> anyhow::Result<ProxyHandle> {
    let proxy = fault_proxy(sim_url, FaultProfile::load(&profile(vendor))?).await?;
    arm_fault_at(&proxy.url, rule).await?;
    Ok(proxy)
}

/// The simulator's live servers carrying the label of run `run_id`.
async fn servers_of_run(sim_url: &str, run_id: &str) -> anyhow::Result<Vec<Value>> {
    let servers = SimClient::new(sim_url).servers().await?;
    Ok(servers
        .into_iter()
        .map(|server| json!(server))
        .filter(|server| server["labels"]["provisioner-conformance"] == run_id)
        .collect())
}

/// Asserts `check` was skipped saying `says`.
fn skipped_with(report: &Report, check: &str, says: &str) {
    let result = report
        .check(check)
        .unwrap_or_else(|| panic!("{check} did not run:\n{}", report.table()));
    assert_eq!(result.outcome, Outcome::Skip, "{}", report.table());
    assert!(
        result.detail.contains(says),
        "{check} should say {says:?}:\n{}",
        report.table()
    );
}

/// The three bundled plugins and the template pass every check of every suite through the
/// fault proxy in front of their API, the kit told nothing about the simulator behind it.
#[tokio::test]
async fn the_bundled_plugins_and_the_template_pass_every_suite_through_the_fault_proxy()
-> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    for vendor in VENDORS {
        let key = if vendor.vendor == "openstack" {
            "auth-url"
        } else {
            "base-url"
        };
        let secrets = BTreeMap::from([(vendor.secret_variable(), vendor.secret.1.to_string())]);
        let report = run_kit_against(
            &format!("proxy-{}", vendor.vendor),
            plugin_component(vendor.vendor),
            vendor.manifest_with_catalogue(&sim_url),
            through_proxy(vendor.vendor, key),
            secrets,
            |_| {},
        )
        .await?;
        assert!(report.passed(), "{}", report.table());
        nothing_skipped_but_capacity_where_the_vendor_has_none(&report, vendor.vendor);
        assert!(report.checks.len() >= 22, "{}", report.table());
        assert!(report.target.contains("fault proxy"), "{}", report.target);
        assert!(
            servers_of_run(&sim_url, report.run_id.as_deref().unwrap_or("?"))
                .await?
                .is_empty()
        );
    }
    let shipped = std::fs::read_to_string(workspace_root().join("plugins/example/sim.toml"))?;
    let manifest = shipped.replace("http://127.0.0.1:18190", &sim_url);
    let secrets = BTreeMap::from([(
        "PLUGIN_SECRET_EXAMPLE_TOKEN".to_string(),
        vendor_sim::state::DEFAULT_EXAMPLE_TOKEN.to_string(),
    )]);
    let report = run_kit_against(
        "proxy-example",
        plugin_component("example"),
        manifest,
        through_proxy("example", "base-url"),
        secrets,
        |_| {},
    )
    .await?;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.count(Outcome::Skip), 0, "{}", report.table());
    Ok(())
}

/// For a vendor the kit knows nothing about, through the proxy: the broken fixture without
/// a flaw passes; a one-page lister fails `lifecycle.every-page` (pages of one, two
/// servers), one that makes a second server when a create's answer is lost fails
/// `faults.lost-response` (two create requests succeeded), and a plugin that drops the user
/// data fails `lifecycle.inputs` (no request carried it). A blind live run of the same plugins cannot see either: it skips both
/// checks saying what would show them, where it used to pass them.
#[tokio::test]
async fn through_the_proxy_the_kit_fails_a_one_page_lister_and_dropped_user_data()
-> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let api = format!("{sim_url}/hetzner/v1");
    let run = |flaw: &'static str, target: Target| {
        let manifest = broken_manifest(flaw, &sim_url, &api);
        async move {
            run_kit_against(
                &format!("unknown-{flaw}"),
                test_plugin_component("broken"),
                manifest,
                target,
                broken_secrets(),
                |_| {},
            )
            .await
        }
    };

    let report = run("none", through_proxy("hetzner", "base-url")).await?;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.count(Outcome::Skip), 0, "{}", report.table());

    let report = run("first-page-only", through_proxy("hetzner", "base-url")).await?;
    failed_with(
        &report,
        "lifecycle.every-page",
        "must follow the vendor's next page",
    );
    failed_with(&report, "lifecycle.every-page", "pages of 1");

    // The vendor's count through the proxy: the lost answer's retry made a second server.
    let report = run("duplicates", through_proxy("hetzner", "base-url")).await?;
    failed_with(
        &report,
        "faults.lost-response",
        "expected one server for the key after the retry, the vendor has 2",
    );
    assert!(report.leftovers.is_empty(), "{}", report.table());

    let report = run("drops-user-data", through_proxy("hetzner", "base-url")).await?;
    failed_with(&report, "lifecycle.inputs", "the user data");
    failed_with(&report, "lifecycle.inputs", "never drop it");
    assert!(
        !report
            .check("lifecycle.inputs")
            .is_some_and(|c| c.detail.contains("the SSH public key")),
        "{}",
        report.table()
    );

    for flaw in ["first-page-only", "drops-user-data"] {
        let report = run(flaw, Target::Live).await?;
        skipped_with(&report, "lifecycle.every-page", "--paging-servers");
        skipped_with(&report, "lifecycle.inputs", "--fault-proxy");
        skipped_with(&report, "faults.lost-response", "--fault-proxy");
        assert!(report.passed(), "{}", report.table());
    }
    Ok(())
}

/// A blind run allowed to make more servers than the vendor's page (`--paging-servers 51`
/// against Hetzner's pages of 50) passes a plugin that follows the next page and fails a
/// one-page lister.
#[tokio::test]
async fn a_blind_run_making_more_servers_than_a_page_fails_a_one_page_lister() -> anyhow::Result<()>
{
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let api = format!("{sim_url}/hetzner/v1");
    for flaw in ["none", "first-page-only"] {
        let report = run_kit_against(
            &format!("paging-servers-{flaw}"),
            test_plugin_component("broken"),
            broken_manifest(flaw, &sim_url, &api),
            Target::Live,
            broken_secrets(),
            |options| options.paging_servers = Some(51),
        )
        .await?;
        let every_page = report
            .check("lifecycle.every-page")
            .unwrap_or_else(|| panic!("no every-page:\n{}", report.table()));
        if flaw == "none" {
            assert_eq!(every_page.outcome, Outcome::Pass, "{}", report.table());
            assert!(
                every_page.detail.contains("all 52 servers"),
                "{}",
                report.table()
            );
        } else {
            failed_with(
                &report,
                "lifecycle.every-page",
                "must follow the vendor's next page",
            );
        }
        let run_id = report.run_id.as_deref().unwrap_or("?");
        assert!(
            servers_of_run(&sim_url, run_id).await?.is_empty(),
            "{}",
            report.table()
        );
    }
    Ok(())
}

/// Against a vendor that answers 429 beyond 3 requests a second, the whole kit run through
/// the proxy passes the Hetzner plugin (the kit waits out `rate-limited` as the host does)
/// and leaves no server of the run at the vendor, though the vendor refused requests.
#[tokio::test]
async fn a_rate_limited_vendor_fails_no_check_and_keeps_no_server() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let limited = limited_vendor(
        &sim_url,
        "hetzner",
        json!({"kind": "rate_limit_per_second", "limit": 3}),
    )
    .await?;
    let hetzner = fixture("hetzner");
    let secrets = BTreeMap::from([(hetzner.secret_variable(), hetzner.secret.1.to_string())]);
    let report = run_kit_against(
        "rate-limited",
        plugin_component("hetzner"),
        hetzner.manifest_with_catalogue(&limited.url),
        through_proxy("hetzner", "base-url"),
        secrets,
        |options| options.boot_timeout = Duration::from_secs(60),
    )
    .await?;
    let refused = limited
        .recorded_requests()
        .iter()
        .filter(|r| r.fault.as_deref() == Some("rate_limit_per_second"))
        .count();
    assert!(refused > 0, "the vendor never limited:\n{}", report.table());
    assert!(
        report.passed(),
        "{refused} requests refused\n{}",
        report.table()
    );
    assert!(report.leftovers.is_empty(), "{}", report.table());
    let run_id = report.run_id.as_deref().unwrap_or("?");
    let left = servers_of_run(&sim_url, run_id).await?;
    assert!(
        left.is_empty(),
        "left at the vendor: {left:?}\n{}",
        report.table()
    );
    eprintln!(
        "rate-limited run: {} checks passed, {refused} requests answered 429 by the vendor",
        report.count(Outcome::Pass)
    );
    Ok(())
}

/// When every delete is answered 429, the command retries them until its time limit, then
/// names the vendor id of every server of the run still at the vendor (exactly those the
/// simulator has) and exits 1.
#[tokio::test]
async fn deletes_that_never_succeed_end_naming_every_leftover_and_exit_1() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let limited = limited_vendor(
        &sim_url,
        "hetzner",
        json!({"kind": "rate_limit", "retry_after_secs": 1, "count": 1_000_000, "method": "DELETE"}),
    )
    .await?;
    let hetzner = fixture("hetzner");
    let manifest = workdir("leftovers")?.join("hetzner.toml");
    std::fs::write(&manifest, hetzner.manifest_with_catalogue(&limited.url))?;
    let output = tokio::process::Command::new(binary("debug", "provisioner-conformance"))
        .arg(plugin_component("hetzner"))
        .arg("--manifest")
        .arg(&manifest)
        .arg("--fault-proxy")
        .arg(profile("hetzner"))
        .args([
            "--suite",
            "lifecycle,idempotency",
            "--boot-timeout-secs",
            "5",
            "--retry-secs",
            "2",
            "--format",
            "json",
        ])
        .env(hetzner.secret_variable(), hetzner.secret.1)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout)?;
    let run_id = report["run_id"].as_str().unwrap_or("?");
    let named: BTreeSet<String> = report["leftovers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["vendor_id"].as_str().map(str::to_string))
        .collect();
    let at_vendor: BTreeSet<String> = servers_of_run(&sim_url, run_id)
        .await?
        .iter()
        .map(|s| s["id"].to_string())
        .collect();
    assert!(at_vendor.len() >= 3, "{at_vendor:?}\n{stdout}");
    assert_eq!(named, at_vendor, "{stdout}");
    assert!(stderr.contains("LEFT AT THE VENDOR"), "{stderr}");
    for id in &at_vendor {
        assert!(
            stderr.contains(&format!("vendor id {id} ")),
            "{id} not named:\n{stderr}"
        );
    }
    let no_leftovers = report["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["check"] == "no-leftovers")
        .cloned()
        .unwrap_or_default();
    assert_eq!(no_leftovers["outcome"], "fail", "{stdout}");
    eprintln!(
        "deletes refused: {} leftovers named, the simulator has {}",
        named.len(),
        at_vendor.len()
    );
    Ok(())
}
