//! The compose stack's plugin set-up, without a Docker engine: every manifest in
//! `deploy/compose`, with the secret files in `deploy/compose/secrets` and the simulator
//! accounts in `deploy/compose/sim-accounts` posted as the `sim-accounts` service does,
//! loads in the host's runtime and reaches the simulator (started with the tokens
//! `docker-compose.yml` gives `vendor-sim`): each plugin's `list-servers` answers, which
//! takes its credentials (a GCE service-account JWT signed with the key's private half and
//! verified with the registered public half; an Azure client-credentials grant).
//! `vendor-sim:8090` becomes the in-process simulator's address, and
//! `/opt/provisioner/plugins` the built components.

use std::collections::BTreeMap;
use std::sync::Arc;

use provisioner_host::runtime::PluginRuntime;
use provisioner_tests::{load_with_secrets, plugin_component, workspace_root};

/// The address the compose files give the simulator.
const COMPOSE_SIM: &str = "http://vendor-sim:8090";

/// The value `docker-compose.yml` gives the environment variable `name` (a
/// `NAME: value` line).
fn compose_environment(compose: &str, name: &str) -> anyhow::Result<String> {
    compose
        .lines()
        .find_map(|line| line.trim().strip_prefix(&format!("{name}:")))
        .map(|value| value.trim().to_string())
        .ok_or_else(|| anyhow::anyhow!("docker-compose.yml sets no {name}"))
}

#[tokio::test]
async fn every_compose_manifest_loads_and_reaches_the_simulator() -> anyhow::Result<()> {
    let root = workspace_root();
    let compose = std::fs::read_to_string(root.join("docker-compose.yml"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let sim_url = format!("http://{}", listener.local_addr()?);
    let state = Arc::new(vendor_sim::SimState::new(vendor_sim::SimConfig {
        hetzner_token: compose_environment(&compose, "SIM_HETZNER_TOKEN")?,
        digitalocean_token: compose_environment(&compose, "SIM_DIGITALOCEAN_TOKEN")?,
        openstack_password: compose_environment(&compose, "SIM_OPENSTACK_PASSWORD")?,
        ..vendor_sim::SimConfig::default()
    }));
    tokio::spawn(vendor_sim::serve(listener, state, std::future::pending()));

    let http = reqwest::Client::new();
    for (file, path) in [
        ("gcp-service-account.json", "/_sim/gcp/service-accounts"),
        ("azure-app.json", "/_sim/azure/apps"),
    ] {
        anyhow::ensure!(
            compose.contains(&format!("@/etc/sim-accounts/{file}"))
                && compose.contains(&format!("{COMPOSE_SIM}{path}")),
            "the sim-accounts service does not post {file} to {path}"
        );
        let body = std::fs::read(root.join("deploy/compose/sim-accounts").join(file))?;
        http.post(format!("{sim_url}{path}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?
            .error_for_status()?;
    }

    let secrets_dir = root.join("deploy/compose/secrets");
    let mut secrets = BTreeMap::new();
    for entry in std::fs::read_dir(&secrets_dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("PLUGIN_SECRET_") {
            let value = std::fs::read_to_string(&path)?;
            secrets.insert(
                name.to_string(),
                value.trim_end_matches('\n').replace(COMPOSE_SIM, &sim_url),
            );
        }
    }

    let work = crate::conformance::workdir("compose")?;
    let runtime = PluginRuntime::new()?;
    let mut served = Vec::new();
    let mut manifests: Vec<_> = std::fs::read_dir(root.join("deploy/compose"))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    manifests.sort();
    for shipped in manifests {
        let vendor = shipped
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        anyhow::ensure!(
            compose.contains(&format!(
                "./deploy/compose/{vendor}.toml:/etc/provisioner/plugins/{vendor}.toml:ro"
            )),
            "docker-compose.yml does not mount deploy/compose/{vendor}.toml into the host"
        );
        let text = std::fs::read_to_string(&shipped)?
            .replace(COMPOSE_SIM, &sim_url)
            .replace(
                &format!("/opt/provisioner/plugins/{vendor}.wasm"),
                &plugin_component(&vendor).display().to_string(),
            );
        let plugin = load_with_secrets(&runtime, &work, &vendor, &text, |variable| {
            secrets.get(variable).cloned()
        })
        .await
        .map_err(|error| anyhow::anyhow!("deploy/compose/{vendor}.toml: {error:#}"))?;
        let listed = plugin
            .list_servers()
            .await
            .map_err(|error| anyhow::anyhow!("{vendor}'s list-servers: {error:?}"))?
            .ok_or_else(|| anyhow::anyhow!("{vendor}'s plugin has no list-servers"))?;
        served.push((vendor, listed.len()));
    }
    let vendors: Vec<&str> = served.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        vendors,
        ["azure", "digitalocean", "gcp", "hetzner", "openstack"],
        "{served:?}"
    );
    Ok(())
}
