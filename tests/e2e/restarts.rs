//! Either program dies at a bad moment; nothing is lost and no server is made twice.

use std::time::Duration;

use provisioner_tests::{Stack, StackOptions};

/// The host is SIGKILLed after Hetzner made the server but before the result was
/// published; after a restart the order ends `active` and Hetzner holds exactly one server
/// for it (the plugin adopted it by its idempotency label).
#[tokio::test]
async fn host_killed_after_create_adopts_the_server_instead_of_making_another() -> anyhow::Result<()>
{
    crate::vendors::redelivered_create_adopts("hetzner").await
}

/// order-api is SIGKILLed right after accepting orders (some still in its outbox, others
/// at the host) and restarted on the same database: every order still ends `active`.
#[tokio::test]
async fn order_api_killed_mid_flight_loses_no_order() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_millis(1500),
        ..StackOptions::default()
    })
    .await?;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(stack.order_server(&format!("inflight-{i}")).await?);
    }
    stack.kill_api().await;
    // Results keep arriving on the queue while order-api is down.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stack.start_api()?;
    stack.wait_ready().await?;
    for id in &ids {
        stack
            .wait_for_status(id, "active", Duration::from_secs(60))
            .await?;
    }
    let stats = stack.sim_stats().await?;
    assert_eq!(stats["created_total"], 20);
    assert_eq!(stats["duplicates"], serde_json::json!({}));
    stack.cleanup().await;
    Ok(())
}
