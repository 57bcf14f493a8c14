//! Per-tenant quotas and order rates: what an admin set ([`Store::set_quota`],
//! [`Store::replace_quotas`], [`Store::set_rate`]), a tenant's usage, and the check that
//! refuses a new order over a quota ([`check_new_orders`], run inside the transaction that
//! inserts the orders).
//!
//! Usage is kept as it changes, not counted on the order path. Triggers on `orders`
//! (migration 0011) append a row to `tenant_usage_changes` whenever an order starts or stops
//! counting towards a live server or an order in flight (the table `order_status_usage` says
//! which status counts towards which; [`Store::connect`] checks it against [`LIVE_STATUSES`]
//! and [`IN_FLIGHT_STATUSES`]). The rows are only ever appended, so no two transactions write
//! one row and none waits for another: a counter row per tenant would be updated by every
//! status change of every order of the tenant, and on PostgreSQL two transactions touching two
//! tenants' orders in opposite orders would deadlock on those rows. A tenant's usage is its
//! rows of `tenant_usage` plus its changes not folded in yet ([`usage_by_vendor`]).
//!
//! Changes are folded into `tenant_usage` ([`fold_changes`]) only under the tenant's quota
//! lock: by the check, just before it reads, and every few seconds for every tenant
//! ([`keep_folded`]). So the check reads the changes since the last order of that tenant, a
//! cost that does not grow with the tenant's orders.
//!
//! Two orders of one tenant must not both squeeze under a limit. On SQLite the one writer
//! connection commits one group of new orders at a time, so the check and the insert of one
//! group see no other. On PostgreSQL, where several order-api instances commit groups at once,
//! a group takes a transaction-scoped advisory lock per tenant with a quota before it folds
//! and reads. Every group takes its idempotency keys first, then these locks in tenant order,
//! so two groups never wait on each other in a circle. The read is a new statement after the
//! lock, and under READ COMMITTED sees every group committed before. Other transactions
//! (results, deletes) change usage without the lock: a change not committed yet is not seen,
//! and it is a decrease except for an active order being deleted (one more order in flight),
//! which is refused by no quota check either way. A server moving to another placement
//! candidate ([`check_moved_server`]) is checked under the tenant's lock too, taken after every
//! order lock of its transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio_util::sync::CancellationToken;

use super::Store;
use super::db::{DbTime, on_postgres, parameters, read_committed};
use super::orders::Order;
use crate::lifecycle::OrderStatus;

/// Statuses whose server exists or may come to exist (billed, or about to be): what counts
/// towards `max_live_servers`.
pub const LIVE_STATUSES: [OrderStatus; 7] = [
    OrderStatus::Pending,
    OrderStatus::Queued,
    OrderStatus::Provisioning,
    OrderStatus::Active,
    OrderStatus::PartiallyActive,
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
    #[serde(deserialize_with = "per_second_as_written")]
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

/// `per_second` judged as written, not only as it rounds: `1000000.0000000001` is above the
/// documented maximum but its nearest `f64` is exactly 1,000,000.0. Such a number is read as
/// the `f64` just beyond the bound it rounds to, so that [`OrderRate::check`] refuses it like
/// any rate out of range. Rounding is monotonic, so only a number whose `f64` is a bound can
/// lie beyond it while the `f64` does not: only those are compared as decimals. The text is
/// there when the rate is read with serde_json from text (`from_str`, `from_slice`); from a
/// `serde_json::Value` the number is written again from its `f64`, and only that is judged.
fn per_second_as_written<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<f64, D::Error> {
    use serde::de::{Error, Unexpected};
    use serde_json::Value;
    use std::str::FromStr;

    /// Most characters a rate at a bound may be written in: a decimal comparison costs time
    /// that grows with the square of its length.
    const MOST_CHARACTERS_AT_A_BOUND: usize = 64;

    let text = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
    let value: Value = serde_json::from_str(text.get()).map_err(D::Error::custom)?;
    let per_second = match &value {
        Value::Number(number) => number.as_f64().ok_or_else(|| {
            D::Error::custom("per_second is not a number a 64-bit float can hold")
        })?,
        Value::Null => return Err(D::Error::invalid_type(Unexpected::Unit, &"a number")),
        Value::Bool(b) => return Err(D::Error::invalid_type(Unexpected::Bool(*b), &"a number")),
        Value::String(s) => return Err(D::Error::invalid_type(Unexpected::Str(s), &"a number")),
        Value::Array(_) => return Err(D::Error::invalid_type(Unexpected::Seq, &"a number")),
        Value::Object(_) => return Err(D::Error::invalid_type(Unexpected::Map, &"a number")),
    };
    let (bound, beyond) = if per_second == OrderRate::MAX {
        (OrderRate::MAX, std::cmp::Ordering::Greater)
    } else if per_second == OrderRate::MIN_PER_SECOND {
        (OrderRate::MIN_PER_SECOND, std::cmp::Ordering::Less)
    } else {
        return Ok(per_second);
    };
    if text.get().len() > MOST_CHARACTERS_AT_A_BOUND {
        return Err(D::Error::custom(format!(
            "per_second: write it in at most {MOST_CHARACTERS_AT_A_BOUND} characters"
        )));
    }
    let written = bigdecimal::BigDecimal::from_str(text.get()).map_err(D::Error::custom)?;
    // The bound as documented: the constant's shortest decimal ("0.001", "1000000").
    let documented =
        bigdecimal::BigDecimal::from_str(&bound.to_string()).map_err(D::Error::custom)?;
    Ok(if written.cmp(&documented) == beyond {
        match beyond {
            std::cmp::Ordering::Greater => bound.next_up(),
            _ => bound.next_down(),
        }
    } else {
        per_second
    })
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

/// What one order for `servers` servers adds to its tenant's usage.
fn usage_of_new_order(servers: u32) -> Usage {
    Usage {
        live_servers: u64::from(servers),
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

/// Fails unless the database's `order_status_usage` (which the usage triggers read) says of
/// every status what [`LIVE_STATUSES`] and [`IN_FLIGHT_STATUSES`] say.
pub(super) async fn check_status_usage(pool: &sqlx::AnyPool) -> anyhow::Result<()> {
    let rows = sqlx::query("SELECT status, live_servers, orders_in_flight FROM order_status_usage")
        .fetch_all(pool)
        .await
        .context("reading order_status_usage")?;
    let mut in_database = BTreeMap::new();
    for row in &rows {
        let status: String = row.try_get("status")?;
        let counts: (i64, i64) = (
            row.try_get("live_servers")?,
            row.try_get("orders_in_flight")?,
        );
        in_database.insert(status, counts);
    }
    let expected: BTreeMap<String, (i64, i64)> = OrderStatus::ALL
        .iter()
        .map(|status| {
            let counts = (
                i64::from(LIVE_STATUSES.contains(status)),
                i64::from(IN_FLIGHT_STATUSES.contains(status)),
            );
            (status.as_str().to_string(), counts)
        })
        .collect();
    anyhow::ensure!(
        in_database == expected,
        "the database's order_status_usage {in_database:?} does not say what this order-api \
         counts towards quotas {expected:?}: a migration is missing"
    );
    Ok(())
}

/// Takes `tenant`'s quota lock for the rest of `tx` (PostgreSQL; SQLite has one writer).
async fn lock_tenant(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
) -> anyhow::Result<()> {
    if on_postgres(tx) {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7301))")
            .bind(format!("tenant-quota:{tenant}"))
            .execute(&mut **tx)
            .await
            .with_context(|| format!("locking tenant {tenant}'s quota"))?;
    }
    Ok(())
}

/// Folds `tenant`'s usage changes into its usage rows. Only under the tenant's lock
/// ([`lock_tenant`]): two folds of one tenant at once could both add one change.
async fn fold_changes(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
) -> anyhow::Result<()> {
    const ADD: &str = "ON CONFLICT (tenant, vendor) DO UPDATE SET \
        live_servers = tenant_usage.live_servers + excluded.live_servers, \
        orders_in_flight = tenant_usage.orders_in_flight + excluded.orders_in_flight";
    if on_postgres(tx) {
        // One statement: it deletes exactly the changes it adds, while other transactions
        // append more.
        sqlx::query(&format!(
            "WITH folded AS (DELETE FROM tenant_usage_changes WHERE tenant = $1 \
             RETURNING vendor, live_servers, orders_in_flight) \
             INSERT INTO tenant_usage (tenant, vendor, live_servers, orders_in_flight) \
             SELECT $1, vendor, CAST(SUM(live_servers) AS BIGINT), \
             CAST(SUM(orders_in_flight) AS BIGINT) FROM folded GROUP BY vendor ORDER BY vendor \
             {ADD}"
        ))
        .bind(tenant)
        .execute(&mut **tx)
        .await
        .with_context(|| format!("folding tenant {tenant}'s usage changes"))?;
    } else {
        // The one writer connection: nothing appends between the two statements.
        sqlx::query(&format!(
            "INSERT INTO tenant_usage (tenant, vendor, live_servers, orders_in_flight) \
             SELECT tenant, vendor, SUM(live_servers), SUM(orders_in_flight) \
             FROM tenant_usage_changes WHERE tenant = $1 GROUP BY tenant, vendor {ADD}"
        ))
        .bind(tenant)
        .execute(&mut **tx)
        .await
        .with_context(|| format!("folding tenant {tenant}'s usage changes"))?;
        sqlx::query("DELETE FROM tenant_usage_changes WHERE tenant = $1")
            .bind(tenant)
            .execute(&mut **tx)
            .await
            .with_context(|| format!("removing tenant {tenant}'s folded usage changes"))?;
    }
    Ok(())
}

/// The usage of `tenant` (all tenants: `None`) by `(tenant, vendor)`: the folded rows plus the
/// changes since, in one statement (so a fold committing meanwhile is seen whole or not at
/// all). Scopes that use nothing are left out.
async fn usage_by_vendor<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    tenant: Option<&str>,
) -> anyhow::Result<BTreeMap<(String, String), Usage>> {
    let of_tenant = if tenant.is_some() {
        "WHERE tenant = $1"
    } else {
        ""
    };
    let sql = format!(
        "SELECT tenant, vendor, CAST(SUM(live_servers) AS BIGINT) AS live_servers, \
         CAST(SUM(orders_in_flight) AS BIGINT) AS orders_in_flight FROM ( \
         SELECT tenant, vendor, live_servers, orders_in_flight FROM tenant_usage {of_tenant} \
         UNION ALL \
         SELECT tenant, vendor, live_servers, orders_in_flight FROM tenant_usage_changes \
         {of_tenant}) AS usage GROUP BY tenant, vendor"
    );
    let mut statement = sqlx::query(&sql);
    if let Some(tenant) = tenant {
        statement = statement.bind(tenant);
    }
    let rows = statement
        .fetch_all(executor)
        .await
        .context("reading tenants' usage")?;
    let mut usage = BTreeMap::new();
    for row in &rows {
        let read = |column: &str| -> anyhow::Result<u64> {
            Ok(row.try_get::<i64, _>(column)?.max(0) as u64)
        };
        let used = Usage {
            live_servers: read("live_servers")?,
            orders_in_flight: read("orders_in_flight")?,
        };
        if used != Usage::default() {
            usage.insert((row.try_get("tenant")?, row.try_get("vendor")?), used);
        }
    }
    Ok(usage)
}

/// Folds every tenant's usage changes every few seconds, so that a tenant that orders nothing
/// for a while does not leave a long tail of changes to the next reader.
pub async fn keep_folded(store: Store, shutdown: CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
        if let Err(error) = store.fold_usage_changes().await {
            tracing::warn!("folding the tenants' usage changes failed (retried later): {error:#}");
        }
    }
}

/// What each new order of a group became under its tenant's quotas: `None` to insert, or
/// the quota it would pass. Runs in the group's transaction, before anything is inserted;
/// orders are judged in the group's order, each counting those before it.
pub(super) async fn check_new_orders(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    orders: &[&Order],
) -> anyhow::Result<Vec<Option<QuotaExceeded>>> {
    let tenants: BTreeSet<&str> = orders.iter().map(|order| order.tenant.as_str()).collect();
    let tenants: Vec<&str> = tenants.into_iter().collect();
    let quotas = quota_rows(&mut **tx, &tenants).await?;
    if quotas.is_empty() {
        return Ok(vec![None; orders.len()]);
    }
    let mut usage: HashMap<&str, BTreeMap<String, Usage>> = HashMap::new();
    // In tenant order (`tenants` is sorted): see the module docs.
    for tenant in tenants.iter().filter(|t| quotas.contains_key(**t)) {
        lock_tenant(tx, tenant).await?;
        fold_changes(tx, tenant).await?;
        let counted = usage_by_vendor(&mut **tx, Some(tenant)).await?;
        usage.insert(
            tenant,
            counted
                .into_iter()
                .map(|((_, vendor), used)| (vendor, used))
                .collect(),
        );
    }
    let mut verdicts = Vec::with_capacity(orders.len());
    for order in orders {
        let tenant = order.tenant.as_str();
        let vendor = order.vendor.as_str();
        let Some(rows) = quotas.get(tenant) else {
            verdicts.push(None);
            continue;
        };
        let by_vendor = usage.entry(tenant).or_default();
        let adding = usage_of_new_order(order.count);
        let verdict = verdict(rows, by_vendor, vendor, adding);
        if verdict.is_none() {
            by_vendor.entry(vendor.to_string()).or_default().add(adding);
        }
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

/// Which of a tenant's quotas (`rows`) `adding` at `vendor` would pass, over all vendors
/// first, given its usage `by_vendor`; `None`: within them all.
fn verdict(
    rows: &QuotaRows,
    by_vendor: &BTreeMap<String, Usage>,
    vendor: &str,
    adding: Usage,
) -> Option<QuotaExceeded> {
    let all_vendors = rows.get(ALL_VENDORS).and_then(|limits| {
        let mut total = Usage::default();
        by_vendor.values().for_each(|u| total.add(*u));
        exceeded(limits, total, adding, None)
    });
    all_vendors.or_else(|| {
        let limits = rows.get(vendor)?;
        let used = by_vendor.get(vendor).copied().unwrap_or_default();
        exceeded(limits, used, adding, Some(vendor))
    })
}

/// Whether one more live server of `tenant` at `vendor` (a server moving to another
/// placement candidate) stays within the tenant's `max_live_servers` quotas, all vendors and
/// `vendor`'s; the quota it would pass if not. The move adds no order in flight, so those
/// quotas are not asked. Takes the tenant's quota lock for the rest of `tx`, after the order
/// locks the caller holds: no holder of a tenant's lock waits for an order's (a new order's
/// group takes its keys, then the tenants' locks, and inserts), so no circle can form.
pub(super) async fn check_moved_server(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    tenant: &str,
    vendor: &str,
) -> anyhow::Result<Option<QuotaExceeded>> {
    let quotas = quota_rows(&mut **tx, &[tenant]).await?;
    let Some(rows) = quotas.get(tenant) else {
        return Ok(None);
    };
    let live_only: QuotaRows = rows
        .iter()
        .map(|(scope, limits)| {
            let limits = Limits {
                max_orders_in_flight: None,
                ..*limits
            };
            (scope.clone(), limits)
        })
        .collect();
    lock_tenant(tx, tenant).await?;
    let by_vendor = usage_by_vendor(&mut **tx, Some(tenant))
        .await?
        .into_iter()
        .map(|((_, vendor), used)| (vendor, used))
        .collect();
    let adding = Usage {
        live_servers: 1,
        orders_in_flight: 0,
    };
    Ok(verdict(&live_only, &by_vendor, vendor, adding))
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
        let usage = usage_by_vendor(&self.pool, Some(tenant)).await?;
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
        for ((_, vendor), used) in usage {
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
        let mut by_tenant: BTreeMap<String, Usage> = BTreeMap::new();
        for ((tenant, _), used) in usage_by_vendor(&self.pool, None).await? {
            by_tenant.entry(tenant).or_default().add(used);
        }
        Ok(by_tenant)
    }

    /// Folds every tenant's usage changes into its usage rows, one tenant per transaction
    /// under its quota lock.
    pub async fn fold_usage_changes(&self) -> anyhow::Result<()> {
        let tenants: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT tenant FROM tenant_usage_changes")
                .fetch_all(&self.pool)
                .await
                .context("listing tenants with usage changes")?;
        for tenant in tenants {
            let mut tx = self
                .writer
                .begin()
                .await
                .context("starting a transaction")?;
            // The fold's DELETE must see what the lock's previous holder committed.
            read_committed(&mut tx).await?;
            lock_tenant(&mut tx, &tenant).await?;
            fold_changes(&mut tx, &tenant).await?;
            tx.commit().await.context("committing folded usage")?;
        }
        Ok(())
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
        let over = exceeded(&limits, used, usage_of_new_order(1), Some("hetzner")).unwrap();
        assert_eq!(over.quota, "max_live_servers");
        assert_eq!((over.usage, over.limit, over.requested), (3, 3, 1));
        assert_eq!(over.vendor.as_deref(), Some("hetzner"));
        let under = Usage {
            live_servers: 2,
            orders_in_flight: 9,
        };
        assert_eq!(exceeded(&limits, under, usage_of_new_order(1), None), None);
        let flight = Usage {
            live_servers: 2,
            orders_in_flight: 10,
        };
        let over = exceeded(&limits, flight, usage_of_new_order(1), None).unwrap();
        assert_eq!(over.quota, "max_orders_in_flight");
    }

    #[test]
    fn a_rate_is_read_as_written_not_as_it_rounds() {
        let rate_of = |per_second: &str| {
            serde_json::from_str::<OrderRate>(&format!(
                r#"{{"per_second": {per_second}, "burst": 1}}"#
            ))
        };
        // Beyond a bound as written, the bound as a float: read as just beyond it, refused.
        for beyond in ["1000000.0000000001", "0.00099999999999999999", "2e6", "0"] {
            let rate = rate_of(beyond).unwrap();
            let error = rate.check().unwrap_err();
            assert_eq!(error, "per_second must be 0.001 to 1000000", "{beyond}");
        }
        for (within, read) in [
            ("1e6", 1e6),
            ("999999.99999999999999", 1e6),
            ("0.0010", 0.001),
            ("0.00100000000000000000001", 0.001),
            ("7", 7.0),
        ] {
            let rate = rate_of(within).unwrap();
            assert_eq!((rate.per_second, rate.check()), (read, Ok(())), "{within}");
        }
        let error = rate_of(r#""5""#).unwrap_err().to_string();
        assert!(
            error.starts_with("invalid type: string \"5\", expected a number"),
            "{error}"
        );
        let long = format!("1000000.{}1", "0".repeat(100));
        let error = rate_of(&long).unwrap_err().to_string();
        assert!(error.contains("at most 64 characters"), "{error}");
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
