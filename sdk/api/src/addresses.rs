//! Which addresses lead into a host's own networks (loopback, link-local,
//! private ranges) rather than out to the internet: the node refuses
//! guests' connections to them unless a rule names the address, and
//! admission keeps such rules inside a namespace's egress ceiling. Pure.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A range of addresses that leads into the host's own networks rather
/// than out to the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// `0.0.0.0/8`, `::`: Linux connects these to the host itself.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `169.254.0.0/16` (cloud metadata services live here), `fe80::/10`.
    LinkLocal,
    /// `10/8`, `172.16/12`, `192.168/16`, `fc00::/7`, `fec0::/10`.
    Private,
    /// `100.64.0.0/10`, carrier-grade NAT: private in all but name.
    SharedAddressSpace,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reserved::Unspecified => "an unspecified address",
            Reserved::Loopback => "a loopback address",
            Reserved::LinkLocal => "a link-local address",
            Reserved::Private => "a private address",
            Reserved::SharedAddressSpace => "a shared (carrier-grade NAT) address",
            Reserved::Multicast => "a multicast address",
            Reserved::Broadcast => "the broadcast address",
        })
    }
}

/// The reserved range `ip` is in, if any. An IPv6 address that carries an
/// IPv4 one (mapped, compatible, NAT64) is judged by the IPv4 address,
/// which is where a connection to it ends up.
pub fn reserved(ip: IpAddr) -> Option<Reserved> {
    match effective(ip) {
        IpAddr::V4(v4) => reserved_v4(v4),
        IpAddr::V6(v6) => reserved_v6(v6),
    }
}

fn reserved_v4(ip: Ipv4Addr) -> Option<Reserved> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Some(Reserved::Unspecified)
    } else if ip.is_loopback() {
        Some(Reserved::Loopback)
    } else if ip.is_link_local() {
        Some(Reserved::LinkLocal)
    } else if ip.is_private() {
        Some(Reserved::Private)
    } else if a == 100 && b & 0xc0 == 64 {
        Some(Reserved::SharedAddressSpace)
    } else if ip.is_broadcast() {
        Some(Reserved::Broadcast)
    } else if ip.is_multicast() {
        Some(Reserved::Multicast)
    } else {
        None
    }
}

fn reserved_v6(ip: Ipv6Addr) -> Option<Reserved> {
    let first = ip.segments()[0];
    if ip.is_unspecified() {
        Some(Reserved::Unspecified)
    } else if ip.is_loopback() {
        Some(Reserved::Loopback)
    } else if first & 0xffc0 == 0xfe80 {
        Some(Reserved::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 {
        Some(Reserved::Private)
    } else if ip.is_multicast() {
        Some(Reserved::Multicast)
    } else {
        None
    }
}

/// The address a connection to `ip` reaches: the IPv4 address inside an
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`) or NAT64
/// (`64:ff9b::a.b.c.d`) IPv6 address, else `ip` itself.
pub fn effective(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else {
        return ip;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return v4.into();
    }
    let s = v6.segments();
    let carried = Ipv4Addr::from_bits(v6.to_bits() as u32);
    // `::` and `::1` are IPv6's own, not compatible forms of 0.0.0.0/0.0.0.1.
    let compatible = s[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if compatible || nat64 {
        carried.into()
    } else {
        ip
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_reserved_range_is_recognised() {
        use Reserved::*;
        let cases = [
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.0.1", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("10.0.0.1", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fec0::1", Some(Private)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            // Just outside the ranges.
            ("1.1.1.1", None),
            ("9.255.255.255", None),
            ("11.0.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.167.1.1", None),
            ("169.253.0.1", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("128.0.0.1", None),
            ("2606:4700::1111", None),
            ("fbff::1", None),
            ("fe00::1", None),
        ];
        for (address, expected) in cases {
            assert_eq!(reserved(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_judged_by_the_ipv4_address() {
        let cases = [
            ("::ffff:127.0.0.1", Some(Reserved::Loopback)),
            ("::ffff:169.254.169.254", Some(Reserved::LinkLocal)),
            ("::ffff:10.1.2.3", Some(Reserved::Private)),
            ("::ffff:100.64.0.1", Some(Reserved::SharedAddressSpace)),
            ("::ffff:0.0.0.0", Some(Reserved::Unspecified)),
            ("::127.0.0.1", Some(Reserved::Loopback)),
            ("::192.168.0.1", Some(Reserved::Private)),
            ("64:ff9b::169.254.169.254", Some(Reserved::LinkLocal)),
            ("64:ff9b::7f00:1", Some(Reserved::Loopback)),
            ("::ffff:1.1.1.1", None),
            ("64:ff9b::1.1.1.1", None),
        ];
        for (address, expected) in cases {
            assert_eq!(reserved(ip(address)), expected, "{address}");
        }
    }
}
