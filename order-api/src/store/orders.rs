//! Orders as stored and the reads of them: one order with its event log (also the events
//! after a given one, for live streams), a filtered page of orders, the count in each status.

use anyhow::Context;
use chrono::{DateTime, Utc};
use provisioner_contract::{Fault, ServerInfo, ServerSpec};
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;
use uuid::Uuid;

use super::Store;
use super::db::{DbTime, parse_json, parse_status, parse_uuid, time};
use super::fleet_ids::{Candidate, FleetServer};
use crate::lifecycle::OrderStatus;

/// An order as stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Order {
    /// The order id (UUIDv7).
    pub id: Uuid,
    /// The tenant it belongs to.
    pub tenant: String,
    /// Where it is.
    pub status: OrderStatus,
    /// The vendor serving it.
    pub vendor: String,
    /// What was ordered.
    #[serde(flatten)]
    pub spec: ServerSpec,
    /// The server, once the vendor made one.
    pub server: Option<ServerInfo>,
    /// Why it failed, when it did.
    pub fault: Option<Fault>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Called when the order settles (see [`crate::webhooks`]).
    pub webhook_url: Option<String>,
    /// How many servers it is for (1 unless ordered with `count`).
    pub count: u32,
    /// For several servers: whether one failing for good removes all the others (and the
    /// order fails) rather than keeping those that came up.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub all_or_nothing: bool,
    /// For several servers, each with its own state, in number order (read with the order
    /// where the API shows one order; absent in lists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<Vec<FleetServer>>,
    /// The places it may be served, in order, when ordered with `placement` (its `vendor`,
    /// `region`, `size` and `image` are the first's; each server's `candidate` says which
    /// serves it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Vec<Candidate>>,
}

/// One line of an order's event log.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OrderEvent {
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The order's status after it.
    pub status: OrderStatus,
    /// What happened.
    pub message: String,
    /// Which delivery of the creation request it came from, for host events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// Filters and page position for listing orders.
#[derive(Debug, Clone, Default)]
pub struct OrderQuery {
    /// Only this tenant's orders (`None`: every tenant's).
    pub tenant: Option<String>,
    /// Only orders in this status.
    pub status: Option<OrderStatus>,
    /// Only orders for this vendor.
    pub vendor: Option<String>,
    /// Only orders created at or after this time.
    pub created_after: Option<DateTime<Utc>>,
    /// Only orders created before this time.
    pub created_before: Option<DateTime<Utc>>,
    /// Only orders older than this id (the cursor).
    pub before: Option<Uuid>,
    /// At most this many.
    pub limit: u32,
}

impl Store {
    /// The order (`None`: no such order) and its events after event number `after`, each
    /// with its number (increasing; what an SSE client sends back as `Last-Event-ID`).
    pub async fn events_since(
        &self,
        id: Uuid,
        after: i64,
    ) -> anyhow::Result<Option<(Order, Vec<(i64, OrderEvent)>)>> {
        self.order_and_events_after(id, after, None).await
    }

    /// The order `id` names (if it belongs to `tenant`, when one is given) with its events
    /// after event `after`.
    pub(super) async fn order_and_events_after(
        &self,
        id: Uuid,
        after: i64,
        tenant: Option<&str>,
    ) -> anyhow::Result<Option<(Order, Vec<(i64, OrderEvent)>)>> {
        let Some(mut order) = self.find_order(id, tenant).await? else {
            return Ok(None);
        };
        if order.count > 1 || order.placement.is_some() {
            order.servers = Some(self.fleet_servers(order.id).await?);
        }
        let rows = sqlx::query(
            "SELECT seq, at, status, message, attempt FROM order_events \
             WHERE order_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(id.to_string())
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .context("reading an order's new events")?;
        let events = rows
            .iter()
            .map(|row| {
                Ok((
                    row.try_get("seq")?,
                    OrderEvent {
                        at: time(row, "at")?,
                        status: parse_status(row.try_get("status")?)?,
                        message: row.try_get("message")?,
                        attempt: row.try_get::<Option<i64>, _>("attempt")?.map(|a| a as u32),
                    },
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Some((order, events)))
    }

    /// One order with its event log.
    pub async fn order(&self, id: Uuid) -> anyhow::Result<Option<(Order, Vec<OrderEvent>)>> {
        self.order_of(id, None).await
    }

    /// One order with its event log if it belongs to `tenant` (any tenant's with `None`).
    /// The tenant is part of the first query, so another tenant's order costs exactly what
    /// an id that does not exist costs: one indexed lookup that finds nothing.
    pub async fn order_of(
        &self,
        id: Uuid,
        tenant: Option<&str>,
    ) -> anyhow::Result<Option<(Order, Vec<OrderEvent>)>> {
        let found = self.order_and_events_after(id, 0, tenant).await?;
        Ok(found
            .map(|(order, events)| (order, events.into_iter().map(|(_, event)| event).collect())))
    }

    /// The order `id` names, if it exists (and belongs to `tenant`, when one is given).
    async fn find_order(&self, id: Uuid, tenant: Option<&str>) -> anyhow::Result<Option<Order>> {
        let row = match tenant {
            None => sqlx::query("SELECT * FROM orders WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool),
            Some(tenant) => sqlx::query("SELECT * FROM orders WHERE id = $1 AND tenant = $2")
                .bind(id.to_string())
                .bind(tenant.to_string())
                .fetch_optional(&self.pool),
        }
        .await
        .context("reading an order")?;
        row.as_ref().map(order_from_row).transpose()
    }

    /// Orders newest first, filtered, one page at a time.
    pub async fn orders(&self, query: &OrderQuery) -> anyhow::Result<Vec<Order>> {
        let mut sql = String::from("SELECT * FROM orders WHERE fleet_id IS NULL");
        let mut parameters = 0;
        let mut filter = |condition: &str| {
            parameters += 1;
            sql.push_str(&format!(" AND {condition} ${parameters}"));
        };
        if query.tenant.is_some() {
            filter("tenant =");
        }
        if query.status.is_some() {
            filter("status =");
        }
        if query.vendor.is_some() {
            filter("vendor =");
        }
        if query.created_after.is_some() {
            filter("created_at >=");
        }
        if query.created_before.is_some() {
            filter("created_at <");
        }
        if query.before.is_some() {
            filter("id <");
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", parameters + 1));
        let mut statement = sqlx::query(&sql);
        if let Some(tenant) = &query.tenant {
            statement = statement.bind(tenant);
        }
        if let Some(status) = query.status {
            statement = statement.bind(status.as_str());
        }
        if let Some(vendor) = &query.vendor {
            statement = statement.bind(vendor);
        }
        if let Some(after) = query.created_after {
            statement = statement.bind(DbTime(after));
        }
        if let Some(before) = query.created_before {
            statement = statement.bind(DbTime(before));
        }
        if let Some(before) = query.before {
            statement = statement.bind(before.to_string());
        }
        let rows = statement
            .bind(i64::from(query.limit))
            .fetch_all(&self.pool)
            .await
            .context("listing orders")?;
        rows.iter().map(order_from_row).collect()
    }

    /// How many orders are in each status.
    pub async fn count_orders_by_status(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<OrderStatus, i64>> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM orders WHERE fleet_id IS NULL GROUP BY status",
        )
        .fetch_all(&self.pool)
        .await
        .context("counting orders")?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get("status")?;
                Ok((
                    status.parse().map_err(anyhow::Error::msg)?,
                    row.try_get("n")?,
                ))
            })
            .collect()
    }
}

pub(super) fn order_from_row(row: &AnyRow) -> anyhow::Result<Order> {
    Ok(Order {
        id: parse_uuid(row.try_get("id")?)?,
        tenant: row.try_get("tenant")?,
        status: parse_status(row.try_get("status")?)?,
        vendor: row.try_get("vendor")?,
        spec: ServerSpec {
            name: row.try_get("name")?,
            region: row.try_get("region")?,
            size: row.try_get("size")?,
            image: row.try_get("image")?,
            ssh_keys: parse_json(row.try_get("ssh_keys")?)?.unwrap_or_default(),
            user_data: row.try_get("user_data")?,
            labels: parse_json(row.try_get("labels")?)?.unwrap_or_default(),
        },
        server: parse_json(row.try_get("server")?)?,
        fault: parse_json(row.try_get("fault")?)?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        webhook_url: row.try_get("webhook_url")?,
        count: row
            .try_get::<Option<i64>, _>("fleet_size")?
            .map_or(1, |size| size as u32),
        all_or_nothing: row.try_get::<i64, _>("all_or_nothing")? != 0,
        servers: None,
        placement: parse_json(row.try_get("placement")?)?,
    })
}
