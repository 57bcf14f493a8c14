//! SSH public keys: the vendors' key stores (Hetzner `/ssh_keys`, DigitalOcean
//! `/v2/account/keys`) check each key and file it under the MD5 fingerprint of its blob,
//! colon-separated hex (`ssh-keygen -l -E md5`); and, for OpenStack, which has no key store
//! the plugin uses, the keys a server's cloud-init would install from its user data.

use base64::Engine;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use std::collections::BTreeMap;

/// A public key a key store accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedKey {
    /// The key as given, trimmed.
    pub openssh: String,
    /// MD5 of the key blob, colon-separated lower-case hex.
    pub fingerprint: String,
}

/// A key in a vendor account's key store.
#[derive(Debug, Clone)]
pub struct StoredKey {
    /// Numeric id, unique per vendor.
    pub id: u64,
    /// Its name (unique per account).
    pub name: String,
    /// MD5 fingerprint (unique per account).
    pub fingerprint: String,
    /// The OpenSSH public key.
    pub public_key: String,
    /// Labels (Hetzner).
    pub labels: BTreeMap<String, String>,
    /// When it was filed.
    pub created: DateTime<Utc>,
}

/// Checks an OpenSSH public key line (`<type> <base64> [comment]`) as a key store does.
pub fn check(public_key: &str) -> Result<CheckedKey, String> {
    let trimmed = public_key.trim();
    let key = ssh_key::PublicKey::from_openssh(trimmed)
        .map_err(|error| format!("invalid public key: {error}"))?;
    let blob = key
        .to_bytes()
        .map_err(|error| format!("invalid public key: {error}"))?;
    Ok(CheckedKey {
        openssh: trimmed.to_string(),
        fingerprint: md5_fingerprint(&blob),
    })
}

/// MD5 of `blob` as colon-separated lower-case hex.
pub fn md5_fingerprint(blob: &[u8]) -> String {
    Md5::digest(blob)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Nova's `user_data`: base64 of the user data; the text, or Nova's 400 message.
pub fn decode_user_data(encoded: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "User data needs to be valid base 64.".to_string())?;
    String::from_utf8(bytes).map_err(|_| "User data is not UTF-8 text.".to_string())
}

/// The public keys cloud-init would install from `user_data`: every block-style
/// `ssh_authorized_keys` list (top-level or under `users`) of every cloud-config in it,
/// whether the user data is one `#cloud-config` document or a MIME multipart message
/// (nested ones too) with `text/cloud-config` parts. A subset of YAML, enough to tell
/// whether a plugin got the keys to the server.
pub fn cloud_config_keys(user_data: &str) -> Vec<String> {
    let mut keys = Vec::new();
    collect(user_data, None, &mut keys);
    keys
}

/// One document or part: `content_type` from its MIME headers, if it had any.
fn collect(text: &str, content_type: Option<&str>, keys: &mut Vec<String>) {
    if let Some((headers, body)) = mime_split(text).filter(|_| content_type.is_none()) {
        return collect(body, Some(&header(&headers, "content-type")), keys);
    }
    let kind = content_type.unwrap_or_default().to_ascii_lowercase();
    if kind.starts_with("multipart/") {
        let Some(boundary) = parameter(&kind, content_type.unwrap_or_default(), "boundary") else {
            return;
        };
        let delimiter = format!("--{boundary}");
        for part in text.split(&delimiter).skip(1) {
            if part.starts_with("--") {
                break;
            }
            let part = part
                .strip_prefix("\r\n")
                .or(part.strip_prefix('\n'))
                .unwrap_or(part);
            if let Some((headers, body)) = mime_split(part) {
                collect(body, Some(&header(&headers, "content-type")), keys);
            }
        }
        return;
    }
    if kind.starts_with("text/cloud-config") || text.starts_with("#cloud-config") {
        keys.extend(authorized_keys(text));
    }
}

/// A MIME entity's headers and body, when `text` starts with headers.
fn mime_split(text: &str) -> Option<(String, &str)> {
    let lower: String = text
        .chars()
        .take(32)
        .collect::<String>()
        .to_ascii_lowercase();
    if !(lower.starts_with("content-type:") || lower.starts_with("mime-version:")) {
        return None;
    }
    let (headers, body) = text
        .split_once("\r\n\r\n")
        .or_else(|| text.split_once("\n\n"))?;
    Some((headers.to_string(), body))
}

/// A header's value (the first of that name).
fn header(headers: &str, name: &str) -> String {
    headers
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default()
}

/// A `name=value` parameter of a header value (quotes removed), case kept from `original`.
fn parameter(lower: &str, original: &str, name: &str) -> Option<String> {
    let at = lower.find(&format!("{name}="))? + name.len() + 1;
    let value = &original[at..];
    let value = value.split(';').next()?.trim();
    Some(value.trim_matches('"').to_string())
}

/// The items of every block-style `ssh_authorized_keys:` list in a cloud-config.
fn authorized_keys(config: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut lines = config.lines().peekable();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        if line.trim() != "ssh_authorized_keys:" {
            continue;
        }
        while let Some(next) = lines.peek() {
            let trimmed = next.trim_start();
            let next_indent = next.len() - trimmed.len();
            if trimmed.is_empty() {
                lines.next();
                continue;
            }
            let Some(item) = trimmed.strip_prefix("- ").filter(|_| next_indent >= indent) else {
                break;
            };
            keys.push(scalar(item.trim()));
            lines.next();
        }
    }
    keys
}

/// A YAML scalar's value: double-quoted (JSON escapes), single-quoted, or plain.
fn scalar(text: &str) -> String {
    if text.starts_with('"') {
        serde_json::from_str(text).unwrap_or_else(|_| text.trim_matches('"').to_string())
    } else if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        inner.replace("''", "'")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW alice@laptop";

    /// The fingerprint is `ssh-keygen -l -E md5`'s; names are not keys.
    #[test]
    fn keys_are_checked_and_fingerprinted_like_ssh_keygen() {
        let key = check(KEY).unwrap();
        assert_eq!(
            key.fingerprint,
            "ee:2f:9b:a5:e1:38:9d:d3:ec:ac:76:2c:ec:70:6b:d9"
        );
        assert!(check("my-laptop").is_err());
    }

    /// Keys are found in a plain cloud-config and in the parts of a multipart message.
    #[test]
    fn cloud_config_keys_are_found_in_every_form() {
        let plain = format!("#cloud-config\nssh_authorized_keys:\n  - \"{KEY}\"\n  - '{KEY}'\n");
        assert_eq!(cloud_config_keys(&plain), [KEY, KEY]);
        let users = format!(
            "#cloud-config\nusers:\n  - name: a\n    ssh_authorized_keys:\n    - {KEY}\nruncmd: []\n"
        );
        assert_eq!(cloud_config_keys(&users), [KEY]);
        let multipart = format!(
            "Content-Type: multipart/mixed; boundary=\"XX\"\nMIME-Version: 1.0\n\n--XX\n\
             Content-Type: text/x-shellscript\n\n#!/bin/sh\n--XX\nContent-Type: text/cloud-config\n\n\
             {plain}--XX--\n"
        );
        assert_eq!(cloud_config_keys(&multipart), [KEY, KEY]);
        assert!(cloud_config_keys("#!/bin/sh\nssh_authorized_keys:\n - x\n").is_empty());
    }
}
