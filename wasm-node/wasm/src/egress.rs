//! Which addresses a guest's outbound request may connect to, decided on
//! the addresses a name resolved to, not on the name. The allow-list says
//! which hosts a request may name; this says that, whatever it names, it
//! does not reach into the node's own networks (loopback, link-local,
//! private ranges, the node's and the control plane's addresses) unless
//! the rule that let it out names that address itself. Pure functions:
//! `send` resolves, asks [`check`], and connects only to what passed.

use std::fmt;
use std::net::IpAddr;

use skiff_api::addresses::effective;
pub use skiff_api::addresses::{Reserved, reserved};
use skiff_api::outbound::AllowRule;

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
