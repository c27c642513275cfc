//! Server-side apply, as `kubectl apply --server-side` uses it: each field
//! manager owns the fields it last applied; applying sets them, removes
//! the ones it owned and no longer names (unless another manager owns
//! them too), and refuses to change a field another manager owns unless
//! forced, naming each conflict.
//!
//! A field is a leaf of the object: a scalar, a list (lists are owned
//! whole) or an empty map, named by its JSON pointer (keys such as
//! `app.kubernetes.io/name` hold dots and slashes). Ownership is kept per
//! object in the [`MANAGED_ANNOTATION`] annotation as
//! `{manager: ["/spec/replicas", ...]}`. Only applies take ownership:
//! other writes (a scale, a label) take none.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// Who owns which fields of an object.
pub const MANAGED_ANNOTATION: &str = "skiff.dev/managed-fields";

/// Fields of every object that no manager owns: what the object is.
const IDENTITY: [&str; 4] = [
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
];

/// Most fields one apply may name, and the most bytes their paths may take
/// together: an object of 1 MiB has far fewer, and a deep one would
/// otherwise cost its depth in memory for every field.
pub const MAX_FIELDS: usize = 10_000;
const MAX_PATH_BYTES: usize = 1 << 20;

/// Each manager's fields.
pub type Owners = BTreeMap<String, BTreeSet<String>>;

/// A field another manager owns with another value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub manager: String,
    /// The field's JSON pointer.
    pub field: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conflict with \"{}\": {}",
            self.manager,
            dotted(&self.field)
        )
    }
}

/// Why an apply was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Fields other managers own, with other values.
    Conflicts(Vec<Conflict>),
    /// The config names more fields than an apply may.
    TooManyFields,
}

/// A field's path as people read it: `.spec.replicas`.
pub fn dotted(pointer: &str) -> String {
    keys(pointer).map(|key| format!(".{key}")).collect()
}

/// The owners an object records.
pub fn owners_of(object: &Value) -> Owners {
    object["metadata"]["annotations"][MANAGED_ANNOTATION]
        .as_str()
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// `config` applied by `manager` to `current` (`None`: the object is
/// new): the object to store, owners recorded in it; or the conflicts.
pub fn apply(
    current: Option<&Value>,
    mut config: Value,
    manager: &str,
    force: bool,
) -> Result<Value, Refusal> {
    if let Some(fields) = config.as_object_mut() {
        // The main resource's apply sets no status.
        fields.remove("status");
    }
    // (Read without indexing, which would add the keys it looks for.)
    if let Some(annotations) = config
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.remove(MANAGED_ANNOTATION);
        if annotations.is_empty()
            && let Some(meta) = config["metadata"].as_object_mut()
        {
            meta.remove("annotations");
        }
    }
    let mut owners = current.map(owners_of).unwrap_or_default();
    let mut applied = BTreeMap::new();
    let mut path_bytes = 0;
    leaves(&config, "", &mut applied, &mut path_bytes)?;
    for identity in IDENTITY {
        applied.remove(identity);
    }
    let empty = Value::Null;
    let base = current.unwrap_or(&empty);
    let mut conflicts = Vec::new();
    for (other, fields) in &owners {
        if other == manager {
            continue;
        }
        for field in fields {
            if let Some(value) = applied.get(field)
                && !at(base, field).is_some_and(|current| agrees(current, value))
            {
                conflicts.push(Conflict {
                    manager: other.clone(),
                    field: field.clone(),
                });
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(Refusal::Conflicts(conflicts));
    }
    let mut object = match current {
        Some(current) => current.clone(),
        None => config.clone(),
    };
    // What this manager gave up, unless another keeps it.
    let previous = owners.remove(manager).unwrap_or_default();
    for field in &previous {
        let kept = applied.contains_key(field) || owners.values().any(|f| f.contains(field));
        if !kept {
            remove(&mut object, field);
        }
    }
    for (field, value) in &applied {
        // An empty map names the map, not its keys: it clears none of
        // what others put there.
        let empty_map = value.as_object().is_some_and(Map::is_empty);
        if !(empty_map && at(&object, field).is_some_and(Value::is_object)) {
            set(&mut object, field, (*value).clone());
        }
    }
    // Forced: the others lose what they no longer agree on.
    for conflict in &conflicts {
        if let Some(fields) = owners.get_mut(&conflict.manager) {
            fields.remove(&conflict.field);
        }
    }
    owners.retain(|_, fields| !fields.is_empty());
    owners.insert(manager.to_owned(), applied.keys().cloned().collect());
    let record = serde_json::to_string(&owners).expect("owners serialise");
    if !object["metadata"]["annotations"].is_object() {
        object["metadata"]["annotations"] = Value::Object(Map::new());
    }
    object["metadata"]["annotations"][MANAGED_ANNOTATION] = Value::String(record);
    Ok(object)
}

/// Whether `current` already is what `applied` asks: the same scalar, or
/// a list or map holding at least what it names (the server fills in
/// defaults a manifest leaves out, such as a container's pull policy).
fn agrees(current: &Value, applied: &Value) -> bool {
    match (current, applied) {
        (Value::Object(have), Value::Object(want)) => want
            .iter()
            .all(|(key, value)| have.get(key).is_some_and(|h| agrees(h, value))),
        (Value::Array(have), Value::Array(want)) => {
            have.len() == want.len() && have.iter().zip(want).all(|(h, w)| agrees(h, w))
        }
        _ => current == applied,
    }
}

/// Every leaf of `value` by its JSON pointer (`/spec/replicas`), within
/// [`MAX_FIELDS`] and [`MAX_PATH_BYTES`].
fn leaves<'a>(
    value: &'a Value,
    at: &str,
    found: &mut BTreeMap<String, &'a Value>,
    path_bytes: &mut usize,
) -> Result<(), Refusal> {
    match value.as_object() {
        Some(fields) if !fields.is_empty() => {
            for (key, field) in fields {
                let escaped = key.replace('~', "~0").replace('/', "~1");
                leaves(field, &format!("{at}/{escaped}"), found, path_bytes)?;
            }
        }
        _ if !at.is_empty() => {
            *path_bytes += at.len();
            if found.len() >= MAX_FIELDS || *path_bytes > MAX_PATH_BYTES {
                return Err(Refusal::TooManyFields);
            }
            found.insert(at.to_owned(), value);
        }
        _ => {}
    }
    Ok(())
}

/// A pointer's keys, unescaped.
fn keys(path: &str) -> impl Iterator<Item = String> + '_ {
    path.split('/')
        .skip(1)
        .map(|key| key.replace("~1", "/").replace("~0", "~"))
}

fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    keys(path).try_fold(value, |value, key| value.get(&key))
}

fn set(object: &mut Value, path: &str, value: Value) {
    let mut slot = object;
    for key in keys(path) {
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        slot = slot
            .as_object_mut()
            .expect("made an object")
            .entry(key)
            .or_insert(Value::Null);
    }
    *slot = value;
}

fn remove(object: &mut Value, path: &str) {
    let parts: Vec<String> = keys(path).collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut slot = object;
    for key in parents {
        match slot.get_mut(key) {
            Some(next) => slot = next,
            None => return,
        }
    }
    if let Some(fields) = slot.as_object_mut() {
        fields.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config(replicas: u32, labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "web", "labels": labels},
               "spec": {"replicas": replicas, "ports": [80]}})
    }

    #[test]
    fn managers_own_what_they_apply_and_conflict_over_what_others_own() {
        let first = apply(None, config(2, json!({"app": "web"})), "alice", false).unwrap();
        assert_eq!(
            owners_of(&first)["alice"],
            BTreeSet::from(
                ["/metadata/labels/app", "/spec/ports", "/spec/replicas"].map(String::from)
            )
        );
        // The same values: shared, no conflict.
        let shared = apply(
            Some(&first),
            config(2, json!({"tier": "front"})),
            "bob",
            false,
        )
        .unwrap();
        assert_eq!(
            shared["metadata"]["labels"],
            json!({"app": "web", "tier": "front"})
        );
        // Another value for a field alice owns: a conflict, named.
        let Err(Refusal::Conflicts(conflicts)) =
            apply(Some(&shared), config(5, json!({})), "bob", false)
        else {
            panic!("no conflict");
        };
        assert_eq!(
            conflicts,
            [Conflict {
                manager: "alice".into(),
                field: "/spec/replicas".into()
            }]
        );
        assert_eq!(
            conflicts[0].to_string(),
            "conflict with \"alice\": .spec.replicas"
        );
        // Forced: bob takes it; alice no longer owns it.
        let forced = apply(Some(&shared), config(5, json!({})), "bob", true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        assert!(!owners_of(&forced)["alice"].contains("/spec/replicas"));
        // bob stopped naming tier: it goes, as no one else owns it; app
        // stays, alice's.
        assert_eq!(forced["metadata"]["labels"], json!({"app": "web"}));
        // alice drops ports, which bob still owns: they stay.
        let mut less = config(5, json!({"app": "web"}));
        less["spec"].as_object_mut().unwrap().remove("ports");
        let kept = apply(Some(&forced), less, "alice", false).unwrap();
        assert_eq!(kept["spec"]["ports"], json!([80]));
    }

    #[test]
    fn what_the_server_filled_in_is_no_conflict() {
        let mine = json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "a"}]}});
        let first = apply(None, mine.clone(), "alice", false).unwrap();
        let mut defaulted = first.clone();
        defaulted["spec"]["containers"][0]["imagePullPolicy"] = json!("IfNotPresent");
        assert!(apply(Some(&defaulted), mine.clone(), "bob", false).is_ok());
        let mut other = mine;
        other["spec"]["containers"][0]["image"] = json!("b");
        assert_eq!(
            match apply(Some(&defaulted), other, "bob", false) {
                Err(Refusal::Conflicts(c)) => c.len(),
                _ => 0,
            },
            1
        );
    }

    #[test]
    fn keys_with_dots_and_slashes_are_fields_of_their_own() {
        let labels = json!({"app.kubernetes.io/name": "web", "a~b": "c"});
        let first = apply(None, config(1, labels.clone()), "alice", false).unwrap();
        assert_eq!(first["metadata"]["labels"], labels);
        let dropped = apply(Some(&first), config(1, json!({"a~b": "c"})), "alice", false).unwrap();
        assert_eq!(dropped["metadata"]["labels"], json!({"a~b": "c"}));
        assert_eq!(
            dotted("/metadata/labels/app.kubernetes.io~1name"),
            ".metadata.labels.app.kubernetes.io/name"
        );
    }

    #[test]
    fn an_apply_of_too_many_fields_is_refused() {
        let data: Map<String, Value> = (0..=MAX_FIELDS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let many = json!({"metadata": {"name": "big"}, "data": data});
        assert_eq!(
            apply(None, many, "alice", false).unwrap_err(),
            Refusal::TooManyFields
        );
    }

    #[test]
    fn the_record_cannot_be_applied_over_and_status_is_not_applied() {
        let mut sneaky = config(1, json!({}));
        sneaky["metadata"]["annotations"] =
            json!({MANAGED_ANNOTATION: "{\"mallory\": [\".spec.replicas\"]}"});
        sneaky["status"] = json!({"phase": "Running"});
        let applied = apply(None, sneaky, "alice", false).unwrap();
        assert!(applied.get("status").is_none());
        assert_eq!(owners_of(&applied).keys().collect::<Vec<_>>(), ["alice"]);
    }
}
