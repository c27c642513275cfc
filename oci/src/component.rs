//! Components: pushed with their interface in the config, pulled by
//! digest with every blob checked.

use std::sync::Arc;

use futures::StreamExt;
use oci_client::Reference;
use oci_client::client::Config;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest};
use serde::{Deserialize, Serialize};
use skiff_api::kinds::pod::is_linux_config;

use crate::{
    Credentials, MAX_ARTIFACT_BYTES, MAX_LAYERS, OciError, Registry, Resolved,
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, classify, sha256_digest,
};

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

impl Registry {
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
        let layer_digest = sha256_digest(&component);
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

    /// Pulls the component of `reference` (which should carry a digest),
    /// checking every blob against its digest and the safety caps.
    pub async fn pull(
        &self,
        reference: &Reference,
        credentials: &Credentials,
    ) -> Result<Pulled, OciError> {
        let resolved = self.resolve_manifest(reference, credentials).await?;
        self.pull_resolved(reference, credentials, &resolved).await
    }

    /// Pulls the component whose manifest was resolved already: only its
    /// layer is downloaded (and checked against its digest).
    pub async fn pull_resolved(
        &self,
        reference: &Reference,
        credentials: &Credentials,
        resolved: &Resolved,
    ) -> Result<Pulled, OciError> {
        let name = reference.whole();
        let manifest = &resolved.manifest;
        let manifest_digest = resolved.digest.clone();
        let limit = self.limits.max_component_bytes;
        let layer = component_layer(&name, manifest, limit)?;
        // Read no further than the layer's declared size or the cap: the
        // declared size is the registry's word, the count is ours.
        let component = self
            .read_blob(
                reference,
                credentials,
                layer,
                "layer",
                limit,
                "the component size limit",
            )
            .await?;
        Ok(Pulled {
            manifest_digest,
            layer_digest: layer.digest.clone(),
            component,
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
    limit: u64,
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
    if total as u64 > limit {
        return Err(OciError::TooLarge {
            reference: name.to_owned(),
            what: "the artifact",
            size: total as u64,
            limit,
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

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
}
