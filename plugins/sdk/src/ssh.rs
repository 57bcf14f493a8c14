//! The order's `ssh-keys`: OpenSSH public keys, checked and fingerprinted.
//!
//! Each entry of `server-request.ssh-keys` is one public key in OpenSSH's one-line format,
//! `<type> <base64 key blob> [comment]` (what `~/.ssh/id_ed25519.pub` holds). A plugin checks
//! them in `validate` with [`parse_all`] (an entry that is not a public key, a private key
//! included, is refused with `invalid-request` naming the entry) and gets each key to the
//! server its vendor's way: registered in the vendor's key store, looked up first by
//! [`PublicKey::md5_fingerprint`] (Hetzner and DigitalOcean name keys by it), or written into
//! cloud-init user data ([`crate::cloud_init`]) where the vendor has no key store.

use std::fmt::Display;

use md5::{Digest, Md5};

use crate::{LogLevel, ProviderError, log};

/// One checked OpenSSH public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key as the order gave it, trimmed: `<type> <base64> [comment]`.
    pub openssh: String,
    /// Its algorithm, e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// MD5 of the key blob as colon-separated lower-case hex, e.g. `1f:0a:...`: the
    /// fingerprint Hetzner and DigitalOcean file keys under.
    pub md5_fingerprint: String,
}

impl PublicKey {
    /// Parses one OpenSSH public key line; the error says what is wrong, without echoing
    /// more than a short prefix of the value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.contains('\n') || trimmed.contains('\r') {
            return Err("must be one line".into());
        }
        if trimmed.contains("PRIVATE KEY") {
            return Err("is a private key: give the public key (the .pub file)".into());
        }
        let key = ssh_key::PublicKey::from_openssh(trimmed).map_err(|error| {
            format!("is not an OpenSSH public key (<type> <base64> [comment]): {error}")
        })?;
        let blob = key
            .to_bytes()
            .map_err(|error| format!("cannot be encoded again: {error}"))?;
        let digest = Md5::digest(&blob);
        let md5_fingerprint = digest
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        Ok(Self {
            openssh: trimmed.to_string(),
            algorithm: key.algorithm().as_str().to_string(),
            md5_fingerprint,
        })
    }

    /// The fingerprint without colons (32 hex digits), usable in names.
    pub fn md5_hex(&self) -> String {
        self.md5_fingerprint.replace(':', "")
    }

    /// The name the key is filed under in a vendor's key store:
    /// `provisioner-<fingerprint hex>`.
    pub fn store_name(&self) -> String {
        format!("provisioner-{}", self.md5_hex())
    }

    /// Logs that the key was filed in the vendor's key store as `id`, and gives `id` back.
    pub fn filed_as<Id: Display>(&self, id: Id) -> Id {
        log(
            LogLevel::Info,
            &format!("filed SSH key {} as {id}", self.md5_fingerprint),
        );
        id
    }
}

/// Checks every entry of `ssh-keys`; `invalid-request` naming the first bad one.
pub fn parse_all(keys: &[String]) -> Result<Vec<PublicKey>, ProviderError> {
    keys.iter()
        .enumerate()
        .map(|(index, text)| {
            PublicKey::parse(text).map_err(|why| {
                ProviderError::InvalidRequest(format!(
                    "ssh_keys[{index}] ('{}') {why}",
                    prefix(text.trim(), 24)
                ))
            })
        })
        .collect()
}

/// The first `max` characters of `text`, with `...` when cut.
pub fn prefix(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM1MQrOGZkyTYSLN/FGDhozOMWieTtIaVBkR5a83m5IW alice@laptop";

    /// A public key parses, with the MD5 fingerprint `ssh-keygen -l -E md5` shows.
    #[test]
    fn parses_and_fingerprints_a_key() {
        let key = PublicKey::parse(ED25519).unwrap();
        assert_eq!(key.algorithm, "ssh-ed25519");
        assert_eq!(
            key.md5_fingerprint,
            "ee:2f:9b:a5:e1:38:9d:d3:ec:ac:76:2c:ec:70:6b:d9"
        );
        assert_eq!(key.md5_hex().len(), 32);
        // The comment does not change the fingerprint.
        let bare = ED25519.rsplit_once(' ').unwrap().0;
        assert_eq!(
            PublicKey::parse(bare).unwrap().md5_fingerprint,
            key.md5_fingerprint
        );
    }

    /// Names, private keys and broken blobs are refused, naming the entry.
    #[test]
    fn refuses_what_is_not_a_public_key() {
        for bad in [
            "my-laptop-key",
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "ssh-ed25519 AAAA",
        ] {
            let error = parse_all(&[ED25519.to_string(), bad.to_string()]).unwrap_err();
            let ProviderError::InvalidRequest(message) = error else {
                panic!("{error:?}")
            };
            assert!(message.starts_with("ssh_keys[1]"), "{message}");
        }
    }
}
