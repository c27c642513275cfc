//! Where a component's outbound HTTP may go: the allow-list of `wasmctl run
//! --allow-outbound` and of a pod's `allowOutbound`. Everything not on the
//! list is denied; the runtime enforces it before any byte leaves.

use std::fmt;

use http::uri::Scheme;

/// Where guests may send HTTP requests. Empty means nowhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<AllowRule>,
}

/// One allowed destination, written `[http://|https://]HOST[:PORT]`.
///
/// `HOST` is a name, an IP address (IPv6 in brackets), `*.domain` for any
/// subdomain, or `*` for any host. Without a port, any port is allowed unless
/// a scheme is given, which then means that scheme's default port; `:*` is
/// any port explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    source: String,
    scheme: Option<Scheme>,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Subdomains(String),
}

/// An allow-list entry that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid outbound rule `{rule}`: {reason}")]
pub struct AllowRuleError {
    rule: String,
    reason: &'static str,
}

impl AllowRule {
    pub fn parse(rule: &str) -> Result<Self, AllowRuleError> {
        let fail = |reason| AllowRuleError {
            rule: rule.to_owned(),
            reason,
        };
        let (scheme, rest) = if let Some(rest) = rule.strip_prefix("http://") {
            (Some(Scheme::HTTP), rest)
        } else if let Some(rest) = rule.strip_prefix("https://") {
            (Some(Scheme::HTTPS), rest)
        } else if rule.contains("://") {
            return Err(fail("only http:// and https:// are supported"));
        } else {
            (None, rule)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(fail("a rule names a host and port, not a path"));
        }

        let (host, port) = split_host_port(rest).ok_or_else(|| fail("malformed host or port"))?;
        let host = host.to_ascii_lowercase();
        let host = match host.as_str() {
            "" => return Err(fail("missing host")),
            "*" => HostPattern::Any,
            h if h.starts_with("*.") && h.len() > 2 && !h[2..].contains('*') => {
                HostPattern::Subdomains(h[1..].to_owned())
            }
            h if h.contains('*') => return Err(fail("`*` may only be a whole host or `*.domain`")),
            h if !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.:_".contains(c)) =>
            {
                return Err(fail("host has characters a host name cannot have"));
            }
            h => HostPattern::Exact(h.to_owned()),
        };
        let port = match port {
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| fail("port must be a number from 1 to 65535 or `*`"))?,
            ),
            None => scheme.as_ref().map(default_port),
        };
        Ok(Self {
            source: rule.to_owned(),
            scheme,
            host,
            port,
        })
    }

    /// Whether this rule (a namespace's egress ceiling) takes in everything
    /// `other` (a pod's rule) allows. A rule naming a loopback, link-local
    /// or private address is inside only a rule naming that same address:
    /// `*` and wildcards never grant those.
    pub fn covers(&self, other: &AllowRule) -> bool {
        let scheme_ok = self.scheme.is_none() || self.scheme == other.scheme;
        let port_ok = self.port.is_none() || self.port == other.port;
        let host_ok = match (&self.host, &other.host) {
            (HostPattern::Exact(a), HostPattern::Exact(b)) => a == b,
            _ if other.names_private_address() => false,
            (HostPattern::Any, _) => true,
            (HostPattern::Subdomains(suffix), HostPattern::Exact(host)) => {
                host.ends_with(suffix.as_str())
            }
            (HostPattern::Subdomains(suffix), HostPattern::Subdomains(inner)) => {
                inner.ends_with(suffix.as_str())
            }
            _ => false,
        };
        scheme_ok && port_ok && host_ok
    }

    /// Whether the rule names a loopback, link-local or private address
    /// itself: such an IP literal, or `localhost` (and names under it).
    pub fn names_private_address(&self) -> bool {
        match &self.host {
            HostPattern::Exact(host) => {
                host == "localhost"
                    || host.ends_with(".localhost")
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| crate::addresses::reserved(ip).is_some())
            }
            _ => false,
        }
    }

    fn permits(&self, scheme: &Scheme, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_ref().is_none_or(|s| s == scheme);
        let port_ok = self.port.is_none_or(|p| p == port);
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
        };
        scheme_ok && port_ok && host_ok
    }
}

impl AllowRule {
    /// Whether this rule names `ip` itself: as its IP literal host, or as
    /// the host `localhost` for a loopback address. Only such a rule opens
    /// a private destination (loopback, link-local, private ranges, the
    /// node's own addresses); `*`, `*.domain` and other names never do,
    /// whatever they resolve to.
    pub fn names_address(&self, ip: std::net::IpAddr) -> bool {
        match &self.host {
            HostPattern::Exact(host) if host == "localhost" => ip.to_canonical().is_loopback(),
            HostPattern::Exact(host) => host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|named| named == ip),
            HostPattern::Any | HostPattern::Subdomains(_) => false,
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Splits `host`, `host:port`, `[v6]` and `[v6]:port`.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.split_once(':') {
        Some((_, port)) if port.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
        None => Some((s, None)),
    }
}

fn default_port(scheme: &Scheme) -> u16 {
    if *scheme == Scheme::HTTPS { 443 } else { 80 }
}

impl AllowList {
    pub fn new(rules: Vec<AllowRule>) -> Self {
        Self { rules }
    }

    /// Parses every rule, failing on the first bad one.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Self, AllowRuleError> {
        rules
            .iter()
            .map(|r| AllowRule::parse(r.as_ref()))
            .collect::<Result<_, _>>()
            .map(Self::new)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a request to `uri` may leave the host.
    pub fn permits(&self, uri: &http::Uri) -> bool {
        !self.permitting(uri).is_empty()
    }

    /// The rules that let a request to `uri` out. Which of them names the
    /// address it connects to decides whether a private address may be
    /// reached ([`AllowRule::names_address`]).
    pub fn permitting(&self, uri: &http::Uri) -> Vec<&AllowRule> {
        let Some(scheme) = uri.scheme() else {
            return Vec::new();
        };
        let Some(host) = uri.host() else {
            return Vec::new();
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or_else(|| default_port(scheme));
        self.rules
            .iter()
            .filter(|r| r.permits(scheme, &host, port))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(rules: &[&str], uri: &str) -> bool {
        AllowList::parse(rules)
            .unwrap()
            .permits(&uri.parse().unwrap())
    }

    #[test]
    fn empty_list_denies_everything() {
        assert!(!allows(&[], "http://127.0.0.1:8080/"));
        assert!(!allows(&[], "https://example.com/"));
    }

    #[test]
    fn host_without_port_allows_any_port_and_scheme() {
        let rules = ["api.example.com"];
        assert!(allows(&rules, "http://api.example.com/x"));
        assert!(allows(&rules, "https://API.example.com:8443/x"));
        assert!(!allows(&rules, "http://evil.example.com/"));
        assert!(!allows(&rules, "http://api.example.com.evil.net/"));
    }

    #[test]
    fn port_must_match_when_given() {
        let rules = ["127.0.0.1:8080"];
        assert!(allows(&rules, "http://127.0.0.1:8080/"));
        assert!(!allows(&rules, "http://127.0.0.1:8081/"));
        assert!(!allows(&rules, "http://127.0.0.1/"));
    }

    #[test]
    fn scheme_implies_its_default_port() {
        let rules = ["https://api.example.com"];
        assert!(allows(&rules, "https://api.example.com/"));
        assert!(allows(&rules, "https://api.example.com:443/"));
        assert!(!allows(&rules, "https://api.example.com:8443/"));
        assert!(!allows(&rules, "http://api.example.com/"));
        assert!(allows(&["http://a.test:*"], "http://a.test:9999/"));
    }

    #[test]
    fn wildcards() {
        assert!(allows(&["*.example.com"], "https://a.b.example.com/"));
        assert!(!allows(&["*.example.com"], "https://example.com/"));
        assert!(allows(&["*"], "http://anything.test:1234/"));
        assert!(allows(&["*:443"], "https://anything.test/"));
        assert!(!allows(&["*:443"], "http://anything.test/"));
    }

    #[test]
    fn ipv6_hosts() {
        assert!(allows(&["[::1]:8080"], "http://[::1]:8080/"));
        assert!(!allows(&["[::1]:8080"], "http://[::1]:8081/"));
        assert!(allows(&["[::1]"], "http://[::1]:1/"));
    }

    #[test]
    fn only_literal_hosts_and_localhost_name_an_address() {
        let names = |rule: &str, ip: &str| {
            AllowRule::parse(rule)
                .unwrap()
                .names_address(ip.parse().unwrap())
        };
        assert!(names("127.0.0.1:8080", "127.0.0.1"));
        assert!(!names("127.0.0.1:8080", "127.0.0.2"));
        assert!(names("[::1]:9000", "::1"));
        assert!(names("http://10.1.2.3", "10.1.2.3"));
        assert!(names("localhost:8080", "127.0.0.1"));
        assert!(names("localhost", "::1"));
        assert!(names("LOCALHOST", "127.9.9.9"));
        assert!(!names("localhost", "10.0.0.1"));
        for rule in ["*", "*:8080", "*.example.com", "x.localhost", "metadata"] {
            assert!(!names(rule, "127.0.0.1"), "{rule}");
            assert!(!names(rule, "169.254.169.254"), "{rule}");
        }
    }

    #[test]
    fn permitting_lists_every_rule_that_lets_a_request_out() {
        let list = AllowList::parse(&["*", "127.0.0.1:8080", "127.0.0.1:9090"]).unwrap();
        let rules: Vec<String> = list
            .permitting(&"http://127.0.0.1:8080/".parse().unwrap())
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(rules, ["*", "127.0.0.1:8080"]);
        assert!(
            AllowList::default()
                .permitting(&"http://a.test/".parse().unwrap())
                .is_empty()
        );
    }

    #[test]
    fn bad_rules_are_rejected_with_the_reason() {
        let cases = [
            ("", "missing host"),
            ("ftp://x", "only http:// and https://"),
            ("http://x/path", "not a path"),
            ("x:0", "port must be"),
            ("x:http", "port must be"),
            ("a*.com", "`*` may only be"),
            ("a b", "characters"),
            ("[::1", "malformed"),
        ];
        for (rule, reason) in cases {
            let err = AllowRule::parse(rule).unwrap_err().to_string();
            assert!(err.contains(reason), "{rule:?}: {err}");
            assert!(err.contains(&format!("`{rule}`")), "{err}");
        }
    }
}
