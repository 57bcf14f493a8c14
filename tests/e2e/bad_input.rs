//! Bad HTTP input gets a 4xx problem+json that says what is wrong, and nothing is
//! published.

use std::time::Duration;

use provisioner_tests::{Stack, StackOptions};
use reqwest::Method;

/// Each bad body: its expected status, problem type and a word the detail must contain.
const CASES: &[(&str, &str, u16, &str, &str)] = &[
    (
        "unknown vendor",
        r#"{"vendor":"nimbus","region":"fsn1","size":"cx22","image":"ubuntu-24.04","name":"a"}"#,
        422,
        "/problems/unknown-vendor",
        "nimbus",
    ),
    (
        "missing field",
        r#"{"vendor":"hetzner","size":"cx22","image":"ubuntu-24.04","name":"a"}"#,
        422,
        "/problems/invalid-body",
        "region",
    ),
    (
        "wrong type",
        r#"{"vendor":"hetzner","region":7,"size":"cx22","image":"ubuntu-24.04","name":"a"}"#,
        422,
        "/problems/invalid-body",
        "invalid type",
    ),
    (
        "malformed JSON",
        r#"{"vendor":"hetzner","region":"#,
        400,
        "/problems/invalid-json",
        "EOF",
    ),
    (
        "empty name",
        r#"{"vendor":"hetzner","region":"fsn1","size":"cx22","image":"ubuntu-24.04","name":""}"#,
        422,
        "/problems/validation-failed",
        "failed validation",
    ),
    (
        "unknown field",
        r#"{"vendor":"hetzner","region":"fsn1","size":"cx22","image":"ubuntu-24.04","name":"a","colour":"red"}"#,
        422,
        "/problems/invalid-body",
        "colour",
    ),
];

/// Every case answers its status with a problem document, and no order or server results.
#[tokio::test]
async fn bad_orders_get_problem_json_and_publish_nothing() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    for (case, body, status, problem_type, detail_word) in CASES {
        let (got, location, content_type, problem) = stack.post_order(body).await?;
        assert_eq!(got, *status, "{case}: {problem}");
        assert_eq!(content_type, "application/problem+json", "{case}");
        assert_eq!(problem["type"], *problem_type, "{case}: {problem}");
        assert_eq!(problem["status"], *status, "{case}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(detail_word),
            "{case}: detail '{detail}' lacks '{detail_word}'"
        );
        assert!(
            location.is_none(),
            "{case}: no Location for a refused order"
        );
    }
    // Without a content type the body is not read as JSON at all.
    let response = stack
        .api()
        .request(Method::POST, "/v1/orders")
        .body("{}")
        .send()
        .await?;
    assert_eq!(response.status(), 415);

    // Nothing was recorded, so nothing can have been published or created.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let list = stack.api().list_orders("").await?;
    assert_eq!(list["orders"], serde_json::json!([]));
    assert_eq!(stack.sim_stats().await?["created_total"], 0);
    stack.cleanup().await;
    Ok(())
}

/// Unknown order ids and paths are 404 problem documents, bad query parameters 400.
#[tokio::test]
async fn unknown_ids_and_bad_queries_are_problems() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    for (path, status, problem_type) in [
        ("/v1/orders/not-a-uuid", 404, "/problems/not-found"),
        (
            "/v1/orders/01a214ad-8f77-7594-b368-8b00cb215ee4",
            404,
            "/problems/not-found",
        ),
        ("/v1/nothing", 404, "/problems/not-found"),
        ("/v1/orders?status=done", 400, "/problems/invalid-query"),
        ("/v1/orders?limit=0", 400, "/problems/invalid-query"),
        ("/v1/orders?cursor=zzz", 400, "/problems/invalid-query"),
    ] {
        let (got, problem) = stack.api().status_and_json(Method::GET, path, None).await?;
        assert_eq!(got, status, "{path}");
        assert_eq!(problem["type"], problem_type, "{path}: {problem}");
    }
    stack.cleanup().await;
    Ok(())
}

/// Filters no order can match (a NUL byte, which no stored vendor or tenant holds and
/// PostgreSQL cannot even compare) answer an empty page, in SQLite and PostgreSQL alike;
/// schemathesis found the 500 PostgreSQL gave.
#[tokio::test]
async fn filters_no_order_can_match_are_an_empty_page() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    for query in [
        "vendor=%C2%B1%00%16",
        "tenant=test%00",
        "status=deleted&vendor=hetzner%00&tenant=a%00b",
    ] {
        let page = stack.api().list_orders(query).await?;
        assert_eq!(page["orders"], serde_json::json!([]), "{query}: {page}");
    }
    stack.cleanup().await;
    Ok(())
}

/// A NUL byte (U+0000) in any string of an order is a 422 naming the field, before the
/// order store sees it: PostgreSQL's text cannot hold one (a vendor holding one made the
/// vendor look-up fail with a 500; schemathesis found it in CI), and SQLite stored what
/// PostgreSQL would refuse, so the two stores answered differently.
#[tokio::test]
async fn a_nul_byte_in_any_order_string_is_refused() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let valid = serde_json::json!({
        "vendor": "hetzner", "region": "fsn1", "size": "cx22", "image": "ubuntu-24.04",
        "name": "a",
    });
    let with = |pointer: &str, value: serde_json::Value| {
        let mut body = valid.clone();
        let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
        let target = if parent.is_empty() {
            &mut body
        } else {
            body.pointer_mut(parent).expect("the parent exists")
        };
        target[key] = value;
        body
    };
    let mut cases = Vec::new();
    for field in ["vendor", "region", "size", "image", "name"] {
        cases.push((field, with(&format!("/{field}"), "nul\u{0}here".into())));
    }
    cases.push(("user_data", with("/user_data", "#cloud-config\u{0}".into())));
    cases.push((
        "labels",
        with("/labels", serde_json::json!({ "team\u{0}": "web" })),
    ));
    cases.push((
        "labels.team",
        with("/labels", serde_json::json!({ "team": "w\u{0}b" })),
    ));
    cases.push((
        "ssh_keys[0]",
        with(
            "/ssh_keys",
            serde_json::json!([
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a\u{0}b"
            ]),
        ),
    ));
    cases.push((
        "webhook_url",
        with("/webhook_url", "https://example.com/h\u{0}ok".into()),
    ));
    for (field, body) in cases {
        let (status, location, _, problem) = stack.post_order(&body.to_string()).await?;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(
            problem["type"], "/problems/validation-failed",
            "{field}: {problem}"
        );
        let named = problem["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|error| {
                error["field"] == field
                    && error["message"].as_str().is_some_and(|m| m.contains("NUL"))
            });
        assert!(named, "{field}: no error names it and NUL: {problem}");
        assert!(location.is_none(), "{field}");
    }
    let list = stack.api().list_orders("").await?;
    assert_eq!(
        list["orders"],
        serde_json::json!([]),
        "nothing was recorded"
    );
    stack.cleanup().await;
    Ok(())
}
