//! Plugin secrets from the host's secrets folder (`PLUGIN_SECRETS_DIR`), while the stack
//! runs: a vendor dropped in without its secret is not announced and its orders are refused
//! (admins see why, tenants see nothing); the secret's file arriving makes it serve, and a
//! rotated file is what the next calls use. No host restart throughout.
//!
//! The dropped-in vendor is the broken fixture without a flaw (a correct Hetzner plugin
//! under another vendor id), pointed at the simulator's Hetzner API, which accepts only the
//! stack's Hetzner token: an order that reaches `active` proves the plugin sent that token.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use provisioner_tests::{
    ApiClient, Stack, StackOptions, fixture, target_dir, test_plugin_component,
};
use reqwest::Method;
use serde_json::Value;

/// The dropped-in vendor.
const VENDOR: &str = "keyed";
/// The file (and variable) its manifest names for the token.
const SECRET_VARIABLE: &str = "PLUGIN_SECRET_KEYED_TOKEN";

/// A fresh secrets folder for one test.
fn secrets_folder(test: &str) -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("test-runs").join(format!(
        "secrets-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A stack whose host reads secrets from `secrets`.
async fn stack_with_secrets(secrets: &Path) -> anyhow::Result<Stack> {
    Stack::start(StackOptions {
        host_env: vec![(
            "PLUGIN_SECRETS_DIR".to_string(),
            secrets.display().to_string(),
        )],
        ..StackOptions::default()
    })
    .await
}

/// Drops the `keyed` vendor's manifest into the stack's plugins folder.
fn drop_in_keyed_vendor(stack: &Stack) -> anyhow::Result<()> {
    let hetzner = fixture("hetzner");
    let sim_url = &stack.sim_url;
    let manifest = format!(
        "vendor = {VENDOR:?}\ncomponent = {component:?}\nallowed_hosts = [{sim_url:?}]\n\
         [config]\nvendor-id = {VENDOR:?}\nflaw = \"none\"\nbase-url = \"{sim_url}/hetzner/v1\"\n\
         regions = {region:?}\nsizes = {size:?}\nimages = {image:?}\n\
         [secrets]\ntoken = {SECRET_VARIABLE:?}\n",
        component = test_plugin_component("broken").display().to_string(),
        region = hetzner.region,
        size = hetzner.size,
        image = hetzner.image,
    );
    std::fs::write(stack.plugins_dir().join(format!("{VENDOR}.toml")), manifest)?;
    Ok(())
}

/// A valid order for the dropped-in vendor.
fn keyed_order(name: &str) -> String {
    fixture("hetzner")
        .order_body(name)
        .replace("\"hetzner\"", &format!("{VENDOR:?}"))
}

/// `GET /v1/vendors` with `token`.
async fn vendors_as(stack: &Stack, token: &str) -> anyhow::Result<Value> {
    let api = ApiClient::new(&stack.api_url, Some(token))?;
    Ok(api
        .status_and_json(Method::GET, "/v1/vendors", None)
        .await?
        .1)
}

/// The admin's view of the dropped-in vendor's unavailability on the stack's host, if any.
async fn unavailable_entry(stack: &Stack) -> anyhow::Result<Option<Value>> {
    let answer = vendors_as(stack, &stack.admin_token).await?;
    Ok(answer["unavailable"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["vendor"] == VENDOR)
        .cloned())
}

/// Waits until `condition` holds, failing with the stack's logs after 30 s.
async fn wait_until<F>(stack: &Stack, what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: AsyncFnMut() -> anyhow::Result<bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition().await? {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} never happened\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Writes `value` into the secret file the way a platform would: a new file renamed over
/// the old one (a reader never sees half a secret).
fn write_secret(dir: &Path, value: &str) -> anyhow::Result<()> {
    let staged = dir.join(format!(".{SECRET_VARIABLE}.tmp"));
    std::fs::write(&staged, value)?;
    std::fs::rename(&staged, dir.join(SECRET_VARIABLE))?;
    Ok(())
}

/// A vendor dropped in while the stack runs, its secret file absent: it is not announced,
/// an order for it is `422 unknown-vendor`, an admin's `GET /v1/vendors` says which secret
/// is missing and where the host looked, a tenant's says nothing of it. Once the file is
/// written the vendor is announced and an order for it reaches `active` (the simulator
/// accepted the token from the file), on the same host process.
#[tokio::test]
async fn a_vendor_without_its_secret_is_refused_until_the_secret_file_arrives() -> anyhow::Result<()>
{
    let secrets = secrets_folder("arrives")?;
    let stack = stack_with_secrets(&secrets).await?;
    let host_pid = stack.host_pid();
    drop_in_keyed_vendor(&stack)?;

    wait_until(
        &stack,
        "the admin seeing the vendor unavailable",
        async || Ok(unavailable_entry(&stack).await?.is_some()),
    )
    .await?;
    let entry = unavailable_entry(&stack).await?.unwrap_or_default();
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("secret 'token' is missing"), "{entry}");
    assert!(reason.contains(SECRET_VARIABLE), "{entry}");
    assert!(
        reason.contains(&secrets.display().to_string()),
        "the reason names the folder looked in: {entry}"
    );
    assert_eq!(
        entry["host_id"].as_str().map(|id| !id.is_empty()),
        Some(true)
    );
    // The host logs the reason too; its log lines go out from a thread of their own every
    // 20 ms, so the line may come a moment after the announcement order-api applied.
    wait_until(&stack, "the host logging the reason", async || {
        Ok(stack.host_log().contains(SECRET_VARIABLE))
    })
    .await?;

    // Not served, not announced: the order is refused as for any unknown vendor, and a
    // tenant learns nothing about the missing secret.
    let (status, _, _, problem) = stack.post_order(&keyed_order("keyed-early")).await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["type"], "/problems/unknown-vendor");
    assert!(!problem.to_string().contains(SECRET_VARIABLE), "{problem}");
    let tenant_view = vendors_as(&stack, &stack.token).await?;
    assert!(tenant_view.get("unavailable").is_none(), "{tenant_view}");
    assert!(!tenant_view.to_string().contains(VENDOR), "{tenant_view}");
    let admin_view = vendors_as(&stack, &stack.admin_token).await?;
    assert!(
        admin_view["vendors"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|vendor| vendor["vendor"] != VENDOR),
        "an unavailable vendor is not among the served ones: {admin_view}"
    );

    // The secret arrives (with the trailing newline `echo` leaves).
    write_secret(&secrets, &format!("{}\n", fixture("hetzner").secret.1))?;
    wait_until(&stack, "the vendor being announced", async || {
        Ok(stack.vendors().await?.iter().any(|vendor| vendor == VENDOR))
    })
    .await?;
    assert_eq!(
        unavailable_entry(&stack).await?,
        None,
        "announced, the vendor is no longer listed as unavailable"
    );
    let (status, _, _, order) = stack.post_order(&keyed_order("keyed-1")).await?;
    assert_eq!(status, 202, "{order}");
    let id = order["id"].as_str().unwrap_or_default().to_string();
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;
    assert_eq!(active["server"]["status"], "running", "{active}");
    assert_eq!(stack.host_pid(), host_pid, "the host was not restarted");

    stack.cleanup_serving(&[VENDOR]).await;
    let _ = std::fs::remove_dir_all(&secrets);
    Ok(())
}

/// Rotation, the Kubernetes way (`NAME -> ..data/NAME`, `..data` swapped to a new folder):
/// with a revoked token in the file the vendor's orders fail `unauthorized`; after the swap
/// to the token the simulator accepts, the next order reaches `active`. Removing the file
/// then stops the vendor (it is withdrawn, with the reason for admins). Same host process.
#[tokio::test]
async fn a_rotated_secret_is_used_by_the_next_orders_and_a_removed_one_stops_the_vendor()
-> anyhow::Result<()> {
    let secrets = secrets_folder("rotation")?;
    let stack = stack_with_secrets(&secrets).await?;
    let host_pid = stack.host_pid();

    let mount = |version: &str, value: &str| -> anyhow::Result<()> {
        let folder = secrets.join(format!("..{version}"));
        std::fs::create_dir_all(&folder)?;
        std::fs::write(folder.join(SECRET_VARIABLE), value)?;
        let staged = secrets.join("..data_tmp");
        std::os::unix::fs::symlink(format!("..{version}"), &staged)?;
        std::fs::rename(&staged, secrets.join("..data"))?;
        Ok(())
    };
    mount("2026_01_01", "revoked-token")?;
    std::os::unix::fs::symlink(
        format!("..data/{SECRET_VARIABLE}"),
        secrets.join(SECRET_VARIABLE),
    )?;
    drop_in_keyed_vendor(&stack)?;
    wait_until(&stack, "the vendor being announced", async || {
        Ok(stack.vendors().await?.iter().any(|vendor| vendor == VENDOR))
    })
    .await?;

    let (status, _, _, order) = stack.post_order(&keyed_order("keyed-revoked")).await?;
    assert_eq!(status, 202, "{order}");
    let id = order["id"].as_str().unwrap_or_default().to_string();
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(30))
        .await?;
    assert_eq!(failed["fault"]["code"], "unauthorized", "{failed}");

    let reloads = |log: &str| {
        log.lines()
            .filter(|line| line.contains("reloaded plugin") && line.contains(VENDOR))
            .count()
    };
    let before = reloads(&stack.host_log());
    mount("2026_01_02", fixture("hetzner").secret.1)?;
    wait_until(&stack, "the plugin being reloaded", async || {
        Ok(reloads(&stack.host_log()) > before)
    })
    .await?;
    let (status, _, _, order) = stack.post_order(&keyed_order("keyed-rotated")).await?;
    assert_eq!(status, 202, "{order}");
    let id = order["id"].as_str().unwrap_or_default().to_string();
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;

    // The secret goes: the vendor is withdrawn and its orders refused.
    std::fs::remove_file(secrets.join(SECRET_VARIABLE))?;
    wait_until(&stack, "the vendor being withdrawn", async || {
        Ok(!stack.vendors().await?.iter().any(|vendor| vendor == VENDOR))
    })
    .await?;
    let (status, _, _, problem) = stack.post_order(&keyed_order("keyed-gone")).await?;
    assert_eq!(status, 422, "{problem}");
    wait_until(
        &stack,
        "the admin seeing the vendor unavailable",
        async || Ok(unavailable_entry(&stack).await?.is_some()),
    )
    .await?;
    assert_eq!(stack.host_pid(), host_pid, "the host was not restarted");

    stack.cleanup_serving(&[VENDOR]).await;
    let _ = std::fs::remove_dir_all(&secrets);
    Ok(())
}

/// The catalog on its own: a manifest whose secret file is absent is not served and is
/// listed unavailable with the reason; the file appearing serves it, its removal stops the
/// version in service; a plugin whose component is missing is listed unavailable too, and a
/// removed manifest leaves no entry behind. A secret file holding a value never shows it in
/// the reason.
#[tokio::test]
async fn the_catalog_serves_a_plugin_only_while_its_secrets_are_there() -> anyhow::Result<()> {
    use provisioner_host::plugin_folder::PluginFolder;
    use provisioner_host::runtime::PluginRuntime;
    use provisioner_host::secrets::SecretSource;

    let plugins = secrets_folder("catalog-plugins")?;
    let secrets = secrets_folder("catalog-secrets")?;
    let runtime = std::sync::Arc::new(PluginRuntime::new()?);
    let mut catalog = PluginFolder::new(runtime, plugins.clone())
        .with_secrets(SecretSource::new(Some(secrets.clone())));
    let manifest = format!(
        "vendor = {VENDOR:?}\ncomponent = {:?}\n[config]\nvendor-id = {VENDOR:?}\n\
         [secrets]\ntoken = {SECRET_VARIABLE:?}\n",
        test_plugin_component("hostile").display().to_string()
    );
    std::fs::write(plugins.join("keyed.toml"), &manifest)?;

    assert!(catalog.rescan().await?, "an unavailable vendor is news");
    let snapshot = catalog.plugins();
    assert!(snapshot.is_empty());
    let reason = snapshot.unavailable()[VENDOR].clone();
    assert!(reason.contains(SECRET_VARIABLE), "{reason}");
    assert!(!catalog.rescan().await?, "nothing changed");

    write_secret(&secrets, "s3cr3t-value\n")?;
    assert!(catalog.rescan().await?);
    assert!(catalog.plugins().contains_key(VENDOR));
    assert!(catalog.plugins().unavailable().is_empty());

    // A file rewritten in place is empty for a moment: the version in service stays, and the
    // finished value is read at the next change.
    write_secret(&secrets, "")?;
    catalog.rescan().await?;
    assert!(
        catalog.plugins().contains_key(VENDOR),
        "a secret file caught mid-rewrite stopped the vendor"
    );
    write_secret(&secrets, "rotated-value\n")?;
    catalog.rescan().await?;
    assert!(catalog.plugins().contains_key(VENDOR));
    assert!(catalog.plugins().unavailable().is_empty());

    std::fs::remove_file(secrets.join(SECRET_VARIABLE))?;
    assert!(catalog.rescan().await?, "a removed secret stops the plugin");
    assert!(catalog.plugins().is_empty());
    assert!(catalog.plugins().unavailable().contains_key(VENDOR));

    // Unreadable values and plugins that do not load are unavailable, with why.
    write_secret(&secrets, "\n")?;
    assert!(catalog.rescan().await?, "a new reason is news");
    let reason = catalog.plugins().unavailable()[VENDOR].clone();
    assert!(reason.contains("is empty"), "{reason}");
    write_secret(&secrets, "s3cr3t-value")?;
    std::fs::write(
        plugins.join("keyed.toml"),
        manifest.replace(".wasm\"", "-missing.wasm\""),
    )?;
    assert!(catalog.rescan().await?);
    let reason = catalog.plugins().unavailable()[VENDOR].clone();
    assert!(reason.contains("-missing.wasm"), "{reason}");
    assert!(!reason.contains("s3cr3t"), "{reason}");

    std::fs::remove_file(plugins.join("keyed.toml"))?;
    assert!(catalog.rescan().await?);
    assert!(catalog.plugins().unavailable().is_empty());
    let _ = std::fs::remove_dir_all(&plugins);
    let _ = std::fs::remove_dir_all(&secrets);
    Ok(())
}
