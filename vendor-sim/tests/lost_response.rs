//! The `lost_response` fault: the simulator carries the request out (the server is made) and
//! drops the connection before a single byte of the answer, so the client has nothing it
//! could take for an answer.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

const TOKEN: &str = "sim-hetzner-token";

/// A fresh simulator with the default boot delay.
async fn start_sim() -> SocketAddr {
    common::start_sim(vendor_sim::SimConfig::default().boot_delay).await
}

fn create_body(name: &str, key: &str) -> Value {
    json!({
        "name": name, "server_type": "cx22", "image": "ubuntu-24.04", "location": "fsn1",
        "labels": {"provisioner-idempotency-key": key},
    })
}

async fn arm_lost_create(client: &reqwest::Client, addr: SocketAddr) {
    let armed = client
        .post(format!("http://{addr}/_sim/faults"))
        .json(&json!({"vendor": "hetzner", "kind": "lost_response", "method": "POST", "count": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(armed.status(), 201);
}

/// The JSON body of a `GET` of the simulator's control endpoint `path`.
async fn control_get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> Value {
    let answer = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    answer.json().await.unwrap()
}

async fn live_servers(client: &reqwest::Client, addr: SocketAddr) -> Vec<Value> {
    let body = control_get(client, addr, "/_sim/servers").await;
    body["servers"].as_array().unwrap().clone()
}

/// An HTTP client's create fails without a status, yet the server exists; the fault hits
/// once, and the next create is answered normally.
#[tokio::test]
async fn a_lost_create_answer_is_an_error_but_the_server_is_made() {
    let addr = start_sim().await;
    let client = reqwest::Client::new();
    arm_lost_create(&client, addr).await;

    let lost = client
        .post(format!("http://{addr}/hetzner/v1/servers"))
        .bearer_auth(TOKEN)
        .json(&create_body("lost-1", "key-1"))
        .send()
        .await;
    let error = match lost {
        Ok(response) => panic!("the client got an answer: {}", response.status()),
        Err(error) => error,
    };
    assert!(error.status().is_none(), "{error:?}");
    assert!(
        format!("{error:?}").contains("IncompleteMessage"),
        "not a connection closed before the message completed: {error:?}"
    );

    let servers = live_servers(&client, addr).await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["name"], "lost-1");
    assert_eq!(servers[0]["idempotency_key"], "key-1");

    // Disarmed after one hit: a retry is answered (here the name is taken, as at Hetzner).
    let retry = client
        .post(format!("http://{addr}/hetzner/v1/servers"))
        .bearer_auth(TOKEN)
        .json(&create_body("lost-1", "key-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 409);
    let faults = control_get(&client, addr, "/_sim/faults").await;
    assert_eq!(faults["faults"], json!([]));
}

/// On the wire: the connection closes without a single byte, so there is no status line
/// or header a client could take as an answer.
#[tokio::test]
async fn not_a_byte_of_the_answer_reaches_the_wire() {
    let addr = start_sim().await;
    let client = reqwest::Client::new();
    arm_lost_create(&client, addr).await;

    let body = create_body("lost-2", "key-2").to_string();
    let request = format!(
        "POST /hetzner/v1/servers HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {TOKEN}\r\n\
     content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    common::assert_nothing_answered(addr, &request, Duration::from_secs(10), "the simulator").await;

    let servers = live_servers(&client, addr).await;
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["idempotency_key"], "key-2");
}

/// Without `method`, the fault hits whatever comes first, a GET too; other requests are
/// answered.
#[tokio::test]
async fn a_lost_get_answer_and_then_normal_answers() {
    let addr = start_sim().await;
    let client = reqwest::Client::new();
    let armed = client
        .post(format!("http://{addr}/_sim/faults"))
        .json(&json!({"vendor": "hetzner", "kind": "lost_response"}))
        .send()
        .await
        .unwrap();
    assert_eq!(armed.status(), 201);
    let url = format!("http://{addr}/hetzner/v1/servers");
    let lost = client.get(&url).bearer_auth(TOKEN).send().await;
    assert!(lost.is_err(), "{lost:?}");
    let answered = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(answered.status(), 200);
}
