//! What a pull may cost the node: bytes held or unpacked, layers, and how
//! long a registry may take. Sizes a manifest or descriptor declares are
//! checked first (a cheap refusal) but never trusted: every read counts
//! what actually arrives and stops as soon as a cap is crossed.

use std::time::Duration;

use crate::{MAX_ARTIFACT_BYTES, MAX_LINUX_IMAGE_BYTES};

/// Largest manifest read; registries commonly refuse larger ones too.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest index (multi-platform manifest list) read.
pub const MAX_INDEX_BYTES: u64 = 4 << 20;
/// Most layers a Linux image may have (every one is a snapshot to stack).
pub const MAX_LINUX_LAYERS: usize = 128;
/// Largest a Linux image's layers may unpack to, all together.
pub const MAX_LINUX_UNPACKED_BYTES: u64 = 8 << 30;
/// How long connecting to a registry may take.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a registry may send nothing in the middle of a response.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one registry request may take from start to last byte.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The caps a [`Registry`](crate::Registry) holds every pull to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    pub max_index_bytes: u64,
    /// A component's layer.
    pub max_component_bytes: u64,
    /// A Linux image's layers as downloaded (compressed), all together.
    pub max_image_bytes: u64,
    /// A Linux image's layers unpacked, all together.
    pub max_unpacked_bytes: u64,
    pub max_layers: usize,
    pub connect_timeout: Duration,
    /// Longest silence in the middle of a response body.
    pub stall_timeout: Duration,
    /// Longest one request (a manifest, a blob) may take in all.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_manifest_bytes: MAX_MANIFEST_BYTES,
            max_index_bytes: MAX_INDEX_BYTES,
            max_component_bytes: MAX_ARTIFACT_BYTES,
            max_image_bytes: MAX_LINUX_IMAGE_BYTES,
            max_unpacked_bytes: MAX_LINUX_UNPACKED_BYTES,
            max_layers: MAX_LINUX_LAYERS,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

impl Limits {
    /// The most bytes the first read of a reference takes, and which cap
    /// that is: it may be an index or a manifest, which is known only once
    /// it is read.
    pub(crate) fn top_level_cap(&self) -> (u64, &'static str) {
        if self.max_manifest_bytes >= self.max_index_bytes {
            (self.max_manifest_bytes, "the manifest size limit")
        } else {
            (self.max_index_bytes, "the index size limit")
        }
    }
}
