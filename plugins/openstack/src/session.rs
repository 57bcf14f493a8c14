//! An authenticated OpenStack session for one plugin call: the Keystone token, the compute
//! and image endpoints from the catalog, and requests that re-authenticate once on 401
//! (`provider_sdk::session_token`).
//!
//! The token and its catalog outlive the call in the host's cache (WIT 0.3 `cache`): one
//! Keystone login serves every call until the token's `expires_at` less the SDK's
//! [`EXPIRY_MARGIN`](provider_sdk::session_token::EXPIRY_MARGIN), or until Nova answers 401
//! (revoked, or the clocks disagree), when the session drops it, logs in once more and
//! retries once. A cache miss (a new host, a reload,
//! a full cache) only costs a login. The token is a secret: it is never logged, never in an
//! error, and [`Session`] and [`Login`] have no `Debug`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use provider_sdk::cache;
use provider_sdk::http::{ApiClient, HttpMethod as Method, percent_encode};
use provider_sdk::paging::{self, Page};
use provider_sdk::session_token::{SessionToken, keep_until_expiry};
use provider_sdk::{ProviderError, get_config, require_secret};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{
    self, Auth, AuthRequest, CatalogEntry, FlavorList, Identity, ImageList, Named, Network,
    NovaServer, Password, Project, Scope, ServerList, User,
};

/// The cache key of the Keystone login. One is enough: a change of the credentials or the
/// auth URL reloads the plugin, which empties its cache.
const LOGIN_KEY: &str = "keystone-login";

/// A Keystone login: the token (from `X-Subject-Token`) and the service catalog it came
/// with. No `Debug`: the token is a secret.
#[derive(Serialize, Deserialize)]
struct Login {
    token: String,
    catalog: Vec<CatalogEntry>,
}

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
    token: SessionToken,
    compute: String,
    image: Option<String>,
}

impl Session {
    /// Authenticates and reads the catalog; `region` picks endpoints of that region (any
    /// region when `None` or when the catalog has no region of that name).
    pub async fn open(region: Option<&str>) -> Result<Self, ProviderError> {
        let credentials = Credentials::from_host()?;
        let http = ApiClient::new("", api::error_reason);
        let login = match cache::get_json::<Login>(LOGIN_KEY) {
            Some(login) => login,
            None => authenticate(&http, &credentials).await?,
        };
        let endpoint = |kind: &str| -> Option<String> {
            let entry = login.catalog.iter().find(|e| e.kind == kind)?;
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
            token: SessionToken::in_header("x-auth-token", login.token),
            compute,
            image,
            credentials,
        })
    }

    /// The compute endpoint.
    pub fn compute(&self) -> &str {
        &self.compute
    }

    /// The URL of the server `vendor_id` at the compute endpoint; `invalid-request` when
    /// the id cannot be a path segment ([`api::path_segment`]).
    pub fn server_url(&self, vendor_id: &str) -> Result<String, ProviderError> {
        Ok(format!(
            "{}/servers/{}",
            self.compute,
            api::path_segment(vendor_id)?
        ))
    }

    /// The networks to attach, from the manifest's `network-id`.
    pub fn networks(&self) -> Option<Vec<Network>> {
        get_config("network-id").map(|uuid| vec![Network { uuid }])
    }

    /// A request with the session's token; a 401 forgets the cached login, re-authenticates
    /// once and retries.
    pub async fn request<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<T, ProviderError> {
        self.token
            .call(&self.http, method, url, body, async || {
                cache::delete(LOGIN_KEY);
                Ok(authenticate(&self.http, &self.credentials).await?.token)
            })
            .await
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
        ProviderError::NoCapacity(d) => ProviderError::NoCapacity(say(d)),
        limited @ ProviderError::RateLimited(_) => limited,
    }
}

/// `POST {auth-url}/auth/tokens`: the token (from `X-Subject-Token`) and the catalog, kept
/// in the cache until shortly before the token expires ([`remember`]). Failures say
/// "Keystone authentication failed" and name the path, never the auth URL.
async fn authenticate(http: &ApiClient, credentials: &Credentials) -> Result<Login, ProviderError> {
    let (login, expires_at) = login(http, credentials)
        .await
        .map_err(|error| failed("Keystone authentication", error))?;
    remember(&login, expires_at.as_deref());
    Ok(login)
}

/// Keeps `login` in the cache until [`EXPIRY_MARGIN`](provider_sdk::session_token::EXPIRY_MARGIN) before `expires_at`. Not kept when
/// Keystone gave no expiry the plugin can read, or one too close: the next call logs in
/// again, as it would without a cache. A full cache is not an error either.
fn remember(login: &Login, expires_at: Option<&str>) {
    let Some(expires_ms) = expires_at.and_then(unix_millis) else {
        provider_sdk::log(
            provider_sdk::LogLevel::Debug,
            "Keystone gave no readable expires_at: the token is not cached",
        );
        return;
    };
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    let lifetime = expires_ms
        .checked_sub(now_ms)
        .map(|left_ms| Duration::from_millis(u64::try_from(left_ms).unwrap_or(u64::MAX)));
    keep_until_expiry(
        LOGIN_KEY,
        login,
        lifetime,
        "the Keystone token",
        "every call logs in",
    );
}

/// An RFC 3339 time in UTC (`2026-12-02T21:45:00.000000Z`, or with a `+hh:mm` / `-hh:mm`
/// offset) as milliseconds since the Unix epoch; none when it is not one.
fn unix_millis(text: &str) -> Option<u128> {
    let number = |part: &str| -> Option<i64> {
        (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.splitn(3, '-');
    let (year, month, day) = (
        number(date_parts.next()?)?,
        number(date_parts.next()?)?,
        number(date_parts.next()?)?,
    );
    let (clock, offset_secs) = if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        (clock, 0)
    } else {
        let at = time.rfind(['+', '-'])?;
        let (clock, offset) = time.split_at(at);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let (hours, minutes) = offset[1..].split_once(':')?;
        (
            clock,
            sign * (number(hours)? * 3600 + number(minutes)? * 60),
        )
    };
    let (whole, fraction) = clock.split_once('.').unwrap_or((clock, ""));
    let mut clock_parts = whole.splitn(3, ':');
    let (hour, minute, second) = (
        number(clock_parts.next()?)?,
        number(clock_parts.next()?)?,
        number(clock_parts.next()?)?,
    );
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let millis = match fraction {
        "" => 0,
        digits => {
            let padded = format!("{:0<3}", &digits[..digits.len().min(3)]);
            number(&padded)?
        }
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let shifted = if month <= 2 { year - 1 } else { year };
    let era = shifted.div_euclid(400);
    let year_of_era = shifted - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    u128::try_from(seconds * 1000 + millis).ok()
}

/// One Keystone login and the token's `expires_at`.
async fn login(
    http: &ApiClient,
    credentials: &Credentials,
) -> Result<(Login, Option<String>), ProviderError> {
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
    let envelope: api::TokenEnvelope = http.parse(&Method::POST, &url, response)?;
    let token = token.ok_or_else(|| {
        ProviderError::Internal("Keystone issued no X-Subject-Token header".into())
    })?;
    let login = Login {
        token,
        catalog: envelope.token.catalog,
    };
    Ok((login, envelope.token.expires_at))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Keystone's `expires_at` reads as the Unix time it names, with or without a fraction
    /// or an offset; anything else is none (the token is then not cached).
    #[test]
    fn reads_keystone_expiry_times() {
        assert_eq!(unix_millis("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_millis("2026-12-02T21:45:00.123456Z"),
            Some(1_796_247_900_123)
        );
        assert_eq!(
            unix_millis("2026-12-02T22:45:00+01:00"),
            unix_millis("2026-12-02T21:45:00Z")
        );
        assert_eq!(unix_millis("2000-02-29T12:00:00.5Z"), Some(951_825_600_500));
        for bad in ["", "tomorrow", "2026-13-01T00:00:00Z", "2026-12-02T21:45Z"] {
            assert_eq!(unix_millis(bad), None, "{bad}");
        }
    }
}
