//! Orders for several servers (`count`): one order, N servers at the vendor named `<name>-n`,
//! each with its own key and state in the order's `servers`; the order's status sums them
//! up (`active`, `partially_active`, `failed`); `all_or_nothing` removes what came up when one
//! fails for good; cancel and delete act on every server; quotas count servers.

use std::time::Duration;

use anyhow::Context;
use provisioner_tests::{Stack, StackOptions, event_messages, fixture};
use reqwest::Method;
use serde_json::{Value, json};

/// A Hetzner order body for `count` servers named after `name`, with `extra` fields.
fn fleet_body(name: &str, count: u32, extra: Value) -> String {
    let mut body: Value = serde_json::from_str(&fixture("hetzner").order_body(name)).unwrap();
    body["count"] = json!(count);
    for (field, value) in extra.as_object().cloned().unwrap_or_default() {
        body[field] = value;
    }
    body.to_string()
}

/// POSTs an order for several servers; its id.
async fn order_fleet(
    stack: &Stack,
    name: &str,
    count: u32,
    extra: Value,
) -> anyhow::Result<String> {
    let (status, _, _, answer) = stack.post_order(&fleet_body(name, count, extra)).await?;
    anyhow::ensure!(
        status == 202,
        "ordering {count} servers answered {status}: {answer}"
    );
    answer["id"].as_str().map(str::to_string).context("no id")
}

/// The order's servers' keys.
fn server_keys(order: &Value) -> Vec<String> {
    order["servers"]
        .as_array()
        .map(|servers| {
            servers
                .iter()
                .filter_map(|s| s["key"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// How many live simulator servers carry one of `keys`.
async fn live_servers_of_keys(stack: &Stack, keys: &[String]) -> anyhow::Result<usize> {
    let mut live = 0;
    for key in keys {
        live += stack.live_servers_of(key).await?.len();
    }
    Ok(live)
}

#[tokio::test]
async fn an_order_for_three_servers_makes_three_named_after_it_and_deletes_them_together()
-> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let (status, _, _, accepted) = stack.post_order(&fleet_body("web", 3, json!({}))).await?;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["count"], 3, "{accepted}");
    let id = accepted["id"].as_str().context("no id")?.to_string();
    let servers = accepted["servers"].as_array().context("no servers")?;
    assert_eq!(servers.len(), 3, "{accepted}");
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let servers = active["servers"].as_array().context("no servers")?;
    let names: Vec<&str> = servers.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"], "{active}");
    let keys = server_keys(&active);
    let mut distinct = keys.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "each server has its own key: {keys:?}");
    for server in servers {
        assert_eq!(server["status"], "active", "{active}");
        assert!(server["server"]["ipv4"].is_string(), "{server}");
    }
    // One server per key at the vendor, named as the order says.
    for (key, name) in keys.iter().zip(names) {
        let live = stack.live_servers_of(key).await?;
        assert_eq!(live.len(), 1, "{key}: {live:?}");
        // (The test stack's plugins add a suffix of their own to server names.)
        let made = live[0]["name"].as_str().unwrap_or_default();
        assert!(made.starts_with(&format!("{name}-")), "{live:?}");
    }
    // The order's log tells each server's story; its servers are not orders of their own.
    let messages = event_messages(&active);
    assert!(
        messages.iter().any(|m| m == "order accepted: 3 servers"),
        "{messages:?}"
    );
    for name in ["web-1", "web-2", "web-3"] {
        assert!(
            messages.iter().any(|m| m.starts_with(&format!("{name}: "))),
            "{name} in {messages:?}"
        );
    }
    let member = stack
        .api()
        .send_raw(Method::GET, &format!("/v1/orders/{}", keys[0]), None)
        .await?;
    assert_eq!(member.status(), 404);
    let listed = stack.list_all_orders("").await?;
    assert_eq!(listed.len(), 1, "one order listed: {listed:?}");

    let (status, deleting) = stack.delete_order(&id).await?;
    assert_eq!(status, 202, "{deleting}");
    let deleted = stack
        .wait_for_status(&id, "deleted", Duration::from_secs(60))
        .await?;
    for server in deleted["servers"].as_array().context("no servers")? {
        assert_eq!(server["status"], "deleted", "{deleted}");
    }
    assert_eq!(live_servers_of_keys(&stack, &keys).await?, 0);
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn one_server_refused_for_good_leaves_the_others_running_or_with_all_or_nothing_none()
-> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    // Keep what came up: one create refused (unauthorized is not retried), two run.
    stack
        .inject_fault(
            json!({"vendor": "hetzner", "kind": "unauthorized", "method": "POST", "count": 1}),
        )
        .await?;
    let kept = order_fleet(&stack, "keep", 3, json!({})).await?;
    let partial = stack
        .wait_for_status(&kept, "partially_active", Duration::from_secs(60))
        .await?;
    let statuses: Vec<&str> = partial["servers"]
        .as_array()
        .context("no servers")?
        .iter()
        .filter_map(|s| s["status"].as_str())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == "active").count(),
        2,
        "{partial}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == "failed").count(),
        1,
        "{partial}"
    );
    assert_eq!(partial["fault"]["code"], "unauthorized", "{partial}");
    assert_eq!(
        live_servers_of_keys(&stack, &server_keys(&partial)).await?,
        2
    );

    // All or nothing: the same refusal fails the order and removes what came up.
    stack
        .inject_fault(
            json!({"vendor": "hetzner", "kind": "unauthorized", "method": "POST", "count": 1}),
        )
        .await?;
    let all = order_fleet(&stack, "all", 3, json!({"all_or_nothing": true})).await?;
    let failed = stack
        .wait_for_status(&all, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["all_or_nothing"], true, "{failed}");
    assert_eq!(failed["fault"]["code"], "unauthorized", "{failed}");
    let keys = server_keys(&failed);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let order = stack.order(&all).await?;
        let settled = order["servers"]
            .as_array()
            .context("no servers")?
            .iter()
            .all(|s| {
                ["failed", "deleted", "cancelled"].contains(&s["status"].as_str().unwrap_or(""))
            });
        if settled && live_servers_of_keys(&stack, &keys).await? == 0 {
            assert_eq!(order["status"], "failed", "{order}");
            let messages = event_messages(&order);
            assert!(
                messages.iter().any(|m| m.starts_with("all or nothing: ")),
                "{messages:?}"
            );
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the all-or-nothing order still has servers: {order}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The kept order is still partially active: a delete takes its two servers.
    let (status, answer) = stack.delete_order(&kept).await?;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_for_status(&kept, "deleted", Duration::from_secs(60))
        .await?;
    assert_eq!(
        live_servers_of_keys(&stack, &server_keys(&partial)).await?,
        0
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn cancelling_an_order_for_several_servers_cancels_each() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(30),
        ..StackOptions::default()
    })
    .await?;
    let id = order_fleet(&stack, "slow", 4, json!({})).await?;
    stack
        .wait_for_status(&id, "provisioning", Duration::from_secs(30))
        .await?;
    let (status, answer) = stack.cancel_order(&id).await?;
    assert_eq!(status, 202, "{answer}");
    let cancelled = stack
        .wait_for_status(&id, "cancelled", Duration::from_secs(60))
        .await?;
    for server in cancelled["servers"].as_array().context("no servers")? {
        assert_eq!(server["status"], "cancelled", "{cancelled}");
    }
    assert_eq!(
        live_servers_of_keys(&stack, &server_keys(&cancelled)).await?,
        0
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_count_out_of_range_or_over_the_live_server_quota_is_refused() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    for count in [0, 101] {
        let (status, _, _, answer) = stack
            .post_order(&fleet_body("bad", count, json!({})))
            .await?;
        assert_eq!(status, 422, "{answer}");
        assert!(answer.to_string().contains("count"), "{answer}");
    }
    let tenant = provisioner_tests::TEST_TENANT;
    let (status, answer) =
        crate::quotas::put_quotas(&stack, tenant, json!({"limits": {"max_live_servers": 4}}))
            .await?;
    anyhow::ensure!(status == 200, "PUT quotas: {status} {answer}");
    order_fleet(&stack, "first", 3, json!({})).await?;
    let (status, _, _, over) = stack
        .post_order(&fleet_body("second", 3, json!({})))
        .await?;
    assert_eq!(status, 422, "{over}");
    assert_eq!(over["quota"], "max_live_servers", "{over}");
    assert_eq!(
        (
            over["usage"].clone(),
            over["limit"].clone(),
            over["requested"].clone()
        ),
        (json!(3), json!(4), json!(3)),
        "{over}"
    );
    // One more server still fits.
    stack.order_server("single").await?;
    stack.cleanup().await;
    Ok(())
}
