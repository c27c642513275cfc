//! Manifests: which image a reference names on this machine (a
//! multi-platform index stands for one of its entries) and which runtime
//! its media types call for. The node and the scheduler both decide by
//! these rules, so they never disagree about an image.

use oci_client::Reference;
use oci_client::manifest::OciImageManifest;
use skiff_api::kinds::pod::PodRuntime;

use crate::{Credentials, Limits, OciError, Registry, pinned};

/// A manifest's bytes, parsed: an index of images, or one image.
#[derive(Debug, Clone)]
pub enum ParsedManifest {
    /// Its `manifests` entries, as they came.
    Index(serde_json::Value),
    Image(Box<OciImageManifest>),
}

/// Parses a manifest or index read from the registry for `name`, refusing
/// one over its cap (an index over `max_index_bytes`, an image manifest
/// over `max_manifest_bytes`) or with more than `max_layers` layers. Any
/// bytes give an answer, never a panic: this is what a registry sends.
pub fn parse_manifest(
    name: &str,
    bytes: &[u8],
    limits: &Limits,
) -> Result<ParsedManifest, OciError> {
    let over = |blob: &str, cap: &'static str, limit: u64| OciError::OverCap {
        reference: name.to_owned(),
        blob: blob.to_owned(),
        cap,
        limit,
    };
    let size = bytes.len() as u64;
    let (top_limit, top_cap) = limits.top_level_cap();
    if size > top_limit {
        return Err(over("the manifest", top_cap, top_limit));
    }
    let malformed = |e: serde_json::Error| OciError::Registry {
        reference: name.to_owned(),
        reason: format!("malformed manifest: {e}"),
    };
    let parsed: serde_json::Value = serde_json::from_slice(bytes).map_err(malformed)?;
    if parsed
        .get("manifests")
        .is_some_and(serde_json::Value::is_array)
    {
        if size > limits.max_index_bytes {
            return Err(over(
                "the index",
                "the index size limit",
                limits.max_index_bytes,
            ));
        }
        return Ok(ParsedManifest::Index(parsed));
    }
    if size > limits.max_manifest_bytes {
        return Err(over(
            "the manifest",
            "the manifest size limit",
            limits.max_manifest_bytes,
        ));
    }
    let manifest: OciImageManifest = serde_json::from_value(parsed).map_err(malformed)?;
    if manifest.layers.len() > limits.max_layers {
        return Err(OciError::TooManyLayers {
            reference: name.to_owned(),
            count: manifest.layers.len(),
            limit: limits.max_layers,
        });
    }
    Ok(ParsedManifest::Image(Box::new(manifest)))
}

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

/// What a reference names, read once from its registry: the digest it
/// names (an index's, for a multi-platform image), the image that stands
/// for here, and the runtime its media types call for. A pull is handed
/// this, so a fresh pod costs one manifest request (two for an index).
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The digest the reference names: what pods pin and caches key by.
    pub digest: String,
    /// The image manifest chosen (the index's entry, or the manifest
    /// itself), its bytes and their digest.
    pub manifest: OciImageManifest,
    pub manifest_bytes: Vec<u8>,
    pub manifest_digest: String,
    pub runtime: PodRuntime,
}

/// The runtime an image manifest's media types call for.
fn runtime_of(name: &str, manifest: &OciImageManifest) -> Result<PodRuntime, OciError> {
    PodRuntime::of_artifact(
        &manifest.config.media_type,
        manifest.layers.iter().map(|l| l.media_type.as_str()),
    )
    .ok_or_else(|| OciError::NotWasm {
        reference: name.to_owned(),
        reason: format!(
            "neither Wasm nor a Linux image (config {})",
            manifest.config.media_type
        ),
    })
}

impl Registry {
    /// Reads what `reference` names: its manifest (an index read for its
    /// entry for this machine, Wasm first), every one checked against its
    /// digest, and the runtime it needs. Asked even when the reference
    /// carries a digest: the registry's answer is what shows that these
    /// credentials may read the image.
    pub async fn resolve_manifest(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<Resolved, OciError> {
        let name = reference.whole();
        let (mut bytes, digest) = self.raw_manifest(reference, credentials).await?;
        let mut manifest_digest = digest.clone();
        let manifest = match parse_manifest(&name, &bytes, &self.limits)? {
            ParsedManifest::Image(manifest) => *manifest,
            ParsedManifest::Index(index) => {
                let entry = platform_entry(&name, &index)?;
                let pinned = pinned(reference, &entry)?;
                (bytes, manifest_digest) = self.raw_manifest(&pinned, credentials).await?;
                match parse_manifest(&name, &bytes, &self.limits)? {
                    ParsedManifest::Image(manifest) => *manifest,
                    ParsedManifest::Index(_) => {
                        return Err(OciError::Registry {
                            reference: name,
                            reason: format!("its index names another index ({manifest_digest})"),
                        });
                    }
                }
            }
        };
        let runtime = runtime_of(&name, &manifest)?;
        Ok(Resolved {
            digest,
            manifest,
            manifest_bytes: bytes,
            manifest_digest,
            runtime,
        })
    }

    /// A manifest's or index's bytes and digest, checked against the
    /// digest the reference carries (or the registry names), read no
    /// further than the larger of the manifest and index caps.
    async fn raw_manifest(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<(Vec<u8>, String), OciError> {
        let (limit, cap) = self.limits.top_level_cap();
        self.read_manifest(reference, credentials, limit, cap).await
    }

    /// The runtime an artifact needs, from its manifest's media types
    /// alone (no blob is pulled), for the scheduler, which places pods on
    /// nodes of any architecture: an index is a component if it has a Wasm
    /// entry and a Linux image otherwise, whichever architectures it
    /// lists (the node picks its own entry when it pulls).
    pub async fn kind_of(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<PodRuntime, OciError> {
        let (bytes, _) = self.raw_manifest(reference, credentials).await?;
        // The layer count is the node's to judge (its limit may differ).
        let limits = Limits {
            max_layers: usize::MAX,
            ..self.limits
        };
        match parse_manifest(&reference.whole(), &bytes, &limits)? {
            ParsedManifest::Index(index) => {
                let entries = index["manifests"].as_array().into_iter().flatten();
                if entries.clone().any(|e| is_wasm_platform(&e["platform"])) {
                    Ok(PodRuntime::Wasm)
                } else {
                    Ok(PodRuntime::Linux)
                }
            }
            ParsedManifest::Image(manifest) => runtime_of(&reference.whole(), &manifest),
        }
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
