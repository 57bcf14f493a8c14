//! Orders are checked with the vendor's plugin (`validate`, through a host) before they are
//! accepted: a server the plugin refuses is a 422 at once and nothing is recorded or made.
//! When no host can answer, the order is accepted unchecked, as without the check. With the
//! plugins at hand (`VALIDATE_PLUGINS_DIR`), order-api makes the check itself, but only with
//! the plugin version the vendor's hosts run.

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

/// Posts [`refused_body`] to `stack`: a `422` naming the vendor and the region it refuses,
/// and no order recorded.
async fn assert_refused(stack: &Stack) -> anyhow::Result<()> {
    let (status, _, content_type, answer) = stack.post_order(&refused_body()).await?;
    assert_eq!(status, 422, "{answer}\n{}", stack.logs());
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
    assert!(stack.list_all_orders("").await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_server_the_plugin_refuses_is_a_422_at_once() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    assert_refused(&stack).await?;
    // Nothing was sent to the vendor.
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
        let series =
            format!("provisioner_validations_total{{verdict=\"{verdict}\",checked_by=\"host\"}}");
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

/// The series of `verdict` checks made by `checked_by`, in `metrics`.
fn validations(metrics: &str, verdict: &str, checked_by: &str) -> Option<f64> {
    metric_value(
        metrics,
        &format!(
            "provisioner_validations_total{{verdict=\"{verdict}\",checked_by=\"{checked_by}\"}}"
        ),
    )
}

#[tokio::test]
async fn with_the_plugins_at_hand_order_api_checks_orders_itself() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        api_checks_with_plugins: true,
        ..StackOptions::default()
    })
    .await?;
    // No host answers validations any more: only order-api's own plugin can refuse.
    stack.kill_host().await;
    assert_refused(&stack).await?;
    // A valid order passes the same check and waits for a host.
    let body = fixture("digitalocean").order_body("checked-here");
    let (status, _, _, answer) = stack.post_order(&body).await?;
    assert_eq!(status, 202, "{answer}");
    let metrics = stack.metrics().await?;
    for verdict in ["refused", "valid"] {
        assert_eq!(
            validations(&metrics, verdict, "order-api"),
            Some(1.0),
            "{verdict}\n{metrics}"
        );
        assert_eq!(validations(&metrics, verdict, "host"), None, "{metrics}");
    }
    assert!(
        !stack
            .api_log()
            .contains("accepting an order without the plugin's check"),
        "{}",
        stack.logs()
    );
    // Its plugin had no secrets and no network: the manifest's `[secrets]` and grants were
    // dropped, and the check needed neither.
    assert_eq!(
        stack.sim_stats_of("digitalocean").await?["created_total"],
        0
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_plugin_here_judges_only_in_the_version_every_host_runs() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        api_checks_with_plugins: true,
        ..StackOptions::default()
    })
    .await?;
    // A second host says it serves DigitalOcean with another version of the plugin: the one
    // here may not be the one that will create the server, so a host is asked.
    let connection = std::sync::Arc::new(provisioner_tests::require_rabbitmq().await);
    let _publisher = crate::outbox::announce(
        &stack,
        &connection,
        provisioner_contract::VendorAnnouncement {
            vendor: "digitalocean".into(),
            display_name: "DigitalOcean".into(),
            plugin_version: "0.0.0-elsewhere".into(),
            host_id: "another-host".into(),
            at: chrono::Utc::now(),
            catalogue: None,
        },
    )
    .await?;
    // Once the announcement is applied (and the vendor's remembered versions, a second old
    // at most, are read again), a refusal comes from the host.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, _, answer) = stack.post_order(&refused_body()).await?;
        assert_eq!(status, 422, "{answer}");
        let metrics = stack.metrics().await?;
        if validations(&metrics, "refused", "host").is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "order-api kept checking with its own plugin of another version than a host's\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}
