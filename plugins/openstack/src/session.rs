//! An authenticated OpenStack session for one plugin call: the Keystone token, the compute
//! and image endpoints from the catalog, and requests that re-authenticate once on 401.

use std::cell::RefCell;

use provider_sdk::http::{ApiClient, HttpMethod as Method, percent_encode};
use provider_sdk::paging::{self, Page};
use provider_sdk::{ProviderError, get_config, require_secret};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    self, Auth, AuthRequest, FlavorList, Identity, ImageList, Named, Network, NovaServer, Password,
    Project, Scope, ServerList, TokenEnvelope, User,
};

/// Servers asked for per page (Nova's default `max_limit`; a cloud with a lower one
/// answers fewer and links to the next page).
const PAGE_LIMIT: usize = 1000;

/// The settings a session authenticates with, from the manifest.
struct Credentials {
    auth_url: String,
    username: String,
    password: String,
    project: String,
    user_domain: String,
    project_domain: String,
    interface: String,
}

impl Credentials {
    fn from_host() -> Result<Self, ProviderError> {
        let required = |key: &str| {
            get_config(key).ok_or_else(|| {
                ProviderError::Unauthorized(format!(
                    "the manifest's [config] must set '{key}' for OpenStack"
                ))
            })
        };
        Ok(Self {
            auth_url: required("auth-url")?.trim_end_matches('/').to_string(),
            username: required("username")?,
            password: require_secret("password")?,
            project: required("project-name")?,
            user_domain: get_config("user-domain-name").unwrap_or_else(|| "Default".into()),
            project_domain: get_config("project-domain-name").unwrap_or_else(|| "Default".into()),
            interface: get_config("interface").unwrap_or_else(|| "public".into()),
        })
    }
}

/// One call's session.
pub struct Session {
    http: ApiClient,
    credentials: Credentials,
    token: RefCell<String>,
    compute: String,
    image: Option<String>,
}

impl Session {
    /// Authenticates and reads the catalog; `region` picks endpoints of that region (any
    /// region when `None` or when the catalog has no region of that name).
    pub async fn open(region: Option<&str>) -> Result<Self, ProviderError> {
        let credentials = Credentials::from_host()?;
        let http = ApiClient::new("", api::error_reason);
        let (token, envelope) = authenticate(&http, &credentials).await?;
        let endpoint = |kind: &str| -> Option<String> {
            let entry = envelope.token.catalog.iter().find(|e| e.kind == kind)?;
            let candidates = entry
                .endpoints
                .iter()
                .filter(|e| e.interface == credentials.interface);
            let in_region = candidates.clone().find(|e| {
                region.is_some_and(|r| {
                    e.region.as_deref() == Some(r) || e.region_id.as_deref() == Some(r)
                })
            });
            in_region
                .or_else(|| candidates.clone().next())
                .map(|e| e.url.trim_end_matches('/').to_string())
        };
        let compute = endpoint("compute").ok_or_else(|| {
            ProviderError::Internal("the service catalog has no compute endpoint".into())
        })?;
        let image = endpoint("image");
        Ok(Self {
            http,
            token: RefCell::new(token),
            compute,
            image,
            credentials,
        })
    }

    /// The compute endpoint.
    pub fn compute(&self) -> &str {
        &self.compute
    }

    /// The networks to attach, from the manifest's `network-id`.
    pub fn networks(&self) -> Option<Vec<Network>> {
        get_config("network-id").map(|uuid| vec![Network { uuid }])
    }

    /// A request with the session's token; a 401 re-authenticates once and retries.
    pub async fn request<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<T, ProviderError> {
        let token = self.token.borrow().clone();
        let mut response = self
            .http
            .send(method.clone(), url, body, &[("x-auth-token", &token)])
            .await?;
        if response.status == 401 {
            let (fresh, _) = authenticate(&self.http, &self.credentials).await?;
            *self.token.borrow_mut() = fresh.clone();
            response = self
                .http
                .send(method.clone(), url, body, &[("x-auth-token", &fresh)])
                .await?;
        }
        self.http.parse(&method, url, response)
    }

    /// Servers named exactly `name`.
    pub async fn servers_named(&self, name: &str) -> Result<Vec<NovaServer>, ProviderError> {
        let pattern = percent_encode(&format!("^{}$", regex_escape(name)));
        let url = format!("{}/servers/detail?name={pattern}", self.compute);
        let list: ServerList = self.request(Method::GET, &url, None::<&()>).await?;
        Ok(list.servers)
    }

    /// Every server of the project, over every page. Nova adds a `servers_links` `next` link
    /// to a full page; its query (`limit`, `marker`) is asked of the catalog's compute
    /// endpoint, since the link's own host is whatever Nova's proxy settings say. A full page
    /// without the link continues from its last id (`marker`), as openstacksdk does.
    pub async fn all_servers(&self) -> Result<Vec<NovaServer>, ProviderError> {
        let first = format!("limit={PAGE_LIMIT}");
        paging::read_all(async |query: Option<String>| {
            let query = query.unwrap_or_else(|| first.clone());
            let url = format!("{}/servers/detail?{query}", self.compute);
            let page: ServerList = self.request(Method::GET, &url, None::<&()>).await?;
            let link = page
                .servers_links
                .iter()
                .find(|l| l.rel == "next")
                .and_then(|l| l.href.split_once('?'))
                .map(|(_, query)| query.to_string());
            let next = match (link, page.servers.last()) {
                (_, None) => None,
                (Some(link), Some(_)) => Some(link),
                (None, Some(last)) if page.servers.len() == PAGE_LIMIT => {
                    Some(format!("{first}&marker={}", percent_encode(&last.id)))
                }
                (None, Some(_)) => None,
            };
            Ok(Page {
                items: page.servers,
                next,
            })
        })
        .await
    }

    /// The id of the flavor named (or with id) `size`.
    pub async fn flavor_id(&self, size: &str) -> Result<String, ProviderError> {
        let url = format!("{}/flavors/detail", self.compute);
        let list: FlavorList = self.request(Method::GET, &url, None::<&()>).await?;
        list.flavors
            .into_iter()
            .find(|f| f.name == size || f.id == size)
            .map(|f| f.id)
            .ok_or_else(|| ProviderError::InvalidRequest(format!("no flavor named '{size}'")))
    }

    /// The id of the image named `image` (or `image` itself when no image has that name
    /// and it looks like an id).
    pub async fn image_id(&self, image: &str) -> Result<String, ProviderError> {
        if let Some(endpoint) = &self.image {
            let url = format!("{endpoint}/v2/images?name={}", percent_encode(image));
            let list: ImageList = self.request(Method::GET, &url, None::<&()>).await?;
            if let Some(found) = list.images.into_iter().next() {
                return Ok(found.id);
            }
        }
        let uuid_like =
            image.len() == 36 && image.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
        if uuid_like {
            Ok(image.to_string())
        } else {
            Err(ProviderError::InvalidRequest(format!(
                "no image named '{image}'"
            )))
        }
    }
}

/// `error` as a failure of `step`, e.g. "Keystone authentication failed: ...".
fn failed(step: &str, error: ProviderError) -> ProviderError {
    let say = |detail: String| format!("{step} failed: {detail}");
    match error {
        ProviderError::InvalidRequest(d) => ProviderError::InvalidRequest(say(d)),
        ProviderError::Unauthorized(d) => ProviderError::Unauthorized(say(d)),
        ProviderError::NotFound(d) => ProviderError::NotFound(say(d)),
        ProviderError::QuotaExceeded(d) => ProviderError::QuotaExceeded(say(d)),
        ProviderError::Transient(d) => ProviderError::Transient(say(d)),
        ProviderError::Internal(d) => ProviderError::Internal(say(d)),
        limited @ ProviderError::RateLimited(_) => limited,
    }
}

/// `POST {auth-url}/auth/tokens`: the token (from `X-Subject-Token`) and the catalog.
/// Failures say "Keystone authentication failed" and name the path, never the auth URL.
async fn authenticate(
    http: &ApiClient,
    credentials: &Credentials,
) -> Result<(String, TokenEnvelope), ProviderError> {
    login(http, credentials)
        .await
        .map_err(|error| failed("Keystone authentication", error))
}

async fn login(
    http: &ApiClient,
    credentials: &Credentials,
) -> Result<(String, TokenEnvelope), ProviderError> {
    let body = AuthRequest {
        auth: Auth {
            identity: Identity {
                methods: ["password"],
                password: Password {
                    user: User {
                        name: &credentials.username,
                        domain: Named {
                            name: &credentials.user_domain,
                        },
                        password: &credentials.password,
                    },
                },
            },
            scope: Scope {
                project: Project {
                    name: &credentials.project,
                    domain: Named {
                        name: &credentials.project_domain,
                    },
                },
            },
        },
    };
    let url = format!("{}/auth/tokens", credentials.auth_url);
    let response = http.send(Method::POST, &url, Some(&body), &[]).await?;
    let token = response
        .headers
        .get("x-subject-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let envelope: TokenEnvelope = http.parse(&Method::POST, &url, response)?;
    let token = token.ok_or_else(|| {
        ProviderError::Internal("Keystone issued no X-Subject-Token header".into())
    })?;
    Ok((token, envelope))
}

/// Escapes regular-expression characters (Nova's `name` filter is a regex).
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
