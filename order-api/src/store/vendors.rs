//! The vendors hosts serve: which hosts serve each (announced and withdrawn by the hosts,
//! in `vendor_hosts`), and beyond that:
//! - vendors a host has a plugin for but cannot serve: the host's reason (a secret missing,
//!   a plugin that does not load), one record per vendor and host. Admins see them in
//!   `GET /v1/vendors`; they never make a vendor known to `POST /v1/orders` (only a host's
//!   announcement does, in `vendor_hosts`);
//! - each serving host's catalogue of the vendor (what its plugin accepts without asking the
//!   vendor), kept with the host's row in `vendor_hosts`; `GET /v1/vendors/{vendor}/catalogue`
//!   serves what every host serving the vendor accepts.
//!
//! Whether a vendor is served is asked for every order, and answered from memory for a
//! moment ([`VENDOR_CACHE_TTL`]).

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use provisioner_contract::{VendorAnnouncement, VendorCatalogue, VendorWithdrawal};
use serde::Serialize;
use sqlx::Row;

use super::Store;
use super::db::{DbTime, time};
use super::recent::RecentAnswers;

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

/// A vendor at least one host serves.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Vendor {
    /// The vendor id orders use.
    pub vendor: String,
    /// A name for people (from the latest announcement).
    pub display_name: String,
    /// The plugin's version (from the latest announcement).
    pub plugin_version: String,
    /// The hosts that serve it, latest first.
    pub hosts: Vec<VendorHost>,
}

/// One host serving a vendor.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct VendorHost {
    /// The host's id.
    pub host_id: String,
    /// The plugin version that host runs.
    pub plugin_version: String,
    /// When it first announced the vendor.
    pub first_seen: DateTime<Utc>,
    /// When it last announced the vendor.
    pub last_seen: DateTime<Utc>,
}

impl Store {
    /// Records (or refreshes) that a host serves a vendor (and so that it is no longer
    /// unavailable there).
    pub async fn upsert_vendor(&self, announcement: &VendorAnnouncement) -> anyhow::Result<()> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        sqlx::query(
            "INSERT INTO vendor_hosts (vendor, host_id, display_name, plugin_version, first_seen, last_seen, catalogue) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (vendor, host_id) DO UPDATE SET \
             display_name = excluded.display_name, plugin_version = excluded.plugin_version, \
             last_seen = excluded.last_seen, catalogue = excluded.catalogue",
        )
        .bind(&announcement.vendor)
        .bind(&announcement.host_id)
        .bind(&announcement.display_name)
        .bind(&announcement.plugin_version)
        .bind(DbTime(announcement.at))
        .bind(DbTime(announcement.at))
        .bind(catalogue_to_store(announcement))
        .execute(&mut *tx)
        .await
        .context("recording a vendor")?;
        clear_unavailable(&mut tx, &announcement.vendor, &announcement.host_id).await?;
        tx.commit().await.context("committing a vendor")?;
        Ok(())
    }

    /// Records that a host stopped serving a vendor; with a reason, that it has the
    /// vendor's plugin but cannot serve it (listed to admins, see
    /// [`Store::unavailable_vendors`]).
    pub async fn withdraw_vendor(&self, withdrawal: &VendorWithdrawal) -> anyhow::Result<()> {
        let mut tx = self
            .writer
            .begin()
            .await
            .context("starting a transaction")?;
        sqlx::query("DELETE FROM vendor_hosts WHERE vendor = $1 AND host_id = $2")
            .bind(&withdrawal.vendor)
            .bind(&withdrawal.host_id)
            .execute(&mut *tx)
            .await
            .context("withdrawing a vendor")?;
        match &withdrawal.unavailable {
            Some(reason) => mark_unavailable(&mut tx, withdrawal, reason).await?,
            None => clear_unavailable(&mut tx, &withdrawal.vendor, &withdrawal.host_id).await?,
        }
        tx.commit().await.context("committing a withdrawal")?;
        self.served_vendors.forget(&withdrawal.vendor);
        Ok(())
    }

    /// Every vendor some host serves, by id.
    pub async fn vendors(&self) -> anyhow::Result<Vec<Vendor>> {
        let rows = sqlx::query("SELECT * FROM vendor_hosts ORDER BY vendor, last_seen DESC")
            .fetch_all(&self.pool)
            .await
            .context("listing vendors")?;
        let mut vendors: Vec<Vendor> = Vec::new();
        for row in &rows {
            let vendor: String = row.try_get("vendor")?;
            let host = VendorHost {
                host_id: row.try_get("host_id")?,
                plugin_version: row.try_get("plugin_version")?,
                first_seen: time(row, "first_seen")?,
                last_seen: time(row, "last_seen")?,
            };
            match vendors.last_mut() {
                Some(last) if last.vendor == vendor => last.hosts.push(host),
                _ => vendors.push(Vendor {
                    vendor,
                    display_name: row.try_get("display_name")?,
                    plugin_version: host.plugin_version.clone(),
                    hosts: vec![host],
                }),
            }
        }
        Ok(vendors)
    }

    /// Whether a host has announced `vendor`.
    ///
    /// Asked for every order: a vendor found served is remembered for [`VENDOR_CACHE_TTL`]
    /// (a withdrawal through this store forgets it at once; one another order-api instance
    /// recorded is seen within that time, like an order accepted a moment before the
    /// withdrawal). A vendor not served is read again every time, so an announcement counts
    /// at once.
    pub async fn vendor_known(&self, vendor: &str) -> anyhow::Result<bool> {
        Ok(self.served_plugin_versions(vendor).await?.is_some())
    }

    /// The plugin versions the hosts serving `vendor` run (each once, in order), or `None`
    /// when no host serves it; remembered as [`Store::vendor_known`] says (order-api's own
    /// plugin check asks it for every order, to judge only with the version the hosts run).
    pub async fn served_plugin_versions(
        &self,
        vendor: &str,
    ) -> anyhow::Result<Option<PluginVersions>> {
        if let Some(versions) = self.served_vendors.get(vendor, VENDOR_CACHE_TTL) {
            return Ok(Some(versions));
        }
        let rows = sqlx::query(
            "SELECT DISTINCT plugin_version FROM vendor_hosts WHERE vendor = $1 \
             ORDER BY plugin_version",
        )
        .bind(vendor)
        .fetch_all(&self.pool)
        .await
        .context("looking up a vendor")?;
        if rows.is_empty() {
            return Ok(None);
        }
        let versions: PluginVersions = rows
            .iter()
            .map(|row| row.try_get("plugin_version"))
            .collect::<Result<_, _>>()
            .context("reading a vendor's plugin versions")?;
        self.served_vendors
            .put(vendor.to_string(), versions.clone());
        Ok(Some(versions))
    }
}

impl Store {
    /// What every host serving `vendor` accepts (see [`common_catalogue`]); `None` when no
    /// host serves it. Hosts not heard from for [`CATALOGUE_HOST_SILENCE`] (gone without a
    /// withdrawal, or renamed) narrow nothing, unless no host was heard from since.
    pub async fn vendor_catalogue(&self, vendor: &str) -> anyhow::Result<Option<VendorCatalogue>> {
        let rows = sqlx::query("SELECT catalogue, last_seen FROM vendor_hosts WHERE vendor = $1")
            .bind(vendor)
            .fetch_all(&self.pool)
            .await
            .context("reading a vendor's catalogue")?;
        if rows.is_empty() {
            return Ok(None);
        }
        let silent_since = Utc::now() - CATALOGUE_HOST_SILENCE;
        let mut heard = Vec::new();
        let mut all = Vec::new();
        for row in &rows {
            let text: Option<String> = row.try_get("catalogue")?;
            let catalogue = text.and_then(|text| serde_json::from_str(&text).ok());
            if time(row, "last_seen")? >= silent_since {
                heard.push(catalogue.clone());
            }
            all.push(catalogue);
        }
        let catalogues = if heard.is_empty() { all } else { heard };
        Ok(Some(common_catalogue(&catalogues)))
    }

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

/// How long a vendor found served is trusted without reading `vendor_hosts` again.
pub const VENDOR_CACHE_TTL: Duration = Duration::from_secs(1);
/// Most vendors remembered at once (the memory starts afresh beyond).
const VENDOR_CACHE_MAX: usize = 1_000;

/// The plugin versions the hosts serving a vendor run, each once.
pub type PluginVersions = std::sync::Arc<[String]>;

/// Vendors found served lately, with their hosts' plugin versions.
pub type ServedVendors = RecentAnswers<String, PluginVersions>;

/// An empty [`ServedVendors`].
pub fn served_vendors() -> ServedVendors {
    RecentAnswers::new(VENDOR_CACHE_TTL, VENDOR_CACHE_MAX)
}

/// How long a host may go unheard before its catalogue stops narrowing its vendor's: twenty
/// rounds of announcements at the hosts' default `--announce-interval-secs` (30).
pub const CATALOGUE_HOST_SILENCE: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// The JSON a host's catalogue is kept as; `None` (stored as NULL: unknown) when the host
/// sent none, or one beyond [`VendorCatalogue::MAX_ENTRIES`] entries of
/// [`VendorCatalogue::MAX_ENTRY_BYTES`] a list (a host sanitises its plugin's lists first, so
/// only a faulty or foreign sender exceeds them; logged).
pub(super) fn catalogue_to_store(announcement: &VendorAnnouncement) -> Option<String> {
    let catalogue = announcement.catalogue.as_ref()?;
    let within_bounds = [&catalogue.regions, &catalogue.sizes, &catalogue.images]
        .into_iter()
        .flatten()
        .all(|list| {
            list.len() <= VendorCatalogue::MAX_ENTRIES
                && list
                    .iter()
                    .all(|entry| entry.len() <= VendorCatalogue::MAX_ENTRY_BYTES)
        });
    if !within_bounds {
        tracing::warn!(
            vendor = %announcement.vendor,
            host_id = %announcement.host_id,
            "a host announced a catalogue beyond the bounds ({} entries of {} bytes a list); \
             keeping none for it",
            VendorCatalogue::MAX_ENTRIES,
            VendorCatalogue::MAX_ENTRY_BYTES
        );
        return None;
    }
    serde_json::to_string(catalogue).ok()
}

/// What every one of the hosts serving a vendor accepts, field by field: the values all
/// listing hosts list (in the first listing host's order). A host that lists nothing for a
/// field (its plugin accepts any value there), or said nothing at all (`None`: an older host
/// or plugin), does not narrow that field; a field no host lists stays `None`.
pub fn common_catalogue(catalogues: &[Option<VendorCatalogue>]) -> VendorCatalogue {
    fn common<'a>(lists: impl Iterator<Item = &'a Option<Vec<String>>>) -> Option<Vec<String>> {
        let mut lists = lists.flatten();
        let first = lists.next()?.clone();
        Some(lists.fold(first, |kept, list| {
            kept.into_iter()
                .filter(|value| list.contains(value))
                .collect()
        }))
    }
    let known: Vec<&VendorCatalogue> = catalogues.iter().flatten().collect();
    VendorCatalogue {
        regions: common(known.iter().map(|c| &c.regions)),
        sizes: common(known.iter().map(|c| &c.sizes)),
        images: common(known.iter().map(|c| &c.images)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(regions: Option<&[&str]>, sizes: Option<&[&str]>) -> Option<VendorCatalogue> {
        let owned = |list: Option<&[&str]>| list.map(|l| l.iter().map(|v| v.to_string()).collect());
        Some(VendorCatalogue {
            regions: owned(regions),
            sizes: owned(sizes),
            images: None,
        })
    }

    /// An order may land on any host serving its vendor: the form offers what all of them
    /// accept. A host with no list for a field, or no catalogue at all, narrows nothing.
    #[test]
    fn the_common_catalogue_is_what_every_listing_host_accepts() {
        let common = common_catalogue(&[
            listing(Some(&["fsn1", "nbg1", "hel1"]), None),
            None,
            listing(Some(&["hel1", "fsn1"]), Some(&["cx22"])),
        ]);
        assert_eq!(
            common.regions,
            Some(vec!["fsn1".to_string(), "hel1".to_string()])
        );
        assert_eq!(common.sizes, Some(vec!["cx22".to_string()]));
        assert_eq!(common.images, None);
        assert_eq!(common_catalogue(&[None, None]), VendorCatalogue::default());
    }

    /// A catalogue beyond the bounds is not kept (it would be served to every tenant).
    #[test]
    fn a_catalogue_beyond_the_bounds_is_not_kept() {
        let announcement = |regions: Vec<String>| VendorAnnouncement {
            vendor: "hetzner".into(),
            display_name: "Hetzner".into(),
            plugin_version: "1".into(),
            host_id: "h".into(),
            at: chrono::Utc::now(),
            catalogue: Some(VendorCatalogue {
                regions: Some(regions),
                sizes: None,
                images: None,
            }),
        };
        assert!(catalogue_to_store(&announcement(vec!["fsn1".into()])).is_some());
        let many = vec!["r".to_string(); VendorCatalogue::MAX_ENTRIES + 1];
        assert_eq!(catalogue_to_store(&announcement(many)), None);
        let long = vec!["r".repeat(VendorCatalogue::MAX_ENTRY_BYTES + 1)];
        assert_eq!(catalogue_to_store(&announcement(long)), None);
    }
}
