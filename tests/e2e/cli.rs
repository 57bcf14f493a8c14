//! The `provisioner` command-line client against a live stack: create with `--wait` (live
//! progress until active), get, list, vendors, quotas, watch, cancel, delete, `--output json`, and
//! the errors a user sees (no token, a refused order).

use std::process::Output;

use provisioner_tests::{Stack, StackOptions, binary, fixture};
use serde_json::Value;

/// Runs `provisioner <arguments>` against the stack with its tenant token.
async fn provisioner(stack: &Stack, arguments: &[&str]) -> anyhow::Result<Output> {
    provisioner_with_token(stack, arguments, Some(&stack.token)).await
}

/// Runs `provisioner <arguments>` against the stack with `token` in `PROVISIONER_TOKEN`
/// (none: no token at all).
async fn provisioner_with_token(
    stack: &Stack,
    arguments: &[&str],
    token: Option<&str>,
) -> anyhow::Result<Output> {
    let mut command = tokio::process::Command::new(binary("debug", "provisioner"));
    command
        .args(arguments)
        .env_clear()
        .env("PROVISIONER_API_URL", &stack.api_url);
    if let Some(token) = token {
        command.env("PROVISIONER_TOKEN", token);
    }
    Ok(command.output().await?)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `order create` of a server named `name` at `vendor` in `region`, of `size` from `image`.
fn create_arguments_in<'a>(
    [vendor, region, size, image]: [&'a str; 4],
    name: &'a str,
) -> Vec<&'a str> {
    vec![
        "order", "create", "--vendor", vendor, "--region", region, "--size", size, "--image",
        image, "--name", name,
    ]
}

/// `order create` of a server named `name` at `vendor` (its fixture's region, size and
/// image), labelled `team=web`.
fn create_arguments<'a>(vendor: &'a str, name: &'a str) -> Vec<&'a str> {
    let f = fixture(vendor);
    let mut arguments = create_arguments_in([f.vendor, f.region, f.size, f.image], name);
    arguments.extend(["--label", "team=web"]);
    arguments
}

/// The order id in what `order create` printed (its line `order <id> ...`).
fn order_id_in(shown: &str) -> String {
    shown
        .lines()
        .find_map(|line| line.strip_prefix("order ")?.split_whitespace().next())
        .expect("the order id")
        .to_string()
}

#[tokio::test]
async fn the_cli_orders_follows_and_deletes_a_server() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;

    // create --wait: the steps as they happen, then the running server; exit 0.
    let mut arguments = create_arguments("hetzner", "cli-web-1");
    arguments.push("--wait");
    let created = provisioner(&stack, &arguments).await?;
    let shown = text(&created);
    assert!(created.status.success(), "{shown}");
    assert!(shown.contains("order accepted"), "{shown}");
    assert!(shown.contains("provisioning"), "{shown}");
    assert!(shown.contains("active: server"), "{shown}");
    let id = order_id_in(&shown);

    // get and list, as JSON.
    let got = provisioner(&stack, &["order", "get", &id, "--output", "json"]).await?;
    let order: Value = serde_json::from_slice(&got.stdout)?;
    assert_eq!(order["status"], "active", "{}", text(&got));
    assert_eq!(order["labels"]["team"], "web");
    let listed = provisioner(&stack, &["order", "list", "--all", "-o", "json"]).await?;
    let orders: Value = serde_json::from_slice(&listed.stdout)?;
    assert_eq!(orders.as_array().map(Vec::len), Some(1), "{orders}");
    let vendors = provisioner(&stack, &["vendors"]).await?;
    assert!(text(&vendors).contains("hetzner"), "{}", text(&vendors));
    let quotas = provisioner(&stack, &["quotas"]).await?;
    assert!(quotas.status.success(), "{}", text(&quotas));
    assert!(
        text(&quotas).contains("(all)") && text(&quotas).contains("order rate: not limited"),
        "{}",
        text(&quotas)
    );

    // delete --wait follows it to deleted.
    let deleted = provisioner(&stack, &["order", "delete", &id, "--wait"]).await?;
    assert!(deleted.status.success(), "{}", text(&deleted));
    assert!(text(&deleted).contains("deleted"), "{}", text(&deleted));

    // watch on a settled order prints its history and ends at once (exit 0 for deleted).
    let watched = provisioner(&stack, &["order", "watch", &id, "-o", "json"]).await?;
    assert!(watched.status.success(), "{}", text(&watched));
    let lines = String::from_utf8_lossy(&watched.stdout).into_owned();
    let last: Value = serde_json::from_str(lines.lines().last().unwrap_or_default())?;
    let first: Value = serde_json::from_str(lines.lines().next().unwrap_or_default())?;
    assert_eq!(first["message"], "order accepted", "{lines}");
    assert_eq!(last["status"], "deleted");
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn the_cli_cancels_and_says_what_went_wrong() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: std::time::Duration::from_secs(30),
        ..StackOptions::default()
    })
    .await?;
    let created = provisioner(&stack, &{
        let mut a = create_arguments("hetzner", "cli-slow");
        a.extend(["-o", "json"]);
        a
    })
    .await?;
    assert!(created.status.success(), "{}", text(&created));
    let order: Value = serde_json::from_slice(&created.stdout)?;
    let id = order["id"].as_str().expect("an id").to_string();
    let cancelled = provisioner(&stack, &["order", "cancel", &id, "--wait"]).await?;
    assert!(cancelled.status.success(), "{}", text(&cancelled));
    assert!(
        text(&cancelled).contains("cancelled"),
        "{}",
        text(&cancelled)
    );

    // A refused order: the API's reason, field by field; exit code 2.
    let blank_region = create_arguments_in(["hetzner", " ", "cx22", "ubuntu-24.04"], "x");
    let refused = provisioner(&stack, &blank_region).await?;
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("region"), "{}", text(&refused));
    // No token: said, with how to make one.
    let anonymous = provisioner_with_token(&stack, &["vendors"], None).await?;
    assert_eq!(anonymous.status.code(), Some(2));
    assert!(
        text(&anonymous).contains("tokens create"),
        "{}",
        text(&anonymous)
    );
    // A wrong token: the API's 401.
    let wrong = provisioner_with_token(&stack, &["vendors", "--token", "pvn_wrong"], None).await?;
    assert!(text(&wrong).contains("401"), "{}", text(&wrong));
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn the_cli_orders_several_servers_with_a_fallback() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let digitalocean = fixture("digitalocean");
    let fallback = format!(
        "digitalocean:{}:{}:{}",
        digitalocean.region, digitalocean.size, digitalocean.image
    );
    let mut arguments = create_arguments("hetzner", "cli-pair");
    arguments.extend(["--count", "2", "--fallback", &fallback, "--wait"]);
    let created = provisioner(&stack, &arguments).await?;
    let shown = text(&created);
    assert!(created.status.success(), "{shown}");
    assert!(shown.contains("order accepted: 2 servers"), "{shown}");
    let id = order_id_in(&shown);
    let got = provisioner(&stack, &["order", "get", &id]).await?;
    let shown = text(&got);
    for name in ["cli-pair-1", "cli-pair-2"] {
        assert!(
            shown.lines().any(|line| line.contains(name)
                && line.contains("active")
                && line.contains("hetzner")),
            "{shown}"
        );
    }
    let order: Value = serde_json::from_slice(
        &provisioner(&stack, &["order", "get", &id, "-o", "json"])
            .await?
            .stdout,
    )?;
    assert_eq!(order["placement"][1]["vendor"], "digitalocean", "{order}");
    let mut bad_fallback = create_arguments_in(["hetzner", "fsn1", "cx22", "i"], "x");
    bad_fallback.extend(["--fallback", "nope"]);
    let bad = provisioner(&stack, &bad_fallback).await?;
    assert!(!bad.status.success());
    assert!(
        text(&bad).contains("vendor:region:size:image"),
        "{}",
        text(&bad)
    );
    stack.cleanup().await;
    Ok(())
}
