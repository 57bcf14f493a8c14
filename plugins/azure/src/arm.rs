//! An authenticated ARM session for one plugin call: the app's credentials, the
//! subscription and resource group, the access token (from the host's cache or a fresh
//! grant, see [`crate::auth`]), and requests that ask for a new token and retry once on a
//! 401 (`provider_sdk::session_token`).

use provider_sdk::http::{ApiClient, ApiResponse, HttpMethod as Method, percent_encode};
use provider_sdk::paging::{self, Page};
use provider_sdk::session_token::SessionToken;
use provider_sdk::{IDEMPOTENCY_LABEL, ProviderError, get_config};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{self, GenericResource, ListPage, PublicIp, VirtualMachine};
use crate::auth::{self, Credentials, DEFAULT_AUTHORITY};
use crate::names::{IP_TYPE, NIC_TYPE, VM_TYPE, VendorId};

/// Azure Resource Manager.
pub const DEFAULT_BASE_URL: &str = "https://management.azure.com";
/// `Microsoft.Compute`'s API version.
pub const COMPUTE_API: &str = "2024-07-01";
/// `Microsoft.Network`'s API version.
pub const NETWORK_API: &str = "2024-05-01";
/// The generic resources API's version.
pub const RESOURCES_API: &str = "2021-04-01";

/// A required `[config]` value.
fn required(key: &str, what: &str) -> Result<String, ProviderError> {
    get_config(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ProviderError::InvalidRequest(format!(
                "the manifest's [config] sets no '{key}' ({what})"
            ))
        })
}

/// The API version of a resource type.
pub fn api_version(kind: &str) -> &'static str {
    if kind.starts_with("Microsoft.Network") {
        NETWORK_API
    } else {
        COMPUTE_API
    }
}

/// One call's session. No `Debug`: it holds the credentials and the token.
pub struct Session {
    http: ApiClient,
    credentials: Credentials,
    authority: String,
    token: SessionToken,
    /// The subscription and resource group servers are made in (`name` unused).
    pub home: VendorId,
}

impl Session {
    /// Reads the credentials and the configuration, and takes the cached token or asks
    /// for one.
    pub async fn open() -> Result<Self, ProviderError> {
        let credentials = Credentials::from_secrets()?;
        let home = VendorId {
            subscription: required("subscription-id", "the subscription servers are made in")?,
            group: required("resource-group", "the resource group servers are made in")?,
            name: String::new(),
        };
        let authority = get_config("authority")
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_AUTHORITY.into());
        let base_url = get_config("base-url")
            .map(|u| u.trim().trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_BASE_URL.into());
        let token = match auth::cached(&credentials) {
            Some(token) => token,
            None => auth::grant(&credentials, &authority).await?,
        };
        Ok(Self {
            http: ApiClient::new(&base_url, api::error_reason).with_error_mapper(api::arm_error),
            credentials,
            authority,
            token: SessionToken::bearer(token.access_token),
            home,
        })
    }

    /// The subnet the NICs join: `[config] subnet-id`, else `virtual-network` and `subnet`
    /// (default `default`) in the resource group.
    pub fn subnet_id(&self) -> Result<String, ProviderError> {
        if let Some(id) = get_config("subnet-id")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
        {
            return Ok(id);
        }
        let vnet = required(
            "virtual-network",
            "the virtual network whose subnet the servers join, or set 'subnet-id'",
        )?;
        let subnet = get_config("subnet")
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "default".into());
        Ok(format!(
            "{}/subnets/{subnet}",
            self.home
                .resource("Microsoft.Network/virtualNetworks", &vnet)
        ))
    }

    /// Sends a request with the session's token; a 401 forgets the cached token, asks for
    /// a new one and sends it again. Any status is returned.
    pub async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<ApiResponse, ProviderError> {
        self.token
            .send(&self.http, method, path, body, async || self.renew().await)
            .await
    }

    /// A request whose 2xx answer is parsed; failures map by [`api::arm_error`].
    pub async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ProviderError> {
        self.token
            .call(&self.http, method, path, body, async || self.renew().await)
            .await
    }

    /// A fresh token after ARM refused the session's: the cached one forgotten, a new one
    /// granted.
    async fn renew(&self) -> Result<String, ProviderError> {
        auth::forget(&self.credentials);
        Ok(auth::grant(&self.credentials, &self.authority)
            .await?
            .access_token)
    }

    /// The path of the resource id `id` with its API version (and `extra` query).
    pub fn path(id: &str, extra: &str) -> String {
        let kind = if id.contains("/Microsoft.Network/") {
            NIC_TYPE
        } else {
            VM_TYPE
        };
        format!("{id}?api-version={}{extra}", api_version(kind))
    }

    /// `PUT` of a resource (create or update, idempotent by name); the answer's body.
    pub async fn put(
        &self,
        id: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ProviderError> {
        self.call(Method::PUT, &Self::path(id, ""), Some(body))
            .await
    }

    /// `DELETE` of a resource: `Some(answer)` when it was there (202, 200), `None` when
    /// it was already gone (204, 404).
    pub async fn delete(&self, id: &str) -> Result<Option<ApiResponse>, ProviderError> {
        let path = Self::path(id, "");
        let response = self.send(Method::DELETE, &path, None::<&()>).await?;
        match response.status {
            204 | 404 => Ok(None),
            200..=299 => Ok(Some(response)),
            _ => Err(api::arm_error("DELETE", &path, &response)),
        }
    }

    /// Follows a long-running operation's `Azure-AsyncOperation` (else `Location`) until
    /// it ends or `tries` polls pass (pausing as `Retry-After` says, at most 2 s): whether
    /// it ended, and its error.
    pub async fn follow(&self, started: &ApiResponse, tries: u32) -> Result<bool, ProviderError> {
        let header = |name: &str| {
            started
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let Some(url) = header("azure-asyncoperation").or_else(|| header("location")) else {
            return Ok(true);
        };
        let mut pause_ms = provider_sdk::http::retry_after_ms(&started.headers).unwrap_or(1000);
        for _ in 0..tries {
            wstd::task::sleep(wstd::time::Duration::from_millis(pause_ms.clamp(100, 2000))).await;
            let response = self.send(Method::GET, &url, None::<&()>).await?;
            pause_ms = provider_sdk::http::retry_after_ms(&response.headers).unwrap_or(1000);
            match response.status {
                202 => continue,
                200 | 204 => {
                    let body: serde_json::Value =
                        serde_json::from_str(&response.body).unwrap_or_default();
                    match body["status"].as_str() {
                        Some("InProgress") | Some("Running") => continue,
                        Some("Failed") | Some("Canceled") => {
                            return Err(api::arm_error(
                                "GET",
                                &url,
                                &ApiResponse {
                                    status: 409,
                                    headers: response.headers,
                                    body: serde_json::json!({"error": body["error"]}).to_string(),
                                },
                            ));
                        }
                        _ => return Ok(true),
                    }
                }
                _ => return Err(api::arm_error("GET", &url, &response)),
            }
        }
        Ok(false)
    }

    /// The VM with its instance view.
    pub async fn vm(&self, id: &VendorId) -> Result<VirtualMachine, ProviderError> {
        self.call(
            Method::GET,
            &Self::path(&id.vm(), "&$expand=instanceView"),
            None::<&()>,
        )
        .await
    }

    /// The VM's public IP's address, if it has one yet.
    pub async fn address(&self, id: &VendorId) -> Result<Option<String>, ProviderError> {
        match self
            .call::<PublicIp, ()>(Method::GET, &Self::path(&id.ip(), ""), None)
            .await
        {
            Ok(ip) => Ok(ip.address()),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Every item of a list, over every page (`nextLink`).
    async fn list<T: DeserializeOwned>(&self, first: String) -> Result<Vec<T>, ProviderError> {
        paging::read_all(async |next: Option<String>| {
            let path = next.unwrap_or_else(|| first.clone());
            let page: ListPage<T> = self.call(Method::GET, &path, None::<&()>).await?;
            let (items, next) = page.into_page();
            Ok(Page { items, next })
        })
        .await
    }

    /// The group's resources of `kind`.
    async fn list_kind<T: DeserializeOwned>(&self, kind: &str) -> Result<Vec<T>, ProviderError> {
        let first = format!(
            "/subscriptions/{}/resourceGroups/{}/providers/{kind}?api-version={}",
            self.home.subscription,
            self.home.group,
            api_version(kind)
        );
        self.list(first).await
    }

    /// Every VM of the resource group carrying the idempotency tag.
    pub async fn tagged_vms(&self) -> Result<Vec<VirtualMachine>, ProviderError> {
        let vms: Vec<VirtualMachine> = self.list_kind(VM_TYPE).await?;
        Ok(vms
            .into_iter()
            .filter(|vm| vm.idempotency_key().is_some())
            .collect())
    }

    /// The group's public IPs' addresses by name.
    pub async fn addresses(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, ProviderError> {
        let ips: Vec<PublicIp> = self.list_kind(IP_TYPE).await?;
        Ok(ips
            .into_iter()
            .filter_map(|ip| Some((ip.name.to_ascii_lowercase(), ip.address()?)))
            .collect())
    }

    /// The names of the group's VMs tagged with `key` (ARM's tag filter on the generic
    /// resource list, every page; it answers without tags, so the caller reads each VM).
    pub async fn vms_tagged_with(&self, key: &str) -> Result<Vec<String>, ProviderError> {
        let filter = format!(
            "tagName eq '{IDEMPOTENCY_LABEL}' and tagValue eq '{}'",
            key.replace('\'', "''")
        );
        let first = format!(
            "/subscriptions/{}/resourceGroups/{}/resources?$filter={}&api-version={RESOURCES_API}",
            self.home.subscription,
            self.home.group,
            percent_encode(&filter)
        );
        let found: Vec<GenericResource> = self.list(first).await?;
        Ok(found
            .into_iter()
            .filter(|r| r.kind.eq_ignore_ascii_case(VM_TYPE))
            .map(|r| r.name)
            .collect())
    }
}
