//! OCI registries for every part of Skiff: the node pulls components and
//! Linux images, the scheduler reads manifests to learn which runtime an
//! image needs, `wasmctl` pushes and pulls. One set of rules for all of
//! them: credentials from a pull secret, which runtime a manifest's media
//! types call for (a multi-platform index included), digest checks on every
//! byte, size caps.
//!
//! Components follow the CNCF Wasm artifact layout: a config of type
//! `application/vnd.wasm.config.v0+json` describing the component and one
//! layer of type `application/wasm`; a single-layer image whose layer is a
//! component is accepted too.

mod cache;
mod clients;
mod component;
mod fetch;
mod limits;
mod linux;
mod manifest;

use std::collections::BTreeMap;
use std::path::PathBuf;

use oci_client::Client;
use oci_client::secrets::RegistryAuth;
use sha2::{Digest as _, Sha256};

pub use cache::{BlobCache, CacheError};
pub use clients::{Clients, is_loopback};
pub use component::{ComponentInterface, Pulled, WasmConfig, interface_of};
pub use limits::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_STALL_TIMEOUT, Limits,
    MAX_INDEX_BYTES, MAX_LINUX_LAYERS, MAX_LINUX_UNPACKED_BYTES, MAX_MANIFEST_BYTES,
};
pub use linux::{Blob, LinuxImage, MAX_LINUX_IMAGE_BYTES};
pub use manifest::{ParsedManifest, Resolved, parse_manifest};
pub use oci_client::Reference;
pub use skiff_api::kinds::pod::{WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};

/// The largest component pulled or pushed.
pub const MAX_ARTIFACT_BYTES: u64 = 256 << 20;
/// More layers than this is not a component artifact.
pub const MAX_LAYERS: usize = 8;

#[derive(Debug, Clone, thiserror::Error)]
pub enum OciError {
    #[error("invalid reference `{0}`: {1}")]
    Reference(String, String),
    #[error("{reference}: {reason}")]
    Registry { reference: String, reason: String },
    #[error("{reference}: not found in the registry")]
    NotFound { reference: String },
    #[error("{reference}: the registry refused the credentials")]
    Unauthorized { reference: String },
    #[error("{reference}: blob {digest} does not match its digest (got {actual})")]
    DigestMismatch {
        reference: String,
        digest: String,
        actual: String,
    },
    #[error("{reference}: not a Wasm component artifact: {reason}")]
    NotWasm { reference: String, reason: String },
    /// An ordinary Linux image: for the containerd runtime.
    #[error(
        "{reference}: a Linux container image ({what}); it needs the containerd runtime, which this node does not have"
    )]
    LinuxImage { reference: String, what: String },
    #[error("{reference}: its index has no image for {wanted} (it has {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },
    #[error("{reference}: {what} of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        reference: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// Content that grew past a cap while it was read: the read stopped
    /// there, whatever the manifest or the response declared.
    #[error("{reference}: {blob} is over {cap} of {limit} bytes; the pull stopped there")]
    OverCap {
        reference: String,
        /// What was being read: `manifest v1`, `layer sha256:...`.
        blob: String,
        /// Which cap: `its declared size`, `the manifest size limit`, ...
        cap: &'static str,
        limit: u64,
    },
    #[error("{reference}: {count} layers is over the layer count limit of {limit}")]
    TooManyLayers {
        reference: String,
        count: usize,
        limit: usize,
    },
    /// A registry that did not answer, or stopped sending, in time.
    #[error("{reference}: {what}")]
    Timeout { reference: String, what: String },
    #[error("pull secret {secret}: {reason}")]
    Secret { secret: String, reason: String },
    #[error("blob cache {}: {reason}", path.display())]
    Cache { path: PathBuf, reason: String },
}

/// How to authenticate to a registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
}

impl Credentials {
    /// The credentials of a pull secret for `registry` (`host[:port]`),
    /// from its decoded `data`: `username` and `password`, or `token`, or
    /// a `.dockerconfigjson` (as `wasmctl create secret docker-registry`
    /// and kubectl make), whose entry for `registry` is used. Values must be
    /// UTF-8: a credential mangled into something else would only be
    /// refused by the registry, with a less useful message.
    pub fn from_secret(
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
        registry: &str,
    ) -> Result<Credentials, OciError> {
        let refused = |reason: String| OciError::Secret {
            secret: secret.to_owned(),
            reason,
        };
        if let Some(config) = data.get(DOCKER_CONFIG_KEY) {
            return docker_config_credentials(config, registry).map_err(refused);
        }
        let text = |key: &str| -> Result<Option<String>, OciError> {
            data.get(key)
                .map(|bytes| {
                    String::from_utf8(bytes.clone())
                        .map_err(|_| refused(format!("its {key} is not UTF-8")))
                })
                .transpose()
        };
        match (text("username")?, text("password")?, text("token")?) {
            (Some(username), Some(password), _) => Ok(Credentials::Basic { username, password }),
            (_, _, Some(token)) => Ok(Credentials::Bearer(token)),
            _ => Err(refused(
                "it has neither username and password nor token (nor .dockerconfigjson)".into(),
            )),
        }
    }

    fn auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// The key of a Docker config in a pull secret's data.
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// A registry as Docker configs and references may spell it, compared
/// alike: no scheme, no path, lower case, Docker Hub's names as one.
fn registry_host(text: &str) -> String {
    let text = text
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = text
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

/// The credentials a Docker config (`{"auths": {REGISTRY: {...}}}`) holds
/// for `registry`: `username` and `password`, else `auth`
/// (base64 of `username:password`), else `identitytoken`.
fn docker_config_credentials(config: &[u8], registry: &str) -> Result<Credentials, String> {
    use base64::Engine as _;
    let config: serde_json::Value = serde_json::from_slice(config)
        .map_err(|e| format!("its {DOCKER_CONFIG_KEY} is not JSON: {e}"))?;
    let wanted = registry_host(registry);
    let entry = config["auths"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(name, _)| registry_host(name) == wanted)
        .map(|(_, entry)| entry)
        .ok_or_else(|| format!("its {DOCKER_CONFIG_KEY} has no entry for registry {registry}"))?;
    let text = |key: &str| entry[key].as_str().filter(|v| !v.is_empty());
    if let (Some(username), Some(password)) = (text("username"), text("password")) {
        return Ok(Credentials::Basic {
            username: username.into(),
            password: password.into(),
        });
    }
    if let Some(auth) = text("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                format!("the auth of {registry} in its {DOCKER_CONFIG_KEY} is not base64 of UTF-8")
            })?;
        let (username, password) = decoded.split_once(':').ok_or_else(|| {
            format!("the auth of {registry} in its {DOCKER_CONFIG_KEY} is not username:password")
        })?;
        return Ok(Credentials::Basic {
            username: username.into(),
            password: password.into(),
        });
    }
    if let Some(token) = text("identitytoken").or_else(|| text("registrytoken")) {
        return Ok(Credentials::Bearer(token.into()));
    }
    Err(format!(
        "the entry for {registry} in its {DOCKER_CONFIG_KEY} has no username and password, auth or token"
    ))
}

/// A reference with its registry, for messages and protocol choice.
pub fn parse_reference(text: &str) -> Result<Reference, OciError> {
    text.parse::<Reference>()
        .map_err(|e| OciError::Reference(text.to_owned(), e.to_string()))
}

/// A registry client.
#[derive(Clone)]
pub struct Registry {
    clients: Clients,
    limits: Limits,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Registry {
    /// `insecure` lists further registries (host:port) to reach over plain
    /// HTTP; loopback ones always are.
    pub fn new(insecure: &[String]) -> Self {
        Self::with_limits(insecure, Limits::default())
    }

    /// A client held to `limits` (sizes and deadlines) on every pull.
    pub fn with_limits(insecure: &[String], limits: Limits) -> Self {
        Self {
            clients: Clients::new(insecure, &limits),
            limits,
        }
    }

    /// The limits every pull is held to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The client for `reference`'s registry with these credentials.
    fn client_for(&self, reference: &Reference, credentials: &Credentials) -> Client {
        self.clients.for_reference(reference, &credentials.auth())
    }

    /// The manifest digest a reference names now (a digest reference names
    /// itself).
    pub async fn resolve(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<String, OciError> {
        match reference.digest() {
            Some(digest) => Ok(digest.to_owned()),
            None => self.ask(reference, credentials).await,
        }
    }

    /// The manifest digest the registry gives for a reference, asked even
    /// when the reference carries one: the registry's answer is what shows
    /// that these credentials may read the image.
    pub async fn ask(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<String, OciError> {
        let name = reference.whole();
        let digest = self.manifest_digest(reference, credentials).await?;
        match reference.digest() {
            Some(wanted) if wanted != digest => Err(OciError::DigestMismatch {
                reference: name,
                digest: wanted.to_owned(),
                actual: digest,
            }),
            _ => Ok(digest),
        }
    }
}

/// `reference` pinned to `digest`.
pub fn pinned(reference: &Reference, digest: &str) -> Result<Reference, OciError> {
    parse_reference(&format!(
        "{}/{}@{digest}",
        reference.resolve_registry(),
        reference.repository()
    ))
}

fn classify(reference: &str, error: oci_client::errors::OciDistributionError) -> OciError {
    use oci_client::errors::OciDistributionError as E;
    let reference = reference.to_owned();
    match error {
        E::ImageManifestNotFoundError(_) => OciError::NotFound { reference },
        E::UnauthorizedError { .. } | E::AuthenticationFailure(_) => {
            OciError::Unauthorized { reference }
        }
        E::DigestError(oci_client::errors::DigestError::VerificationError { expected, actual }) => {
            OciError::DigestMismatch {
                reference,
                digest: expected,
                actual,
            }
        }
        E::DigestError(e) => OciError::Registry {
            reference,
            reason: format!("digest check failed: {e}"),
        },
        E::RegistryError { envelope, url } => {
            use oci_client::errors::OciErrorCode as C;
            let codes = || envelope.errors.iter().map(|e| &e.code);
            if codes().any(|c| matches!(c, C::ManifestUnknown | C::NameUnknown | C::BlobUnknown)) {
                OciError::NotFound { reference }
            } else if codes().any(|c| matches!(c, C::Unauthorized | C::Denied)) {
                OciError::Unauthorized { reference }
            } else {
                OciError::Registry {
                    reference,
                    reason: format!("{envelope} ({url})"),
                }
            }
        }
        E::ServerError { code: 404, .. } => OciError::NotFound { reference },
        E::ServerError {
            code: 401 | 403, ..
        } => OciError::Unauthorized { reference },
        other => {
            let text = other.to_string();
            if text.contains("MANIFEST_UNKNOWN") || text.contains("NAME_UNKNOWN") {
                OciError::NotFound { reference }
            } else if text.contains("UNAUTHORIZED") || text.contains("DENIED") {
                OciError::Unauthorized { reference }
            } else {
                OciError::Registry {
                    reference,
                    reason: text,
                }
            }
        }
    }
}

/// `sha256:<hex>` of `bytes`, as OCI names content.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_secrets_give_basic_or_bearer_credentials() {
        let data = |pairs: &[(&str, &[u8])]| -> BTreeMap<String, Vec<u8>> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect()
        };
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        type Case = (BTreeMap<String, Vec<u8>>, Result<Credentials, &'static str>);
        let cases: Vec<Case> = vec![
            (
                data(&[("username", b"u"), ("password", b"p")]),
                Ok(basic.clone()),
            ),
            (
                data(&[("username", b"u"), ("password", b"p"), ("token", b"t")]),
                Ok(basic),
            ),
            (
                data(&[("token", b"t")]),
                Ok(Credentials::Bearer("t".into())),
            ),
            (
                data(&[("username", b"u")]),
                Err(
                    "pull secret s: it has neither username and password nor token (nor .dockerconfigjson)",
                ),
            ),
            (
                data(&[]),
                Err(
                    "pull secret s: it has neither username and password nor token (nor .dockerconfigjson)",
                ),
            ),
            (
                data(&[("username", b"u"), ("password", b"\xff")]),
                Err("pull secret s: its password is not UTF-8"),
            ),
        ];
        for (data, expected) in cases {
            let got =
                Credentials::from_secret("s", &data, "127.0.0.1:5000").map_err(|e| e.to_string());
            assert_eq!(got, expected.map_err(str::to_owned), "{data:?}");
        }
    }

    #[test]
    fn docker_configs_give_the_entry_for_the_images_registry() {
        let config =
            |json: &str| BTreeMap::from([(DOCKER_CONFIG_KEY.to_owned(), json.as_bytes().to_vec())]);
        let basic = |u: &str, p: &str| {
            Ok(Credentials::Basic {
                username: u.into(),
                password: p.into(),
            })
        };
        let both = config(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "aHViOnB3"},
                          "127.0.0.1:5000": {"username": "u", "password": "p", "auth": "eDp5"},
                          "REG.example.com": {"identitytoken": "tok"}}}"#,
        );
        let cases: [(&str, Result<Credentials, String>); 5] = [
            ("127.0.0.1:5000", basic("u", "p")),
            ("docker.io", basic("hub", "pw")),
            ("index.docker.io", basic("hub", "pw")),
            ("reg.example.com", Ok(Credentials::Bearer("tok".into()))),
            (
                "127.0.0.1:5001",
                Err(
                    "pull secret s: its .dockerconfigjson has no entry for registry 127.0.0.1:5001"
                        .into(),
                ),
            ),
        ];
        for (registry, expected) in cases {
            let got = Credentials::from_secret("s", &both, registry).map_err(|e| e.to_string());
            assert_eq!(got, expected, "{registry}");
        }
        for (json, error) in [
            (
                "nope",
                "pull secret s: its .dockerconfigjson is not JSON: expected ident at line 1 column 2",
            ),
            (
                r#"{"auths": {"r:1": {"auth": "!!"}}}"#,
                "pull secret s: the auth of r:1 in its .dockerconfigjson is not base64 of UTF-8",
            ),
            (
                r#"{"auths": {"r:1": {"auth": "bm9jb2xvbg=="}}}"#,
                "pull secret s: the auth of r:1 in its .dockerconfigjson is not username:password",
            ),
            (
                r#"{"auths": {"r:1": {}}}"#,
                "pull secret s: the entry for r:1 in its .dockerconfigjson has no username and password, auth or token",
            ),
        ] {
            let got =
                Credentials::from_secret("s", &config(json), "r:1").map_err(|e| e.to_string());
            assert_eq!(got, Err(error.to_owned()), "{json}");
        }
    }
}
