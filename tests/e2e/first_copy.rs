//! An order's first create skips the create lease (the host's `worker::first_copy`) and the
//! look-up before the vendor's create (`create-new-server`), and a copy of it that arrives
//! while that create runs waits for it instead of making a second server.

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use provisioner_contract::{Envelope, HostRequest, ProvisionRequest, ServerSpec, encode};
use provisioner_tests::metric_value;
use provisioner_tests::simulator::arm_fault_at;
use serde_json::json;

/// The order's own request goes out marked and is created without the lease; an unmarked
/// copy published beside it (as a re-publish after a lost confirm, or the watchdog's, would
/// be) while the vendor still works on the first create waits until the first copy's cut-off
/// has passed, takes the lease and adopts the server: one server, not two. Without that
/// wait the copy's look-up finds nothing (the first create is held up at the vendor) and it
/// makes a second server.
#[tokio::test]
async fn a_copy_beside_the_lease_free_first_create_adopts_its_server() -> anyhow::Result<()> {
    let (stack, host_metrics) = crate::metrics::stack_with_host_metrics().await?;
    // DigitalOcean (which, unlike Hetzner, takes two droplets of one name) holds the next
    // create for 3 s before it makes the droplet.
    arm_fault_at(
        &stack.sim_url,
        json!({"vendor": "digitalocean", "kind": "slow", "delay_ms": 3000, "method": "POST",
               "path": "/droplets", "count": 1}),
    )
    .await?;
    let id = stack.order_at("digitalocean", "first-copy").await?;
    let order = stack.order(&id).await?;
    let request = HostRequest::Create(ProvisionRequest {
        order_id: id.parse()?,
        vendor: "digitalocean".into(),
        spec: serde_json::from_value::<ServerSpec>(json!({
            "name": order["name"], "region": order["region"], "size": order["size"],
            "image": order["image"],
        }))?,
        ordered_at: Some(serde_json::from_value(order["created_at"].clone())?),
    });
    let connection = provisioner_tests::require_rabbitmq().await;
    let channel = connection.create_channel().await?;
    channel
        .basic_publish(
            stack.topology.requests_exchange().as_str().into(),
            "request.digitalocean".into(),
            BasicPublishOptions::default(),
            &encode(&request),
            Envelope::for_order(id.parse()?, None).properties(),
        )
        .await?
        .await?;

    stack
        .wait_for_status(&id, "active", Duration::from_secs(60))
        .await?;
    // Both copies end (the copy after the first one's cut-off and the clock allowance).
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while stack.host_log().matches("server running").count() < 2
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = stack.sim_stats_of("digitalocean").await?;
    assert_eq!(stats["created_total"], 1, "{stats}\n{}", stack.logs());
    assert_eq!(stats["duplicates"], json!({}));
    assert_eq!(
        stack.host_log().matches("server running").count(),
        2,
        "both copies end with the one server\n{}",
        stack.logs()
    );

    let text = crate::metrics::host_metrics_text(&stack, &host_metrics).await?;
    for (path, count) in [("skipped", 1.0), ("taken_after_wait", 1.0)] {
        let series = format!("provisioner_create_leases_total{{path=\"{path}\"}}");
        assert_eq!(
            metric_value(&text, &series),
            Some(count),
            "{series}:\n{text}"
        );
    }
    assert_eq!(
        metric_value(&text, "provisioner_create_leases_total{path=\"taken\"}"),
        None,
        "{text}"
    );
    // The lease-free copy created without the look-up; the copy after it looked up and
    // adopted.
    for (call, count) in [
        ("create-new-server", Some(1.0)),
        ("create-server", Some(1.0)),
    ] {
        let series = format!(
            "provisioner_plugin_call_seconds_count{{vendor=\"digitalocean\",call=\"{call}\",outcome=\"ok\"}}"
        );
        assert_eq!(metric_value(&text, &series), count, "{series}:\n{text}");
    }
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
    Ok(())
}
