//! Either program dies at a bad moment; nothing is lost and no server is made twice.

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions};

/// The host is SIGKILLed after the vendor made the server but before the result was
/// published; after a restart the order ends `active` and the vendor holds exactly one
/// server for it (the plugin adopted it by its idempotency label).
#[tokio::test]
async fn host_killed_after_create_adopts_the_server_instead_of_making_another() -> anyhow::Result<()>
{
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(3),
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_server("survivor").await?;
    // Kill the moment the simulator has the server: the result cannot be out yet, the
    // server needs 3 s to boot.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if stack.sim_stats().await?["created_total"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the host never created the server\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stack.kill_host().await;
    let before = stack.order(&id).await?;
    assert_ne!(
        before["status"], "active",
        "the result must not be out before the kill"
    );

    stack.start_host()?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let stats = stack.sim_stats().await?;
    assert_eq!(
        stats["created_total"], 1,
        "a second server was made: {stats}"
    );
    assert_eq!(stats["duplicates"], serde_json::json!({}));
    let last = active["events"]
        .as_array()
        .and_then(|events| events.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(last["status"], "active");
    assert_eq!(
        last["attempt"], 2,
        "the result came from the redelivered request: {active}"
    );
    stack.cleanup().await;
    Ok(())
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
