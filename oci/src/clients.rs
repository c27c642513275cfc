//! OCI registry clients, shared by the node (which pulls artifacts) and the
//! control plane (which reads manifests to learn which runtime an image
//! needs). Registries on loopback speak plain HTTP, as local registries
//! do; everything else HTTPS unless named insecure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

use crate::Limits;

/// Clients reused across requests (and so their connections), one per
/// registry and credentials: a client keeps the tokens and credentials it
/// authenticated with, so one shared by pods with different pull secrets
/// would pull for one with another's access.
#[derive(Clone)]
pub struct Clients {
    insecure: Arc<Vec<String>>,
    limits: Limits,
    clients: Arc<Mutex<HashMap<ClientKey, Client>>>,
    /// For the requests made without oci-client (manifests), whose
    /// responses it would read whole into memory, however large.
    http: reqwest::Client,
}

/// A registry (host:port) and the fingerprint of the credentials used.
type ClientKey = (String, [u8; 32]);

/// Clients kept at most; past it they are all made afresh.
const MAX_CLIENTS: usize = 256;

impl Clients {
    /// `insecure` lists further registries (host:port) to reach over plain
    /// HTTP.
    pub fn new(insecure: &[String], limits: &Limits) -> Self {
        install_crypto();
        let http = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            .read_timeout(limits.stall_timeout)
            .timeout(limits.request_timeout)
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the registry HTTP client builds");
        Self {
            insecure: Arc::new(insecure.to_vec()),
            limits: *limits,
            clients: Arc::default(),
            http,
        }
    }

    /// The HTTP client for requests made without oci-client.
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `http` or `https`: how `registry` (host:port) is reached.
    pub(crate) fn scheme_for(&self, registry: &str) -> &'static str {
        if is_loopback(registry) || self.insecure.iter().any(|r| r == registry) {
            "http"
        } else {
            "https"
        }
    }

    /// The client for the registry `reference` names, used with `auth`.
    pub fn for_reference(&self, reference: &Reference, auth: &RegistryAuth) -> Client {
        let registry = reference.resolve_registry();
        let mut clients = self.clients.lock().expect("registry clients lock");
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        clients
            .entry((registry.to_owned(), fingerprint(auth)))
            .or_insert_with(|| {
                // oci-client matches plain-HTTP registries by host:port.
                let mut plain = self.insecure.to_vec();
                if is_loopback(registry) {
                    plain.push(registry.to_owned());
                }
                client(&plain, &self.limits)
            })
            .clone()
    }
}

/// A digest of credentials, so the map does not hold them as keys.
fn fingerprint(auth: &RegistryAuth) -> [u8; 32] {
    let mut hash = Sha256::new();
    match auth {
        RegistryAuth::Anonymous => hash.update(b"anonymous"),
        RegistryAuth::Basic(user, password) => {
            hash.update(b"basic\0");
            hash.update(user.as_bytes());
            hash.update(b"\0");
            hash.update(password.as_bytes());
        }
        RegistryAuth::Bearer(token) => {
            hash.update(b"bearer\0");
            hash.update(token.as_bytes());
        }
    }
    hash.finalize().into()
}

/// TLS to registries uses rustls with ring, installed process-wide once.
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn client(plain: &[String], limits: &Limits) -> Client {
    install_crypto();
    let mut plain = plain.to_vec();
    plain.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        // The whole-request deadline is kept around each call (oci-client
        // has no setting for it); these bound a connect and a silence.
        connect_timeout: Some(limits.connect_timeout),
        read_timeout: Some(limits.stall_timeout),
        ..Default::default()
    })
}

/// Whether `registry` (host or host:port) is on loopback.
pub fn is_loopback(registry: &str) -> bool {
    let host = registry.rsplit_once(':').map_or(registry, |(host, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            host
        } else {
            registry
        }
    });
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries() {
        for yes in ["localhost", "127.0.0.1:5000", "[::1]:443", "localhost:80"] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:1",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn one_client_per_registry_and_credentials() {
        let clients = Clients::new(&[], &Limits::default());
        let a: Reference = "127.0.0.1:5000/a:v1".parse().unwrap();
        let b: Reference = "127.0.0.1:5000/b:v1".parse().unwrap();
        let c: Reference = "127.0.0.1:5001/c:v1".parse().unwrap();
        let anonymous = RegistryAuth::Anonymous;
        let puller = RegistryAuth::Basic("puller".into(), "secret".into());
        clients.for_reference(&a, &anonymous);
        clients.for_reference(&b, &anonymous);
        clients.for_reference(&c, &anonymous);
        assert_eq!(clients.clients.lock().unwrap().len(), 2);
        clients.for_reference(&a, &puller);
        clients.for_reference(&b, &puller);
        assert_eq!(clients.clients.lock().unwrap().len(), 3);
    }
}
