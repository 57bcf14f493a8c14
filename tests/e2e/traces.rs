//! One order is one trace across both programs: the W3C `traceparent` a client sends goes
//! from the HTTP request into the AMQP message and into the host's spans, and both programs'
//! logs carry its trace id; with `LOG_FORMAT=json` every log line is a JSON object.

use std::time::Duration;

use anyhow::Context;
use provisioner_tests::{Stack, StackOptions, binary, fixture};
use reqwest::Method;
use serde_json::Value;

/// Every line of `log` as JSON; fails naming the first line that is not.
fn json_lines(program: &str, log: &str) -> anyhow::Result<Vec<Value>> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .with_context(|| format!("{program} logged a line that is not JSON: {line}"))
        })
        .collect()
}

#[tokio::test]
async fn one_order_is_one_trace_in_both_programs_json_logs() -> anyhow::Result<()> {
    let json = vec![("LOG_FORMAT".to_string(), "json".to_string())];
    let stack = Stack::start(StackOptions {
        api_env: json.clone(),
        host_env: json,
        ..StackOptions::default()
    })
    .await?;
    let trace_id = uuid::Uuid::new_v4().simple().to_string();
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let response = stack
        .api()
        .request(Method::POST, "/v1/orders")
        .header("content-type", "application/json")
        .header("traceparent", &traceparent)
        .body(fixture("hetzner").order_body("traced-1"))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 202);
    let order: Value = response.json().await?;
    let id = order["id"].as_str().context("an order id")?.to_string();
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;

    for (program, log) in [("order-api", stack.api_log()), ("host", stack.host_log())] {
        let lines = json_lines(program, &log)?;
        assert!(!lines.is_empty(), "{program} logged nothing");
        let traced: Vec<&Value> = lines
            .iter()
            .filter(|line| line.to_string().contains(&trace_id))
            .collect();
        assert!(
            !traced.is_empty(),
            "no line of {program}'s log carries trace id {trace_id}:\n{log}"
        );
        // And those lines are about this order.
        assert!(
            traced.iter().any(|line| line.to_string().contains(&id)),
            "{program}'s traced lines do not name order {id}: {traced:?}"
        );
    }
    // In the host, the trace id comes with every line of the order's request span (with
    // order-api's span as the parent, so the span id part is order-api's own).
    let host_lines = json_lines("host", &stack.host_log())?;
    let order_lines: Vec<&Value> = host_lines
        .iter()
        .filter(|line| line["span"]["order_id"] == id.as_str())
        .collect();
    assert!(order_lines.len() >= 2, "{order_lines:?}");
    assert!(
        order_lines.iter().all(|line| line["span"]["traceparent"]
            .as_str()
            .is_some_and(|t| t.split('-').nth(1) == Some(trace_id.as_str()))),
        "{order_lines:?}"
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn an_unknown_log_format_stops_the_program_with_a_clear_error() -> anyhow::Result<()> {
    for program in ["order-api", "provisioner-host"] {
        let output = tokio::process::Command::new(binary("debug", program))
            .env("LOG_FORMAT", "xml")
            .output()
            .await?;
        assert!(
            !output.status.success(),
            "{program} started with LOG_FORMAT=xml"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("LOG_FORMAT must be 'text' or 'json', not 'xml'"),
            "{program}: {stderr}"
        );
    }
    Ok(())
}
