//! The JSON messages that travel between the programs.
//!
//! Field names are snake_case JSON; enums are tagged with `type` or `status` so a reader of
//! the raw message in the RabbitMQ UI understands it without this code.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What the user asked for, as order-api validated it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerSpec {
    /// The server's name at the vendor.
    pub name: String,
    /// The vendor's region or location code.
    pub region: String,
    /// The vendor's server type.
    pub size: String,
    /// The vendor's image name.
    pub image: String,
    /// OpenSSH public keys (`<type> <base64> [comment]`), one per entry; each plugin gets
    /// them to the server (its vendor's key store or cloud-init).
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    /// Cloud-init user data.
    #[serde(default)]
    pub user_data: Option<String>,
    /// Labels the user wants on the server.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// order-api -> host: make this server (inside [`HostRequest::Create`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionRequest {
    /// The order; also the idempotency key the plugin carries to the vendor.
    pub order_id: Uuid,
    /// Which vendor's plugin serves it.
    pub vendor: String,
    /// The server to make.
    pub spec: ServerSpec,
    /// When the order was accepted. The order's first create may run without the create
    /// lease until [`FIRST_CREATE_BOUND`] after it; every other copy of a create of the order
    /// starts only after that (see [`ProvisionRequest::first_create_ends`]). Absent from an
    /// older order-api's requests: every copy of those takes the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordered_at: Option<DateTime<Utc>>,
}

/// How long after its order was accepted a lease-free first create may run at the longest:
/// the host cuts such a create off then, and every other copy of the order's create waits
/// for that moment (plus the host's clock-skew allowance) before it starts. Long enough for
/// a vendor's create call (one or two API requests), short enough that a copy redelivered
/// after a host's death does not wait long. Part of the contract: order-api and every host
/// must agree on it.
pub const FIRST_CREATE_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

impl ProvisionRequest {
    /// The moment by which the order's lease-free first create has ended, cut off if need
    /// be: [`FIRST_CREATE_BOUND`] after [`ProvisionRequest::ordered_at`] (none without it).
    pub fn first_create_ends(&self) -> Option<DateTime<Utc>> {
        let bound = chrono::Duration::from_std(FIRST_CREATE_BOUND).ok()?;
        self.ordered_at.map(|at| at + bound)
    }
}

/// order-api -> host: delete the server an order made. Routing key `request.<vendor>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteRequest {
    /// The order whose server goes.
    pub order_id: Uuid,
    /// Which vendor's plugin serves it.
    pub vendor: String,
    /// The server as the order last recorded it.
    pub server: ServerInfo,
}

/// order-api -> host: cancel an order that may not have its server yet. The host finds the
/// server the order's create made (by its idempotency key), deletes it if there is one, and
/// answers [`UpdateKind::Cancelled`] (or [`UpdateKind::CancelFailed`]). A server a late create
/// makes after that is deleted by order-api with a [`DeleteRequest`] when its news arrives.
/// order-api sends it for a failed order too, which recorded no server but whose attempts
/// may have made one without hearing of it (a create's answer lost): the same lookup and
/// delete, its answers recorded in the failed order's event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The order to cancel; also the idempotency key its server carries.
    pub order_id: Uuid,
    /// Which vendor's plugin serves it.
    pub vendor: String,
    /// Keep a server found *running* instead of deleting it, and answer
    /// [`UpdateKind::Adopted`] with it (a server found in any other state is deleted as
    /// usual). order-api sets it on the clean-up a placement move waits for: a server the
    /// failed candidate made after all is adopted and the move called off. Absent (false)
    /// otherwise; a host older than the field ignores it and deletes, which is safe: the
    /// move then goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_running: bool,
}

/// order-api -> host, request and reply (`validate.<vendor>` on the requests exchange; the
/// reply goes to the results exchange under the request's `reply_to`, a `reply.<id>` key of
/// the asking order-api's replies queue): would the vendor's plugin accept this server? The plugin's
/// `validate` runs without the network, so the answer comes in a millisecond or two; order-api
/// asks before it accepts an order, so a size the vendor does not have is a 422 at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateRequest {
    /// The vendor whose plugin judges it.
    pub vendor: String,
    /// The server as ordered.
    pub spec: ServerSpec,
}

/// host -> order-api: the plugin's verdict on a [`ValidateRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum ValidateReply {
    /// The plugin accepts it.
    Valid,
    /// The plugin refuses it: why, in the plugin's words.
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// The plugin could not judge (it failed, trapped, or is not loaded here).
    Unchecked {
        /// Why.
        reason: String,
    },
}

/// order-api -> host: list the servers at this vendor that carry our idempotency key
/// (the orphan sweep). The host answers with [`HostMessage::Inventory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepRequest {
    /// Names this sweep in the answer.
    pub sweep_id: Uuid,
    /// Which vendor to list.
    pub vendor: String,
}

/// order-api -> host: delete a server no order owns (found by a sweep). The host answers
/// with [`HostMessage::OrphanDeleted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanDeleteRequest {
    /// Which vendor's plugin serves it.
    pub vendor: String,
    /// The idempotency key the server carries.
    pub idempotency_key: String,
    /// The server as the sweep found it.
    pub server: ServerInfo,
}

/// Everything that arrives on a vendor's request queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostRequest {
    /// Make a server.
    Create(ProvisionRequest),
    /// Delete an order's server.
    Delete(DeleteRequest),
    /// Cancel an order: delete its server if its create made one.
    Cancel(CancelRequest),
    /// List the vendor's servers carrying our key.
    Sweep(SweepRequest),
    /// Delete a server no order owns.
    DeleteOrphan(OrphanDeleteRequest),
}

impl HostRequest {
    /// The order the request is about; none for the orphan sweep's requests.
    pub fn order_id(&self) -> Option<Uuid> {
        match self {
            HostRequest::Create(request) => Some(request.order_id),
            HostRequest::Delete(request) => Some(request.order_id),
            HostRequest::Cancel(request) => Some(request.order_id),
            HostRequest::Sweep(_) | HostRequest::DeleteOrphan(_) => None,
        }
    }

    /// The vendor that serves it.
    pub fn vendor(&self) -> &str {
        match self {
            HostRequest::Create(request) => &request.vendor,
            HostRequest::Delete(request) => &request.vendor,
            HostRequest::Cancel(request) => &request.vendor,
            HostRequest::Sweep(request) => &request.vendor,
            HostRequest::DeleteOrphan(request) => &request.vendor,
        }
    }
}

/// Vendor-neutral server status, as the plugin mapped it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatus {
    /// Accepted by the vendor, not yet running.
    Provisioning,
    /// Running.
    Running,
    /// Powered off.
    Stopped,
    /// Being deleted.
    Deleting,
    /// Gone.
    Deleted,
    /// Failed at the vendor.
    Error,
}

/// A server as the vendor reported it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The vendor's id for the server.
    pub vendor_id: String,
    /// Its name at the vendor.
    pub name: String,
    /// Its status.
    pub status: ServerStatus,
    /// Public IPv4 address, once assigned.
    pub ipv4: Option<String>,
    /// Public IPv6 address or network, once assigned.
    pub ipv6: Option<String>,
}

/// Why an order failed, in a form a client can act on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// A stable machine-readable code, e.g. `invalid_request`, `unauthorized`,
    /// `provision_timeout`, `plugin_error`, `no_capacity`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
    /// Whether ordering the same server again may succeed.
    pub retryable: bool,
}

/// What happened to an order at the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum UpdateKind {
    /// The vendor accepted the create; the server exists and is booting.
    Provisioning {
        /// The server as the vendor reported it at create time.
        server: ServerInfo,
    },
    /// The server runs: the order is done.
    Active {
        /// The running server.
        server: ServerInfo,
    },
    /// The order cannot be completed.
    Failed {
        /// Why.
        fault: Fault,
        /// The server, if one was made before the failure.
        #[serde(default)]
        server: Option<ServerInfo>,
    },
    /// The order's server is gone at the vendor.
    Deleted {
        /// The server, with status `deleted`.
        server: ServerInfo,
    },
    /// Deleting the order's server failed; it still exists.
    DeleteFailed {
        /// Why.
        fault: Fault,
    },
    /// The order is cancelled: its server, if its create made one, is gone.
    Cancelled {
        /// The server that was deleted, with status `deleted`; none when no server was made.
        #[serde(default)]
        server: Option<ServerInfo>,
    },
    /// Cancelling failed: the vendor could not be asked whether the order has a server, or
    /// its server could not be deleted.
    CancelFailed {
        /// Why.
        fault: Fault,
        /// The server that is still there, when one was found.
        #[serde(default)]
        server: Option<ServerInfo>,
    },
    /// The clean-up a placement move waits for (a [`CancelRequest`] with `adopt_running`)
    /// found the order's server running and kept it, instead of deleting it: order-api adopts
    /// it (the order becomes `active` with it and the move is called off), or deletes it when
    /// the move went on meanwhile. Only ever sent in answer to such a request, which only an
    /// order-api that knows this answer sends; but with several order-apis sharing the
    /// results queue, an older one may take it (and dead-letters it): upgrade them all first.
    Adopted {
        /// The running server that was kept.
        server: ServerInfo,
    },
    /// The create failed with a passing fault; the request will be tried again after
    /// `retry_in_ms` (through a delay queue). The order stays `queued`.
    Retrying {
        /// The fault of the attempt that failed.
        fault: Fault,
        /// When the next attempt starts, from now.
        retry_in_ms: u64,
    },
}

/// host -> order-api: a progress event (`event.<vendor>`) or a result (`result.<vendor>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderUpdate {
    /// The order this is about.
    pub order_id: Uuid,
    /// The vendor serving it.
    pub vendor: String,
    /// When the host observed it.
    pub at: DateTime<Utc>,
    /// Which delivery of the request this came from (1 = first; more after a host restart).
    pub attempt: u32,
    /// What happened.
    #[serde(flatten)]
    pub kind: UpdateKind,
}

impl OrderUpdate {
    /// Whether this update ends the order.
    pub fn is_final(&self) -> bool {
        !matches!(
            self.kind,
            UpdateKind::Provisioning { .. } | UpdateKind::Retrying { .. }
        )
    }

    /// The routing key this update is published with.
    pub fn routing_key(&self) -> String {
        if self.is_final() {
            crate::Topology::result_key(&self.vendor)
        } else {
            crate::Topology::event_key(&self.vendor)
        }
    }
}

/// The updates of a [`HostMessage::OrderUpdates`], in the order the host finished them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderUpdateBatch {
    /// The orders' updates (one vendor's results).
    pub updates: Vec<OrderUpdate>,
}

/// host -> order-api: "I serve this vendor" (`announce.<vendor>`), sent when a host loads a
/// plugin and periodically after. order-api accepts orders only for announced vendors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorAnnouncement {
    /// The vendor id orders use.
    pub vendor: String,
    /// A name for people.
    pub display_name: String,
    /// The plugin's version.
    pub plugin_version: String,
    /// Which host process sent it.
    pub host_id: String,
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// What the plugin accepts without asking its vendor (its `catalogue` export, since
    /// WIT 0.5.0): the form's choices. Absent from a plugin of an older WIT version and from
    /// an older host; an older order-api ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalogue: Option<VendorCatalogue>,
}

/// The regions, sizes and images a vendor's plugin accepts without asking the vendor: the
/// same lists its `validate` checks against. `None` for a field: the plugin accepts any
/// well-formed value there and the vendor decides at create time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VendorCatalogue {
    /// Region or location codes, e.g. `fsn1`.
    pub regions: Option<Vec<String>>,
    /// Server types or flavours, e.g. `cx22`.
    pub sizes: Option<Vec<String>>,
    /// Image names, e.g. `ubuntu-24.04`.
    pub images: Option<Vec<String>>,
}

impl VendorCatalogue {
    /// The most entries one list carries (a host truncates longer lists and logs it).
    pub const MAX_ENTRIES: usize = 1_000;
    /// The longest entry, in bytes (a host drops longer ones and logs it).
    pub const MAX_ENTRY_BYTES: usize = 128;
}

/// host -> order-api: "I no longer serve this vendor" (`announce.<vendor>`), sent when a
/// plugin is removed from a host, and (with [`VendorWithdrawal::unavailable`]) when the host
/// has the vendor's plugin but cannot serve it, on every change and with every round of
/// announcements after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorWithdrawal {
    /// The vendor id.
    pub vendor: String,
    /// Which host process stopped serving it.
    pub host_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Why the host does not serve a vendor whose plugin it has (a secret is missing, the
    /// plugin does not load), for operators: order-api lists it to admins only. Absent when
    /// the plugin was removed. An order-api older than this field ignores it and reads a
    /// plain withdrawal, which is right as well: the vendor's orders are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// A server a sweep found at the vendor, with the idempotency key it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledServer {
    /// The key (for orders, the order id).
    pub idempotency_key: String,
    /// The server.
    pub server: ServerInfo,
}

/// What listing a vendor's servers gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Listing {
    /// Every server carrying our key.
    Listed {
        /// The servers.
        servers: Vec<LabelledServer>,
    },
    /// The plugin cannot list (it implements an older WIT version without `list-servers`).
    Unsupported {
        /// Why, for people.
        reason: String,
    },
    /// Listing failed.
    Failed {
        /// Why.
        fault: Fault,
    },
}

/// host -> order-api: the answer to a [`SweepRequest`] (`result.<vendor>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorInventory {
    /// The sweep it answers.
    pub sweep_id: Uuid,
    /// The vendor listed.
    pub vendor: String,
    /// Which host listed it.
    pub host_id: String,
    /// When the listing finished.
    pub at: DateTime<Utc>,
    /// What it found.
    #[serde(flatten)]
    pub listing: Listing,
}

/// host -> order-api: how deleting an orphan went (`result.<vendor>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanDeleted {
    /// The vendor.
    pub vendor: String,
    /// The server's vendor id.
    pub vendor_id: String,
    /// When the host finished.
    pub at: DateTime<Utc>,
    /// `None` when the server is gone; the fault when it is still there.
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// Everything that arrives on `provision.results`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HostMessage {
    /// An order's progress or result.
    OrderUpdate(OrderUpdate),
    /// Several orders' results at once (`result.<vendor>`, all of one vendor): a host
    /// publishes the results that are ready together as one message, one persistent message
    /// on the results queue instead of one per order. A host's single result still goes as
    /// an [`HostMessage::OrderUpdate`]. An order-api older than this message dead-letters
    /// it: hosts upgraded before the order-apis (the usual order) run with
    /// `RESULT_BATCH_MAX=1` until every order-api sharing the results queue is upgraded.
    OrderUpdates(OrderUpdateBatch),
    /// A host serves a vendor.
    VendorAnnounced(VendorAnnouncement),
    /// A host stopped serving a vendor.
    VendorWithdrawn(VendorWithdrawal),
    /// The answer to an orphan sweep's listing.
    Inventory(VendorInventory),
    /// The outcome of deleting an orphan.
    OrphanDeleted(OrphanDeleted),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An update reads naturally as JSON and survives the round trip.
    #[test]
    fn order_update_round_trips_as_flat_json() {
        let update = HostMessage::OrderUpdate(OrderUpdate {
            order_id: Uuid::nil(),
            vendor: "hetzner".into(),
            at: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            attempt: 1,
            kind: UpdateKind::Active {
                server: ServerInfo {
                    vendor_id: "42".into(),
                    name: "web-1".into(),
                    status: ServerStatus::Running,
                    ipv4: Some("203.0.113.1".into()),
                    ipv6: None,
                },
            },
        });
        let json = serde_json::to_value(&update).unwrap();
        assert_eq!(json["type"], "order_update");
        assert_eq!(json["status"], "active");
        assert_eq!(json["server"]["vendor_id"], "42");
        let back: HostMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, update);
    }

    /// A batch of results is one JSON object whose updates read as single updates do.
    #[test]
    fn a_batch_of_updates_round_trips_as_a_list_of_flat_updates() {
        let update = |n: u128, kind: UpdateKind| OrderUpdate {
            order_id: Uuid::from_u128(n),
            vendor: "hetzner".into(),
            at: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            attempt: 1,
            kind,
        };
        let fault = Fault {
            code: "no_capacity".into(),
            message: "full".into(),
            retryable: true,
        };
        let batch = HostMessage::OrderUpdates(OrderUpdateBatch {
            updates: vec![
                update(1, UpdateKind::Cancelled { server: None }),
                update(
                    2,
                    UpdateKind::Failed {
                        fault,
                        server: None,
                    },
                ),
            ],
        });
        let json = serde_json::to_value(&batch).unwrap();
        assert_eq!(json["type"], "order_updates");
        assert_eq!(json["updates"][0]["status"], "cancelled");
        assert_eq!(json["updates"][1]["fault"]["code"], "no_capacity");
        let back: HostMessage = serde_json::from_value(json).unwrap();
        assert_eq!(back, batch);
    }

    /// A withdrawal saying why the vendor is unavailable still reads as a plain withdrawal
    /// to an order-api built before the field (no unknown-field refusal), and one from a
    /// host built before it reads as a removal.
    #[test]
    fn a_withdrawal_with_a_reason_reads_as_a_withdrawal_to_older_readers() {
        /// `HostMessage` as it was before `unavailable`.
        #[derive(Debug, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum OlderHostMessage {
            VendorWithdrawn { vendor: String, host_id: String },
        }
        let withdrawal = HostMessage::VendorWithdrawn(VendorWithdrawal {
            vendor: "acme".into(),
            host_id: "host-1".into(),
            at: Utc::now(),
            unavailable: Some("secret 'token' is missing".into()),
        });
        let json = serde_json::to_value(&withdrawal).unwrap();
        assert_eq!(json["unavailable"], "secret 'token' is missing");
        let older: OlderHostMessage = serde_json::from_value(json).unwrap();
        let OlderHostMessage::VendorWithdrawn { vendor, host_id } = older;
        assert_eq!((vendor.as_str(), host_id.as_str()), ("acme", "host-1"));

        let from_older_host = serde_json::json!({"type": "vendor_withdrawn", "vendor": "acme",
            "host_id": "host-1", "at": "2026-01-01T00:00:00Z"});
        let HostMessage::VendorWithdrawn(plain) = serde_json::from_value(from_older_host).unwrap()
        else {
            panic!("not a withdrawal");
        };
        assert_eq!(plain.unavailable, None);
        let plain_json = serde_json::to_value(HostMessage::VendorWithdrawn(plain)).unwrap();
        assert!(plain_json.get("unavailable").is_none(), "{plain_json}");
    }

    /// Events and results are routed apart.
    #[test]
    fn a_cancel_adopts_only_when_asked_and_reads_the_same_to_older_hosts() {
        let plain = HostRequest::Cancel(CancelRequest {
            order_id: Uuid::nil(),
            vendor: "hetzner".into(),
            adopt_running: false,
        });
        let json = serde_json::to_value(&plain).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "cancel", "order_id": Uuid::nil(), "vendor": "hetzner"}),
            "a plain cancel is sent as before the field"
        );
        assert_eq!(serde_json::from_value::<HostRequest>(json).unwrap(), plain);
        let adopting = HostRequest::Cancel(CancelRequest {
            adopt_running: true,
            ..match plain {
                HostRequest::Cancel(cancel) => cancel,
                _ => unreachable!(),
            }
        });
        let json = serde_json::to_value(&adopting).unwrap();
        assert_eq!(json["adopt_running"], true);
        assert_eq!(
            serde_json::from_value::<HostRequest>(json).unwrap(),
            adopting
        );
    }

    #[test]
    fn final_updates_use_the_result_key() {
        let mut update = OrderUpdate {
            order_id: Uuid::nil(),
            vendor: "hetzner".into(),
            at: Utc::now(),
            attempt: 1,
            kind: UpdateKind::Failed {
                fault: Fault {
                    code: "x".into(),
                    message: "y".into(),
                    retryable: false,
                },
                server: None,
            },
        };
        assert_eq!(update.routing_key(), "result.hetzner");
        update.kind = UpdateKind::Provisioning {
            server: ServerInfo {
                vendor_id: "1".into(),
                name: "n".into(),
                status: ServerStatus::Provisioning,
                ipv4: None,
                ipv6: None,
            },
        };
        assert_eq!(update.routing_key(), "event.hetzner");
    }
}
