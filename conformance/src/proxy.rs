//! The fault proxy a `--fault-proxy` run starts in process (`vendor-sim`'s proxy mode) in
//! front of the plugin's own upstream: the live vendor, or a fake of it the kit knows
//! nothing about.
//!
//! The upstream is the origin (`scheme://host:port`) of the manifest's base URL (the
//! `[config]` key the run names, `base-url` by default), so every URL the vendor hands
//! out on that origin (links, OpenStack's service catalogue) is rewritten to lead back
//! through the proxy. For the run only, the manifest's base URL is pointed at the proxy,
//! the proxy's origin is granted and a grant of the upstream's own origin is withdrawn:
//! the plugin then reaches the vendor only through the proxy, which records every request.
//! Other granted origins (an OpenStack whose services live on other hosts) stay granted;
//! requests to them pass beside the proxy, unseen and without faults.

use std::path::Path;

use anyhow::Context;
use provisioner_host::manifest::Manifest;
use vendor_sim::control_client::FaultsClient;
use vendor_sim::proxy::{FaultProfile, ProxyConfig, ProxyHandle, RecordedRequest, spawn_proxy};

/// A running fault proxy and what the checks ask of it.
#[derive(Debug)]
pub struct ProxyControl {
    handle: ProxyHandle,
    faults: FaultsClient,
    /// The upstream origin the proxy forwards to.
    pub upstream: String,
    /// The profile's vendor.
    pub profile_vendor: String,
    /// Whether the profile says how list pages are sized (so `small_pages` can be armed).
    pub has_paging: bool,
    /// Whether the profile's rate-limit answer says when to come back (see
    /// [`FaultProfile::rate_limit_says_when`]).
    pub rate_limit_says_when: bool,
    /// Whether the profile has the vendor's capacity refusal (`[no_capacity]`).
    pub has_no_capacity: bool,
}

impl ProxyControl {
    /// Starts a proxy with the fault profile at `profile` in front of the origin of
    /// `manifest.config[base_url_key]`, and points `manifest` at it (see the module doc).
    pub async fn start(
        manifest: &mut Manifest,
        manifest_path: &Path,
        profile: &Path,
        base_url_key: &str,
    ) -> anyhow::Result<Self> {
        let profile = FaultProfile::load(profile)?;
        let base_url = manifest.config.get(base_url_key).with_context(|| {
            format!(
                "the manifest's [config] has no '{base_url_key}' (the vendor API's base URL \
                 the proxy goes in front of; name another key with --base-url-key)"
            )
        })?;
        let parsed = url::Url::parse(base_url).with_context(|| {
            format!("the manifest's [config] {base_url_key} '{base_url}' is not a URL")
        })?;
        let origin = parsed.origin().ascii_serialization();
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https") && origin != "null",
            "the manifest's [config] {base_url_key} '{base_url}' is not an http(s) URL"
        );
        let mut upstream_ca_pem = Vec::new();
        for path in manifest.ca_certificate_paths(manifest_path) {
            let pem = std::fs::read(&path).with_context(|| {
                format!(
                    "reading the CA certificate {} the manifest names",
                    path.display()
                )
            })?;
            upstream_ca_pem.extend(pem);
            upstream_ca_pem.push(b'\n');
        }
        let handle = spawn_proxy(ProxyConfig {
            upstream: url::Url::parse(&origin)
                .with_context(|| format!("the upstream origin {origin}"))?,
            profile: profile.clone(),
            upstream_ca_pem: (!upstream_ca_pem.is_empty()).then_some(upstream_ca_pem),
        })
        .await
        .context("starting the fault proxy")?;
        let through_proxy = format!("{}{}", handle.url, &parsed[url::Position::BeforePath..]);
        manifest
            .config
            .insert(base_url_key.to_string(), through_proxy);
        manifest
            .allowed_hosts
            .retain(|grant| !same_origin(grant, &parsed));
        manifest
            .allowed_hosts
            .push(format!("http://{}", handle.addr));
        Ok(Self {
            faults: FaultsClient::new(&handle.url).for_vendor(profile.vendor()),
            upstream: origin,
            profile_vendor: profile.vendor().to_string(),
            has_paging: profile.paging().is_some(),
            rate_limit_says_when: profile.rate_limit_says_when(),
            has_no_capacity: profile.has_no_capacity(),
            handle,
        })
    }

    /// The proxy's fault API.
    pub fn faults(&self) -> &FaultsClient {
        &self.faults
    }

    /// The proxy's base URL.
    pub fn url(&self) -> &str {
        &self.handle.url
    }

    /// Every request recorded so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.handle.recorded_requests()
    }

    /// The number of the last request recorded (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.requests().last().map_or(0, |r| r.seq)
    }

    /// The requests recorded after the one numbered `seq`.
    pub fn requests_after(&self, seq: u64) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.seq > seq)
            .collect()
    }
}

/// Whether the grant `grant` (`scheme://host:port`) names the origin of `url`.
fn same_origin(grant: &str, url: &url::Url) -> bool {
    url::Url::parse(grant).is_ok_and(|granted| {
        granted.scheme() == url.scheme()
            && granted.host_str() == url.host_str()
            && granted.port_or_known_default() == url.port_or_known_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hetzner_profile() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/hetzner/faults.toml")
    }

    fn manifest(config: &str) -> Manifest {
        let text = format!(
            "vendor = \"acme\"\ncomponent = \"acme.wasm\"\n\
             allowed_hosts = [\"https://api.acme.test:443\", \"https://auth.acme.test:443\"]\n\
             [config]\n{config}\n"
        );
        Manifest::parse(&text, Path::new("acme.toml")).expect("a manifest")
    }

    /// For the run, the base URL leads to the proxy (its path kept), the proxy's origin is
    /// granted and the upstream's is not; other grants stay; the proxy forwards to the
    /// upstream's origin.
    #[tokio::test]
    async fn points_the_manifest_at_the_proxy_in_front_of_the_base_urls_origin() {
        let mut manifest = manifest("base-url = \"https://api.acme.test/v2\"");
        let proxy = ProxyControl::start(
            &mut manifest,
            Path::new("acme.toml"),
            &hetzner_profile(),
            "base-url",
        )
        .await
        .expect("the proxy starts");
        assert_eq!(proxy.upstream, "https://api.acme.test");
        assert_eq!(manifest.config["base-url"], format!("{}/v2", proxy.url()));
        assert_eq!(
            manifest.allowed_hosts,
            [
                "https://auth.acme.test:443".to_string(),
                proxy.url().to_string()
            ]
        );
        assert!(proxy.has_paging);
    }

    /// A manifest without the named key is the run's set-up error, saying which flag names
    /// another.
    #[tokio::test]
    async fn a_missing_base_url_key_says_how_to_name_another() {
        let mut manifest = manifest("auth-url = \"https://auth.acme.test/v3\"");
        let error = ProxyControl::start(
            &mut manifest,
            Path::new("acme.toml"),
            &hetzner_profile(),
            "base-url",
        )
        .await
        .expect_err("no base-url");
        assert!(format!("{error:#}").contains("--base-url-key"), "{error:#}");
    }

    /// A grant with the default port written out names the same origin as a URL without.
    #[test]
    fn grants_name_origins_with_or_without_default_ports() {
        let api = url::Url::parse("https://api.hetzner.cloud/v1").expect("a URL");
        assert!(same_origin("https://api.hetzner.cloud:443", &api));
        assert!(!same_origin("https://api.hetzner.cloud:8443", &api));
        assert!(!same_origin("http://api.hetzner.cloud:443", &api));
        assert!(!same_origin("https://*.hetzner.cloud:443", &api));
        let sim = url::Url::parse("http://127.0.0.1:8090/hetzner/v1").expect("a URL");
        assert!(same_origin("http://127.0.0.1:8090", &sim));
    }
}
