//! Keystone, Nova and Glance JSON shapes (only the fields the plugin reads or writes).

use std::collections::BTreeMap;

use provider_sdk::adopt::{self, id_order};
use provider_sdk::{IDEMPOTENCY_LABEL, LabelledServer, ProviderError, Server, ServerStatus};
use serde::{Deserialize, Serialize};

/// `POST /v3/auth/tokens` body: password auth scoped to a project.
#[derive(Debug, Serialize)]
pub struct AuthRequest<'a> {
    pub auth: Auth<'a>,
}

#[derive(Debug, Serialize)]
pub struct Auth<'a> {
    pub identity: Identity<'a>,
    pub scope: Scope<'a>,
}

#[derive(Debug, Serialize)]
pub struct Identity<'a> {
    pub methods: [&'a str; 1],
    pub password: Password<'a>,
}

#[derive(Debug, Serialize)]
pub struct Password<'a> {
    pub user: User<'a>,
}

#[derive(Debug, Serialize)]
pub struct User<'a> {
    pub name: &'a str,
    pub domain: Named<'a>,
    pub password: &'a str,
}

#[derive(Debug, Serialize)]
pub struct Scope<'a> {
    pub project: Project<'a>,
}

#[derive(Debug, Serialize)]
pub struct Project<'a> {
    pub name: &'a str,
    pub domain: Named<'a>,
}

#[derive(Debug, Serialize)]
pub struct Named<'a> {
    pub name: &'a str,
}

/// The token body: its catalog and when it expires.
#[derive(Debug, Deserialize)]
pub struct TokenEnvelope {
    pub token: Token,
}

#[derive(Debug, Deserialize)]
pub struct Token {
    #[serde(default)]
    pub catalog: Vec<CatalogEntry>,
    /// When the token stops working, RFC 3339 (`2026-12-02T21:45:00.000000Z`).
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CatalogEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Endpoint {
    pub interface: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub region_id: Option<String>,
    pub url: String,
}

/// `POST /servers` body.
#[derive(Debug, Serialize)]
pub struct CreateServerBody {
    pub server: CreateServer,
}

#[derive(Debug, Serialize)]
pub struct CreateServer {
    pub name: String,
    #[serde(rename = "imageRef")]
    pub image_ref: String,
    #[serde(rename = "flavorRef")]
    pub flavor_ref: String,
    pub metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Network>>,
}

#[derive(Debug, Serialize)]
pub struct Network {
    pub uuid: String,
}

/// `POST /servers` answer: only the id.
#[derive(Debug, Deserialize)]
pub struct CreatedEnvelope {
    pub server: Created,
}

#[derive(Debug, Deserialize)]
pub struct Created {
    pub id: String,
}

/// `{"server": {...}}`.
#[derive(Debug, Deserialize)]
pub struct ServerEnvelope {
    pub server: NovaServer,
}

/// `{"servers": [...], "servers_links": [...]}`.
#[derive(Debug, Deserialize)]
pub struct ServerList {
    pub servers: Vec<NovaServer>,
    #[serde(default)]
    pub servers_links: Vec<Link>,
}

#[derive(Debug, Deserialize)]
pub struct Link {
    pub rel: String,
    pub href: String,
}

/// A server as Nova returns it.
#[derive(Debug, Deserialize)]
pub struct NovaServer {
    pub id: String,
    pub name: String,
    pub status: String,
    /// When it was made: ISO 8601 in UTC (`2026-01-01T00:00:00Z`), sorts as text.
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<Address>>,
    #[serde(default)]
    pub fault: Option<Fault>,
}

#[derive(Debug, Deserialize)]
pub struct Address {
    pub addr: String,
    pub version: u8,
}

#[derive(Debug, Deserialize)]
pub struct Fault {
    pub message: String,
}

/// `{"flavors": [...]}`.
#[derive(Debug, Deserialize)]
pub struct FlavorList {
    pub flavors: Vec<Flavor>,
}

#[derive(Debug, Deserialize)]
pub struct Flavor {
    pub id: String,
    pub name: String,
}

/// `{"images": [...]}`.
#[derive(Debug, Deserialize)]
pub struct ImageList {
    pub images: Vec<Image>,
}

#[derive(Debug, Deserialize)]
pub struct Image {
    pub id: String,
}

/// The server among `servers` whose metadata carries `key`: the oldest, if several do.
pub fn carrying_key(servers: Vec<NovaServer>, key: &str) -> Option<NovaServer> {
    let carrying = servers
        .into_iter()
        .filter(|s| s.metadata.get(IDEMPOTENCY_LABEL).is_some_and(|v| v == key));
    adopt::oldest(carrying, |s| (s.created.clone(), id_order(&s.id)))
}

/// The servers among `servers` whose metadata carries an idempotency key, with it.
pub fn labelled(servers: Vec<NovaServer>) -> Vec<LabelledServer> {
    adopt::labelled(
        servers,
        |server| server.metadata.remove(IDEMPOTENCY_LABEL),
        Server::from,
    )
}

/// An OpenStack error body: `{"<kind>": {"message": ...}}` (Nova) or
/// `{"error": {"message": ...}}` (Keystone), as `kind: message`.
pub fn error_reason(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let (kind, detail) = value.as_object()?.iter().next()?;
    let message = detail.get("message")?.as_str()?;
    Some(format!("{kind}: {message}"))
}

/// A vendor id usable in a URL path (Nova ids are UUIDs).
pub fn path_segment(vendor_id: &str) -> Result<&str, ProviderError> {
    let plain = !vendor_id.is_empty()
        && vendor_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if plain {
        Ok(vendor_id)
    } else {
        Err(ProviderError::InvalidRequest(format!(
            "'{vendor_id}' is not an OpenStack server id"
        )))
    }
}

fn first_address(addresses: &BTreeMap<String, Vec<Address>>, version: u8) -> Option<String> {
    // Prefer networks that sound public; otherwise the first address of that version.
    let public = addresses
        .iter()
        .filter(|(name, _)| {
            let name = name.to_ascii_lowercase();
            name.contains("public") || name.contains("external")
        })
        .flat_map(|(_, list)| list);
    let any = addresses.values().flatten();
    public
        .chain(any)
        .find(|a| a.version == version)
        .map(|a| a.addr.clone())
}

impl From<NovaServer> for Server {
    fn from(server: NovaServer) -> Self {
        Server {
            ipv4: first_address(&server.addresses, 4),
            ipv6: first_address(&server.addresses, 6),
            vendor_id: server.id,
            name: server.name,
            status: match server.status.as_str() {
                "ACTIVE" => ServerStatus::Running,
                "SHUTOFF" | "STOPPED" | "PAUSED" | "SUSPENDED" => ServerStatus::Stopped,
                "DELETED" => ServerStatus::Deleted,
                "SOFT_DELETED" => ServerStatus::Deleting,
                "ERROR" => ServerStatus::Error,
                // BUILD, REBUILD, REBOOT, HARD_REBOOT, RESIZE, MIGRATING...
                _ => ServerStatus::Provisioning,
            },
        }
    }
}
