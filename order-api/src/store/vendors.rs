//! Vendors a host has a plugin for but cannot serve: the host's reason (a secret missing,
//! a plugin that does not load), one record per vendor and host. Admins see them in
//! `GET /v1/vendors`; they never make a vendor known to `POST /v1/orders` (only a host's
//! announcement does, in `vendor_hosts`).

use anyhow::Context;
use chrono::{DateTime, Utc};
use provisioner_contract::VendorWithdrawal;
use serde::Serialize;
use sqlx::Row;

use super::{DbTime, Store, time};

/// A vendor one host has a plugin for but does not serve (`GET /v1/vendors`, admins only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UnavailableVendor {
    /// The vendor id.
    pub vendor: String,
    /// The host that has the plugin.
    pub host_id: String,
    /// Why the host does not serve it, in the host's words (which secret is missing and
    /// where the host looked for it, or why the plugin does not load).
    pub reason: String,
    /// When the host first said so.
    pub since: DateTime<Utc>,
    /// When the host last said so (hosts repeat it with every round of announcements).
    pub last_seen: DateTime<Utc>,
}

impl Store {
    /// Every vendor some host has a plugin for but does not serve, by vendor and host.
    pub async fn unavailable_vendors(&self) -> anyhow::Result<Vec<UnavailableVendor>> {
        let rows = sqlx::query("SELECT * FROM vendor_unavailable ORDER BY vendor, host_id")
            .fetch_all(&self.pool)
            .await
            .context("listing unavailable vendors")?;
        rows.iter()
            .map(|row| {
                Ok(UnavailableVendor {
                    vendor: row.try_get("vendor")?,
                    host_id: row.try_get("host_id")?,
                    reason: row.try_get("reason")?,
                    since: time(row, "since")?,
                    last_seen: time(row, "last_seen")?,
                })
            })
            .collect()
    }
}

/// Records (or refreshes) that the withdrawing host has the vendor's plugin but cannot
/// serve it, for `reason`; `since` stays the first report's time.
pub(super) async fn mark_unavailable(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    withdrawal: &VendorWithdrawal,
    reason: &str,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO vendor_unavailable (vendor, host_id, reason, since, last_seen) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (vendor, host_id) DO UPDATE SET \
         reason = excluded.reason, last_seen = excluded.last_seen",
    )
    .bind(&withdrawal.vendor)
    .bind(&withdrawal.host_id)
    .bind(reason)
    .bind(DbTime(withdrawal.at))
    .bind(DbTime(withdrawal.at))
    .execute(&mut **tx)
    .await
    .context("recording an unavailable vendor")?;
    Ok(())
}

/// Forgets that `host_id` could not serve `vendor` (it serves it now, or no longer has it).
pub(super) async fn clear_unavailable(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    vendor: &str,
    host_id: &str,
) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM vendor_unavailable WHERE vendor = $1 AND host_id = $2")
        .bind(vendor)
        .bind(host_id)
        .execute(&mut **tx)
        .await
        .context("clearing an unavailable vendor")?;
    Ok(())
}
