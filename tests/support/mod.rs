//! Test support: starts the real programs (`vendor-sim`, `provisioner-host`, `order-api`)
//! as processes against the real RabbitMQ, each stack with its own AMQP name prefix, ports,
//! database file and plugin manifest, and cleans up its queues and exchanges afterwards.
//!
//! The binaries and the plugin component must be built first: `scripts/test.sh` does it
//! (`cargo build --workspace --bins` and `scripts/build-plugins.sh`).
//!
//! # Layout
//! - [`Stack`]: one isolated stack; start, kill, restart its processes; talk to its API.
//! - [`Service`]: one child process with its log file.
//! - [`require_rabbitmq`]: fails a test with what to start when the broker is not there.
//! - [`OrderStore`]: the orders database a stack's order-api uses: SQLite, or PostgreSQL
//!   when `TEST_ORDER_STORE=postgres` (each stack then makes its own database, dropped at
//!   cleanup, on [`postgres_admin_url`]).
//! - [`moto`]: moto, a fake of AWS checking request signatures, for the AWS plugin's tests.
//! - [`cluster`]: the three-node RabbitMQ cluster of `scripts/rabbitmq-cluster.sh`.
//! - [`browser`]: a headless Chromium through WebDriver, for the console.

pub mod browser;
pub mod cluster;
pub mod moto;

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};
use provisioner_contract::Topology;
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

/// The broker every test uses.
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

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
    fn manifest(&self, sim_url: &str, ca: Option<&Path>, max_in_flight: u16) -> String {
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

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A built binary of the workspace in `profile` (`debug` or `release`); fails with what to
/// run when it is missing. `TEST_BINARY_<NAME>` (e.g. `TEST_BINARY_ORDER_API`) runs another
/// build instead, such as an earlier commit's, to see a test fail before its fix.
pub fn binary(profile: &str, name: &str) -> PathBuf {
    let variable = format!(
        "TEST_BINARY_{}",
        name.to_ascii_uppercase().replace('-', "_")
    );
    if let Some(path) = std::env::var_os(&variable) {
        return PathBuf::from(path);
    }
    let path = target_dir().join(profile).join(name);
    let flag = if profile == "release" {
        " --release"
    } else {
        ""
    };
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build{flag} --workspace --bins` \
         (scripts/test.sh and scripts/bench.sh do all the set-up)",
        path.display()
    );
    path
}

/// A built plugin component; fails with what to run when it is missing.
pub fn plugin_component(vendor: &str) -> PathBuf {
    let path = target_dir().join("plugins").join(format!("{vendor}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the plugins first with scripts/build-plugins.sh \
         (scripts/test.sh does all the set-up)",
        path.display()
    );
    path
}

/// A test-only plugin component (tests/fixtures); fails with what to run when missing.
pub fn test_plugin_component(name: &str) -> PathBuf {
    let path = target_dir()
        .join("test-plugins")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build it with scripts/build-plugins.sh \
         (scripts/test.sh does all the set-up)",
        path.display()
    );
    path
}

/// Fails the test, saying what to start, when RabbitMQ does not answer.
pub async fn require_rabbitmq() -> Connection {
    match Connection::connect(AMQP_URL, ConnectionProperties::default()).await {
        Ok(connection) => connection,
        Err(error) => panic!(
            "RabbitMQ is not reachable at {AMQP_URL} ({error}). Start it with \
             `rabbitmq-server -detached` and run the tests again."
        ),
    }
}

/// An HTTP client that sends `Authorization: Bearer <token>` with every request.
pub fn client_with_token(token: &str) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
        .context("a token that is not a header value")?;
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// A free TCP port on the loopback interface, never one this process handed out before.
///
/// The port is free when asked for and bound later by a child program, so the kernel may
/// offer it again in between: to a second ask of the same stack or of a test running beside
/// it. Remembering every port handed out keeps two children of one test run off one port.
pub fn free_port() -> u16 {
    static HANDED_OUT: LazyLock<std::sync::Mutex<std::collections::HashSet<u16>>> =
        LazyLock::new(Default::default);
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    loop {
        let port = StdListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or_else(|error| panic!("cannot find a free port: {error}"));
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// One child process, its log going to a file.
pub struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn spawn(
        name: &'static str,
        binary: &Path,
        env: &[(&str, String)],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let stderr = file.try_clone()?;
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("RUST_LOG", "info,lapin=warn")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { name, child, log })
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(30);
        format!(
            "--- {} ({}) ---\n{}",
            self.name,
            self.log.display(),
            lines[start..].join("\n")
        )
    }
}

/// The orders database of a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderStore {
    /// A SQLite file in the stack's folder.
    Sqlite,
    /// A database of its own on the PostgreSQL at [`postgres_admin_url`].
    Postgres,
}

impl OrderStore {
    /// What `TEST_ORDER_STORE` asks for (`sqlite`, the default, or `postgres`).
    pub fn from_env() -> Self {
        match std::env::var("TEST_ORDER_STORE").as_deref() {
            Ok("postgres") => OrderStore::Postgres,
            Ok("sqlite") | Err(_) => OrderStore::Sqlite,
            Ok(other) => panic!("TEST_ORDER_STORE must be sqlite or postgres, not '{other}'"),
        }
    }
}

/// The messages of an order's event log (`GET /v1/orders/{id}`), oldest first.
pub fn event_messages(order: &Value) -> Vec<String> {
    order["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|event| event["message"].as_str().map(str::to_string))
        .collect()
}

/// The PostgreSQL that stacks make their databases on: `TEST_POSTGRES_URL`, or the local
/// one (trust auth).
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// Makes the database `name` on [`postgres_admin_url`]; fails saying what to start when
/// PostgreSQL is not there. The new database's URL.
pub async fn create_postgres_database(name: &str) -> anyhow::Result<String> {
    use sqlx::Connection as _;
    let admin_url = postgres_admin_url();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .with_context(|| {
            format!(
                "PostgreSQL is not reachable at {admin_url}: start it \
             (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) \
             or set TEST_POSTGRES_URL"
            )
        })?;
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .with_context(|| format!("creating the database {name}"))?;
    let _ = admin.close().await;
    let mut url = url::Url::parse(&admin_url).context("parsing TEST_POSTGRES_URL")?;
    url.set_path(name);
    Ok(url.to_string())
}

/// An orders database of the suite's store (`TEST_ORDER_STORE`) as an earlier release left
/// it: migrated only below `version`, for tests of what a later migration does to its rows.
pub struct EarlierDatabase {
    /// Its URL, for `Store::connect` (which runs the remaining migrations).
    pub url: String,
    /// A pool on it, to write the rows the earlier release would have.
    pub pool: sqlx::AnyPool,
    dir: std::path::PathBuf,
    postgres_name: Option<String>,
}

impl EarlierDatabase {
    /// Makes a new database (a SQLite file, or a PostgreSQL database) and runs order-api's
    /// migrations below `version` on it.
    pub async fn migrated_below(version: i64) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("earlier-db-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let name = format!(
            "provisioner_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (url, mut migrator, postgres_name) = match OrderStore::from_env() {
            OrderStore::Sqlite => (
                format!("sqlite://{}?mode=rwc", dir.join("orders.db").display()),
                sqlx::migrate!("../order-api/migrations/sqlite"),
                None,
            ),
            OrderStore::Postgres => (
                create_postgres_database(&name).await?,
                sqlx::migrate!("../order-api/migrations/postgres"),
                Some(name),
            ),
        };
        migrator.migrations = migrator
            .migrations
            .iter()
            .filter(|migration| migration.version < version)
            .cloned()
            .collect::<Vec<_>>()
            .into();
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&url).await?;
        migrator.run(&pool).await?;
        Ok(Self {
            url,
            pool,
            dir,
            postgres_name,
        })
    }

    /// Removes the database.
    pub async fn remove(self) -> anyhow::Result<()> {
        self.pool.close().await;
        if let Some(name) = &self.postgres_name {
            drop_postgres_database(name).await?;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// What `orders` (as the API lists them) use: (live servers, orders in flight), counted from
/// their statuses as the README's *Quotas and order rates* defines them.
pub fn usage_of_orders<'a>(orders: impl IntoIterator<Item = &'a Value>) -> (u64, u64) {
    let mut usage = (0, 0);
    for order in orders {
        match order["status"].as_str().unwrap_or_default() {
            "active" => usage.0 += 1,
            "pending" | "queued" | "provisioning" | "deleting" | "cancelling" => {
                usage.0 += 1;
                usage.1 += 1;
            }
            _ => {}
        }
    }
    usage
}

/// Drops the database `name` (made by [`create_postgres_database`]), closing whatever
/// connections it still has.
pub async fn drop_postgres_database(name: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url()).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("dropping the database {name}"))?;
    let _ = admin.close().await;
    Ok(())
}

/// The id of the order `name` whose POST answered `status` with `json`, if it was accepted.
fn accepted_id(name: &str, status: u16, json: &Value) -> anyhow::Result<String> {
    if status != 202 {
        bail!("ordering {name} answered {status}: {json}");
    }
    json["id"]
        .as_str()
        .map(str::to_string)
        .context("the answer has no id")
}

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

/// Every stack holds the broker shared; a stack that stops it holds it alone.
static BROKER: LazyLock<Arc<RwLock<()>>> = LazyLock::new(|| Arc::new(RwLock::new(())));

/// Holds the broker shared (no test stops it meanwhile) for a test that uses it without a
/// [`Stack`]; the guard lets go when dropped.
pub async fn hold_broker_shared() -> OwnedRwLockReadGuard<()> {
    BROKER.clone().read_owned().await
}

/// A stack's hold on the broker: shared, or alone (then it may stop it).
struct BrokerHold {
    exclusive: bool,
    _shared: Option<OwnedRwLockReadGuard<()>>,
    _alone: Option<OwnedRwLockWriteGuard<()>>,
}

/// A broker outage a test made: [`BrokerOutage::end`] starts it again; dropping it
/// unended (a failed test) starts it too, so other tests find it up.
pub struct BrokerOutage {
    ended: bool,
}

impl BrokerOutage {
    /// Starts the broker's application again and waits until it serves.
    pub async fn end(mut self) -> anyhow::Result<()> {
        self.ended = true;
        rabbitmqctl(&["start_app"]).await?;
        rabbitmqctl(&["await_startup"]).await
    }
}

impl Drop for BrokerOutage {
    fn drop(&mut self) {
        if !self.ended {
            let _ = std::process::Command::new("rabbitmqctl")
                .args(["start_app"])
                .status();
        }
    }
}

/// Runs `rabbitmqctl` (this machine's broker only); fails with its output.
pub async fn rabbitmqctl(arguments: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("rabbitmqctl")
        .args(arguments)
        .output()
        .await
        .context("running rabbitmqctl (tests that stop the broker need it on this machine)")?;
    if !output.status.success() {
        bail!(
            "rabbitmqctl {} failed: {}{}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

impl Stack {
    /// Starts the simulator, a host and order-api, and waits until `/readyz` is 200.
    pub async fn start(options: StackOptions) -> anyhow::Result<Self> {
        let hold = if options.exclusive_broker {
            BrokerHold {
                exclusive: true,
                _shared: None,
                _alone: Some(BROKER.clone().write_owned().await),
            }
        } else {
            BrokerHold {
                exclusive: false,
                _shared: Some(BROKER.clone().read_owned().await),
                _alone: None,
            }
        };
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
        let (database_url, postgres_database) = match options.store {
            OrderStore::Sqlite => (
                format!("sqlite://{}", dir.join("orders.db").display()),
                None,
            ),
            OrderStore::Postgres => {
                let name = format!("provisioner_test_{}", &id[..12]);
                (create_postgres_database(&name).await?, Some(name))
            }
        };
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
                let deadline = Instant::now() + Duration::from_secs(20);
                while !ca.exists() {
                    if Instant::now() > deadline {
                        bail!("the simulator wrote no CA certificate\n{}", stack.logs());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
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
        let output = Command::new(binary(self.options.profile, "order-api"))
            .args(["tokens", "list"])
            .env("DATABASE_URL", self.database_url())
            .output()
            .await?;
        anyhow::ensure!(output.status.success(), "tokens list failed");
        let listing = String::from_utf8(output.stdout)?;
        listing
            .lines()
            .find(|line| line.ends_with(label))
            .and_then(|line| line.split_whitespace().next())
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("no token labelled {label} in:\n{listing}"))
    }

    /// Runs `order-api tokens create <arguments>` on this stack's database; the token.
    pub async fn create_token(&self, arguments: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(binary(self.options.profile, "order-api"))
            .args(["tokens", "create"])
            .args(arguments)
            .env("DATABASE_URL", self.database_url())
            .output()
            .await
            .context("running order-api tokens create")?;
        if !output.status.success() {
            bail!(
                "order-api tokens create {} failed: {}",
                arguments.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_string())
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
        let mut env = vec![
            ("AMQP_URL", self.amqp_url().to_string()),
            ("AMQP_NAME_PREFIX", self.topology.prefix().to_string()),
            ("LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("DATABASE_URL", self.database_url()),
            // Tests, chaos and benchmarks order faster than a tenant's default rate allows;
            // tests of the rate set their own (`api_env` comes after).
            ("TENANT_ORDER_RATE", "0".to_string()),
        ];
        for (key, value) in &self.options.api_env {
            env.push((key.as_str(), value.clone()));
        }
        Service::spawn(
            "order-api",
            &binary(self.options.profile, "order-api"),
            &env,
            self.dir.join(log),
        )
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
        if !self.broker_hold.exclusive {
            bail!("only a stack started with exclusive_broker may stop the broker");
        }
        let outage = BrokerOutage { ended: false };
        rabbitmqctl(&["stop_app"]).await?;
        Ok(outage)
    }

    /// Whether `GET /readyz` answers 200.
    pub async fn ready(&self) -> bool {
        self.ready_at(&self.api_url).await
    }

    /// Whether `GET /readyz` of the order-api at `api` answers 200.
    async fn ready_at(&self, api: &str) -> bool {
        self.http
            .get(format!("{api}/readyz"))
            .send()
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
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let served = self.vendors().await.unwrap_or_default();
            if VENDORS.iter().all(|f| served.iter().any(|v| v == f.vendor)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("order-api lists only {served:?}\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Drops the plugin manifest `manifest` into the host's plugins folder as
    /// `<vendor>.toml` and waits until order-api lists `vendor` as served.
    pub async fn serve_plugin(&self, vendor: &str, manifest: &str) -> anyhow::Result<()> {
        std::fs::write(self.plugins_dir().join(format!("{vendor}.toml")), manifest)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.vendors().await?.iter().any(|v| v == vendor) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the host never served the {vendor} plugin:\n{}",
                self.host_log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        self.wait_ready_at(&self.api_url).await
    }

    /// Waits until the order-api at `api` is ready.
    async fn wait_ready_at(&self, api: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.ready_at(api).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("order-api at {api} never became ready\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// POSTs an order body; returns the status, the `Location` header and the JSON answer.
    pub async fn post_order(
        &self,
        body: &str,
    ) -> anyhow::Result<(u16, Option<String>, String, Value)> {
        let response = self
            .http
            .post(format!("{}/v1/orders", self.api_url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .context("POST /v1/orders")?;
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let json = response
            .json()
            .await
            .context("reading the answer as JSON")?;
        Ok((status, location, content_type, json))
    }

    /// POSTs a valid Hetzner order named `name` and returns its id.
    pub async fn order_server(&self, name: &str) -> anyhow::Result<String> {
        self.order_at("hetzner", name).await
    }

    /// POSTs a valid order named `name` at `vendor` and returns its id.
    pub async fn order_at(&self, vendor: &str, name: &str) -> anyhow::Result<String> {
        let body = fixture(vendor).order_body(name);
        let (status, _, _, json) = self.post_order(&body).await?;
        accepted_id(name, status, &json)
    }

    /// POSTs a valid Hetzner order named `name` with `client` (another tenant's token) and
    /// returns its id.
    pub async fn order_as(&self, client: &reqwest::Client, name: &str) -> anyhow::Result<String> {
        let response = client
            .post(format!("{}/v1/orders", self.api_url))
            .header("content-type", "application/json")
            .body(fixture("hetzner").order_body(name))
            .send()
            .await
            .context("POST /v1/orders")?;
        let status = response.status().as_u16();
        let json: Value = response.json().await.context("the answer's body")?;
        accepted_id(name, status, &json)
    }

    /// `GET /v1/orders/{id}`.
    pub async fn order(&self, id: &str) -> anyhow::Result<Value> {
        self.http
            .get(format!("{}/v1/orders/{id}", self.api_url))
            .send()
            .await
            .context("GET /v1/orders/{id}")?
            .json()
            .await
            .context("reading the order")
    }

    /// Polls the order until its status is `status` (or the timeout passes).
    pub async fn wait_for_status(
        &self,
        id: &str,
        status: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        loop {
            // order-api may be restarting: a refused connection is not the end.
            if let Ok(order) = self.order(id).await {
                if order["status"] == status {
                    return Ok(order);
                }
                let settled = [
                    "active",
                    "partially_active",
                    "failed",
                    "deleted",
                    "cancelled",
                ];
                if settled.iter().any(|s| order["status"] == *s) {
                    bail!(
                        "order {id} ended {} instead of {status}: {order}\n{}",
                        order["status"],
                        self.logs()
                    );
                }
                last = order;
            }
            if Instant::now() > deadline {
                bail!(
                    "order {id} did not reach {status} within {timeout:?}; last seen: {last}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls the order until one of its events' messages contains `text` (or the timeout
    /// passes); answers the order.
    pub async fn wait_for_event(
        &self,
        id: &str,
        text: &str,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let order = self.order(id).await?;
            if event_messages(&order).iter().any(|m| m.contains(text)) {
                return Ok(order);
            }
            if Instant::now() > deadline {
                bail!(
                    "order {id} has no event saying '{text}' after {timeout:?}: {order}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every order `GET /v1/orders?<query>` lists, paging through it (without events).
    pub async fn list_all_orders(&self, query: &str) -> anyhow::Result<Vec<Value>> {
        let mut orders = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("{}/v1/orders?limit=200&{query}", self.api_url);
            if let Some(cursor) = &cursor {
                url.push_str(&format!("&cursor={cursor}"));
            }
            let page: Value = self
                .http
                .get(&url)
                .send()
                .await
                .context("GET /v1/orders")?
                .json()
                .await
                .context("reading a page of orders")?;
            orders.extend(page["orders"].as_array().into_iter().flatten().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_string()),
                None => return Ok(orders),
            }
        }
    }

    /// The vendor ids `GET /v1/vendors` lists.
    pub async fn vendors(&self) -> anyhow::Result<Vec<String>> {
        let answer: Value = self
            .http
            .get(format!("{}/v1/vendors", self.api_url))
            .send()
            .await
            .context("GET /v1/vendors")?
            .json()
            .await?;
        Ok(answer["vendors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["vendor"].as_str().map(str::to_string))
            .collect())
    }

    /// `DELETE /v1/orders/{id}`: the status code and the answer.
    pub async fn delete_order(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .delete(format!("{}/v1/orders/{id}", self.api_url))
            .send()
            .await
            .context("DELETE /v1/orders/{id}")?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.context("reading the answer")?))
    }

    /// `POST /v1/orders/{id}/cancel`: the status code and the answer.
    pub async fn cancel_order(&self, id: &str) -> anyhow::Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}/v1/orders/{id}/cancel", self.api_url))
            .send()
            .await
            .context("POST /v1/orders/{id}/cancel")?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.context("reading the answer")?))
    }

    /// Disarms every fault armed at the simulator (`DELETE /_sim/faults`).
    pub async fn clear_faults(&self) -> anyhow::Result<()> {
        let response = self
            .http
            .delete(format!("{}/_sim/faults", self.sim_url))
            .send()
            .await
            .context("DELETE /_sim/faults")?;
        if !response.status().is_success() {
            bail!("disarming the faults answered {}", response.status());
        }
        Ok(())
    }

    /// Arms a simulator fault (`POST /_sim/faults`), e.g.
    /// `{"vendor": "hetzner", "kind": "unauthorized", "count": 5}`.
    pub async fn inject_fault(&self, rule: Value) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/_sim/faults", self.sim_url))
            .json(&rule)
            .send()
            .await
            .context("POST /_sim/faults")?;
        if response.status() != 201 {
            bail!("arming {rule} answered {}", response.status());
        }
        Ok(())
    }

    /// The simulator's `GET /_sim/stats` for Hetzner.
    pub async fn sim_stats(&self) -> anyhow::Result<Value> {
        self.sim_stats_of("hetzner").await
    }

    /// The simulator's `GET /_sim/stats` for `vendor`.
    pub async fn sim_stats_of(&self, vendor: &str) -> anyhow::Result<Value> {
        let stats: Value = self
            .http
            .get(format!("{}/_sim/stats", self.sim_url))
            .send()
            .await
            .context("GET /_sim/stats")?
            .json()
            .await?;
        Ok(stats["vendors"][vendor].clone())
    }

    /// The simulator's `GET /_sim/servers`: every live server with its idempotency key.
    pub async fn sim_servers(&self) -> anyhow::Result<Vec<Value>> {
        let answer: Value = self
            .http
            .get(format!("{}/_sim/servers", self.sim_url))
            .send()
            .await
            .context("GET /_sim/servers")?
            .json()
            .await?;
        Ok(answer["servers"].as_array().cloned().unwrap_or_default())
    }

    /// The live simulator servers carrying `order_id` as their idempotency key.
    pub async fn live_servers_of(&self, order_id: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .sim_servers()
            .await?
            .into_iter()
            .filter(|server| server.to_string().contains(order_id))
            .collect())
    }

    /// Waits up to 30 s until the simulator has no live server carrying `order_id`.
    pub async fn wait_until_no_server(&self, order_id: &str) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let live = self.live_servers_of(order_id).await?;
            if live.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "order {order_id} still has servers at the vendor: {live:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `GET /metrics` of order-api, as text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.http
            .get(format!("{}/metrics", self.api_url))
            .send()
            .await
            .context("GET /metrics")?
            .error_for_status()
            .context("GET /metrics")?
            .text()
            .await
            .context("reading /metrics")
    }

    /// `GET /v1/orphans`: what the orphan sweep found, and each vendor's latest sweep.
    pub async fn orphan_report(&self) -> anyhow::Result<Value> {
        self.http
            .get(format!("{}/v1/orphans", self.api_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .context("GET /v1/orphans")?
            .json()
            .await
            .context("reading /v1/orphans")
    }

    /// Asks for an orphan sweep and waits (up to `within`) until every vendor in `vendors`
    /// has answered a sweep newer than the ones before; returns `GET /v1/orphans` then.
    pub async fn sweep_orphans_within(
        &self,
        vendors: &[&str],
        within: Duration,
    ) -> anyhow::Result<Value> {
        let earlier: std::collections::BTreeSet<String> = self.orphan_report().await?["sweeps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|sweep| sweep["sweep_id"].as_str().map(str::to_string))
            .collect();
        let response = self
            .http
            .post(format!("{}/v1/orphans/sweep", self.api_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .context("POST /v1/orphans/sweep")?;
        if response.status() != 202 {
            bail!("POST /v1/orphans/sweep answered {}", response.status());
        }
        let deadline = Instant::now() + within;
        loop {
            let answer = self.orphan_report().await?;
            let sweeps = answer["sweeps"].as_array().cloned().unwrap_or_default();
            let done = vendors.iter().all(|vendor| {
                sweeps.iter().any(|sweep| {
                    sweep["vendor"] == *vendor
                        && !sweep["finished_at"].is_null()
                        && !earlier.contains(sweep["sweep_id"].as_str().unwrap_or_default())
                })
            });
            if done {
                return Ok(answer);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the sweep did not finish in {within:?}: {answer:#}\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// [`Stack::sweep_orphans_within`] 30 s.
    pub async fn sweep_orphans(&self, vendors: &[&str]) -> anyhow::Result<Value> {
        self.sweep_orphans_within(vendors, Duration::from_secs(30))
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

fn vendor_ids() -> Vec<&'static str> {
    VENDORS.iter().map(|f| f.vendor).collect()
}

/// How many messages wait (ready) in `queue`.
pub async fn message_count(channel: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    provisioner_contract::amqp::ready_messages(channel, queue)
        .await
        .with_context(|| format!("looking at queue {queue}"))
}

/// A vendor simulator served by this test's runtime (until the test ends), with the
/// fixtures' credentials and `boot_delay`; its base URL.
pub async fn simulator_in_process(boot_delay: Duration) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let state = Arc::new(vendor_sim::SimState::new(vendor_sim::SimConfig {
        boot_delay,
        hetzner_token: fixture("hetzner").secret.1.into(),
        digitalocean_token: fixture("digitalocean").secret.1.into(),
        openstack_password: fixture("openstack").secret.1.into(),
        ..vendor_sim::SimConfig::default()
    }));
    tokio::spawn(vendor_sim::serve(listener, state, std::future::pending()));
    Ok(url)
}

/// The value of one series in Prometheus text (`name{labels}` exactly as written there).
pub fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
}

/// Deletes every queue and exchange of `topology` on this machine's broker.
pub async fn delete_topology(topology: &Topology, vendors: &[&str]) {
    delete_topology_at(AMQP_URL, topology, vendors).await
}

/// Deletes every queue and exchange of `topology` on the broker at `urls` (an `AMQP_URL`:
/// one URL or a cluster's list, of which the first that answers is used).
pub async fn delete_topology_at(urls: &str, topology: &Topology, vendors: &[&str]) {
    let mut connected = None;
    for url in urls.split(',').map(str::trim) {
        if let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await {
            connected = Some(connection);
            break;
        }
    }
    let Some(connection) = connected else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        for queue in topology.queues(vendors) {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in topology.exchanges() {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "cleaned up".into()).await;
}

#[cfg(test)]
mod tests {
    use super::free_port;

    /// The stacks of one test run ask for their ports at the same time and bind them later:
    /// two asks must never get one port (a CI run once gave order-api the simulator's port).
    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3000 {
            let port = free_port();
            assert!(seen.insert(port), "port {port} was handed out twice");
        }
    }
}
