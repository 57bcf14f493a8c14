//! Webhooks: an order's `webhook_url` is called when the order settles, signed with the
//! tenant's secret (Standard Webhooks), and retried when the receiver fails; a bad URL (not
//! http, credentials, a private address unless allowed) is refused at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use provisioner_tests::{Stack, StackOptions, event_messages, fixture, metric_value};
use serde_json::{Value, json};

/// One call the receiver got.
#[derive(Debug, Clone)]
struct Call {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
}

/// A receiver that answers 500 to its first `failures` calls, then 204.
#[derive(Clone)]
struct Receiver {
    calls: Arc<Mutex<Vec<Call>>>,
    failures: usize,
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut calls = receiver.calls.lock().expect("calls");
    calls.push(Call {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    if calls.len() <= receiver.failures {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

/// Starts a receiver on a free port; its URL and its calls.
async fn start_receiver(failures: usize) -> anyhow::Result<(String, Arc<Mutex<Vec<Call>>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/orders", listener.local_addr()?);
    let calls = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/hooks/orders", axum::routing::post(receive))
        .with_state(Receiver {
            calls: calls.clone(),
            failures,
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
    let secret: Value = stack
        .http
        .get(format!("{}/v1/webhooks/secret", stack.api_url))
        .send()
        .await?
        .json()
        .await?;
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
