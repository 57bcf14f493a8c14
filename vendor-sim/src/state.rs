//! The simulated clouds' in-memory state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How long a new server takes to reach `running`.
    pub boot_delay: Duration,
    /// The bearer token the Hetzner API accepts.
    pub hetzner_token: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            boot_delay: Duration::from_secs(2),
            hetzner_token: "sim-hetzner-token".into(),
        }
    }
}

/// Everything the simulator holds.
#[derive(Debug)]
pub struct SimState {
    /// Its behaviour.
    pub config: SimConfig,
    /// The Hetzner project.
    pub hetzner: Mutex<VendorCloud>,
}

impl SimState {
    /// An empty simulator.
    pub fn new(config: SimConfig) -> Self {
        Self {
            config,
            hetzner: Mutex::new(VendorCloud::default()),
        }
    }
}

/// A server as the simulator keeps it, vendor-neutral; each vendor module renders it in its
/// own JSON.
#[derive(Debug, Clone)]
pub struct SimServer {
    /// Numeric id, unique per vendor.
    pub id: u64,
    /// Name, unique per vendor (as Hetzner enforces).
    pub name: String,
    /// Region / location code.
    pub region: String,
    /// Server type / size.
    pub size: String,
    /// Image name.
    pub image: String,
    /// Labels or tags.
    pub labels: BTreeMap<String, String>,
    /// When it was made; it runs once the boot delay has passed.
    pub created: DateTime<Utc>,
    /// Public IPv4 address.
    pub ipv4: String,
    /// Public IPv6 network.
    pub ipv6: String,
}

impl SimServer {
    /// Whether the server has finished booting at `now`.
    pub fn is_booted(&self, boot_delay: Duration, now: DateTime<Utc>) -> bool {
        let elapsed = now.signed_duration_since(self.created);
        elapsed.to_std().map(|e| e >= boot_delay).unwrap_or(false)
    }
}

/// One vendor account's servers and the counters behind `/_sim/stats`.
#[derive(Debug, Default)]
pub struct VendorCloud {
    /// Live servers by id.
    pub servers: BTreeMap<u64, SimServer>,
    /// The id the next server gets.
    next_id: u64,
    /// Servers ever made.
    pub created_total: u64,
    /// Servers ever made per idempotency key.
    pub created_per_key: HashMap<String, u64>,
}

impl VendorCloud {
    /// Records a new server and gives it an id and addresses.
    pub fn insert(
        &mut self,
        name: String,
        region: String,
        size: String,
        image: String,
        labels: BTreeMap<String, String>,
    ) -> SimServer {
        self.next_id += 1;
        let id = self.next_id;
        self.created_total += 1;
        if let Some(key) = labels.get(crate::IDEMPOTENCY_LABEL) {
            *self.created_per_key.entry(key.clone()).or_default() += 1;
        }
        let server = SimServer {
            id,
            name,
            region,
            size,
            image,
            labels,
            created: Utc::now(),
            // TEST-NET-3 and the IPv6 documentation prefix: never routable.
            ipv4: format!("203.0.{}.{}", 113 + (id / 250) % 10, 1 + id % 250),
            ipv6: format!("2001:db8:{:x}::/64", id),
        };
        self.servers.insert(id, server.clone());
        server
    }

    /// Idempotency keys with more than one server ever made.
    pub fn duplicates(&self) -> BTreeMap<String, u64> {
        self.created_per_key
            .iter()
            .filter(|(_, count)| **count > 1)
            .map(|(key, count)| (key.clone(), *count))
            .collect()
    }
}
