//! `order-api tenants set-quota|set-rate|show|list`: tenants' quotas and order rates on the
//! orders database (what `PUT /v1/tenants/{tenant}/quotas` sets, one piece at a time).

use std::io::Write;

use anyhow::Context;

use crate::auth::check_tenant_name;
use crate::config::TenantsCommand;
use crate::store::{Limits, OrderRate, Store};

/// Runs a `tenants` subcommand; what it did goes to standard error, `show` and `list` print
/// on standard output.
pub async fn run(command: TenantsCommand) -> anyhow::Result<()> {
    match command {
        TenantsCommand::SetQuota {
            tenant,
            vendor,
            live_servers,
            orders_in_flight,
            database,
        } => {
            check_tenant_name(&tenant)?;
            anyhow::ensure!(
                vendor.as_deref().is_none_or(|v| !v.trim().is_empty()),
                "--vendor names a vendor; leave it out for a quota over all vendors"
            );
            let limits = Limits {
                max_live_servers: live_servers,
                max_orders_in_flight: orders_in_flight,
            };
            limits.check().map_err(anyhow::Error::msg)?;
            let store = Store::connect(&database.database_url).await?;
            store.set_quota(&tenant, vendor.as_deref(), limits).await?;
            let scope = vendor
                .map(|v| format!("at vendor '{v}'"))
                .unwrap_or_else(|| "over all vendors".into());
            if limits.is_empty() {
                eprintln!("removed tenant '{tenant}'s quota {scope}");
            } else {
                eprintln!(
                    "tenant '{tenant}' {scope}: live servers {}, orders in flight {}",
                    shown(limits.max_live_servers),
                    shown(limits.max_orders_in_flight)
                );
            }
        }
        TenantsCommand::SetRate {
            tenant,
            per_second,
            burst,
            default: _,
            database,
        } => {
            check_tenant_name(&tenant)?;
            let store = Store::connect(&database.database_url).await?;
            let rate = per_second.map(|per_second| OrderRate {
                per_second,
                burst: burst.unwrap_or_else(|| per_second.ceil().clamp(1.0, OrderRate::MAX) as u32),
            });
            if let Some(rate) = rate {
                rate.check().map_err(anyhow::Error::msg)?;
            }
            store.set_rate(&tenant, rate).await?;
            match rate {
                Some(rate) => eprintln!(
                    "tenant '{tenant}' may send {} orders per second (bursts of {}) to each order-api instance",
                    rate.per_second, rate.burst
                ),
                None => eprintln!("tenant '{tenant}' has the instances' default order rate again"),
            }
        }
        TenantsCommand::Show { tenant, database } => {
            check_tenant_name(&tenant)?;
            let store = Store::connect(&database.database_url).await?;
            // The instances' default rate is theirs: `rate` shows the tenant's own only.
            let quotas = store.tenant_quotas(&tenant, None).await?;
            let mut out = std::io::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &quotas).context("printing the quotas")?;
            writeln!(out)?;
            if quotas.rate.is_none() {
                eprintln!("no rate of its own: the instances' default (TENANT_ORDER_RATE) applies");
            }
        }
        TenantsCommand::List { database } => {
            let store = Store::connect(&database.database_url).await?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<20}  {:<16}  {:>12}  {:>16}",
                "tenant", "vendor", "live servers", "orders in flight"
            )?;
            for (tenant, vendor, limits) in store.all_quotas().await? {
                writeln!(
                    out,
                    "{:<20}  {:<16}  {:>12}  {:>16}",
                    tenant,
                    vendor.as_deref().unwrap_or("(all)"),
                    shown(limits.max_live_servers),
                    shown(limits.max_orders_in_flight)
                )?;
            }
            let mut rates: Vec<_> = store.rates().await?.into_iter().collect();
            rates.sort_by(|a, b| a.0.cmp(&b.0));
            if !rates.is_empty() {
                writeln!(
                    out,
                    "\n{:<20}  {:>12}  {:>8}",
                    "tenant", "orders/s", "burst"
                )?;
                for (tenant, rate) in rates {
                    writeln!(
                        out,
                        "{:<20}  {:>12}  {:>8}",
                        tenant, rate.per_second, rate.burst
                    )?;
                }
            }
        }
    }
    Ok(())
}

fn shown(limit: Option<u64>) -> String {
    limit.map_or_else(|| "-".into(), |n| n.to_string())
}
