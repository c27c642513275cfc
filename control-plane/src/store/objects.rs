//! How a write turns the stored object into the next one: server-set
//! metadata on create, what an update may and may not change, when the
//! generation moves. Pure functions over JSON; the writer calls them inside
//! its transaction.

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::meta::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};

use super::StoreError;

/// Which part of an object an update writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Everything but `status` (which is kept as stored).
    Main,
    /// Only `status` (everything else is kept as stored).
    Status,
    /// `Main` and `status` at once: for the control plane's own writes that
    /// change what an object declares and report on it in one change (an
    /// activation's replicas and the status they make), never for a
    /// client's.
    MainAndStatus,
    /// Marks the object deleted in the foreground: `deletionTimestamp` (the
    /// incoming value, unless already set) and the `foregroundDeletion`
    /// finalizer; the garbage collector deletes it once its dependents are
    /// gone.
    ForegroundDeletion,
    /// As `ForegroundDeletion`, with the `orphan` finalizer: the garbage
    /// collector takes the object's references off its dependents, then
    /// deletes it, and they stay.
    OrphanDeletion,
}

/// The stored form of a newly created object: identity and bookkeeping set
/// by the server, and the kind's initial status.
pub fn created(kind: Kind, mut object: Value, uid: &str, revision: i64, now: &str) -> Value {
    let meta = &mut object["metadata"];
    meta["uid"] = json!(uid);
    meta["resourceVersion"] = json!(revision.to_string());
    meta["generation"] = json!(1);
    meta["creationTimestamp"] = json!(now);
    if let Some(meta) = meta.as_object_mut() {
        meta.remove("deletionTimestamp");
        meta.remove("finalizers");
    }
    let initial_status = match kind {
        Kind::Namespace => Some(json!({"phase": "Active"})),
        Kind::Pod => Some(json!({"phase": "Pending", "restartCount": 0})),
        Kind::Secret | Kind::ConfigMap | Kind::ResourceQuota | Kind::Event => None,
        _ => Some(json!({})),
    };
    if let (Some(status), Some(fields)) = (initial_status, object.as_object_mut()) {
        fields.insert("status".into(), status);
    }
    object
}

/// The next stored form of `existing` after an update of `part` with
/// `incoming`, or `None` when the update changes nothing (no write, no new
/// revision).
pub fn updated(
    kind: Kind,
    existing: &Value,
    incoming: Value,
    part: Part,
    revision: i64,
) -> Result<Option<Value>, StoreError> {
    let mut next = match part {
        Part::Main | Part::MainAndStatus => {
            let status = (part == Part::MainAndStatus)
                .then(|| incoming["status"].clone())
                .filter(|status| !status.is_null());
            let mut next = incoming;
            keep_server_fields(existing, &mut next);
            if let Some(status) = status {
                next["status"] = status;
            }
            if kind == Kind::Pod {
                check_pod_update(existing, &mut next)?;
            }
            let generation = existing["metadata"]["generation"].as_i64().unwrap_or(1);
            let bump = i64::from(desired_state(existing) != desired_state(&next));
            next["metadata"]["generation"] = json!(generation + bump);
            next
        }
        Part::Status => {
            let mut next = existing.clone();
            next["status"] = incoming;
            next
        }
        Part::ForegroundDeletion => mark_deleted(existing, incoming, FOREGROUND_FINALIZER),
        Part::OrphanDeletion => mark_deleted(existing, incoming, ORPHAN_FINALIZER),
    };
    next["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"].clone();
    if &next == existing {
        return Ok(None);
    }
    next["metadata"]["resourceVersion"] = json!(revision.to_string());
    Ok(Some(next))
}

/// The object marked deleted (`deletionTimestamp`, the incoming value
/// unless already set) and held by `finalizer` until the garbage collector
/// has done what it stands for.
fn mark_deleted(existing: &Value, incoming: Value, finalizer: &str) -> Value {
    let mut next = existing.clone();
    let meta = &mut next["metadata"];
    if !meta["deletionTimestamp"].is_string() {
        meta["deletionTimestamp"] = incoming;
    }
    let mut finalizers = meta["finalizers"].as_array().cloned().unwrap_or_default();
    if !finalizers.iter().any(|f| f == finalizer) {
        finalizers.push(json!(finalizer));
    }
    meta["finalizers"] = json!(finalizers);
    next
}

/// The stored object as it is reported deleted.
pub fn deleted(existing: &Value, revision: i64, now: &str) -> Value {
    let mut object = existing.clone();
    object["metadata"]["resourceVersion"] = json!(revision.to_string());
    object["metadata"]["deletionTimestamp"] = json!(now);
    object
}

/// Identity and history are the server's: a client cannot change them.
fn keep_server_fields(existing: &Value, next: &mut Value) {
    for field in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "generation",
        "deletionTimestamp",
        "finalizers",
    ] {
        match existing["metadata"].get(field) {
            Some(value) => next["metadata"][field] = value.clone(),
            None => {
                if let Some(meta) = next["metadata"].as_object_mut() {
                    meta.remove(field);
                }
            }
        }
    }
    match existing.get("status") {
        Some(status) => next["status"] = status.clone(),
        None => {
            if let Some(fields) = next.as_object_mut() {
                fields.remove("status");
            }
        }
    }
}

/// A pod's spec is fixed at creation, except that the scheduler binds it
/// once by setting `spec.nodeName`. An update that leaves `nodeName` out
/// keeps the binding (re-applying a manifest does not unbind a pod).
/// Quota usage relies on this: a pod's resources are counted when it is
/// created and when it is deleted, never in between.
fn check_pod_update(existing: &Value, next: &mut Value) -> Result<(), StoreError> {
    let bound = existing["spec"]["nodeName"].as_str().unwrap_or("");
    let wanted = next["spec"]["nodeName"].as_str().unwrap_or("").to_owned();
    match (bound, wanted.as_str()) {
        (bound, "") if !bound.is_empty() => next["spec"]["nodeName"] = json!(bound),
        (bound, wanted) if !bound.is_empty() && bound != wanted => {
            return Err(StoreError::Invalid {
                field: "spec.nodeName".into(),
                message: format!("the pod is bound to {bound} and cannot move"),
            });
        }
        _ => {}
    }
    let mut before = existing["spec"].clone();
    let mut after = next["spec"].clone();
    for spec in [&mut before, &mut after] {
        if let Some(fields) = spec.as_object_mut() {
            fields.remove("nodeName");
        }
    }
    if before != after {
        return Err(StoreError::Invalid {
            field: "spec".into(),
            message: "a pod's spec cannot change once created (only spec.nodeName is set, once); \
                      delete and recreate it, or use a Deployment"
                .into(),
        });
    }
    Ok(())
}

/// What the generation tracks: everything but metadata and status.
fn desired_state(object: &Value) -> Value {
    let mut state = object.clone();
    if let Some(fields) = state.as_object_mut() {
        fields.remove("metadata");
        fields.remove("status");
    }
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(spec: Value) -> Value {
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "5",
                         "generation": 2, "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"app": "web"}},
            "spec": spec,
            "status": {"replicas": 3}
        })
    }

    #[test]
    fn create_sets_identity_and_initial_status() {
        let object = json!({"apiVersion": "skiff.dev/v1", "kind": "Pod", "metadata": {"name": "p", "uid": "forged", "deletionTimestamp": "x"}, "spec": {"image": "x"}, "status": {"phase": "Running"}});
        let c = created(Kind::Pod, object, "real", 7, "2026-02-02T00:00:00Z");
        assert_eq!(c["metadata"]["uid"], "real");
        assert_eq!(c["metadata"]["resourceVersion"], "7");
        assert_eq!(c["metadata"]["generation"], 1);
        assert!(c["metadata"].get("deletionTimestamp").is_none());
        assert_eq!(c["status"], json!({"phase": "Pending", "restartCount": 0}));
    }

    #[test]
    fn spec_changes_bump_generation_and_keep_status() {
        let existing = stored(json!({"replicas": 1}));
        let mut incoming = stored(json!({"replicas": 2}));
        incoming["status"] = json!({"replicas": 99});
        incoming["metadata"]["uid"] = json!("forged");
        let next = updated(Kind::Deployment, &existing, incoming, Part::Main, 6)
            .unwrap()
            .unwrap();
        assert_eq!(next["metadata"]["generation"], 3);
        assert_eq!(next["metadata"]["resourceVersion"], "6");
        assert_eq!(next["metadata"]["uid"], "u1");
        assert_eq!(next["status"], json!({"replicas": 3}));
    }

    #[test]
    fn label_changes_do_not_bump_generation() {
        let existing = stored(json!({"replicas": 1}));
        let mut incoming = stored(json!({"replicas": 1}));
        incoming["metadata"]["labels"] = json!({"app": "web", "tier": "front"});
        let next = updated(Kind::Deployment, &existing, incoming, Part::Main, 6)
            .unwrap()
            .unwrap();
        assert_eq!(next["metadata"]["generation"], 2);
        assert_eq!(next["metadata"]["labels"]["tier"], "front");
    }

    #[test]
    fn an_identical_update_writes_nothing() {
        let existing = stored(json!({"replicas": 1}));
        let mut incoming = stored(json!({"replicas": 1}));
        incoming["metadata"]["resourceVersion"] = json!("4");
        assert_eq!(
            updated(Kind::Deployment, &existing, incoming, Part::Main, 6).unwrap(),
            None
        );
    }

    #[test]
    fn status_updates_touch_only_status() {
        let existing = stored(json!({"replicas": 1}));
        let next = updated(
            Kind::Deployment,
            &existing,
            json!({"replicas": 1}),
            Part::Status,
            6,
        )
        .unwrap()
        .unwrap();
        assert_eq!(next["spec"], json!({"replicas": 1}));
        assert_eq!(next["status"], json!({"replicas": 1}));
        assert_eq!(next["metadata"]["generation"], 2);
    }

    #[test]
    fn pods_bind_once_and_are_otherwise_immutable() {
        let pod = |spec: Value| {
            json!({"apiVersion": "skiff.dev/v1", "kind": "Pod",
                   "metadata": {"name": "p", "uid": "u", "resourceVersion": "1", "generation": 1},
                   "spec": spec, "status": {"phase": "Pending"}})
        };
        let unbound = pod(json!({"image": "a"}));
        let bind = updated(
            Kind::Pod,
            &unbound,
            pod(json!({"image": "a", "nodeName": "n1"})),
            Part::Main,
            2,
        )
        .unwrap()
        .unwrap();
        assert_eq!(bind["spec"]["nodeName"], "n1");

        // Re-applying the manifest without nodeName keeps the binding.
        assert_eq!(
            updated(Kind::Pod, &bind, pod(json!({"image": "a"})), Part::Main, 3).unwrap(),
            None
        );

        let moved = updated(
            Kind::Pod,
            &bind,
            pod(json!({"image": "a", "nodeName": "n2"})),
            Part::Main,
            3,
        );
        assert!(
            matches!(moved, Err(StoreError::Invalid { ref field, .. }) if field == "spec.nodeName")
        );

        let changed = updated(
            Kind::Pod,
            &unbound,
            pod(json!({"image": "b"})),
            Part::Main,
            3,
        );
        assert!(matches!(changed, Err(StoreError::Invalid { ref field, .. }) if field == "spec"));
    }
}
