//! `wasmctl apply -f FILE|DIR|-`: create what does not exist, update what
//! does. Every manifest is parsed and checked (the same admission the
//! server runs) before the first request, so a bad document changes
//! nothing.

use std::path::PathBuf;

use anyhow::{Result, anyhow};
use serde_json::Value;
use skiff_api::Kind;
use skiff_client::Client;

use crate::BadInput;
use crate::cluster::{Target, block_on, kind_word};
use crate::manifests::{self, Manifest};

/// Retries of an update that lost a race with another writer.
const CONFLICT_RETRIES: usize = 3;

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// Manifest file, directory, or `-` for stdin. Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    files: Vec<PathBuf>,
    /// Namespace for manifests that name none.
    #[arg(short, long)]
    namespace: Option<String>,
    /// Only check, on the server, that everything would apply.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
}

pub fn run(args: ApplyArgs) -> Result<()> {
    let mut manifests = Vec::new();
    for file in &args.files {
        manifests.extend(manifests::read(file)?);
    }
    // Namespaces first, so objects in them can be created in the same run.
    manifests.sort_by_key(|m| m.kind != Kind::Namespace);
    let session = args.target.connect()?;
    for manifest in &mut manifests {
        let namespace = match (manifest.namespace(), args.namespace.as_deref()) {
            (Some(ns), Some(flag)) if ns != flag && manifest.kind.namespaced() => {
                return Err(BadInput(format!(
                    "{}: metadata.namespace is {ns} but --namespace is {flag}",
                    manifest.source
                ))
                .into());
            }
            (Some(ns), _) => ns.to_owned(),
            (None, flag) => flag.unwrap_or(&session.namespace).to_owned(),
        };
        if manifest.kind.namespaced() {
            manifest.object["metadata"]["namespace"] = Value::String(namespace);
        }
        strip_server_fields(&mut manifest.object);
        skiff_api::admit(manifest.kind, manifest.object.clone())
            .map_err(|e| BadInput(format!("{}: {e}", manifest.source)))?;
    }
    block_on(async {
        for manifest in &manifests {
            let outcome = apply_one(&session.client, manifest, args.dry_run)
                .await
                .map_err(|e| anyhow!("{}: {e}", manifest.source))?;
            let suffix = if args.dry_run { " (dry run)" } else { "" };
            println!(
                "{}/{} {outcome}{suffix}",
                kind_word(manifest.kind),
                manifest.name()
            );
        }
        Ok(())
    })?
}

/// Fields the server owns; a manifest exported with `get -o yaml` carries
/// them, and they must not be sent back.
pub(crate) fn strip_server_fields(object: &mut Value) {
    if let Some(meta) = object["metadata"].as_object_mut() {
        for field in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "deletionTimestamp",
        ] {
            meta.remove(field);
        }
    }
    if let Some(fields) = object.as_object_mut() {
        fields.remove("status");
    }
}

async fn apply_one(
    client: &Client,
    manifest: &Manifest,
    dry_run: bool,
) -> Result<&'static str, skiff_client::ClientError> {
    let kind = manifest.kind;
    let namespace = manifest.namespace();
    let name = manifest.name();
    for _ in 0..CONFLICT_RETRIES {
        let existing = match client.get(kind, namespace, name).await {
            Ok(existing) => existing,
            Err(e) if e.is_not_found() => {
                client
                    .create_with(kind, namespace, &manifest.object, dry_run)
                    .await?;
                return Ok("created");
            }
            Err(e) => return Err(e),
        };
        let revision = existing["metadata"]["resourceVersion"].clone();
        let mut desired = manifest.object.clone();
        desired["metadata"]["resourceVersion"] = revision.clone();
        match client
            .replace_with(kind, namespace, name, &desired, dry_run)
            .await
        {
            // The server writes nothing when nothing changes.
            Ok(stored) if stored["metadata"]["resourceVersion"] == revision => {
                return Ok("unchanged");
            }
            Ok(_) => return Ok("configured"),
            Err(e) if e.is_conflict() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(skiff_client::ClientError::Protocol(format!(
        "kept changing while being applied; gave up after {CONFLICT_RETRIES} attempts"
    )))
}
