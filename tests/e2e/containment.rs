//! What comes out of a plugin is contained at the boundary: error messages, log lines, its
//! `info` and its servers' fields are capped and sanitised before the host formats, logs,
//! stores or publishes them. A plugin answering megabytes fails only its own order, with a
//! small fault, and never ends the host's broker session; it cannot flood the host's log or
//! forge a line in it; it cannot make `GET /v1/vendors` or a `422` large.
//!
//! The hostile fixture (`tests/fixtures/hostile-plugin`) misbehaves as its manifest says.
//! Some tests load it in process with the host's runtime; those whose point is the order
//! path, the broker or the host's log drop it into a full [`Stack`].

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use provisioner_contract::topology::declare_exclusive_queue;
use provisioner_host::bindings::types::ServerRequest;
use provisioner_host::plugin_output::{
    LOG_BURST, LOG_LINES_PER_SECOND, MAX_DISPLAY_NAME_CHARS, MAX_LOG_LINE_BYTES,
    MAX_PLUGIN_TEXT_BYTES, MAX_UPDATE_BYTES, MAX_VERSION_CHARS,
};
use provisioner_host::runtime::{CallError, Plugin, PluginRuntime};
use provisioner_host::wit_convert::fault;
use provisioner_tests::{
    Stack, StackOptions, hostile_manifest, require_rabbitmq, server_request, write_hostile_manifest,
};
use reqwest::Method;

/// The error the issue saw: 34.6 MB.
const HUGE_ERROR_BYTES: usize = 34_600_000;

/// A fault's message: the plugin's capped text and the host's few words around it.
const FAULT_MESSAGE_BOUND: usize = MAX_PLUGIN_TEXT_BYTES + 256;

fn request() -> ServerRequest {
    server_request("0195f7f2-0000-7000-8000-000000000002", "victim")
}

/// Loads the hostile plugin in process.
async fn load_hostile(
    runtime: &PluginRuntime,
    behaviour: &str,
    config: &str,
    limits: &str,
) -> anyhow::Result<Plugin> {
    let what = format!("containment-{behaviour}");
    let path = write_hostile_manifest(&what, behaviour, "", config, limits)?;
    runtime.load(&path).await
}

/// Drops the hostile plugin into the stack's plugins folder and waits until order-api knows
/// its vendor; the vendor id.
async fn drop_in(
    stack: &Stack,
    behaviour: &str,
    config: &str,
    limits: &str,
) -> anyhow::Result<String> {
    let vendor = format!("hostile-{behaviour}");
    std::fs::write(
        stack.plugins_dir().join(format!("{vendor}.toml")),
        hostile_manifest(behaviour, "", config, limits),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stack.vendors().await?.contains(&vendor) {
        assert!(
            Instant::now() < deadline,
            "{vendor} was never announced\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(vendor)
}

/// A fresh stack with the hostile plugin dropped in ([`drop_in`]): the stack and the
/// hostile vendor's id.
async fn stack_with_hostile(
    behaviour: &str,
    config: &str,
    limits: &str,
) -> anyhow::Result<(Stack, String)> {
    let stack = Stack::start(StackOptions::default()).await?;
    let vendor = drop_in(&stack, behaviour, config, limits).await?;
    Ok((stack, vendor))
}

/// `value` as a TOML basic string (Rust's `{:?}` writes `\u{1b}`, which TOML refuses).
fn toml_string(value: &str) -> String {
    let mut quoted = String::from("\"");
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// An order body for a hostile vendor.
fn hostile_order(vendor: &str, name: &str) -> String {
    serde_json::json!({"vendor": vendor, "region": "r", "size": "s", "image": "i", "name": name})
        .to_string()
}

/// Orders a server named `name` at the hostile `vendor` (accepted: `202`); its id.
async fn order_hostile(stack: &Stack, vendor: &str, name: &str) -> anyhow::Result<String> {
    let (status, _, _, order) = stack.post_order(&hostile_order(vendor, name)).await?;
    assert_eq!(status, 202, "{order}");
    Ok(order["id"].as_str().unwrap_or_default().to_string())
}

/// Loads the hostile `odd-answer` plugin answering `value` for the server field `key`.
async fn odd_answer(runtime: &PluginRuntime, key: &str, value: &str) -> anyhow::Result<Plugin> {
    let config = format!("{key} = {}", toml_string(value));
    load_hostile(runtime, "odd-answer", &config, "").await
}

/// A queue of the test's own bound to the stack's results exchange with `keys`: a copy of
/// every message the host publishes with them.
struct Capture {
    connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

impl Capture {
    async fn start(stack: &Stack, keys: &[String]) -> anyhow::Result<Self> {
        let connection = require_rabbitmq().await;
        let channel = connection.create_channel().await?;
        let queue = format!(
            "{}capture-{}",
            stack.topology.prefix(),
            uuid::Uuid::new_v4().simple()
        );
        declare_exclusive_queue(&channel, &queue, FieldTable::default()).await?;
        for key in keys {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    stack.topology.results_exchange().as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(Self {
            connection,
            channel,
            queue,
        })
    }

    /// The sizes of the messages captured, waiting until at least `at_least` arrived.
    async fn sizes(&self, at_least: usize) -> anyhow::Result<Vec<usize>> {
        let mut consumer = self
            .channel
            .basic_consume(
                self.queue.as_str().into(),
                "capture".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut sizes = Vec::new();
        loop {
            let wait = if sizes.len() < at_least {
                Duration::from_secs(60)
            } else {
                Duration::from_millis(500)
            };
            match tokio::time::timeout(wait, consumer.next()).await {
                Ok(Some(delivery)) => sizes.push(delivery?.data.len()),
                Ok(None) | Err(_) => return Ok(sizes),
            }
        }
    }

    /// The sizes of the messages captured (waiting for one at least), ending the capture.
    async fn finish(self) -> anyhow::Result<Vec<usize>> {
        let sizes = self.sizes(1).await;
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        let _ = self.connection.close(200, "captured".into()).await;
        sizes
    }
}

/// A 34.6 MB error becomes a fault of a few KiB: the plugin's text is cut at the boundary,
/// its control characters escaped visibly, and no `Debug` formatting grows it.
#[tokio::test]
async fn a_huge_error_becomes_a_small_fault() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = load_hostile(
        &runtime,
        "huge-error",
        &format!("error-bytes = \"{HUGE_ERROR_BYTES}\""),
        "memory_mib = 160",
    )
    .await?;
    let error = plugin
        .create_server(uuid::Uuid::nil(), &request())
        .await
        .expect_err("the plugin fails");
    let fault = fault(&error);
    eprintln!(
        "a {HUGE_ERROR_BYTES}-byte error made a fault of {} bytes",
        fault.message.len()
    );
    assert_eq!(fault.code, "plugin_error");
    assert!(
        fault.message.len() <= FAULT_MESSAGE_BOUND,
        "a fault of {} bytes from a {HUGE_ERROR_BYTES}-byte error",
        fault.message.len()
    );
    assert!(
        !fault.message.contains(['\n', '\u{1}']),
        "control characters reach the fault"
    );
    assert!(
        fault.message.starts_with("internal(e\\u{1}\\u{1}\\n"),
        "the text is escaped visibly, not dropped: {}",
        &fault.message[..fault.message.len().min(80)]
    );
    assert!(
        !fault.message.contains("Internal(\""),
        "the fault is Debug text"
    );
    // Even Debug of the error stays small now: what it holds is the capped text.
    assert!(format!("{error:?}").len() <= 8 * FAULT_MESSAGE_BOUND);
    Ok(())
}

/// Server fields the host stores and uses again are checked, never cut: a vendor id with a
/// newline, an oversized one, an address that is not one are `plugin_bad_answer`; an IPv6
/// network (`addr/len`) is an address.
#[tokio::test]
async fn odd_server_fields_are_bad_answers() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let long_id = "7".repeat(300);
    let refused = [
        ("answer-vendor-id", "42\n2030-01-01 ERROR FORGED"),
        ("answer-vendor-id", long_id.as_str()),
        ("answer-vendor-id", ""),
        ("answer-ipv4", "not-an-address"),
        ("answer-ipv4", "2001:db8::1"),
        ("answer-ipv6", "2001:db8::/129"),
        ("answer-ipv6", "192.0.2.1\u{1b}[2K"),
        ("answer-name", "web\r\n1"),
    ];
    for (key, value) in refused {
        let plugin = odd_answer(&runtime, key, value).await?;
        match plugin.create_server(uuid::Uuid::nil(), &request()).await {
            Err(error) => {
                let fault = fault(&error);
                assert_eq!(
                    fault.code, "plugin_bad_answer",
                    "{key} = {value:?}: {error}"
                );
                assert!(!fault.message.contains(['\n', '\r', '\u{1b}']), "{fault:?}");
                assert!(fault.message.len() <= FAULT_MESSAGE_BOUND, "{fault:?}");
                assert!(matches!(error, CallError::BadAnswer { .. }), "{error}");
            }
            Ok(server) => panic!("{key} = {value:?} was taken: {server:?}"),
        }
    }
    let accepted = [
        ("answer-ipv6", "2001:db8::/64"),
        ("answer-ipv6", "2001:db8::1"),
        ("answer-ipv4", "192.0.2.7"),
        ("answer-vendor-id", "i-0abc/eu-west-1:42"),
    ];
    for (key, value) in accepted {
        let plugin = odd_answer(&runtime, key, value).await?;
        let server = plugin.create_server(uuid::Uuid::nil(), &request()).await?;
        provisioner_host::wit_convert::server_info(server)
            .unwrap_or_else(|fault| panic!("{key} = {value:?} refused: {fault:?}"));
    }
    Ok(())
}

/// A 2 MB display name is cut to [`MAX_DISPLAY_NAME_CHARS`] characters at load.
#[tokio::test]
async fn a_huge_display_name_is_cut_at_load() -> anyhow::Result<()> {
    let runtime = PluginRuntime::new()?;
    let plugin = load_hostile(&runtime, "none", "display-name-bytes = \"2000000\"", "").await?;
    let info = plugin.info_cached();
    assert!(
        info.display_name.chars().count() <= MAX_DISPLAY_NAME_CHARS,
        "a display name of {} bytes",
        info.display_name.len()
    );
    assert!(info.version.chars().count() <= MAX_VERSION_CHARS);
    assert!(
        info.display_name.starts_with("NNNN"),
        "{}",
        info.display_name
    );
    Ok(())
}

/// The issue's case end to end: a plugin failing with a 34.6 MB error fails only its own
/// order, with a small fault; every message the host publishes about it stays under
/// [`MAX_UPDATE_BYTES`]; the host's broker session does not end (no reconnect in its log);
/// and a Hetzner order in the same stack runs meanwhile.
#[tokio::test]
async fn a_huge_error_fails_only_its_order_and_the_session_survives() -> anyhow::Result<()> {
    let (stack, vendor) = stack_with_hostile(
        "huge-error",
        &format!("error-bytes = \"{HUGE_ERROR_BYTES}\""),
        "memory_mib = 160",
    )
    .await?;
    let capture = Capture::start(&stack, &[format!("*.{vendor}")]).await?;

    let hostile_id = order_hostile(&stack, &vendor, "huge-1").await?;
    let hetzner_id = stack.order_server("beside-the-hostile").await?;

    let failed = stack
        .wait_for_status(&hostile_id, "failed", Duration::from_secs(120))
        .await?;
    assert_eq!(
        failed["fault"]["code"],
        "plugin_error",
        "{}",
        excerpt(&failed)
    );
    let fault_message = failed["fault"]["message"].as_str().unwrap_or_default();
    assert!(
        fault_message.len() <= FAULT_MESSAGE_BOUND,
        "a fault message of {} bytes",
        fault_message.len()
    );
    let order_bytes = serde_json::to_vec(&failed)?.len();
    assert!(
        order_bytes <= MAX_UPDATE_BYTES,
        "the order is {order_bytes} bytes"
    );

    let active = stack
        .wait_for_status(&hetzner_id, "active", Duration::from_secs(60))
        .await?;
    assert_eq!(active["status"], "active");

    let sizes = capture.finish().await?;
    eprintln!(
        "fault message {} bytes, order {order_bytes} bytes, published {sizes:?} bytes",
        fault_message.len()
    );
    assert!(
        !sizes.is_empty(),
        "no result was published\n{}",
        stack.logs()
    );
    assert!(
        sizes.iter().all(|size| *size <= MAX_UPDATE_BYTES),
        "published {sizes:?} bytes"
    );
    let host_log = stack.host_log();
    assert!(
        !host_log.contains("broker session ended"),
        "the host's session ended\n{}",
        stack.logs()
    );
    let longest = host_log.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest <= 2 * FAULT_MESSAGE_BOUND,
        "a host log line of {longest} bytes"
    );

    stack.cleanup_serving(&[&vendor]).await;
    Ok(())
}

/// A plugin refusing a server with a 4 MB reason makes a small `422`, and the validation
/// reply the host publishes is small too.
#[tokio::test]
async fn a_huge_validate_error_is_a_small_422() -> anyhow::Result<()> {
    let (stack, vendor) = stack_with_hostile(
        "huge-validate-error",
        "error-bytes = \"4000000\"",
        "memory_mib = 64",
    )
    .await?;
    let capture = Capture::start(&stack, &["reply.#".to_string()]).await?;
    let response = stack
        .api()
        .post_order_body(hostile_order(&vendor, "refused-1"), None)
        .await?;
    assert_eq!(response.status().as_u16(), 422);
    let body = response.bytes().await?;
    let problem: serde_json::Value = serde_json::from_slice(&body)?;
    assert_eq!(problem["type"], "/problems/refused-by-vendor", "{problem}");
    assert!(
        body.len() <= 2 * FAULT_MESSAGE_BOUND,
        "a 422 of {} bytes",
        body.len()
    );

    let sizes = capture.finish().await?;
    eprintln!(
        "422 of {} bytes, validation replies {sizes:?} bytes",
        body.len()
    );
    assert!(
        !sizes.is_empty(),
        "no validation reply seen\n{}",
        stack.logs()
    );
    assert!(
        sizes.iter().all(|size| *size <= 2 * FAULT_MESSAGE_BOUND),
        "validation replies of {sizes:?} bytes"
    );
    stack.cleanup_serving(&[&vendor]).await;
    Ok(())
}

/// A plugin whose `info` names itself in 2 MB cannot make `GET /v1/vendors` large.
#[tokio::test]
async fn a_huge_display_name_keeps_the_vendor_list_small() -> anyhow::Result<()> {
    let (stack, vendor) =
        stack_with_hostile("none", "display-name-bytes = \"2000000\"", "").await?;
    let body = stack
        .api()
        .send_raw(Method::GET, "/v1/vendors", None)
        .await?
        .bytes()
        .await?;
    eprintln!("GET /v1/vendors answered {} bytes", body.len());
    let vendors: serde_json::Value = serde_json::from_slice(&body)?;
    assert!(vendors.to_string().contains(&vendor));
    // Four vendors with two hosts' worth of fields each fit in a few KiB.
    assert!(
        body.len() <= 8 * 1024,
        "GET /v1/vendors answered {} bytes",
        body.len()
    );
    stack.cleanup_serving(&[&vendor]).await;
    Ok(())
}

/// A plugin logging 5,000 lines of 8 KiB in one call adds a bounded amount to the host's
/// log (each line cut to [`MAX_LOG_LINE_BYTES`], at most [`LOG_BURST`] lines and then
/// [`LOG_LINES_PER_SECOND`] a second, the rest counted in one summary warning); a newline, a carriage
/// return, an ANSI escape or a Unicode line separator in a message is escaped visibly, so no
/// forged line starts a line of the host's log.
#[tokio::test]
async fn a_plugin_can_neither_flood_nor_forge_the_host_log() -> anyhow::Result<()> {
    let (stack, flood) = stack_with_hostile(
        "log-flood",
        "log-lines = \"5000\"\nlog-line-bytes = \"8192\"",
        "",
    )
    .await?;
    let forge = drop_in(&stack, "log-forge", "", "").await?;
    let before = stack.host_log().len();
    let started = Instant::now();
    for vendor in [&flood, &forge] {
        let id = order_hostile(&stack, vendor, "logger-1").await?;
        stack
            .wait_for_status(&id, "active", Duration::from_secs(60))
            .await?;
    }
    let seconds = started.elapsed().as_secs_f64().ceil() as usize + 1;
    let host_log = stack.host_log();
    let added = &host_log[before.min(host_log.len())..];

    let flood_lines = added
        .lines()
        .filter(|line| line.contains(&format!("plugin={flood}")) && line.contains("LLLL"))
        .count();
    let allowed = LOG_BURST as usize + LOG_LINES_PER_SECOND as usize * seconds;
    assert!(
        flood_lines <= allowed,
        "{flood_lines} flood lines in {seconds} s (at most {allowed})"
    );
    assert!(flood_lines > 0, "no line of the plugin was logged at all");
    let longest = added.lines().map(str::len).max().unwrap_or(0);
    eprintln!(
        "{flood_lines} of 5000 flood lines logged in {seconds} s; the host log grew by {} \
         bytes, its longest line {longest} bytes",
        added.len()
    );
    assert!(
        longest <= MAX_LOG_LINE_BYTES + 512,
        "a host log line of {longest} bytes"
    );
    assert!(
        added.len() <= allowed * (MAX_LOG_LINE_BYTES + 512) + 256 * 1024,
        "the host log grew by {} bytes",
        added.len()
    );
    // Every dropped line is counted in the summary warning that follows the flood.
    let summarized = |log: &str| -> usize {
        log.lines()
            .filter(|line| {
                line.contains("plugin log lines dropped")
                    && line.contains(&format!("plugin={flood}"))
            })
            .filter_map(|line| {
                line.split("dropped=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while summarized(&stack.host_log()) < 5000 - flood_lines {
        assert!(
            Instant::now() < deadline,
            "the drops were not summarized ({} of {})\n{}",
            summarized(&stack.host_log()),
            5000 - flood_lines,
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(summarized(&stack.host_log()), 5000 - flood_lines);

    for line in added.lines() {
        assert!(
            !line.starts_with("2030-01-01"),
            "a forged line stands on its own: {line}"
        );
    }
    let forged: Vec<&str> = added
        .lines()
        .filter(|line| line.contains("FORGED"))
        .collect();
    assert_eq!(forged.len(), 4, "{forged:#?}");
    for line in &forged {
        assert!(line.contains(&format!("plugin={forge}")), "{line}");
        assert!(!line.contains(['\r', '\u{1b}', '\u{2028}']), "{line:?}");
    }
    assert!(
        added.contains("innocent\\n2030-01-01"),
        "the newline is not shown escaped\n{forged:#?}"
    );

    stack.cleanup_serving(&[&flood, &forge]).await;
    Ok(())
}

/// The start of a long JSON value, for failure messages.
fn excerpt(value: &serde_json::Value) -> String {
    let text = value.to_string();
    text.chars().take(2_000).collect()
}
