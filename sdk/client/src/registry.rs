//! OCI registry clients, shared by the node (which pulls artifacts) and the
//! control plane (which reads manifests to learn which runtime an image
//! needs). Registries on loopback speak plain HTTP, as local registries
//! do; everything else HTTPS unless named insecure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};

/// A client per registry protocol, reused across requests (and so their
/// connections).
#[derive(Clone)]
pub struct Clients {
    base: Client,
    /// oci-client matches plain-HTTP registries by host:port, so each
    /// loopback registry (one per port) gets a client of its own.
    loopback: Arc<Mutex<HashMap<String, Client>>>,
}

impl Clients {
    /// `insecure` lists further registries (host:port) to reach over plain
    /// HTTP.
    pub fn new(insecure: &[String]) -> Self {
        let mut plain = insecure.to_vec();
        plain.retain(|r| !is_loopback(r));
        Self {
            base: client(&plain),
            loopback: Arc::default(),
        }
    }

    /// The client for the registry `reference` names.
    pub fn for_reference(&self, reference: &Reference) -> Client {
        let registry = reference.resolve_registry();
        if !is_loopback(registry) {
            return self.base.clone();
        }
        self.loopback
            .lock()
            .expect("registry clients lock")
            .entry(registry.to_owned())
            .or_insert_with(|| client(&[registry.to_owned()]))
            .clone()
    }
}

fn client(plain: &[String]) -> Client {
    // TLS to registries uses rustls with ring, installed process-wide once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut plain = plain.to_vec();
    plain.extend(["localhost", "127.0.0.1", "[::1]"].map(str::to_owned));
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
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
    fn one_client_per_loopback_registry() {
        let clients = Clients::new(&[]);
        let a: Reference = "127.0.0.1:5000/a:v1".parse().unwrap();
        let b: Reference = "127.0.0.1:5000/b:v1".parse().unwrap();
        let c: Reference = "127.0.0.1:5001/c:v1".parse().unwrap();
        clients.for_reference(&a);
        clients.for_reference(&b);
        clients.for_reference(&c);
        assert_eq!(clients.loopback.lock().unwrap().len(), 2);
    }
}
