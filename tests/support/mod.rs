//! Test support: starts the real programs (`vendor-sim`, `provisioner-host`, `order-api`)
//! as processes against the real RabbitMQ, each stack with its own AMQP name prefix, ports,
//! database file and plugin manifest, and cleans up its queues and exchanges afterwards.
//!
//! The binaries and the plugin component must be built first: `scripts/test.sh` does it
//! (`cargo build --workspace --bins` and `scripts/build-plugins.sh`).
//!
//! Everything the tests use is re-exported here, so they name it `provisioner_tests::…`.
//!
//! # Layout
//! - [`stack`]: [`Stack`], one isolated stack, and [`StackOptions`]; start, kill, restart
//!   its processes, wait until it is ready, clean it up.
//! - [`api_client`]: the stack's calls to its order API (orders, vendors, metrics,
//!   orphans) through [`provisioner_api_client::ApiClient`] (as the stack's tenant, another
//!   token, the admin, or at another order-api: `Stack::api`, `api_with`, `admin_api`,
//!   `api_at`), [`post_order_with`], and readers of the answers ([`event_messages`],
//!   [`metric_value`]); [`client_with_token`] is that crate's.
//! - [`simulator`]: the stack's calls to the simulator's control API (faults, stats, live
//!   servers, a lost answer's check) through `vendor_sim::control_client`, the same for a
//!   simulator or fault proxy at a bare URL, the vendors' own control endpoints, and
//!   [`simulator_in_process`].
//! - [`fixtures`]: the vendors every stack serves ([`VENDORS`]) with their plugin manifests,
//!   the built plugin components, and what in-process plugin tests share
//!   ([`server_request`], [`scratch_dir`], [`hostile_manifest`], [`load_with_secrets`],
//!   [`serve_connections`]).
//! - [`processes`]: the workspace's builds ([`binary`]), [`free_port`], [`Service`] (one
//!   child process with its log file), running a command to its end.
//! - [`database`]: [`OrderStore`], the orders database a stack's order-api uses: SQLite, or
//!   PostgreSQL when `TEST_ORDER_STORE=postgres` (each stack then makes its own database,
//!   dropped at cleanup, on [`postgres_admin_url`]); [`EarlierDatabase`] for migrations.
//! - [`broker`]: this machine's RabbitMQ ([`AMQP_URL`]): [`require_rabbitmq`], holding it
//!   shared or alone, [`rabbitmqctl`], deleting a stack's queues and exchanges.
//! - [`waiting`]: looking again until something holds or the time is up.
//! - [`moto`]: moto, a fake of AWS checking request signatures, for the AWS plugin's tests.
//! - [`cluster`]: the three-node RabbitMQ cluster of `scripts/rabbitmq-cluster.sh`.
//! - [`browser`]: a headless Chromium through WebDriver, for the console.

pub mod api_client;
pub mod broker;
pub mod browser;
pub mod cluster;
pub mod database;
pub mod fixtures;
pub mod moto;
pub mod processes;
pub mod simulator;
pub mod stack;
pub mod waiting;

pub use api_client::{
    SseEvent, event_messages, metric_value, post_order_with, sse_events, usage_of_orders,
};
pub use broker::{
    AMQP_URL, BrokerOutage, delete_topology, delete_topology_at, hold_broker_shared, message_count,
    rabbitmqctl, require_rabbitmq,
};
pub use database::{
    EarlierDatabase, OrderStore, create_postgres_database, drop_postgres_database,
    postgres_admin_url,
};
pub use fixtures::{
    VENDORS, VendorFixture, fixture, hostile_manifest, load_with_secrets, plugin_component,
    scratch_dir, serve_connections, server_request, shipped_manifest, test_plugin_component,
    write_hostile_manifest, write_manifest_in,
};
pub use processes::{Service, binary, free_port, target_dir, workspace_root};
pub use provisioner_api_client::{ApiClient, client_with_token};
pub use simulator::simulator_in_process;
pub use stack::{Stack, StackOptions, TEST_TENANT};
