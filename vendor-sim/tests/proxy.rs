//! The fault-injecting reverse proxy (`vendor_sim::proxy`) in front of the in-process
//! simulator: answers pass through as they are, each fault is rendered from a fault profile
//! as the simulator's native vendors render it (and EC2's XML), a lost response reaches no
//! client after the upstream did the work, `small_pages` and a standing rate limit act as a
//! paging or rate-limited vendor would, and the record shows what reached the vendor with
//! credentials redacted.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use vendor_sim::proxy::{
    FaultProfile, ProxyConfig, ProxyHandle, REDACTED, RecordedRequest, spawn_proxy,
};
use vendor_sim::{SimConfig, SimState};

const HETZNER_TOKEN: &str = "sim-hetzner-token";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn shipped_profile(vendor: &str) -> FaultProfile {
    FaultProfile::load(&repo_path(&format!("plugins/{vendor}/faults.toml"))).unwrap()
}

/// A simulator whose servers stay booting for an hour (so a server renders the same twice),
/// on a local port until the test's runtime ends.
async fn start_sim() -> SocketAddr {
    common::start_sim(Duration::from_secs(3600)).await
}

/// A simulator ([`start_sim`]) behind a proxy with `vendor`'s shipped fault profile, its
/// upstream the simulator's `prefix` for that vendor.
async fn sim_behind_shipped_proxy(vendor: &str, prefix: &str) -> (SocketAddr, ProxyHandle) {
    let sim = start_sim().await;
    let proxy = start_proxy(&format!("http://{sim}{prefix}"), shipped_profile(vendor)).await;
    (sim, proxy)
}

async fn start_proxy(upstream: &str, profile: FaultProfile) -> ProxyHandle {
    spawn_proxy(ProxyConfig {
        upstream: upstream.parse().unwrap(),
        profile,
        upstream_ca_pem: None,
    })
    .await
    .unwrap()
}

async fn arm(client: &reqwest::Client, base: &str, rule: Value) {
    let armed = client
        .post(format!("{base}/_sim/faults"))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert_eq!(armed.status(), 201, "{rule}: {:?}", armed.text().await);
}

async fn recorded(client: &reqwest::Client, proxy: &ProxyHandle) -> Vec<RecordedRequest> {
    json_of(client.get(format!("{}/_sim/requests", proxy.url))).await
}

/// The JSON answer to a request that must reach its server.
async fn json_of<T: serde::de::DeserializeOwned>(request: reqwest::RequestBuilder) -> T {
    request.send().await.unwrap().json().await.unwrap()
}

fn hetzner_create(name: &str) -> Value {
    json!({
        "name": name, "server_type": "cx22", "image": "ubuntu-24.04", "location": "fsn1",
        "labels": {"provisioner-idempotency-key": name},
        "user_data": "#cloud-config\nruncmd: [echo hi]\n",
    })
}

/// Asks the proxy's Hetzner upstream for a server named `name` ([`hetzner_create`]).
async fn create_hetzner_server(
    client: &reqwest::Client,
    proxy: &ProxyHandle,
    name: &str,
) -> reqwest::Response {
    client
        .post(format!("{}/servers", proxy.url))
        .bearer_auth(HETZNER_TOKEN)
        .json(&hetzner_create(name))
        .send()
        .await
        .unwrap()
}

/// Header names and values, without those that differ between any two answers.
fn comparable_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "content-length"))
        .map(|(name, value)| {
            let value = value.to_str().unwrap_or("<binary>").to_string();
            // A reset time is "now plus the delay": a second apart at most between two
            // answers, compared numerically below.
            if name.as_str().ends_with("reset") {
                (name.to_string(), "<time>".into())
            } else {
                (name.to_string(), value)
            }
        })
        .collect();
    pairs.sort();
    pairs
}

fn reset_of(headers: &HeaderMap) -> Option<i64> {
    headers.get("ratelimit-reset")?.to_str().ok()?.parse().ok()
}

/// Status, headers and body of a request to the simulator and the same request through the
/// proxy are the same, the bearer token reaching the upstream; the upstream's own
/// refusals pass through too.
#[tokio::test]
async fn answers_pass_through_as_the_upstream_gave_them() {
    let (sim, proxy) = sim_behind_shipped_proxy("hetzner", "/hetzner/v1").await;
    let client = reqwest::Client::new();

    let created = create_hetzner_server(&client, &proxy, "through-1").await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["server"]["id"].as_u64().unwrap();

    for (path, token) in [
        (format!("/servers/{id}"), HETZNER_TOKEN),
        ("/servers?per_page=5".to_string(), HETZNER_TOKEN),
        ("/servers/999".to_string(), HETZNER_TOKEN),
        ("/servers".to_string(), "wrong-token"),
    ] {
        let direct = client
            .get(format!("http://{sim}/hetzner/v1{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let through = client
            .get(format!("{}{path}", proxy.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), through.status(), "{path}");
        assert_eq!(
            comparable_headers(direct.headers()),
            comparable_headers(through.headers()),
            "{path}"
        );
        let (direct_reset, through_reset) =
            (reset_of(direct.headers()), reset_of(through.headers()));
        assert!(direct_reset.is_some(), "{path}");
        assert!(
            direct_reset.unwrap().abs_diff(through_reset.unwrap()) <= 1,
            "{path}"
        );
        let (direct, through) = (
            direct.bytes().await.unwrap(),
            through.bytes().await.unwrap(),
        );
        assert_eq!(direct, through, "{path}");
    }
    let wrong: Value = json_of(
        client
            .get(format!("{}/servers", proxy.url))
            .bearer_auth("wrong-token"),
    )
    .await;
    assert_eq!(wrong["error"]["code"], "unauthorized");
}

/// For every shipped plugin's profile and every fault that answers, the proxy's answer is
/// the simulator's native one: same status, same JSON body, same headers (rate-limit resets
/// within a second of each other).
#[tokio::test]
async fn shipped_profiles_render_faults_as_the_simulator_does() {
    let sim = start_sim().await;
    let client = reqwest::Client::new();
    // (vendor, upstream below the simulator, a request path below the upstream)
    let vendors = [
        ("hetzner", "/hetzner/v1", "/servers"),
        ("digitalocean", "/digitalocean", "/v2/droplets"),
        ("openstack", "/openstack", "/compute/v2.1/servers/detail"),
        ("example", "/example/v1", "/servers"),
    ];
    let faults = [
        json!({"kind": "rate_limit", "retry_after_secs": 7}),
        json!({"kind": "server_error", "status": 500}),
        json!({"kind": "server_error", "status": 502}),
        json!({"kind": "server_error", "status": 503}),
        json!({"kind": "unauthorized"}),
    ];
    for (vendor, prefix, path) in vendors {
        let proxy = start_proxy(&format!("http://{sim}{prefix}"), shipped_profile(vendor)).await;
        for fault in &faults {
            let mut native_rule = fault.clone();
            native_rule["vendor"] = json!(vendor);
            arm(&client, &format!("http://{sim}"), native_rule).await;
            let native = client
                .get(format!("http://{sim}{prefix}{path}"))
                .send()
                .await
                .unwrap();
            arm(&client, &proxy.url, fault.clone()).await;
            let proxied = client
                .get(format!("{}{path}", proxy.url))
                .send()
                .await
                .unwrap();

            let what = format!("{vendor} {fault}");
            assert_eq!(native.status(), proxied.status(), "{what}");
            assert_eq!(
                comparable_headers(native.headers()),
                comparable_headers(proxied.headers()),
                "{what}"
            );
            if let (Some(native_reset), Some(proxied_reset)) =
                (reset_of(native.headers()), reset_of(proxied.headers()))
            {
                // Native non-429 answers carry "now + the vendor's window"; the profile's
                // "now"; a 429's reset is "now + retry_after_secs" in both.
                if fault["kind"] == "rate_limit" {
                    assert!(native_reset.abs_diff(proxied_reset) <= 1, "{what}");
                    let now = chrono::Utc::now().timestamp();
                    assert!((6..=8).contains(&(proxied_reset - now)), "{what}");
                }
            }
            let native: Value = native.json().await.unwrap();
            let proxied: Value = proxied.json().await.unwrap();
            assert_eq!(native, proxied, "{what}");
        }
        let record = recorded(&client, &proxy).await;
        assert_eq!(record.len(), faults.len(), "{vendor}");
        assert!(
            record
                .iter()
                .all(|r| !r.forwarded && r.upstream_status.is_none()),
            "{record:?}"
        );
    }
}

/// EC2's XML errors are expressible: the 503 `RequestLimitExceeded` answer with a fresh
/// request id in each.
#[tokio::test]
async fn an_xml_profile_renders_ec2_errors() {
    let sim = start_sim().await;
    let profile = FaultProfile::load(&repo_path("tests/fixtures/faults/ec2.toml")).unwrap();
    assert_eq!(profile.vendor(), "aws");
    // EC2's requests are signed: the proxy goes in front of the root.
    let proxy = start_proxy(&format!("http://{sim}"), profile).await;
    let client = reqwest::Client::new();
    arm(
        &client,
        &proxy.url,
        json!({"vendor": "aws", "kind": "rate_limit", "count": 2}),
    )
    .await;
    let mut request_ids = Vec::new();
    for _ in 0..2 {
        let limited = client
            .post(format!("{}/?Action=RunInstances", proxy.url))
            .send()
            .await
            .unwrap();
        assert_eq!(limited.status(), 503);
        assert_eq!(limited.headers()["content-type"], "text/xml;charset=UTF-8");
        let body = limited.text().await.unwrap();
        assert!(
            body.starts_with(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><Errors><Error>\
                 <Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>\
                 </Error></Errors><RequestID>"
            ),
            "{body}"
        );
        let id = body
            .split("<RequestID>")
            .nth(1)
            .and_then(|rest| rest.split("</RequestID>").next())
            .unwrap();
        assert_eq!(id.len(), 36, "{body}");
        request_ids.push(id.to_string());
    }
    assert_ne!(request_ids[0], request_ids[1]);
    arm(&client, &proxy.url, json!({"kind": "unauthorized"})).await;
    let refused = client.get(&proxy.url).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("<Code>AuthFailure</Code>")
    );
}

/// An upstream answering every request with what it received: `{"host", "path", "query",
/// "body"}`.
async fn start_echo() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        axum::Json(json!({
            "host": parts.headers.get("host").and_then(|v| v.to_str().ok()),
            "path": parts.uri.path(),
            "query": parts.uri.query(),
            "body": String::from_utf8_lossy(&body),
        }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// EC2's profile says `signed_requests = true` (AWS SigV4 signs the Host header, path, query
/// and body, and the vendor checks the signature): the upstream gets the Host the client
/// sent (and signed), and path, query and body byte for byte. Without it the proxy sends the
/// upstream's own Host, as a plain reverse proxy does.
#[tokio::test]
async fn a_signed_requests_profile_forwards_the_clients_host() {
    let upstream = start_echo().await;
    let signed = std::fs::read_to_string(repo_path("tests/fixtures/faults/ec2.toml")).unwrap();
    assert!(
        signed.contains("\nsigned_requests = true\n"),
        "the EC2 profile must say its requests are signed"
    );
    let unsigned = signed.replace("\nsigned_requests = true\n", "\n");
    let query = "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Aorder\
                 &Filter.1.Value.1=a%20b&MaxResults=5";
    let body = "Action=RunInstances&Version=2016-11-15&ClientToken=x%2By&TagSpecification.1.Tag.1.Value=a+b";
    let client = reqwest::Client::new();
    for (text, signs) in [(&signed, true), (&unsigned, false)] {
        let proxy = start_proxy(
            &format!("http://{upstream}"),
            FaultProfile::parse(text).unwrap(),
        )
        .await;
        let client_host = proxy.addr.to_string();
        let expected_host = if signs {
            client_host.clone()
        } else {
            upstream.to_string()
        };
        let listed: Value = json_of(client.get(format!("{}/?{query}", proxy.url))).await;
        assert_eq!(
            listed,
            json!({"host": expected_host, "path": "/", "query": query, "body": ""}),
            "signed_requests: {signs}"
        );
        let created: Value = json_of(
            client
                .post(format!("{}/", proxy.url))
                .header(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )
                .body(body),
        )
        .await;
        assert_eq!(
            created,
            json!({"host": expected_host, "path": "/", "query": null, "body": body}),
            "signed_requests: {signs}"
        );
        assert!(
            recorded(&client, &proxy)
                .await
                .iter()
                .all(|r| r.headers.get("host") == Some(&client_host)),
            "signed_requests: {signs}"
        );
    }
}

/// A signed request's path is part of its signature: a proxy for a signing vendor in front
/// of an upstream with a base path (which the proxy would put before the client's path) is
/// refused at start, and one in front of the vendor's root starts.
#[tokio::test]
async fn a_signed_requests_profile_needs_the_upstreams_root() {
    let upstream = start_echo().await;
    let profile = FaultProfile::load(&repo_path("tests/fixtures/faults/ec2.toml")).unwrap();
    let refused = spawn_proxy(ProxyConfig {
        upstream: format!("http://{upstream}/ec2").parse().unwrap(),
        profile: profile.clone(),
        upstream_ca_pem: None,
    })
    .await
    .unwrap_err();
    assert!(format!("{refused:#}").contains("base path"), "{refused:#}");
    start_proxy(&format!("http://{upstream}/"), profile).await;
}

/// `lost_response`: the create reaches the upstream, which makes the server, and not a
/// byte of its answer reaches the client; the record says so; the next create is answered.
#[tokio::test]
async fn a_lost_response_is_carried_out_upstream_and_never_answered() {
    let (sim, proxy) = sim_behind_shipped_proxy("hetzner", "/hetzner/v1").await;
    let client = reqwest::Client::new();
    arm(
        &client,
        &proxy.url,
        json!({"vendor": "hetzner", "kind": "lost_response", "method": "POST"}),
    )
    .await;

    let body = hetzner_create("lost-1").to_string();
    let request = format!(
        "POST /servers HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {HETZNER_TOKEN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        proxy.addr,
        body.len()
    );
    common::assert_nothing_answered(proxy.addr, &request, Duration::from_secs(30), "the proxy")
        .await;

    let servers: Value = json_of(client.get(format!("http://{sim}/_sim/servers"))).await;
    let servers = servers["servers"].as_array().unwrap();
    assert_eq!(servers.len(), 1, "{servers:?}");
    assert_eq!(servers[0]["idempotency_key"], "lost-1");

    let record = recorded(&client, &proxy).await;
    assert_eq!(record.len(), 1, "{record:?}");
    assert_eq!(record[0].fault.as_deref(), Some("lost_response"));
    assert!(record[0].forwarded);
    assert_eq!(record[0].upstream_status, Some(201));
    assert_eq!(record[0].client_status, None);

    let retried = create_hetzner_server(&client, &proxy, "lost-2").await;
    assert_eq!(retried.status(), 201);
}

/// `slow` forwards after its delay; `server_error` counts down and is gone.
#[tokio::test]
async fn slow_forwards_and_counted_faults_run_out() {
    let (_, proxy) = sim_behind_shipped_proxy("hetzner", "/hetzner/v1").await;
    let client = reqwest::Client::new();
    arm(
        &client,
        &proxy.url,
        json!({"kind": "server_error", "count": 2, "path": "/servers"}),
    )
    .await;
    arm(
        &client,
        &proxy.url,
        json!({"kind": "slow", "delay_ms": 300}),
    )
    .await;
    let url = format!("{}/servers", proxy.url);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let answer = client
            .get(&url)
            .bearer_auth(HETZNER_TOKEN)
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
    }
    assert_eq!(statuses, [500, 500, 200, 200]);
    let record = recorded(&client, &proxy).await;
    let faults: Vec<Option<&str>> = record.iter().map(|r| r.fault.as_deref()).collect();
    assert_eq!(
        faults,
        [
            Some("server_error"),
            Some("server_error"),
            Some("slow"),
            None
        ]
    );
    assert_eq!(record[2].upstream_status, Some(200));
    let armed: Value = json_of(client.get(format!("{}/_sim/faults", proxy.url))).await;
    assert_eq!(armed["faults"], json!([]));
}

/// `small_pages` makes every list request ask for one server a page, whether the plugin
/// sent a page size or not, so two servers span two pages; a server's own `GET` is left
/// alone; disarmed, pages are the plugin's again.
#[tokio::test]
async fn small_pages_rewrites_list_requests_page_size() {
    let (_, proxy) = sim_behind_shipped_proxy("hetzner", "/hetzner/v1").await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for name in ["paged-1", "paged-2"] {
        let created: Value = json_of(
            client
                .post(format!("{}/servers", proxy.url))
                .bearer_auth(HETZNER_TOKEN)
                .json(&hetzner_create(name)),
        )
        .await;
        ids.push(created["server"]["id"].as_u64().unwrap());
    }
    arm(
        &client,
        &proxy.url,
        json!({"vendor": "hetzner", "kind": "small_pages", "page_size": 1}),
    )
    .await;
    let list = |query: &'static str| {
        let client = client.clone();
        let url = format!("{}/servers{query}", proxy.url);
        async move {
            let page: Value = json_of(client.get(url).bearer_auth(HETZNER_TOKEN)).await;
            page
        }
    };
    let first = list("?label_selector=provisioner-idempotency-key&page=1&per_page=50").await;
    assert_eq!(first["servers"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["meta"]["pagination"]["next_page"], 2, "{first}");
    let second = list("?page=2").await;
    assert_eq!(second["servers"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["meta"]["pagination"]["next_page"], Value::Null);
    let one = client
        .get(format!("{}/servers/{}", proxy.url, ids[0]))
        .bearer_auth(HETZNER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);

    let record = recorded(&client, &proxy).await;
    let queries: Vec<(Option<&str>, Option<&str>)> = record[2..]
        .iter()
        .map(|r| (r.query.as_deref(), r.fault.as_deref()))
        .collect();
    assert_eq!(
        queries,
        [
            (
                Some("label_selector=provisioner-idempotency-key&page=1&per_page=1"),
                Some("small_pages")
            ),
            (Some("page=2&per_page=1"), Some("small_pages")),
            (None, None),
        ]
    );

    let cleared = client
        .delete(format!("{}/_sim/faults", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    let all = list("?per_page=50").await;
    assert_eq!(all["servers"].as_array().unwrap().len(), 2, "{all}");
}

/// A profile without `[paging]` refuses `small_pages` (422) instead of silently not paging.
#[tokio::test]
async fn small_pages_needs_the_profiles_paging() {
    let sim = start_sim().await;
    let text = std::fs::read_to_string(repo_path("plugins/example/faults.toml")).unwrap();
    let without_paging = text.replace("[paging]", "[unused]").replace(
        "[unused]\n# GET /servers?tag=...&per_page=N&page=M: small_pages sets per_page.\npage_size_param = \"per_page\"\nlist_paths = [\"/servers\"]\n",
        "",
    );
    let profile = FaultProfile::parse(&without_paging).unwrap();
    assert!(profile.paging().is_none());
    let proxy = start_proxy(&format!("http://{sim}/example/v1"), profile).await;
    let refused = reqwest::Client::new()
        .post(format!("{}/_sim/faults", proxy.url))
        .json(&json!({"kind": "small_pages"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
}

/// A standing `rate_limit_per_second` of 3: of a burst, at most 3 a second reach the
/// upstream, the rest get the profile's 429 with a `Retry-After` of a second at most, and
/// after that delay a request goes through again.
#[tokio::test]
async fn a_standing_rate_limit_refuses_beyond_its_rate() {
    let (_, proxy) = sim_behind_shipped_proxy("example", "/example/v1").await;
    let client = reqwest::Client::new();
    arm(
        &client,
        &proxy.url,
        json!({"vendor": "example", "kind": "rate_limit_per_second", "limit": 3}),
    )
    .await;
    let url = format!("{}/servers", proxy.url);
    let started = std::time::Instant::now();
    let burst = (0..12).map(|_| {
        client
            .get(&url)
            .bearer_auth(vendor_sim::state::DEFAULT_EXAMPLE_TOKEN)
            .send()
    });
    let answers = futures_util::future::join_all(burst).await;
    let elapsed_secs = started.elapsed().as_secs();
    let mut passed = 0;
    let mut limited = Vec::new();
    for answer in answers {
        let answer = answer.unwrap();
        match answer.status().as_u16() {
            200 => passed += 1,
            429 => limited.push(answer),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(passed >= 3, "{passed} passed");
    assert!(
        passed <= 3 * (elapsed_secs + 1),
        "{passed} passed in {elapsed_secs} s"
    );
    let refused = limited.pop().expect("no request was refused");
    assert_eq!(refused.headers()["content-type"], "application/json");
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(retry_after, 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(
        body["error"]["message"],
        "too many requests; retry after 1 s"
    );

    // What reached the upstream never exceeded 3 in any second.
    let record = recorded(&client, &proxy).await;
    let forwarded: Vec<i64> = record
        .iter()
        .filter(|r| r.forwarded)
        .map(|r| r.at_ms)
        .collect();
    assert_eq!(forwarded.len(), passed as usize);
    for (i, at) in forwarded.iter().enumerate() {
        let in_window = forwarded[i..].iter().filter(|t| **t < at + 1000).count();
        // The record's clock is the wall clock, the limiter's a monotonic one: allow one.
        assert!(in_window <= 4, "{forwarded:?}");
    }

    tokio::time::sleep(Duration::from_millis(1000)).await;
    let again = client
        .get(&url)
        .bearer_auth(vendor_sim::state::DEFAULT_EXAMPLE_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
}

/// The record lists every request, oldest first, with method, path, query, headers
/// (Authorization redacted), body and statuses; DELETE empties it.
#[tokio::test]
async fn the_record_shows_what_reached_the_vendor_without_credentials() {
    let (_, proxy) = sim_behind_shipped_proxy("hetzner", "/hetzner/v1").await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/servers?dry=no", proxy.url))
        .bearer_auth(HETZNER_TOKEN)
        .header("user-agent", "plugin-test/1")
        .json(&hetzner_create("recorded-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    arm(&client, &proxy.url, json!({"kind": "rate_limit"})).await;
    let limited = client
        .delete(format!("{}/servers/1", proxy.url))
        .bearer_auth(HETZNER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);

    let record = recorded(&client, &proxy).await;
    assert_eq!(record.len(), 2, "{record:?}");
    let create = &record[0];
    assert_eq!((create.seq, create.method.as_str()), (1, "POST"));
    assert_eq!(create.path, "/servers");
    assert_eq!(create.query.as_deref(), Some("dry=no"));
    assert_eq!(create.headers["authorization"], REDACTED);
    assert_eq!(create.headers["user-agent"], "plugin-test/1");
    assert_eq!(create.headers["content-type"], "application/json");
    let sent: Value = serde_json::from_str(&create.body).unwrap();
    assert_eq!(sent, hetzner_create("recorded-1"));
    assert_eq!(create.body_len, create.body.len());
    assert!(!create.body_truncated);
    assert!(create.forwarded && create.fault.is_none());
    assert_eq!(
        (create.upstream_status, create.client_status),
        (Some(201), Some(201))
    );
    let delete = &record[1];
    assert_eq!(
        (delete.seq, delete.method.as_str(), delete.path.as_str()),
        (2, "DELETE", "/servers/1")
    );
    assert_eq!(delete.fault.as_deref(), Some("rate_limit"));
    assert!(!delete.forwarded);
    assert_eq!(
        (delete.upstream_status, delete.client_status),
        (None, Some(429))
    );
    let as_text = serde_json::to_string(&record).unwrap();
    assert!(!as_text.contains(HETZNER_TOKEN), "{as_text}");
    assert_eq!(proxy.recorded_requests(), record);

    let cleared = client
        .delete(format!("{}/_sim/requests", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert!(recorded(&client, &proxy).await.is_empty());
}

/// A large body is forwarded whole (the upstream parses all of it and refuses user data
/// over its 32 KiB) and recorded up to the cap.
#[tokio::test]
async fn large_bodies_are_forwarded_whole_and_recorded_cut() {
    let (_, proxy) = sim_behind_shipped_proxy("hetzner", "/hetzner/v1").await;
    let client = reqwest::Client::new();
    let mut create = hetzner_create("big-1");
    let user_data = format!("#cloud-config\n# {}\n", "x".repeat(300 * 1024));
    create["user_data"] = json!(user_data);
    let refused = client
        .post(format!("{}/servers", proxy.url))
        .bearer_auth(HETZNER_TOKEN)
        .json(&create)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'user_data': is too long"),
        "{error}"
    );
    let record = recorded(&client, &proxy).await;
    assert!(record[0].body_truncated);
    assert_eq!(record[0].body.len(), vendor_sim::proxy::RECORDED_BODY_MAX);
    assert_eq!(record[0].body_len, create.to_string().len());
    assert_eq!(record[0].upstream_status, Some(400));
}

/// OpenStack's Keystone catalogue hands out absolute URLs: through the proxy they lead
/// back to the proxy, so the plugin's Nova calls meet the faults too; the password in the
/// login body is not recorded.
#[tokio::test]
async fn upstream_urls_in_answers_lead_back_through_the_proxy() {
    let (sim, proxy) = sim_behind_shipped_proxy("openstack", "/openstack").await;
    let client = reqwest::Client::new();
    let login = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "provisioner", "domain": {"name": "Default"},
            "password": "sim-openstack-password"}}},
        "scope": {"project": {"name": "provisioner", "domain": {"name": "Default"}}},
    }});
    let issued = client
        .post(format!("{}/identity/v3/auth/tokens", proxy.url))
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 201);
    let token = issued.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = issued.json().await.unwrap();
    let text = body.to_string();
    assert!(!text.contains(&sim.to_string()), "{text}");
    let compute = body["token"]["catalog"]
        .as_array()
        .unwrap()
        .iter()
        .find(|service| service["type"] == "compute")
        .and_then(|service| service["endpoints"][0]["url"].as_str())
        .unwrap()
        .to_string();
    assert!(compute.starts_with(&proxy.url), "{compute}");

    arm(
        &client,
        &proxy.url,
        json!({"kind": "rate_limit", "retry_after_secs": 2}),
    )
    .await;
    let limited = client
        .get(format!("{compute}/servers/detail"))
        .header("x-auth-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "2");
    let listed = client
        .get(format!("{compute}/servers/detail"))
        .header("x-auth-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    let record = recorded(&client, &proxy).await;
    assert!(
        !record[0].body.contains("sim-openstack-password"),
        "{}",
        record[0].body
    );
    assert!(record[0].body.contains(REDACTED));
    assert_eq!(record[2].headers["x-auth-token"], REDACTED);
}

/// An HTTPS upstream with its own CA is reached when the CA is given, and is a `502` naming
/// the upstream error when it is not.
#[tokio::test]
async fn an_https_upstream_is_trusted_through_the_given_ca() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = vendor_sim::tls::generate(vec!["127.0.0.1".into()]).unwrap();
    let state = Arc::new(SimState::new(SimConfig::default()));
    tokio::spawn(vendor_sim::tls::serve(
        listener,
        tls.acceptor,
        vendor_sim::app(state),
        std::future::pending(),
    ));
    let upstream = format!("https://127.0.0.1:{}/hetzner/v1", addr.port());
    let client = reqwest::Client::new();

    let trusted = spawn_proxy(ProxyConfig {
        upstream: upstream.parse().unwrap(),
        profile: shipped_profile("hetzner"),
        upstream_ca_pem: Some(tls.ca_pem.into_bytes()),
    })
    .await
    .unwrap();
    let answer = client
        .get(format!("{}/servers", trusted.url))
        .bearer_auth(HETZNER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let untrusted = start_proxy(&upstream, shipped_profile("hetzner")).await;
    let refused = client
        .get(format!("{}/servers", untrusted.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 502);
    assert_eq!(refused.headers()["x-vendor-sim-proxy"], "upstream-error");
    let record = recorded(&client, &untrusted).await;
    assert!(record[0].upstream_error.is_some(), "{record:?}");
}

/// Every shipped plugin has a fault profile that loads, for its own vendor, with paging.
#[test]
fn every_shipped_plugin_has_a_fault_profile() {
    for vendor in ["hetzner", "digitalocean", "openstack", "example"] {
        let profile = shipped_profile(vendor);
        assert_eq!(profile.vendor(), vendor);
        assert!(profile.paging().is_some(), "{vendor}");
    }
}

/// A profile with a mistyped placeholder, a status where the armed one applies, or a
/// missing fault is refused with the reason.
#[test]
fn bad_profiles_are_refused_with_the_reason() {
    let good = std::fs::read_to_string(repo_path("plugins/example/faults.toml")).unwrap();
    for (bad, reason) in [
        (
            good.replace("{retry_after_secs}\"", "{retry_after}\""),
            "unknown placeholder {retry_after}",
        ),
        (
            good.replace("[server_error]\n", "[server_error]\nstatus = 500\n"),
            "`status` is the armed fault's here",
        ),
        (
            good.replace("[unauthorized]", "[not_a_fault]"),
            "unknown field `not_a_fault`",
        ),
        (
            good.replace("\n[paging]\n", "\nsigned_requests = true\n\n[paging]\n"),
            "`signed_requests = true` cannot have [paging]",
        ),
    ] {
        assert_ne!(bad, good, "the replacement did not apply");
        let error = format!("{:#}", FaultProfile::parse(&bad).unwrap_err());
        assert!(error.contains(reason), "{error}");
    }
}

/// The binary: `vendor-sim --upstream ... --fault-profile ...` proxies and arms faults.
#[tokio::test]
async fn the_binary_serves_the_proxy() {
    let sim = start_sim().await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vendor-sim"))
        .args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &format!("http://{sim}/hetzner/v1")])
        .arg("--fault-profile")
        .arg(repo_path("plugins/hetzner/faults.toml"))
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..300 {
        if client
            .get(format!("{base}/_sim/faults"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("vendor-sim exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the proxy did not come up");
    arm(
        &client,
        &base,
        json!({"kind": "rate_limit", "retry_after_secs": 3}),
    )
    .await;
    let limited = client.get(format!("{base}/servers")).send().await.unwrap();
    assert_eq!(limited.status(), 429);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let passed = client
        .get(format!("{base}/servers"))
        .bearer_auth(HETZNER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(passed.status(), 200);
    child.kill().await.unwrap();
}
