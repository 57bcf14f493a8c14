//! The plugin author's path out of this repository: `scripts/new-plugin.sh` makes a project
//! of its own in a clean folder outside the checkout (the SDK by path, or by git from a
//! repository holding it), it builds there with `cargo build --locked` (its lockfile pins
//! every crate), and the plugin it builds passes every suite of the conformance kit against
//! the simulator, under a vendor id of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use provisioner_conformance::{KitOptions, Outcome, Target};
use provisioner_tests::{simulator_in_process, target_dir, workspace_root};
use tokio::process::Command;

/// The vendor id the new plugin gets (the one by git gets another: its own component).
const VENDOR: &str = "acme-cloud";

/// A fresh folder outside the checkout.
fn outside(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "provisioner-author-path-{name}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    anyhow::ensure!(
        !dir.starts_with(workspace_root()),
        "{} is inside the checkout",
        dir.display()
    );
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Runs `command`, failing with its output when it does not succeed.
async fn run(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let output = command
        .output()
        .await
        .with_context(|| format!("starting {what}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// `scripts/new-plugin.sh <project> <vendor> <sdk arguments>`.
async fn new_plugin(project: &Path, vendor: &str, sdk: &[&str]) -> anyhow::Result<()> {
    run(
        Command::new("bash")
            .arg(workspace_root().join("scripts/new-plugin.sh"))
            .arg(project)
            .arg(vendor)
            .args(sdk),
        "scripts/new-plugin.sh",
    )
    .await?;
    let cargo_toml = std::fs::read_to_string(project.join("Cargo.toml"))?;
    assert!(cargo_toml.contains("\n[workspace]\n"), "{cargo_toml}");
    assert!(cargo_toml.contains("\n[profile.release]\n"), "{cargo_toml}");
    assert!(project.join("Cargo.lock").exists());
    Ok(())
}

/// Builds the project as its author would, with `--locked`; the component it made. The
/// build's output goes to one folder under the workspace's target (reused from run to run,
/// so only the first run compiles every crate); the project folder itself starts clean.
async fn build_locked(project: &Path, vendor: &str) -> anyhow::Result<PathBuf> {
    let target = target_dir().join("author-path");
    run(
        Command::new("cargo")
            .current_dir(project)
            .args([
                "build",
                "--locked",
                "--release",
                "--target",
                "wasm32-wasip2",
            ])
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS"),
        &format!("cargo build --locked in {}", project.display()),
    )
    .await?;
    let component = target.join(format!(
        "wasm32-wasip2/release/{}_plugin.wasm",
        vendor.replace('-', "_")
    ));
    anyhow::ensure!(component.exists(), "{} was not built", component.display());
    Ok(component)
}

/// Runs every suite of the kit on `component` with the project's `sim.toml`.
async fn kit_passes(project: &Path, component: PathBuf) -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let shipped = std::fs::read_to_string(project.join("sim.toml"))?;
    assert!(
        shipped.contains(&format!("vendor = \"{VENDOR}\"")),
        "{shipped}"
    );
    let manifest = project.join("sim-here.toml");
    std::fs::write(
        &manifest,
        shipped.replace("http://127.0.0.1:18190", &sim_url),
    )?;
    let target = Target::Simulator {
        url: sim_url,
        vendor: "example".into(),
    };
    let options = KitOptions {
        boot_timeout: Duration::from_secs(5),
        secrets: Some(BTreeMap::from([(
            "PLUGIN_SECRET_ACME_CLOUD_TOKEN".to_string(),
            vendor_sim::state::DEFAULT_EXAMPLE_TOKEN.to_string(),
        )])),
        ..KitOptions::new(component, manifest, target)
    };
    let report = provisioner_conformance::run(options, &mut |_| {}).await;
    assert!(report.passed(), "{}", report.table());
    assert_eq!(report.count(Outcome::Skip), 0, "{}", report.table());
    assert!(report.checks.len() >= 20, "{}", report.table());
    Ok(())
}

/// From a clean folder outside the checkout, with the SDK by path: the template becomes a
/// plugin of its own vendor id, builds with `--locked` and passes every suite of the kit.
#[tokio::test]
async fn a_plugin_started_out_of_tree_builds_locked_and_passes_the_kit() -> anyhow::Result<()> {
    let project = outside("path")?.join(VENDOR);
    let sdk = workspace_root().join("plugins/sdk").display().to_string();
    new_plugin(&project, VENDOR, &["--sdk-path", &sdk]).await?;
    let lib = std::fs::read_to_string(project.join("src/lib.rs"))?;
    assert!(lib.contains("const VENDOR: &str = \"acme-cloud\";"));
    assert!(lib.contains("export_provider!(AcmeCloudPlugin)"));
    let manifest = std::fs::read_to_string(project.join("manifest.toml"))?;
    assert!(
        manifest.contains("PLUGIN_SECRET_ACME_CLOUD_TOKEN"),
        "{manifest}"
    );
    assert!(
        manifest.contains("component = \"acme-cloud.wasm\""),
        "{manifest}"
    );

    let component = build_locked(&project, VENDOR).await?;
    kit_passes(&project, component).await
}

/// Copies `from` into `to`, leaving out build output (`target`).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == "target" {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_tree(&path, &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// With the SDK by git (`--sdk-git URL --sdk-rev COMMIT`): a repository holding this
/// checkout's SDK, its workspace and the WIT files, as an author's clone of this
/// repository would; the project's lockfile records the commit and it builds `--locked`.
#[tokio::test]
async fn a_plugin_with_the_sdk_by_git_builds_locked() -> anyhow::Result<()> {
    let root = outside("git")?;
    let repo = root.join("provisioner");
    copy_tree(&workspace_root().join("plugins"), &repo.join("plugins"))?;
    copy_tree(&workspace_root().join("wit"), &repo.join("wit"))?;
    let git = |args: &[&str]| {
        let mut command = Command::new("git");
        command
            .current_dir(&repo)
            .args([
                "-c",
                "user.name=author",
                "-c",
                "user.email=author@example.com",
            ])
            .args(args);
        command
    };
    run(&mut git(&["init", "--quiet"]), "git init").await?;
    run(&mut git(&["add", "--all"]), "git add").await?;
    run(
        &mut git(&["commit", "--quiet", "-m", "the SDK"]),
        "git commit",
    )
    .await?;
    let commit = run(&mut git(&["rev-parse", "HEAD"]), "git rev-parse").await?;
    let commit = commit.trim();

    let vendor = "acme-git";
    let project = root.join(vendor);
    let url = format!("file://{}", repo.display());
    new_plugin(&project, vendor, &["--sdk-git", &url, "--sdk-rev", commit]).await?;
    let lock = std::fs::read_to_string(project.join("Cargo.lock"))?;
    assert!(
        lock.contains(&format!("source = \"git+{url}?rev={commit}#{commit}\"")),
        "{lock}"
    );
    build_locked(&project, vendor).await?;
    Ok(())
}
