//! The message contract between `order-api` and `provisioner-host`.
//!
//! The two programs talk only through RabbitMQ. Everything both sides must agree on lives
//! here, so they cannot drift apart: the AMQP names, the JSON message types, the schema
//! version and the headers every message carries.
//!
//! # Layout
//! - [`topology`]: exchange, queue and routing-key names (with an optional prefix so tests
//!   can run side by side) and the code that declares them.
//! - [`messages`]: the serde types that travel: [`HostRequest`] (order-api -> host: create,
//!   delete, cancel, the orphan sweep's listing and deletes; validations and their replies), [`HostMessage`] (host -> order-api:
//!   order updates, vendor announcements, inventories, orphan deletes).
//! - [`envelope`]: AMQP properties every message carries (`message_id`, `correlation_id`,
//!   schema version, `traceparent`) and decoding with the schema check.
//! - [`amqp`]: connecting with backoff and publishing with confirms (`mandatory`), shared
//!   by both programs so neither can forget a confirm.
//! - [`netaddr`]: which IP addresses are public (the IANA special-purpose registries), for
//!   webhook receivers and plugins' granted hosts alike.
//! - [`process`]: logging set-up and the Ctrl-C / SIGTERM shutdown token every program uses.

pub mod amqp;
pub mod envelope;
pub mod messages;
pub mod netaddr;
pub mod process;
pub mod topology;

pub use amqp::{PublishError, Publisher};
pub use envelope::{
    DecodeError, Envelope, SCHEMA_HEADER, SCHEMA_VERSION, TRACEPARENT_HEADER, decode, encode,
};
pub use messages::{
    CancelRequest, DeleteRequest, Fault, HostMessage, HostRequest, LabelledServer, Listing,
    OrderUpdate, OrphanDeleteRequest, OrphanDeleted, ProvisionRequest, ServerInfo, ServerSpec,
    ServerStatus, SweepRequest, UpdateKind, ValidateReply, ValidateRequest, VendorAnnouncement,
    VendorCatalogue, VendorInventory, VendorWithdrawal,
};
pub use topology::{LEASE_QUEUE_EXPIRES_MS, LEASE_SHARDS, Topology, VALIDATE_TTL_MS};
