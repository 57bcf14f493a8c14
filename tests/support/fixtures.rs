//! The vendors every test stack serves: each one's plugin component, its manifest pointing
//! at the simulator, the simulator's credentials for it and a valid order there; and what
//! the tests that load plugins in process share: a scratch folder, a server request, the
//! hostile test plugin's manifest, loading a manifest with its secrets, an origin of the
//! test's own for the plugin to reach.

use std::path::{Path, PathBuf};

use provisioner_host::bindings::types::ServerRequest;
use provisioner_host::manifest::Manifest;
use provisioner_host::runtime::{Plugin, PluginRuntime};

use crate::processes::{built, target_dir};

/// The vendors the stack serves, with their credentials at the simulator and a valid
/// (region, size, image) there.
pub const VENDORS: &[VendorFixture] = &[
    VendorFixture {
        vendor: "hetzner",
        secret: ("token", "test-hetzner-token"),
        config: &[("base-url", "{sim}/hetzner/v1")],
        region: "fsn1",
        size: "cx22",
        image: "ubuntu-24.04",
        unknown_size: "cx999",
    },
    VendorFixture {
        vendor: "digitalocean",
        secret: ("token", "test-digitalocean-token"),
        config: &[("base-url", "{sim}/digitalocean")],
        region: "nyc3",
        size: "s-1vcpu-1gb",
        image: "ubuntu-24-04-x64",
        unknown_size: "s-99vcpu-1tb",
    },
    VendorFixture {
        vendor: "openstack",
        secret: ("password", "test-openstack-password"),
        config: &[
            ("auth-url", "{sim}/openstack/identity/v3"),
            ("username", "provisioner"),
            ("project-name", "provisioner"),
        ],
        region: "RegionOne",
        size: "m1.small",
        image: "ubuntu-24.04",
        unknown_size: "m1.gigantic",
    },
];

/// One vendor as the test stack sets it up.
#[derive(Debug, Clone, Copy)]
pub struct VendorFixture {
    /// The vendor id.
    pub vendor: &'static str,
    /// The plugin's secret: its key and the value the simulator accepts.
    pub secret: (&'static str, &'static str),
    /// The plugin's `[config]`; `{sim}` stands for the simulator's URL.
    pub config: &'static [(&'static str, &'static str)],
    /// A region the simulator knows.
    pub region: &'static str,
    /// A size the simulator knows.
    pub size: &'static str,
    /// An image the simulator knows.
    pub image: &'static str,
    /// A well-formed size the vendor refuses.
    pub unknown_size: &'static str,
}

impl VendorFixture {
    /// The host environment variable the manifest names for the secret (a plugin may read
    /// only its own `PLUGIN_SECRET_<VENDOR>_` variables).
    pub fn secret_variable(&self) -> String {
        format!(
            "PLUGIN_SECRET_{}_{}",
            self.vendor.to_uppercase(),
            self.secret.0.to_uppercase()
        )
    }

    /// The plugin manifest pointing at the simulator.
    /// With `ca`, the simulator is reached over HTTPS and the plugin trusts that CA.
    pub(crate) fn manifest(&self, sim_url: &str, ca: Option<&Path>, max_in_flight: u16) -> String {
        let mut manifest = format!(
            "vendor = {vendor:?}\ncomponent = {component:?}\nallowed_hosts = [{sim_url:?}]\n",
            vendor = self.vendor,
            component = plugin_component(self.vendor).display().to_string(),
        );
        if let Some(ca) = ca {
            manifest.push_str(&format!(
                "ca_certificates = [{:?}]\n",
                ca.display().to_string()
            ));
        }
        manifest.push_str("\n[config]\n");
        for (key, value) in self.config {
            manifest.push_str(&format!("{key} = {:?}\n", value.replace("{sim}", sim_url)));
        }
        manifest.push_str(&format!("\n[limits]\nmax_in_flight = {max_in_flight}\n"));
        manifest.push_str(&format!(
            "\n[secrets]\n{} = {:?}\n",
            self.secret.0,
            self.secret_variable()
        ));
        manifest
    }

    /// The manifest with the simulator's catalogue in `[config]` (`regions`, `sizes`,
    /// `images`: what `validate` accepts offline), as the conformance kit runs it.
    pub fn manifest_with_catalogue(&self, sim_url: &str) -> String {
        self.manifest(sim_url, None, 10).replacen(
            "\n[config]\n",
            &format!(
                "\n[config]\nregions = {:?}\nsizes = {:?}\nimages = {:?}\n",
                self.region, self.size, self.image
            ),
            1,
        )
    }

    /// A valid order body for this vendor.
    pub fn order_body(&self, name: &str) -> String {
        serde_json::json!({
            "vendor": self.vendor, "region": self.region, "size": self.size,
            "image": self.image, "name": name,
        })
        .to_string()
    }
}

/// The fixture of `vendor`.
pub fn fixture(vendor: &str) -> VendorFixture {
    *VENDORS
        .iter()
        .find(|f| f.vendor == vendor)
        .unwrap_or_else(|| panic!("no test fixture for vendor {vendor}"))
}

/// The ids of [`VENDORS`].
pub(crate) fn vendor_ids() -> Vec<&'static str> {
    VENDORS.iter().map(|f| f.vendor).collect()
}

/// A built plugin component; fails with what to run when it is missing.
pub fn plugin_component(vendor: &str) -> PathBuf {
    built(
        target_dir().join("plugins").join(format!("{vendor}.wasm")),
        "build the plugins first with scripts/build-plugins.sh \
         (scripts/test.sh does all the set-up)",
    )
}

/// A test-only plugin component (tests/fixtures); fails with what to run when missing.
pub fn test_plugin_component(name: &str) -> PathBuf {
    built(
        target_dir()
            .join("test-plugins")
            .join(format!("{name}.wasm")),
        "build it with scripts/build-plugins.sh (scripts/test.sh does all the set-up)",
    )
}

/// The manifest shipped as `plugins/<vendor>/<file>` with its address `from` moved to `to`
/// and its component the built one ([`plugin_component`]); an error if it names no `from`.
pub fn shipped_manifest(vendor: &str, file: &str, from: &str, to: &str) -> anyhow::Result<String> {
    let path = crate::processes::workspace_root()
        .join("plugins")
        .join(vendor)
        .join(file);
    let shipped = std::fs::read_to_string(&path)
        .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
    anyhow::ensure!(
        shipped.contains(from),
        "plugins/{vendor}/{file} names no {from}"
    );
    Ok(shipped.replace(from, to).replace(
        &format!("component = \"{vendor}.wasm\""),
        &format!(
            "component = {:?}",
            plugin_component(vendor).display().to_string()
        ),
    ))
}

/// A new, empty folder of its own under the system's temporary folder, named for `what`.
pub fn scratch_dir(what: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "provisioner-{what}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A request to create a server, for a plugin called in process: idempotency key `key`,
/// name `name`, region `r`, size `s`, image `i`, nothing more.
pub fn server_request(key: &str, name: &str) -> ServerRequest {
    ServerRequest {
        idempotency_key: key.into(),
        name: name.into(),
        region: "r".into(),
        size: "s".into(),
        image: "i".into(),
        ssh_keys: vec![],
        user_data: None,
        labels: vec![],
    }
}

/// The manifest of the hostile test plugin (vendor `hostile-<behaviour>`) for `behaviour`,
/// with `top` lines (such as grants), more `[config]` lines and `[limits]` lines.
pub fn hostile_manifest(behaviour: &str, top: &str, config: &str, limits: &str) -> String {
    let vendor = format!("hostile-{behaviour}");
    format!(
        "vendor = {vendor:?}\ncomponent = {component:?}\n{top}\n\
         [config]\nvendor-id = {vendor:?}\nbehaviour = {behaviour:?}\n{config}\n\
         [limits]\n{limits}\n",
        component = test_plugin_component("hostile").display().to_string(),
    )
}

/// [`hostile_manifest`] written to a [`scratch_dir`] named for `what`; the manifest's path.
pub fn write_hostile_manifest(
    what: &str,
    behaviour: &str,
    top: &str,
    config: &str,
    limits: &str,
) -> anyhow::Result<PathBuf> {
    let path = scratch_dir(what)?.join(format!("hostile-{behaviour}.toml"));
    std::fs::write(&path, hostile_manifest(behaviour, top, config, limits))?;
    Ok(path)
}

/// Writes `manifest` as `<vendor>.toml` in `dir`; its path.
pub fn write_manifest_in(dir: &Path, vendor: &str, manifest: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{vendor}.toml"));
    std::fs::write(&path, manifest)?;
    Ok(path)
}

/// Writes `manifest` as `<vendor>.toml` in `dir` and loads it with `runtime`, reading the
/// variables its `[secrets]` name through `secret` (not the environment).
pub async fn load_with_secrets(
    runtime: &PluginRuntime,
    dir: &Path,
    vendor: &str,
    manifest: &str,
    secret: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Plugin> {
    let path = write_manifest_in(dir, vendor, manifest)?;
    let parsed = Manifest::load(&path)?;
    runtime
        .load_manifest_with_secrets(parsed, &path, secret)
        .await
}

/// Listens on 127.0.0.1 and hands every connection to `serve`, in a task of its own: an
/// origin of the test's own for a plugin called in process to reach. Its port.
pub async fn serve_connections<Serve, Served>(serve: Serve) -> anyhow::Result<u16>
where
    Serve: Fn(tokio::net::TcpStream) -> Served + Send + 'static,
    Served: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    Ok(port)
}
