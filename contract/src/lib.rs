//! The message contract between `order-api` and `provisioner-host`.
//!
//! The two programs talk only through RabbitMQ. Everything both sides must agree on lives
//! here, so they cannot drift apart: the AMQP names, the JSON message types, the schema
//! version and the headers every message carries.
//!
//! # How a message travels
//! order-api sends [`HostRequest`]s (create, delete, cancel, the orphan sweep's requests) on
//! the exchange [`Topology::requests_exchange`] with the routing key
//! [`Topology::request_key`]`(vendor)`; each vendor's hosts read them from
//! [`Topology::request_queue`]`(vendor)`. Hosts answer with [`HostMessage`]s (order updates,
//! vendor announcements, inventories) on [`Topology::results_exchange`], which order-api
//! reads from [`Topology::results_queue`]. Every message is JSON ([`encode`]) with AMQP
//! properties from an [`Envelope`] (a unique `message_id`, the order as `correlation_id`,
//! [`SCHEMA_HEADER`], [`TRACEPARENT_HEADER`]), and is read back with [`decode`], which
//! refuses another schema version before it looks at the body:
//!
//! ```
//! use provisioner_contract::{Envelope, HostRequest, ProvisionRequest, ServerSpec, decode, encode};
//!
//! let order_id = uuid::Uuid::now_v7();
//! let request = HostRequest::Create(ProvisionRequest {
//!     order_id,
//!     vendor: "hetzner".into(),
//!     spec: ServerSpec {
//!         name: "web-1".into(),
//!         region: "fsn1".into(),
//!         size: "cx22".into(),
//!         image: "ubuntu-24.04".into(),
//!         ssh_keys: vec![],
//!         user_data: None,
//!         labels: Default::default(),
//!     },
//!     ordered_at: Some(chrono::Utc::now()),
//! });
//! let envelope = Envelope::for_order(order_id, None);
//! let (properties, body) = (envelope.properties(), encode(&request));
//!
//! // What a host does with a delivery: the envelope and the request, or why not.
//! let (received, decoded): (Envelope, HostRequest) = decode(&properties, &body)?;
//! assert_eq!(decoded, request);
//! assert_eq!(received.correlation_id, Some(order_id));
//! # Ok::<(), provisioner_contract::DecodeError>(())
//! ```
//!
//! Publishing goes through [`Publisher`], which waits for the broker's confirm of each
//! message and publishes `mandatory`, so an unroutable message is an error, never a silent
//! loss.
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
//! - [`reply`]: the reply code of a broker's refusal (`403`, `404`, ...).
//! - [`netaddr`]: which IP addresses are public (the IANA special-purpose registries), for
//!   webhook receivers and plugins' granted hosts alike.

pub mod amqp;
pub mod envelope;
pub mod messages;
pub mod netaddr;
pub mod reply;
pub mod topology;

pub use amqp::{PublishError, Publisher};
pub use envelope::{
    DecodeError, Envelope, LEASE_FREE_HEADER, SCHEMA_HEADER, SCHEMA_VERSION, TRACEPARENT_HEADER,
    decode, encode,
};
pub use messages::{
    CancelRequest, DeleteRequest, FIRST_CREATE_BOUND, Fault, HostMessage, HostRequest,
    LabelledServer, Listing, OrderUpdate, OrderUpdateBatch, OrphanDeleteRequest, OrphanDeleted,
    ProvisionRequest, ServerInfo, ServerSpec, ServerStatus, SweepRequest, UpdateKind,
    ValidateReply, ValidateRequest, VendorAnnouncement, VendorCatalogue, VendorInventory,
    VendorWithdrawal,
};
pub use topology::{LEASE_QUEUE_EXPIRES_MS, LEASE_SHARDS, Topology, VALIDATE_TTL_MS};
