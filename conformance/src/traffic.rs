//! What reached the vendor, read from the fault proxy's record of the requests it
//! forwarded: the servers a key's create requests made, the path of a create request, and
//! whether a request's user data, SSH public key and labels travelled to the vendor (raw,
//! inside JSON or form fields, or base64-encoded as some vendors want them).
//!
//! A create request is a `POST` or `PUT` whose body carries the idempotency key and that
//! the vendor answered with a 2xx; a lost answer counts (the vendor made the server), a
//! fault the proxy answered does not (the vendor never saw it). Several such requests to
//! one path made several servers; a request to another path carrying the key (labelling
//! the server afterwards, say) is not another server.

use std::collections::BTreeMap;

use base64::Engine as _;
use sha2::Digest as _;
use vendor_sim::proxy::RecordedRequest;

/// Whether `text` holds `token` not followed by a character a key or name goes on with
/// (letters, digits, `-`, `_`, `.`): the key `conformance-ab-1` is not found inside
/// `conformance-ab-10`, nor inside the name `conformance-ab-1-5f3a` another key's server got.
pub fn holds_token(text: &str, token: &str) -> bool {
    !token.is_empty()
        && text.match_indices(token).any(|(at, _)| {
            !text[at + token.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Whether the vendor answered `request` with a 2xx.
fn succeeded(request: &RecordedRequest) -> bool {
    request
        .upstream_status
        .is_some_and(|status| (200..300).contains(&status))
}

/// Whether `request` is a successful create request for `key`.
fn creates(request: &RecordedRequest, key: &str) -> bool {
    matches!(request.method.as_str(), "POST" | "PUT")
        && succeeded(request)
        && holds_token(&request.body, key)
}

/// How many servers carrying `key` the vendor made, by its create requests. A `PUT`
/// creates or replaces the one resource at its URL (ARM's create-or-update by name), so
/// `PUT`s to one path are one server however often they were sent.
pub fn servers_made(requests: &[RecordedRequest], key: &str) -> usize {
    let mut per_path: BTreeMap<&str, usize> = BTreeMap::new();
    for request in requests.iter().filter(|r| creates(r, key)) {
        let count = per_path.entry(request.path.as_str()).or_default();
        *count = if request.method == "PUT" {
            1
        } else {
            *count + 1
        };
    }
    per_path.into_values().max().unwrap_or(0)
}

/// The method and path of the first successful create request for any of `keys`. A
/// `PUT`'s path names the resource it made (`.../virtualMachines/<name>`), which another
/// key's create does not share: its collection is given instead (`.../virtualMachines/`),
/// a part of every create request's path.
pub fn create_request(requests: &[RecordedRequest], keys: &[String]) -> Option<(String, String)> {
    requests
        .iter()
        .find(|request| keys.iter().any(|key| creates(request, key)))
        .map(|request| {
            let path = match (request.method.as_str(), request.path.rsplit_once('/')) {
                ("PUT", Some((collection, _))) if !collection.is_empty() => {
                    format!("{collection}/")
                }
                _ => request.path.clone(),
            };
            (request.method.clone(), path)
        })
}

/// Percent-decodes `text` (`+` stays).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` base64-decoded (standard or URL-safe alphabet, padded or not), when it is base64
/// of UTF-8 text.
fn base64_text(text: &str) -> Option<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let text = text.trim();
    if text.len() < 8
        || !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=-_\r\n".contains(&b))
    {
        return None;
    }
    let joined: String = text.split_whitespace().collect();
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(&joined).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Every string of a JSON value, keys included.
fn json_strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(text) => out.push(text.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|item| json_strings(item, out)),
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                out.push(key.clone());
                json_strings(field, out);
            }
        }
        _ => {}
    }
}

/// The texts `request` carried to the vendor: its path and query, its body, each string
/// of a JSON body, each value of a form body, and each of those that is base64 of text,
/// decoded.
pub fn texts(request: &RecordedRequest) -> Vec<String> {
    let mut found = vec![percent_decoded(&request.path), request.body.clone()];
    if let Some(query) = &request.query {
        found.push(percent_decoded(query));
        found.extend(url::form_urlencoded::parse(query.as_bytes()).map(|(_, v)| v.into_owned()));
    }
    match serde_json::from_str::<serde_json::Value>(&request.body) {
        Ok(json) => json_strings(&json, &mut found),
        Err(_) if request.body.contains('=') => found.extend(
            url::form_urlencoded::parse(request.body.as_bytes()).map(|(_, v)| v.into_owned()),
        ),
        Err(_) => {}
    }
    let decoded: Vec<String> = found.iter().filter_map(|t| base64_text(t)).collect();
    found.extend(decoded);
    found
}

/// An OpenSSH public key's forms a request may carry it in: the key blob (base64), its
/// MD5 fingerprint (`aa:bb:..`, how key stores are searched) and its SHA-256 one
/// (`SHA256:...`).
#[derive(Debug, Clone)]
pub struct KeyForms {
    /// The base64 blob, the key's second field.
    pub blob: String,
    /// MD5 of the blob, colon-separated lower-case hex.
    pub md5: String,
    /// `SHA256:` and the unpadded base64 of the blob's SHA-256.
    pub sha256: String,
}

impl KeyForms {
    /// The forms of an OpenSSH public key line.
    pub fn of(openssh: &str) -> anyhow::Result<Self> {
        let blob = openssh
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("'{openssh}' is not an OpenSSH public key"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .map_err(|e| anyhow::anyhow!("the key blob is not base64: {e}"))?;
        Ok(Self {
            blob: blob.to_string(),
            md5: vendor_sim::keys::md5_fingerprint(&bytes),
            sha256: format!(
                "SHA256:{}",
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .encode(sha2::Sha256::digest(&bytes))
            ),
        })
    }

    /// Whether `text` carries the key in one of its forms (fingerprints in any case).
    fn in_text(&self, text: &str) -> bool {
        text.contains(&self.blob)
            || text.to_ascii_lowercase().contains(&self.md5)
            || text.contains(&self.sha256)
    }
}

/// What a create was given that the requests it sent do not show reaching the vendor, one
/// sentence each: the user data (raw or base64), the SSH key (its blob, or its fingerprint
/// as a key store look-up), the label (its key and value in one request).
pub fn missing_inputs(
    requests: &[RecordedRequest],
    user_data: &str,
    ssh_key: &KeyForms,
    label: (&str, &str),
) -> Vec<String> {
    let forwarded: Vec<Vec<String>> = requests.iter().filter(|r| r.forwarded).map(texts).collect();
    let anywhere = |found: &dyn Fn(&str) -> bool| forwarded.iter().flatten().any(|t| found(t));
    let mut missing = Vec::new();
    if !anywhere(&|text| text.contains(user_data)) {
        missing.push("the user data (no request carried it, raw or base64-encoded)".to_string());
    }
    if !anywhere(&|text| ssh_key.in_text(text)) {
        missing.push(format!(
            "the SSH public key (no request carried its blob, nor its fingerprint {} to look \
             it up in a key store)",
            ssh_key.md5
        ));
    }
    let labelled = forwarded.iter().any(|texts| {
        texts.iter().any(|t| t.contains(label.0)) && texts.iter().any(|t| t.contains(label.1))
    });
    if !labelled {
        missing.push(format!(
            "the label {}={} (no request carried both)",
            label.0, label.1
        ));
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, body: &str, status: Option<u16>) -> RecordedRequest {
        RecordedRequest {
            seq: 1,
            at_ms: 0,
            method: method.into(),
            path: path.into(),
            query: None,
            headers: BTreeMap::new(),
            body: body.into(),
            body_len: body.len(),
            body_truncated: false,
            fault: None,
            forwarded: status.is_some(),
            upstream_status: status,
            upstream_error: None,
            client_status: status,
        }
    }

    /// A key is found whole: `-1` is not inside `-10`.
    #[test]
    fn keys_are_whole_tokens() {
        assert!(holds_token(
            r#"{"k":"conformance-ab-1"}"#,
            "conformance-ab-1"
        ));
        assert!(!holds_token(
            r#"{"k":"conformance-ab-10"}"#,
            "conformance-ab-1"
        ));
        assert!(holds_token("conformance-ab-1", "conformance-ab-1"));
        assert!(!holds_token(
            r#"{"name":"conformance-ab-1-5f3a"}"#,
            "conformance-ab-1"
        ));
        assert!(holds_token("key:conformance-ab-1&x=1", "conformance-ab-1"));
    }

    /// Two successful creates to one path are two servers; a labelling request to another
    /// path, a refused create and a fault's answer are none.
    #[test]
    fn counts_the_servers_a_key_made() {
        let key = "conformance-ab-1";
        let body = format!(r#"{{"labels":{{"provisioner-idempotency-key":"{key}"}}}}"#);
        let requests = [
            request("POST", "/v1/servers", &body, Some(201)),
            request("POST", "/v1/servers/7/actions/label", &body, Some(201)),
            request("POST", "/v1/servers", &body, Some(429)),
            request("POST", "/v1/servers", &body, None),
            request("GET", "/v1/servers", &body, Some(200)),
        ];
        assert_eq!(servers_made(&requests, key), 1);
        let again = [requests[0].clone(), requests[0].clone()];
        assert_eq!(servers_made(&again, key), 2);
        assert_eq!(
            create_request(&requests, &[key.to_string()]),
            Some(("POST".into(), "/v1/servers".into()))
        );
    }

    /// Creates by `PUT` (ARM's, idempotent by name): a resent `PUT` is no second server, and
    /// the create's path is the collection, shared by every key's create.
    #[test]
    fn puts_create_one_resource_per_path() {
        let key = "conformance-ab-1";
        let body = format!(r#"{{"tags":{{"provisioner-idempotency-key":"{key}"}}}}"#);
        let vm = "/azure/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/web-1a2b";
        let requests = [
            request("PUT", vm, &body, Some(201)),
            request("PUT", vm, &body, Some(200)),
        ];
        assert_eq!(servers_made(&requests, key), 1);
        assert_eq!(
            create_request(&requests, &[key.to_string()]),
            Some((
                "PUT".into(),
                "/azure/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/".into()
            ))
        );
    }

    /// User data raw in JSON (escaped there), base64 in JSON, or in a form field; the key
    /// as a blob inside base64 user data, or as a fingerprint look-up.
    #[test]
    fn finds_inputs_in_their_usual_forms() {
        let user_data = "#cloud-config\nwrite_files:\n  - content: \"run x\"\n";
        let key = KeyForms::of(crate::kit::TEST_SSH_KEY).expect("the test key");
        let label = ("provisioner-conformance", "abcd1234");
        let raw = serde_json::json!({
            "user_data": user_data,
            "labels": {label.0: label.1},
            "ssh_keys": [crate::kit::TEST_SSH_KEY],
        });
        let requests = [request("POST", "/servers", &raw.to_string(), Some(201))];
        assert!(missing_inputs(&requests, user_data, &key, label).is_empty());

        let merged = format!(
            "{user_data}ssh_authorized_keys:\n  - {}\n",
            crate::kit::TEST_SSH_KEY
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(merged);
        let nova = serde_json::json!({"server": {"user_data": encoded,
            "metadata": {label.0: label.1}}});
        let requests = [request("POST", "/servers", &nova.to_string(), Some(202))];
        assert!(missing_inputs(&requests, user_data, &key, label).is_empty());

        let mut lookup = request("GET", "/ssh_keys", "", Some(200));
        lookup.query = Some(format!("fingerprint={}", key.md5.replace(':', "%3A")));
        let form = format!(
            "Action=RunInstances&UserData={}&TagSpecification.1.Tag.1.Key={}&TagSpecification.1.Tag.1.Value={}",
            base64::engine::general_purpose::STANDARD.encode(user_data),
            label.0,
            label.1
        );
        let requests = [lookup, request("POST", "/", &form, Some(200))];
        assert!(missing_inputs(&requests, user_data, &key, label).is_empty());
    }

    /// A create without user data or key says both are missing; labels alone do not count
    /// for them.
    #[test]
    fn says_what_is_missing() {
        let key = KeyForms::of(crate::kit::TEST_SSH_KEY).expect("the test key");
        let body = r#"{"name":"a","labels":{"provisioner-conformance":"abcd1234"}}"#;
        let requests = [request("POST", "/servers", body, Some(201))];
        let missing = missing_inputs(
            &requests,
            "#cloud-config\n",
            &key,
            ("provisioner-conformance", "abcd1234"),
        );
        assert_eq!(missing.len(), 2, "{missing:?}");
        assert!(missing[0].starts_with("the user data"));
        assert!(missing[1].starts_with("the SSH public key"));
    }
}
