//! API tokens and tenants: every `/v1` endpoint answers 401 without a valid token; a tenant
//! never sees, follows, cancels or deletes another tenant's order (404, as if it did not
//! exist); an admin token sees every tenant's orders and reaches the operator endpoints.

use std::time::Duration;

use provisioner_tests::{
    Stack, StackOptions, TEST_TENANT, client_with_token, fixture, post_order_with,
};
use reqwest::{Client, Method};
use serde_json::Value;
use sqlx::Connection as _;

/// The endpoints that name one order (`{}` for its id).
const ORDER_ENDPOINTS: [(Method, &str); 4] = [
    (Method::GET, "/v1/orders/{}"),
    (Method::GET, "/v1/orders/{}/events"),
    (Method::POST, "/v1/orders/{}/cancel"),
    (Method::DELETE, "/v1/orders/{}"),
];

/// Sends `method path` (with a JSON `body` when given) through `client`; status, headers
/// and answer (as sent: these tests look at the refusals' headers and bodies).
async fn call(
    client: &Client,
    stack: &Stack,
    method: Method,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
    let mut request = stack.api_with(client).request(method, path);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    Ok((
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// [`call`]s the order endpoint `path_of` (one of [`ORDER_ENDPOINTS`]) for the order `id`,
/// without a body; the status and the answer.
async fn call_for_order(
    client: &Client,
    stack: &Stack,
    (method, path_of): &(Method, &str),
    id: &str,
) -> anyhow::Result<(u16, Value)> {
    let path = path_of.replace("{}", id);
    let (status, _, answer) = call(client, stack, method.clone(), &path, None).await?;
    Ok((status, answer))
}

/// Every endpoint under `/v1`, with a body where it takes one.
fn endpoints(order_id: &str, body: &str) -> Vec<(Method, String, Option<String>)> {
    vec![
        (Method::POST, "/v1/orders".into(), Some(body.to_string())),
        (Method::GET, "/v1/orders".into(), None),
        (Method::GET, format!("/v1/orders/{order_id}"), None),
        (Method::GET, format!("/v1/orders/{order_id}/events"), None),
        (Method::POST, format!("/v1/orders/{order_id}/cancel"), None),
        (Method::DELETE, format!("/v1/orders/{order_id}"), None),
        (Method::GET, "/v1/vendors".into(), None),
        (Method::GET, "/v1/orphans".into(), None),
        (Method::POST, "/v1/orphans/sweep".into(), None),
    ]
}

#[tokio::test]
async fn every_endpoint_needs_a_valid_token() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let order_id = stack.order_server("mine").await?;
    let body = fixture("hetzner").order_body("sneaky");

    let revoked = stack
        .create_token(&["--tenant", TEST_TENANT, "--label", "to-revoke"])
        .await?;
    let revoked_client = client_with_token(&revoked)?;
    assert_eq!(
        call(&revoked_client, &stack, Method::GET, "/v1/orders", None)
            .await?
            .0,
        200,
        "a fresh token works"
    );
    let id = stack.token_id("to-revoke").await?;
    let revoke = tokio::process::Command::new(provisioner_tests::binary("debug", "order-api"))
        .args(["tokens", "revoke", &id])
        .env("DATABASE_URL", stack.database_url())
        .output()
        .await?;
    assert!(revoke.status.success(), "tokens revoke failed: {revoke:?}");
    // Instances remember a token for 5 s: a revoke takes effect within that.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while call(&revoked_client, &stack, Method::GET, "/v1/orders", None)
        .await?
        .0
        != 401
    {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "a revoked token still works after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let anonymous = Client::new();
    let wrong =
        client_with_token("pvn_0000000000000000000000000000000000000000000000000000000000000000")?;
    let mut basic_headers = reqwest::header::HeaderMap::new();
    basic_headers.insert("authorization", "Basic dXNlcjpwYXNz".parse()?);
    let basic = Client::builder().default_headers(basic_headers).build()?;
    for (name, client) in [
        ("no token", &anonymous),
        ("an unknown token", &wrong),
        ("a revoked token", &revoked_client),
        ("basic auth", &basic),
    ] {
        for (method, path, body) in endpoints(&order_id, &body) {
            let (status, headers, answer) =
                call(client, &stack, method.clone(), &path, body.as_deref()).await?;
            assert_eq!(status, 401, "{method} {path} with {name}: {answer}");
            assert_eq!(
                headers["content-type"], "application/problem+json",
                "{method} {path} with {name}"
            );
            assert_eq!(answer["type"], "/problems/unauthorized", "{answer}");
            assert!(
                headers["www-authenticate"].to_str()?.starts_with("Bearer"),
                "{method} {path} with {name}"
            );
        }
    }
    // Nothing was ordered by the refused POSTs, and the order was not touched.
    assert_eq!(stack.list_all_orders("").await?.len(), 1);
    stack
        .wait_for_status(&order_id, "active", Duration::from_secs(30))
        .await?;
    // Health, readiness and metrics stay open (for probes and scrapers).
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = call(&anonymous, &stack, Method::GET, path, None).await?;
        assert_eq!(status, 200, "{path}");
    }
    stack.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_tenant_never_reaches_another_tenants_orders() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let other = stack.client_of_tenant("globex").await?;
    let admin = client_with_token(&stack.admin_token)?;
    let hetzner = fixture("hetzner");
    let body = hetzner.order_body("shared-name");

    // The test tenant orders, with a key; the other tenant uses the same key and body.
    let (status, ours) = post_order_with(&stack.api(), body.clone(), Some("same-key")).await?;
    assert_eq!(status, 202, "{ours}");
    assert_eq!(ours["tenant"], TEST_TENANT);
    let our_id = ours["id"].as_str().expect("an id").to_string();
    let (status, theirs) =
        post_order_with(&stack.api_with(&other), body.clone(), Some("same-key")).await?;
    assert_eq!(status, 202, "keys are per tenant: a new order");
    let their_id = theirs["id"].as_str().expect("an id").to_string();
    assert_ne!(their_id, our_id);
    assert_eq!(theirs["tenant"], "globex");
    stack
        .wait_for_status(&our_id, "active", Duration::from_secs(30))
        .await?;

    // Every endpoint that names our order answers the other tenant as for no order at all.
    let unknown = uuid::Uuid::now_v7().to_string();
    for endpoint in &ORDER_ENDPOINTS {
        let (method, path_of) = endpoint;
        let (status, answer) = call_for_order(&other, &stack, endpoint, &our_id).await?;
        let (unknown_status, unknown_answer) =
            call_for_order(&other, &stack, endpoint, &unknown).await?;
        assert_eq!(status, 404, "{method} {path_of}: {answer}");
        assert_eq!(unknown_status, 404, "{method} {path_of}: {unknown_answer}");
        assert_eq!(answer["type"], unknown_answer["type"]);
        assert_eq!(
            answer["detail"]
                .as_str()
                .map(|d| d.replace(&our_id, "<id>")),
            unknown_answer["detail"]
                .as_str()
                .map(|d| d.replace(&unknown, "<id>")),
            "the answers tell nothing apart"
        );
    }
    // Our order is untouched: still active, not deleting or cancelling.
    assert_eq!(stack.order(&our_id).await?["status"], "active");

    // Lists: each tenant its own, even when asking for the other's.
    let list = |client: Client, query: &'static str| {
        let api = stack.api_with(&client);
        async move {
            let page = api.list_orders(query).await?;
            anyhow::Ok(
                page["orders"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o["id"].as_str().map(str::to_string))
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(list(stack.http.clone(), "").await?, vec![our_id.clone()]);
    assert_eq!(list(other.clone(), "").await?, vec![their_id.clone()]);
    assert!(list(other.clone(), "tenant=test").await?.is_empty());

    // The admin sees both, filters by tenant, reads either order, and orders nothing.
    let all = list(admin.clone(), "").await?;
    assert!(all.contains(&our_id) && all.contains(&their_id), "{all:?}");
    assert_eq!(
        list(admin.clone(), "tenant=globex").await?,
        vec![their_id.clone()]
    );
    let (status, _, order) = call(
        &admin,
        &stack,
        Method::GET,
        &format!("/v1/orders/{our_id}"),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["tenant"], TEST_TENANT);
    let (status, _, answer) = call(&admin, &stack, Method::POST, "/v1/orders", Some(&body)).await?;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["type"], "/problems/forbidden");

    // Operator endpoints: 403 for a tenant, 200/202 for the admin.
    for (method, path) in [
        (Method::GET, "/v1/orphans"),
        (Method::POST, "/v1/orphans/sweep"),
    ] {
        let (status, _, answer) = call(&stack.http, &stack, method.clone(), path, None).await?;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        let (status, _, answer) = call(&admin, &stack, method.clone(), path, None).await?;
        assert!(status == 200 || status == 202, "{method} {path}: {answer}");
    }
    stack.cleanup().await;
    Ok(())
}

/// Another tenant's order is refused by the first query, before anything else of it is read:
/// with the event log made unreadable, the owner's read fails (so the log is read for a
/// visible order) while the other tenant still gets the plain 404 of an unknown id, at
/// every endpoint that names an order. (Reading first and checking after made another
/// tenant's order measurably slower to refuse than an id that does not exist.)
#[tokio::test]
async fn another_tenants_order_is_refused_before_it_is_read() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions {
        api_env: vec![("VALIDATE_TIMEOUT_MS".into(), "0".into())],
        ..StackOptions::default()
    })
    .await?;
    let other = stack.client_of_tenant("globex").await?;
    let id = stack.order_server("private").await?;
    // Settled first, so that nothing writes events while their table is away.
    stack
        .wait_for_status(&id, "active", Duration::from_secs(30))
        .await?;

    sqlx::any::install_default_drivers();
    let mut database = sqlx::AnyConnection::connect(&stack.database_url()).await?;
    sqlx::query("ALTER TABLE order_events RENAME TO order_events_hidden")
        .execute(&mut database)
        .await?;
    let (owner_status, _, _) = call(
        &stack.http,
        &stack,
        Method::GET,
        &format!("/v1/orders/{id}"),
        None,
    )
    .await?;
    assert_eq!(owner_status, 500, "the owner's read needs the event log");
    for endpoint in &ORDER_ENDPOINTS {
        let (method, path_of) = endpoint;
        let (status, answer) = call_for_order(&other, &stack, endpoint, &id).await?;
        assert_eq!(status, 404, "{method} {path_of}: {answer}");
    }
    sqlx::query("ALTER TABLE order_events_hidden RENAME TO order_events")
        .execute(&mut database)
        .await?;
    stack.cleanup().await;
    Ok(())
}
