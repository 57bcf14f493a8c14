//! The Hetzner API's actions, over HTTP against the simulator's server loop: the actions a
//! create and a delete hand out can be read back by id (`GET /actions/{id}`, as hcloud's
//! `wait_until_finished` polls, `GET /servers/actions/{id}`,
//! `GET /servers/{id}/actions/{action_id}`) and listed per server; they are `running` until
//! the server has booted and a `success` with `progress` 100 and `finished` set after.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "sim-hetzner-token";
const BOOT_DELAY: Duration = Duration::from_millis(1500);

/// Status and JSON body of an authenticated request.
async fn call(request: reqwest::RequestBuilder) -> (u16, Value) {
    let answer = request.bearer_auth(TOKEN).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap())
}

fn assert_running(action: &Value, command: &str) {
    assert_eq!(action["command"], command, "{action}");
    assert_eq!(action["status"], "running", "{action}");
    assert!(action["progress"].as_u64().unwrap() < 100, "{action}");
    assert!(action["finished"].is_null(), "{action}");
    assert!(action["error"].is_null(), "{action}");
}

fn assert_succeeded(action: &Value, command: &str, server_id: u64) {
    assert_eq!(action["command"], command, "{action}");
    assert_eq!(action["status"], "success", "{action}");
    assert_eq!(action["progress"], 100, "{action}");
    assert!(action["finished"].is_string(), "{action}");
    assert!(action["started"].is_string(), "{action}");
    assert!(action["error"].is_null(), "{action}");
    assert_eq!(
        action["resources"],
        json!([{"id": server_id, "type": "server"}])
    );
}

#[tokio::test]
async fn actions_run_until_the_server_booted_and_succeed_after() {
    let sim = common::start_sim(BOOT_DELAY).await;
    let base = format!("http://{sim}/hetzner/v1");
    let http = reqwest::Client::new();
    let started = Instant::now();

    let (status, created) = call(http.post(format!("{base}/servers")).json(&json!({
        "name": "actions-1", "server_type": "cx22", "image": "ubuntu-24.04",
    })))
    .await;
    assert_eq!(status, 201, "{created}");
    let server_id = created["server"]["id"].as_u64().unwrap();
    let create_id = created["action"]["id"].as_u64().unwrap();
    let start_id = created["next_actions"][0]["id"].as_u64().unwrap();
    assert_running(&created["action"], "create_server");
    assert_running(&created["next_actions"][0], "start_server");

    // Read back while the server boots: the same actions, still running.
    for path in [
        format!("/actions/{create_id}"),
        format!("/servers/actions/{create_id}"),
        format!("/servers/{server_id}/actions/{create_id}"),
    ] {
        let (status, body) = call(http.get(format!("{base}{path}"))).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["action"]["id"], create_id, "{path}");
        assert_running(&body["action"], "create_server");
    }
    let (_, server) = call(http.get(format!("{base}/servers/{server_id}"))).await;
    assert_eq!(server["server"]["status"], "initializing");
    let (_, listed) = call(http.get(format!(
        "{base}/servers/{server_id}/actions?status=running&status=error&sort=id:desc"
    )))
    .await;
    let ids: Vec<u64> = listed["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [start_id, create_id], "{listed}");
    assert!(
        started.elapsed() < BOOT_DELAY,
        "the checks of running actions took longer than the boot delay"
    );

    // Polled as hcloud does, they succeed once the server runs, not before.
    let finished = loop {
        let (_, body) = call(http.get(format!("{base}/actions/{start_id}"))).await;
        if body["action"]["status"] != "running" {
            break body["action"].clone();
        }
        assert!(started.elapsed() < BOOT_DELAY * 4, "still running: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(started.elapsed() >= BOOT_DELAY);
    assert_succeeded(&finished, "start_server", server_id);
    let (_, server) = call(http.get(format!("{base}/servers/{server_id}"))).await;
    assert_eq!(server["server"]["status"], "running");
    let (_, body) = call(http.get(format!("{base}/servers/actions/{create_id}"))).await;
    assert_succeeded(&body["action"], "create_server", server_id);
    let (_, listed) =
        call(http.get(format!("{base}/servers/{server_id}/actions?status=running"))).await;
    assert_eq!(listed["actions"], json!([]), "{listed}");
    assert_eq!(listed["meta"]["pagination"]["total_entries"], 0);

    // The delete's action: the server is gone at once, so the action is done; it stays
    // readable after its server is gone.
    let (status, deleted) = call(http.delete(format!("{base}/servers/{server_id}"))).await;
    assert_eq!(status, 200, "{deleted}");
    let delete_id = deleted["action"]["id"].as_u64().unwrap();
    assert_succeeded(&deleted["action"], "delete_server", server_id);
    let (status, body) = call(http.get(format!("{base}/actions/{delete_id}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_succeeded(&body["action"], "delete_server", server_id);
    let (status, body) = call(http.get(format!("{base}/actions/{create_id}"))).await;
    assert_eq!(status, 200, "{body}");
    assert_succeeded(&body["action"], "create_server", server_id);
}

#[tokio::test]
async fn unknown_actions_are_hetzner_not_found_errors() {
    let sim = common::start_sim(BOOT_DELAY).await;
    let base = format!("http://{sim}/hetzner/v1");
    let http = reqwest::Client::new();
    let (_, created) = call(http.post(format!("{base}/servers")).json(&json!({
        "name": "actions-2", "server_type": "cx22", "image": "ubuntu-24.04",
    })))
    .await;
    let server_id = created["server"]["id"].as_u64().unwrap();
    let create_id = created["action"]["id"].as_u64().unwrap();

    for path in [
        "/actions/987654".to_string(),
        "/servers/actions/nope".to_string(),
        // An action of another server.
        format!("/servers/{}/actions/{create_id}", server_id + 1),
    ] {
        let (status, body) = call(http.get(format!("{base}{path}"))).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    let (status, body) =
        call(http.get(format!("{base}/servers/{server_id}/actions?sort=colour"))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_input");
    let (status, body) = call(http.get(format!("{base}/servers/{}/actions", server_id + 1))).await;
    assert_eq!(status, 404, "{body}");

    let answer = http
        .get(format!("{base}/actions/{create_id}"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
}
