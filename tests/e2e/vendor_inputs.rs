//! What an order carries reaches the vendor, and nothing of another tenant's does: two
//! tenants may order the same name at a vendor that requires unique names; SSH public keys,
//! user data and labels reach the simulated server at every vendor (keys registered once
//! per fingerprint where the vendor has a key store); a vendor's fault shows the tenant no
//! internal address.

use std::time::Duration;

use provisioner_tests::{Stack, StackOptions, VENDORS, fixture};
use reqwest::Method;
use serde_json::{Value, json};

/// Two OpenSSH public keys (`ssh-keygen -t ed25519` and `-t rsa -b 2048`).
const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW alice@laptop";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCbXVtckDXwl0n1997GF0lo+ozsZcGtTKwx1Gm/ROIdTuUXDY8vunl+xspS8sUj9VF2HHa1l3Dqh2kUP6Y/zJ2cF8OeAGzYDpC+er10UQJKlssD11HLC/KQ//ULydhC1onrGLjUX5nj1P3jEoO8drA64Gxgu0aKmtqcpfs2x6FsKOE+3Xf9kvUd+QhNgB5n0Zf/ZuqOwyJfM7uyopPsgUtJzqYdbdm2H/b6SRZK4Tpdy5JyfmdW5Fx71XTmZsFZim6hg7HgxAaRS8nA9SDfo1F33WSzhfP1M+vCA+ZLdYYa8mdeLRUKyF7TRvtprxPx4GMRaSh7tX/QbcZ8zqZddWFb bob@desk";

/// POSTs `body` with `client`; the status and the JSON answer.
async fn post(
    stack: &Stack,
    client: &reqwest::Client,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    stack
        .api_with(client)
        .status_and_json(Method::POST, "/v1/orders", Some(body))
        .await
}

/// `GET /v1/orders/{id}` with `client`.
async fn order_of(stack: &Stack, client: &reqwest::Client, id: &str) -> anyhow::Result<Value> {
    let path = format!("/v1/orders/{id}");
    Ok(stack
        .api_with(client)
        .status_and_json(Method::GET, &path, None)
        .await?
        .1)
}

/// Polls `id` with `client` until it settles; the order.
async fn settled(stack: &Stack, client: &reqwest::Client, id: &str) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let order = order_of(stack, client, id).await?;
        if ["active", "failed", "cancelled", "deleted"]
            .iter()
            .any(|s| order["status"] == *s)
        {
            return Ok(order);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "order {id} did not settle: {order}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The simulator's record of the server made for order `id`.
async fn sim_server_of(stack: &Stack, id: &str) -> anyhow::Result<Value> {
    stack
        .sim_servers()
        .await?
        .into_iter()
        .find(|server| server["idempotency_key"] == id)
        .ok_or_else(|| anyhow::anyhow!("the simulator has no server for order {id}"))
}

/// Tenant A orders `acme-secret-merger-db` at Hetzner (which requires unique server names);
/// tenant B's order of the same name runs too, instead of failing with Hetzner's
/// `uniqueness_error` (which told B that A has such a server). Each order keeps the name
/// its tenant asked for; its server shows the unique name it has at the vendor.
#[tokio::test]
async fn two_tenants_ordering_one_name_at_hetzner_both_run() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    let hetzner = fixture("hetzner");
    let name = "acme-secret-merger-db";
    let body: Value = serde_json::from_str(&hetzner.order_body(name))?;
    let mut servers = Vec::new();
    for tenant in ["tenant-a", "tenant-b"] {
        let client = stack.client_of_tenant(tenant).await?;
        let (status, order) = post(&stack, &client, &body).await?;
        assert_eq!(status, 202, "{order}");
        let id = order["id"].as_str().unwrap_or_default().to_string();
        let order = settled(&stack, &client, &id).await?;
        assert_eq!(order["status"], "active", "{tenant}: {order}");
        assert_eq!(order["name"], name, "the order keeps the name asked for");
        let server_name = order["server"]["name"].as_str().unwrap_or_default();
        assert!(
            server_name.starts_with(&format!("{name}-")) && server_name.len() <= 63,
            "the vendor-side name is the name with a suffix: {order}"
        );
        servers.push(server_name.to_string());
    }
    assert_ne!(servers[0], servers[1]);
    assert_eq!(stack.sim_stats_of("hetzner").await?["live"], 2);
    stack.cleanup().await;
    Ok(())
}

/// At every vendor, an order's public SSH keys, user data and labels reach the server the
/// simulator made: Hetzner and DigitalOcean through their key stores (each key registered
/// once, by fingerprint, and found again by the next order), OpenStack through cloud-init
/// user data that keeps the order's own user data. Before, Hetzner and DigitalOcean took the
/// keys as stored key names and OpenStack dropped them.
#[tokio::test]
async fn ssh_keys_user_data_and_labels_reach_every_vendor() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    for vendor in VENDORS {
        let marker = format!("echo provisioned-by-{}", vendor.vendor);
        let user_data = format!("#cloud-config\nruncmd:\n  - {marker}\n");
        for round in 1..=2 {
            let mut body: Value = serde_json::from_str(
                &vendor.order_body(&format!("keys-{}-{round}", vendor.vendor)),
            )?;
            body["ssh_keys"] = json!([ED25519, RSA]);
            body["user_data"] = json!(user_data);
            body["labels"] = json!({"team": "blue"});
            let (status, order) = post(&stack, &stack.http, &body).await?;
            assert_eq!(status, 202, "{}: {order}", vendor.vendor);
            let id = order["id"].as_str().unwrap_or_default().to_string();
            let order = settled(&stack, &stack.http, &id).await?;
            assert_eq!(order["status"], "active", "{}: {order}", vendor.vendor);
            let server = sim_server_of(&stack, &id).await?;
            let keys: Vec<&str> = server["ssh_keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                keys.contains(&ED25519) && keys.contains(&RSA),
                "{}: the server got keys {keys:?}",
                vendor.vendor
            );
            let got = server["user_data"].as_str().unwrap_or_default();
            assert!(
                got.contains(&user_data),
                "{}: the server got user data {got:?}",
                vendor.vendor
            );
            assert_eq!(
                server["labels"]["team"], "blue",
                "{}: {server}",
                vendor.vendor
            );
        }
    }
    // One key-store entry per key and vendor, though two orders sent each key.
    let stores = json!({"keys": stack.sim().ssh_keys().await?});
    for vendor in ["hetzner", "digitalocean"] {
        let stored = stores["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|key| key["vendor"] == vendor)
            .count();
        assert_eq!(stored, 2, "{vendor}: {stores:#}");
    }

    // OpenStack: user data cloud-init would not recognise cannot carry the keys; the order
    // is refused (at once, or by the plugin at create time), never run without them.
    let mut body: Value = serde_json::from_str(&fixture("openstack").order_body("keys-plain"))?;
    body["ssh_keys"] = json!([ED25519]);
    body["user_data"] = json!("just some text");
    let (status, answer) = post(&stack, &stack.http, &body).await?;
    if status == 202 {
        let id = answer["id"].as_str().unwrap_or_default().to_string();
        let order = settled(&stack, &stack.http, &id).await?;
        assert_eq!(order["status"], "failed", "{order}");
        assert_eq!(order["fault"]["code"], "invalid_request", "{order}");
    } else {
        assert_eq!(status, 422, "{answer}");
    }
    stack.cleanup().await;
    Ok(())
}

/// Keystone refuses the plugin's login: the order's fault says so without the internal
/// URL it was sent to (`http://127.0.0.1:<port>/openstack/identity/v3/auth/tokens`).
#[tokio::test]
async fn an_openstack_fault_shows_no_internal_address() -> anyhow::Result<()> {
    let stack = Stack::start(StackOptions::default()).await?;
    stack
        .inject_fault(json!({"vendor": "openstack", "kind": "unauthorized", "count": 100}))
        .await?;
    let id = stack.order_at("openstack", "no-leaks-1").await?;
    let failed = stack
        .wait_for_status(&id, "failed", Duration::from_secs(60))
        .await?;
    assert_eq!(failed["fault"]["code"], "unauthorized", "{failed}");
    let message = failed["fault"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{failed}");
    for leak in ["http://", "https://", "127.0.0.1", &stack.sim_url] {
        assert!(
            !message.contains(leak),
            "the fault shows {leak:?}: {message}"
        );
    }
    let events = failed.to_string();
    assert!(
        !events.contains(&stack.sim_url),
        "an event shows the address: {failed}"
    );
    stack.cleanup().await;
    Ok(())
}
