//! Manifests: which image a reference names on this machine (a
//! multi-platform index stands for one of its entries) and which runtime
//! its media types call for. The node and the scheduler both decide by
//! these rules, so they never disagree about an image.

use oci_client::Reference;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use skiff_api::kinds::pod::PodRuntime;

use crate::{Credentials, OciError, Registry, classify, pinned, sha256_digest};

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

/// Whether an index entry's platform is WebAssembly: `wasip2` (or
/// `wasip1`, `wasi`) as the OS, or `wasm` as the architecture, which is
/// how tools that publish components in an index mark them.
fn is_wasm_platform(platform: &serde_json::Value) -> bool {
    matches!(platform["os"].as_str(), Some("wasip2" | "wasip1" | "wasi"))
        || platform["architecture"] == "wasm"
}

/// The digest of the index entry this machine runs: a component if the
/// index has one (Wasm first), else the image for `linux` on this
/// machine's architecture.
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
        .find(|entry| is_wasm_platform(&entry["platform"]))
        .or_else(|| entries.iter().find(|entry| platform(entry) == wanted))
        .and_then(|entry| entry["digest"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| OciError::NoPlatform {
            reference: name.to_owned(),
            wanted: format!("wasip2 or {wanted}"),
            available: entries.iter().map(platform).collect::<Vec<_>>().join(", "),
        })
}

impl Registry {
    /// An image manifest (OCI or Docker v2): its bytes, digest and parsed
    /// form, checked against the digest the reference carries. A
    /// multi-platform index stands for its entry for this machine
    /// (`linux/amd64` here), fetched and checked in turn.
    pub(crate) async fn image_manifest(
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
        let actual = sha256_digest(&bytes);
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
        let (_, _, manifest) = self.image_manifest(reference, credentials).await?;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_index_stands_for_its_component_or_this_machines_linux_image() {
        let native = format!("linux/{}", architecture());
        let entry = |platform: &str, digest: &str| {
            let (os, arch) = platform.split_once('/').unwrap();
            json!({"digest": digest, "platform": {"os": os, "architecture": arch}})
        };
        // (platform, digest) entries of the index, and the digest chosen or
        // the platforms the refusal lists.
        type Case<'a> = (&'a [(&'a str, &'a str)], Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            (&[(&native, "sha256:native")], Ok("sha256:native")),
            (
                &[("linux/s390x", "sha256:other"), (&native, "sha256:native")],
                Ok("sha256:native"),
            ),
            (
                &[("wasip2/wasm", "sha256:component")],
                Ok("sha256:component"),
            ),
            (
                &[("wasi/wasm32", "sha256:component")],
                Ok("sha256:component"),
            ),
            (
                &[("unknown/wasm", "sha256:component")],
                Ok("sha256:component"),
            ),
            // Wasm first, wherever it is listed.
            (
                &[
                    (&native, "sha256:native"),
                    ("wasip2/wasm", "sha256:component"),
                ],
                Ok("sha256:component"),
            ),
            (&[("linux/s390x", "sha256:other")], Err("linux/s390x")),
            (&[], Err("")),
        ];
        for (entries, expected) in cases {
            let index =
                json!({"manifests": entries.iter().map(|(p, d)| entry(p, d)).collect::<Vec<_>>()});
            match (platform_entry("r", &index), expected) {
                (Ok(digest), Ok(wanted)) => assert_eq!(&digest, wanted, "{entries:?}"),
                (
                    Err(OciError::NoPlatform {
                        available, wanted, ..
                    }),
                    Err(listed),
                ) => {
                    assert_eq!(&available, listed, "{entries:?}");
                    assert!(wanted.starts_with("wasip2 or linux/"), "{wanted}");
                }
                (got, _) => panic!("{entries:?}: {got:?}"),
            }
        }
    }
}
