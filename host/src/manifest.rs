//! Plugin manifests: one TOML file per plugin, next to its component.
//!
//! ```toml
//! vendor = "hetzner"                      # the vendor id orders use
//! component = "hetzner.wasm"              # relative to this file
//! allowed_hosts = ["https://api.hetzner.cloud:443"]  # see `grants` for wildcards
//! # ca_certificates = ["private-ca.pem"]  # trusted besides the public web PKI
//! # insecure = true                       # required for a grant of any host
//! # allow_private_addresses = true        # granted names may resolve to private addresses
//!
//! [config]                                # values the plugin reads with get-config
//! base-url = "https://api.hetzner.cloud/v1"
//!
//! [secrets]                               # plugin key = variable / secret file name
//! token = "PLUGIN_SECRET_HETZNER_TOKEN"   # only PLUGIN_SECRET_<VENDOR>_... variables
//!
//! [limits]
//! max_in_flight = 100                     # creations at once = the consumer prefetch
//! requests_per_second = 10                # optional: this host's requests to the vendor
//! call_timeout_ms = 30000                 # one plugin call, vendor round trips included
//! memory_mib = 64                         # linear memory of one call
//! max_open_requests_per_call = 16         # requests one call may have open at once
//! max_open_requests = 64                  # requests all its calls may have open at once
//! cache_entries = 256                     # entries of its cache (WIT 0.3 `cache`)
//! cache_bytes = 1048576                   # bytes of keys and values in its cache
//! ```
//!
//! Secrets come only from where the operator put them for this plugin: the file or the
//! environment variable named `PLUGIN_SECRET_<VENDOR>_<NAME>` (the vendor id upper-cased,
//! `-` as `_`; the file in `--plugin-secrets-dir`, see [`crate::secrets`]). A manifest
//! naming any other variable (the host's `DATABASE_URL`, `AMQP_URL`, another plugin's
//! secret) is refused at load. Every secret named is required: without one the plugin is
//! not served.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::grants::OriginPattern;

/// A plugin's manifest, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The vendor id orders use (`[a-z0-9-]`, 1-32 characters).
    pub vendor: String,
    /// The component file, relative to the manifest.
    pub component: PathBuf,
    /// Outbound HTTP origins the plugin may reach, as `scheme://host:port` patterns.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Allows a grant of any host (`*://*:*`); refused without it.
    #[serde(default)]
    pub insecure: bool,
    /// Lets granted host names resolve to non-public addresses (loopback, private,
    /// link-local such as cloud metadata, ...) and a grant of any host reach a non-public
    /// IP literal. Off: such connections are refused (a grant naming an IP literal is
    /// always honoured).
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Extra CA certificates (PEM files, relative to the manifest) the plugin's HTTPS
    /// requests trust besides the public web PKI: a private cloud's CA, a local simulator's.
    #[serde(default)]
    pub ca_certificates: Vec<PathBuf>,
    /// Values the plugin reads with `get-config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets the plugin reads with `get-secret`: plugin key -> variable (and secret file)
    /// name, which must be one of the plugin's own (see [`secret_variable_prefix`]). Each is
    /// required: a plugin with one missing is not served.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
}

/// A plugin's limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Creations this vendor may have in flight on one host (the consumer prefetch).
    #[serde(default = "Limits::default_max_in_flight")]
    pub max_in_flight: u16,
    /// How long one plugin call may take, vendor round trips included.
    #[serde(default = "Limits::default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// How much linear memory one call may use, in MiB.
    #[serde(default = "Limits::default_memory_mib")]
    pub memory_mib: u32,
    /// HTTP requests per second this host sends to the vendor (of creates, look-ups, polls,
    /// deletes together; a call that pages sends several); absent for no limit. A 429
    /// pauses the vendor's calls and requests either way.
    #[serde(default)]
    pub requests_per_second: Option<f64>,
    /// Outgoing requests one call may have open at once (open: until its response body is
    /// read or dropped); one more fails for the plugin with `connection-limit-reached`.
    #[serde(default = "Limits::default_max_open_requests_per_call")]
    pub max_open_requests_per_call: u32,
    /// Outgoing requests all the plugin's calls on one host may have open at once; one
    /// more waits until one closes.
    #[serde(default = "Limits::default_max_open_requests")]
    pub max_open_requests: u32,
    /// Entries the plugin's cache may hold at once (WIT 0.3 `cache`, [`crate::cache`]); at
    /// most [`MAX_CACHE_ENTRIES`]. Zero: every `set` fails with `full`.
    #[serde(default = "Limits::default_cache_entries")]
    pub cache_entries: u32,
    /// Bytes of keys and values the plugin's cache may hold; at most [`MAX_CACHE_BYTES`].
    #[serde(default = "Limits::default_cache_bytes")]
    pub cache_bytes: u32,
}

/// The most entries a manifest may give a plugin's cache.
pub const MAX_CACHE_ENTRIES: u32 = 65_536;
/// The most bytes a manifest may give a plugin's cache (16 MiB: the host keeps every
/// plugin's cache in its own memory).
pub const MAX_CACHE_BYTES: u32 = 16 * 1024 * 1024;

impl Limits {
    fn default_max_in_flight() -> u16 {
        100
    }
    fn default_call_timeout_ms() -> u64 {
        30_000
    }
    fn default_memory_mib() -> u32 {
        64
    }
    fn default_max_open_requests_per_call() -> u32 {
        crate::outbound::DEFAULT_OPEN_REQUESTS_PER_CALL
    }
    fn default_max_open_requests() -> u32 {
        crate::outbound::DEFAULT_OPEN_REQUESTS_PER_PLUGIN
    }
    fn default_cache_entries() -> u32 {
        256
    }
    fn default_cache_bytes() -> u32 {
        1024 * 1024
    }

    /// The bounds of the plugin's cache.
    pub fn cache(&self) -> crate::cache::CacheLimits {
        crate::cache::CacheLimits {
            entries: self.cache_entries as usize,
            bytes: self.cache_bytes as usize,
        }
    }

    /// The per-call memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory_mib as usize * 1024 * 1024
    }

    /// The per-call time budget.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_in_flight: Self::default_max_in_flight(),
            call_timeout_ms: Self::default_call_timeout_ms(),
            memory_mib: Self::default_memory_mib(),
            requests_per_second: None,
            max_open_requests_per_call: Self::default_max_open_requests_per_call(),
            max_open_requests: Self::default_max_open_requests(),
            cache_entries: Self::default_cache_entries(),
            cache_bytes: Self::default_cache_bytes(),
        }
    }
}

/// Why a manifest was refused. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read manifest {path}: {source}")]
    Read {
        /// The manifest.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped fields.
    #[error("manifest {path} is not valid: {source}")]
    Parse {
        /// The manifest.
        path: PathBuf,
        /// What the TOML parser said.
        source: Box<toml::de::Error>,
    },
    /// A field has a value the host cannot use.
    #[error("manifest {path}: {problem}")]
    Invalid {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

impl Manifest {
    /// Reads and checks a manifest file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks manifest text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|source| ManifestError::Parse {
            path: path.to_path_buf(),
            source: Box::new(source),
        })?;
        let invalid = |problem: String| ManifestError::Invalid {
            path: path.to_path_buf(),
            problem,
        };
        if !is_vendor_id(&manifest.vendor) {
            return Err(invalid(format!(
                "vendor '{}' must be 1-32 characters of a-z, 0-9 and '-'",
                manifest.vendor
            )));
        }
        for entry in &manifest.allowed_hosts {
            let pattern = OriginPattern::parse(entry)
                .map_err(|problem| invalid(format!("allowed_hosts entry '{entry}': {problem}")))?;
            if pattern.allows_any_host() && !manifest.insecure {
                return Err(invalid(format!(
                    "allowed_hosts entry '{entry}' grants every host; set `insecure = true` \
                     if the plugin really may send its credentials anywhere"
                )));
            }
        }
        for (key, variable) in &manifest.secrets {
            check_secret_variable(&manifest.vendor, key, variable).map_err(invalid)?;
        }
        if manifest.limits.memory_mib < 2 {
            return Err(invalid("limits.memory_mib must be at least 2".into()));
        }
        if manifest.limits.max_in_flight == 0 {
            return Err(invalid("limits.max_in_flight must be at least 1".into()));
        }
        if let Some(rate) = manifest.limits.requests_per_second
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(invalid(
                "limits.requests_per_second must be a positive number".into(),
            ));
        }
        if manifest.limits.call_timeout_ms == 0 {
            return Err(invalid("limits.call_timeout_ms must be at least 1".into()));
        }
        let limits = &manifest.limits;
        if limits.max_open_requests_per_call == 0 || limits.max_open_requests == 0 {
            return Err(invalid(
                "limits.max_open_requests_per_call and limits.max_open_requests must be at \
                 least 1"
                    .into(),
            ));
        }
        if limits.max_open_requests_per_call > limits.max_open_requests {
            return Err(invalid(format!(
                "limits.max_open_requests_per_call = {} is more than limits.max_open_requests \
                 = {} (all the plugin's calls together)",
                limits.max_open_requests_per_call, limits.max_open_requests
            )));
        }
        if limits.cache_entries > MAX_CACHE_ENTRIES || limits.cache_bytes > MAX_CACHE_BYTES {
            return Err(invalid(format!(
                "limits.cache_entries = {} and limits.cache_bytes = {} must be at most \
                 {MAX_CACHE_ENTRIES} and {MAX_CACHE_BYTES} (the host keeps every plugin's \
                 cache in its memory)",
                limits.cache_entries, limits.cache_bytes
            )));
        }
        Ok(manifest)
    }

    /// The component's path, resolved against the manifest's folder.
    pub fn component_path(&self, manifest_path: &Path) -> PathBuf {
        match manifest_path.parent() {
            Some(folder) => folder.join(&self.component),
            None => self.component.clone(),
        }
    }

    /// The extra CA certificate files, resolved against the manifest's folder.
    pub fn ca_certificate_paths(&self, manifest_path: &Path) -> Vec<PathBuf> {
        let folder = manifest_path.parent().unwrap_or(Path::new("."));
        self.ca_certificates
            .iter()
            .map(|p| folder.join(p))
            .collect()
    }

    /// The outbound grants.
    pub fn grants(&self) -> Vec<OriginPattern> {
        self.allowed_hosts
            .iter()
            .filter_map(|entry| OriginPattern::parse(entry).ok())
            .collect()
    }
}

/// The prefix every environment variable a plugin's `[secrets]` names must have:
/// `PLUGIN_SECRET_<VENDOR>_`, the vendor id upper-cased with `-` as `_`.
pub fn secret_variable_prefix(vendor: &str) -> String {
    format!(
        "PLUGIN_SECRET_{}_",
        vendor.to_ascii_uppercase().replace('-', "_")
    )
}

/// Whether the secret `key` may be read from `variable`: only a variable the operator set
/// aside for this vendor's plugin ([`secret_variable_prefix`] and at least one more
/// character of `A-Z`, `0-9`, `_`), never the host's own configuration.
pub fn check_secret_variable(vendor: &str, key: &str, variable: &str) -> Result<(), String> {
    let prefix = secret_variable_prefix(vendor);
    let own = variable.strip_prefix(&prefix).is_some_and(|name| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    });
    if own {
        Ok(())
    } else {
        Err(format!(
            "secret '{key}' names the environment variable {variable}, which is not one of \
             this plugin's: a plugin's secrets must be in variables named {prefix}<NAME> \
             (A-Z, 0-9, _), never the host's own configuration"
        ))
    }
}

/// Vendor ids are used in queue names and URLs: keep them plain.
pub fn is_vendor_id(vendor: &str) -> bool {
    (1..=32).contains(&vendor.len())
        && vendor
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("test.toml"))
    }

    /// A full manifest reads as written and origins are made canonical.
    #[test]
    fn reads_a_complete_manifest() {
        let manifest = parse(
            r#"
            vendor = "hetzner"
            component = "hetzner.wasm"
            allowed_hosts = ["https://API.hetzner.cloud", "http://127.0.0.1:8090"]
            [config]
            base-url = "http://127.0.0.1:8090/hetzner/v1"
            [secrets]
            token = "PLUGIN_SECRET_HETZNER_TOKEN"
            [limits]
            max_in_flight = 5
            "#,
        )
        .unwrap();
        assert_eq!(manifest.vendor, "hetzner");
        assert_eq!(manifest.limits.max_in_flight, 5);
        assert_eq!(manifest.limits.call_timeout_ms, 30_000);
        let grants: Vec<String> = manifest.grants().iter().map(|g| g.to_string()).collect();
        assert_eq!(
            grants,
            ["https://api.hetzner.cloud:443", "http://127.0.0.1:8090"]
        );
        assert_eq!(manifest.limits.memory_mib, 64);
        assert_eq!(
            manifest.component_path(Path::new("/p/hetzner.toml")),
            Path::new("/p/hetzner.wasm")
        );
    }

    /// A vendor call rate must be a positive number; absent means no bucket.
    #[test]
    fn requests_per_second_must_be_positive() {
        let base = "vendor = \"x\"\ncomponent = \"x.wasm\"\n[limits]\n";
        assert_eq!(parse(base).unwrap().limits.requests_per_second, None);
        let manifest = parse(&format!("{base}requests_per_second = 2.5")).unwrap();
        assert_eq!(manifest.limits.requests_per_second, Some(2.5));
        for bad in ["0", "-1", "nan"] {
            let error = parse(&format!("{base}requests_per_second = {bad}")).unwrap_err();
            assert!(error.to_string().contains("requests_per_second"), "{error}");
        }
    }

    /// Open-request bounds default to 16 per call and 64 per plugin; zero, or more per call
    /// than per plugin, is refused.
    #[test]
    fn open_request_bounds_default_and_must_fit() {
        let base = "vendor = \"x\"\ncomponent = \"x.wasm\"\n[limits]\n";
        let limits = parse(base).unwrap().limits;
        assert_eq!(
            (limits.max_open_requests_per_call, limits.max_open_requests),
            (16, 64)
        );
        for bad in [
            "max_open_requests_per_call = 0",
            "max_open_requests = 0",
            "max_open_requests_per_call = 20\nmax_open_requests = 10",
        ] {
            let error = parse(&format!("{base}{bad}")).unwrap_err().to_string();
            assert!(error.contains("max_open_requests"), "{error}");
        }
        let limits = parse(&format!(
            "{base}max_open_requests_per_call = 4\nmax_open_requests = 4"
        ))
        .unwrap()
        .limits;
        assert_eq!(limits.max_open_requests, 4);
    }

    /// The cache's bounds default to 256 entries and 1 MiB, and cannot exceed the host's
    /// maximum.
    #[test]
    fn cache_bounds_default_and_are_capped() {
        let base = "vendor = \"x\"\ncomponent = \"x.wasm\"\n[limits]\n";
        let limits = parse(base).unwrap().limits;
        assert_eq!(
            (limits.cache_entries, limits.cache_bytes),
            (256, 1024 * 1024)
        );
        let limits = parse(&format!("{base}cache_entries = 3\ncache_bytes = 100"))
            .unwrap()
            .limits;
        assert_eq!(
            limits.cache(),
            crate::cache::CacheLimits {
                entries: 3,
                bytes: 100
            }
        );
        for bad in [
            format!("cache_entries = {}", MAX_CACHE_ENTRIES + 1),
            format!("cache_bytes = {}", MAX_CACHE_BYTES + 1),
        ] {
            let error = parse(&format!("{base}{bad}")).unwrap_err().to_string();
            assert!(error.contains("limits.cache_entries"), "{error}");
        }
    }

    /// Typos are refused instead of silently ignored, and the message names the file.
    #[test]
    fn refuses_unknown_fields_naming_the_file() {
        let error = parse("vendor = \"x\"\ncomponent = \"x.wasm\"\nallowed_host = []").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("test.toml"), "{message}");
        assert!(message.contains("allowed_host"), "{message}");
    }

    /// Vendor ids and origins the host cannot use are refused with the reason.
    #[test]
    fn refuses_bad_vendor_ids_and_origins() {
        let error = parse("vendor = \"Bad Vendor\"\ncomponent = \"x.wasm\"").unwrap_err();
        assert!(error.to_string().contains("vendor 'Bad Vendor'"));
        let error =
            parse("vendor = \"x\"\ncomponent = \"x.wasm\"\nallowed_hosts = [\"ftp://x:21\"]")
                .unwrap_err();
        assert!(error.to_string().contains("is not http"), "{error}");
        let error =
            parse("vendor = \"x\"\ncomponent = \"x.wasm\"\nallowed_hosts = [\"https://x/v1\"]")
                .unwrap_err();
        assert!(
            error.to_string().contains("must not have a path"),
            "{error}"
        );
    }

    /// A grant of every host needs the explicit `insecure` flag.
    #[test]
    fn refuses_any_host_grants_unless_insecure() {
        let any = "vendor = \"x\"\ncomponent = \"x.wasm\"\nallowed_hosts = [\"*://*:*\"]";
        let error = parse(any).unwrap_err();
        assert!(error.to_string().contains("insecure = true"), "{error}");
        let manifest = parse(&format!("{any}\ninsecure = true")).unwrap();
        assert_eq!(manifest.grants().len(), 1);
    }

    /// `[secrets]` may name only the plugin's own `PLUGIN_SECRET_<VENDOR>_` variables: the
    /// host's configuration, another plugin's secrets and the bare prefix are refused,
    /// naming the variable and the rule.
    #[test]
    fn secrets_must_be_the_plugins_own_variables() {
        let manifest = |variable: &str| {
            format!(
                "vendor = \"acme-cloud\"\ncomponent = \"x.wasm\"\n[secrets]\ntoken = {variable:?}"
            )
        };
        let ok = parse(&manifest("PLUGIN_SECRET_ACME_CLOUD_TOKEN")).unwrap();
        assert_eq!(ok.secrets["token"], "PLUGIN_SECRET_ACME_CLOUD_TOKEN");
        for bad in [
            "DATABASE_URL",
            "AMQP_URL",
            "PLUGIN_SECRET_HETZNER_TOKEN",
            "PLUGIN_SECRET_ACME_CLOUD_",
            "PLUGIN_SECRET_ACME_CLOUDTOKEN",
            "plugin_secret_acme_cloud_token",
            "PLUGIN_SECRET_ACME_CLOUD_TOKEN=x",
        ] {
            let error = parse(&manifest(bad)).unwrap_err().to_string();
            assert!(error.contains(bad), "{error}");
            assert!(error.contains("PLUGIN_SECRET_ACME_CLOUD_<NAME>"), "{error}");
        }
    }
}
