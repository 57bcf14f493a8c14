//! The client of the simulator's control API ([`crate::control`]): counts, live servers, key
//! stores, servers made outside any plugin, page caps, sold-out regions, faults; Azure's
//! resource census, app registrations and faults; Compute Engine's service accounts, token
//! grants and faults; OpenStack's request counts; and of the `/_sim/faults` API the fault
//! proxy ([`crate::proxy`]) shares with the simulator. The tests and the conformance kit
//! reach the simulator through it.
//!
//! ```ignore
//! let sim = SimClient::new(&sim_url);
//! sim.faults().arm(&FaultRule::parse_flag("hetzner:rate_limit:3")?.into()).await?;
//! let created = sim.stats().await?.vendors[&Vendor::Hetzner].created_total;
//! ```

use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::azure::{self, AppRegistration, Census, CensusEntry};
use crate::control::{
    Capacity, KeyRecord, Paging, SeedServer, SeededServer, ServerRecord, Stats, VendorStats,
};
use crate::faults::ArmVendorFault;
use crate::gcp::{self, ServiceAccountRegistration, TokenGrants};
use crate::openstack::RequestsSeen;
use crate::proxy::ProxyFaultRule;
use crate::state::Vendor;

/// The simulator's control API at a base URL.
#[derive(Debug, Clone)]
pub struct SimClient {
    http: Http,
}

impl SimClient {
    /// The simulator at `base_url` (`http://127.0.0.1:8090`).
    pub fn new(base_url: &str) -> Self {
        Self {
            http: Http::new(base_url),
        }
    }

    /// The simulator at `base_url`, called with `client` (one a caller already has, with its
    /// connection pool).
    pub fn with_client(base_url: &str, client: reqwest::Client) -> Self {
        Self {
            http: Http {
                client,
                ..Http::new(base_url)
            },
        }
    }

    /// The base URL it talks to, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.http.base_url
    }

    /// `GET /_sim/stats`: every vendor's counts.
    pub async fn stats(&self) -> anyhow::Result<Stats> {
        self.http.get("/_sim/stats").await
    }

    /// `vendor`'s counts in `GET /_sim/stats`.
    pub async fn vendor_stats(&self, vendor: Vendor) -> anyhow::Result<VendorStats> {
        let mut stats = self.stats().await?;
        stats.vendors.remove(&vendor).with_context(|| {
            format!(
                "the simulator at {} counts no vendor '{}'",
                self.base_url(),
                vendor.name()
            )
        })
    }

    /// `GET /_sim/servers`: every vendor's live servers.
    pub async fn servers(&self) -> anyhow::Result<Vec<ServerRecord>> {
        #[derive(serde::Deserialize)]
        struct Answer {
            servers: Vec<ServerRecord>,
        }
        let answer: Answer = self.http.get("/_sim/servers").await?;
        Ok(answer.servers)
    }

    /// `vendor`'s live servers.
    pub async fn servers_of(&self, vendor: Vendor) -> anyhow::Result<Vec<ServerRecord>> {
        let mut servers = self.servers().await?;
        servers.retain(|server| server.vendor == vendor);
        Ok(servers)
    }

    /// `GET /_sim/ssh_keys`: every vendor's key store.
    pub async fn ssh_keys(&self) -> anyhow::Result<Vec<KeyRecord>> {
        #[derive(serde::Deserialize)]
        struct Answer {
            keys: Vec<KeyRecord>,
        }
        let answer: Answer = self.http.get("/_sim/ssh_keys").await?;
        Ok(answer.keys)
    }

    /// `POST /_sim/servers`: makes a server outside any plugin, as another tool would.
    pub async fn seed_server(&self, seed: &SeedServer) -> anyhow::Result<SeededServer> {
        self.http.post("/_sim/servers", seed).await?.read().await
    }

    /// `POST /_sim/paging`: caps every list answer at `max_per_page` servers (`None`: each
    /// vendor's own maximum again).
    pub async fn cap_pages(&self, max_per_page: Option<usize>) -> anyhow::Result<()> {
        self.http
            .post("/_sim/paging", &Paging { max_per_page })
            .await?;
        Ok(())
    }

    /// `POST /_sim/capacity`: a region refuses every create for capacity, or serves them
    /// again.
    pub async fn set_capacity(&self, capacity: &Capacity) -> anyhow::Result<()> {
        self.http.post("/_sim/capacity", capacity).await?;
        Ok(())
    }

    /// `/_sim/faults`: the simulator's armed faults.
    pub fn faults(&self) -> FaultsClient {
        FaultsClient {
            http: self.http.clone(),
            vendor: None,
        }
    }

    /// `GET /_sim/azure/resources`: every resource at the simulated ARM, oldest first.
    pub async fn azure_resources(&self) -> anyhow::Result<Vec<CensusEntry>> {
        let census: Census = self.http.get("/_sim/azure/resources").await?;
        Ok(census.resources)
    }

    /// `POST /_sim/azure/apps`: registers an app the identity platform then issues tokens to.
    pub async fn register_azure_app(&self, app: &AppRegistration) -> anyhow::Result<()> {
        self.http.post("/_sim/azure/apps", app).await?;
        Ok(())
    }

    /// `POST /_sim/azure/faults`: the next `count` VM creations fail with `kind`.
    pub async fn arm_azure_fault(
        &self,
        kind: azure::ComputeFault,
        count: u32,
    ) -> anyhow::Result<()> {
        let fault = ArmVendorFault { kind, count };
        self.http.post("/_sim/azure/faults", &fault).await?;
        Ok(())
    }

    /// `POST /_sim/gcp/service-accounts`: registers a service account by the public half of
    /// its key.
    pub async fn register_gcp_service_account(
        &self,
        account: &ServiceAccountRegistration,
    ) -> anyhow::Result<()> {
        self.http
            .post("/_sim/gcp/service-accounts", account)
            .await?;
        Ok(())
    }

    /// `POST /_sim/gcp/faults`: the next `count` instance inserts fail with `kind`.
    pub async fn arm_gcp_fault(&self, kind: gcp::ComputeFault, count: u32) -> anyhow::Result<()> {
        let fault = ArmVendorFault { kind, count };
        self.http.post("/_sim/gcp/faults", &fault).await?;
        Ok(())
    }

    /// `GET /_sim/gcp/token-grants`: the access tokens Compute Engine's token endpoint
    /// issued.
    pub async fn gcp_token_grants(&self) -> anyhow::Result<TokenGrants> {
        self.http.get("/_sim/gcp/token-grants").await
    }

    /// `GET /openstack/_sim/requests`: the requests the OpenStack cloud has had, and the
    /// tokens its Keystone issued.
    pub async fn openstack_requests(&self) -> anyhow::Result<RequestsSeen> {
        self.http.get("/openstack/_sim/requests").await
    }
}

/// `GET|POST|DELETE /_sim/faults` at a base URL: the simulator's, or the fault proxy's (the
/// same JSON: the proxy's rule is the simulator's with `vendor` optional and two standing
/// kinds more, which the simulator refuses).
#[derive(Debug, Clone)]
pub struct FaultsClient {
    http: Http,
    /// The vendor put in rules that name none.
    vendor: Option<String>,
}

impl FaultsClient {
    /// The fault API at `base_url`.
    pub fn new(base_url: &str) -> Self {
        Self {
            http: Http::new(base_url),
            vendor: None,
        }
    }

    /// The same API, arming rules that name no vendor for `vendor`.
    pub fn for_vendor(self, vendor: &str) -> Self {
        Self {
            vendor: Some(vendor.to_string()),
            ..self
        }
    }

    /// `POST /_sim/faults`: arms `rule`.
    pub async fn arm(&self, rule: &ProxyFaultRule) -> anyhow::Result<()> {
        let mut rule = rule.clone();
        if rule.vendor.is_none() {
            rule.vendor.clone_from(&self.vendor);
        }
        self.http.post("/_sim/faults", &rule).await?;
        Ok(())
    }

    /// `GET /_sim/faults`: the faults still armed, each with the count it has left (the
    /// proxy's standing ones too); a change means one fired.
    pub async fn armed(&self) -> anyhow::Result<Vec<ProxyFaultRule>> {
        #[derive(serde::Deserialize)]
        struct Answer {
            faults: Vec<ProxyFaultRule>,
        }
        let answer: Answer = self.http.get("/_sim/faults").await?;
        Ok(answer.faults)
    }

    /// `DELETE /_sim/faults`: disarms every fault.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.http.delete("/_sim/faults").await
    }
}

/// The HTTP client and the base URL, shared by the clients above.
#[derive(Debug, Clone)]
struct Http {
    base_url: String,
    client: reqwest::Client,
}

/// An answer with a success status.
struct Answered {
    what: String,
    response: reqwest::Response,
}

impl Answered {
    /// Its JSON body.
    async fn read<T: DeserializeOwned>(self) -> anyhow::Result<T> {
        self.response
            .json()
            .await
            .with_context(|| format!("reading the answer to {}", self.what))
    }
}

impl Http {
    fn new(base_url: &str) -> Self {
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send("GET", path, self.client.get(self.url(path)))
            .await?
            .read()
            .await
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> anyhow::Result<Answered> {
        self.send("POST", path, self.client.post(self.url(path)).json(body))
            .await
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        self.send("DELETE", path, self.client.delete(self.url(path)))
            .await?;
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends `request`; an error unless it is answered with a success status, with what the
    /// answer said.
    async fn send(
        &self,
        method: &str,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<Answered> {
        let what = format!("{method} {path}");
        let response = request
            .send()
            .await
            .with_context(|| format!("{what}: no answer from {}", self.base_url))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            anyhow::bail!("{what} at {} answered {status}: {body}", self.base_url);
        }
        Ok(Answered { what, response })
    }
}
