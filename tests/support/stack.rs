//! [`Stack`]: one isolated stack of the real programs (simulator, hosts, order-api) with
//! its own AMQP names, ports, database and plugin manifests; how it is set up
//! ([`StackOptions`]), started, restarted, killed, made ready and cleaned up.
//! Its calls to the order API are in `api_client`, to the simulator in `simulator`.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use provisioner_api_client::client_with_token;
use provisioner_contract::Topology;
use tokio::process::Command;

use crate::broker::{AMQP_URL, BrokerHold, BrokerOutage, delete_topology_at, require_rabbitmq};
use crate::database::{OrderStore, drop_postgres_database};
use crate::fixtures::{VENDORS, VendorFixture, fixture, vendor_ids};
use crate::processes::{Service, binary, free_port, output_of_success, target_dir};
use crate::waiting::{done_when, wait_until};

/// How a stack is set up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// How long simulated servers take to boot.
    pub boot_delay: Duration,
    /// The host's first poll delay.
    pub poll: Duration,
    /// The host's longest poll delay (`None`: the same as `poll`, fast polls for tests).
    pub poll_max: Option<Duration>,
    /// Whether the plugins reach the simulator over HTTPS (trusting its CA).
    pub tls: bool,
    /// Every plugin manifest's `limits.max_in_flight`.
    pub max_in_flight: u16,
    /// Which build of the binaries runs: `debug` (tests) or `release` (benchmarks).
    pub profile: &'static str,
    /// Extra environment for the host (later entries override the stack's own).
    pub host_env: Vec<(String, String)>,
    /// Extra environment for order-api (later entries override the stack's own).
    pub api_env: Vec<(String, String)>,
    /// Whether order-api runs the host's plugins itself for their `validate`
    /// (`VALIDATE_PLUGINS_DIR` = [`Stack::plugins_dir`]).
    pub api_checks_with_plugins: bool,
    /// How many hosts run (each with its own `HOST_ID`).
    pub hosts: usize,
    /// Whether this stack may stop the broker ([`Stack::stop_broker`]): it then runs alone,
    /// with no other stack beside it.
    pub exclusive_broker: bool,
    /// The orders database (default: [`OrderStore::from_env`]).
    pub store: OrderStore,
    /// The AMQP name prefix (default: a new `test-<id>.` per stack), for a test that must
    /// know it before the stack starts (broker users whose permissions name it).
    pub amqp_prefix: Option<String>,
    /// The broker both programs use: one URL or a cluster's, comma-separated (default
    /// [`AMQP_URL`], this machine's broker).
    pub amqp_url: Option<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            boot_delay: Duration::from_millis(500),
            poll: Duration::from_millis(200),
            poll_max: None,
            tls: false,
            max_in_flight: 1000,
            profile: "debug",
            host_env: Vec::new(),
            api_env: Vec::new(),
            api_checks_with_plugins: false,
            hosts: 1,
            exclusive_broker: false,
            store: OrderStore::from_env(),
            amqp_prefix: None,
            amqp_url: None,
        }
    }
}

/// The tenant whose token [`Stack::http`] sends.
pub const TEST_TENANT: &str = "test";

/// One isolated stack: simulator, host and order-api with their own names and ports.
pub struct Stack {
    /// The AMQP names of this stack.
    pub topology: Topology,
    /// The order API's base URL.
    pub api_url: String,
    /// The simulator's base URL.
    pub sim_url: String,
    /// HTTP client; it sends [`Stack::token`] unless a request sets its own `Authorization`.
    pub http: reqwest::Client,
    /// An API token of the tenant [`TEST_TENANT`].
    pub token: String,
    /// An admin API token.
    pub admin_token: String,
    dir: PathBuf,
    api_port: u16,
    /// The orders database's URL.
    database_url: String,
    /// The PostgreSQL database this stack made (dropped at cleanup).
    postgres_database: Option<String>,
    /// More order-api instances on the same database ([`Stack::start_another_api`]).
    more_apis: Vec<Service>,
    options: StackOptions,
    sim: Option<Service>,
    /// The hosts (index 0 is "the host"; more with `StackOptions::hosts`).
    hosts: Vec<Option<Service>>,
    api: Option<Service>,
    cleaned: bool,
    broker_hold: BrokerHold,
}

impl Stack {
    /// Starts the simulator, a host and order-api, and waits until `/readyz` is 200.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        let hold = BrokerHold::take(options.exclusive_broker).await;
        if options.amqp_url.is_none() {
            let broker = require_rabbitmq().await;
            let _ = broker.close(200, "checked".into()).await;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let prefix = options
            .amqp_prefix
            .clone()
            .unwrap_or_else(|| format!("test-{}.", &id[..12]));
        let dir = target_dir()
            .join("test-runs")
            .join(&prefix[..prefix.len() - 1]);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let sim_port = free_port();
        let api_port = free_port();
        let sim_url = format!("http://127.0.0.1:{sim_port}");
        let tls_port = options.tls.then(free_port);
        let (database_url, postgres_database) =
            options.store.create_database(&dir, &id[..12]).await?;
        let mut stack = Self {
            topology: Topology::with_prefix(prefix),
            api_url: format!("http://127.0.0.1:{api_port}"),
            sim_url,
            http: reqwest::Client::new(),
            token: String::new(),
            admin_token: String::new(),
            dir,
            api_port,
            database_url,
            postgres_database,
            more_apis: Vec::new(),
            options,
            sim: None,
            hosts: Vec::new(),
            api: None,
            cleaned: false,
            broker_hold: hold,
        };
        stack.start_sim(sim_port, tls_port)?;
        // Over TLS the plugins talk to the simulator's HTTPS port and trust its CA, which it
        // writes once the port is bound.
        let (plugin_url, ca) = match tls_port {
            Some(port) => {
                let ca = stack.dir.join("sim-ca.pem");
                wait_until(
                    Duration::from_secs(20),
                    Duration::from_millis(50),
                    async || Ok(done_when(ca.exists())),
                    async |()| {
                        anyhow::anyhow!("the simulator wrote no CA certificate\n{}", stack.logs())
                    },
                )
                .await?;
                (format!("https://127.0.0.1:{port}"), Some(ca))
            }
            None => (stack.sim_url.clone(), None),
        };
        let plugins = stack.plugins_dir();
        std::fs::create_dir_all(&plugins)?;
        let max_in_flight = stack.options.max_in_flight;
        for fixture in VENDORS {
            let path = plugins.join(format!("{}.toml", fixture.vendor));
            let manifest = fixture.manifest(&plugin_url, ca.as_deref(), max_in_flight);
            std::fs::write(path, manifest)?;
        }
        for index in 0..stack.options.hosts.max(1) {
            stack.start_host_at(index)?;
        }
        stack.token = stack.create_token(&["--tenant", TEST_TENANT]).await?;
        stack.admin_token = stack.create_token(&["--admin"]).await?;
        stack.http = client_with_token(&stack.token)?;
        stack.start_api()?;
        stack.wait_ready().await?;
        stack.wait_for_vendors().await?;
        if stack.options.api_checks_with_plugins {
            stack.wait_for_plugins_at_api().await?;
        }
        Ok(stack)
    }

    /// The broker both programs use (`AMQP_URL`: one URL, or a cluster's list).
    pub fn amqp_url(&self) -> &str {
        self.options.amqp_url.as_deref().unwrap_or(AMQP_URL)
    }

    /// The orders database's URL.
    pub fn database_url(&self) -> String {
        self.database_url.clone()
    }

    /// The id `order-api tokens list` shows for the token labelled `label`.
    pub async fn token_id(&self, label: &str) -> anyhow::Result<String> {
        let listing = self.tokens(&["list"]).await?;
        listing
            .lines()
            .find(|line| line.ends_with(label))
            .and_then(|line| line.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no token labelled {label} in:\n{listing}"))
    }

    /// Runs `order-api tokens create <arguments>` on this stack's database; the token.
    pub async fn create_token(&self, arguments: &[&str]) -> anyhow::Result<String> {
        let mut create = vec!["create"];
        create.extend_from_slice(arguments);
        Ok(self.tokens(&create).await?.trim().to_string())
    }

    /// Runs `order-api tokens <arguments>` on this stack's database; what it printed.
    async fn tokens(&self, arguments: &[&str]) -> anyhow::Result<String> {
        let shown_as = format!("order-api tokens {}", arguments.join(" "));
        output_of_success(
            Command::new(binary(self.options.profile, "order-api"))
                .arg("tokens")
                .args(arguments)
                .env("DATABASE_URL", self.database_url()),
            &shown_as,
            &format!("running {shown_as}"),
        )
        .await
    }

    /// An HTTP client sending a new token of `tenant`.
    pub async fn client_of_tenant(&self, tenant: &str) -> anyhow::Result<reqwest::Client> {
        client_with_token(&self.create_token(&["--tenant", tenant]).await?)
    }

    fn start_sim(&mut self, port: u16, tls_port: Option<u16>) -> anyhow::Result<()> {
        let mut env = vec![
            ("SIM_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            (
                "SIM_BOOT_DELAY_MS",
                self.options.boot_delay.as_millis().to_string(),
            ),
            ("SIM_HETZNER_TOKEN", fixture("hetzner").secret.1.to_string()),
            (
                "SIM_DIGITALOCEAN_TOKEN",
                fixture("digitalocean").secret.1.to_string(),
            ),
            (
                "SIM_OPENSTACK_PASSWORD",
                fixture("openstack").secret.1.to_string(),
            ),
        ];
        if let Some(tls_port) = tls_port {
            env.push(("SIM_TLS_LISTEN_ADDR", format!("127.0.0.1:{tls_port}")));
            env.push((
                "SIM_TLS_CA_OUT",
                self.dir.join("sim-ca.pem").display().to_string(),
            ));
        }
        self.sim = Some(Service::spawn(
            "vendor-sim",
            &binary(self.options.profile, "vendor-sim"),
            &env,
            self.dir.join("sim.log"),
        )?);
        Ok(())
    }

    /// Starts (or restarts) the host.
    pub fn start_host(&mut self) -> anyhow::Result<()> {
        self.start_host_at(0)
    }

    fn host_log_path(&self, index: usize) -> PathBuf {
        match index {
            0 => self.dir.join("host.log"),
            _ => self.dir.join(format!("host-{index}.log")),
        }
    }

    /// Starts (or restarts) host number `index` (from 0).
    pub fn start_host_at(&mut self, index: usize) -> anyhow::Result<()> {
        let host_id = format!("test-host-{index}");
        let poll = self.options.poll.as_millis().to_string();
        let poll_max = self
            .options
            .poll_max
            .unwrap_or(self.options.poll)
            .as_millis()
            .to_string();
        let variables: Vec<String> = VENDORS.iter().map(VendorFixture::secret_variable).collect();
        let mut env = vec![
            ("AMQP_URL", self.amqp_url().to_string()),
            ("AMQP_NAME_PREFIX", self.topology.prefix().to_string()),
            (
                "PLUGINS_DIR",
                self.dir.join("plugins").display().to_string(),
            ),
            ("POLL_INITIAL_MS", poll),
            ("POLL_MAX_MS", poll_max),
            ("PLUGINS_RESCAN_MS", "200".to_string()),
        ];
        for (fixture, variable) in VENDORS.iter().zip(&variables) {
            env.push((variable.as_str(), fixture.secret.1.to_string()));
        }
        if index > 0 {
            env.push(("HOST_ID", host_id));
        }
        for (key, value) in &self.options.host_env {
            env.push((key.as_str(), value.clone()));
        }
        let host = Service::spawn(
            "provisioner-host",
            &binary(self.options.profile, "provisioner-host"),
            &env,
            self.host_log_path(index),
        )?;
        if self.hosts.len() <= index {
            self.hosts.resize_with(index + 1, || None);
        }
        self.hosts[index] = Some(host);
        Ok(())
    }

    /// Starts (or restarts) order-api on the same port and database.
    pub fn start_api(&mut self) -> anyhow::Result<()> {
        self.api = Some(self.spawn_api(self.api_port, "api.log")?);
        Ok(())
    }

    /// Spawns an order-api of this stack listening on `port`, logging to `log`.
    fn spawn_api(&self, port: u16, log: &str) -> anyhow::Result<Service> {
        Service::spawn(
            "order-api",
            &binary(self.options.profile, "order-api"),
            &self.api_env(port),
            self.dir.join(log),
        )
    }

    /// The environment of an order-api of this stack listening on `port`.
    fn api_env(&self, port: u16) -> Vec<(&str, String)> {
        let mut env = vec![
            ("AMQP_URL", self.amqp_url().to_string()),
            ("AMQP_NAME_PREFIX", self.topology.prefix().to_string()),
            ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("DATABASE_URL", self.database_url()),
            // Tests, chaos and benchmarks order faster than a tenant's default rate allows;
            // tests of the rate set their own (`api_env` comes after).
            ("TENANT_ORDER_RATE", "0".to_string()),
        ];
        if self.options.api_checks_with_plugins {
            env.push((
                "VALIDATE_PLUGINS_DIR",
                self.plugins_dir().display().to_string(),
            ));
        }
        for (key, value) in &self.options.api_env {
            env.push((key.as_str(), value.clone()));
        }
        env
    }

    /// Starts one more order-api on this stack's database and broker names, on a port of its
    /// own; its base URL.
    pub async fn start_another_api(&mut self) -> anyhow::Result<String> {
        let port = free_port();
        let number = self.more_apis.len() + 2;
        let api = self.spawn_api(port, &format!("api-{number}.log"))?;
        self.more_apis.push(api);
        let url = format!("http://127.0.0.1:{port}");
        self.wait_ready_at(&url).await?;
        Ok(url)
    }

    /// Stops order-api and starts it again with its stdout and stderr going to pipes nobody
    /// reads, as to a log collector that is stuck: once a pipe is full, each write to it
    /// waits.
    pub async fn restart_api_with_unread_output(&mut self) -> anyhow::Result<()> {
        self.kill_api().await;
        self.api = Some(Service::spawn_with_unread_output(
            "order-api",
            &binary(self.options.profile, "order-api"),
            &self.api_env(self.api_port),
        )?);
        let url = self.api_url.clone();
        self.wait_ready_at(&url).await
    }

    /// Waits until order-api has loaded the stack's plugins for its own check
    /// ([`StackOptions::api_checks_with_plugins`]): it does so in the background, after it
    /// starts serving, and asks a host until then.
    pub async fn wait_for_plugins_at_api(&self) -> anyhow::Result<()> {
        wait_until(
            Duration::from_secs(120),
            Duration::from_millis(100),
            async || {
                Ok(done_when(self.api_log().contains(
                    "checking new orders with these vendors' plugins here",
                )))
            },
            async |()| {
                anyhow::anyhow!(
                    "order-api did not load its plugins for the check\n{}",
                    self.logs()
                )
            },
        )
        .await
    }

    /// The folder the host loads plugins from (and rescans for drop-ins).
    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.join("plugins")
    }

    /// order-api's process id, while it runs.
    pub fn api_pid(&self) -> Option<u32> {
        self.api.as_ref().and_then(|api| api.child.id())
    }

    /// The simulator's process id.
    pub fn sim_pid(&self) -> Option<u32> {
        self.sim.as_ref().and_then(|sim| sim.child.id())
    }

    /// The host's process id, while it runs.
    pub fn host_pid(&self) -> Option<u32> {
        self.host().and_then(|host| host.child.id())
    }

    fn host(&self) -> Option<&Service> {
        self.hosts.first().and_then(Option::as_ref)
    }

    /// How many hosts this stack has.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Stops the broker's application (connections drop, the port refuses) until the
    /// returned outage is ended. Only for stacks started with `exclusive_broker`.
    pub async fn stop_broker(&self) -> anyhow::Result<BrokerOutage> {
        self.broker_hold.stop_broker().await
    }

    /// Whether `GET /readyz` answers 200.
    pub async fn ready(&self) -> bool {
        self.ready_at(&self.api_url).await
    }

    /// Whether `GET /readyz` of the order-api at `api` answers 200.
    async fn ready_at(&self, api: &str) -> bool {
        self.api_at(api)
            .send_raw(reqwest::Method::GET, "/readyz", None)
            .await
            .is_ok_and(|response| response.status() == 200)
    }

    /// order-api's whole log so far.
    pub fn api_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("api.log")).unwrap_or_default()
    }

    /// The host's whole log so far.
    pub fn host_log(&self) -> String {
        std::fs::read_to_string(self.host_log_path(0)).unwrap_or_default()
    }

    /// SIGTERMs the host and waits (up to `within`) for it to exit; returns its exit code.
    pub async fn terminate_host(&mut self, within: Duration) -> anyhow::Result<Option<i32>> {
        let host = self
            .hosts
            .first_mut()
            .and_then(Option::as_mut)
            .context("the host is not running")?;
        let pid = host.child.id().context("the host already exited")?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed");
        }
        let status = tokio::time::timeout(within, host.child.wait())
            .await
            .with_context(|| format!("the host did not exit within {within:?} of SIGTERM"))??;
        Ok(status.code())
    }

    /// SIGKILLs the host.
    pub async fn kill_host(&mut self) {
        self.kill_host_at(0).await;
    }

    /// SIGKILLs host number `index`.
    pub async fn kill_host_at(&mut self, index: usize) {
        if let Some(Some(host)) = self.hosts.get_mut(index) {
            host.kill().await;
        }
    }

    /// SIGKILLs order-api.
    pub async fn kill_api(&mut self) {
        if let Some(api) = self.api.as_mut() {
            api.kill().await;
        }
    }

    /// Waits until order-api lists every fixture vendor (the host announces them one by
    /// one; `/readyz` is 200 after the first).
    pub async fn wait_for_vendors(&self) -> anyhow::Result<()> {
        wait_until(
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || {
                let served = self.vendors().await.unwrap_or_default();
                Ok(
                    if VENDORS.iter().all(|f| served.iter().any(|v| v == f.vendor)) {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(served)
                    },
                )
            },
            async |served| anyhow::anyhow!("order-api lists only {served:?}\n{}", self.logs()),
        )
        .await
    }

    /// Drops the plugin manifest `manifest` into the host's plugins folder as
    /// `<vendor>.toml` and waits until order-api lists `vendor` as served.
    pub async fn serve_plugin(&self, vendor: &str, manifest: &str) -> anyhow::Result<()> {
        std::fs::write(self.plugins_dir().join(format!("{vendor}.toml")), manifest)?;
        wait_until(
            Duration::from_secs(60),
            Duration::from_millis(200),
            async || Ok(done_when(self.vendors().await?.iter().any(|v| v == vendor))),
            async |()| {
                anyhow::anyhow!(
                    "the host never served the {vendor} plugin:\n{}",
                    self.host_log()
                )
            },
        )
        .await
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        self.wait_ready_at(&self.api_url).await
    }

    /// Waits until the order-api at `api` is ready.
    async fn wait_ready_at(&self, api: &str) -> anyhow::Result<()> {
        wait_until(
            Duration::from_secs(60),
            Duration::from_millis(100),
            async || Ok(done_when(self.ready_at(api).await)),
            async |()| anyhow::anyhow!("order-api at {api} never became ready\n{}", self.logs()),
        )
        .await
    }

    /// The last log lines of every process, for failure messages.
    pub fn logs(&self) -> String {
        [&self.sim, &self.api]
            .into_iter()
            .chain(self.hosts.iter())
            .flatten()
            .chain(self.more_apis.iter())
            .map(Service::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the processes and deletes this stack's queues, exchanges and files.
    pub async fn cleanup(mut self) {
        for service in [&mut self.api, &mut self.sim]
            .into_iter()
            .chain(self.hosts.iter_mut())
            .flatten()
        {
            service.kill().await;
        }
        for service in &mut self.more_apis {
            service.kill().await;
        }
        delete_topology_at(self.amqp_url(), &self.topology, &vendor_ids()).await;
        if let Some(name) = &self.postgres_database
            && let Err(error) = drop_postgres_database(name).await
        {
            eprintln!("the test database {name} stays: {error:#}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        self.cleaned = true;
    }

    /// [`Stack::cleanup`], deleting the queues of `more_vendors` too: vendors the test served
    /// besides [`VENDORS`] (plugins it dropped in).
    pub async fn cleanup_serving(self, more_vendors: &[&str]) {
        let topology = self.topology.clone();
        let amqp_url = self.amqp_url().to_string();
        self.cleanup().await;
        delete_topology_at(&amqp_url, &topology, more_vendors).await;
    }
}

impl Drop for Stack {
    /// A failed test never reaches `cleanup`: still delete its queues and exchanges (the
    /// processes die with their handles). The files stay for the post-mortem.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        eprintln!("logs of the failed stack are in {}", self.dir.display());
        if let Some(name) = &self.postgres_database {
            eprintln!("its orders are in the PostgreSQL database {name}");
        }
        let topology = self.topology.clone();
        let url = self.amqp_url().to_string();
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(delete_topology_at(&url, &topology, &vendor_ids()));
            }
        })
        .join();
    }
}
