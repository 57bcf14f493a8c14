//! What the plugin SDK (`plugins/sdk`) does on the wire and for every plugin built on it:
//! request bodies go out with a `content-length` (not chunked) and a body-less DELETE
//! reaches the vendor once and succeeds; GET and DELETE are sent again twice after a
//! dropped connection, POST never; and when several servers carry an idempotency key,
//! every plugin adopts the oldest. The plugins run in the host's own
//! runtime, in process, against listeners of this test that see what arrives, or against
//! the simulator.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use provisioner_host::bindings::types::{ProviderError, ServerRequest};
use provisioner_host::runtime::{CallError, Plugin, PluginRuntime};
use provisioner_tests::simulator::seed_server_at;
use provisioner_tests::{
    VENDORS, fixture, load_with_secrets, plugin_component, scratch_dir, simulator_in_process,
    workspace_root,
};
use serde_json::{Value, json};
use vendor_sim::control_client::SimClient;

/// Loads the plugin `manifest` (written to a file in a scratch folder) with `secrets` as its
/// variables.
async fn load(
    runtime: &PluginRuntime,
    name: &str,
    manifest: &str,
    secrets: BTreeMap<String, String>,
) -> anyhow::Result<Plugin> {
    let dir = scratch_dir(&format!("plugin-sdk-{name}"))?;
    load_with_secrets(runtime, &dir, name, manifest, |variable| {
        secrets.get(variable).cloned()
    })
    .await
}

/// The template plugin (Example Cloud) pointed at `origin` (`http://127.0.0.1:<port>`).
async fn template_at(runtime: &PluginRuntime, origin: &str) -> anyhow::Result<Plugin> {
    let manifest = format!(
        "vendor = \"example\"\ncomponent = {:?}\nallowed_hosts = [{origin:?}]\n\
         [config]\nbase-url = \"{origin}/example/v1\"\n\
         [secrets]\ntoken = \"PLUGIN_SECRET_EXAMPLE_TOKEN\"\n",
        plugin_component("example").display().to_string()
    );
    let secrets = BTreeMap::from([("PLUGIN_SECRET_EXAMPLE_TOKEN".into(), "t".into())]);
    load(runtime, "example", &manifest, secrets).await
}

/// An order for Example Cloud carrying every field.
fn request(key: &str) -> ServerRequest {
    ServerRequest {
        idempotency_key: key.into(),
        name: "web-1".into(),
        region: "eu-1".into(),
        size: "small".into(),
        image: "ubuntu-24.04".into(),
        ssh_keys: vec![],
        user_data: Some("#cloud-config\nruncmd: [\"echo hello\"]\n".into()),
        labels: vec![("env".into(), "test".into())],
    }
}

/// An Example Cloud server as the API returns it.
fn example_server(id: &str) -> Value {
    json!({
        "id": id, "name": "web-1", "region": "eu-1", "plan": "small", "image": "ubuntu-24.04",
        "status": "creating", "ipv4": null, "ipv6": null, "tags": {},
        "created_at": "2025-01-31T12:00:00Z"
    })
}

/// The answer Example Cloud gives to `method path` (enough of it for one create, get,
/// list and delete).
fn example_answer(method: &str, path: &str) -> (u16, Option<Value>) {
    match method {
        "GET" if path.starts_with("/example/v1/servers?") => {
            (200, Some(json!({"servers": [], "next_page": null})))
        }
        "GET" => (200, Some(json!({"server": example_server("srv-1")}))),
        "POST" => (201, Some(json!({"server": example_server("srv-1")}))),
        "DELETE" => (204, None),
        _ => (
            405,
            Some(json!({"error": {"code": "method_not_allowed", "message": "no"}})),
        ),
    }
}

/// One request as a listener saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// What a [`recording_listener`] saw.
type Recorded = Arc<Mutex<Vec<Seen>>>;

/// An HTTP listener of this test on 127.0.0.1 that records every request and answers it as
/// `answer` says for its method and URI: its origin (`http://127.0.0.1:<port>`) and what it
/// saw.
async fn recording_listener(
    answer: fn(&Method, &Uri) -> axum::response::Response,
) -> anyhow::Result<(String, Recorded)> {
    let seen: Recorded = Arc::default();
    let recorded = seen.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let recorded = recorded.clone();
            async move {
                let response = answer(&method, &uri);
                let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
                if let Ok(mut seen) = recorded.lock() {
                    seen.push(Seen {
                        method: method.to_string(),
                        path,
                        headers,
                        body,
                    });
                }
                response
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let origin = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((origin, seen))
}

/// A copy of what a [`recording_listener`] saw so far.
fn seen_so_far(seen: &Recorded) -> anyhow::Result<Vec<Seen>> {
    Ok(seen
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone())
}

/// Request bodies carry `content-length` and are not chunked: some vendors' APIs and
/// proxies refuse chunked requests. A body-less DELETE says `content-length: 0`.
#[tokio::test]
async fn request_bodies_are_sent_with_their_length() -> anyhow::Result<()> {
    let (origin, seen) = recording_listener(|method, uri| {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let (status, answer) = example_answer(method.as_str(), path);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        match answer {
            Some(json) => (status, axum::Json(json)).into_response(),
            None => status.into_response(),
        }
    })
    .await?;

    let runtime = PluginRuntime::new()?;
    let plugin = template_at(&runtime, &origin).await?;
    let made = plugin
        .create_server(uuid::Uuid::new_v4(), &request("order-length"))
        .await
        .map_err(|e| anyhow::anyhow!("create-server: {e}"))?;
    plugin
        .delete_server(None, &made.vendor_id)
        .await
        .map_err(|e| anyhow::anyhow!("delete-server: {e}"))?;

    let seen = seen_so_far(&seen)?;
    let create = seen
        .iter()
        .find(|s| s.method == "POST")
        .ok_or_else(|| anyhow::anyhow!("no POST arrived: {seen:#?}"))?;
    assert!(!create.body.is_empty(), "{create:#?}");
    assert_eq!(
        create.headers.get("content-length").map(|v| v.as_bytes()),
        Some(create.body.len().to_string().as_bytes()),
        "the create's body ({} bytes) came without its length: {:#?}",
        create.body.len(),
        create.headers
    );
    let delete = seen
        .iter()
        .find(|s| s.method == "DELETE")
        .ok_or_else(|| anyhow::anyhow!("no DELETE arrived: {seen:#?}"))?;
    assert_eq!(
        delete.headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"0"[..]),
        "{delete:#?}"
    );
    for sent in &seen {
        assert!(
            sent.headers.get("transfer-encoding").is_none(),
            "{} {} was sent chunked: {:#?}",
            sent.method,
            sent.path,
            sent.headers
        );
    }
    Ok(())
}

/// How many servers each plugin deletes in
/// [`every_delete_reaches_the_vendor_once_and_succeeds`]: the failure it guards against was a
/// race lost on some deletes, not all.
const DELETES_PER_PLUGIN: usize = 50;

/// A body-less DELETE says `content-length: 0`. The host's HTTP client knows from that
/// header the body is over and drops the plugin's body stream at once; the plugin, which
/// writes and finishes its empty body after handing the request over, then failed with
/// "connection reset" although the vendor had the DELETE (and answered it), the SDK sent
/// it again and the vendor said 404. Every delete must arrive once, on the wire with
/// `content-length: 0` and not chunked, and succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delete_reaches_the_vendor_once_and_succeeds() -> anyhow::Result<()> {
    let (origin, seen) = recording_listener(|_, uri| {
        // Hetzner answers a delete with its action, Example Cloud with nothing.
        if uri.path().starts_with("/example/") {
            StatusCode::NO_CONTENT.into_response()
        } else {
            axum::Json(json!({"action": {"id": 1, "status": "running"}})).into_response()
        }
    })
    .await?;

    let runtime = PluginRuntime::new()?;
    let hetzner = fixture("hetzner");
    let secrets = BTreeMap::from([(hetzner.secret_variable(), hetzner.secret.1.to_string())]);
    let plugins = [
        template_at(&runtime, &origin).await?,
        load(
            &runtime,
            "hetzner",
            &hetzner.manifest_with_catalogue(&origin),
            secrets,
        )
        .await?,
    ];
    let mut failed = Vec::new();
    for plugin in &plugins {
        for number in 0..DELETES_PER_PLUGIN {
            let vendor_id = format!("{}", 1000 + number);
            if let Err(error) = plugin.delete_server(None, &vendor_id).await {
                failed.push(format!("{} {vendor_id}: {error}", plugin.vendor()));
            }
        }
    }

    let seen = seen_so_far(&seen)?;
    let mut arrived: BTreeMap<&str, usize> = BTreeMap::new();
    for request in &seen {
        assert_eq!(request.method, "DELETE", "{request:#?}");
        *arrived.entry(request.path.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = arrived.iter().filter(|(_, count)| **count > 1).collect();
    assert!(
        failed.is_empty() && twice.is_empty(),
        "of {} deletes, {} failed and {} arrived more than once: failed {failed:#?}, \
         arrived more than once {twice:#?}",
        plugins.len() * DELETES_PER_PLUGIN,
        failed.len(),
        twice.len()
    );
    assert_eq!(
        arrived.len(),
        plugins.len() * DELETES_PER_PLUGIN,
        "{arrived:#?}"
    );
    for request in &seen {
        assert_eq!(
            request.headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"0"[..]),
            "{request:#?}"
        );
        assert!(
            request.headers.get("transfer-encoding").is_none(),
            "{request:#?}"
        );
        assert!(request.body.is_empty(), "{request:#?}");
    }
    Ok(())
}

/// A listener that speaks just enough HTTP/1.1 for Example Cloud and drops a connection
/// (closes it after reading the request, before any answer) whenever `drop` says so for a
/// request's method and how many of that method came before. Counts what arrived.
struct Dropper {
    origin: String,
    arrived: Arc<Mutex<Vec<String>>>,
}

impl Dropper {
    fn start(drop: impl Fn(&str, usize) -> bool + Send + 'static) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let origin = format!("http://{}", listener.local_addr()?);
        let arrived: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = arrived.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let Some((method, path)) = read_head(&stream) else {
                    continue;
                };
                let before = match log.lock() {
                    Ok(mut log) => {
                        let before = log.iter().filter(|m| **m == method).count();
                        log.push(method.clone());
                        before
                    }
                    Err(_) => return,
                };
                if drop(&method, before) {
                    drop_connection(stream);
                } else {
                    answer(stream, &method, &path);
                }
            }
        });
        Ok(Self { origin, arrived })
    }

    /// How many requests of `method` arrived.
    fn count(&self, method: &str) -> usize {
        self.arrived
            .lock()
            .map(|log| log.iter().filter(|m| *m == method).count())
            .unwrap_or(0)
    }
}

/// Reads one request's head (and its body, if it has a length): its method and path.
fn read_head(mut stream: &TcpStream) -> Option<(String, String)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).ok()?;
        if read == 0 {
            break;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let mut words = head.split_whitespace();
    Some((words.next()?.to_string(), words.next()?.to_string()))
}

/// Closes the connection at once (a reset), as a dying server or proxy does.
fn drop_connection(stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn answer(mut stream: TcpStream, method: &str, path: &str) {
    let (status, body) = example_answer(method, path);
    let body = body.map(|json| json.to_string()).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

/// Checks `error` is the plugin's `transient` provider error.
fn assert_transient(error: &CallError) {
    assert!(
        matches!(error, CallError::Provider(ProviderError::Transient(_))),
        "{error}"
    );
}

/// GET and DELETE are sent again twice after a dropped connection (three tries in all,
/// as docs/plugin-authoring.md says); POST is never sent again (the look-up before the next
/// create covers a lost answer).
#[tokio::test]
async fn idempotent_requests_are_sent_again_twice_after_a_dropped_connection() -> anyhow::Result<()>
{
    let runtime = PluginRuntime::new()?;

    // Two drops: the third try answers.
    let dropper = Dropper::start(|method, before| method == "GET" && before < 2)?;
    let plugin = template_at(&runtime, &dropper.origin).await?;
    let server = plugin
        .get_server(None, "srv-1")
        .await
        .map_err(|e| anyhow::anyhow!("get-server after two drops: {e}"))?;
    assert_eq!(server.vendor_id, "srv-1");
    assert_eq!(dropper.count("GET"), 3);

    // Every try dropped: three tries, then `transient`.
    let dropper = Dropper::start(|method, _| method == "DELETE")?;
    let plugin = template_at(&runtime, &dropper.origin).await?;
    let error = plugin
        .delete_server(None, "srv-1")
        .await
        .expect_err("every DELETE was dropped");
    assert_transient(&error);
    assert_eq!(dropper.count("DELETE"), 3, "{error}");

    // A create is sent once: its answer may be lost after the server was made.
    let dropper = Dropper::start(|method, _| method == "POST")?;
    let plugin = template_at(&runtime, &dropper.origin).await?;
    let error = plugin
        .create_server(uuid::Uuid::new_v4(), &request("order-dropped"))
        .await
        .expect_err("the POST was dropped");
    assert_transient(&error);
    assert_eq!(dropper.count("POST"), 1, "{error}");
    Ok(())
}

/// Makes a server at the simulator the way another tool would, carrying `key`.
async fn seed(sim_url: &str, vendor: &str, name: &str, key: &str) -> anyhow::Result<()> {
    seed_server_at(sim_url, vendor, name, Some(key)).await
}

/// The vendor id of the server `plugin`'s `find-server` finds for `key`.
async fn found_by_key(plugin: &Plugin, key: &str) -> anyhow::Result<String> {
    let vendor = plugin.vendor();
    Ok(plugin
        .find_server(key)
        .await
        .map_err(|e| anyhow::anyhow!("{vendor} find-server: {e}"))?
        .ok_or_else(|| anyhow::anyhow!("{vendor} found no server for the key"))?
        .vendor_id)
}

/// Every bundled plugin and the template, loaded against the simulator at `sim_url`.
async fn every_plugin(runtime: &PluginRuntime, sim_url: &str) -> anyhow::Result<Vec<Plugin>> {
    let mut plugins = Vec::new();
    for vendor in VENDORS {
        let secrets = BTreeMap::from([(vendor.secret_variable(), vendor.secret.1.to_string())]);
        let manifest = vendor.manifest_with_catalogue(sim_url);
        plugins.push(load(runtime, vendor.vendor, &manifest, secrets).await?);
    }
    let shipped = std::fs::read_to_string(workspace_root().join("plugins/example/sim.toml"))?;
    let manifest = shipped.replace("http://127.0.0.1:18190", sim_url).replace(
        "../target/wasm32-wasip2/release/example_plugin.wasm",
        &plugin_component("example").display().to_string(),
    );
    let secrets = BTreeMap::from([(
        "PLUGIN_SECRET_EXAMPLE_TOKEN".to_string(),
        vendor_sim::state::DEFAULT_EXAMPLE_TOKEN.to_string(),
    )]);
    plugins.push(load(runtime, "example", &manifest, secrets).await?);
    Ok(plugins)
}

/// When a key has two servers (a duplicate from an earlier fault, or another tool), every
/// plugin's `find-server` and `create-server` adopt the older one, whatever order the
/// vendor lists them in (Nova lists newest first), so every retry adopts the same server.
#[tokio::test]
async fn every_plugin_adopts_the_oldest_server_carrying_a_key() -> anyhow::Result<()> {
    let sim_url = simulator_in_process(Duration::from_millis(200)).await?;
    let runtime = PluginRuntime::new()?;
    let plugins = every_plugin(&runtime, &sim_url).await?;
    let key = format!("order-{}", uuid::Uuid::new_v4().simple());
    // Both servers get the order's name: OpenStack's look-up before a create asks Nova for
    // the servers of that name.
    let name = request(&key).name;
    let mut older = BTreeMap::new();
    for plugin in &plugins {
        let vendor = plugin.vendor();
        seed(&sim_url, vendor, &name, &key).await?;
        older.insert(vendor.to_string(), found_by_key(plugin, &key).await?);
    }
    // The vendors' creation times have whole seconds: the second server is a second younger.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for plugin in &plugins {
        seed(&sim_url, plugin.vendor(), &name, &key).await?;
    }
    for plugin in &plugins {
        let vendor = plugin.vendor();
        let found = found_by_key(plugin, &key).await?;
        assert_eq!(
            Some(&found),
            older.get(vendor),
            "{vendor} find-server adopted the younger server"
        );
        let order = match vendor {
            "example" => request(&key),
            _ => {
                let f = fixture(vendor);
                ServerRequest {
                    region: f.region.into(),
                    size: f.size.into(),
                    image: f.image.into(),
                    user_data: None,
                    labels: vec![],
                    ..request(&key)
                }
            }
        };
        let adopted = plugin
            .create_server(uuid::Uuid::new_v4(), &order)
            .await
            .map_err(|e| anyhow::anyhow!("{vendor} create-server: {e}"))?;
        assert_eq!(
            Some(&adopted.vendor_id),
            older.get(vendor),
            "{vendor} create-server did not adopt the older server"
        );
    }
    let stats = json!(SimClient::new(&sim_url).stats().await?);
    for plugin in &plugins {
        assert_eq!(
            stats["vendors"][plugin.vendor()]["duplicates"][&key],
            2,
            "{}: a create made a third server: {stats:#}",
            plugin.vendor()
        );
    }
    Ok(())
}
