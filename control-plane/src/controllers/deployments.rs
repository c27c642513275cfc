//! The Deployment controller: keeps `replicas` pods of the Deployment's
//! template, rolls a changed template out revision by revision within
//! `maxSurge`/`maxUnavailable`, and, when a rollout makes no progress for
//! `progressDeadlineSeconds`, marks it failed and (unless `autoRollback` is
//! false) restores the last revision that was fully available.
//!
//! Pods belong to a Deployment by owner reference and to a revision by the
//! `skiff.dev/template-hash` label. Revisions live in the Deployment's
//! status, so `rollout history` and `rollout undo` need nothing else.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use skiff_api::Kind;
use skiff_api::kinds::deployment::{
    CHANGE_CAUSE_ANNOTATION, Deployment, DeploymentStatus, Revision, TEMPLATE_HASH_LABEL,
};
use skiff_api::kinds::pod::{Condition, Pod, PodPhase};

use super::reconciler::{Action, Controller};
use super::rollout::{self, Bounds, PodView};
use crate::store::{ListQuery, ObjectKey, Part, Store, StoreError, Write, now_rfc3339};

pub struct Deployments {
    pub store: Store,
}

/// Annotation on a pod naming its Deployment revision.
pub const REVISION_ANNOTATION: &str = "skiff.dev/revision";

impl Controller for Deployments {
    const NAME: &'static str = "deployments";
    const KIND: Kind = Kind::Deployment;
    const WATCHES: &'static [Kind] = &[Kind::Pod];

    async fn wakes(&self, _kind: Kind, pod: &Value) -> Result<Vec<ObjectKey>, StoreError> {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or_default();
        Ok(controller_of(pod, "Deployment")
            .map(|name| ObjectKey::new(Kind::Deployment, namespace, name))
            .into_iter()
            .collect())
    }

    async fn reconcile(&self, key: &ObjectKey) -> Result<Action, StoreError> {
        let Some(stored) = self.store.get(key).await? else {
            return Ok(Action::Done);
        };
        let deployment: Deployment =
            serde_json::from_value(stored.clone()).map_err(|e| StoreError::Invalid {
                field: format!("deployments {}/{}", key.namespace, key.name),
                message: e.to_string(),
            })?;
        if deployment.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let pods = self.pods_of(&deployment).await?;
        Reconcile {
            store: &self.store,
            deployment: &deployment,
            revision: stored["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok()),
            pods,
            now: Utc::now(),
        }
        .run()
        .await
    }
}

/// The name of the object of `kind` that controls `object`, if any.
pub fn controller_of<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == kind && r["controller"] == true)?["name"]
        .as_str()
}

impl Deployments {
    /// The live pods the Deployment controls.
    async fn pods_of(&self, deployment: &Deployment) -> Result<Vec<Pod>, StoreError> {
        let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
        let page = self
            .store
            .list(
                Kind::Pod,
                ListQuery {
                    namespace: Some(&deployment.metadata.namespace),
                    ..Default::default()
                },
            )
            .await?;
        Ok(page
            .items
            .into_iter()
            .filter(|p| {
                p["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .filter_map(|p| serde_json::from_value::<Pod>(p).ok())
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }
}

/// The hash that names a template's revision: the same template always
/// gets the same hash, so rolling back to it finds its pods.
pub fn template_hash(template: &skiff_api::kinds::deployment::PodTemplate) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let digest = Sha256::digest(&bytes);
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase == PodPhase::Running
            && s.conditions
                .iter()
                .any(|c| c.condition_type == "Ready" && c.status == "True")
    })
}

struct Reconcile<'a> {
    store: &'a Store,
    deployment: &'a Deployment,
    revision: Option<i64>,
    pods: Vec<Pod>,
    now: DateTime<Utc>,
}

impl Reconcile<'_> {
    async fn run(self) -> Result<Action, StoreError> {
        let d = self.deployment;
        let spec = &d.spec;
        let old_status = d.status.clone().unwrap_or_default();
        let mut status = old_status.clone();
        let paused = spec.paused && status.revision.is_some();
        if !paused {
            self.adopt_template(&mut status);
        }
        let current = status
            .history
            .iter()
            .find(|r| Some(r.revision) == status.revision)
            .cloned()
            .expect("the current revision is in the history");

        let views: Vec<PodView> = self
            .pods
            .iter()
            .map(|p| PodView {
                name: p.metadata.name.clone(),
                current: p.metadata.labels.get(TEMPLATE_HASH_LABEL) == Some(&current.template_hash),
                ready: is_ready(p),
            })
            .collect();
        let replicas = spec.replicas.unwrap_or(1);
        let strategy = spec.strategy.clone().unwrap_or_else(|| {
            serde_json::from_value(json!({"type": "RollingUpdate"})).expect("default strategy")
        });
        let rolling = strategy.rolling_update.as_ref();
        let bounds = Bounds::new(
            replicas,
            strategy.strategy_type,
            rolling.and_then(|r| r.max_surge.as_ref()),
            rolling.and_then(|r| r.max_unavailable.as_ref()),
        );
        let plan = if paused {
            // A paused rollout stays where it is; lost pods are still
            // replaced, with the current revision.
            rollout::Plan {
                create: replicas.saturating_sub(views.len() as u32),
                delete: Vec::new(),
            }
        } else {
            rollout::plan(&bounds, &views)
        };
        for name in &plan.delete {
            self.delete_pod(name).await?;
        }
        for _ in 0..plan.create {
            self.create_pod(&current).await?;
        }

        // Counts as they stand after this step's deletions (creations show
        // up as the new pods report).
        let remaining: Vec<&PodView> = views
            .iter()
            .filter(|v| !plan.delete.contains(&v.name))
            .collect();
        let updated = remaining.iter().filter(|v| v.current).count() as u32 + plan.create;
        let updated_ready = remaining.iter().filter(|v| v.current && v.ready).count() as u32;
        let ready = remaining.iter().filter(|v| v.ready).count() as u32;
        let old = remaining.iter().filter(|v| !v.current).count() as u32;
        status.observed_generation = d.metadata.generation;
        status.replicas = remaining.len() as u32 + plan.create;
        status.updated_replicas = updated;
        status.ready_replicas = ready;
        status.available_replicas = ready;
        let old_before = old_status
            .replicas
            .saturating_sub(old_status.updated_replicas);
        let progressed = updated > old_status.updated_replicas
            || ready > old_status.ready_replicas
            || old < old_before;
        if progressed || status.progressed_at.is_none() {
            status.progressed_at = Some(now_rfc3339());
        }

        let complete = updated_ready == replicas && updated == replicas && old == 0;
        let mut requeue = Action::Done;
        let mut rollback_to: Option<Revision> = None;
        let available = ready >= replicas.saturating_sub(bounds.unavailable);
        set_condition(
            &mut status,
            "Available",
            available,
            if available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            &format!("{ready} of {replicas} replicas ready"),
        );
        if complete {
            status.stable_revision = status.revision;
            set_condition(
                &mut status,
                "Progressing",
                true,
                "NewRevisionAvailable",
                &format!("revision {} is available", current.revision),
            );
        } else if paused {
            set_condition(
                &mut status,
                "Progressing",
                false,
                "DeploymentPaused",
                "the rollout is paused",
            );
        } else if current.failure.is_some() {
            // Already given up on; a new template starts a new rollout.
        } else {
            let deadline =
                Duration::from_secs(u64::from(spec.progress_deadline_seconds.unwrap_or(600)));
            let since = status
                .progressed_at
                .as_deref()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map_or(self.now, |t| t.with_timezone(&Utc));
            let stalled = (self.now - since).to_std().unwrap_or_default();
            if stalled >= deadline {
                let failure = format!(
                    "progress deadline exceeded: {updated_ready} of {replicas} pods of revision {} ready after {}s",
                    current.revision,
                    deadline.as_secs()
                );
                tracing::warn!(
                    "deployments: {}/{}: {failure}",
                    d.metadata.namespace,
                    d.metadata.name
                );
                if let Some(entry) = status
                    .history
                    .iter_mut()
                    .find(|r| r.revision == current.revision)
                {
                    entry.failure = Some(failure.clone());
                }
                let stable = status
                    .stable_revision
                    .filter(|s| *s != current.revision)
                    .and_then(|s| status.history.iter().find(|r| r.revision == s).cloned());
                let message = match (&stable, spec.auto_rollback.unwrap_or(true)) {
                    (Some(stable), true) => {
                        rollback_to = Some(stable.clone());
                        format!("{failure}; rolled back to revision {}", stable.revision)
                    }
                    _ => failure,
                };
                set_condition(
                    &mut status,
                    "Progressing",
                    false,
                    "ProgressDeadlineExceeded",
                    &message,
                );
            } else {
                set_condition(
                    &mut status,
                    "Progressing",
                    true,
                    "RollingOut",
                    &format!(
                        "{updated_ready} of {replicas} pods of revision {} ready",
                        current.revision
                    ),
                );
                requeue = Action::RequeueAfter(deadline - stalled + Duration::from_millis(50));
            }
        }

        if status != old_status {
            let written = self
                .store
                .write(Write::Update {
                    key: key_of(d),
                    object: serde_json::to_value(&status).expect("status serializes"),
                    part: Part::Status,
                    expected_revision: self.revision,
                })
                .await;
            match written {
                Ok(_) => {}
                // Someone changed the Deployment meanwhile; its event brings
                // us back with the new state.
                Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => {
                    return Ok(Action::Done);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(stable) = rollback_to {
            self.roll_back(&stable).await?;
        }
        Ok(requeue)
    }

    /// Makes the spec's template the current revision: a template seen
    /// before moves to a new revision number (as a rollback does), a new
    /// one is added, and the oldest beyond the history limit are dropped.
    fn adopt_template(&self, status: &mut DeploymentStatus) {
        let spec = &self.deployment.spec;
        let hash = template_hash(&spec.template);
        let current = status
            .history
            .iter()
            .find(|r| Some(r.revision) == status.revision);
        if current.is_some_and(|r| r.template_hash == hash) {
            return;
        }
        let next = status.history.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
        status.history.retain(|r| r.template_hash != hash);
        status.history.push(Revision {
            revision: next,
            template_hash: hash,
            template: spec.template.clone(),
            created: now_rfc3339(),
            change_cause: self
                .deployment
                .metadata
                .annotations
                .get(CHANGE_CAUSE_ANNOTATION)
                .cloned(),
            failure: None,
        });
        status.revision = Some(next);
        status.progressed_at = Some(now_rfc3339());
        let keep = spec.revision_history_limit.unwrap_or(10) as usize + 1;
        if status.history.len() > keep {
            let stable = status.stable_revision;
            let mut excess = status.history.len() - keep;
            status.history.retain(|r| {
                // The revision a failed rollout would return to stays.
                if excess == 0 || Some(r.revision) == stable {
                    return true;
                }
                excess -= 1;
                false
            });
        }
    }

    async fn create_pod(&self, revision: &Revision) -> Result<(), StoreError> {
        let d = self.deployment;
        let mut labels = revision.template.metadata.labels.clone();
        labels.insert(TEMPLATE_HASH_LABEL.into(), revision.template_hash.clone());
        let mut annotations = revision.template.metadata.annotations.clone();
        annotations.insert(REVISION_ANNOTATION.into(), revision.revision.to_string());
        let prefix: String = d.metadata.name.chars().take(63 - 12).collect();
        let name = format!(
            "{}-{}-{}",
            prefix.trim_end_matches('-'),
            &revision.template_hash[..5],
            random_suffix()
        );
        let pod = json!({
            "apiVersion": skiff_api::API_VERSION,
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": d.metadata.namespace,
                "labels": labels,
                "annotations": annotations,
                "ownerReferences": [{
                    "apiVersion": skiff_api::API_VERSION,
                    "kind": "Deployment",
                    "name": d.metadata.name,
                    "uid": d.metadata.uid,
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": revision.template.spec,
        });
        let key = ObjectKey::new(Kind::Pod, &d.metadata.namespace, &name);
        match self.store.write(Write::Create { key, object: pod }).await {
            Ok(_) => Ok(()),
            // A name taken by chance: the next reconcile tries another.
            Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_pod(&self, name: &str) -> Result<(), StoreError> {
        let uid = self
            .pods
            .iter()
            .find(|p| p.metadata.name == name)
            .and_then(|p| p.metadata.uid.clone());
        let write = Write::Delete {
            key: ObjectKey::new(Kind::Pod, &self.deployment.metadata.namespace, name),
            expected_revision: None,
            expected_uid: uid,
        };
        match self.store.write(write).await {
            Ok(_) | Err(StoreError::NotFound(_) | StoreError::UidMismatch(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Puts a stable revision's template back in the spec, as
    /// `wasmctl rollout undo` would; the next reconcile rolls it out.
    async fn roll_back(&self, stable: &Revision) -> Result<(), StoreError> {
        let d = self.deployment;
        tracing::warn!(
            "deployments: {}/{}: rolling back to revision {}",
            d.metadata.namespace,
            d.metadata.name,
            stable.revision
        );
        let Some(current) = self.store.get(&key_of(d)).await? else {
            return Ok(());
        };
        let mut next = current.clone();
        next["spec"]["template"] =
            serde_json::to_value(&stable.template).expect("template serializes");
        let write = Write::Update {
            key: key_of(d),
            object: next,
            part: Part::Main,
            expected_revision: current["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok()),
        };
        match self.store.write(write).await {
            Ok(_) | Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn key_of(d: &Deployment) -> ObjectKey {
    ObjectKey::new(Kind::Deployment, &d.metadata.namespace, &d.metadata.name)
}

/// Sets a condition, keeping its transition time unless its status flips.
fn set_condition(
    status: &mut DeploymentStatus,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
) {
    let value = if value { "True" } else { "False" };
    let previous = status.conditions.iter().find(|c| c.condition_type == kind);
    let transition = match previous {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Some(now_rfc3339()),
    };
    let condition = Condition {
        condition_type: kind.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: transition,
        last_heartbeat_time: None,
    };
    status.conditions.retain(|c| c.condition_type != kind);
    status.conditions.push(condition);
    status
        .conditions
        .sort_by(|a, b| a.condition_type.cmp(&b.condition_type));
}

/// Five characters that cannot spell words, as pod name suffixes.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bytes = [0u8; 5];
    getrandom::fill(&mut bytes).expect("system randomness");
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::deployment::PodTemplate;

    #[test]
    fn the_same_template_always_has_the_same_hash() {
        let mut template = PodTemplate::default();
        template.spec.image = "registry/app:v1".into();
        let first = template_hash(&template);
        assert_eq!(first, template_hash(&template.clone()));
        assert_eq!(first.len(), 10);
        template.spec.image = "registry/app:v2".into();
        assert_ne!(first, template_hash(&template));
    }

    #[test]
    fn pod_name_suffixes_are_dns_safe() {
        for _ in 0..100 {
            let suffix = random_suffix();
            assert_eq!(suffix.len(), 5);
            assert!(
                suffix
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            );
        }
    }
}
