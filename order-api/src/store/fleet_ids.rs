//! How a fleet's orders are named: a fleet's id, its members' ids (each names its fleet, its
//! server's number and its placement candidate, so no read is needed to find a member's
//! fleet), the order their locks are taken in, and the placement candidates and per-server
//! view the API shows. Plain values, under the fleet bookkeeping (`fleets.rs`): the
//! order lock, the order reads and the event feed use them too.

use provisioner_contract::{Fault, ServerInfo};
use serde::Serialize;
use uuid::Uuid;

use crate::lifecycle::OrderStatus;

/// The most servers one order may ask for (a member's number must fit its key's last byte).
pub const MAX_SERVERS_PER_ORDER: u32 = 100;

/// The most candidates a placement may list.
pub const MAX_PLACEMENT_CANDIDATES: usize = 8;

/// One place an order may be served: a vendor and what to ask it for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Candidate {
    /// A vendor some host serves.
    #[schema(example = "hetzner")]
    pub vendor: String,
    /// The vendor's region or location code.
    #[schema(example = "nbg1")]
    pub region: String,
    /// The vendor's server type.
    #[schema(example = "cx22")]
    pub size: String,
    /// The vendor's image name.
    #[schema(example = "ubuntu-24.04")]
    pub image: String,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} ({}, {})",
            self.vendor, self.region, self.size, self.image
        )
    }
}

/// A new fleet's id: a UUIDv7 with its last two bytes 0, the bytes its members put their
/// candidate and number in.
pub fn new_fleet_id() -> Uuid {
    let mut bytes = *Uuid::now_v7().as_bytes();
    bytes[14] = 0;
    bytes[15] = 0;
    Uuid::from_bytes(bytes)
}

/// The id (and idempotency key) of server `number` (1-based) of `fleet` at placement
/// candidate `candidate` (0-based).
pub fn member_id(fleet: Uuid, number: u32, candidate: usize) -> Uuid {
    debug_assert!((1..=MAX_SERVERS_PER_ORDER).contains(&number));
    debug_assert!(candidate < MAX_PLACEMENT_CANDIDATES);
    let mut bytes = *fleet.as_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[14] = candidate as u8;
    bytes[15] = number as u8;
    Uuid::from_bytes(bytes)
}

/// The fleet `id` is a member of, and its number; `None` for any other order.
pub fn fleet_of(id: Uuid) -> Option<(Uuid, u32)> {
    let mut bytes = *id.as_bytes();
    if id.get_version_num() != 8 || bytes[15] == 0 {
        return None;
    }
    let number = u32::from(bytes[15]);
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    bytes[14] = 0;
    bytes[15] = 0;
    Some((Uuid::from_bytes(bytes), number))
}

/// The placement candidate (0-based) a member's id names.
pub(super) fn candidate_of(id: Uuid) -> usize {
    usize::from(id.as_bytes()[14])
}

/// A member's server name: the order's name and its number.
pub fn member_name(name: &str, number: u32) -> String {
    format!("{name}-{number}")
}

/// Where a transaction takes `id`'s lock among the orders it changes: with its fleet's group
/// (a fleet sorts before its members: version 7 before 8), groups in id order.
pub fn lock_rank(id: Uuid) -> (Uuid, Uuid) {
    (fleet_of(id).map_or(id, |(fleet, _)| fleet), id)
}

/// One server of an order for several, as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FleetServer {
    /// Its number in the order, from 1.
    pub number: u32,
    /// Its idempotency key at the vendor (derived from the order's id).
    pub key: Uuid,
    /// Its name at the vendor: the order's name, `-`, its number.
    pub name: String,
    /// Which of the order's placement candidates serves it (1 for the first; always 1
    /// without a placement).
    pub candidate: usize,
    /// The vendor serving it.
    pub vendor: String,
    /// The region serving it.
    pub region: String,
    /// Where it is (an order's statuses, for this server alone).
    pub status: OrderStatus,
    /// The server, once the vendor made one.
    pub server: Option<ServerInfo>,
    /// Why it failed, when it did.
    pub fault: Option<Fault>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_key_names_its_fleet_and_number() {
        let fleet = new_fleet_id();
        assert_eq!(fleet_of(fleet), None);
        for number in [1, 2, 99, MAX_SERVERS_PER_ORDER] {
            for candidate in [0, 1, MAX_PLACEMENT_CANDIDATES - 1] {
                let member = member_id(fleet, number, candidate);
                assert_ne!(member, fleet);
                assert_eq!(fleet_of(member), Some((fleet, number)));
                assert_eq!(candidate_of(member), candidate);
                assert!(lock_rank(fleet) < lock_rank(member));
            }
        }
        // An ordinary order's id is no member's.
        assert_eq!(fleet_of(Uuid::now_v7()), None);
    }
}
