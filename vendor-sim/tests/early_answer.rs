//! A fault is answered before the simulator needs the request's body; the body is read all
//! the same, as a vendor's front end reads it, and the connection stays open.

mod common;

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads one answer's head from `tcp` (up to its blank line), or why it could not.
async fn read_head(tcp: &mut TcpStream, within: Duration) -> Result<String, String> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) => return Err("the connection was closed".to_string()),
                Ok(n) => {
                    received.extend_from_slice(&chunk[..n]);
                    if received.windows(4).any(|w| w == b"\r\n\r\n") {
                        return Ok(());
                    }
                }
                Err(error) => return Err(error.to_string()),
            }
        }
    })
    .await;
    match read {
        Err(_) => Err(format!(
            "nothing more within {within:?} (read {:?})",
            String::from_utf8_lossy(&received)
        )),
        Ok(Err(why)) => Err(why),
        Ok(Ok(())) => Ok(String::from_utf8_lossy(&received).into_owned()),
    }
}

/// A client that streams its body (as a plugin's outgoing request does) sends the head,
/// then the body a moment later. A simulator that answered the fault at once and closed
/// the connection with the body unread made that body meet a closed socket: the client's
/// write was reset, and a plugin racing it saw "connection reset" instead of the capacity
/// refusal (the kit's `faults.no-capacity`, once in CI). Now the answer waits for the
/// whole request, and the connection serves the next one.
#[tokio::test]
async fn a_fault_is_answered_after_the_whole_request_on_a_connection_that_stays_open() {
    let addr = common::start_sim(vendor_sim::SimConfig::default().boot_delay).await;
    let armed = reqwest::Client::new()
        .post(format!("http://{addr}/_sim/faults"))
        .json(&json!({"vendor": "hetzner", "kind": "no_capacity", "method": "POST"}))
        .send()
        .await
        .unwrap();
    assert_eq!(armed.status(), 201);

    let body = json!({
        "name": "late-body", "server_type": "cx22", "image": "ubuntu-24.04",
        "location": "fsn1", "labels": {"provisioner-idempotency-key": "late-1"},
    })
    .to_string();
    let head = format!(
        "POST /hetzner/v1/servers HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer sim-hetzner-token\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let early = read_head(&mut tcp, Duration::from_millis(300)).await;
    assert!(
        early.is_err(),
        "answered before the request's body was sent: {early:?}"
    );
    tcp.write_all(body.as_bytes()).await.unwrap();
    let answer = read_head(&mut tcp, Duration::from_secs(10)).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 5"),
        "{answer}"
    );
    // The rest of the answer's body, by its length.
    let length: usize = answer
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    let already = answer.len() - answer.find("\r\n\r\n").unwrap() - 4;
    let mut rest = vec![0u8; length - already];
    tcp.read_exact(&mut rest).await.unwrap();

    let next = format!(
        "GET /hetzner/v1/servers HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer sim-hetzner-token\r\n\r\n"
    );
    tcp.write_all(next.as_bytes()).await.unwrap();
    let served = read_head(&mut tcp, Duration::from_secs(10)).await;
    assert!(
        served
            .as_ref()
            .is_ok_and(|head| head.starts_with("HTTP/1.1 200")),
        "the connection did not serve the next request: {served:?}"
    );
}
