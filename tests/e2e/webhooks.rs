//! Webhooks: an order's `webhook_url` is called when the order settles, signed with the
//! tenant's secret (Standard Webhooks), and retried when the receiver fails; a bad URL (not
//! http, credentials, an address that is not public unless allowed) is refused at once. The
//! call never goes through a proxy from the environment, the log names only the receiver's
//! origin, and one tenant's slow receiver does not hold up another tenant's webhooks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use provisioner_tests::{
    ApiClient, Stack, StackOptions, event_messages, fixture, metric_value, post_order_with,
};
use serde_json::{Value, json};

/// One call the receiver got.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    id: String,
    timestamp: String,
    signature: String,
    pub(crate) body: String,
}

/// A receiver that answers 500 to its first `failures` calls, then 204, each after `delay`.
#[derive(Clone)]
struct Receiver {
    calls: Arc<Mutex<Vec<Call>>>,
    failures: usize,
    delay: Duration,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let failing = {
        let mut calls = receiver.calls.lock().expect("calls");
        calls.push(Call {
            id: header("webhook-id"),
            timestamp: header("webhook-timestamp"),
            signature: header("webhook-signature"),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        calls.len() <= receiver.failures
    };
    tokio::time::sleep(receiver.delay).await;
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Starts a receiver on a free port; its URL and its calls.
pub(crate) async fn start_receiver(
    failures: usize,
) -> anyhow::Result<(String, Arc<Mutex<Vec<Call>>>)> {
    start_slow_receiver(failures, Duration::ZERO).await
}

/// Starts a receiver on a free port that answers each call after `delay`; its URL and its
/// calls (recorded on arrival).
async fn start_slow_receiver(
    failures: usize,
    delay: Duration,
) -> anyhow::Result<(String, Arc<Mutex<Vec<Call>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/orders", listener.local_addr()?);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/hooks/orders", axum::routing::post(receive))
        .with_state(Receiver {
            calls: calls.clone(),
            failures,
            delay,
        });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, calls))
}

/// Checks a call's signature the way a receiver would: HMAC-SHA256 of "id.timestamp.body"
/// keyed with the base64 after `whsec_`.
fn signature_is_valid(secret: &str, call: &Call) -> bool {
    let key = BASE64
        .decode(secret.trim_start_matches("whsec_"))
        .expect("the secret is base64");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key");
    mac.update(format!("{}.{}.{}", call.id, call.timestamp, call.body).as_bytes());
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    call.signature.split(' ').any(|s| s == expected)
}

#[tokio::test]
async fn a_settled_order_calls_its_webhook_signed_and_retried() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        api_env: vec![
            ("WEBHOOK_RETRY_BASE_MS".into(), "300".into()),
            // The receiver is this test, on 127.0.0.1.
            ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES".into(), "true".into()),
        ],
        ..StackOptions::default()
    })
    .await?;
    let (url, calls) = start_receiver(1).await?;
    let hetzner = fixture("hetzner");
    let mut body: Value = serde_json::from_str(&hetzner.order_body("hooked"))?;
    body["webhook_url"] = json!(url);
    let (status, _, _, order) = stack.post_order(&body.to_string()).await?;
    assert_eq!(status, 202, "{order}");
    assert_eq!(order["webhook_url"], url.as_str());
    let id = order["id"].as_str().expect("an id").to_string();
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;

    // The first call fails (500), the retry is delivered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while calls.lock().expect("calls").len() < 2 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the webhook was not retried: {:?}\n{}",
            calls.lock().expect("calls"),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secret = stack.api().get("/v1/webhooks/secret").await?;
    let secret = secret["secret"].as_str().expect("a secret").to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let received = calls.lock().expect("calls").clone();
    assert_eq!(
        received[0].id, received[1].id,
        "one webhook-id on every attempt"
    );
    for call in &received {
        assert!(signature_is_valid(&secret, call), "bad signature: {call:?}");
        let payload: Value = serde_json::from_str(&call.body)?;
        assert_eq!(payload["type"], "order.active", "{payload}");
        assert_eq!(payload["data"]["id"], id.as_str());
        assert_eq!(payload["data"]["status"], "active");
        assert!(
            payload["data"]["server"]["vendor_id"].is_string(),
            "{payload}"
        );
    }
    // A tampered body does not verify.
    let mut forged = received[1].clone();
    forged.body = forged.body.replace("active", "failed");
    assert!(!signature_is_valid(&secret, &forged));

    // The order's log tells of the failure and the delivery; nothing more is sent.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let order = stack.order(&id).await?;
        let messages = event_messages(&order);
        let failed = messages
            .iter()
            .any(|m| m.contains("failed (the receiver answered 500"));
        let delivered = messages
            .iter()
            .any(|m| m.starts_with("webhook delivered") && m.contains("attempt 2"));
        if failed && delivered {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{messages:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(calls.lock().expect("calls").len(), 2);
    let metrics = stack.metrics().await?;
    for outcome in ["failed", "delivered"] {
        let series = format!("provisioner_webhook_calls_total{{outcome=\"{outcome}\"}}");
        assert_eq!(
            metric_value(&metrics, &series),
            Some(1.0),
            "{series}\n{metrics}"
        );
    }

    // Deleting it calls again, as a new webhook.
    let (status, _) = stack.delete_order(&id).await?;
    assert_eq!(status, 202);
    stack
        .wait_for_status(&id, "deleted", Duration::from_secs(30))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while calls.lock().expect("calls").len() < 3 {
        anyhow::ensure!(Instant::now() < deadline, "no webhook for the delete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let third = calls.lock().expect("calls")[2].clone();
    assert_ne!(third.id, received[0].id);
    assert!(signature_is_valid(&secret, &third));
    assert_eq!(
        serde_json::from_str::<Value>(&third.body)?["type"],
        "order.deleted"
    );
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_webhook_url_that_is_not_http_is_refused() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let hetzner = fixture("hetzner");
    // By default a receiver must be on a public address, and never carries credentials.
    for bad in [
        "ftp://example.com/hook",
        "not a url",
        "http://",
        "http://127.0.0.1:8080/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "https://user:password@example.com/hook",
        // The special-purpose blocks and IPv6 forms of private IPv4 addresses the security
        // review (issue 15) found accepted and called.
        "http://[::ffff:0:127.0.0.1]/hook",
        "http://[::127.0.0.1]/hook",
        "http://[64:ff9b::127.0.0.1]/hook",
        "http://[2002:7f00:1::]/hook",
        "http://[fec0::1]/hook",
        "http://198.18.0.1/hook",
        "http://240.0.0.1/hook",
        "http://192.0.0.1/hook",
    ] {
        let mut body: Value = serde_json::from_str(&hetzner.order_body("bad-hook"))?;
        body["webhook_url"] = json!(bad);
        let (status, _, _, answer) = stack.post_order(&body.to_string()).await?;
        assert_eq!(status, 422, "{bad}: {answer}");
        assert_eq!(answer["errors"][0]["field"], "webhook_url", "{answer}");
    }
    assert!(stack.list_all_orders("").await?.is_empty());
    stack.cleanup().await;
    Ok(())
}

/// A listener that stands for an outbound HTTP proxy: it records every request it gets (a
/// proxied `http://` call arrives with the target's absolute URL) and answers 204.
async fn start_recording_proxy() -> anyhow::Result<(String, Arc<Mutex<Vec<String>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let record = record.clone();
        async move {
            record.lock().expect("seen").push(uri.to_string());
            StatusCode::NO_CONTENT
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, seen))
}

/// Waits until the order's event log tells of a webhook attempt (delivered, failed or
/// given up); those messages.
async fn wait_for_webhook_event(
    stack: &Stack,
    api: &ApiClient,
    id: &str,
    within: Duration,
) -> anyhow::Result<Vec<String>> {
    let deadline = Instant::now() + within;
    loop {
        let order = api.order(id).await?;
        let attempts: Vec<String> = event_messages(&order)
            .into_iter()
            .filter(|m| m.starts_with("webhook"))
            .collect();
        if !attempts.is_empty() {
            return Ok(attempts);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no webhook attempt for {id}: {order}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts a Hetzner order named `name` calling `webhook_url` as the client's tenant; its id.
async fn order_with_webhook(
    api: &ApiClient,
    name: &str,
    webhook_url: &str,
) -> anyhow::Result<String> {
    let mut body: Value = serde_json::from_str(&fixture("hetzner").order_body(name))?;
    body["webhook_url"] = json!(webhook_url);
    let (status, order) = post_order_with(api, body.to_string(), None).await?;
    anyhow::ensure!(status == 202, "ordering {name}: {status}");
    Ok(order["id"].as_str().expect("an id").to_string())
}

/// Polls the order (as the client's tenant) until it is `active`.
async fn wait_active(
    stack: &Stack,
    api: &ApiClient,
    id: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let order = api.order(id).await?;
        if order["status"] == "active" {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "order {id} is not active: {order}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// With `HTTP_PROXY`/`ALL_PROXY` set on order-api, a webhook to a name that resolves to a
/// loopback address is still refused: the call goes neither to the proxy (which would
/// resolve the name itself, unchecked) nor to the receiver.
#[tokio::test]
async fn a_webhook_is_not_sent_through_a_proxy() -> anyhow::Result<()> {
    let (proxy, proxied) = start_recording_proxy().await?;
    let stack = Stack::start(StackOptions {
        api_env: ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"]
            .into_iter()
            .map(|name| (name.to_string(), proxy.clone()))
            .collect(),
        ..StackOptions::default()
    })
    .await?;
    let (url, calls) = start_receiver(0).await?;
    // A name, so it passes the check at order time and is resolved (and refused) at the call.
    let url = url.replace("127.0.0.1", "localhost");
    let id = order_with_webhook(&stack.api(), "proxied-hook", &url).await?;
    let attempts =
        wait_for_webhook_event(&stack, &stack.api(), &id, Duration::from_secs(30)).await?;
    let proxied = proxied.lock().expect("seen").clone();
    assert!(
        proxied.is_empty(),
        "the webhook went through the proxy: {proxied:?}; {attempts:?}"
    );
    assert!(calls.lock().expect("calls").is_empty(), "{attempts:?}");
    assert!(
        attempts[0].contains("failed") && attempts[0].contains("no public address"),
        "{attempts:?}"
    );
    stack.cleanup().await;
    Ok(())
}

/// order-api's log names a webhook's receiver by its origin only: a token in the URL's
/// query (or path) never reaches the log.
#[tokio::test]
async fn webhook_logs_carry_the_origin_not_the_url() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        api_env: vec![("WEBHOOK_ALLOW_PRIVATE_ADDRESSES".into(), "true".into())],
        ..StackOptions::default()
    })
    .await?;
    let (url, calls) = start_receiver(0).await?;
    let origin = url.trim_end_matches("/hooks/orders").to_string();
    let secret_token = "tok-3b9f0c1e7d2a";
    let url = format!("{url}?token={secret_token}");
    let id = order_with_webhook(&stack.api(), "logged-hook", &url).await?;
    let attempts =
        wait_for_webhook_event(&stack, &stack.api(), &id, Duration::from_secs(30)).await?;
    assert!(attempts[0].starts_with("webhook delivered"), "{attempts:?}");
    assert_eq!(calls.lock().expect("calls").len(), 1);
    let log = stack.api_log();
    assert!(
        log.contains(&format!("receiver={origin}")),
        "the log does not name the receiver's origin {origin}:\n{log}"
    );
    assert!(
        !log.contains(secret_token),
        "the token is in the log:\n{log}"
    );
    assert!(
        !log.contains("/hooks/orders"),
        "the path is in the log:\n{log}"
    );
    stack.cleanup().await;
    Ok(())
}

/// One tenant's slow receiver does not hold up another tenant's webhook: with two call
/// slots, tenant A's three orders calling a receiver that takes 20 s do not keep tenant B's
/// webhook from arriving within a few seconds.
#[tokio::test]
async fn a_slow_tenant_does_not_hold_up_other_tenants_webhooks() -> anyhow::Result<()> {
    let receiver_delay = Duration::from_secs(20);
    let stack = Stack::start(StackOptions {
        api_env: vec![
            ("WEBHOOK_ALLOW_PRIVATE_ADDRESSES".into(), "true".into()),
            ("WEBHOOK_TIMEOUT_SECS".into(), "30".into()),
            ("WEBHOOK_MAX_CONCURRENT".into(), "2".into()),
            ("WEBHOOK_MAX_CONCURRENT_PER_TENANT".into(), "1".into()),
        ],
        ..StackOptions::default()
    })
    .await?;
    let (slow, slow_calls) = start_slow_receiver(0, receiver_delay).await?;
    let (fast, fast_calls) = start_receiver(0).await?;
    let tenant_b = stack.client_of_tenant("tenant-b").await?;

    let mut a_orders = Vec::new();
    for n in 0..3 {
        a_orders.push(order_with_webhook(&stack.api(), &format!("slow-{n}"), &slow).await?);
    }
    for id in &a_orders {
        wait_active(&stack, &stack.api(), id, Duration::from_secs(30)).await?;
    }
    // A's calls are under way (and stuck at the receiver).
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow_calls.lock().expect("calls").is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "A's webhooks never started\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let b_order = order_with_webhook(&stack.api_with(&tenant_b), "fast-0", &fast).await?;
    wait_active(
        &stack,
        &stack.api_with(&tenant_b),
        &b_order,
        Duration::from_secs(30),
    )
    .await?;
    let active = Instant::now();
    let bound = Duration::from_secs(5);
    while fast_calls.lock().expect("calls").is_empty() {
        anyhow::ensure!(
            active.elapsed() < bound,
            "tenant B's webhook did not arrive within {bound:?} of its order settling \
             (tenant A's receiver takes {receiver_delay:?}; A's calls so far: {})\n{}",
            slow_calls.lock().expect("calls").len(),
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.cleanup().await;
    Ok(())
}
