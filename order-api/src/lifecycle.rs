//! The order state machine: which status may follow which, and what an update from the
//! host does to an order.
//!
//! ```text
//! pending -> queued -> provisioning -> active -> deleting -> deleted
//!    \          \            \-------> failed       \
//!     \          \--> (provisioning | active | failed)  \--> active (delete failed)
//!      \--> (provisioning | active | failed)
//! pending | queued | provisioning -> cancelling -> cancelled
//!                                     (a failed cancel attempt stays cancelling; the
//!                                      host's retries and the watchdog send it again)
//! ```
//! A host's event can overtake the relay marking the order `queued` (the host is fast), so
//! `provisioning`, `active` and `failed` are reachable from every earlier status. Which
//! statuses an update may move an order from depends on the update, not only on its target:
//! a late "active" from a redelivered create must not pull a `deleting` order back, while a
//! "delete failed" does return it to `active`. An update that does not apply is ignored, which
//! makes a redelivered or stale message harmless: it finds the order already past it.

use std::fmt;
use std::str::FromStr;

use provisioner_contract::UpdateKind;
use serde::{Deserialize, Serialize};

/// Where an order is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Recorded; its creation request waits in the outbox.
    Pending,
    /// The creation request is on the vendor's queue (broker confirmed).
    Queued,
    /// The vendor accepted the create; the server is booting.
    Provisioning,
    /// The server runs.
    Active,
    /// An order for several servers settled with some of them running and the others
    /// failed (after their retries); see [`crate::store::fleets`].
    PartiallyActive,
    /// The order cannot be completed; see its fault.
    Failed,
    /// Its server is being deleted.
    Deleting,
    /// Its server is gone.
    Deleted,
    /// A user cancelled it; the server its create made, if any, is being deleted.
    Cancelling,
    /// Cancelled: no server of it remains.
    Cancelled,
}

impl OrderStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [OrderStatus; 10] = [
        OrderStatus::Pending,
        OrderStatus::Queued,
        OrderStatus::Provisioning,
        OrderStatus::Active,
        OrderStatus::PartiallyActive,
        OrderStatus::Failed,
        OrderStatus::Deleting,
        OrderStatus::Deleted,
        OrderStatus::Cancelling,
        OrderStatus::Cancelled,
    ];

    /// The name used in JSON, the database and query strings.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Queued => "queued",
            OrderStatus::Provisioning => "provisioning",
            OrderStatus::Active => "active",
            OrderStatus::PartiallyActive => "partially_active",
            OrderStatus::Failed => "failed",
            OrderStatus::Deleting => "deleting",
            OrderStatus::Deleted => "deleted",
            OrderStatus::Cancelling => "cancelling",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    /// Whether nothing is in progress for an order in this status (an event stream ends;
    /// the watchdog leaves it alone).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            OrderStatus::Active
                | OrderStatus::PartiallyActive
                | OrderStatus::Failed
                | OrderStatus::Deleted
                | OrderStatus::Cancelled
        )
    }

    /// Whether a user may still cancel an order in this status.
    pub fn is_cancellable(self) -> bool {
        matches!(
            self,
            OrderStatus::Pending | OrderStatus::Queued | OrderStatus::Provisioning
        )
    }
}

/// A compare-and-set: the status an order moves to, and the statuses it may move from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The new status.
    pub target: OrderStatus,
    /// The statuses the order must be in for the move to apply.
    pub sources: &'static [OrderStatus],
}

impl Transition {
    /// Whether an order in `status` takes this transition.
    pub fn applies_to(self, status: OrderStatus) -> bool {
        self.sources.contains(&status)
    }
}

use OrderStatus::{
    Active, Cancelled, Cancelling, Deleted, Deleting, Failed, Pending, Provisioning, Queued,
};

/// The relay published the creation request.
pub const PUBLISHED: Transition = Transition {
    target: Queued,
    sources: &[Pending],
};

/// A user asked to delete the server.
pub const DELETE_REQUESTED: Transition = Transition {
    target: Deleting,
    sources: &[Active],
};

/// A user cancelled an order still on its way.
pub const CANCEL_REQUESTED: Transition = Transition {
    target: Cancelling,
    sources: &[Pending, Queued, Provisioning],
};

/// What an update from the host does.
pub fn transition(update: &UpdateKind) -> Transition {
    const BEFORE_RUNNING: &[OrderStatus] = &[Pending, Queued, Provisioning];
    match update {
        UpdateKind::Provisioning { .. } => Transition {
            target: Provisioning,
            sources: &[Pending, Queued],
        },
        UpdateKind::Active { .. } => Transition {
            target: Active,
            sources: BEFORE_RUNNING,
        },
        UpdateKind::Failed { .. } => Transition {
            target: Failed,
            sources: BEFORE_RUNNING,
        },
        UpdateKind::Deleted { .. } => Transition {
            target: Deleted,
            sources: &[Deleting],
        },
        UpdateKind::DeleteFailed { .. } => Transition {
            target: Active,
            sources: &[Deleting],
        },
        UpdateKind::Cancelled { .. } => Transition {
            target: Cancelled,
            sources: &[Cancelling],
        },
        // Never by itself: a failed server of a placement whose move still waits is adopted
        // by the store's fleet bookkeeping (`store::fleets::adopt`), which checks that first;
        // any other server kept this way is deleted like late news.
        UpdateKind::Adopted { .. } => Transition {
            target: Active,
            sources: &[],
        },
        // A cancel is never given up: the order stays `cancelling` (the fault and the event
        // say why), and the host's retry or the watchdog sends the cancel again.
        UpdateKind::CancelFailed { .. } => Transition {
            target: Cancelling,
            sources: &[Cancelling],
        },
        // The order stays (or becomes) `queued`: its request waits for the next attempt.
        // From `provisioning` too: the vendor gave up placing a booting server (no capacity).
        UpdateKind::Retrying { .. } => Transition {
            target: Queued,
            sources: BEFORE_RUNNING,
        },
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status '{text}' (one of: {})", names.join(", "))
            })
    }
}

/// A line for the order's event log describing an update.
pub fn describe(update: &UpdateKind) -> String {
    match update {
        UpdateKind::Provisioning { server } => format!(
            "vendor accepted the server (vendor id {}); waiting for it to run",
            server.vendor_id
        ),
        UpdateKind::Active { server } => format!(
            "server {} is running{}",
            server.vendor_id,
            server
                .ipv4
                .as_ref()
                .map(|ip| format!(" at {ip}"))
                .unwrap_or_default()
        ),
        UpdateKind::Adopted { server } => format!(
            "server {} was found running at this candidate and kept",
            server.vendor_id
        ),
        UpdateKind::Failed { fault, .. } => format!("failed ({}): {}", fault.code, fault.message),
        UpdateKind::Deleted { server } => format!("server {} deleted", server.vendor_id),
        UpdateKind::DeleteFailed { fault } => format!(
            "deleting the server failed ({}): {}; it still runs",
            fault.code, fault.message
        ),
        UpdateKind::Cancelled {
            server: Some(server),
        } => {
            format!("cancelled; server {} deleted", server.vendor_id)
        }
        UpdateKind::Cancelled { server: None } => "cancelled; the vendor had made no server".into(),
        UpdateKind::CancelFailed { fault, server } => format!(
            "cancelling failed ({}): {}{}; the cancel will be sent again",
            fault.code,
            fault.message,
            server
                .as_ref()
                .map(|s| format!("; server {} still exists", s.vendor_id))
                .unwrap_or_default()
        ),
        UpdateKind::Retrying { fault, retry_in_ms } => format!(
            "attempt failed ({}): {}; retrying in {retry_in_ms} ms",
            fault.code, fault.message
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provisioner_contract::{Fault, ServerInfo, ServerStatus};

    fn server() -> ServerInfo {
        ServerInfo {
            vendor_id: "1".into(),
            name: "n".into(),
            status: ServerStatus::Running,
            ipv4: None,
            ipv6: None,
        }
    }

    fn fault() -> Fault {
        Fault {
            code: "x".into(),
            message: "y".into(),
            retryable: false,
        }
    }

    fn provisioning() -> UpdateKind {
        UpdateKind::Provisioning { server: server() }
    }
    fn active() -> UpdateKind {
        UpdateKind::Active { server: server() }
    }
    fn failed() -> UpdateKind {
        UpdateKind::Failed {
            fault: fault(),
            server: None,
        }
    }
    fn deleted() -> UpdateKind {
        UpdateKind::Deleted { server: server() }
    }
    fn delete_failed() -> UpdateKind {
        UpdateKind::DeleteFailed { fault: fault() }
    }

    /// The happy path is allowed step by step.
    #[test]
    fn allows_the_happy_path() {
        assert!(PUBLISHED.applies_to(Pending));
        assert!(transition(&provisioning()).applies_to(Queued));
        assert!(transition(&active()).applies_to(Provisioning));
        assert!(DELETE_REQUESTED.applies_to(Active));
        assert!(transition(&deleted()).applies_to(Deleting));
    }

    /// A host event may overtake the relay's `queued`.
    #[test]
    fn allows_host_events_to_overtake_the_relay() {
        assert!(transition(&provisioning()).applies_to(Pending));
        assert!(transition(&active()).applies_to(Pending));
        assert!(transition(&failed()).applies_to(Queued));
    }

    /// Settled orders never move by a create's updates, and nothing moves backwards.
    #[test]
    fn refuses_illegal_transitions() {
        for update in [provisioning(), active(), failed()] {
            for status in [Active, Failed, Deleting, Deleted] {
                assert!(
                    !transition(&update).applies_to(status),
                    "{update:?} on {status}"
                );
            }
        }
        assert!(!PUBLISHED.applies_to(Provisioning));
        assert!(!DELETE_REQUESTED.applies_to(Provisioning));
        assert!(!DELETE_REQUESTED.applies_to(Failed));
        assert!(!transition(&deleted()).applies_to(Active));
        assert!(!transition(&delete_failed()).applies_to(Deleted));
    }

    /// Cancel: only before the order settled; the host's answer settles it, once.
    #[test]
    fn cancels_only_orders_on_their_way() {
        for status in [Pending, Queued, Provisioning] {
            assert!(CANCEL_REQUESTED.applies_to(status) && status.is_cancellable());
        }
        for status in [Active, Failed, Deleting, Deleted, Cancelling, Cancelled] {
            assert!(!CANCEL_REQUESTED.applies_to(status) && !status.is_cancellable());
        }
        let cancelled = UpdateKind::Cancelled { server: None };
        assert!(transition(&cancelled).applies_to(Cancelling));
        assert!(!transition(&cancelled).applies_to(Cancelled));
        // A late create's news never revives a cancelled order.
        for update in [provisioning(), active(), failed()] {
            assert!(!transition(&update).applies_to(Cancelling));
            assert!(!transition(&update).applies_to(Cancelled));
        }
        assert!(Cancelled.is_settled() && !Cancelling.is_settled());
        // A failed cancel attempt keeps the order cancelling (recorded, sent again).
        let failed_attempt = UpdateKind::CancelFailed {
            fault: fault(),
            server: None,
        };
        assert_eq!(transition(&failed_attempt).target, Cancelling);
        assert!(transition(&failed_attempt).applies_to(Cancelling));
        assert!(!transition(&failed_attempt).applies_to(Cancelled));
    }

    /// A failed delete returns the order to `active`; a stale "active" does not.
    #[test]
    fn only_a_failed_delete_returns_a_deleting_order_to_active() {
        assert_eq!(transition(&delete_failed()).target, Active);
        assert!(transition(&delete_failed()).applies_to(Deleting));
        assert!(!transition(&active()).applies_to(Deleting));
    }

    /// The same update twice is a no-op the second time: a duplicate is ignored.
    #[test]
    fn duplicates_are_ignored() {
        for update in [
            provisioning(),
            active(),
            failed(),
            deleted(),
            delete_failed(),
        ] {
            let step = transition(&update);
            assert!(!step.applies_to(step.target), "{update:?} applies twice");
        }
        assert!(!PUBLISHED.applies_to(PUBLISHED.target));
        assert!(!DELETE_REQUESTED.applies_to(DELETE_REQUESTED.target));
    }

    /// Status names round-trip and unknown ones are refused with the list of valid ones.
    #[test]
    fn parses_status_names() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
        }
        let error = "done".parse::<OrderStatus>().unwrap_err();
        assert!(error.contains("pending"), "{error}");
    }
}
