//! Metadata every object carries, and the envelopes the API speaks in:
//! lists, watch events and `Status` errors.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::validate::{Validator, validate_dns_label, validate_labels};

/// The API group and version of every kind.
pub const API_VERSION: &str = "skiff.dev/v1";
pub const GROUP: &str = "skiff.dev";

/// The namespace (empty for cluster-scoped kinds) and name of an object in
/// its JSON form; empty strings where they are missing.
pub fn namespace_and_name(object: &serde_json::Value) -> (String, String) {
    let field = |name: &str| {
        object["metadata"][name]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    (field("namespace"), field("name"))
}

/// Identity, labels and bookkeeping of an object. Fields other than name,
/// namespace, labels, annotations and ownerReferences are set by the server.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectMeta {
    /// DNS label: lower-case letters, digits and `-`, at most 63 characters.
    #[serde(default)]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Namespace of a namespaced object; empty for cluster-scoped ones.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::validate::label_map_schema")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::validate::annotation_map_schema")]
    pub annotations: BTreeMap<String, String>,
    /// Cluster revision of the last write; names the version an update or
    /// delete expects (409 Conflict if stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Incremented on every change of the desired state (spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// RFC 3339, UTC; set when the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    /// Set by the server: `foregroundDeletion` while a foreground deletion
    /// waits for the object's dependents to go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

/// The finalizer of an object deleted in the foreground.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// The finalizer of an object deleted with its dependents left in place.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// Whether an object (in its JSON form) is being deleted with its
/// dependents orphaned: still there until its references are off them.
pub fn orphaning(object: &serde_json::Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
        && object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == ORPHAN_FINALIZER))
}

/// Whether an object (in its JSON form) is being deleted in the
/// foreground: still there, waiting for its dependents to go.
pub fn deleting_in_foreground(object: &serde_json::Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
        && object["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == FOREGROUND_FINALIZER))
}

/// Points at the object that owns this one; dependents are garbage
/// collected with their owner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OwnerReference {
    #[schemars(length(min = 1))]
    pub api_version: String,
    #[schemars(length(min = 1))]
    pub kind: String,
    #[schemars(length(min = 1))]
    pub name: String,
    #[schemars(length(min = 1))]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

impl ObjectMeta {
    pub(crate) fn validate(&self, v: &mut Validator) {
        validate_dns_label(v, "metadata.name", &self.name);
        validate_labels(v, "metadata.labels", &self.labels);
        let annotation_bytes: usize = self
            .annotations
            .iter()
            .map(|(k, val)| k.len() + val.len())
            .sum();
        if annotation_bytes > 256 << 10 {
            v.error("metadata.annotations", "must be at most 256Ki in total");
        }
        for key in self.annotations.keys() {
            if let Err(reason) = crate::validate::label_key(key) {
                v.error(format!("metadata.annotations[{key}]"), reason);
            }
        }
        for (i, owner) in self.owner_references.iter().enumerate() {
            let at = format!("metadata.ownerReferences[{i}]");
            for (field, value) in [
                ("apiVersion", &owner.api_version),
                ("kind", &owner.kind),
                ("name", &owner.name),
                ("uid", &owner.uid),
            ] {
                if value.is_empty() {
                    v.error(format!("{at}.{field}"), "is required");
                }
            }
        }
    }
}

/// A page of objects of one kind.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    pub api_version: String,
    pub kind: String,
    pub metadata: ListMeta,
    pub items: Vec<T>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    /// The revision the list reflects; watch from here to follow changes.
    pub resource_version: String,
    /// Pass as `continue` to get the next page; absent on the last page.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WatchEvent<T> {
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub object: T,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
    /// Carries only `metadata.resourceVersion`: everything up to it has been
    /// sent, so a watch may resume from it.
    Bookmark,
    /// The watch cannot continue (e.g. its revision was compacted); the
    /// object is a `Status`.
    Error,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub api_version: String,
    pub kind: String,
    /// Always `Failure` for errors.
    pub status: String,
    /// One line saying what was wrong, naming the field or object.
    pub message: String,
    /// Machine-readable cause: `NotFound`, `AlreadyExists`, `Conflict`,
    /// `Invalid`, `BadRequest`, `Unauthorized`, `Forbidden`, `Gone`,
    /// `RequestEntityTooLarge`, `ServiceUnavailable`, `InternalError`.
    pub reason: String,
    pub code: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusCause {
    pub field: String,
    pub message: String,
}

impl Status {
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Self {
        Self {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code,
            details: None,
        }
    }
}

/// Preconditions of a delete, as in Kubernetes' `DeleteOptions`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeleteOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preconditions: Option<Preconditions>,
    /// `Background` (default): the object goes at once, its dependents
    /// after. `Foreground`: the dependents go first, the object stays
    /// (marked deleted) until they have. `Orphan`: the dependents stay,
    /// their references to the object taken off before it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<PropagationPolicy>,
    /// `["All"]`: every check of the delete, without deleting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "enum": ["All"]}))]
    pub dry_run: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PropagationPolicy {
    #[default]
    Background,
    Foreground,
    /// The object goes; its dependents stay, no longer owned.
    Orphan,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Preconditions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}
