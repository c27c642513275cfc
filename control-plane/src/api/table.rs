//! Answers in the shapes Kubernetes clients ask for with `Accept`: a
//! `Table` of the kind's columns (`kubectl get` prints what the server
//! says), or only the objects' metadata (`PartialObjectMetadata`). The
//! columns are `wasmctl get`'s, from [`skiff_api::columns`].

use axum::http::HeaderMap;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::columns;

use super::ApiError;

/// What a read answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The objects, as stored.
    Objects,
    /// A `Table` in `meta.k8s.io/{version}`, its rows carrying `include`.
    Table {
        version: &'static str,
        include: Include,
    },
    /// Only the objects' metadata.
    Metadata { version: &'static str },
}

/// What each row of a Table carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    None,
    Metadata,
    Object,
}

impl View {
    /// The view the first media range of `Accept` this server can make
    /// names, as Kubernetes negotiates it; JSON objects when none names
    /// another (an `Accept` that names nothing known still gets JSON, as
    /// every client of this API expects).
    pub fn negotiate(headers: &HeaderMap, include_object: Option<&str>) -> Result<View, ApiError> {
        let include = match include_object {
            None | Some("Metadata") => Include::Metadata,
            Some("None") => Include::None,
            Some("Object") => Include::Object,
            Some(other) => {
                return Err(ApiError::BadRequest(format!(
                    "includeObject: `{}` is not None, Metadata or Object",
                    other.escape_default()
                )));
            }
        };
        for range in super::accept_ranges(headers) {
            let mut parts = range.into_iter();
            let media = parts.next().unwrap_or_default();
            let (mut as_, mut group, mut version) = ("", "", "");
            for parameter in parts {
                match parameter.split_once('=') {
                    Some(("as", v)) => as_ = v,
                    Some(("g", v)) => group = v,
                    Some(("v", v)) => version = v,
                    _ => {}
                }
            }
            if !matches!(media, "application/json" | "application/*" | "*/*") {
                continue;
            }
            let version = match version {
                "v1" => "v1",
                "v1beta1" => "v1beta1",
                _ => "",
            };
            match (as_, group) {
                ("", _) => return Ok(View::Objects),
                ("Table", "meta.k8s.io") if !version.is_empty() => {
                    return Ok(View::Table { version, include });
                }
                ("PartialObjectMetadata" | "PartialObjectMetadataList", "meta.k8s.io")
                    if !version.is_empty() =>
                {
                    return Ok(View::Metadata { version });
                }
                _ => {}
            }
        }
        Ok(View::Objects)
    }
}

/// Column definitions, as a Table states them.
fn column_definitions(columns: &[columns::Column]) -> Vec<Value> {
    columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": "string",
                "format": if c.name == "Name" { "name" } else { "" },
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

fn partial(version: &str, object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": object["metadata"],
    })
}

/// `objects` (as stored) as a Table, each row's object in `dialect`'s
/// shape; `list` is the list's metadata (resourceVersion, continue), empty
/// for one object. The cells are the stored object's, so both shapes show
/// the same columns.
pub fn table(
    kind: Kind,
    version: &str,
    include: Include,
    dialect: Dialect,
    objects: Vec<Value>,
    list: Value,
) -> Value {
    let now = chrono::Utc::now();
    let rows = objects
        .into_iter()
        .map(|object| (columns::cells(kind, &object, now), object))
        .collect();
    assemble(
        version,
        include,
        list,
        &columns::columns(kind),
        rows,
        |object| dialect.show(kind, object),
    )
}

/// A Table of `columns` and `rows` (each its cells and its object); `show`
/// turns an object into the shape a row carries whole, and is called only
/// when the caller asked for whole objects.
pub fn assemble(
    version: &str,
    include: Include,
    list: Value,
    columns: &[columns::Column],
    rows: Vec<(Vec<String>, Value)>,
    show: impl Fn(Value) -> Value,
) -> Value {
    let rows: Vec<Value> = rows
        .into_iter()
        .map(|(cells, object)| {
            let mut row = json!({"cells": cells});
            match include {
                Include::None => {}
                Include::Metadata => row["object"] = partial(version, &object),
                Include::Object => row["object"] = show(object),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": list,
        "columnDefinitions": column_definitions(columns),
        "rows": rows,
    })
}

/// Which shape objects are shown (and written) in: Skiff's own, or as
/// the Kubernetes kind each is also served as (`/api/v1`, `/apis/apps/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Skiff,
    Kube,
}

impl Dialect {
    /// `object`, a stored object of `kind`, in this dialect's shape.
    pub fn show(self, kind: Kind, object: Value) -> Value {
        match self {
            Dialect::Skiff => object,
            Dialect::Kube => skiff_api::kube::to_kube(kind, object),
        }
    }

    /// The apiVersion and kind of a list of `kind` in this dialect.
    fn list_kind(self, kind: Kind) -> (&'static str, String) {
        match (self, skiff_api::kube::kube_kind(kind)) {
            (Dialect::Kube, Some((api_version, name))) => (api_version, format!("{name}List")),
            _ => (skiff_api::API_VERSION, format!("{}List", kind.name())),
        }
    }
}

/// One object as its view shows it.
pub fn one(view: View, dialect: Dialect, kind: Kind, object: Value) -> Value {
    match view {
        View::Objects => dialect.show(kind, object),
        View::Table { version, include } => {
            table(kind, version, include, dialect, vec![object], json!({}))
        }
        View::Metadata { version } => partial(version, &object),
    }
}

/// A list as its view shows it; `list` is the list's metadata.
pub fn many(view: View, dialect: Dialect, kind: Kind, objects: Vec<Value>, list: Value) -> Value {
    let (api_version, list_kind) = dialect.list_kind(kind);
    match view {
        View::Objects => json!({
            "apiVersion": api_version,
            "kind": list_kind,
            "metadata": list,
            "items": objects.into_iter().map(|o| dialect.show(kind, o)).collect::<Vec<_>>(),
        }),
        View::Table { version, include } => table(kind, version, include, dialect, objects, list),
        View::Metadata { version } => json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": format!("meta.k8s.io/{version}"),
            "metadata": list,
            "items": objects.iter().map(|o| partial(version, o)).collect::<Vec<_>>(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::accept_header as accept;

    #[test]
    fn kubectl_gets_a_table_and_everyone_else_json() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            View::negotiate(&accept(kubectl), None).unwrap(),
            View::Table {
                version: "v1",
                include: Include::Metadata
            }
        );
        assert_eq!(
            View::negotiate(&accept("application/json"), None).unwrap(),
            View::Objects
        );
        assert_eq!(
            View::negotiate(&HeaderMap::new(), None).unwrap(),
            View::Objects
        );
        // A table of a group this server does not print falls through to
        // the next range.
        assert_eq!(
            View::negotiate(
                &accept("application/json;as=Table;v=v9;g=example.com, application/json"),
                None
            )
            .unwrap(),
            View::Objects
        );
        assert_eq!(
            View::negotiate(
                &accept("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"),
                None
            )
            .unwrap(),
            View::Metadata { version: "v1" }
        );
        assert!(View::negotiate(&accept("application/json"), Some("All")).is_err());
    }

    #[test]
    fn a_table_has_a_row_per_object_with_a_cell_per_column() {
        let pods = [
            json!({"metadata": {"name": "a", "namespace": "shop"}, "spec": {"image": "i"}}),
            json!({"metadata": {"name": "b", "namespace": "shop"}, "spec": {"image": "j"}}),
        ];
        let t = table(
            Kind::Pod,
            "v1",
            Include::Metadata,
            Dialect::Skiff,
            pods.to_vec(),
            json!({"resourceVersion": "7"}),
        );
        let columns = t["columnDefinitions"].as_array().unwrap().len();
        assert_eq!(t["rows"].as_array().unwrap().len(), 2);
        for row in t["rows"].as_array().unwrap() {
            assert_eq!(row["cells"].as_array().unwrap().len(), columns);
            assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
            assert!(row["object"].get("spec").is_none());
        }
        assert_eq!(t["rows"][1]["cells"][0], "b");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }
}
