//! Which network destinations a sandboxed agent may not reach by default: one pure
//! classification of every IPv4 and IPv6 address form, used by `http_fetch` on the
//! addresses it actually connects to.
//!
//! IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible,
//! IPv4-translated, NAT64 and 6to4) are judged by the address they carry, so
//! `[::127.0.0.1]`, `[::ffff:10.0.0.1]`, `[64:ff9b::a9fe:a9fe]` and `[2002:7f00:1::]`
//! are refused like the IPv4 address inside them. Teredo and local-use NAT64 are
//! refused outright: whatever they tunnel to is not known from the address alone.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a destination is refused: the address class, and the IPv6 form that carried
/// it when the class is that of an embedded IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The class, e.g. `loopback`, `link-local (169.254.0.0/16, cloud metadata)`.
    pub class: &'static str,
    /// The IPv6 form the IPv4 address was embedded in, e.g. `NAT64 (64:ff9b::/96)`.
    pub embedded_in: Option<&'static str>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.embedded_in {
            Some(form) => write!(f, "{}, embedded in {form}", self.class),
            None => f.write_str(self.class),
        }
    }
}

/// Why `ip` must not be reached by default, or `None` for an ordinary public address.
pub fn classify(ip: IpAddr) -> Option<Refusal> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4).and_then(whole),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Whether `ip` is refused unless `[tools] http_allow_private` is set.
pub fn is_private(ip: IpAddr) -> bool {
    classify(ip).is_some()
}

/// Whether `ip` lies in `base/len`.
fn in_v4(ip: Ipv4Addr, base: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(base)) & mask
}

/// Whether `ip` lies in `base/len`.
fn in_v6(ip: Ipv6Addr, base: Ipv6Addr, len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(base) & mask
}

/// IPv4 ranges that are not public unicast, most specific first.
const V4_RANGES: &[([u8; 4], u32, &str)] = &[
    ([255, 255, 255, 255], 32, "broadcast"),
    ([0, 0, 0, 0], 8, "\"this network\" (0.0.0.0/8, unspecified)"),
    ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
    (
        [100, 64, 0, 0],
        10,
        "shared address space (100.64.0.0/10, CGNAT)",
    ),
    ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
    (
        [169, 254, 0, 0],
        16,
        "link-local (169.254.0.0/16, cloud metadata)",
    ),
    ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
    (
        [192, 0, 0, 0],
        24,
        "IETF protocol assignments (192.0.0.0/24)",
    ),
    ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast (192.88.99.0/24)"),
    ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
    ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
    ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
    ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
    ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
    ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4)"),
];

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    V4_RANGES
        .iter()
        .find(|(base, len, _)| in_v4(ip, *base, *len))
        .map(|(_, _, class)| *class)
}

/// IPv6 forms that embed an IPv4 address in their last 32 bits, judged by it.
const V6_EMBEDDING_LOW: &[(Ipv6Addr, u32, &str)] = &[
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
        96,
        "an IPv4-mapped address (::ffff:0:0/96)",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0xffff, 0, 0, 0),
        96,
        "an IPv4-translated address (::ffff:0:0:0/96)",
    ),
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        96,
        "a NAT64 address (64:ff9b::/96)",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 0),
        96,
        "an IPv4-compatible address (::/96)",
    ),
];

/// IPv6 ranges refused as a whole, most specific first.
const V6_RANGES: &[(Ipv6Addr, u32, &str)] = &[
    (
        Ipv6Addr::new(0x64, 0xff9b, 1, 0, 0, 0, 0, 0),
        48,
        "local-use NAT64 (64:ff9b:1::/48)",
    ),
    (
        Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0),
        64,
        "discard-only (100::/64)",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        32,
        "Teredo (2001::/32)",
    ),
    (
        Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0),
        32,
        "documentation (2001:db8::/32)",
    ),
    (
        Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0),
        23,
        "IETF protocol assignments (2001::/23)",
    ),
    (
        Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0),
        20,
        "documentation (3fff::/20)",
    ),
    (
        Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
        7,
        "unique-local (fc00::/7)",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "link-local (fe80::/10)",
    ),
    (
        Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0),
        10,
        "site-local (fec0::/10, deprecated)",
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "multicast (ff00::/8)",
    ),
];

/// A refusal of the address as a whole.
fn whole(class: &'static str) -> Option<Refusal> {
    Some(Refusal {
        class,
        embedded_in: None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<Refusal> {
    if ip.is_unspecified() {
        return whole("unspecified (::)");
    }
    if ip.is_loopback() {
        return whole("loopback (::1)");
    }
    let [.., a, b] = ip.segments();
    let low_v4 = Ipv4Addr::from((u32::from(a) << 16) | u32::from(b));
    if let Some((_, _, form)) = V6_EMBEDDING_LOW
        .iter()
        .find(|(base, len, _)| in_v6(ip, *base, *len))
    {
        return embedded(low_v4, form);
    }
    if in_v6(ip, Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        let [_, hi, lo, ..] = ip.segments();
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return embedded(v4, "a 6to4 address (2002::/16)");
    }
    V6_RANGES
        .iter()
        .find(|(base, len, _)| in_v6(ip, *base, *len))
        .and_then(|(_, _, class)| whole(class))
}

/// The refusal of an IPv4 address carried inside an IPv6 form, if it is refused.
fn embedded(v4: Ipv4Addr, form: &'static str) -> Option<Refusal> {
    classify_v4(v4).map(|class| Refusal {
        class,
        embedded_in: Some(form),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every form, with the words its refusal must contain (`None`: allowed).
    const TABLE: &[(&str, Option<&str>)] = &[
        // Public addresses pass.
        ("8.8.8.8", None),
        ("1.1.1.1", None),
        ("2606:4700::1111", None),
        ("2a00:1450:4001::200e", None),
        ("::ffff:8.8.8.8", None),
        ("64:ff9b::808:808", None),
        ("2002:808:808::1", None),
        // IPv4.
        ("0.0.0.0", Some("this network")),
        ("0.1.2.3", Some("this network")),
        ("10.1.2.3", Some("private")),
        ("172.16.0.1", Some("private")),
        ("172.31.255.255", Some("private")),
        ("192.168.1.1", Some("private")),
        ("127.0.0.1", Some("loopback")),
        ("127.255.0.9", Some("loopback")),
        ("169.254.169.254", Some("cloud metadata")),
        ("100.64.0.1", Some("CGNAT")),
        ("100.127.255.254", Some("CGNAT")),
        ("192.0.0.8", Some("IETF protocol assignments")),
        ("192.0.2.1", Some("documentation")),
        ("198.51.100.7", Some("documentation")),
        ("203.0.113.9", Some("documentation")),
        ("192.88.99.1", Some("6to4 relay")),
        ("198.18.0.1", Some("benchmarking")),
        ("198.19.255.1", Some("benchmarking")),
        ("224.0.0.1", Some("multicast")),
        ("239.255.255.250", Some("multicast")),
        ("240.0.0.1", Some("reserved")),
        ("255.255.255.255", Some("broadcast")),
        // Just outside the ranges.
        ("100.128.0.1", None),
        ("172.32.0.1", None),
        ("198.20.0.1", None),
        ("169.255.0.1", None),
        // IPv6.
        ("::", Some("unspecified")),
        ("::1", Some("loopback (::1)")),
        ("::ffff:127.0.0.1", Some("IPv4-mapped")),
        ("::ffff:169.254.169.254", Some("cloud metadata")),
        ("::127.0.0.1", Some("IPv4-compatible")),
        ("::10.0.0.1", Some("IPv4-compatible")),
        ("::ffff:0:127.0.0.1", Some("IPv4-translated")),
        ("64:ff9b::7f00:1", Some("NAT64")),
        ("64:ff9b::a9fe:a9fe", Some("cloud metadata")),
        ("64:ff9b:1::8.8.8.8", Some("local-use NAT64")),
        ("2002:7f00:1::", Some("6to4")),
        ("2002:a00:1::1", Some("6to4")),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("Teredo")),
        ("2001:2::1", Some("IETF protocol assignments")),
        ("2001:db8::1", Some("documentation")),
        ("3fff::1", Some("documentation")),
        ("100::1", Some("discard-only")),
        ("fc00::1", Some("unique-local")),
        ("fd12:3456::1", Some("unique-local")),
        ("fec0::1", Some("site-local")),
        ("feff::1", Some("site-local")),
        ("fe80::1", Some("link-local")),
        ("ff02::1", Some("multicast")),
        ("ff0e::1", Some("multicast")),
    ];

    #[test]
    fn every_address_form_is_classified() {
        for (addr, expected) in TABLE {
            let ip: IpAddr = addr.parse().unwrap();
            let got = classify(ip).map(|r| r.to_string());
            match (expected, &got) {
                (None, None) => {}
                (Some(words), Some(reason)) => {
                    assert!(reason.contains(words), "{addr}: `{reason}` lacks `{words}`")
                }
                _ => panic!("{addr}: expected {expected:?}, got {got:?}"),
            }
            assert_eq!(is_private(ip), expected.is_some(), "{addr}");
        }
    }

    #[test]
    fn embedded_refusals_name_both_the_class_and_the_form() {
        let ip: IpAddr = "::127.0.0.1".parse().unwrap();
        assert_eq!(
            classify(ip).unwrap().to_string(),
            "loopback (127.0.0.0/8), embedded in an IPv4-compatible address (::/96)"
        );
    }
}
