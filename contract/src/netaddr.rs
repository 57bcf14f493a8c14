//! Which IP addresses are public: the one notion of "an address on the internet" that
//! order-api (webhook receivers) and provisioner-host (plugins' granted hosts) both use.
//!
//! An address is public when it is in none of the blocks of the IANA IPv4 and IPv6
//! Special-Purpose Address Registries (all of them, also the few the registry marks globally
//! reachable: anycast services such as AS112, PCP, TURN and AMT, where no webhook receiver or
//! vendor API lives), is not multicast, and, for IPv6, is global unicast (`2000::/3`, so also
//! the deprecated site-local `fec0::/10` and the reserved `::/8` are not). An IPv6 address
//! that carries an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-translated
//! `::ffff:0:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96` and 6to4 `2002::/16`) is
//! judged by that IPv4 address: it is where the packets end up. The local-use NAT64 prefix
//! `64:ff9b:1::/48` is never public (its embedding is network-specific and the registry
//! marks it not globally reachable).
//!
//! The registry blocks come from the `iprfc` crate's checked-in snapshot of both registries
//! (its `RFC6890` aggregate, every row including deprecated ones).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a public address (see the module docs for the rules).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => is_public_v4(v4),
            None => is_global_unicast(v6) && !iprfc::RFC6890.contains(&v6),
        },
    }
}

/// Whether an IPv4 address is in no special-purpose block and not multicast.
fn is_public_v4(v4: Ipv4Addr) -> bool {
    !v4.is_multicast() && !iprfc::RFC6890.contains(&v4)
}

/// Whether an IPv6 address is in the global unicast space `2000::/3`, the only space IANA
/// gives out for unicast on the internet.
fn is_global_unicast(v6: Ipv6Addr) -> bool {
    v6.segments()[0] & 0xe000 == 0x2000
}

/// The IPv4 address an IPv6 address carries, in the forms that lead to it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), IPv4-compatible (`::a.b.c.d`,
/// deprecated), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:aabb:ccdd::/48`).
pub fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let last = |high: u16, low: u16| {
        let ([a, b], [c, d]) = (high.to_be_bytes(), low.to_be_bytes());
        Some(Ipv4Addr::new(a, b, c, d))
    };
    match s {
        [0, 0, 0, 0, 0, 0xffff, high, low]
        | [0, 0, 0, 0, 0xffff, 0, high, low]
        | [0, 0, 0, 0, 0, 0, high, low]
        | [0x64, 0xff9b, 0, 0, 0, 0, high, low] => last(high, low),
        [0x2002, high, low, ..] => last(high, low),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every block of the IANA IPv4 Special-Purpose Address Registry (as of 2025-10-09),
    /// with an address inside it.
    const IPV4_REGISTRY: &[(&str, &str, &str)] = &[
        ("0.0.0.0/8", "\"This network\"", "0.1.2.3"),
        ("0.0.0.0/32", "\"This host on this network\"", "0.0.0.0"),
        ("10.0.0.0/8", "Private-Use", "10.1.2.3"),
        ("100.64.0.0/10", "Shared Address Space", "100.127.255.254"),
        ("127.0.0.0/8", "Loopback", "127.0.0.1"),
        ("169.254.0.0/16", "Link Local", "169.254.169.254"),
        ("172.16.0.0/12", "Private-Use", "172.31.255.254"),
        ("192.0.0.0/24", "IETF Protocol Assignments", "192.0.0.1"),
        (
            "192.0.0.0/29",
            "IPv4 Service Continuity Prefix",
            "192.0.0.2",
        ),
        ("192.0.0.8/32", "IPv4 dummy address", "192.0.0.8"),
        ("192.0.0.9/32", "Port Control Protocol Anycast", "192.0.0.9"),
        (
            "192.0.0.10/32",
            "Traversal Using Relays around NAT Anycast",
            "192.0.0.10",
        ),
        ("192.0.0.170/32", "NAT64/DNS64 Discovery", "192.0.0.170"),
        ("192.0.0.171/32", "NAT64/DNS64 Discovery", "192.0.0.171"),
        ("192.0.2.0/24", "Documentation (TEST-NET-1)", "192.0.2.1"),
        ("192.31.196.0/24", "AS112-v4", "192.31.196.1"),
        ("192.52.193.0/24", "AMT", "192.52.193.1"),
        (
            "192.88.99.0/24",
            "Deprecated (6to4 Relay Anycast)",
            "192.88.99.1",
        ),
        (
            "192.88.99.2/32",
            "6a44-relay anycast address",
            "192.88.99.2",
        ),
        ("192.168.0.0/16", "Private-Use", "192.168.1.1"),
        (
            "192.175.48.0/24",
            "Direct Delegation AS112 Service",
            "192.175.48.1",
        ),
        ("198.18.0.0/15", "Benchmarking", "198.18.0.1"),
        (
            "198.51.100.0/24",
            "Documentation (TEST-NET-2)",
            "198.51.100.1",
        ),
        (
            "203.0.113.0/24",
            "Documentation (TEST-NET-3)",
            "203.0.113.1",
        ),
        ("240.0.0.0/4", "Reserved", "240.0.0.1"),
        ("255.255.255.255/32", "Limited Broadcast", "255.255.255.255"),
    ];

    /// Every block of the IANA IPv6 Special-Purpose Address Registry (as of 2025-10-09),
    /// with an address inside it. The forms that carry an IPv4 address are here with a
    /// private one inside (they are judged by it; see `judges_the_embedded_ipv4_address`).
    const IPV6_REGISTRY: &[(&str, &str, &str)] = &[
        ("::1/128", "Loopback Address", "::1"),
        ("::/128", "Unspecified Address", "::"),
        ("::ffff:0:0/96", "IPv4-mapped Address", "::ffff:10.0.0.1"),
        ("64:ff9b::/96", "IPv4-IPv6 Translat.", "64:ff9b::127.0.0.1"),
        (
            "64:ff9b:1::/48",
            "IPv4-IPv6 Translat.",
            "64:ff9b:1::8.8.8.8",
        ),
        ("100::/64", "Discard-Only Address Block", "100::1"),
        ("100:0:0:1::/64", "Dummy IPv6 Prefix", "100:0:0:1::1"),
        ("2001::/23", "IETF Protocol Assignments", "2001:1ff::1"),
        (
            "2001::/32",
            "TEREDO",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ),
        (
            "2001:1::1/128",
            "Port Control Protocol Anycast",
            "2001:1::1",
        ),
        (
            "2001:1::2/128",
            "Traversal Using Relays around NAT Anycast",
            "2001:1::2",
        ),
        (
            "2001:1::3/128",
            "DNS-SD Service Registration Protocol Anycast",
            "2001:1::3",
        ),
        ("2001:2::/48", "Benchmarking", "2001:2::1"),
        ("2001:3::/32", "AMT", "2001:3::1"),
        ("2001:4:112::/48", "AS112-v6", "2001:4:112::1"),
        (
            "2001:10::/28",
            "Deprecated (previously ORCHID)",
            "2001:10::1",
        ),
        ("2001:20::/28", "ORCHIDv2", "2001:20::1"),
        (
            "2001:30::/28",
            "Drone Remote ID Protocol Entity Tags",
            "2001:30::1",
        ),
        ("2001:db8::/32", "Documentation", "2001:db8::1"),
        ("2002::/16", "6to4", "2002:c0a8:101::1"),
        (
            "2620:4f:8000::/48",
            "Direct Delegation AS112 Service",
            "2620:4f:8000::1",
        ),
        ("3fff::/20", "Documentation", "3fff::1"),
        ("5f00::/16", "Segment Routing (SRv6) SIDs", "5f00::1"),
        ("fc00::/7", "Unique-Local", "fd12:3456::1"),
        ("fe80::/10", "Link-Local Unicast", "fe80::1"),
    ];

    /// Outside the registries, but not unicast on the internet either.
    const ALSO_NOT_PUBLIC: &[(&str, &str)] = &[
        ("224.0.0.1", "IPv4 multicast (224.0.0.0/4)"),
        ("239.255.255.250", "IPv4 multicast (224.0.0.0/4)"),
        ("ff02::1", "IPv6 multicast (ff00::/8)"),
        ("ff0e::1", "IPv6 multicast, global scope"),
        ("fec0::1", "IPv6 site-local (fec0::/10, deprecated)"),
        (
            "::ffff:0:127.0.0.1",
            "IPv4-translated loopback (::ffff:0:0:0/96)",
        ),
        ("::127.0.0.1", "IPv4-compatible loopback (::/96)"),
        ("::0.0.0.2", "IPv4-compatible, \"this network\""),
        ("400::1", "IPv6 outside 2000::/3 (reserved)"),
        ("e000::1", "IPv6 outside 2000::/3 (reserved)"),
        ("64:ff9b:1::7f00:1", "local-use NAT64 with loopback inside"),
    ];

    /// Public addresses, also right next to registry blocks.
    const PUBLIC: &[&str] = &[
        "8.8.8.8",
        "1.1.1.1",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "192.0.1.255",
        "192.0.3.0",
        "198.17.255.255",
        "198.20.0.0",
        "203.0.114.9",
        "223.255.255.255",
        "2606:4700:4700::1111",
        "2001:200::1",
        "2003::1",
        "2620:4f:8001::1",
        "3fff:1000::1",
    ];

    fn ip(text: &str) -> IpAddr {
        text.parse()
            .unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    /// The forms an IPv6 address can carry an IPv4 address in.
    fn embedded_forms(v4: Ipv4Addr) -> Vec<(&'static str, IpAddr)> {
        let [a, b, c, d] = v4.octets();
        let (high, low) = (u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
        vec![
            ("IPv4-mapped", IpAddr::V6(v4.to_ipv6_mapped())),
            ("IPv4-compatible", IpAddr::V6(v4.to_ipv6_compatible())),
            (
                "IPv4-translated",
                IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, high, low)),
            ),
            (
                "NAT64",
                IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, high, low)),
            ),
            (
                "6to4",
                IpAddr::V6(Ipv6Addr::new(0x2002, high, low, 0, 0, 0, 0, 1)),
            ),
        ]
    }

    /// An address in every block of both IANA special-purpose registries is not public,
    /// nor is an IPv6 form carrying any of the IPv4 ones.
    #[test]
    fn no_address_in_a_special_purpose_block_is_public() {
        for (block, name, sample) in IPV4_REGISTRY.iter().chain(IPV6_REGISTRY) {
            let sample = ip(sample);
            let net: iprfc::IpNet = block.parse().expect("a CIDR block");
            assert!(net.contains(&sample), "{sample} is not in {block}");
            assert!(
                !is_public(sample),
                "{sample} ({block}, {name}) counts as public"
            );
        }
        for (_, name, sample) in IPV4_REGISTRY {
            let IpAddr::V4(v4) = ip(sample) else {
                unreachable!()
            };
            for (form, carried) in embedded_forms(v4) {
                assert!(
                    !is_public(carried),
                    "{carried} ({form} of {v4}, {name}) counts as public"
                );
            }
        }
        for (sample, name) in ALSO_NOT_PUBLIC {
            assert!(!is_public(ip(sample)), "{sample} ({name}) counts as public");
        }
    }

    /// The addresses the security review reached: all refused.
    #[test]
    fn the_reviewed_holes_are_closed() {
        for hole in [
            "::ffff:0:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::127.0.0.1",
            "2002:7f00:1::",
            "fec0::1",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.0.1",
        ] {
            assert!(!is_public(ip(hole)), "{hole} counts as public");
        }
    }

    /// Public addresses stay public, also in every IPv6 form that carries them.
    #[test]
    fn public_addresses_are_public_in_every_form() {
        for sample in PUBLIC {
            assert!(is_public(ip(sample)), "{sample} counts as not public");
        }
        for sample in PUBLIC {
            if let IpAddr::V4(v4) = ip(sample) {
                for (form, carried) in embedded_forms(v4) {
                    assert!(is_public(carried), "{carried} ({form} of {v4}) is refused");
                }
            }
        }
    }

    /// The table above lists exactly the blocks the crate's registry snapshot has: a newer
    /// snapshot with another block fails here until the block is added (and judged).
    #[test]
    fn the_table_covers_every_registry_block() {
        let mut ours: Vec<String> = IPV4_REGISTRY
            .iter()
            .chain(IPV6_REGISTRY)
            .map(|(block, ..)| block.parse::<iprfc::IpNet>().expect("a block").to_string())
            .collect();
        let mut theirs: Vec<String> = iprfc::RFC6890
            .ip_nets()
            .iter()
            .map(ToString::to_string)
            .collect();
        ours.sort();
        theirs.sort();
        assert_eq!(ours, theirs);
    }
}
