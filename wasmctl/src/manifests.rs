//! Reading manifests: YAML or JSON, several documents per file, from a
//! file, a directory (its .yaml, .yml and .json files) or stdin. Everything
//! is parsed and checked before anything is sent, so a bad document stops
//! the command before it changes the cluster.

use std::io::Read;
use std::path::Path;

use anyhow::Result;
use serde::Deserialize;
use serde_json::Value;
use skiff_api::Kind;

use crate::BadInput;

/// One object from a manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `file` or `file (document N)`, for messages.
    pub source: String,
    pub kind: Kind,
    pub object: Value,
}

impl Manifest {
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
    }
}

/// Reads every manifest at `path` (`-` is stdin).
pub fn read(path: &Path) -> Result<Vec<Manifest>> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| BadInput(format!("stdin: {e}")))?;
        return parse("stdin", &text);
    }
    let metadata =
        std::fs::metadata(path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    if !metadata.is_dir() {
        return read_file(path);
    }
    let mut files: Vec<_> = std::fs::read_dir(path)
        .map_err(|e| BadInput(format!("{}: {e}", path.display())))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml" || ext == "json")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(BadInput(format!("{}: no .yaml, .yml or .json files", path.display())).into());
    }
    let mut manifests = Vec::new();
    for file in files {
        manifests.extend(read_file(&file)?);
    }
    Ok(manifests)
}

fn read_file(path: &Path) -> Result<Vec<Manifest>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| BadInput(format!("{}: {e}", path.display())))?;
    parse(&path.display().to_string(), &text)
}

/// Parses the documents of one file or stream.
pub fn parse(origin: &str, text: &str) -> Result<Vec<Manifest>> {
    let documents = serde_yaml_ng::Deserializer::from_str(text);
    let mut manifests = Vec::new();
    let mut count = 0;
    for (index, document) in documents.enumerate() {
        let value = Value::deserialize(document)
            .map_err(|e| BadInput(format!("{origin}: invalid YAML or JSON: {e}")))?;
        if value.is_null() {
            continue;
        }
        count += 1;
        let source = if index == 0 && !text.trim_start().starts_with("---") {
            origin.to_owned()
        } else {
            format!("{origin} (document {})", index + 1)
        };
        expand(&source, value, &mut manifests)?;
    }
    if count == 0 {
        return Err(BadInput(format!("{origin}: no objects")).into());
    }
    Ok(manifests)
}

/// Adds one object, or the items of a `List`.
fn expand(source: &str, value: Value, out: &mut Vec<Manifest>) -> Result<()> {
    if !value.is_object() {
        return Err(BadInput(format!(
            "{source}: expected an object with apiVersion, kind and metadata"
        ))
        .into());
    }
    let kind_name = value["kind"]
        .as_str()
        .ok_or_else(|| BadInput(format!("{source}: kind: is required")))?;
    if kind_name == "List" {
        let items = value["items"]
            .as_array()
            .ok_or_else(|| BadInput(format!("{source}: a List needs items")))?;
        for (i, item) in items.iter().enumerate() {
            expand(&format!("{source} item {i}"), item.clone(), out)?;
        }
        return Ok(());
    }
    let kind = Kind::from_name(kind_name).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        BadInput(format!(
            "{source}: unknown kind `{kind_name}` (known kinds: {})",
            known.join(", ")
        ))
    })?;
    let name = value["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return Err(BadInput(format!("{source}: metadata.name: is required")).into());
    }
    out.push(Manifest {
        source: source.to_owned(),
        kind,
        object: value,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(text: &str) -> String {
        parse("app.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn multi_document_yaml_and_lists() {
        let text = "apiVersion: skiff.dev/v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
                    apiVersion: skiff.dev/v1\nkind: List\nitems:\n- {apiVersion: skiff.dev/v1, kind: Pod, metadata: {name: a}}\n\
                    - {apiVersion: skiff.dev/v1, kind: Service, metadata: {name: b}}\n---\n";
        let manifests = parse("app.yaml", text).unwrap();
        let kinds: Vec<Kind> = manifests.iter().map(|m| m.kind).collect();
        assert_eq!(kinds, [Kind::Namespace, Kind::Pod, Kind::Service]);
        assert_eq!(manifests[1].source, "app.yaml (document 2) item 0");
    }

    #[test]
    fn json_is_accepted() {
        let manifests = parse(
            "p.json",
            r#"{"apiVersion":"skiff.dev/v1","kind":"Pod","metadata":{"name":"p"}}"#,
        )
        .unwrap();
        assert_eq!((manifests[0].kind, manifests[0].name()), (Kind::Pod, "p"));
    }

    #[test]
    fn bad_documents_are_named() {
        assert!(error("kind: [unclosed").starts_with("app.yaml: invalid YAML or JSON:"));
        assert_eq!(
            error("apiVersion: skiff.dev/v1\nkind: Gizmo\nmetadata: {name: g}"),
            "app.yaml: unknown kind `Gizmo` (known kinds: Namespace, Node, Pod, Deployment, Service, Route, Secret, ConfigMap, ResourceQuota, ServiceAccount, Event)"
        );
        assert_eq!(
            error("kind: Pod\nmetadata: {}"),
            "app.yaml: metadata.name: is required"
        );
        assert_eq!(
            error("- a\n- b"),
            "app.yaml: expected an object with apiVersion, kind and metadata"
        );
        assert_eq!(error("\n"), "app.yaml: no objects");
        assert!(
            error("kind: Pod\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: b\n")
                .contains("invalid YAML")
        );
    }
}
