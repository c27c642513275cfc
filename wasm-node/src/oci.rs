//! Components as OCI artifacts, in the CNCF Wasm layout: a config of type
//! `application/vnd.wasm.config.v0+json` describing the component, and one
//! layer of type `application/wasm`. Pulls go by digest and every byte is
//! checked against it; a single-layer image whose layer is a component is
//! accepted too.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use futures::StreamExt;
use oci_client::client::Config;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::{Deserialize, Serialize};
use skiff_client::registry::Clients;
use tokio::sync::OnceCell;

use crate::runtime::Digest;

use skiff_api::kinds::pod::{PodRuntime, is_linux_config};
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

/// What a component's config says about it (the CNCF Wasm artifact
/// config).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub layer_digests: Vec<String>,
    #[serde(default)]
    pub component: ComponentInterface,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInterface {
    pub exports: Vec<String>,
    pub imports: Vec<String>,
}

/// The top-level imports and exports of a component, read from its binary
/// without compiling it.
pub fn interface_of(component: &[u8]) -> Result<ComponentInterface, String> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut interface = ComponentInterface::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(component) {
        match payload.map_err(|e| e.to_string())? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err("a core module, not a component".into());
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    interface
                        .imports
                        .push(import.map_err(|e| e.to_string())?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(exports) if depth == 1 => {
                for export in exports {
                    interface
                        .exports
                        .push(export.map_err(|e| e.to_string())?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(interface)
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
        Self {
            clients: Clients::new(insecure),
        }
    }

    /// The client for `reference`'s registry with these credentials.
    fn client_for(&self, reference: &Reference, credentials: &Credentials) -> Client {
        self.clients.for_reference(reference, &credentials.auth())
    }

    /// Pushes a component; `progress(sent, total)` is called as the layer
    /// uploads. Returns the manifest digest.
    pub async fn push(
        &self,
        reference: &Reference,
        component: Vec<u8>,
        credentials: &Credentials,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<String, OciError> {
        let name = reference.whole();
        let size = component.len() as u64;
        if size > MAX_ARTIFACT_BYTES {
            return Err(OciError::TooLarge {
                reference: name,
                what: "the component",
                size,
                limit: MAX_ARTIFACT_BYTES,
            });
        }
        let interface = interface_of(&component).map_err(|reason| OciError::NotWasm {
            reference: name.clone(),
            reason,
        })?;
        let layer_digest = Digest::of(&component).to_string();
        let config = WasmConfig {
            created: Some(chrono_now()),
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![layer_digest.clone()],
            component: interface,
        };
        let config = Config::new(
            serde_json::to_vec(&config).expect("config serialises"),
            WASM_CONFIG_MEDIA_TYPE.into(),
            None,
        );
        let client = self.client_for(reference, credentials);
        let registry_error = |e: oci_client::errors::OciDistributionError| classify(&name, e);
        client
            .auth(
                reference,
                &credentials.auth(),
                oci_client::RegistryOperation::Push,
            )
            .await
            .map_err(registry_error)?;

        // The layer goes up in chunks so progress can be shown; the config
        // and manifest are small.
        let chunks: Vec<bytes::Bytes> = bytes::Bytes::from(component)
            .chunks(1 << 20)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        let progress = Arc::new(progress);
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stream = futures::stream::iter(chunks).map({
            let (progress, sent) = (progress.clone(), sent.clone());
            move |chunk| {
                let now = sent.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed)
                    + chunk.len() as u64;
                progress(now, size);
                Ok(chunk)
            }
        });
        if !client
            .blob_exists(reference, &layer_digest)
            .await
            .unwrap_or(false)
        {
            client
                .push_blob_stream(reference, stream, &layer_digest, Some(size))
                .await
                .map_err(registry_error)?;
        } else {
            progress(size, size);
        }
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
            config: OciDescriptor {
                media_type: WASM_CONFIG_MEDIA_TYPE.into(),
                digest: config.sha256_digest(),
                size: config.data.len() as i64,
                ..Default::default()
            },
            layers: vec![OciDescriptor {
                media_type: WASM_LAYER_MEDIA_TYPE.into(),
                digest: layer_digest,
                size: size as i64,
                ..Default::default()
            }],
            artifact_type: Some(WASM_CONFIG_MEDIA_TYPE.into()),
            ..Default::default()
        };
        client
            .push_blob(reference, config.data.clone(), &manifest.config.digest)
            .await
            .map_err(registry_error)?;
        let manifest = OciManifest::Image(manifest);
        client
            .push_manifest(reference, &manifest)
            .await
            .map_err(registry_error)?;
        client
            .fetch_manifest_digest(reference, &credentials.auth())
            .await
            .map_err(registry_error)
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
        let digest = self
            .client_for(reference, credentials)
            .fetch_manifest_digest(reference, &credentials.auth())
            .await
            .map_err(|e| classify(&name, e))?;
        match reference.digest() {
            Some(wanted) if wanted != digest => Err(OciError::DigestMismatch {
                reference: name,
                digest: wanted.to_owned(),
                actual: digest,
            }),
            _ => Ok(digest),
        }
    }

    /// Pulls the component of `reference` (which should carry a digest),
    /// checking every blob against its digest and the safety caps.
    pub async fn pull(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<Pulled, OciError> {
        let name = reference.whole();
        let client = self.client_for(reference, credentials);
        let registry_error = |e: oci_client::errors::OciDistributionError| classify(&name, e);
        let (manifest, manifest_digest) = client
            .pull_manifest(reference, &credentials.auth())
            .await
            .map_err(registry_error)?;
        if let Some(wanted) = reference.digest()
            && wanted != manifest_digest
        {
            return Err(OciError::DigestMismatch {
                reference: name,
                digest: wanted.to_owned(),
                actual: manifest_digest,
            });
        }
        // Wasm artifacts are single manifests; a multi-platform index is
        // how Linux images are published.
        let OciManifest::Image(manifest) = manifest else {
            return Err(OciError::LinuxImage {
                reference: name,
                what: "a multi-platform index".into(),
            });
        };
        let layer = component_layer(&name, &manifest)?;
        let mut component = Vec::with_capacity(layer.size.max(0) as usize);
        // oci-client checks the bytes against the layer digest as they come.
        client
            .pull_blob(reference, layer, &mut component)
            .await
            .map_err(registry_error)?;
        let actual = Digest::of(&component).to_string();
        if actual != layer.digest {
            return Err(OciError::DigestMismatch {
                reference: name,
                digest: layer.digest.clone(),
                actual,
            });
        }
        Ok(Pulled {
            manifest_digest,
            layer_digest: layer.digest.clone(),
            component,
        })
    }
}

/// Manifests the node reads: single images, and indexes of them.
const MANIFEST_TYPES: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The OCI name of this machine's architecture.
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The digest of an index's entry for `linux` on this machine's
/// architecture.
fn platform_entry(name: &str, index: &serde_json::Value) -> Result<String, OciError> {
    let entries = index["manifests"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let platform = |entry: &serde_json::Value| {
        let p = &entry["platform"];
        format!(
            "{}/{}",
            p["os"].as_str().unwrap_or("?"),
            p["architecture"].as_str().unwrap_or("?")
        )
    };
    let wanted = format!("linux/{}", architecture());
    entries
        .iter()
        .find(|entry| platform(entry) == wanted)
        .and_then(|entry| entry["digest"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| OciError::NoPlatform {
            reference: name.to_owned(),
            wanted,
            available: entries.iter().map(platform).collect::<Vec<_>>().join(", "),
        })
}

/// `reference` pinned to `digest`.
pub fn pinned(reference: &Reference, digest: &str) -> Result<Reference, OciError> {
    parse_reference(&format!(
        "{}/{}@{digest}",
        reference.resolve_registry(),
        reference.repository()
    ))
}

/// Layer media types the containerd runtime unpacks.
const LINUX_LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// Largest Linux image the node pulls, all layers together.
pub const MAX_LINUX_IMAGE_BYTES: u64 = 2 << 30;

impl Registry {
    /// An image manifest (OCI or Docker v2): its bytes, digest and parsed
    /// form, checked against the digest the reference carries. A
    /// multi-platform index stands for its entry for this machine
    /// (`linux/amd64` here), fetched and checked in turn.
    async fn manifest(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<(Vec<u8>, String, OciImageManifest), OciError> {
        let name = reference.whole();
        let (mut bytes, mut digest) = self.raw_manifest(reference, credentials).await?;
        let malformed = |e: serde_json::Error| OciError::Registry {
            reference: name.clone(),
            reason: format!("malformed manifest: {e}"),
        };
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).map_err(malformed)?;
        if parsed["manifests"].is_array() {
            let entry = platform_entry(&name, &parsed)?;
            let pinned = pinned(reference, &entry)?;
            (bytes, digest) = self.raw_manifest(&pinned, credentials).await?;
            let parsed: serde_json::Value = serde_json::from_slice(&bytes).map_err(malformed)?;
            if parsed["manifests"].is_array() {
                return Err(OciError::Registry {
                    reference: name,
                    reason: format!("its index names another index ({digest})"),
                });
            }
        }
        let manifest = serde_json::from_slice(&bytes).map_err(malformed)?;
        Ok((bytes, digest, manifest))
    }

    /// A manifest's or index's bytes and digest, checked against the
    /// digest the reference carries (or the registry names).
    async fn raw_manifest(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<(Vec<u8>, String), OciError> {
        let name = reference.whole();
        let (bytes, manifest_digest) = self
            .client_for(reference, credentials)
            .pull_manifest_raw(reference, &credentials.auth(), MANIFEST_TYPES)
            .await
            .map_err(|e| classify(&name, e))?;
        let actual = Digest::of(&bytes).to_string();
        let wanted = reference.digest().unwrap_or(&manifest_digest).to_owned();
        if actual != wanted {
            return Err(OciError::DigestMismatch {
                reference: name,
                digest: wanted,
                actual,
            });
        }
        Ok((bytes.to_vec(), actual))
    }

    /// The runtime an artifact needs, from its manifest's media types
    /// alone (no blob is pulled).
    pub async fn kind_of(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<PodRuntime, OciError> {
        let (_, _, manifest) = self.manifest(reference, credentials).await?;
        PodRuntime::of_artifact(
            &manifest.config.media_type,
            manifest.layers.iter().map(|l| l.media_type.as_str()),
        )
        .ok_or_else(|| OciError::NotWasm {
            reference: reference.whole(),
            reason: format!(
                "neither Wasm nor a Linux image (config {})",
                manifest.config.media_type
            ),
        })
    }

    /// Pulls a Linux image (which should carry a digest): its manifest,
    /// config and layers, each checked against its digest.
    pub async fn pull_linux(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<crate::containerd::LinuxImage, OciError> {
        use crate::containerd::{Blob, LinuxImage};
        let name = reference.whole();
        let client = self.client_for(reference, credentials);
        let (manifest_bytes, actual, manifest) = self.manifest(reference, credentials).await?;
        if !is_linux_config(&manifest.config.media_type) {
            return Err(OciError::NotWasm {
                reference: name,
                reason: format!(
                    "neither Wasm nor a Linux image (config {})",
                    manifest.config.media_type
                ),
            });
        }
        let total: i64 = manifest.layers.iter().map(|l| l.size.max(0)).sum();
        if total as u64 > MAX_LINUX_IMAGE_BYTES {
            return Err(OciError::TooLarge {
                reference: name,
                what: "the image",
                size: total as u64,
                limit: MAX_LINUX_IMAGE_BYTES,
            });
        }
        let fetch = |descriptor: &OciDescriptor| {
            let (client, name, descriptor) = (&client, &name, descriptor.clone());
            async move {
                let mut bytes = Vec::with_capacity(descriptor.size.max(0) as usize);
                client
                    .pull_blob(reference, &descriptor, &mut bytes)
                    .await
                    .map_err(|e| classify(name, e))?;
                let actual = Digest::of(&bytes).to_string();
                if actual != descriptor.digest {
                    return Err(OciError::DigestMismatch {
                        reference: name.clone(),
                        digest: descriptor.digest.clone(),
                        actual,
                    });
                }
                Ok(Blob {
                    media_type: descriptor.media_type.clone(),
                    digest: descriptor.digest.clone(),
                    size: bytes.len() as i64,
                    bytes,
                })
            }
        };
        let config = fetch(&manifest.config).await?;
        let mut layers = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            if !LINUX_LAYER_TYPES.contains(&layer.media_type.as_str()) {
                return Err(OciError::Registry {
                    reference: name,
                    reason: format!(
                        "layer {} has unsupported media type {}",
                        layer.digest, layer.media_type
                    ),
                });
            }
            layers.push(fetch(layer).await?);
        }
        Ok(LinuxImage {
            reference: name,
            manifest: Blob {
                media_type: manifest
                    .media_type
                    .clone()
                    .unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_owned()),
                digest: actual,
                size: manifest_bytes.len() as i64,
                bytes: manifest_bytes,
            },
            config,
            layers,
        })
    }
}

/// A pulled component.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub manifest_digest: String,
    pub layer_digest: String,
    pub component: Vec<u8>,
}

/// The layer holding the component: the `application/wasm` layer of a Wasm
/// artifact, or the only layer of an image whose config says wasm.
fn component_layer<'m>(
    name: &str,
    manifest: &'m OciImageManifest,
) -> Result<&'m oci_client::manifest::OciDescriptor, OciError> {
    let not_wasm = |reason: String| OciError::NotWasm {
        reference: name.to_owned(),
        reason,
    };
    if manifest.layers.len() > MAX_LAYERS {
        return Err(not_wasm(format!(
            "{} layers (at most {MAX_LAYERS})",
            manifest.layers.len()
        )));
    }
    let total: i64 = manifest.layers.iter().map(|l| l.size.max(0)).sum();
    if total as u64 > MAX_ARTIFACT_BYTES {
        return Err(OciError::TooLarge {
            reference: name.to_owned(),
            what: "the artifact",
            size: total as u64,
            limit: MAX_ARTIFACT_BYTES,
        });
    }
    if let Some(layer) = manifest
        .layers
        .iter()
        .find(|l| l.media_type == WASM_LAYER_MEDIA_TYPE)
    {
        return Ok(layer);
    }
    let config_type = manifest.config.media_type.as_str();
    match manifest.layers.as_slice() {
        [only] if config_type == WASM_CONFIG_MEDIA_TYPE => Ok(only),
        _ if is_linux_config(config_type) => Err(OciError::LinuxImage {
            reference: name.to_owned(),
            what: format!("config {config_type}"),
        }),
        _ => Err(not_wasm(format!(
            "no application/wasm layer (config {config_type})"
        ))),
    }
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

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Why the cache produced no component.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Pull(OciError),
    #[error("blob cache: {0}")]
    Io(String),
}

/// A content-addressed store of pulled components with a size limit,
/// evicting the least recently used. Blobs are kept by the digest of their
/// content and checked against it on every read; an index maps manifest
/// digests to them. Concurrent requests for one manifest share one
/// download.
pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    inflight: Mutex<HashMap<String, Arc<Download>>>,
}

/// One download that every concurrent caller for a manifest awaits.
type Download = OnceCell<Result<Arc<Vec<u8>>, CacheError>>;

impl BlobCache {
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self, CacheError> {
        let dir = dir.into();
        for sub in ["blobs", "manifests"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| CacheError::Io(format!("{}: {e}", dir.join(sub).display())))?;
        }
        Ok(Self {
            dir,
            max_bytes,
            inflight: Mutex::new(HashMap::new()),
        })
    }

    fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs").join(digest.replace(':', "-"))
    }

    fn index_path(&self, manifest_digest: &str) -> PathBuf {
        self.dir
            .join("manifests")
            .join(manifest_digest.replace(':', "-"))
    }

    /// The component of the artifact with `manifest_digest`, pulled with
    /// `fetch` (once, however many callers ask at the same time) when the
    /// cache does not hold it intact.
    pub async fn get_or_fetch<F, Fut>(
        &self,
        manifest_digest: &str,
        fetch: F,
    ) -> Result<Arc<Vec<u8>>, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Pulled, OciError>>,
    {
        if let Some(component) = self.cached(manifest_digest) {
            return Ok(Arc::new(component));
        }
        let cell = self
            .inflight
            .lock()
            .expect("inflight lock")
            .entry(manifest_digest.to_owned())
            .or_default()
            .clone();
        let result = cell
            .get_or_init(|| async {
                let pulled = fetch().await.map_err(CacheError::Pull)?;
                self.store(manifest_digest, &pulled)?;
                Ok(Arc::new(pulled.component))
            })
            .await
            .clone();
        self.inflight
            .lock()
            .expect("inflight lock")
            .remove(manifest_digest);
        result
    }

    /// Whether the cache holds the component of `manifest_digest` (not
    /// checked against its digest yet: reading it is).
    pub fn holds(&self, manifest_digest: &str) -> bool {
        self.index_path(manifest_digest).exists()
    }

    /// A cached component, if its blob is there and still matches its
    /// digest.
    fn cached(&self, manifest_digest: &str) -> Option<Vec<u8>> {
        let layer = std::fs::read_to_string(self.index_path(manifest_digest)).ok()?;
        let path = self.blob_path(layer.trim());
        let bytes = std::fs::read(&path).ok()?;
        if Digest::of(&bytes).to_string() != layer.trim() {
            tracing::warn!(
                "cached blob {} is damaged; pulling it again",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return None;
        }
        touch(&path);
        Some(bytes)
    }

    fn store(&self, manifest_digest: &str, pulled: &Pulled) -> Result<(), CacheError> {
        let io =
            |path: &Path, e: std::io::Error| CacheError::Io(format!("{}: {e}", path.display()));
        let blob = self.blob_path(&pulled.layer_digest);
        let tmp = blob.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &pulled.component).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &blob).map_err(|e| io(&blob, e))?;
        let index = self.index_path(manifest_digest);
        std::fs::write(&index, &pulled.layer_digest).map_err(|e| io(&index, e))?;
        self.evict(&blob);
        Ok(())
    }

    /// Removes least recently used blobs until the cache fits its limit,
    /// never the one just added.
    fn evict(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("blobs")) else {
            return;
        };
        let mut blobs: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| {
                    (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                        e.path(),
                    )
                })
            })
            .collect();
        let mut total: u64 = blobs.iter().map(|(_, size, _)| size).sum();
        blobs.sort();
        for (_, size, path) in blobs {
            if total <= self.max_bytes {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                total -= size;
            }
        }
    }
}

/// Marks a blob as just used (its modification time orders eviction).
fn touch(path: &Path) {
    if let Ok(file) = std::fs::File::options().append(true).open(path) {
        let _ = file.set_modified(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_are_read_without_compiling() {
        let component = wat::parse_str(
            r#"(component
                (import "wasi:cli/environment@0.2.12" (instance))
                (core module $m)
                (core instance (instantiate $m))
                (instance $i)
                (export "wasi:http/incoming-handler@0.2.12" (instance $i)))"#,
        )
        .unwrap();
        let interface = interface_of(&component).unwrap();
        assert_eq!(interface.imports, ["wasi:cli/environment@0.2.12"]);
        assert_eq!(interface.exports, ["wasi:http/incoming-handler@0.2.12"]);
        assert!(interface_of(&wat::parse_str("(module)").unwrap()).is_err());
    }

    fn pulled(manifest: &str, content: &[u8]) -> Pulled {
        Pulled {
            manifest_digest: manifest.into(),
            layer_digest: Digest::of(content).to_string(),
            component: content.to_vec(),
        }
    }

    #[tokio::test]
    async fn the_cache_fetches_once_checks_content_and_evicts_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 10).unwrap();
        let fetches = std::sync::atomic::AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(pulled("sha256:m1", b"aaaaaa"))
        };
        let (one, two) = tokio::join!(
            cache.get_or_fetch("sha256:m1", fetch),
            cache.get_or_fetch("sha256:m1", fetch)
        );
        assert_eq!(one.unwrap().as_slice(), b"aaaaaa");
        assert_eq!(two.unwrap().as_slice(), b"aaaaaa");
        assert_eq!(
            fetches.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one download shared"
        );
        cache.get_or_fetch("sha256:m1", fetch).await.unwrap();
        assert_eq!(
            fetches.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "then served from disk"
        );

        // A damaged blob on disk is noticed and pulled again.
        let blob = cache.blob_path(&Digest::of(b"aaaaaa").to_string());
        std::fs::write(&blob, b"aaaaab").unwrap();
        cache.get_or_fetch("sha256:m1", fetch).await.unwrap();
        assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 2);

        // Over 10 bytes, the least recently used blob goes.
        cache
            .get_or_fetch("sha256:m2", || async { Ok(pulled("sha256:m2", b"bbbbbb")) })
            .await
            .unwrap();
        assert!(!blob.exists());
        assert!(cache.blob_path(&Digest::of(b"bbbbbb").to_string()).exists());

        let failed = cache
            .get_or_fetch("sha256:m3", || async {
                Err(OciError::NotFound {
                    reference: "r".into(),
                })
            })
            .await;
        assert!(matches!(
            failed,
            Err(CacheError::Pull(OciError::NotFound { .. }))
        ));
    }
}
