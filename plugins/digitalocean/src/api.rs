//! DigitalOcean's JSON shapes (only the fields the plugin reads or writes).

use provider_sdk::{Server, ServerStatus};
use serde::{Deserialize, Serialize};

/// `POST /v2/droplets` body.
#[derive(Debug, Serialize)]
pub struct CreateDroplet<'a> {
    pub name: &'a str,
    pub region: &'a str,
    pub size: &'a str,
    pub image: &'a str,
    /// Ids of keys in the account's key store.
    #[serde(skip_serializing_if = "<[u64]>::is_empty")]
    pub ssh_keys: &'a [u64],
    /// Raw cloud-init user data (DigitalOcean takes it as text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<&'a str>,
    pub tags: Vec<String>,
    pub ipv6: bool,
}

/// `POST /v2/account/keys` body.
#[derive(Debug, Serialize)]
pub struct CreateSshKey<'a> {
    pub name: &'a str,
    pub public_key: &'a str,
}

/// `{"ssh_key": {...}}` (only the id is used).
#[derive(Debug, Deserialize)]
pub struct SshKeyEnvelope {
    pub ssh_key: SshKey,
}

#[derive(Debug, Deserialize)]
pub struct SshKey {
    pub id: u64,
}

/// `{"droplet": {...}}`.
#[derive(Debug, Deserialize)]
pub struct DropletEnvelope {
    pub droplet: Droplet,
}

/// `{"droplets": [...], "links": {"pages": {...}}}`.
#[derive(Debug, Deserialize)]
pub struct DropletList {
    pub droplets: Vec<Droplet>,
    #[serde(default)]
    pub links: Links,
}

/// `links.pages`: `next` (and `last`) while pages follow; `{}` when one page is all.
#[derive(Debug, Default, Deserialize)]
pub struct Links {
    #[serde(default)]
    pub pages: Pages,
}

#[derive(Debug, Default, Deserialize)]
pub struct Pages {
    #[serde(default)]
    pub next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Droplet {
    pub id: u64,
    pub name: String,
    pub status: String,
    /// When it was made: ISO 8601 in UTC (`2020-07-21T18:37:44Z`), sorts as text.
    #[serde(default)]
    pub created_at: String,
    #[serde(default)]
    pub networks: Networks,
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Networks {
    #[serde(default)]
    pub v4: Vec<Network>,
    #[serde(default)]
    pub v6: Vec<Network>,
}

#[derive(Debug, Deserialize)]
pub struct Network {
    pub ip_address: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// `{"id": "...", "message": "..."}`: every DigitalOcean error answer.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    id: String,
    message: String,
}

/// A DigitalOcean error body as `id: message`.
pub fn error_reason(body: &str) -> Option<String> {
    let error: ErrorBody = serde_json::from_str(body).ok()?;
    Some(format!("{}: {}", error.id, error.message))
}

fn public(networks: &[Network]) -> Option<String> {
    networks
        .iter()
        .find(|n| n.kind == "public")
        .map(|n| n.ip_address.clone())
}

impl From<Droplet> for Server {
    fn from(droplet: Droplet) -> Self {
        Server {
            vendor_id: droplet.id.to_string(),
            name: droplet.name,
            status: match droplet.status.as_str() {
                "active" => ServerStatus::Running,
                "off" => ServerStatus::Stopped,
                "archive" => ServerStatus::Deleted,
                _ => ServerStatus::Provisioning,
            },
            ipv4: public(&droplet.networks.v4),
            ipv6: public(&droplet.networks.v6),
        }
    }
}
