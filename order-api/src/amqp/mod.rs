//! The AMQP side of order-api: one broker session at a time ([`session`]) and what runs in
//! it. Everything here talks to RabbitMQ; what it reads and writes is in [`crate::store`].
//!
//! - [`session`]: the supervisor that (re)connects, declares the topology and runs the rest.
//! - [`relay`]: publishes the outbox's requests with confirms, retries what was refused.
//! - [`results`]: consumes `provision.results`: order updates, vendor announcements and
//!   withdrawals, inventories, orphan outcomes.
//! - [`orphan_sweep`]: asks hosts for the servers carrying our key (the sweep requests) and
//!   sends the deletes of orphans (the records are in `store::orphans`, the endpoints in
//!   `http::orphans`).
//! - [`plugin_check`]: asks a host to check an order with the vendor's plugin before it is
//!   accepted, over a reply queue of the session's own.
//! - [`dead_letter_recorder`]: records what reaches `provision.dead`, with why.

pub mod dead_letter_recorder;
pub mod orphan_sweep;
pub mod plugin_check;
pub mod relay;
pub mod results;
pub mod session;
