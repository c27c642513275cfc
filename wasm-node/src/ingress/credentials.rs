//! The credentials an ingress trusts instead of anything a tenant could
//! write: a proxy credential from another node, and a caller credential
//! from this node's own gateway.
//!
//! **Proxy credential** (`skiff-proxy-auth: <unix seconds>.<mac>`): an
//! HMAC-SHA256, under the cluster's proxy key, of the time and the pod host
//! the request is for (`web.shop.pod`). A node sends one with every request
//! it proxies to another node; the receiving ingress serves `.pod` hosts to
//! such requests even where it serves them to no one else. Why these
//! inputs and no more:
//!
//! - The host binds a credential to one pod: seen once, it opens no other.
//! - The time bounds its life to [`FRESHNESS`] either side of the
//!   receiver's clock (nodes' clocks are assumed to agree within seconds).
//! - Method, path and body are left out on purpose. The hop between nodes
//!   is plain HTTP: whoever can read a credential off the wire can read and
//!   rewrite the request it came with, so covering more of the request
//!   would protect nothing without TLS. What the credential does stop is
//!   everyone who cannot see node-to-node traffic (a tenant's guest or
//!   process, any machine that reaches an ingress) from having `.pod`
//!   hosts served. Remembering seen credentials to refuse replays would
//!   cost shared state on every request for the same reason: no gain.
//!
//! **Caller credential** (`skiff-caller-namespace`, `skiff-caller-auth`):
//! an HMAC-SHA256, under a key that never leaves this process, of the
//! caller's namespace. The gateway (the outbound hook of a pod's guest)
//! sends it with every request for a Service, so the ingress knows which
//! namespace calls without believing the guest. A pod's credential is made
//! once, when its sandbox is; checking one costs one HMAC.
//!
//! Both are compared in constant time, and both keys are keyed into an
//! HMAC state once, so a request pays only for the message blocks. A node
//! proxying to a pod signs at most once a second for it ([`SignedCache`]):
//! a credential is valid for its whole second anyway, and the sender's
//! hot path then takes a lock and a reference-counted copy, not an HMAC
//! and a formatted header.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use sha2::Sha256;

use skiff_client::node_api::{decode_mac, unix_seconds};

use super::PodName;

/// How far a proxy credential's time may be from the receiver's clock,
/// either way: room for clock skew between nodes and for a request that
/// waited for a connection.
pub const FRESHNESS: Duration = Duration::from_secs(30);

/// Length of the cluster's proxy key, in bytes.
pub const PROXY_KEY_LEN: usize = 32;

/// Why a proxy credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyAuthError {
    #[error("the proxy credential is not <seconds>.<mac>")]
    Malformed,
    #[error(
        "the proxy credential is {0} s away from this node's clock (at most 30 s are accepted)"
    )]
    Stale(u64),
    /// A wrong key, or a credential made for another pod.
    #[error("the proxy credential does not match this pod host")]
    Mismatch,
}

type HmacSha256 = Hmac<Sha256>;

/// The cluster-wide key nodes authenticate proxied requests with.
#[derive(Clone)]
pub struct ProxyKey {
    keyed: HmacSha256,
}

impl std::fmt::Debug for ProxyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyKey(..)")
    }
}

impl ProxyKey {
    pub fn new(key: &[u8]) -> Self {
        Self {
            keyed: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// The MAC of `pod`'s host at `seconds`: over `v1`, the time and
    /// `NAME.NAMESPACE.pod`, fed in pieces so nothing is allocated.
    fn mac(&self, seconds: u64, (namespace, name): &PodName) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        let mut digits = [0u8; 20];
        mac.update(b"skiff-proxy-v1\n");
        mac.update(decimal(seconds, &mut digits));
        mac.update(b"\n");
        mac.update(name.as_bytes());
        mac.update(b".");
        mac.update(namespace.as_bytes());
        mac.update(b".pod");
        mac
    }

    /// The credential for a request to `pod`, made at `now`.
    pub fn sign(&self, pod: &PodName, now: SystemTime) -> HeaderValue {
        self.sign_at(unix_seconds(now), pod)
    }

    fn sign_at(&self, seconds: u64, pod: &PodName) -> HeaderValue {
        let tag = self.mac(seconds, pod).finalize().into_bytes();
        let mut value =
            HeaderValue::from_str(&format!("{seconds}.{}", URL_SAFE_NO_PAD.encode(tag)))
                .expect("digits and base64 are valid in a header");
        value.set_sensitive(true);
        value
    }

    /// The credential for a request to `pod` at `now`, from `cache` when
    /// it was made in the same second (the credential it would make anew
    /// is the same bytes), made and kept there otherwise. A cache belongs
    /// to one pod host: the caller keeps one per endpoint.
    pub fn sign_cached(&self, cache: &SignedCache, pod: &PodName, now: SystemTime) -> HeaderValue {
        let seconds = unix_seconds(now);
        let mut kept = cache.0.lock().expect("signed credential lock");
        match &*kept {
            Some((at, value)) if *at == seconds => value.clone(),
            _ => {
                let value = self.sign_at(seconds, pod);
                *kept = Some((seconds, value.clone()));
                value
            }
        }
    }

    /// Checks a credential for a request to `pod`, received at `now`.
    pub fn verify(
        &self,
        credential: &[u8],
        pod: &PodName,
        now: SystemTime,
    ) -> Result<(), ProxyAuthError> {
        let text = std::str::from_utf8(credential).map_err(|_| ProxyAuthError::Malformed)?;
        let (seconds, tag) = text.split_once('.').ok_or(ProxyAuthError::Malformed)?;
        let seconds: u64 = seconds.parse().map_err(|_| ProxyAuthError::Malformed)?;
        let tag = decode_mac(tag).ok_or(ProxyAuthError::Malformed)?;
        let skew = unix_seconds(now).abs_diff(seconds);
        if skew > FRESHNESS.as_secs() {
            return Err(ProxyAuthError::Stale(skew));
        }
        self.mac(seconds, pod)
            .verify_slice(&tag)
            .map_err(|_| ProxyAuthError::Mismatch)
    }
}

/// The last proxy credential made for one pod host, and its second.
#[derive(Default)]
pub struct SignedCache(Mutex<Option<(u64, HeaderValue)>>);

impl std::fmt::Debug for SignedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignedCache(..)")
    }
}

/// The node-local key the gateway vouches for a caller's namespace with.
#[derive(Clone)]
pub struct CallerKey {
    keyed: HmacSha256,
}

impl std::fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerKey(..)")
    }
}

impl CallerKey {
    /// A key of this process alone: caller credentials are made and checked
    /// by the same node, so no one else ever needs it.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random source works");
        Self::new(&key)
    }

    pub fn new(key: &[u8]) -> Self {
        Self {
            keyed: HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    fn mac(&self, namespace: &str) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        mac.update(b"skiff-caller-v1\n");
        mac.update(namespace.as_bytes());
        mac
    }

    /// The credential of pods of `namespace`, for their gateway to send.
    pub fn credential(&self, namespace: &str) -> HeaderValue {
        let tag = self.mac(namespace).finalize().into_bytes();
        let mut value =
            HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(tag)).expect("base64 is a valid header");
        value.set_sensitive(true);
        value
    }

    /// Whether `credential` vouches for `namespace`.
    pub fn verify(&self, namespace: &str, credential: &[u8]) -> bool {
        std::str::from_utf8(credential)
            .ok()
            .and_then(decode_mac)
            .is_some_and(|tag| self.mac(namespace).verify_slice(&tag).is_ok())
    }
}

/// `n` in decimal, written into `buffer`.
fn decimal(mut n: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buffer[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn pod(namespace: &str, name: &str) -> PodName {
        (namespace.to_owned(), name.to_owned())
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_proxy_credential_opens_its_own_pod_host_while_fresh() {
        let key = ProxyKey::new(&[7; PROXY_KEY_LEN]);
        let web = pod("shop", "web");
        let signed = key.sign(&web, at(1_000_000));
        let credential = signed.as_bytes();
        assert!(signed.is_sensitive());
        assert_eq!(key.verify(credential, &web, at(1_000_000)), Ok(()));
        // Skew either way within the window.
        assert_eq!(key.verify(credential, &web, at(1_000_030)), Ok(()));
        assert_eq!(key.verify(credential, &web, at(999_970)), Ok(()));
    }

    #[test]
    fn a_cached_proxy_credential_is_the_one_signed_anew_in_its_second() {
        let key = ProxyKey::new(&[7; PROXY_KEY_LEN]);
        let web = pod("shop", "web");
        let cache = SignedCache::default();
        let first = key.sign_cached(&cache, &web, at(1_000_000));
        assert_eq!(first, key.sign(&web, at(1_000_000)));
        assert!(first.is_sensitive());
        // Later in the same second: the same bytes.
        let later = UNIX_EPOCH + Duration::from_millis(1_000_000_999);
        assert_eq!(key.sign_cached(&cache, &web, later), first);
        // The next second gets a fresh credential, which verifies there.
        let next = key.sign_cached(&cache, &web, at(1_000_001));
        assert_eq!(next, key.sign(&web, at(1_000_001)));
        assert_ne!(next, first);
        assert_eq!(key.verify(next.as_bytes(), &web, at(1_000_001)), Ok(()));
        // A clock stepped back is a miss too, never an older second's value.
        assert_eq!(
            key.sign_cached(&cache, &web, at(999_990)),
            key.sign(&web, at(999_990))
        );
    }

    #[test]
    fn a_proxy_credential_is_refused_under_another_key() {
        let web = pod("shop", "web");
        let signed = ProxyKey::new(&[7; PROXY_KEY_LEN]).sign(&web, at(1_000_000));
        let other = ProxyKey::new(&[8; PROXY_KEY_LEN]);
        assert_eq!(
            other.verify(signed.as_bytes(), &web, at(1_000_000)),
            Err(ProxyAuthError::Mismatch)
        );
    }

    #[test]
    fn a_stale_proxy_credential_is_refused() {
        let key = ProxyKey::new(&[7; PROXY_KEY_LEN]);
        let web = pod("shop", "web");
        let signed = key.sign(&web, at(1_000_000));
        assert_eq!(
            key.verify(signed.as_bytes(), &web, at(1_000_031)),
            Err(ProxyAuthError::Stale(31))
        );
        // From the future, as a node with a clock far ahead would send.
        assert_eq!(
            key.verify(signed.as_bytes(), &web, at(999_000)),
            Err(ProxyAuthError::Stale(1000))
        );
    }

    #[test]
    fn a_proxy_credential_replayed_to_another_host_is_refused() {
        let key = ProxyKey::new(&[7; PROXY_KEY_LEN]);
        let signed = key.sign(&pod("shop", "web"), at(1_000_000));
        for other in [pod("shop", "api"), pod("other", "web"), pod("sho", "pweb")] {
            assert_eq!(
                key.verify(signed.as_bytes(), &other, at(1_000_000)),
                Err(ProxyAuthError::Mismatch),
                "{other:?}"
            );
        }
        // Nor does a credential with its time moved pass.
        let text = signed.to_str().unwrap();
        let moved = text.replacen("1000000", "1000001", 1);
        assert_eq!(
            key.verify(moved.as_bytes(), &pod("shop", "web"), at(1_000_000)),
            Err(ProxyAuthError::Mismatch)
        );
    }

    #[test]
    fn malformed_proxy_credentials_are_refused() {
        let key = ProxyKey::new(&[7; PROXY_KEY_LEN]);
        let web = pod("shop", "web");
        // A MAC's length in URL-safe base64, of the wrong bytes.
        let tag = "A".repeat(43);
        for credential in [
            String::new(),
            "forged".into(),
            "1000000".into(),
            format!("x.{tag}"),
            "1000000.short".into(),
            format!("1000000.{tag}A"),
            format!("-5.{tag}"),
        ] {
            assert_eq!(
                key.verify(credential.as_bytes(), &web, at(1_000_000)),
                Err(ProxyAuthError::Malformed),
                "{credential}"
            );
        }
        assert_eq!(
            key.verify(&[0xff, b'.'], &web, at(1_000_000)),
            Err(ProxyAuthError::Malformed)
        );
    }

    #[test]
    fn a_caller_credential_vouches_for_its_namespace_only() {
        let key = CallerKey::random();
        let shop = key.credential("shop");
        assert!(shop.is_sensitive());
        assert!(key.verify("shop", shop.as_bytes()));
        assert!(!key.verify("other", shop.as_bytes()));
        assert!(!key.verify("shop", b"forged"));
        assert!(!key.verify("shop", b""));
        // Another node's key (or a guess) does not make one.
        assert!(!CallerKey::random().verify("shop", shop.as_bytes()));
    }

    #[test]
    fn decimals_are_written_without_allocating() {
        let mut buffer = [0u8; 20];
        assert_eq!(decimal(0, &mut buffer), b"0");
        assert_eq!(decimal(1_700_000_000, &mut buffer), b"1700000000");
        assert_eq!(decimal(u64::MAX, &mut buffer), b"18446744073709551615");
    }
}
