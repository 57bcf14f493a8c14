//! End-to-end tests: real `vendor-sim`, `provisioner-host` (with the real Hetzner plugin
//! component) and `order-api` processes over the real RabbitMQ. One test binary, one module
//! per concern. Each test runs its own isolated stack (AMQP name prefix, ports, database)
//! and deletes its queues and exchanges at the end.

mod auth;
mod author_path;
mod aws;
mod azure;
mod bad_input;
mod broker_addresses;
mod broker_outage;
mod broker_users;
mod cancel;
mod cli;
mod cluster;
mod compose;
mod concurrency;
mod conformance;
mod console;
mod containment;
mod docs;
mod drop_in;
mod event_streams;
mod first_copy;
mod fleets;
mod gcp;
mod happy_path;
mod host_budget;
mod idempotency;
mod layout_maps;
mod lease;
mod limits;
mod live_status;
mod metrics;
mod module_cycles;
mod openapi;
mod orphans;
mod outbox;
mod placement;
mod plugin_cache;
mod plugin_sdk;
mod poison;
mod postgres;
mod quotas;
mod restarts;
mod result_batches;
mod retries;
mod sandbox;
mod secrets;
mod shutdown;
mod stuck_log_reader;
mod traces;
mod validation;
mod vendor_inputs;
mod vendors;
mod watchdog;
mod webhooks;
