//! `/metrics` has the series operators expect once an order went through: accept latency,
//! publish confirms, updates by kind (retries among them), queue lengths (consumer lag) and
//! orders by status at order-api; plugin call durations by vendor, export and outcome at the
//! host (`--metrics-addr`).

use std::time::{Duration, Instant};

use provisioner_tests::{Stack, StackOptions, free_port, metric_value};

/// A stack whose host serves `/metrics`, and that address.
pub(crate) async fn stack_with_host_metrics() -> anyhow::Result<(Stack, String)> {
    let host_metrics = format!("127.0.0.1:{}", free_port());
    let stack = Stack::start(StackOptions {
        host_env: vec![("METRICS_ADDR".into(), host_metrics.clone())],
        ..StackOptions::default()
    })
    .await?;
    Ok((stack, host_metrics))
}

/// The host's `/metrics` text, served at `address`.
pub(crate) async fn host_metrics_text(stack: &Stack, address: &str) -> anyhow::Result<String> {
    Ok(stack
        .http
        .get(format!("http://{address}/metrics"))
        .send()
        .await?
        .text()
        .await?)
}

#[tokio::test]
async fn metrics_name_accepts_publishes_updates_and_queue_lengths() -> anyhow::Result<()> {
    let (stack, host_metrics) = stack_with_host_metrics().await?;
    let id = stack.order_server("metered-1").await?;
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;
    let results_queue = format!(
        "provisioner_queue_messages{{queue=\"{}\"}}",
        stack.topology.results_queue()
    );
    let expected: Vec<(&str, f64)> = vec![
        ("provisioner_accept_seconds_count", 1.0),
        ("provisioner_publishes_total{outcome=\"confirmed\"}", 1.0),
        (
            "provisioner_order_updates_total{vendor=\"hetzner\",kind=\"provisioning\"}",
            1.0,
        ),
        (
            "provisioner_order_updates_total{vendor=\"hetzner\",kind=\"active\"}",
            1.0,
        ),
        ("provisioner_orders{status=\"active\"}", 1.0),
        (&results_queue, 0.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = stack.metrics().await?;
        let missing: Vec<String> = expected
            .iter()
            .filter(|(series, at_least)| {
                !metric_value(&text, series).is_some_and(|value| value >= *at_least)
            })
            .map(|(series, at_least)| format!("{series} >= {at_least}"))
            .collect();
        if missing.is_empty() {
            // The accept histogram has buckets with the answer in one of them.
            assert!(
                text.contains("provisioner_accept_seconds_bucket{le="),
                "{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics lacks {missing:?}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The host's plugin calls of that order (its first create, which needs no look-up:
    // `create-new-server`).
    let text = host_metrics_text(&stack, &host_metrics).await?;
    for call in ["info", "create-new-server", "get-server"] {
        let series = format!(
            "provisioner_plugin_call_seconds_count{{vendor=\"hetzner\",call=\"{call}\",outcome=\"ok\"}}"
        );
        assert!(
            metric_value(&text, &series).is_some_and(|count| count >= 1.0),
            "the host's /metrics lacks {series}:\n{text}"
        );
    }
    stack.cleanup().await;
    Ok(())
}
