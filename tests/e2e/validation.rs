//! Orders are checked with the vendor's plugin (`validate`, through a host) before they are
//! accepted: a server the plugin refuses is a 422 at once and nothing is recorded or made.
//! When no host can answer, the order is accepted unchecked, as without the check.

use std::time::Duration;

use provisioner_tests::{Stack, StackOptions, fixture, metric_value};
use serde_json::{Value, json};

/// A DigitalOcean order in a region the plugin does not know.
fn refused_body() -> String {
    let digitalocean = fixture("digitalocean");
    let mut body: Value = serde_json::from_str(&digitalocean.order_body("nowhere")).expect("json");
    body["region"] = json!("mars1");
    body.to_string()
}

#[tokio::test]
async fn a_server_the_plugin_refuses_is_a_422_at_once() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let (status, _, content_type, answer) = stack.post_order(&refused_body()).await?;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(answer["type"], "/problems/refused-by-vendor", "{answer}");
    assert_eq!(answer["vendor"], "digitalocean");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("mars1"),
        "{answer}"
    );
    // Nothing was recorded or sent to the vendor.
    assert!(stack.list_all_orders("").await?.is_empty());
    assert_eq!(
        stack.sim_stats_of("digitalocean").await?["created_total"],
        0
    );
    // A valid order still goes through the same check.
    let id = stack.order_at("digitalocean", "somewhere").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;
    let metrics = stack.metrics().await?;
    for verdict in ["refused", "valid"] {
        let series = format!("provisioner_validations_total{{verdict=\"{verdict}\"}}");
        assert_eq!(
            metric_value(&metrics, &series),
            Some(1.0),
            "{series}\n{metrics}"
        );
    }
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn without_a_host_to_ask_the_order_is_accepted_unchecked() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions::default()).await?;
    // The vendors stay announced; no host answers validations any more.
    stack.kill_host().await;
    let (status, _, _, answer) = stack.post_order(&refused_body()).await?;
    assert_eq!(status, 202, "{answer}");
    let id = answer["id"].as_str().expect("an id").to_string();
    // With a host back, the plugin's create refuses it: the order fails with the reason.
    stack.start_host()?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "invalid_request", "{failed}");
    assert!(
        stack
            .api_log()
            .contains("accepting an order without the plugin's check"),
        "{}",
        stack.logs()
    );
    stack.cleanup().await;
    Ok(())
}
