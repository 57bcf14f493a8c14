//! The control API's client ([`vendor_sim::control_client`]) against the simulator's server
//! loop and the fault proxy: every answer reads into its type, every body is taken, and a
//! refused call is an error saying what the simulator answered.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vendor_sim::control::{Capacity, SeedServer};
use vendor_sim::control_client::{FaultsClient, SimClient};
use vendor_sim::conventions::IDEMPOTENCY_LABEL;
use vendor_sim::proxy::{FaultProfile, ProxyConfig, ProxyFaultKind, ProxyFaultRule, spawn_proxy};
use vendor_sim::state::{FaultRule, Vendor};

async fn start_sim() -> SocketAddr {
    common::start_sim(Duration::from_secs(3600)).await
}

/// A server seeded for each vendor is counted, listed with its key where that vendor's
/// plugin puts it, and (Azure's) found in the ARM census with its NIC and public IP.
#[tokio::test]
async fn seeded_servers_are_counted_and_listed() {
    let sim = SimClient::new(&format!("http://{}/", start_sim().await));
    for vendor in Vendor::ALL {
        let stats = sim.vendor_stats(vendor).await.unwrap();
        assert_eq!((stats.live, stats.created_total), (0, 0), "{vendor:?}");
        let seeded = sim
            .seed_server(&SeedServer {
                vendor,
                name: format!("web-{}", vendor.name()),
                idempotency_key: Some(format!("key-{}", vendor.name())),
            })
            .await
            .unwrap();
        assert_eq!(seeded.vendor, vendor);
        let servers = sim.servers_of(vendor).await.unwrap();
        assert_eq!(servers.len(), 1, "{servers:?}");
        assert_eq!(servers[0].id, seeded.id);
        assert_eq!(servers[0].name, format!("web-{}", vendor.name()));
        let key = format!("key-{}", vendor.name());
        assert_eq!(servers[0].idempotency_key.as_deref(), Some(key.as_str()));
        assert_eq!(servers[0].labels.get(IDEMPOTENCY_LABEL), Some(&key));
    }
    let stats = sim.stats().await.unwrap();
    assert_eq!(stats.vendors.len(), Vendor::ALL.len());
    assert!(
        stats
            .vendors
            .values()
            .all(|v| v.live == 1 && v.booting == 1)
    );
    assert!(stats.vendors.values().all(|v| v.duplicates.is_empty()));
    assert_eq!(sim.servers().await.unwrap().len(), Vendor::ALL.len());
    assert!(sim.ssh_keys().await.unwrap().is_empty());

    let resources = sim.azure_resources().await.unwrap();
    let tagged: Vec<&str> = resources
        .iter()
        .filter(|r| {
            r.tags
                .get(IDEMPOTENCY_LABEL)
                .is_some_and(|k| k == "key-azure")
        })
        .map(|r| r.kind.as_str())
        .collect();
    assert!(
        tagged.contains(&"Microsoft.Compute/virtualMachines"),
        "{resources:?}"
    );
}

/// Faults arm, list with their counts, and clear; page caps and sold-out regions are taken;
/// a refused body is an error with the simulator's reason.
#[tokio::test]
async fn faults_paging_and_capacity_are_set() {
    let sim = SimClient::new(&format!("http://{}", start_sim().await));
    let faults = sim.faults();
    let rule = FaultRule::parse_flag("hetzner:rate_limit:3").unwrap();
    faults.arm(&rule.clone().into()).await.unwrap();
    let armed = faults.armed().await.unwrap();
    assert_eq!(armed, [ProxyFaultRule::from(rule)]);
    assert_eq!(armed[0].vendor.as_deref(), Some("hetzner"));

    // The proxy's standing kinds are the proxy's.
    let refused = faults
        .arm(&ProxyFaultRule::new(
            ProxyFaultKind::SmallPages { page_size: 1 },
            1,
        ))
        .await
        .unwrap_err();
    assert!(format!("{refused:#}").contains("422"), "{refused:#}");
    faults.clear().await.unwrap();
    assert!(faults.armed().await.unwrap().is_empty());

    sim.cap_pages(Some(3)).await.unwrap();
    sim.cap_pages(None).await.unwrap();
    sim.set_capacity(&Capacity {
        vendor: Vendor::Hetzner,
        region: "fsn1".into(),
        available: false,
    })
    .await
    .unwrap();
    let refused = sim
        .set_capacity(&Capacity {
            vendor: Vendor::DigitalOcean,
            region: "nyc3".into(),
            available: false,
        })
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("hetzner only"),
        "{refused:#}"
    );
}

/// The same fault client arms the fault proxy, naming its vendor in rules that name none.
#[tokio::test]
async fn the_fault_client_arms_the_proxy() {
    let sim = start_sim().await;
    let profile = FaultProfile::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/hetzner/faults.toml"),
    )
    .unwrap();
    let proxy = spawn_proxy(ProxyConfig {
        upstream: format!("http://{sim}/hetzner/v1").parse().unwrap(),
        profile,
        upstream_ca_pem: None,
    })
    .await
    .unwrap();
    let faults = FaultsClient::new(&proxy.url).for_vendor("hetzner");
    let small_pages = ProxyFaultRule::new(ProxyFaultKind::SmallPages { page_size: 1 }, 1);
    faults.arm(&small_pages).await.unwrap();
    let lost = ProxyFaultRule::new(ProxyFaultKind::LostResponse, 1).only("POST", "/servers");
    faults.arm(&lost).await.unwrap();
    let armed = faults.armed().await.unwrap();
    assert_eq!(armed.len(), 2, "{armed:?}");
    assert!(armed.iter().all(|r| r.vendor.as_deref() == Some("hetzner")));
    assert_eq!(armed[1].method.as_deref(), Some("POST"));
    assert_eq!(armed[1].path.as_deref(), Some("/servers"));
    faults.clear().await.unwrap();
    assert!(faults.armed().await.unwrap().is_empty());
}
