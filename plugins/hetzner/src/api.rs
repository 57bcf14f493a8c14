//! Hetzner Cloud's JSON shapes (only the fields the plugin reads or writes).
//!
//! Reference: <https://docs.hetzner.cloud/#servers>.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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

/// Hetzner answers an exhausted project limit with `resource_limit_exceeded`.
pub fn quota_or(error: ProviderError) -> ProviderError {
    match error {
        ProviderError::InvalidRequest(detail) if detail.contains("resource_limit_exceeded") => {
            ProviderError::QuotaExceeded(detail)
        }
        other => other,
    }
}
