//! The orphan sweep's records: which listed servers no order owns ([`ownership`]), the
//! `orphans` table that remembers them and what was done about them, and the latest sweep
//! of each vendor.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use provisioner_contract::{
    Fault, LabelledServer, Listing, OrphanDeleted, ServerInfo, ServerStatus, VendorInventory,
};
use serde::Serialize;
use sqlx::Row;
use uuid::Uuid;

use super::Store;
use super::db::{Backend, DbTime, json, optional_time, parameters, parse_json, time};
use crate::lifecycle::OrderStatus;

/// What happens to orphans a sweep finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrphanAction {
    /// Record and log them; a person decides.
    Report,
    /// Record them and have the host delete them.
    Delete,
}

/// Where an orphan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrphanState {
    /// Found and left alone (`--orphan-action report`).
    Reported,
    /// Its delete was sent to a host.
    Deleting,
    /// The host deleted it.
    Deleted,
    /// The host could not delete it (see `detail`); the next sweep tries again.
    DeleteFailed,
    /// A later sweep no longer listed it (someone else deleted it, or an order adopted it).
    Gone,
}

impl OrphanState {
    /// Every state.
    pub const ALL: [OrphanState; 5] = [
        OrphanState::Reported,
        OrphanState::Deleting,
        OrphanState::Deleted,
        OrphanState::DeleteFailed,
        OrphanState::Gone,
    ];

    /// The name used in JSON, the database and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanState::Reported => "reported",
            OrphanState::Deleting => "deleting",
            OrphanState::Deleted => "deleted",
            OrphanState::DeleteFailed => "delete_failed",
            OrphanState::Gone => "gone",
        }
    }

    fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(match text {
            "reported" => OrphanState::Reported,
            "deleting" => OrphanState::Deleting,
            "deleted" => OrphanState::Deleted,
            "delete_failed" => OrphanState::DeleteFailed,
            "gone" => OrphanState::Gone,
            other => anyhow::bail!("unknown orphan state '{other}' in the database"),
        })
    }

    /// Whether the server is (as far as we know) still at the vendor.
    fn present(self) -> bool {
        matches!(
            self,
            OrphanState::Reported | OrphanState::Deleting | OrphanState::DeleteFailed
        )
    }
}

/// A server no order owns, as recorded.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Orphan {
    /// The vendor.
    pub vendor: String,
    /// The idempotency key it carries.
    pub idempotency_key: String,
    /// The server as last listed.
    pub server: ServerInfo,
    /// Why no order owns it.
    pub reason: String,
    /// What was done about it.
    pub state: OrphanState,
    /// Why its delete failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_fault: Option<Fault>,
    /// When a sweep first listed it.
    pub first_seen_at: DateTime<Utc>,
    /// When a sweep last listed it.
    pub last_seen_at: DateTime<Utc>,
}

/// A vendor's latest sweep.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Sweep {
    /// The vendor.
    pub vendor: String,
    /// The sweep's id.
    pub sweep_id: Uuid,
    /// When it was asked for.
    pub requested_at: DateTime<Utc>,
    /// When the host answered; none while it is running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Which host listed.
    pub host_id: Option<String>,
    /// `listed`, `unsupported` or `failed`; none while running.
    pub outcome: Option<String>,
    /// Why it was unsupported or failed.
    pub detail: Option<String>,
    /// Servers carrying our key.
    pub listed: Option<u32>,
    /// Of which no order owns.
    pub orphans: Option<u32>,
}

/// The order a listed server's key names, as far as ownership goes.
#[derive(Debug, Clone)]
pub struct Owner {
    /// Its status.
    pub status: OrderStatus,
    /// Its vendor.
    pub vendor: String,
    /// The server it recorded.
    pub vendor_id: Option<String>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Whether a listed server is owned, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The order it belongs to runs it, or is still working on it.
    Owned,
    /// The vendor is removing it anyway.
    Leaving,
    /// No order owns it: why.
    Orphan(String),
}

/// Decides whether `server` (listed at `vendor` with `key`) is owned by `owner`, the order
/// its key names (none when no order has that id). An order still in progress owns
/// whatever carries its key: its create or delete will settle it.
pub fn ownership(vendor: &str, key: &str, server: &ServerInfo, owner: Option<&Owner>) -> Ownership {
    if matches!(
        server.status,
        ServerStatus::Deleting | ServerStatus::Deleted
    ) {
        return Ownership::Leaving;
    }
    let Some(owner) = owner else {
        return Ownership::Orphan(format!("no order has the id '{key}'"));
    };
    if owner.vendor != vendor {
        return Ownership::Orphan(format!(
            "order {key} is for vendor '{}', not '{vendor}'",
            owner.vendor
        ));
    }
    match owner.status {
        OrderStatus::Pending
        | OrderStatus::Queued
        | OrderStatus::Provisioning
        | OrderStatus::Deleting
        | OrderStatus::Cancelling => Ownership::Owned,
        OrderStatus::Active if owner.vendor_id.as_deref() == Some(server.vendor_id.as_str()) => {
            Ownership::Owned
        }
        OrderStatus::Active => Ownership::Orphan(format!(
            "order {key} is active with server {}; this one is a second server for it",
            owner.vendor_id.as_deref().unwrap_or("?")
        )),
        OrderStatus::Failed => {
            Ownership::Orphan(format!("order {key} failed; its server was left behind"))
        }
        OrderStatus::Deleted => Ownership::Orphan(format!(
            "order {key} was deleted; this server is still there"
        )),
        OrderStatus::Cancelled => Ownership::Orphan(format!(
            "order {key} was cancelled; this server is still there"
        )),
        // Only an order for several servers takes it, and its servers carry their own keys.
        OrderStatus::PartiallyActive => Ownership::Orphan(format!(
            "order {key} is for several servers, whose keys are their own: none is {key}"
        )),
    }
}

/// Order ids looked up per query.
const OWNER_CHUNK: usize = 500;

impl Store {
    /// Starts a vendor's sweep: answers from earlier sweeps are ignored from now on.
    pub async fn begin_sweep(&self, vendor: &str, sweep_id: Uuid) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO sweeps (vendor, sweep_id, requested_at) VALUES ($1, $2, $3) \
             ON CONFLICT (vendor) DO UPDATE SET sweep_id = excluded.sweep_id, \
             requested_at = excluded.requested_at, finished_at = NULL, host_id = NULL, \
             outcome = NULL, detail = NULL, listed = NULL, orphans = NULL",
        )
        .bind(vendor)
        .bind(sweep_id.to_string())
        .bind(DbTime(Utc::now()))
        .execute(&self.writer)
        .await
        .context("recording a sweep")?;
        Ok(())
    }

    /// Applies a host's inventory: records the orphans it shows, marks those it no longer
    /// shows `gone`, and answers the orphans to delete now (none under
    /// [`OrphanAction::Report`], none for a stale or failed sweep).
    pub async fn apply_inventory(
        &self,
        inventory: &VendorInventory,
        action: OrphanAction,
    ) -> anyhow::Result<Vec<Orphan>> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        let Some(requested_at) = current_sweep(&mut tx, self.backend, inventory).await? else {
            tracing::info!(vendor = %inventory.vendor, sweep_id = %inventory.sweep_id, "inventory of an earlier sweep ignored");
            return Ok(Vec::new());
        };
        let servers = match &inventory.listing {
            Listing::Listed { servers } => servers,
            Listing::Unsupported { reason } => {
                finish_sweep(
                    &mut tx,
                    inventory,
                    "unsupported",
                    Some(reason.clone()),
                    None,
                )
                .await?;
                tx.commit().await?;
                return Ok(Vec::new());
            }
            Listing::Failed { fault } => {
                let detail = format!("{}: {}", fault.code, fault.message);
                finish_sweep(&mut tx, inventory, "failed", Some(detail), None).await?;
                tx.commit().await?;
                return Ok(Vec::new());
            }
        };
        let vendor = &inventory.vendor;
        let now = Utc::now();
        let owners = owners(&mut tx, servers).await?;
        let known = orphan_states(&mut tx, vendor).await?;
        let mut seen = HashSet::new();
        let mut to_delete = Vec::new();
        for listed in servers {
            let owner = Uuid::parse_str(&listed.idempotency_key)
                .ok()
                .and_then(|id| owners.get(&id));
            // An order that changed since the listing began may have been judged on a newer
            // state than the vendor showed (deleted here, still running there): owned until
            // the next sweep.
            if owner.is_some_and(|owner| owner.updated_at >= requested_at) {
                continue;
            }
            let reason = match ownership(vendor, &listed.idempotency_key, &listed.server, owner) {
                Ownership::Orphan(reason) => reason,
                Ownership::Owned => continue,
                // A recorded orphan the vendor is removing is not gone yet.
                Ownership::Leaving => {
                    if known.contains_key(&listed.server.vendor_id) {
                        seen.insert(listed.server.vendor_id.clone());
                    }
                    continue;
                }
            };
            seen.insert(listed.server.vendor_id.clone());
            let before = known.get(&listed.server.vendor_id).copied();
            let state = next_state(action, before);
            if before.is_none() || before.is_some_and(|state| !state.present()) {
                tracing::warn!(%vendor, vendor_id = %listed.server.vendor_id, key = %listed.idempotency_key, "orphan server found: {reason}");
            }
            record_orphan(&mut tx, vendor, listed, &reason, state, now).await?;
            if state == OrphanState::Deleting {
                to_delete.push(Orphan {
                    vendor: vendor.clone(),
                    idempotency_key: listed.idempotency_key.clone(),
                    server: listed.server.clone(),
                    reason,
                    state,
                    delete_fault: None,
                    first_seen_at: now,
                    last_seen_at: now,
                });
            }
        }
        mark_gone(&mut tx, vendor, &known, &seen, now).await?;
        let counts = (servers.len() as i64, seen.len() as i64);
        finish_sweep(&mut tx, inventory, "listed", None, Some(counts))
            .await
            .context("finishing the sweep")?;
        tx.commit().await.context("committing the inventory")?;
        Ok(to_delete)
    }

    /// Records how a host's delete of an orphan went.
    pub async fn orphan_deleted(&self, outcome: &OrphanDeleted) -> anyhow::Result<()> {
        let (state, detail) = match &outcome.fault {
            None => (OrphanState::Deleted, None),
            Some(fault) => (OrphanState::DeleteFailed, Some(json(fault))),
        };
        sqlx::query(
            "UPDATE orphans SET state = $1, detail = $2, updated_at = $3 \
             WHERE vendor = $4 AND vendor_id = $5 AND state IN ('deleting', 'reported', 'delete_failed')",
        )
        .bind(state.as_str())
        .bind(detail)
        .bind(DbTime(outcome.at))
        .bind(&outcome.vendor)
        .bind(&outcome.vendor_id)
        .execute(&self.writer)
        .await
        .context("recording an orphan's delete")?;
        Ok(())
    }

    /// Every orphan recorded (those still at the vendor first), newest first.
    pub async fn orphans(&self) -> anyhow::Result<Vec<Orphan>> {
        let rows = sqlx::query(
            "SELECT * FROM orphans ORDER BY state IN ('gone', 'deleted'), last_seen_at DESC \
             LIMIT 1000",
        )
        .fetch_all(&self.pool)
        .await
        .context("listing orphans")?;
        rows.iter()
            .map(|row| {
                Ok(Orphan {
                    vendor: row.try_get("vendor")?,
                    idempotency_key: row.try_get("idempotency_key")?,
                    server: parse_json(row.try_get("server")?)?
                        .context("an orphan without its server")?,
                    reason: row.try_get("reason")?,
                    state: OrphanState::parse(row.try_get("state")?)?,
                    delete_fault: parse_json(row.try_get("detail")?)?,
                    first_seen_at: time(row, "first_seen_at")?,
                    last_seen_at: time(row, "last_seen_at")?,
                })
            })
            .collect()
    }

    /// How many orphan records are in each state.
    pub async fn count_orphans_by_state(&self) -> anyhow::Result<HashMap<OrphanState, i64>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM orphans GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .context("counting orphans")?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                Ok((OrphanState::parse(&state)?, row.try_get("n")?))
            })
            .collect()
    }

    /// Each vendor's latest sweep.
    pub async fn sweeps(&self) -> anyhow::Result<Vec<Sweep>> {
        let rows = sqlx::query("SELECT * FROM sweeps ORDER BY vendor")
            .fetch_all(&self.pool)
            .await
            .context("listing sweeps")?;
        rows.iter()
            .map(|row| {
                let sweep_id: String = row.try_get("sweep_id")?;
                let count = |column: &str| -> anyhow::Result<Option<u32>> {
                    let value: Option<i64> = row.try_get(column)?;
                    Ok(value.map(|n| n.try_into().unwrap_or(u32::MAX)))
                };
                Ok(Sweep {
                    vendor: row.try_get("vendor")?,
                    sweep_id: Uuid::parse_str(&sweep_id).context("a sweep id")?,
                    requested_at: time(row, "requested_at")?,
                    finished_at: optional_time(row, "finished_at")?,
                    host_id: row.try_get("host_id")?,
                    outcome: row.try_get("outcome")?,
                    detail: row.try_get("detail")?,
                    listed: count("listed")?,
                    orphans: count("orphans")?,
                })
            })
            .collect()
    }
}
/// When the sweep `inventory` answers was requested, if it is still its vendor's current
/// one; `None` for an earlier sweep's inventory. On PostgreSQL the sweep's row stays locked
/// until the commit: another instance's new sweep of the vendor waits, and is not marked
/// finished with this one's results.
async fn current_sweep(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    backend: Backend,
    inventory: &VendorInventory,
) -> anyhow::Result<Option<DateTime<Utc>>> {
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE",
        Backend::Sqlite => "",
    };
    let current: Option<(String, DbTime)> = sqlx::query_as(&format!(
        "SELECT sweep_id, requested_at FROM sweeps WHERE vendor = $1{lock}"
    ))
    .bind(&inventory.vendor)
    .fetch_optional(&mut **tx)
    .await
    .context("reading the current sweep")?;
    Ok(current
        .filter(|(sweep_id, _)| *sweep_id == inventory.sweep_id.to_string())
        .map(|(_, requested_at)| requested_at.0))
}

/// Marks the sweep `inventory` answers finished with `outcome`; `counts`: how many servers
/// were listed and how many of them are orphans, when the vendor listed them.
async fn finish_sweep(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    inventory: &VendorInventory,
    outcome: &str,
    detail: Option<String>,
    counts: Option<(i64, i64)>,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE sweeps SET finished_at = $1, host_id = $2, outcome = $3, detail = $4, \
         listed = $5, orphans = $6 WHERE vendor = $7 AND sweep_id = $8",
    )
    .bind(DbTime(inventory.at))
    .bind(&inventory.host_id)
    .bind(outcome)
    .bind(detail)
    .bind(counts.map(|(listed, _)| listed))
    .bind(counts.map(|(_, orphans)| orphans))
    .bind(&inventory.vendor)
    .bind(inventory.sweep_id.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What an orphan listed again becomes under `action`, from its recorded state `before`.
/// Under `delete`, every sweep that still lists an orphan sends its delete again (a delete
/// is idempotent at the host, and one lost or failed is retried so).
fn next_state(action: OrphanAction, before: Option<OrphanState>) -> OrphanState {
    match (action, before) {
        (OrphanAction::Delete, _) => OrphanState::Deleting,
        (OrphanAction::Report, Some(OrphanState::DeleteFailed)) => OrphanState::DeleteFailed,
        (OrphanAction::Report, _) => OrphanState::Reported,
    }
}

/// Records (or updates) the orphan `listed` in `state`, seen `now`.
async fn record_orphan(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    vendor: &str,
    listed: &LabelledServer,
    reason: &str,
    state: OrphanState,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO orphans (vendor, vendor_id, idempotency_key, server, reason, state, \
         detail, first_seen_at, last_seen_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $8, $9) \
         ON CONFLICT (vendor, vendor_id) DO UPDATE SET \
         idempotency_key = excluded.idempotency_key, server = excluded.server, \
         reason = excluded.reason, state = excluded.state, \
         detail = CASE WHEN excluded.state = 'delete_failed' THEN orphans.detail END, \
         last_seen_at = excluded.last_seen_at, updated_at = excluded.updated_at",
    )
    .bind(vendor)
    .bind(&listed.server.vendor_id)
    .bind(&listed.idempotency_key)
    .bind(json(&listed.server))
    .bind(reason)
    .bind(state.as_str())
    .bind(DbTime(now))
    .bind(DbTime(now))
    .bind(DbTime(now))
    .execute(&mut **tx)
    .await
    .context("recording an orphan")?;
    Ok(())
}

/// Marks `gone` each orphan of `vendor` recorded as present (`known`) that the sweep did
/// not list (`seen`).
async fn mark_gone(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    vendor: &str,
    known: &HashMap<String, OrphanState>,
    seen: &HashSet<String>,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    for (vendor_id, state) in known {
        if state.present() && !seen.contains(vendor_id) {
            sqlx::query(
                "UPDATE orphans SET state = 'gone', updated_at = $1 \
                 WHERE vendor = $2 AND vendor_id = $3",
            )
            .bind(DbTime(now))
            .bind(vendor)
            .bind(vendor_id)
            .execute(&mut **tx)
            .await
            .context("marking an orphan gone")?;
        }
    }
    Ok(())
}

/// The orders the listed servers' keys name.
async fn owners(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    servers: &[LabelledServer],
) -> anyhow::Result<HashMap<Uuid, Owner>> {
    let ids: Vec<String> = servers
        .iter()
        .filter_map(|listed| Uuid::parse_str(&listed.idempotency_key).ok())
        .map(|id| id.to_string())
        .collect();
    let mut owners = HashMap::new();
    for chunk in ids.chunks(OWNER_CHUNK) {
        let ids = parameters(1, chunk.len());
        let sql = format!(
            "SELECT id, status, vendor, server, updated_at FROM orders WHERE id IN ({ids})"
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        for row in query
            .fetch_all(&mut **tx)
            .await
            .context("looking up owners")?
        {
            let id: String = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            let server: Option<ServerInfo> = parse_json(row.try_get("server")?)?;
            owners.insert(
                Uuid::parse_str(&id).context("an order id")?,
                Owner {
                    status: status.parse().map_err(anyhow::Error::msg)?,
                    vendor: row.try_get("vendor")?,
                    vendor_id: server.map(|server| server.vendor_id),
                    updated_at: time(&row, "updated_at")?,
                },
            );
        }
    }
    Ok(owners)
}

/// The recorded orphans of `vendor` and their states.
async fn orphan_states(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    vendor: &str,
) -> anyhow::Result<HashMap<String, OrphanState>> {
    let rows = sqlx::query("SELECT vendor_id, state FROM orphans WHERE vendor = $1")
        .bind(vendor)
        .fetch_all(&mut **tx)
        .await
        .context("reading recorded orphans")?;
    rows.iter()
        .map(|row| {
            let state: String = row.try_get("state")?;
            Ok((row.try_get("vendor_id")?, OrphanState::parse(&state)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(vendor_id: &str, status: ServerStatus) -> ServerInfo {
        ServerInfo {
            vendor_id: vendor_id.into(),
            name: "web".into(),
            status,
            ipv4: None,
            ipv6: None,
        }
    }

    fn owner(status: OrderStatus, vendor_id: Option<&str>) -> Owner {
        Owner {
            status,
            vendor: "hetzner".into(),
            vendor_id: vendor_id.map(Into::into),
            updated_at: DateTime::from_timestamp(0, 0).unwrap_or_default(),
        }
    }

    /// A server is an orphan only when its order is gone, finished without it, or elsewhere.
    #[test]
    fn orphans_are_servers_no_order_claims() {
        let running = server("7", ServerStatus::Running);
        let orphan = |owner: Option<&Owner>| {
            matches!(
                ownership("hetzner", "k", &running, owner),
                Ownership::Orphan(_)
            )
        };
        assert!(orphan(None));
        assert!(orphan(Some(&owner(OrderStatus::Failed, None))));
        assert!(orphan(Some(&owner(OrderStatus::Deleted, Some("7")))));
        assert!(orphan(Some(&owner(OrderStatus::Active, Some("8")))));
        assert!(orphan(Some(&Owner {
            vendor: "digitalocean".into(),
            ..owner(OrderStatus::Active, Some("7"))
        })));
        for in_progress in [
            OrderStatus::Pending,
            OrderStatus::Queued,
            OrderStatus::Provisioning,
            OrderStatus::Deleting,
        ] {
            assert!(!orphan(Some(&owner(in_progress, None))), "{in_progress}");
        }
        assert_eq!(
            ownership(
                "hetzner",
                "k",
                &running,
                Some(&owner(OrderStatus::Active, Some("7")))
            ),
            Ownership::Owned
        );
        assert_eq!(
            ownership("hetzner", "k", &server("7", ServerStatus::Deleting), None),
            Ownership::Leaving
        );
    }
}
