//! The orphan sweep: servers at a vendor that carry our idempotency key but that no order
//! owns are found at every vendor (each plugin's `list-servers` against the simulator),
//! reported or deleted as configured; servers of active orders and servers without our key
//! are left alone; a plugin of the previous WIT minor (0.1) still serves orders, and its
//! vendor's sweep says it cannot list.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use provisioner_tests::simulator::seed_server_at;
use provisioner_tests::{Stack, StackOptions, VENDORS, test_plugin_component};
use serde_json::Value;

/// A stack that sweeps only when asked, with `action` for orphans.
async fn sweeping_stack(action: &str) -> anyhow::Result<Stack> {
    Stack::start(StackOptions {
        api_env: vec![
            ("ORPHAN_SWEEP_INTERVAL_SECS".into(), "0".into()),
            ("ORPHAN_ACTION".into(), action.into()),
        ],
        ..StackOptions::default()
    })
    .await
}

/// Makes a server at the simulator outside any order, carrying `key` (when given) where
/// the vendor's plugin would put it.
async fn seed_server(
    stack: &Stack,
    vendor: &str,
    name: &str,
    key: Option<&str>,
) -> anyhow::Result<()> {
    seed_server_at(&stack.sim_url, vendor, name, key).await
}

fn sweep_of<'a>(answer: &'a Value, vendor: &str) -> &'a Value {
    answer["sweeps"]
        .as_array()
        .and_then(|sweeps| sweeps.iter().find(|sweep| sweep["vendor"] == vendor))
        .unwrap_or(&Value::Null)
}

fn orphan_keys(answer: &Value, vendor: &str, state: &str) -> BTreeSet<String> {
    answer["orphans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|orphan| orphan["vendor"] == vendor && orphan["state"] == state)
        .filter_map(|orphan| orphan["idempotency_key"].as_str().map(str::to_string))
        .collect()
}

/// Under `report`, each vendor's orphans are recorded with the reason and left at the
/// vendor: a server whose key names no order, and a second server for an active order.
/// The active orders' own servers and a server without our key are not orphans.
#[tokio::test]
async fn the_sweep_reports_servers_no_order_owns_at_every_vendor() -> anyhow::Result<()> {
    let stack = sweeping_stack("report").await?;
    let legacy = format!(
        "vendor = \"legacy\"\ncomponent = {:?}\n[config]\nvendor-id = \"legacy\"\n",
        test_plugin_component("legacy").display().to_string()
    );
    std::fs::write(stack.plugins_dir().join("legacy.toml"), legacy)?;
    let mut vendors: Vec<&str> = VENDORS.iter().map(|fixture| fixture.vendor).collect();
    vendors.push("legacy");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stack.vendors().await?.contains(&"legacy".to_string()) {
        assert!(
            Instant::now() < deadline,
            "legacy never announced\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A plugin of WIT 0.1 serves orders as before.
    let body = r#"{"vendor":"legacy","region":"r","size":"s","image":"i","name":"old-1"}"#;
    let (status, _, _, order) = stack.post_order(body).await?;
    assert_eq!(status, 202, "{order}");
    let legacy_order = order["id"].as_str().unwrap_or_default().to_string();
    stack
        .wait_for_status(&legacy_order, "active", Duration::from_secs(30))
        .await?;

    let mut unknown_keys = Vec::new();
    let mut second_servers = Vec::new();
    for fixture in VENDORS {
        let vendor = fixture.vendor;
        let id = stack.order_at(vendor, &format!("owned-{vendor}")).await?;
        stack
            .wait_for_status(&id, "active", Duration::from_secs(30))
            .await?;
        let unknown = uuid::Uuid::now_v7().to_string();
        seed_server(&stack, vendor, "lost-1", Some(&unknown)).await?;
        seed_server(&stack, vendor, "second-1", Some(&id)).await?;
        seed_server(&stack, vendor, "not-ours-1", None).await?;
        unknown_keys.push(unknown);
        second_servers.push(id);
    }

    let answer = stack.sweep_orphans(&vendors).await?;
    for (index, fixture) in VENDORS.iter().enumerate() {
        let vendor = fixture.vendor;
        let expected: BTreeSet<String> =
            [unknown_keys[index].clone(), second_servers[index].clone()].into();
        assert_eq!(
            orphan_keys(&answer, vendor, "reported"),
            expected,
            "{answer:#}"
        );
        let swept = sweep_of(&answer, vendor);
        assert_eq!(swept["outcome"], "listed", "{answer:#}");
        // The order's own server and the two orphans; the server without our key is not
        // listed at all.
        assert_eq!(swept["listed"], 3, "{answer:#}");
        assert_eq!(swept["orphans"], 2, "{answer:#}");
    }
    let reasons: Vec<&str> = answer["orphans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|orphan| orphan["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("no order has the id")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|reason| reason.contains("second server")),
        "{reasons:?}"
    );
    let legacy_sweep = sweep_of(&answer, "legacy");
    assert_eq!(legacy_sweep["outcome"], "unsupported", "{answer:#}");
    assert!(
        legacy_sweep["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("0.1"),
        "{answer:#}"
    );

    // Reported, not deleted: all nine seeded servers are still at the simulator.
    let seeded = stack
        .sim_servers()
        .await?
        .into_iter()
        .filter(|server| {
            let name = server["name"].as_str().unwrap_or_default();
            name.starts_with("lost-")
                || name.starts_with("second-")
                || name.starts_with("not-ours-")
        })
        .count();
    assert_eq!(seeded, 9);

    // A second sweep finds the same orphans, no new ones.
    let again = stack.sweep_orphans(&vendors).await?;
    assert_eq!(
        again["orphans"].as_array().map(Vec::len),
        answer["orphans"].as_array().map(Vec::len)
    );
    stack.cleanup_serving(&["legacy"]).await;
    Ok(())
}

/// Under `delete`, the host deletes each vendor's orphans; the order's server and the
/// server without our key stay; a later sweep finds nothing new.
#[tokio::test]
async fn the_sweep_deletes_orphans_when_told_to() -> anyhow::Result<()> {
    let stack = sweeping_stack("delete").await?;
    let vendors: Vec<&str> = VENDORS.iter().map(|fixture| fixture.vendor).collect();
    let mut owned = Vec::new();
    for vendor in &vendors {
        let id = stack.order_at(vendor, &format!("owned-{vendor}")).await?;
        stack
            .wait_for_status(&id, "active", Duration::from_secs(30))
            .await?;
        owned.push(id);
        seed_server(
            &stack,
            vendor,
            "lost-1",
            Some(&uuid::Uuid::now_v7().to_string()),
        )
        .await?;
        seed_server(&stack, vendor, "lost-2", Some("not-even-a-uuid")).await?;
        seed_server(&stack, vendor, "not-ours-1", None).await?;
    }

    stack.sweep_orphans(&vendors).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let answer = stack.orphan_report().await?;
        let deleted = vendors
            .iter()
            .map(|vendor| orphan_keys(&answer, vendor, "deleted").len())
            .sum::<usize>();
        if deleted == 2 * vendors.len() {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "orphans not deleted: {answer:#}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let left: Vec<Value> = stack.sim_servers().await?;
    let names: Vec<&str> = left
        .iter()
        .filter_map(|server| server["name"].as_str())
        .collect();
    assert!(
        !names.iter().any(|name| name.starts_with("lost-")),
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|name| name.starts_with("not-ours-"))
            .count(),
        vendors.len()
    );
    for id in &owned {
        assert!(
            left.iter()
                .any(|server| server["idempotency_key"] == id.as_str()),
            "the server of order {id} was deleted: {left:?}"
        );
        assert_eq!(stack.order(id).await?["status"], "active");
    }

    let again = stack.sweep_orphans(&vendors).await?;
    for vendor in &vendors {
        assert_eq!(sweep_of(&again, vendor)["orphans"], 0, "{again:#}");
    }
    assert_eq!(
        again["orphans"].as_array().map(Vec::len),
        answer["orphans"].as_array().map(Vec::len)
    );
    stack.cleanup().await;
    Ok(())
}
