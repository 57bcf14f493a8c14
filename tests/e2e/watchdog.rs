//! The watchdog settles an order whose news was lost: here the host made the server and
//! published the result while order-api was down, and an operator purged the results
//! queue. The order sits in `queued`/`provisioning` with no news until the watchdog sends
//! its request again; the host adopts the server it made, and the order becomes `active`
//! with still one server at the vendor.

use std::time::{Duration, Instant};

use lapin::options::QueuePurgeOptions;
use provisioner_tests::{Stack, StackOptions, message_count, require_rabbitmq};

#[tokio::test]
async fn the_watchdog_completes_an_order_whose_result_was_lost() -> anyhow::Result<()> {
    let mut stack = Stack::start(StackOptions {
        boot_delay: Duration::from_secs(3),
        api_env: vec![
            ("WATCHDOG_AFTER_SECS".into(), "3".into()),
            ("WATCHDOG_INTERVAL_SECS".into(), "1".into()),
        ],
        ..StackOptions::default()
    })
    .await?;
    let id = stack.order_server("lost-news").await?;
    // Once the request is out (queued or provisioning; the server boots for 3 s), stop
    // reading results.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stack.order(&id).await?["status"] == "pending" {
        assert!(
            Instant::now() < deadline,
            "never published\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack.kill_api().await;

    // The host finishes and publishes to the results queue, where nobody reads now.
    let connection = require_rabbitmq().await;
    let channel = connection.create_channel().await?;
    let results = stack.topology.results_queue();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The result is published (the host logs it once confirmed).
        if stack.host_log().contains("server running")
            && message_count(&channel, &results).await? >= 1
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no result published\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    channel
        .queue_purge(results.as_str().into(), QueuePurgeOptions::default())
        .await?;
    let _ = connection.close(200, "done".into()).await;

    stack.start_api()?;
    stack.wait_ready().await?;
    let active = stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    let watchdog = active["events"].as_array().into_iter().flatten().any(|e| {
        e["message"]
            .as_str()
            .unwrap_or_default()
            .contains("watchdog")
    });
    assert!(watchdog, "the watchdog did not step in: {active}");
    let stats = stack.sim_stats().await?;
    assert_eq!(
        stats["created_total"], 1,
        "the server was adopted, not made again"
    );
    assert_eq!(stats["duplicates"], serde_json::json!({}));
    stack.cleanup().await;
    Ok(())
}
