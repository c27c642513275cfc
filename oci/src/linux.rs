//! Linux images for the containerd runtime: manifest (an index read for
//! this machine's entry), config and layers, each checked against its
//! digest.

use std::io::Read;

use oci_client::Reference;
use oci_client::manifest::OCI_IMAGE_MEDIA_TYPE;
use skiff_api::kinds::pod::is_linux_config;

use crate::{Credentials, OciError, Registry, Resolved};

/// How a layer's bytes are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Layer media types the containerd runtime unpacks, and how each is
/// compressed.
const LINUX_LAYER_TYPES: &[(&str, Compression)] = &[
    ("application/vnd.oci.image.layer.v1.tar", Compression::None),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Gzip,
    ),
];

/// The size `bytes` unpack to, counted by decompressing them into
/// nothing, or `None` as soon as it passes `limit` (so a small layer that
/// would unpack to terabytes costs at most `limit` bytes of work, and no
/// memory beyond a buffer). containerd unpacks the layer itself, with no
/// such cap, so this is measured before it is handed the layer.
fn unpacked_size(
    bytes: &[u8],
    compression: Compression,
    limit: u64,
) -> Result<Option<u64>, std::io::Error> {
    let mut reader: Box<dyn Read + '_> = match compression {
        Compression::None => {
            let size = bytes.len() as u64;
            return Ok((size <= limit).then_some(size));
        }
        // Multi-member: gzip layers may be several members back to back,
        // and containerd unpacks them all.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
        // zstd's decoder refuses frames whose window is over its default
        // maximum (128 MiB), which bounds its memory.
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(bytes)?),
    };
    let mut buffer = vec![0; 64 << 10];
    let mut total = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => return Ok(Some(total)),
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += read as u64;
        if total > limit {
            return Ok(None);
        }
    }
}

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
        let limits = self.limits;
        if manifest.layers.len() > limits.max_layers {
            return Err(OciError::TooManyLayers {
                reference: name,
                count: manifest.layers.len(),
                limit: limits.max_layers,
            });
        }
        // Declared sizes refuse a plainly large image before any download;
        // the counts below hold whatever the registry actually sends.
        let total: i64 = manifest.layers.iter().map(|l| l.size.max(0)).sum();
        if total as u64 > limits.max_image_bytes {
            return Err(OciError::TooLarge {
                reference: name,
                what: "the image",
                size: total as u64,
                limit: limits.max_image_bytes,
            });
        }
        let mut compression = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            match LINUX_LAYER_TYPES
                .iter()
                .find(|(media_type, _)| *media_type == layer.media_type)
            {
                Some((_, how)) => compression.push(*how),
                None => {
                    return Err(OciError::Registry {
                        reference: name,
                        reason: format!(
                            "layer {} has unsupported media type {}",
                            layer.digest, layer.media_type
                        ),
                    });
                }
            }
        }
        let blob = |descriptor: &oci_client::manifest::OciDescriptor, bytes: Vec<u8>| Blob {
            media_type: descriptor.media_type.clone(),
            digest: descriptor.digest.clone(),
            size: bytes.len() as i64,
            bytes,
        };
        let config = self
            .read_blob(
                reference,
                credentials,
                &manifest.config,
                "config",
                limits.max_manifest_bytes,
                "the manifest size limit",
            )
            .await?;
        let config = blob(&manifest.config, config);
        let mut layers = Vec::with_capacity(manifest.layers.len());
        let (mut downloaded, mut unpacked) = (0u64, 0u64);
        for (layer, how) in manifest.layers.iter().zip(compression) {
            let bytes = self
                .read_blob(
                    reference,
                    credentials,
                    layer,
                    "layer",
                    limits.max_image_bytes - downloaded,
                    "the image size limit",
                )
                .await?;
            downloaded += bytes.len() as u64;
            // Decompressing is work for a CPU, not for the runtime's
            // threads.
            let budget = limits.max_unpacked_bytes - unpacked;
            let (bytes, size) = tokio::task::spawn_blocking(move || {
                let size = unpacked_size(&bytes, how, budget);
                (bytes, size)
            })
            .await
            .expect("measuring a layer does not panic");
            let over = || OciError::OverCap {
                reference: name.clone(),
                blob: format!("layer {} unpacked", layer.digest),
                cap: "the unpacked image size limit",
                limit: limits.max_unpacked_bytes,
            };
            match size {
                Ok(Some(size)) => unpacked += size,
                Ok(None) => return Err(over()),
                Err(e) => {
                    return Err(OciError::Registry {
                        reference: name,
                        reason: format!("layer {} does not decompress: {e}", layer.digest),
                    });
                }
            }
            layers.push(blob(layer, bytes));
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
