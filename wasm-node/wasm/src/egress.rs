//! Which addresses a guest's outbound request may connect to, decided on
//! the addresses a name resolved to, not on the name. The allow-list says
//! which hosts a request may name; this says that, whatever it names, it
//! does not reach into the node's own networks (loopback, link-local,
//! private ranges, the node's and the control plane's addresses) unless
//! the rule that let it out names that address itself. Pure functions:
//! `send` resolves, asks [`check`], and connects only to what passed.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use skiff_api::outbound::AllowRule;

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
fn effective(ip: IpAddr) -> IpAddr {
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

/// Why a destination address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Reserved(Reserved),
    /// On the node's list of its own addresses (its ingress, the control
    /// plane's).
    Denied,
}

/// A refused destination: the address and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub address: IpAddr,
    pub why: Why,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.why {
            Why::Reserved(range) => write!(f, "{} is {range}", self.address),
            Why::Denied => write!(
                f,
                "{} is an address of the node or its control plane",
                self.address
            ),
        }
    }
}

/// Decides whether a request let out by `rules` may connect to every one
/// of `addresses` (all a name resolved to). A reserved address, or one of
/// `denied`, is refused unless one of the rules names it itself
/// ([`AllowRule::names_address`]). Every address must pass: a name that
/// resolves into the node's networks at all is refused, so the outcome
/// does not hang on which address answers first.
pub fn check(
    rules: &[&AllowRule],
    addresses: impl IntoIterator<Item = IpAddr>,
    denied: &[IpAddr],
) -> Result<(), Refusal> {
    for address in addresses {
        let why = reserved(address).map(Why::Reserved).or_else(|| {
            denied
                .iter()
                .any(|d| effective(*d) == effective(address))
                .then_some(Why::Denied)
        });
        if let Some(why) = why
            && !rules.iter().any(|rule| rule.names_address(address))
        {
            return Err(Refusal { address, why });
        }
    }
    Ok(())
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

    fn rules(sources: &[&str]) -> Vec<AllowRule> {
        sources
            .iter()
            .map(|s| AllowRule::parse(s).unwrap())
            .collect()
    }

    fn decide(permitting: &[&str], addresses: &[&str], denied: &[&str]) -> Result<(), Refusal> {
        let rules = rules(permitting);
        let rules: Vec<&AllowRule> = rules.iter().collect();
        let denied: Vec<IpAddr> = denied.iter().map(|d| ip(d)).collect();
        check(&rules, addresses.iter().map(|a| ip(a)), &denied)
    }

    fn refused(address: &str, why: Why) -> Result<(), Refusal> {
        Err(Refusal {
            address: ip(address),
            why,
        })
    }

    #[test]
    fn public_addresses_pass_whatever_rule_let_the_request_out() {
        assert_eq!(decide(&["*"], &["93.184.216.34"], &[]), Ok(()));
        assert_eq!(decide(&["*.example.com"], &["2606:2800::1"], &[]), Ok(()));
        assert_eq!(decide(&["203.0.113.9:80"], &["203.0.113.9"], &[]), Ok(()));
    }

    #[test]
    fn names_and_wildcards_never_open_private_addresses() {
        use Reserved::*;
        let loopback = Why::Reserved(Loopback);
        assert_eq!(
            decide(&["*"], &["127.0.0.1"], &[]),
            refused("127.0.0.1", loopback)
        );
        assert_eq!(
            decide(&["*"], &["::1", "127.0.0.1"], &[]),
            refused("::1", loopback)
        );
        assert_eq!(
            decide(&["*.localhost"], &["127.0.0.1"], &[]),
            refused("127.0.0.1", loopback)
        );
        assert_eq!(
            decide(&["metadata.internal"], &["169.254.169.254"], &[]),
            refused("169.254.169.254", Why::Reserved(LinkLocal))
        );
        assert_eq!(
            decide(&["*:443"], &["::ffff:10.0.0.8"], &[]),
            refused("::ffff:10.0.0.8", Why::Reserved(Private))
        );
        // One private address among public ones refuses the whole name.
        assert_eq!(
            decide(&["*"], &["93.184.216.34", "192.168.0.10"], &[]),
            refused("192.168.0.10", Why::Reserved(Private))
        );
    }

    #[test]
    fn a_rule_naming_the_address_opens_it() {
        assert_eq!(decide(&["127.0.0.1:8080"], &["127.0.0.1"], &[]), Ok(()));
        assert_eq!(decide(&["[::1]:9000"], &["::1"], &[]), Ok(()));
        assert_eq!(decide(&["*", "10.0.0.5"], &["10.0.0.5"], &[]), Ok(()));
        assert_eq!(
            decide(&["169.254.169.254"], &["169.254.169.254"], &[]),
            Ok(())
        );
        // `localhost` names loopback, every loopback address it resolves to.
        assert_eq!(
            decide(&["localhost:8080"], &["127.0.0.1", "::1"], &[]),
            Ok(())
        );
        // ... and nothing else.
        assert_eq!(
            decide(&["localhost:8080"], &["10.0.0.1"], &[]),
            refused("10.0.0.1", Why::Reserved(Reserved::Private))
        );
        // A literal opens its own address only.
        assert_eq!(
            decide(&["127.0.0.1:8080"], &["127.0.0.2"], &[]),
            refused("127.0.0.2", Why::Reserved(Reserved::Loopback))
        );
    }

    #[test]
    fn the_nodes_own_addresses_are_refused_unless_named() {
        let node = ["203.0.113.7", "198.51.100.2"];
        assert_eq!(
            decide(&["*"], &["203.0.113.7"], &node),
            refused("203.0.113.7", Why::Denied)
        );
        assert_eq!(
            decide(&["*"], &["::ffff:198.51.100.2"], &node),
            refused("::ffff:198.51.100.2", Why::Denied)
        );
        assert_eq!(decide(&["*"], &["203.0.113.8"], &node), Ok(()));
        assert_eq!(
            decide(&["203.0.113.7:8080"], &["203.0.113.7"], &node),
            Ok(())
        );
        let message = decide(&["*"], &["198.51.100.2"], &node)
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "198.51.100.2 is an address of the node or its control plane"
        );
        let message = decide(&["*"], &["169.254.169.254"], &[])
            .unwrap_err()
            .to_string();
        assert_eq!(message, "169.254.169.254 is a link-local address");
    }
}
