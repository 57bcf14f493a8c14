//! The conformance kit: the three bundled plugins pass every suite against the simulator;
//! each broken fixture fails the check it violates with a message an author can act on;
//! the command's exit code, JSON and JUnit outputs. [`proxy`]: the same through the fault
//! proxy, for a vendor the kit knows nothing about, and under rate limiting.

mod proxy;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use provisioner_conformance::{KitOptions, Outcome, Report, Target};
use provisioner_tests::{
    VENDORS, binary, fixture, plugin_component, simulator_in_process, target_dir,
    test_plugin_component, workspace_root,
};

/// A fresh folder for one test's manifests.
pub(crate) fn workdir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("test-runs").join(format!(
        "conformance-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs every suite in-process with `manifest` (written to a file) against the simulator
/// acting as `sim_vendor`.
async fn run_kit(
    name: &str,
    component: PathBuf,
    manifest: String,
    sim_url: &str,
    sim_vendor: &str,
    secrets: BTreeMap<String, String>,
) -> anyhow::Result<Report> {
    let target = Target::Simulator {
        url: sim_url.to_string(),
        vendor: sim_vendor.to_string(),
    };
    run_kit_against(name, component, manifest, target, secrets, |_| {}).await
}

/// Runs every suite in-process with `manifest` (written to a file) against `target`, a 5 s
/// boot timeout and `secrets`; `adjust` changes the options further.
pub(crate) async fn run_kit_against(
    name: &str,
    component: PathBuf,
    manifest: String,
    target: Target,
    secrets: BTreeMap<String, String>,
    adjust: impl FnOnce(&mut KitOptions),
) -> anyhow::Result<Report> {
    let path = workdir(name)?.join(format!("{name}.toml"));
    std::fs::write(&path, manifest)?;
    let mut options = KitOptions {
        boot_timeout: Duration::from_secs(5),
        secrets: Some(secrets),
        ..KitOptions::new(component, path, target)
    };
    adjust(&mut options);
    Ok(provisioner_conformance::run(options, &mut |_| {}).await)
}

/// The broken fixture's manifest with `flaw`, speaking the Hetzner API at `api_url` (the
/// simulator's `/hetzner/v1`, or a proxy in front of it).
pub(crate) fn broken_manifest(flaw: &str, origin: &str, api_url: &str) -> String {
    let hetzner = fixture("hetzner");
    format!(
        "vendor = \"broken\"\ncomponent = \"unused.wasm\"\nallowed_hosts = [{origin:?}]\n\
         [config]\nvendor-id = \"broken\"\nflaw = {flaw:?}\nbase-url = \"{api_url}\"\n\
         regions = {:?}\nsizes = {:?}\nimages = {:?}\n\
         [secrets]\ntoken = \"PLUGIN_SECRET_BROKEN_TOKEN\"\n",
        hetzner.region, hetzner.size, hetzner.image
    )
}

/// The broken fixture's secret, as the simulator's Hetzner API takes it.
pub(crate) fn broken_secrets() -> BTreeMap<String, String> {
    BTreeMap::from([(
        "PLUGIN_SECRET_BROKEN_TOKEN".to_string(),
        fixture("hetzner").secret.1.to_string(),
    )])
}

/// The broken fixture (it speaks the simulator's Hetzner API) with `flaw`.
async fn broken(flaw: &str, sim_url: &str) -> anyhow::Result<Report> {
    run_kit(
        &format!("broken-{flaw}"),
        test_plugin_component("broken"),
        broken_manifest(flaw, sim_url, &format!("{sim_url}/hetzner/v1")),
        sim_url,
        "hetzner",
        broken_secrets(),
    )
    .await
}

/// Asserts the report passed with every suite passing something and nothing skipped.
pub(crate) fn passed_every_suite(report: &Report) {
    assert!(report.passed(), "{}", report.table());
    for suite in ["contract", "sandbox", "faults", "lifecycle", "idempotency"] {
        assert!(
            report
                .checks
                .iter()
                .any(|c| c.suite == suite && c.outcome == Outcome::Pass),
            "no check of the {suite} suite passed:\n{}",
            report.table()
        );
    }
    assert_eq!(report.count(Outcome::Skip), 0, "{}", report.table());
}

/// Asserts `check` failed and its detail says `says`.
pub(crate) fn failed_with(report: &Report, check: &str, says: &str) {
    let result = report
        .check(check)
        .unwrap_or_else(|| panic!("{check} did not run:\n{}", report.table()));
    assert_eq!(result.outcome, Outcome::Fail, "{}", report.table());
    assert!(
        result.detail.contains(says),
        "{check} should say {says:?}:\n{}",
        report.table()
    );
    assert!(!report.passed());
}

/// `sandbox.cache-isolated` passed by comparing what the two loads asked of the vendor: a
/// plugin that keeps a token saves requests by it, and the second load did not.
/// Nothing skipped, but where the vendor has no capacity refusal of its own to read
/// (DigitalOcean's is a 422 like any invalid size, Nova's a server in ERROR): there
/// `faults.no-capacity` alone is skipped, saying why.
pub(crate) fn nothing_skipped_but_capacity_where_the_vendor_has_none(
    report: &Report,
    vendor: &str,
) {
    let skipped: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.outcome == Outcome::Skip)
        .map(|c| format!("{}.{}", c.suite, c.check))
        .collect();
    let expected: &[&str] = match vendor {
        "digitalocean" | "openstack" => &["faults.no-capacity"],
        _ => &[],
    };
    assert_eq!(skipped, expected, "{}", report.table());
}

pub(crate) fn isolation_was_seen(report: &Report) {
    let check = report
        .check("sandbox.cache-isolated")
        .unwrap_or_else(|| panic!("sandbox.cache-isolated did not run:\n{}", report.table()));
    assert_eq!(check.outcome, Outcome::Pass, "{}", report.table());
    assert!(
        check.detail.contains("could not read A's entries"),
        "{}",
        report.table()
    );
}

/// All three bundled plugins pass every check of every suite against the simulator.
#[tokio::test]
async fn the_bundled_plugins_pass_every_suite() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    for vendor in VENDORS {
        let secrets = BTreeMap::from([(vendor.secret_variable(), vendor.secret.1.to_string())]);
        let report = run_kit(
            vendor.vendor,
            plugin_component(vendor.vendor),
            vendor.manifest_with_catalogue(&sim_url),
            &sim_url,
            vendor.vendor,
            secrets,
        )
        .await?;
        assert!(report.passed(), "{}", report.table());
        nothing_skipped_but_capacity_where_the_vendor_has_none(&report, vendor.vendor);
        assert!(report.checks.len() >= 22, "{}", report.table());
        if vendor.vendor == "openstack" {
            // Its Keystone token is cached.
            isolation_was_seen(&report);
        }
    }
    Ok(())
}

/// The template (plugins/example, for the simulator's Example Cloud) passes every check
/// with the simulator manifest it ships.
#[tokio::test]
async fn the_template_plugin_passes_every_suite() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let shipped = std::fs::read_to_string(workspace_root().join("plugins/example/sim.toml"))?;
    let manifest = shipped.replace("http://127.0.0.1:18190", &sim_url);
    let secrets = BTreeMap::from([(
        "PLUGIN_SECRET_EXAMPLE_TOKEN".to_string(),
        vendor_sim::state::DEFAULT_EXAMPLE_TOKEN.to_string(),
    )]);
    let report = run_kit(
        "example",
        plugin_component("example"),
        manifest,
        &sim_url,
        "example",
        secrets,
    )
    .await?;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.count(Outcome::Skip), 0, "{}", report.table());
    Ok(())
}

/// The broken fixture without a flaw passes (so each flaw below is what fails).
#[tokio::test]
async fn the_broken_fixture_without_its_flaw_passes() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let report = broken("none", &sim_url).await?;
    assert!(report.passed(), "{}", report.table());
    Ok(())
}

/// Each flaw fails the check it violates, saying what was expected and what came back.
#[tokio::test]
async fn each_broken_fixture_fails_the_check_it_violates() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    // Each flaw, and the (check, words of its failure) it must fail with.
    let flaws: &[(&str, &[(&str, &str)])] = &[
        // The order form would offer a region the plugin then refuses.
        (
            "catalogue-lists-more",
            &[(
                "contract.catalogue",
                "validate refused values the catalogue lists",
            )],
        ),
        (
            "duplicates",
            &[
                ("idempotency.same-key", "create must look its key up first"),
                ("faults.lost-response", "expected one server for the key"),
            ],
        ),
        (
            "transient-401",
            &[(
                "faults.unauthorized",
                "expected unauthorized, got transient",
            )],
        ),
        (
            "never-running",
            &[(
                "lifecycle.running",
                "expected running within 5 s, still provisioning",
            )],
        ),
        (
            "leaky-delete",
            &[
                ("lifecycle.gone", "expected not-found or deleted"),
                ("lifecycle.no-leftovers", "expected nothing left"),
            ],
        ),
        (
            "first-page-only",
            &[("lifecycle.every-page", "must follow the vendor's next page")],
        ),
        // Hetzner's names are unique per account: the name as it is blocks another key's.
        (
            "shared-names",
            &[(
                "idempotency.same-name",
                "must make the vendor-side name unique per key",
            )],
        ),
        // One order's servers have keys that differ only at their end. Created at once, they
        // get one server between them, or each its own and then a look-up finds another's:
        // either way the kit names the flaw.
        (
            "trimmed-keys",
            &[(
                "idempotency.siblings",
                "keys that differ only at their end were taken for one (compare the whole key, never a prefix)",
            )],
        ),
        (
            "capacity-as-transient",
            &[(
                "faults.no-capacity",
                "expected no-capacity (the vendor cannot place the server there now",
            )],
        ),
        (
            "drops-inputs",
            &[
                ("lifecycle.inputs", "the SSH public key"),
                ("lifecycle.inputs", "never drop it"),
            ],
        ),
        ("drops-user-data", &[("lifecycle.inputs", "the user data")]),
        // The first create of an order goes out without a look-up: its server must carry
        // the key, or the order's retry makes a second one.
        (
            "create-new-unkeyed",
            &[("idempotency.create-new", "must carry the key")],
        ),
    ];
    for &(flaw, failures) in flaws {
        let report = broken(flaw, &sim_url).await?;
        for (check, words) in failures {
            failed_with(&report, check, words);
        }
    }
    Ok(())
}

/// A component built against another WIT major fails `contract.world`, and nothing else
/// runs.
#[tokio::test]
async fn a_plugin_of_another_wit_major_fails_the_contract() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let manifest = "vendor = \"future\"\ncomponent = \"unused.wasm\"\n".to_string();
    let report = run_kit(
        "future",
        test_plugin_component("future"),
        manifest,
        &sim_url,
        "hetzner",
        BTreeMap::new(),
    )
    .await?;
    failed_with(
        &report,
        "contract.world",
        "does not implement the provisioner:provider/provider-plugin world",
    );
    assert_eq!(report.checks.len(), 1, "{}", report.table());
    Ok(())
}

/// The command: exit 0 and a JSON report and JUnit file for a fit plugin; exit 1 for an
/// unfit one.
#[tokio::test]
async fn the_command_reports_as_json_and_junit_and_exits_by_the_verdict() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let dir = workdir("command")?;
    let hetzner = fixture("hetzner");
    let manifest = dir.join("hetzner.toml");
    std::fs::write(&manifest, hetzner.manifest_with_catalogue(&sim_url))?;
    let junit = dir.join("junit.xml");
    let output = tokio::process::Command::new(binary("debug", "provisioner-conformance"))
        .arg(plugin_component("hetzner"))
        .arg("--manifest")
        .arg(&manifest)
        .args([
            "--vendor-sim",
            &sim_url,
            "--format",
            "json",
            "--boot-timeout-secs",
            "10",
        ])
        .arg("--junit")
        .arg(&junit)
        .env(hetzner.secret_variable(), hetzner.secret.1)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(report["failed"], 0, "{report:#}");
    assert!(report["passed"].as_u64().unwrap_or(0) >= 20, "{report:#}");
    let xml = std::fs::read_to_string(&junit)?;
    assert!(xml.contains("<testsuite name=\"faults\""), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");

    // The leaky fixture: exit 1, the failure in the table and in the JUnit file.
    let leaky = dir.join("broken.toml");
    std::fs::write(
        &leaky,
        format!(
            "vendor = \"broken\"\ncomponent = \"x.wasm\"\nallowed_hosts = [{sim_url:?}]\n\
             [config]\nflaw = \"transient-401\"\nbase-url = \"{sim_url}/hetzner/v1\"\n\
             regions = \"fsn1\"\nsizes = \"cx22\"\nimages = \"ubuntu-24.04\"\n\
             [secrets]\ntoken = \"PLUGIN_SECRET_BROKEN_TOKEN\"\n"
        ),
    )?;
    let output = tokio::process::Command::new(binary("debug", "provisioner-conformance"))
        .arg(test_plugin_component("broken"))
        .arg("--manifest")
        .arg(&leaky)
        .args([
            "--vendor-sim",
            &sim_url,
            "--sim-vendor",
            "hetzner",
            "--suite",
            "faults",
        ])
        .arg("--junit")
        .arg(&junit)
        .env("PLUGIN_SECRET_BROKEN_TOKEN", hetzner.secret.1)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL  faults.unauthorized"), "{stdout}");
    assert!(std::fs::read_to_string(&junit)?.contains("<failure"));

    // A run id that cannot go into labels is bad arguments.
    let output = tokio::process::Command::new(binary("debug", "provisioner-conformance"))
        .arg(plugin_component("hetzner"))
        .arg("--manifest")
        .arg(&manifest)
        .args(["--vendor-sim", &sim_url, "--run-id", "Run_1"])
        .output()
        .await?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("lowercase letters and digits"), "{stderr}");
    Ok(())
}
