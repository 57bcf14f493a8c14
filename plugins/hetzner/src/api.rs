//! Hetzner Cloud's JSON shapes (only the fields the plugin reads or writes).
//!
//! Reference: <https://docs.hetzner.cloud/#servers>.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use provider_sdk::http::no_capacity;
use provider_sdk::{ProviderError, Server, ServerStatus};

/// `POST /servers` body.
#[derive(Debug, Serialize)]
pub struct CreateServerRequest<'a> {
    pub name: &'a str,
    pub server_type: &'a str,
    pub image: &'a str,
    pub location: &'a str,
    pub labels: BTreeMap<&'a str, &'a str>,
    /// Ids of keys in the project's key store.
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    pub ssh_keys: &'a [u64],
    /// Raw cloud-init user data (Hetzner takes it as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<&'a str>,
    pub start_after_create: bool,
}

/// `POST /ssh_keys` body.
#[derive(Debug, Serialize)]
pub struct CreateSshKey<'a> {
    pub name: &'a str,
    pub public_key: &'a str,
    pub labels: BTreeMap<&'a str, &'a str>,
}

/// A key in the project's key store (only the id is used).
#[derive(Debug, Deserialize)]
pub struct SshKey {
    pub id: u64,
}

/// `{"ssh_key": {...}}`.
#[derive(Debug, Deserialize)]
pub struct SshKeyEnvelope {
    pub ssh_key: SshKey,
}

/// `{"ssh_keys": [...]}`.
#[derive(Debug, Deserialize)]
pub struct SshKeyList {
    pub ssh_keys: Vec<SshKey>,
}

/// `{"server": {...}}`: the answer of create and get.
#[derive(Debug, Deserialize)]
pub struct ServerEnvelope {
    pub server: HetznerServer,
}

/// `{"servers": [...], "meta": {"pagination": {...}}}`: the answer of list.
#[derive(Debug, Deserialize)]
pub struct ServerList {
    pub servers: Vec<HetznerServer>,
    #[serde(default)]
    pub meta: Option<Meta>,
}

#[derive(Debug, Deserialize)]
pub struct Meta {
    pub pagination: Pagination,
}

/// Hetzner's page numbers; `next_page` is null on the last page.
#[derive(Debug, Deserialize)]
pub struct Pagination {
    pub next_page: Option<u64>,
}

impl ServerList {
    /// The page after this one, if Hetzner has one.
    pub fn next_page(&self) -> Option<u64> {
        self.meta.as_ref()?.pagination.next_page
    }
}

/// A server as Hetzner returns it.
#[derive(Debug, Deserialize)]
pub struct HetznerServer {
    pub id: u64,
    pub name: String,
    pub status: String,
    /// When it was made: ISO 8601 (`2016-01-30T23:50:00+00:00`, always UTC), sorts as text.
    #[serde(default)]
    pub created: String,
    pub public_net: PublicNet,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct PublicNet {
    pub ipv4: Option<Address>,
    pub ipv6: Option<Address>,
}

#[derive(Debug, Deserialize)]
pub struct Address {
    pub ip: String,
}

/// `{"error": {"code", "message"}}`: every Hetzner error answer.
#[derive(Debug, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

/// Hetzner's server statuses in the vendor-neutral WIT terms.
pub fn map_status(status: &str) -> ServerStatus {
    match status {
        "running" => ServerStatus::Running,
        "off" | "stopping" => ServerStatus::Stopped,
        "deleting" => ServerStatus::Deleting,
        // initializing, starting, migrating, rebuilding, unknown: not there yet.
        _ => ServerStatus::Provisioning,
    }
}

impl From<HetznerServer> for Server {
    fn from(server: HetznerServer) -> Self {
        Server {
            vendor_id: server.id.to_string(),
            name: server.name,
            status: map_status(&server.status),
            ipv4: server.public_net.ipv4.map(|a| a.ip),
            ipv6: server.public_net.ipv6.map(|a| a.ip),
        }
    }
}

/// `{"error": {"code", "message"}}` as `code: message`.
pub fn error_reason(body: &str) -> Option<String> {
    let envelope: ErrorEnvelope = serde_json::from_str(body).ok()?;
    Some(format!(
        "{}: {}",
        envelope.error.code, envelope.error.message
    ))
}

/// The `code` of a Hetzner error body (`resource_unavailable`), if it is one.
pub fn error_code(body: &str) -> Option<String> {
    let envelope: ErrorEnvelope = serde_json::from_str(body).ok()?;
    Some(envelope.error.code)
}

/// Codes saying Hetzner cannot place the server where it was asked, now: the server type is
/// sold out in the location (`resource_unavailable`, a 412), the placement failed
/// (`placement_error`, `POST /servers`' own), the location has no room left
/// (`no_space_left_in_location`, a 422).
pub const CAPACITY_CODES: &[&str] = &[
    "resource_unavailable",
    "placement_error",
    "no_space_left_in_location",
];

/// The error of a create Hetzner refused with `code`, `mapped` being the SDK's mapping of
/// its status: a capacity code ([`CAPACITY_CODES`]) is no-capacity, an exhausted project
/// limit (`resource_limit_exceeded`, a 403, which the status alone reads as unauthorized)
/// quota-exceeded; any other stays as mapped. Either keeps the mapped message, which names
/// the code and Hetzner's message.
pub fn create_error(code: Option<&str>, mapped: ProviderError) -> ProviderError {
    match (code, mapped) {
        (_, limited @ ProviderError::RateLimited(_)) => limited,
        (Some(code), mapped) if CAPACITY_CODES.contains(&code) => no_capacity(mapped),
        (
            Some("resource_limit_exceeded"),
            ProviderError::InvalidRequest(detail)
            | ProviderError::Unauthorized(detail)
            | ProviderError::Internal(detail),
        ) => ProviderError::QuotaExceeded(detail),
        (_, mapped) => mapped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: &str) -> String {
        format!(r#"{{"error": {{"code": "{code}", "message": "m", "details": {{}}}}}}"#)
    }

    /// What `ApiClient::error` makes of a Hetzner answer with `status`: its detail names the
    /// code and message.
    fn mapped(status: u16, code: &str) -> ProviderError {
        let detail = format!("POST /servers -> {status}: {code}: m");
        match status {
            401 | 403 => ProviderError::Unauthorized(detail),
            400 | 409 | 422 => ProviderError::InvalidRequest(detail),
            500..=599 => ProviderError::Transient(detail),
            _ => ProviderError::Internal(detail),
        }
    }

    /// Every capacity code is no-capacity at whatever status Hetzner sends it (412, 422, 503
    /// in the simulator), keeping the message; the code is read from the body.
    #[test]
    fn capacity_codes_are_no_capacity() {
        for code in CAPACITY_CODES {
            assert_eq!(error_code(&body(code)).as_deref(), Some(*code));
            for status in [409, 412, 422, 503] {
                let error = create_error(Some(code), mapped(status, code));
                let ProviderError::NoCapacity(message) = &error else {
                    panic!("{code} {status}: {error:?}")
                };
                assert_eq!(message, &format!("POST /servers -> {status}: {code}: m"));
            }
        }
    }

    /// An exhausted project limit is quota-exceeded (Hetzner sends it as a 403); other codes
    /// keep the status mapping; a rate limit stays one; a body that is not Hetzner's has no
    /// code.
    #[test]
    fn other_codes_keep_their_mapping() {
        for status in [403, 422] {
            assert!(matches!(
                create_error(
                    Some("resource_limit_exceeded"),
                    mapped(status, "resource_limit_exceeded")
                ),
                ProviderError::QuotaExceeded(_)
            ));
        }
        assert!(matches!(
            create_error(Some("invalid_input"), mapped(422, "invalid_input")),
            ProviderError::InvalidRequest(_)
        ));
        assert!(matches!(
            create_error(Some("unavailable"), mapped(503, "unavailable")),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            create_error(Some("forbidden"), mapped(403, "forbidden")),
            ProviderError::Unauthorized(_)
        ));
        assert!(matches!(
            create_error(
                Some("resource_unavailable"),
                ProviderError::RateLimited(Some(1000))
            ),
            ProviderError::RateLimited(Some(1000))
        ));
        assert!(matches!(
            create_error(None, mapped(412, "?")),
            ProviderError::Internal(_)
        ));
        assert_eq!(error_code("<html>bad gateway</html>"), None);
        assert_eq!(error_code(r#"{"server": {}}"#), None);
    }
}
