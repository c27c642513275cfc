//! Linux images for the containerd runtime: manifest (an index read for
//! this machine's entry), config and layers, each checked against its
//! digest.

use oci_client::Reference;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor};
use skiff_api::kinds::pod::is_linux_config;

use crate::{Credentials, OciError, Registry, Resolved, classify, sha256_digest};

/// Layer media types the containerd runtime unpacks.
const LINUX_LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];

/// Largest Linux image the node pulls, all layers together.
pub const MAX_LINUX_IMAGE_BYTES: u64 = 2 << 30;

impl Registry {
    /// Pulls a Linux image (which should carry a digest): its manifest,
    /// config and layers, each checked against its digest.
    pub async fn pull_linux(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<LinuxImage, OciError> {
        let resolved = self.resolve_manifest(reference, credentials).await?;
        self.pull_linux_resolved(reference, credentials, &resolved)
            .await
    }

    /// Pulls the config and layers of an image whose manifest was resolved
    /// already.
    pub async fn pull_linux_resolved(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        resolved: &Resolved,
    ) -> Result<LinuxImage, OciError> {
        let name = reference.whole();
        let client = self.client_for(reference, credentials);
        let manifest = &resolved.manifest;
        let (manifest_bytes, actual) = (
            resolved.manifest_bytes.clone(),
            resolved.manifest_digest.clone(),
        );
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
                let actual = sha256_digest(&bytes);
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

/// A Linux image pulled from a registry, every blob checked against its
/// digest.
#[derive(Debug, Clone)]
pub struct LinuxImage {
    pub reference: String,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Blob>,
}

#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    /// Empty for a layer that was in containerd's content store when the
    /// image was pulled, and so was not downloaded.
    pub bytes: Vec<u8>,
}

impl Blob {
    /// Whether the blob's bytes are at hand.
    pub fn downloaded(&self) -> bool {
        self.bytes.len() as i64 == self.size
    }
}

impl LinuxImage {
    /// The image without its layers' bytes, to start further pods from
    /// while containerd holds the layers.
    pub fn skeleton(&self) -> LinuxImage {
        LinuxImage {
            reference: self.reference.clone(),
            manifest: self.manifest.clone(),
            config: self.config.clone(),
            layers: self
                .layers
                .iter()
                .map(|l| Blob {
                    bytes: Vec::new(),
                    ..l.clone()
                })
                .collect(),
        }
    }

    /// Whether every blob's bytes are at hand.
    pub fn complete(&self) -> bool {
        self.layers.iter().all(Blob::downloaded)
    }
}
