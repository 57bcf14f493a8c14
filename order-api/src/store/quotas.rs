//! Per-tenant quotas and order rates: what an admin set ([`Store::set_quota`],
//! [`Store::replace_quotas`], [`Store::set_rate`]), a tenant's usage, and the check that
//! refuses a new order over a quota ([`check_new_orders`], run inside the transaction that
//! inserts the orders).
//!
//! Usage is counted from the orders themselves, not kept in counters: a counter row per
//! tenant would be written by every status change of every order of the tenant, and on
//! PostgreSQL two transactions that touch two tenants' orders in opposite orders would
//! deadlock on those rows. The count reads the index `(tenant, status, vendor)` over the
//! statuses its limits need (the live ones for a live-server limit, else the in-flight ones),
//! so it reads about as many entries as the tenant's limits allow (a tenant without a quota
//! is never counted on the order path). Only the vendors with a limit are counted unless a
//! limit holds over all of them.
//!
//! Two orders of one tenant must not both squeeze under a limit. On SQLite the one writer
//! connection commits one group of new orders at a time, so the count and the insert of one
//! group see no other. On PostgreSQL, where several order-api instances commit groups at once,
//! a group takes a transaction-scoped advisory lock per tenant with a quota before it counts.
//! Every group takes its idempotency keys first, then these locks in tenant order, so two
//! groups never wait on each other in a circle. The count is a new statement after the lock,
//! and under READ COMMITTED sees every group committed before.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::db::{DbTime, parameters};
use super::{NewOrder, Store};
use crate::lifecycle::OrderStatus;

/// Statuses whose server exists or may come to exist (billed, or about to be): what counts
/// towards `max_live_servers`.
pub const LIVE_STATUSES: [OrderStatus; 6] = [
    OrderStatus::Pending,
    OrderStatus::Queued,
    OrderStatus::Provisioning,
    OrderStatus::Active,
    OrderStatus::Deleting,
    OrderStatus::Cancelling,
];

/// Statuses of an order something is still happening to: what counts towards
/// `max_orders_in_flight`.
pub const IN_FLIGHT_STATUSES: [OrderStatus; 5] = [
    OrderStatus::Pending,
    OrderStatus::Queued,
    OrderStatus::Provisioning,
    OrderStatus::Deleting,
    OrderStatus::Cancelling,
];

/// The vendor column of a quota that holds for all of a tenant's vendors together.
const ALL_VENDORS: &str = "";

/// Limits of one scope (all of a tenant's vendors, or one vendor). `None`: no such limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Most servers that exist or are on their way (orders `pending`, `queued`,
    /// `provisioning`, `active`, `deleting`, `cancelling`); 0 to 1,000,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub max_live_servers: Option<u64>,
    /// Most orders in progress (`pending`, `queued`, `provisioning`, `deleting`,
    /// `cancelling`); 0 to 1,000,000,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub max_orders_in_flight: Option<u64>,
}

impl Limits {
    /// The largest limit accepted.
    pub const MAX: u64 = 1_000_000_000;

    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.max_live_servers.is_none() && self.max_orders_in_flight.is_none()
    }

    /// Why the limits cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        for (name, limit) in [
            ("max_live_servers", self.max_live_servers),
            ("max_orders_in_flight", self.max_orders_in_flight),
        ] {
            if limit.is_some_and(|limit| limit > Self::MAX) {
                return Err(format!("{name} must be at most {}", Self::MAX));
            }
        }
        Ok(())
    }
}

/// What a tenant uses, in one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Servers that exist or are on their way.
    pub live_servers: u64,
    /// Orders in progress.
    pub orders_in_flight: u64,
}

impl Usage {
    fn add(&mut self, other: Usage) {
        self.live_servers += other.live_servers;
        self.orders_in_flight += other.orders_in_flight;
    }
}

/// A tenant's own rate of `POST /v1/orders`: a token bucket of `burst` requests, refilled
/// at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderRate {
    /// Requests per second, sustained (0.001 to 1,000,000).
    #[schema(minimum = 0.001, maximum = 1_000_000)]
    pub per_second: f64,
    /// Requests at once after a quiet spell (1 to 1,000,000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub burst: u32,
}

impl OrderRate {
    /// Most of either figure.
    pub const MAX: f64 = 1_000_000.0;
    /// The slowest rate: one request in about 17 minutes.
    pub const MIN_PER_SECOND: f64 = 0.001;

    /// Why the rate cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(self.per_second >= Self::MIN_PER_SECOND && self.per_second <= Self::MAX) {
            return Err(format!(
                "per_second must be {} to {}",
                Self::MIN_PER_SECOND,
                Self::MAX
            ));
        }
        if self.burst == 0 || f64::from(self.burst) > Self::MAX {
            return Err(format!("burst must be 1 to {}", Self::MAX));
        }
        Ok(())
    }
}

/// Every quota and the rate an admin set for one tenant (`PUT /v1/tenants/{tenant}/quotas`
/// replaces them all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSet {
    /// Limits over all of the tenant's vendors together.
    #[serde(default)]
    pub limits: Limits,
    /// Limits at one vendor, by vendor id.
    #[serde(default)]
    pub vendors: BTreeMap<String, Limits>,
    /// The tenant's own order rate (absent: the instance's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<OrderRate>,
}

/// One scope of `GET /v1/quotas`: its limits and what the tenant uses.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct ScopedQuota {
    /// The limits (absent fields: no limit).
    pub limits: Limits,
    /// What the tenant uses now.
    pub usage: Usage,
}

/// `GET /v1/quotas`: a tenant's limits and usage.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TenantQuotas {
    /// The tenant.
    pub tenant: String,
    /// Over all of its vendors.
    pub all_vendors: ScopedQuota,
    /// At each vendor it has a limit at or uses.
    pub vendors: BTreeMap<String, ScopedQuota>,
    /// The rate of `POST /v1/orders` that applies (the tenant's own or the default);
    /// absent: not limited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<OrderRate>,
    /// `tenant` (set for this tenant) or `default` (the instance's).
    pub rate_source: &'static str,
}

/// A new order over a quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct QuotaExceeded {
    /// Which quota: `max_live_servers` or `max_orders_in_flight`.
    pub quota: &'static str,
    /// The vendor the quota is at; absent: over all vendors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    /// What the tenant used before this order.
    pub usage: u64,
    /// The limit.
    pub limit: u64,
    /// What this order asked for.
    pub requested: u64,
}

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.quota {
            "max_live_servers" => "live servers",
            _ => "orders in flight",
        };
        let scope = match &self.vendor {
            Some(vendor) => format!(" at {vendor}"),
            None => String::new(),
        };
        write!(
            f,
            "the tenant has {} {what}{scope} and may have at most {}; this order asks for {} more",
            self.usage, self.limit, self.requested
        )
    }
}

/// What one order adds to its tenant's usage.
fn usage_of_new_order() -> Usage {
    Usage {
        live_servers: 1,
        orders_in_flight: 1,
    }
}

/// Which quota of `limits` `usage` plus `adding` would pass, if any.
fn exceeded(
    limits: &Limits,
    usage: Usage,
    adding: Usage,
    vendor: Option<&str>,
) -> Option<QuotaExceeded> {
    let over = |quota: &'static str, limit: Option<u64>, used: u64, requested: u64| {
        limit
            .filter(|limit| used + requested > *limit)
            .map(|limit| QuotaExceeded {
                quota,
                vendor: vendor.map(str::to_string),
                usage: used,
                limit,
                requested,
            })
    };
    over(
        "max_live_servers",
        limits.max_live_servers,
        usage.live_servers,
        adding.live_servers,
    )
    .or_else(|| {
        over(
            "max_orders_in_flight",
            limits.max_orders_in_flight,
            usage.orders_in_flight,
            adding.orders_in_flight,
        )
    })
}

/// One tenant's quotas as stored: `""` is all vendors.
type QuotaRows = BTreeMap<String, Limits>;

fn limits_of(row: &sqlx::any::AnyRow) -> anyhow::Result<Limits> {
    let read = |column: &str| -> anyhow::Result<Option<u64>> {
        Ok(row
            .try_get::<Option<i64>, _>(column)?
            .map(|n| n.max(0) as u64))
    };
    Ok(Limits {
        max_live_servers: read("max_live_servers")?,
        max_orders_in_flight: read("max_orders_in_flight")?,
    })
}

/// The quota rows of `tenants`, by tenant.
async fn quota_rows<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    tenants: &[&str],
) -> anyhow::Result<HashMap<String, QuotaRows>> {
    if tenants.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT tenant, vendor, max_live_servers, max_orders_in_flight FROM tenant_quotas \
         WHERE tenant IN ({})",
        parameters(1, tenants.len())
    );
    let mut statement = sqlx::query(&sql);
    for tenant in tenants {
        statement = statement.bind(*tenant);
    }
    let rows = statement
        .fetch_all(executor)
        .await
        .context("reading tenants' quotas")?;
    let mut quotas: HashMap<String, QuotaRows> = HashMap::new();
    for row in &rows {
        quotas
            .entry(row.try_get("tenant")?)
            .or_default()
            .insert(row.try_get("vendor")?, limits_of(row)?);
    }
    Ok(quotas)
}

/// `tenant`'s usage by vendor (only `vendors` when given), counted from its orders in
/// `statuses` ([`LIVE_STATUSES`], or [`IN_FLIGHT_STATUSES`] when only those are limited:
/// then its `live_servers` counts only the servers on their way).
async fn usage_by_vendor<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    tenant: &str,
    vendors: Option<&BTreeSet<String>>,
    statuses: &[OrderStatus],
) -> anyhow::Result<BTreeMap<String, Usage>> {
    let mut sql = format!(
        "SELECT vendor, status, COUNT(*) AS n FROM orders WHERE tenant = $1 \
         AND status IN ({})",
        parameters(2, statuses.len())
    );
    if let Some(vendors) = vendors {
        let first = 2 + statuses.len();
        sql.push_str(&format!(
            " AND vendor IN ({})",
            parameters(first, vendors.len())
        ));
    }
    sql.push_str(" GROUP BY vendor, status");
    let mut statement = sqlx::query(&sql).bind(tenant);
    for status in statuses {
        statement = statement.bind(status.as_str());
    }
    for vendor in vendors.into_iter().flatten() {
        statement = statement.bind(vendor);
    }
    let rows = statement
        .fetch_all(executor)
        .await
        .with_context(|| format!("counting tenant {tenant}'s live orders"))?;
    usage_by(&rows, "vendor")
}

/// Rows of `(<key>, status, n)` (orders counted by a key and status) as usage by key.
fn usage_by(rows: &[sqlx::any::AnyRow], key: &str) -> anyhow::Result<BTreeMap<String, Usage>> {
    let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
    for row in rows {
        let status: OrderStatus = super::parse_status(row.try_get("status")?)?;
        let count = row.try_get::<i64, _>("n")?.max(0) as u64;
        let entry = usage.entry(row.try_get(key)?).or_default();
        entry.live_servers += count;
        if IN_FLIGHT_STATUSES.contains(&status) {
            entry.orders_in_flight += count;
        }
    }
    Ok(usage)
}

/// What each new order of a group became under its tenant's quotas: `None` to insert, or
/// the quota it would pass. Runs in the group's transaction, before anything is inserted;
/// orders are judged in the group's order, each counting those before it.
pub(super) async fn check_new_orders(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    orders: &[&NewOrder],
) -> anyhow::Result<Vec<Option<QuotaExceeded>>> {
    let tenants: BTreeSet<&str> = orders.iter().map(|new| new.order.tenant.as_str()).collect();
    let tenants: Vec<&str> = tenants.into_iter().collect();
    let quotas = quota_rows(&mut **tx, &tenants).await?;
    if quotas.is_empty() {
        return Ok(vec![None; orders.len()]);
    }
    let postgres = tx.backend_name() == <sqlx::Postgres as sqlx::Database>::NAME;
    let mut usage: HashMap<&str, BTreeMap<String, Usage>> = HashMap::new();
    // In tenant order (`tenants` is sorted): see the module docs.
    for tenant in tenants.iter().filter(|t| quotas.contains_key(**t)) {
        if postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7301))")
                .bind(format!("tenant-quota:{tenant}"))
                .execute(&mut **tx)
                .await
                .with_context(|| format!("locking tenant {tenant}'s quota"))?;
        }
        let rows = &quotas[*tenant];
        // Only the vendors that have a limit need counting unless one holds for all.
        let vendors: Option<BTreeSet<String>> =
            (!rows.contains_key(ALL_VENDORS)).then(|| rows.keys().cloned().collect());
        // Active servers are counted only where a live-server limit needs them: a count
        // reads about as many entries as the limits it serves allow.
        let statuses: &[OrderStatus] = if rows.values().any(|l| l.max_live_servers.is_some()) {
            &LIVE_STATUSES
        } else {
            &IN_FLIGHT_STATUSES
        };
        let counted = usage_by_vendor(&mut **tx, tenant, vendors.as_ref(), statuses).await?;
        usage.insert(tenant, counted);
    }
    let mut verdicts = Vec::with_capacity(orders.len());
    for new in orders {
        let tenant = new.order.tenant.as_str();
        let vendor = new.order.vendor.as_str();
        let Some(rows) = quotas.get(tenant) else {
            verdicts.push(None);
            continue;
        };
        let by_vendor = usage.entry(tenant).or_default();
        let adding = usage_of_new_order();
        let mut verdict = None;
        if let Some(limits) = rows.get(ALL_VENDORS) {
            let mut total = Usage::default();
            by_vendor.values().for_each(|u| total.add(*u));
            verdict = exceeded(limits, total, adding, None);
        }
        if verdict.is_none()
            && let Some(limits) = rows.get(vendor)
        {
            let used = by_vendor.get(vendor).copied().unwrap_or_default();
            verdict = exceeded(limits, used, adding, Some(vendor));
        }
        if verdict.is_none() {
            by_vendor.entry(vendor.to_string()).or_default().add(adding);
        }
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

impl Store {
    /// Sets `tenant`'s limits over all its vendors (`vendor` `None`) or at one vendor; empty
    /// limits remove the quota.
    pub async fn set_quota(
        &self,
        tenant: &str,
        vendor: Option<&str>,
        limits: Limits,
    ) -> anyhow::Result<()> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        write_quota(&mut tx, tenant, vendor.unwrap_or(ALL_VENDORS), limits).await?;
        tx.commit().await.context("committing a quota")
    }

    /// Replaces every quota and the rate of `tenant` with `set`.
    pub async fn replace_quotas(&self, tenant: &str, set: &QuotaSet) -> anyhow::Result<()> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        sqlx::query("DELETE FROM tenant_quotas WHERE tenant = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .context("removing a tenant's quotas")?;
        write_quota(&mut tx, tenant, ALL_VENDORS, set.limits).await?;
        for (vendor, limits) in &set.vendors {
            write_quota(&mut tx, tenant, vendor, *limits).await?;
        }
        write_rate(&mut tx, tenant, set.rate).await?;
        tx.commit().await.context("committing a tenant's quotas")
    }

    /// Sets (or, with `None`, removes) `tenant`'s own order rate.
    pub async fn set_rate(&self, tenant: &str, rate: Option<OrderRate>) -> anyhow::Result<()> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        write_rate(&mut tx, tenant, rate).await?;
        tx.commit().await.context("committing an order rate")
    }

    /// Every tenant's own order rate.
    pub async fn rates(&self) -> anyhow::Result<HashMap<String, OrderRate>> {
        let rows = sqlx::query("SELECT tenant, per_second, burst FROM tenant_rates")
            .fetch_all(&self.pool)
            .await
            .context("reading the tenants' order rates")?;
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get("tenant")?,
                    OrderRate {
                        per_second: row.try_get("per_second")?,
                        burst: row.try_get::<i64, _>("burst")?.clamp(1, u32::MAX as i64) as u32,
                    },
                ))
            })
            .collect()
    }

    /// What an admin set for `tenant`.
    pub async fn quota_set(&self, tenant: &str) -> anyhow::Result<QuotaSet> {
        let mut rows = quota_rows(&self.pool, &[tenant])
            .await?
            .remove(tenant)
            .unwrap_or_default();
        Ok(QuotaSet {
            limits: rows.remove(ALL_VENDORS).unwrap_or_default(),
            vendors: rows,
            rate: self.rates().await?.remove(tenant),
        })
    }

    /// `tenant`'s limits and usage, over all vendors and at each vendor it has a limit at
    /// or uses; `default_rate` is the rate that applies without its own.
    pub async fn tenant_quotas(
        &self,
        tenant: &str,
        default_rate: Option<OrderRate>,
    ) -> anyhow::Result<TenantQuotas> {
        let set = self.quota_set(tenant).await?;
        let usage = usage_by_vendor(&self.pool, tenant, None, &LIVE_STATUSES).await?;
        let mut all_vendors = ScopedQuota {
            limits: set.limits,
            usage: Usage::default(),
        };
        let mut vendors: BTreeMap<String, ScopedQuota> = set
            .vendors
            .into_iter()
            .map(|(vendor, limits)| {
                let scoped = ScopedQuota {
                    limits,
                    usage: Usage::default(),
                };
                (vendor, scoped)
            })
            .collect();
        for (vendor, used) in usage {
            all_vendors.usage.add(used);
            vendors.entry(vendor).or_default().usage = used;
        }
        let (rate, rate_source) = match set.rate {
            Some(rate) => (Some(rate), "tenant"),
            None => (default_rate, "default"),
        };
        Ok(TenantQuotas {
            tenant: tenant.to_string(),
            all_vendors,
            vendors,
            rate,
            rate_source,
        })
    }

    /// Every tenant's usage over all vendors (tenants with live orders), for `/metrics`.
    pub async fn usage_by_tenant(&self) -> anyhow::Result<BTreeMap<String, Usage>> {
        let sql = format!(
            "SELECT tenant, status, COUNT(*) AS n FROM orders WHERE status IN ({}) \
             GROUP BY tenant, status",
            parameters(1, LIVE_STATUSES.len())
        );
        let mut statement = sqlx::query(&sql);
        for status in LIVE_STATUSES {
            statement = statement.bind(status.as_str());
        }
        let rows = statement
            .fetch_all(&self.pool)
            .await
            .context("counting live orders by tenant")?;
        usage_by(&rows, "tenant")
    }

    /// Every quota row: (tenant, vendor (`None`: all vendors), limits), for `/metrics` and
    /// `order-api tenants list`.
    pub async fn all_quotas(&self) -> anyhow::Result<Vec<(String, Option<String>, Limits)>> {
        let rows = sqlx::query(
            "SELECT tenant, vendor, max_live_servers, max_orders_in_flight FROM tenant_quotas \
             ORDER BY tenant, vendor",
        )
        .fetch_all(&self.pool)
        .await
        .context("reading the quotas")?;
        rows.iter()
            .map(|row| {
                let vendor: String = row.try_get("vendor")?;
                Ok((
                    row.try_get("tenant")?,
                    (vendor != ALL_VENDORS).then_some(vendor),
                    limits_of(row)?,
                ))
            })
            .collect()
    }
}

/// Writes one quota row (removes it when `limits` is empty).
async fn write_quota(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    vendor: &str,
    limits: Limits,
) -> anyhow::Result<()> {
    if limits.is_empty() {
        sqlx::query("DELETE FROM tenant_quotas WHERE tenant = $1 AND vendor = $2")
            .bind(tenant)
            .bind(vendor)
            .execute(&mut **tx)
            .await
            .context("removing a quota")?;
        return Ok(());
    }
    let as_db = |n: Option<u64>| n.map(|n| n.min(i64::MAX as u64) as i64);
    sqlx::query(
        "INSERT INTO tenant_quotas (tenant, vendor, max_live_servers, max_orders_in_flight, \
         updated_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, vendor) DO UPDATE SET \
         max_live_servers = excluded.max_live_servers, \
         max_orders_in_flight = excluded.max_orders_in_flight, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(vendor)
    .bind(as_db(limits.max_live_servers))
    .bind(as_db(limits.max_orders_in_flight))
    .bind(DbTime(Utc::now()))
    .execute(&mut **tx)
    .await
    .context("writing a quota")?;
    Ok(())
}

/// Writes (or with `None` removes) one tenant's order rate.
async fn write_rate(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    rate: Option<OrderRate>,
) -> anyhow::Result<()> {
    let Some(rate) = rate else {
        sqlx::query("DELETE FROM tenant_rates WHERE tenant = $1")
            .bind(tenant)
            .execute(&mut **tx)
            .await
            .context("removing an order rate")?;
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO tenant_rates (tenant, per_second, burst, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant) DO UPDATE SET per_second = excluded.per_second, \
         burst = excluded.burst, updated_at = excluded.updated_at",
    )
    .bind(tenant)
    .bind(rate.per_second)
    .bind(i64::from(rate.burst))
    .bind(DbTime(Utc::now()))
    .execute(&mut **tx)
    .await
    .context("writing an order rate")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_that_would_pass_a_limit_names_it() {
        let limits = Limits {
            max_live_servers: Some(3),
            max_orders_in_flight: Some(10),
        };
        let used = Usage {
            live_servers: 3,
            orders_in_flight: 1,
        };
        let over = exceeded(&limits, used, usage_of_new_order(), Some("hetzner")).unwrap();
        assert_eq!(over.quota, "max_live_servers");
        assert_eq!((over.usage, over.limit, over.requested), (3, 3, 1));
        assert_eq!(over.vendor.as_deref(), Some("hetzner"));
        let under = Usage {
            live_servers: 2,
            orders_in_flight: 9,
        };
        assert_eq!(exceeded(&limits, under, usage_of_new_order(), None), None);
        let flight = Usage {
            live_servers: 2,
            orders_in_flight: 10,
        };
        let over = exceeded(&limits, flight, usage_of_new_order(), None).unwrap();
        assert_eq!(over.quota, "max_orders_in_flight");
    }

    #[test]
    fn rates_out_of_range_are_refused() {
        for (per_second, burst) in [(0.0, 1), (-1.0, 1), (f64::NAN, 1), (1.0, 0), (2e6, 1)] {
            assert!(OrderRate { per_second, burst }.check().is_err());
        }
        assert!(
            OrderRate {
                per_second: 0.5,
                burst: 1
            }
            .check()
            .is_ok()
        );
    }
}
