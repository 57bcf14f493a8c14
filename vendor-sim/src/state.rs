//! The simulated clouds' in-memory state, and the faults injected into them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The vendors the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vendor {
    /// Hetzner Cloud, under `/hetzner/v1`.
    Hetzner,
    /// DigitalOcean, under `/digitalocean/v2`.
    DigitalOcean,
    /// An OpenStack cloud (Keystone v3, Nova, Glance), under `/openstack`.
    OpenStack,
    /// Example Cloud, a small made-up REST API for first plugins, under `/example/v1`.
    Example,
    /// Google Compute Engine with Google's OAuth token endpoint, under `/gcp`.
    Gcp,
    /// Azure Resource Manager with the Microsoft identity platform's token endpoint, under
    /// `/azure`.
    Azure,
}

impl Vendor {
    /// Every simulated vendor.
    pub const ALL: [Vendor; 6] = [
        Vendor::Hetzner,
        Vendor::DigitalOcean,
        Vendor::OpenStack,
        Vendor::Example,
        Vendor::Gcp,
        Vendor::Azure,
    ];

    /// The vendor id (as orders and `/_sim` use it).
    pub fn name(self) -> &'static str {
        match self {
            Vendor::Hetzner => "hetzner",
            Vendor::DigitalOcean => "digitalocean",
            Vendor::OpenStack => "openstack",
            Vendor::Example => "example",
            Vendor::Gcp => "gcp",
            Vendor::Azure => "azure",
        }
    }

    /// Parses a vendor id.
    pub fn parse(name: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| v.name() == name)
    }

    /// The method and a part of the path of this vendor's create request (below its prefix),
    /// so a fault rule can hit the create and not, say, OpenStack's Keystone login (also a
    /// `POST`).
    pub fn create_request(self) -> (&'static str, &'static str) {
        match self {
            Vendor::DigitalOcean => ("POST", "/droplets"),
            // Compute Engine's insert (`POST .../zones/{zone}/instances`); not its token
            // exchange (`POST /gcp/token`).
            Vendor::Gcp => ("POST", "/instances"),
            // ARM creates with `PUT .../virtualMachines/{name}`, idempotent by name; not the
            // public IP's or NIC's `PUT`.
            Vendor::Azure => ("PUT", "/virtualMachines/"),
            Vendor::Hetzner | Vendor::OpenStack | Vendor::Example => ("POST", "/servers"),
        }
    }
}

/// The bearer token the Hetzner API accepts unless told otherwise (`--hetzner-token`,
/// `SIM_HETZNER_TOKEN`).
pub const DEFAULT_HETZNER_TOKEN: &str = "sim-hetzner-token";
/// The bearer token the DigitalOcean API accepts unless told otherwise
/// (`--digitalocean-token`, `SIM_DIGITALOCEAN_TOKEN`).
pub const DEFAULT_DIGITALOCEAN_TOKEN: &str = "sim-digitalocean-token";
/// The bearer token the Example Cloud API accepts unless told otherwise (`--example-token`,
/// `SIM_EXAMPLE_TOKEN`).
pub const DEFAULT_EXAMPLE_TOKEN: &str = "sim-example-token";
/// The OpenStack user Keystone accepts unless told otherwise (`--openstack-user`,
/// `SIM_OPENSTACK_USER`).
pub const DEFAULT_OPENSTACK_USER: &str = "provisioner";
/// The OpenStack user's password unless told otherwise (`--openstack-password`,
/// `SIM_OPENSTACK_PASSWORD`).
pub const DEFAULT_OPENSTACK_PASSWORD: &str = "sim-openstack-password";

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// How long a new server takes to reach its running state.
    pub boot_delay: Duration,
    /// The bearer token the Hetzner API accepts.
    pub hetzner_token: String,
    /// The bearer token the DigitalOcean API accepts.
    pub digitalocean_token: String,
    /// The bearer token the Example Cloud API accepts.
    pub example_token: String,
    /// The OpenStack user and password Keystone accepts (project `provisioner`, domain
    /// `Default`).
    pub openstack_user: String,
    /// See `openstack_user`.
    pub openstack_password: String,
    /// How long a Keystone token stays valid.
    pub openstack_token_ttl: Duration,
    /// Faults injected from the start (`--fault`).
    pub faults: Vec<FaultRule>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            boot_delay: Duration::from_secs(2),
            hetzner_token: DEFAULT_HETZNER_TOKEN.into(),
            digitalocean_token: DEFAULT_DIGITALOCEAN_TOKEN.into(),
            example_token: DEFAULT_EXAMPLE_TOKEN.into(),
            openstack_user: DEFAULT_OPENSTACK_USER.into(),
            openstack_password: DEFAULT_OPENSTACK_PASSWORD.into(),
            openstack_token_ttl: Duration::from_secs(3600),
            faults: Vec::new(),
        }
    }
}

/// A failure the simulator answers instead of the real answer (or, for `Slow` and
/// `LostResponse`, around it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// 429 with the vendor's rate-limit headers, resetting after `retry_after_secs`.
    RateLimit {
        /// Seconds until the limit resets.
        #[serde(default = "one")]
        retry_after_secs: u64,
    },
    /// A 5xx answer in the vendor's error shape.
    ServerError {
        /// 500, 502, 503...
        #[serde(default = "five_hundred")]
        status: u16,
    },
    /// 401 in the vendor's error shape, whatever the token.
    Unauthorized,
    /// The real answer, after `delay_ms`.
    Slow {
        /// The extra delay.
        delay_ms: u64,
    },
    /// The request is carried out as usual (a create really makes the server), then the
    /// connection is dropped without a byte of the answer: the client sees the connection
    /// closed before any status line, as when a vendor's response is lost in the network.
    /// Arm it with `"method": "POST"` to lose create answers only.
    LostResponse,
    /// The vendor cannot place the server: its capacity error, in its own shape and status
    /// (Hetzner's `resource_unavailable`, DigitalOcean's 422 "Size is not available in this
    /// region.", Nova's "No valid host was found" (a 500 here; Nova itself puts it in the
    /// server's fault), Compute Engine's `ZONE_RESOURCE_POOL_EXHAUSTED`, Azure's
    /// `SkuNotAvailable`).
    /// Arm it with `"method": "POST"` to refuse creates only.
    NoCapacity,
}

fn one() -> u64 {
    1
}
fn five_hundred() -> u16 {
    500
}

/// A fault for the next `count` matching requests to one vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Which vendor's API.
    pub vendor: Vendor,
    /// What to answer.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many requests it hits.
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Only requests with this method (e.g. `POST` for creates); any when absent.
    #[serde(default)]
    pub method: Option<String>,
    /// Only requests whose path (below the vendor's prefix) contains this, e.g. `/servers`
    /// for OpenStack's creates but not its Keystone logins; any when absent.
    #[serde(default)]
    pub path: Option<String>,
}

fn one_u32() -> u32 {
    1
}

impl FaultRule {
    /// Parses `--fault vendor:kind[:count]`, e.g. `hetzner:rate_limit:3`,
    /// `digitalocean:server_error:2`, `hetzner:slow:1` (1 s), `hetzner:unauthorized`,
    /// `hetzner:lost_response` (any method; `POST /_sim/faults` can narrow it to one),
    /// `hetzner:no_capacity`, `example:rate_limit`.
    pub fn parse_flag(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let (vendor, kind) = match parts.as_slice() {
            [vendor, kind] | [vendor, kind, _] => (*vendor, *kind),
            _ => return Err(format!("'{text}' is not vendor:kind[:count]")),
        };
        let vendor = Vendor::parse(vendor).ok_or_else(|| format!("unknown vendor '{vendor}'"))?;
        let kind = match kind {
            "rate_limit" => FaultKind::RateLimit {
                retry_after_secs: 1,
            },
            "server_error" => FaultKind::ServerError { status: 500 },
            "unavailable" => FaultKind::ServerError { status: 503 },
            "unauthorized" => FaultKind::Unauthorized,
            "slow" => FaultKind::Slow { delay_ms: 1000 },
            "lost_response" => FaultKind::LostResponse,
            "no_capacity" => FaultKind::NoCapacity,
            other => return Err(format!("unknown fault kind '{other}'")),
        };
        let count = match parts.get(2) {
            Some(count) => count
                .parse()
                .map_err(|_| format!("bad count in '{text}'"))?,
            None => 1,
        };
        Ok(Self {
            vendor,
            kind,
            count,
            method: None,
            path: None,
        })
    }
}

/// Everything the simulator holds.
#[derive(Debug)]
pub struct SimState {
    /// Its behaviour.
    pub config: SimConfig,
    clouds: HashMap<Vendor, Mutex<VendorCloud>>,
    faults: Mutex<Vec<FaultRule>>,
    /// Keystone tokens issued, with their expiry.
    pub openstack_tokens: Mutex<HashMap<String, DateTime<Utc>>>,
    /// `POST /_sim/paging`: the most servers any list answer holds (0: each vendor's own
    /// maximum), so a few servers span several pages.
    page_cap: std::sync::atomic::AtomicUsize,
    /// `POST /_sim/capacity`: the vendors' regions that refuse creates for capacity.
    sold_out: Mutex<std::collections::HashSet<(Vendor, String)>>,
}

impl SimState {
    /// The page size a list answers with: `vendor_max` (the vendor's own maximum), or less
    /// while a page cap is set.
    pub fn page_size(&self, vendor_max: usize) -> usize {
        match self.page_cap.load(std::sync::atomic::Ordering::Relaxed) {
            0 => vendor_max,
            cap => cap.min(vendor_max),
        }
    }

    /// Whether `vendor`'s `region` refuses creates for capacity (`POST /_sim/capacity`).
    pub fn sold_out(&self, vendor: Vendor, region: &str) -> bool {
        self.sold_out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .contains(&(vendor, region.to_string()))
    }

    /// Makes `vendor`'s `region` refuse creates for capacity (`available` false), or serve
    /// them again.
    pub fn set_capacity(&self, vendor: Vendor, region: &str, available: bool) {
        let mut sold_out = self
            .sold_out
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if available {
            sold_out.remove(&(vendor, region.to_string()));
        } else {
            sold_out.insert((vendor, region.to_string()));
        }
    }

    /// Caps every vendor's page size (`None`: each vendor's own again).
    pub fn set_page_cap(&self, cap: Option<usize>) {
        self.page_cap
            .store(cap.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    /// An empty simulator with the configured faults armed.
    pub fn new(config: SimConfig) -> Self {
        let clouds = Vendor::ALL
            .into_iter()
            .map(|vendor| (vendor, Mutex::new(VendorCloud::default())))
            .collect();
        let faults = Mutex::new(config.faults.clone());
        Self {
            config,
            clouds,
            faults,
            openstack_tokens: Mutex::new(HashMap::new()),
            page_cap: Default::default(),
            sold_out: Default::default(),
        }
    }

    /// Runs `f` on one vendor's cloud. A poisoned lock (a panicked handler) is recovered:
    /// the data is plain and every mutation is a single step.
    pub fn with_cloud<R>(&self, vendor: Vendor, f: impl FnOnce(&mut VendorCloud) -> R) -> R {
        let cloud = &self.clouds[&vendor];
        let mut guard = cloud
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut guard)
    }

    /// Arms a fault.
    pub fn add_fault(&self, rule: FaultRule) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rule);
    }

    /// The armed faults.
    pub fn faults(&self) -> Vec<FaultRule> {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Takes one hit of the first fault armed for this request, if any.
    pub fn take_fault(&self, vendor: Vendor, method: &str, path: &str) -> Option<FaultKind> {
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        let index = faults.iter().position(|rule| {
            rule.vendor == vendor
                && rule.count > 0
                && rule
                    .method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && rule.path.as_deref().is_none_or(|p| path.contains(p))
        })?;
        let rule = &mut faults[index];
        rule.count -= 1;
        let kind = rule.kind.clone();
        if rule.count == 0 {
            faults.remove(index);
        }
        Some(kind)
    }
}

/// What the routes of a vendor with a store of its own (Azure, Compute Engine) hold: the
/// simulator, whose servers and faults every vendor shares, and the vendor's own store `S`
/// (made once in [`crate::app`] and shared by the vendor's routers). It derefs to the
/// simulator.
#[derive(Debug)]
pub struct VendorState<S> {
    sim: Arc<SimState>,
    store: Arc<Mutex<S>>,
}

impl<S: Default> VendorState<S> {
    /// The vendor at `sim`, with its store empty.
    pub fn new(sim: Arc<SimState>) -> Self {
        Self {
            sim,
            store: Arc::default(),
        }
    }
}

impl<S> VendorState<S> {
    /// The simulator.
    pub fn sim(&self) -> &Arc<SimState> {
        &self.sim
    }

    /// The vendor's own store, locked. A poisoned lock (a panicked handler) is recovered, as
    /// in [`SimState::with_cloud`].
    pub(crate) fn store(&self) -> MutexGuard<'_, S> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<S> Clone for VendorState<S> {
    fn clone(&self) -> Self {
        Self {
            sim: self.sim.clone(),
            store: self.store.clone(),
        }
    }
}

impl<S> std::ops::Deref for VendorState<S> {
    type Target = SimState;

    fn deref(&self) -> &SimState {
        &self.sim
    }
}

/// What a create asks for, vendor-neutral.
#[derive(Debug, Clone, Default)]
pub struct NewServer {
    /// Name.
    pub name: String,
    /// Region / location code.
    pub region: String,
    /// Server type / size slug.
    pub size: String,
    /// Image name or slug.
    pub image: String,
    /// Key-value labels (Hetzner labels, Example Cloud tags).
    pub labels: BTreeMap<String, String>,
    /// Tags (DigitalOcean).
    pub tags: Vec<String>,
    /// Metadata (OpenStack).
    pub metadata: BTreeMap<String, String>,
    /// The idempotency key the vendor module found in the labels or tags.
    pub idempotency_key: Option<String>,
    /// The OpenSSH public keys the server gets: from the key store (Hetzner, DigitalOcean),
    /// as given (Example Cloud), or from the user data's cloud-config (OpenStack).
    pub ssh_keys: Vec<String>,
    /// The user data the server gets, as text (OpenStack's base64 decoded).
    pub user_data: Option<String>,
}

/// A server as the simulator keeps it; each vendor module renders it in its own JSON.
#[derive(Debug, Clone)]
pub struct SimServer {
    /// Numeric id, unique per vendor.
    pub id: u64,
    /// What was asked for.
    pub spec: NewServer,
    /// When it was made; it runs once the boot delay has passed.
    pub created: DateTime<Utc>,
    /// Public IPv4 address.
    pub ipv4: String,
    /// Public IPv6 address.
    pub ipv6: String,
}

impl SimServer {
    /// The server's IPv6 network (its address is the first in it), as Hetzner shows it.
    pub fn ipv6_network(&self) -> String {
        format!("2001:db8:{:x}::/64", self.id)
    }

    /// Whether the server has finished booting at `now`.
    pub fn is_booted(&self, boot_delay: Duration, now: DateTime<Utc>) -> bool {
        let elapsed = now.signed_duration_since(self.created);
        elapsed.to_std().map(|e| e >= boot_delay).unwrap_or(false)
    }
}

/// A vendor's record of an asynchronous operation on a server (a Hetzner action): running
/// from `started` until `finishes`, a success after.
#[derive(Debug, Clone)]
pub struct SimAction {
    /// Numeric id, unique per vendor.
    pub id: u64,
    /// What it does, in the vendor's words (`create_server`, `start_server`...).
    pub command: String,
    /// The server it acts on (which may be gone by now).
    pub server_id: u64,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it is done.
    pub finishes: DateTime<Utc>,
}

/// One vendor account's servers and the counters behind `/_sim/stats`.
#[derive(Debug, Default)]
pub struct VendorCloud {
    /// Live servers by id.
    pub servers: BTreeMap<u64, SimServer>,
    /// The actions the vendor handed out (Hetzner), by id; kept after their server is gone.
    pub actions: BTreeMap<u64, SimAction>,
    next_id: u64,
    /// Servers ever made.
    pub created_total: u64,
    /// Servers ever made per idempotency key.
    pub created_per_key: HashMap<String, u64>,
    /// The account's SSH key store (Hetzner, DigitalOcean) by id.
    pub ssh_keys: BTreeMap<u64, crate::keys::StoredKey>,
    next_key_id: u64,
}

impl VendorCloud {
    /// Records a new server and gives it an id and addresses.
    pub fn insert(&mut self, spec: NewServer) -> SimServer {
        self.next_id += 1;
        let id = self.next_id;
        self.created_total += 1;
        if let Some(key) = &spec.idempotency_key {
            *self.created_per_key.entry(key.clone()).or_default() += 1;
        }
        let server = SimServer {
            id,
            spec,
            created: Utc::now(),
            // TEST-NET-3 and the IPv6 documentation prefix: never routable.
            ipv4: format!("203.0.{}.{}", 113 + (id / 250) % 10, 1 + id % 250),
            // The first address of the server's /64 (see `ipv6_network`).
            ipv6: format!("2001:db8:{id:x}::1"),
        };
        self.servers.insert(id, server.clone());
        server
    }

    /// Files a key in the key store with the next id.
    pub fn insert_key(
        &mut self,
        name: String,
        public_key: crate::keys::CheckedKey,
        labels: BTreeMap<String, String>,
    ) -> crate::keys::StoredKey {
        self.next_key_id += 1;
        let key = crate::keys::StoredKey {
            id: self.next_key_id,
            name,
            fingerprint: public_key.fingerprint,
            public_key: public_key.openssh,
            labels,
            created: Utc::now(),
        };
        self.ssh_keys.insert(key.id, key.clone());
        key
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A fault hits exactly `count` matching requests, then is gone.
    #[test]
    fn faults_hit_count_times_and_only_matching_methods() {
        let state = SimState::new(SimConfig::default());
        state.add_fault(FaultRule {
            vendor: Vendor::Hetzner,
            kind: FaultKind::Unauthorized,
            count: 2,
            method: Some("POST".into()),
            path: None,
        });
        assert_eq!(state.take_fault(Vendor::Hetzner, "GET", "/servers"), None);
        assert_eq!(
            state.take_fault(Vendor::DigitalOcean, "POST", "/servers"),
            None
        );
        assert_eq!(
            state.take_fault(Vendor::Hetzner, "POST", "/servers"),
            Some(FaultKind::Unauthorized)
        );
        assert_eq!(
            state.take_fault(Vendor::Hetzner, "post", "/servers"),
            Some(FaultKind::Unauthorized)
        );
        assert_eq!(state.take_fault(Vendor::Hetzner, "POST", "/servers"), None);
        assert!(state.faults().is_empty());
    }

    /// `POST /_sim/faults` bodies read as documented, `lost_response` included.
    #[test]
    fn parses_fault_bodies() {
        let rule: FaultRule = serde_json::from_str(
            r#"{"vendor":"hetzner","kind":"lost_response","method":"POST","count":1}"#,
        )
        .unwrap();
        assert_eq!(
            rule,
            FaultRule {
                vendor: Vendor::Hetzner,
                kind: FaultKind::LostResponse,
                count: 1,
                method: Some("POST".into()),
                path: None,
            }
        );
    }

    /// A rule with a path hits only requests whose path contains it (OpenStack's creates,
    /// not its Keystone logins).
    #[test]
    fn faults_with_a_path_hit_only_that_path() {
        let state = SimState::new(SimConfig::default());
        state.add_fault(FaultRule {
            vendor: Vendor::OpenStack,
            kind: FaultKind::LostResponse,
            count: 1,
            method: Some("POST".into()),
            path: Some("/servers".into()),
        });
        assert_eq!(
            state.take_fault(Vendor::OpenStack, "POST", "/identity/v3/auth/tokens"),
            None
        );
        assert_eq!(
            state.take_fault(Vendor::OpenStack, "POST", "/compute/v2.1/servers"),
            Some(FaultKind::LostResponse)
        );
    }

    /// `--fault` flags read as documented.
    #[test]
    fn parses_fault_flags() {
        let rule = FaultRule::parse_flag("digitalocean:rate_limit:3").unwrap();
        assert_eq!(rule.vendor, Vendor::DigitalOcean);
        assert_eq!(rule.count, 3);
        assert_eq!(
            rule.kind,
            FaultKind::RateLimit {
                retry_after_secs: 1
            }
        );
        assert_eq!(
            FaultRule::parse_flag("hetzner:lost_response").unwrap().kind,
            FaultKind::LostResponse
        );
        assert!(FaultRule::parse_flag("nimbus:rate_limit").is_err());
        assert!(FaultRule::parse_flag("hetzner:meteor").is_err());
    }
}
