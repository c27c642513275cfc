//! The garbage collector: deletes an object once every owner its
//! `ownerReferences` name is gone (background propagation: the owner goes
//! first, its dependents after), or is being deleted in the foreground
//! (then the owner, marked with `foregroundDeletion`, is deleted once its
//! last dependent has gone), and deletes an owner marked `orphan` once it
//! has taken the owner's references off its dependents, which stay.
//! Deletions cascade, since a dependent's deletion is in turn seen as an
//! owner's.
//!
//! It follows every kind by watch and keeps a graph of owners and
//! dependents. The watches of different kinds are not ordered with one
//! another (a dependent may be seen before its new owner), so an owner that
//! looks missing is always checked against the store before anything is
//! deleted, and the delete is conditional on the dependent's uid.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;
use skiff_api::meta::{deleting_in_foreground, namespace_and_name, orphaning};
use skiff_api::{EventType, Kind};

use crate::store::{ObjectKey, Part, Store, StoreError, Write};
use crate::watch::{self, WatchHub};

/// How often every dependent with a missing owner is checked again, for
/// whatever events cannot tell (an owner deleted while no leader ran).
const RESYNC: Duration = Duration::from_secs(30);

/// An owner as a dependent names it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    key: ObjectKey,
    uid: String,
}

/// Who owns whom, as far as the watches have told.
#[derive(Default)]
struct Graph {
    /// The uid of every object seen.
    uids: HashMap<ObjectKey, String>,
    live: HashSet<String>,
    /// Uids of objects being deleted in the foreground: to their dependents
    /// they count as gone.
    deleting: HashSet<String>,
    /// Uids of objects being deleted with their dependents orphaned: alive
    /// to their dependents until their references are off them.
    orphaning: HashSet<String>,
    /// Dependents and the owners they name.
    owners: HashMap<ObjectKey, (String, Vec<Owner>)>,
    /// Owner uid → its dependents.
    dependents: HashMap<String, HashSet<ObjectKey>>,
}

impl Graph {
    /// Records an object; returns what to look at now: the object itself
    /// when one of its owners is not known alive or when it is being
    /// deleted in the foreground, and then its dependents too.
    fn upsert(&mut self, key: ObjectKey, object: &Value) -> Vec<ObjectKey> {
        self.remove(&key);
        let uid = object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let owners = owners_of(&key, object);
        self.live.insert(uid.clone());
        self.uids.insert(key.clone(), uid.clone());
        let mut woken = Vec::new();
        if deleting_in_foreground(object) {
            self.deleting.insert(uid.clone());
            woken.push(key.clone());
            woken.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
        } else if orphaning(object) {
            self.orphaning.insert(uid.clone());
            woken.push(key.clone());
        }
        if owners.is_empty() {
            return woken;
        }
        for owner in &owners {
            self.dependents
                .entry(owner.uid.clone())
                .or_default()
                .insert(key.clone());
        }
        if owners.iter().any(|o| self.gone(&o.uid)) {
            woken.push(key.clone());
        }
        self.owners.insert(key, (uid, owners));
        woken
    }

    /// Whether, to its dependents, the object with `uid` is gone.
    fn gone(&self, uid: &str) -> bool {
        !self.live.contains(uid) || self.deleting.contains(uid)
    }

    /// Forgets an object; returns its dependents, and its owners that are
    /// being deleted in the foreground (one dependent fewer to wait for).
    fn remove(&mut self, key: &ObjectKey) -> HashSet<ObjectKey> {
        let Some(uid) = self.uids.remove(key) else {
            return HashSet::new();
        };
        self.live.remove(&uid);
        self.deleting.remove(&uid);
        self.orphaning.remove(&uid);
        let mut woken = HashSet::new();
        if let Some((_, owners)) = self.owners.remove(key) {
            for owner in owners {
                if self.deleting.contains(&owner.uid) {
                    woken.insert(owner.key.clone());
                }
                if let Some(set) = self.dependents.get_mut(&owner.uid) {
                    set.remove(key);
                    if set.is_empty() {
                        self.dependents.remove(&owner.uid);
                    }
                }
            }
        }
        woken.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
        woken
    }

    /// Dependents with an owner not known alive, and objects being deleted
    /// in the foreground.
    fn suspects(&self) -> impl Iterator<Item = &ObjectKey> {
        let orphans = self
            .owners
            .iter()
            .filter(|(_, (_, owners))| owners.iter().any(|o| self.gone(&o.uid)))
            .map(|(key, _)| key);
        let deleting = self
            .uids
            .iter()
            .filter(|(_, uid)| self.deleting.contains(*uid) || self.orphaning.contains(*uid))
            .map(|(key, _)| key);
        orphans.chain(deleting)
    }
}

/// The owners an object names; an owner of a namespaced kind lives in the
/// dependent's namespace. References to kinds this API does not have are
/// ignored, so they never count as gone.
fn owners_of(key: &ObjectKey, object: &Value) -> Vec<Owner> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|reference| {
            let kind = Kind::from_name(reference["kind"].as_str()?)?;
            let namespace = if kind.namespaced() {
                key.namespace.as_str()
            } else {
                ""
            };
            Some(Owner {
                key: ObjectKey::new(kind, namespace, reference["name"].as_str()?),
                uid: reference["uid"].as_str()?.to_owned(),
            })
        })
        .collect()
}

fn key_of(kind: Kind, object: &Value) -> ObjectKey {
    let (namespace, name) = namespace_and_name(object);
    ObjectKey::new(kind, &namespace, &name)
}

/// One term of leadership.
pub async fn run(store: Store, hub: WatchHub) -> Result<(), StoreError> {
    let mut graph = Graph::default();
    let mut suspects: BTreeSet<(Kind, String, String)> = BTreeSet::new();
    let mut from = i64::MAX;
    for kind in Kind::ALL {
        // A page at a time: the graph keeps owner references, not objects.
        let revision = store
            .scan(kind, |object| {
                suspects.extend(
                    graph
                        .upsert(key_of(kind, &object), &object)
                        .into_iter()
                        .map(sortable),
                );
            })
            .await?;
        // Watching every kind from the earliest list replays what changed
        // while the others were listed; an upsert is idempotent.
        from = from.min(revision);
    }
    // Dropped with this term, which stops the watches.
    let (_watches, mut received) = watch::follow_kinds(&store, &hub, &Kind::ALL, from);
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        while let Some((kind, namespace, name)) = suspects.pop_first() {
            collect(&store, &graph, &ObjectKey::new(kind, &namespace, &name)).await?;
        }
        tokio::select! {
            event = received.recv() => {
                let (kind, event) = event.ok_or_else(|| StoreError::Unavailable("a watch ended".into()))?;
                let key = key_of(kind, &event.object);
                let woken = match event.event_type {
                    EventType::Added | EventType::Modified => graph.upsert(key, &event.object),
                    EventType::Deleted => graph.remove(&key).into_iter().collect(),
                    EventType::Bookmark => Vec::new(),
                    EventType::Error => return Err(StoreError::Unavailable(format!("the {} watch failed", kind.name()))),
                };
                suspects.extend(woken.into_iter().map(sortable));
            }
            _ = resync.tick() => suspects.extend(graph.suspects().cloned().map(sortable)),
        }
    }
}

fn sortable(key: ObjectKey) -> (Kind, String, String) {
    (key.kind, key.namespace, key.name)
}

/// Deletes `key` if every owner it names is gone, checking each that the
/// graph does not know alive against the store.
async fn collect(store: &Store, graph: &Graph, key: &ObjectKey) -> Result<(), StoreError> {
    let Some(uid) = graph.uids.get(key) else {
        return Ok(());
    };
    if graph.deleting.contains(uid) {
        // Deleted in the foreground: goes once no dependent is left.
        if graph.dependents.get(uid).is_none_or(HashSet::is_empty) {
            return delete(store, key, uid, "its dependents are gone").await;
        }
        return Ok(());
    }
    if graph.orphaning.contains(uid) {
        for dependent in graph.dependents.get(uid).into_iter().flatten() {
            disown(store, dependent, uid).await?;
        }
        return delete(store, key, uid, "its dependents are orphaned").await;
    }
    let Some((_, owners)) = graph.owners.get(key) else {
        return Ok(());
    };
    for owner in owners {
        if !graph.gone(&owner.uid) {
            return Ok(());
        }
        let current = store.get(&owner.key).await?;
        if current.is_some_and(|o| {
            o["metadata"]["uid"].as_str() == Some(owner.uid.as_str()) && !deleting_in_foreground(&o)
        }) {
            return Ok(());
        }
    }
    delete(store, key, uid, "its owners are gone").await
}

/// Takes the reference to the owner with `owner_uid` off `key`, as a
/// write conditional on the version read (read again on a lost race).
async fn disown(store: &Store, key: &ObjectKey, owner_uid: &str) -> Result<(), StoreError> {
    for _ in 0..5 {
        let Some(mut object) = store.get(key).await? else {
            return Ok(());
        };
        let revision = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok());
        let Some(references) = object["metadata"]["ownerReferences"].as_array_mut() else {
            return Ok(());
        };
        let before = references.len();
        references.retain(|r| r["uid"].as_str() != Some(owner_uid));
        if references.len() == before {
            return Ok(());
        }
        if references.is_empty()
            && let Some(meta) = object["metadata"].as_object_mut()
        {
            meta.remove("ownerReferences");
        }
        match store
            .write(Write::Update {
                key: key.clone(),
                object,
                part: Part::Main,
                expected_revision: revision,
            })
            .await
        {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Unavailable(format!(
        "{} {}/{} kept changing while its owner's reference was taken off",
        key.kind.name(),
        key.namespace,
        key.name
    )))
}

/// Deletes `key` if it is still the object with `uid`.
async fn delete(store: &Store, key: &ObjectKey, uid: &str, why: &str) -> Result<(), StoreError> {
    tracing::info!(
        "garbage collector: deleting {} {}/{}: {why}",
        key.kind.name(),
        key.namespace,
        key.name
    );
    match store
        .write(Write::Delete {
            key: key.clone(),
            expected_revision: None,
            expected_uid: Some(uid.to_owned()),
        })
        .await
    {
        // Gone already, or replaced by a new object of the same name.
        Ok(_) | Err(StoreError::NotFound(_) | StoreError::UidMismatch(_)) => Ok(()),
        Err(e) => Err(e),
    }
}
