//! The Deployment controller: keeps `replicas` pods of the Deployment's
//! template, rolls a changed template out revision by revision within
//! `maxSurge`/`maxUnavailable`, and, when a rollout makes no progress for
//! `progressDeadlineSeconds`, marks it failed and (unless `autoRollback` is
//! false) restores the last revision that was fully available.
//!
//! Pods belong to a Deployment by owner reference and to a revision by the
//! `skiff.dev/template-hash` label. Revisions live in the Deployment's
//! status, so `rollout history` and `rollout undo` need nothing else.
//!
//! A reconcile decides, then acts: [`plan`] turns the Deployment, its pods
//! and the time into a [`Plan`] without I/O, and an executor takes its
//! steps through the store.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use skiff_api::Kind;
use skiff_api::kinds::deployment::{
    CHANGE_CAUSE_ANNOTATION, Deployment, DeploymentStatus, Revision, TEMPLATE_HASH_LABEL,
};
use skiff_api::kinds::pod::{Condition, PREFERRED_NODE_ANNOTATION, Pod, PodPhase};

use super::reconciler::{Action, Controller};
use super::rollout::{self, Bounds, PodView};
use skiff_api::kinds::event::{InvolvedObject, Severity};
use skiff_client::events::Recorder;

use crate::store::{JsonFilter, ListQuery, ObjectKey, Part, Store, StoreError, Write};

pub struct Deployments {
    pub store: Store,
    /// Tells pods created and deleted, stalled rollouts and rollbacks.
    pub events: Recorder,
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
        let plan = plan(&deployment, &pods, Utc::now());
        Executor {
            store: &self.store,
            events: &self.events,
            from_zero: pods.is_empty(),
            deployment: &deployment,
            stored: &stored,
        }
        .execute(plan)
        .await
    }
}

/// The node a pod made now should prefer: the one whose held requests
/// took the Deployment off zero just now (within [`ACTIVATION_FRESH`]),
/// while it has no live pod. A Deployment scaled up from zero otherwise
/// (by hand, by `minReplicas`) places its pods as they ask.
pub fn preferred_node(
    deployment: &Deployment,
    from_zero: bool,
    now: DateTime<Utc>,
) -> Option<String> {
    use super::autoscaler::{ACTIVATED_ANNOTATION, ACTIVATED_ON_ANNOTATION};
    let annotations = &deployment.metadata.annotations;
    let activated = annotations
        .get(ACTIVATED_ANNOTATION)
        .and_then(|at| DateTime::parse_from_rfc3339(at).ok())?;
    let fresh = now.signed_duration_since(activated) < ACTIVATION_FRESH;
    annotations
        .get(ACTIVATED_ON_ANNOTATION)
        .filter(|_| from_zero && fresh)
        .cloned()
}

/// How long after an activation its node is still preferred: the pod is
/// normally made within milliseconds; a reconcile much later is another
/// reason to scale.
const ACTIVATION_FRESH: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Where an object names its owners.
const OWNERS: &[&str] = &["metadata", "ownerReferences"];

/// The name of the object of `kind` that controls `object`, if any.
pub fn controller_of<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == kind && r["controller"] == true)?["name"]
        .as_str()
}

impl Deployments {
    async fn pods_of(&self, deployment: &Deployment) -> Result<Vec<Pod>, StoreError> {
        pods_of(&self.store, deployment).await
    }
}

/// The live pods `deployment` controls.
pub async fn pods_of(store: &Store, deployment: &Deployment) -> Result<Vec<Pod>, StoreError> {
    let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
    let owned_by = json!([{ "uid": uid }]);
    let page = store
        .list(
            Kind::Pod,
            ListQuery {
                namespace: Some(&deployment.metadata.namespace),
                // Found by owner (the `objects_owners` index answers
                // it): a namespace may hold thousands of other pods.
                json: &[JsonFilter::Contains(OWNERS, &owned_by)],
                ..Default::default()
            },
        )
        .await?;
    Ok(owned_pods(deployment, page.items))
}

/// Of `pods` (stored objects), those `deployment` owns that are not being
/// deleted.
pub fn owned_pods(deployment: &Deployment, pods: Vec<Value>) -> Vec<Pod> {
    let uid = deployment.metadata.uid.as_deref().unwrap_or_default();
    pods.into_iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
        })
        .filter_map(|p| serde_json::from_value::<Pod>(p).ok())
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The pods `plan` creates for `deployment`, as they are to be written:
/// the first of them preferring `preferred_node`, as made now.
pub fn pods_to_create(
    deployment: &Deployment,
    plan: &Plan,
    mut preferred_node: Option<String>,
) -> Vec<(ObjectKey, Value)> {
    plan.steps
        .iter()
        .filter_map(|step| match step {
            Step::CreatePod(revision) => {
                Some(pod_object(deployment, revision, preferred_node.take()))
            }
            _ => None,
        })
        .collect()
}

/// A new pod of `revision` of `d`, under a fresh name.
fn pod_object(
    d: &Deployment,
    revision: &Revision,
    preferred_node: Option<String>,
) -> (ObjectKey, Value) {
    let mut labels = revision.template.metadata.labels.clone();
    labels.insert(TEMPLATE_HASH_LABEL.into(), revision.template_hash.clone());
    let mut annotations = revision.template.metadata.annotations.clone();
    annotations.insert(REVISION_ANNOTATION.into(), revision.revision.to_string());
    // Off zero at a node's request: that node holds the requests, and
    // serves them itself if the pod runs there.
    if let Some(node) = preferred_node {
        annotations.insert(PREFERRED_NODE_ANNOTATION.into(), node);
    }
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
    (ObjectKey::new(Kind::Pod, &d.metadata.namespace, &name), pod)
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

/// What one reconcile decided: the status the Deployment should have and
/// the steps that take it there, in the order they are to be taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub status: DeploymentStatus,
    pub steps: Vec<Step>,
    /// When to look again once the steps are taken.
    pub then: Action,
    /// Why the current revision's rollout was given up on, when that was
    /// decided now, for the log.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Delete the pod, unless the name now belongs to another (uid).
    DeletePod { name: String, uid: Option<String> },
    /// Create one pod of this revision.
    CreatePod(Revision),
    /// Write [`Plan::status`], conditional on the Deployment's revision as
    /// read; the steps after it are taken only if it is written.
    WriteStatus,
    /// Put this revision's template back in the spec, as `wasmctl rollout
    /// undo` would; the next reconcile rolls it out.
    RollBack(Revision),
}

/// The next step of `deployment` given its live `pods`, at `now`.
pub fn plan(deployment: &Deployment, pods: &[Pod], now: DateTime<Utc>) -> Plan {
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let spec = &deployment.spec;
    let old_status = deployment.status.clone().unwrap_or_default();
    let mut status = old_status.clone();
    // Paused only at a revision the history holds: a status naming
    // another (written by hand, or damaged) adopts the template again.
    let paused = spec.paused
        && status
            .history
            .iter()
            .any(|r| Some(r.revision) == status.revision);
    if !paused {
        adopt_template(deployment, &mut status, &stamp);
    }
    let current = status
        .history
        .iter()
        .find(|r| Some(r.revision) == status.revision)
        .cloned()
        .expect("the current revision is in the history");

    let views: Vec<PodView> = pods
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
    let pod_plan = if paused {
        // A paused rollout stays where it is; lost pods are still
        // replaced, with the current revision.
        rollout::Plan {
            create: replicas.saturating_sub(views.len() as u32),
            delete: Vec::new(),
        }
    } else {
        rollout::plan(&bounds, &views)
    };
    let mut steps: Vec<Step> = pod_plan
        .delete
        .iter()
        .map(|name| Step::DeletePod {
            name: name.clone(),
            uid: pods
                .iter()
                .find(|p| &p.metadata.name == name)
                .and_then(|p| p.metadata.uid.clone()),
        })
        .collect();
    steps.extend((0..pod_plan.create).map(|_| Step::CreatePod(current.clone())));

    // Counts as they stand after this step's deletions (creations show up
    // as the new pods report).
    let remaining: Vec<&PodView> = views
        .iter()
        .filter(|v| !pod_plan.delete.contains(&v.name))
        .collect();
    let updated = remaining.iter().filter(|v| v.current).count() as u32 + pod_plan.create;
    let updated_ready = remaining.iter().filter(|v| v.current && v.ready).count() as u32;
    let ready = remaining.iter().filter(|v| v.ready).count() as u32;
    let old = remaining.iter().filter(|v| !v.current).count() as u32;
    status.observed_generation = deployment.metadata.generation;
    status.replicas = remaining.len() as u32 + pod_plan.create;
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
        status.progressed_at = Some(stamp.clone());
    }

    let complete = updated_ready == replicas && updated == replicas && old == 0;
    let mut then = Action::Done;
    let mut rollback_to: Option<Revision> = None;
    let mut given_up: Option<String> = None;
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
        &stamp,
    );
    if complete {
        status.stable_revision = status.revision;
        set_condition(
            &mut status,
            "Progressing",
            true,
            "NewRevisionAvailable",
            &format!("revision {} is available", current.revision),
            &stamp,
        );
    } else if paused {
        set_condition(
            &mut status,
            "Progressing",
            false,
            "DeploymentPaused",
            "the rollout is paused",
            &stamp,
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
            .map_or(now, |t| t.with_timezone(&Utc));
        let stalled = (now - since).to_std().unwrap_or_default();
        if stalled >= deadline {
            let failure = format!(
                "progress deadline exceeded: {updated_ready} of {replicas} pods of revision {} ready after {}s",
                current.revision,
                deadline.as_secs()
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
                _ => failure.clone(),
            };
            given_up = Some(failure);
            set_condition(
                &mut status,
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                &message,
                &stamp,
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
                &stamp,
            );
            then = Action::RequeueAfter(deadline - stalled + Duration::from_millis(50));
        }
    }

    if status != old_status {
        steps.push(Step::WriteStatus);
    }
    steps.extend(rollback_to.map(Step::RollBack));
    Plan {
        status,
        steps,
        then,
        failure: given_up,
    }
}

/// Makes the spec's template the current revision: a template seen before
/// moves to a new revision number (as a rollback does), a new one is added,
/// and the oldest beyond the history limit are dropped.
fn adopt_template(deployment: &Deployment, status: &mut DeploymentStatus, stamp: &str) {
    let spec = &deployment.spec;
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
        created: stamp.to_owned(),
        // Skiff's annotation, or Kubernetes' (what `kubectl annotate` and
        // `kubectl rollout history` know).
        change_cause: [
            CHANGE_CAUSE_ANNOTATION,
            skiff_api::kube::CHANGE_CAUSE_ANNOTATION,
        ]
        .iter()
        .find_map(|key| deployment.metadata.annotations.get(*key))
        .cloned(),
        failure: None,
    });
    status.revision = Some(next);
    status.progressed_at = Some(stamp.to_owned());
    let keep = spec.revision_history_limit.unwrap_or(10) as usize + 1;
    if status.history.len() > keep {
        let (stable, current) = (status.stable_revision, status.revision);
        let mut excess = status.history.len() - keep;
        status.history.retain(|r| {
            // The revision being rolled out and the one a failed rollout
            // would return to stay, whatever the limit (even 0).
            if excess == 0 || Some(r.revision) == stable || Some(r.revision) == current {
                return true;
            }
            excess -= 1;
            false
        });
    }
}

/// Takes a [`Plan`]'s steps through the store.
struct Executor<'a> {
    store: &'a Store,
    events: &'a Recorder,
    deployment: &'a Deployment,
    /// The Deployment as read, which the status write (and, by its
    /// revision, the pods' deletions) is conditional on.
    stored: &'a Value,
    /// Whether it had no live pod: a pod made now is its first from zero.
    from_zero: bool,
}

impl Executor<'_> {
    async fn execute(&self, plan: Plan) -> Result<Action, StoreError> {
        let d = self.deployment;
        if let Some(failure) = &plan.failure {
            tracing::warn!(
                "deployments: {}/{}: {failure}",
                d.metadata.namespace,
                d.metadata.name
            );
            self.tell(Severity::Warning, "ProgressDeadlineExceeded", failure);
        }
        // Only the first pod from zero prefers the node that asked for it.
        let mut preferred = preferred_node(self.deployment, self.from_zero, Utc::now());
        for step in plan.steps {
            match step {
                Step::DeletePod { name, uid } => {
                    if !self.delete_pod(&name, uid).await? {
                        return Ok(Action::Done);
                    }
                }
                Step::CreatePod(revision) => {
                    self.create_pod(&revision, preferred.take()).await?;
                }
                Step::WriteStatus => {
                    if !self.write_status(&plan.status).await? {
                        return Ok(Action::Done);
                    }
                }
                Step::RollBack(revision) => self.roll_back(&revision).await?,
            }
        }
        Ok(plan.then)
    }

    /// Whether the status was written: a conflict or a deletion means
    /// someone changed the Deployment meanwhile, and its event brings us
    /// back with the new state.
    async fn write_status(&self, status: &DeploymentStatus) -> Result<bool, StoreError> {
        let written = self
            .store
            .write(Write::UpdateRead {
                key: key_of(self.deployment),
                object: serde_json::to_value(status).expect("status serializes"),
                part: Part::Status,
                read: self.stored.clone(),
            })
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict { .. } | StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn create_pod(
        &self,
        revision: &Revision,
        preferred_node: Option<String>,
    ) -> Result<(), StoreError> {
        let (key, pod) = pod_object(self.deployment, revision, preferred_node);
        let name = key.name.clone();
        match self.store.write(Write::Create { key, object: pod }).await {
            Ok(_) => {
                let message = format!("created pod {name} (revision {})", revision.revision);
                self.tell(Severity::Normal, "SuccessfulCreate", &message);
                Ok(())
            }
            // A name taken by chance: the next reconcile tries another.
            Err(StoreError::AlreadyExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether the plan goes on: not once the Deployment changed since it
    /// was read (its change brings the controller back).
    async fn delete_pod(&self, name: &str, uid: Option<String>) -> Result<bool, StoreError> {
        let delete = Write::Delete {
            key: ObjectKey::new(Kind::Pod, &self.deployment.metadata.namespace, name),
            expected_revision: None,
            expected_uid: uid,
        };
        // Only while the Deployment is as read: its pods were listed after
        // it, so a pod made since with a change of it (an activation
        // writes the replicas and the first pod together) would otherwise
        // be taken for one too many.
        let revision = self.deployment.metadata.resource_version.as_deref();
        let write = match revision.and_then(|rv| rv.parse().ok()) {
            Some(revision) => Write::All(vec![
                Write::Unchanged {
                    key: key_of(self.deployment),
                    expected_revision: revision,
                },
                delete,
            ]),
            None => delete,
        };
        match self.store.write(write).await {
            Ok(_) => {
                self.tell(
                    Severity::Normal,
                    "SuccessfulDelete",
                    &format!("deleted pod {name}"),
                );
                Ok(true)
            }
            // The Deployment gone (the group's precondition): nothing more
            // to do for it.
            Err(StoreError::NotFound(key)) if key.kind == Kind::Deployment => Ok(false),
            Err(StoreError::NotFound(_) | StoreError::UidMismatch(_)) => Ok(true),
            Err(StoreError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Tells an Event about the Deployment.
    fn tell(&self, severity: Severity, reason: &str, message: &str) {
        let meta = &self.deployment.metadata;
        let involved = InvolvedObject {
            kind: Kind::Deployment.name().to_owned(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            uid: meta.uid.clone().unwrap_or_default(),
        };
        self.events.emit(involved, severity, reason, message);
    }

    async fn roll_back(&self, stable: &Revision) -> Result<(), StoreError> {
        let d = self.deployment;
        tracing::warn!(
            "deployments: {}/{}: rolling back to revision {}",
            d.metadata.namespace,
            d.metadata.name,
            stable.revision
        );
        self.tell(
            Severity::Warning,
            "RolledBack",
            &format!("rolling back to revision {}", stable.revision),
        );
        let Some(current) = self.store.get(&key_of(d)).await? else {
            return Ok(());
        };
        let mut next = current.clone();
        next["spec"]["template"] =
            serde_json::to_value(&stable.template).expect("template serializes");
        let write = Write::UpdateRead {
            key: key_of(d),
            object: next,
            part: Part::Main,
            read: current,
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
    stamp: &str,
) {
    let value = if value { "True" } else { "False" };
    let previous = status.conditions.iter().find(|c| c.condition_type == kind);
    let transition = match previous {
        Some(c) if c.status == value => c.last_transition_time.clone(),
        _ => Some(stamp.to_owned()),
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
    use chrono::TimeZone;
    use skiff_api::kinds::deployment::{
        IntOrPercent, PodTemplate, RollingUpdate, Strategy, StrategyType,
    };
    use skiff_api::kinds::pod::PodStatus;

    /// `seconds` after an arbitrary whole second.
    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    fn template(image: &str) -> PodTemplate {
        let mut template = PodTemplate::default();
        template.spec.image = image.into();
        template
    }

    /// `replicas` of `image`, rolling out one surge pod at a time.
    fn deployment(replicas: u32, image: &str) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = "web".into();
        d.metadata.namespace = "default".into();
        d.metadata.uid = Some("uid-web".into());
        d.metadata.generation = Some(1);
        d.spec.replicas = Some(replicas);
        d.spec.template = template(image);
        d.spec.strategy = Some(Strategy {
            strategy_type: StrategyType::RollingUpdate,
            rolling_update: Some(RollingUpdate {
                max_surge: Some(IntOrPercent::Int(1)),
                max_unavailable: Some(IntOrPercent::Int(0)),
            }),
        });
        d
    }

    fn changed(d: &Deployment, change: impl FnOnce(&mut Deployment)) -> Deployment {
        let mut d = d.clone();
        change(&mut d);
        d
    }

    fn pod(name: &str, image: &str, ready: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = name.into();
        pod.metadata.uid = Some(format!("uid-{name}"));
        pod.metadata
            .labels
            .insert(TEMPLATE_HASH_LABEL.into(), template_hash(&template(image)));
        pod.status = Some(PodStatus {
            phase: PodPhase::Running,
            conditions: vec![Condition {
                condition_type: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                reason: None,
                message: None,
                last_transition_time: None,
                last_heartbeat_time: None,
            }],
            ..Default::default()
        });
        pod
    }

    /// The Deployment as a reconcile at `now` with `pods` left it.
    fn settled(d: &Deployment, pods: &[Pod], now: DateTime<Utc>) -> Deployment {
        changed(d, |d| d.status = Some(plan(d, pods, now).status))
    }

    fn steps(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|step| match step {
                Step::DeletePod { name, .. } => format!("delete {name}"),
                Step::CreatePod(revision) => format!("create r{}", revision.revision),
                Step::WriteStatus => "write status".into(),
                Step::RollBack(revision) => format!("roll back to r{}", revision.revision),
            })
            .collect()
    }

    struct Case {
        name: &'static str,
        deployment: Deployment,
        pods: Vec<Pod>,
        now: DateTime<Utc>,
        steps: &'static [&'static str],
        then: Action,
        /// The current revision and the history's revisions afterwards.
        revision: u32,
        history: &'static [u32],
        /// The Progressing condition's reason afterwards.
        progressing: &'static str,
        gives_up: bool,
    }

    #[test]
    fn no_spec_or_status_leaves_a_plan_without_its_current_revision() {
        // A history limit of 0 once dropped the revision just adopted, and a
        // paused Deployment whose status names a revision it does not hold
        // found none: both ended the controllers in a panic.
        let v1_pods = vec![pod("a", "app:v1", true), pod("b", "app:v1", true)];
        let live = settled(&deployment(2, "app:v1"), &v1_pods, at(0));
        let no_history = changed(&live, |d| {
            d.spec.revision_history_limit = Some(0);
            d.spec.template = template("app:v2");
        });
        let dangling = changed(&deployment(2, "app:v1"), |d| {
            d.spec.paused = true;
            d.status = Some(DeploymentStatus {
                revision: Some(99),
                ..Default::default()
            });
        });
        for deployment in [no_history, dangling] {
            let plan = plan(&deployment, &v1_pods, at(100));
            let current = plan.status.revision.expect("a current revision");
            assert!(
                plan.status.history.iter().any(|r| r.revision == current),
                "{:?}",
                plan.status
            );
        }
    }

    #[test]
    fn reconcile_plans() {
        let requeue = |ms| Action::RequeueAfter(Duration::from_millis(ms));
        let v1_pods = vec![
            pod("a", "app:v1", true),
            pod("b", "app:v1", true),
            pod("c", "app:v1", true),
        ];
        let v2_pods = vec![
            pod("d", "app:v2", true),
            pod("e", "app:v2", true),
            pod("f", "app:v2", true),
        ];
        let live = settled(&deployment(3, "app:v1"), &v1_pods, at(0));
        let to_v2 = changed(&live, |d| d.spec.template = template("app:v2"));
        let mut surged = v1_pods.clone();
        surged.push(pod("g", "app:v2", false));
        let rolling = settled(&to_v2, &surged, at(0));
        let failed = settled(&rolling, &surged, at(600));
        let on_v2 = settled(&to_v2, &v2_pods, at(0));
        let short_history = changed(&live, |d| d.spec.revision_history_limit = Some(1));
        let short_on_v2 = settled(
            &changed(&short_history, |d| d.spec.template = template("app:v2")),
            &v2_pods,
            at(0),
        );
        let cases = vec![
            Case {
                name: "a fresh deployment creates its replicas",
                deployment: deployment(3, "app:v1"),
                pods: vec![],
                now: at(0),
                steps: &["create r1", "create r1", "create r1", "write status"],
                then: requeue(600_050),
                revision: 1,
                history: &[1],
                progressing: "RollingOut",
                gives_up: false,
            },
            Case {
                name: "a settled deployment needs nothing",
                deployment: live.clone(),
                pods: v1_pods.clone(),
                now: at(100),
                steps: &[],
                then: Action::Done,
                revision: 1,
                history: &[1],
                progressing: "NewRevisionAvailable",
                gives_up: false,
            },
            Case {
                name: "scaling up creates pods of the current revision",
                deployment: changed(&live, |d| d.spec.replicas = Some(5)),
                pods: v1_pods.clone(),
                now: at(100),
                steps: &["create r1", "create r1", "write status"],
                then: requeue(600_050),
                revision: 1,
                history: &[1],
                progressing: "RollingOut",
                gives_up: false,
            },
            Case {
                name: "scaling down deletes pods and completes at once",
                deployment: changed(&live, |d| d.spec.replicas = Some(1)),
                pods: v1_pods.clone(),
                now: at(100),
                steps: &["delete a", "delete b", "write status"],
                then: Action::Done,
                revision: 1,
                history: &[1],
                progressing: "NewRevisionAvailable",
                gives_up: false,
            },
            Case {
                name: "a new template surges before any old pod goes",
                deployment: to_v2.clone(),
                pods: v1_pods.clone(),
                now: at(100),
                steps: &["create r2", "write status"],
                then: requeue(600_050),
                revision: 2,
                history: &[1, 2],
                progressing: "RollingOut",
                gives_up: false,
            },
            Case {
                name: "with maxUnavailable an old pod goes while enough stay ready",
                deployment: changed(&to_v2, |d| {
                    d.spec.strategy = Some(Strategy {
                        strategy_type: StrategyType::RollingUpdate,
                        rolling_update: Some(RollingUpdate {
                            max_surge: Some(IntOrPercent::Int(1)),
                            max_unavailable: Some(IntOrPercent::Int(1)),
                        }),
                    });
                }),
                pods: v1_pods.clone(),
                now: at(100),
                steps: &["delete a", "create r2", "write status"],
                then: requeue(600_050),
                revision: 2,
                history: &[1, 2],
                progressing: "RollingOut",
                gives_up: false,
            },
            Case {
                name: "a rollout waiting within its deadline only requeues",
                deployment: rolling.clone(),
                pods: surged.clone(),
                now: at(60),
                steps: &[],
                then: requeue(540_050),
                revision: 2,
                history: &[1, 2],
                progressing: "RollingOut",
                gives_up: false,
            },
            Case {
                name: "past its deadline a rollout fails and rolls back",
                deployment: rolling.clone(),
                pods: surged.clone(),
                now: at(600),
                steps: &["write status", "roll back to r1"],
                then: Action::Done,
                revision: 2,
                history: &[1, 2],
                progressing: "ProgressDeadlineExceeded",
                gives_up: true,
            },
            Case {
                name: "past its deadline without autoRollback a rollout only fails",
                deployment: changed(&rolling, |d| d.spec.auto_rollback = Some(false)),
                pods: surged.clone(),
                now: at(600),
                steps: &["write status"],
                then: Action::Done,
                revision: 2,
                history: &[1, 2],
                progressing: "ProgressDeadlineExceeded",
                gives_up: true,
            },
            Case {
                name: "a failed rollout is given up on once",
                deployment: failed.clone(),
                pods: surged.clone(),
                now: at(1200),
                steps: &[],
                then: Action::Done,
                revision: 2,
                history: &[1, 2],
                progressing: "ProgressDeadlineExceeded",
                gives_up: false,
            },
            Case {
                name: "a template seen before becomes a new revision",
                deployment: changed(&on_v2, |d| d.spec.template = template("app:v1")),
                pods: v2_pods.clone(),
                now: at(100),
                steps: &["create r3", "write status"],
                then: requeue(600_050),
                revision: 3,
                history: &[2, 3],
                progressing: "RollingOut",
                gives_up: false,
            },
            Case {
                name: "the oldest revision beyond the history limit goes",
                deployment: changed(&short_on_v2, |d| d.spec.template = template("app:v3")),
                pods: v2_pods.clone(),
                now: at(100),
                steps: &["create r3", "write status"],
                then: requeue(600_050),
                revision: 3,
                history: &[2, 3],
                progressing: "RollingOut",
                gives_up: false,
            },
            Case {
                name: "a paused rollout keeps its revision and replaces lost pods",
                deployment: changed(&to_v2, |d| d.spec.paused = true),
                pods: v1_pods[..2].to_vec(),
                now: at(100),
                steps: &["create r1", "write status"],
                then: Action::Done,
                revision: 1,
                history: &[1],
                progressing: "DeploymentPaused",
                gives_up: false,
            },
        ];
        for case in cases {
            let plan = plan(&case.deployment, &case.pods, case.now);
            let name = case.name;
            assert_eq!(steps(&plan), case.steps, "{name}: steps");
            assert_eq!(plan.then, case.then, "{name}: then");
            assert_eq!(
                plan.status.revision,
                Some(case.revision),
                "{name}: revision"
            );
            let history: Vec<u32> = plan.status.history.iter().map(|r| r.revision).collect();
            assert_eq!(history, case.history, "{name}: history");
            let progressing = plan
                .status
                .conditions
                .iter()
                .find(|c| c.condition_type == "Progressing")
                .and_then(|c| c.reason.as_deref());
            assert_eq!(progressing, Some(case.progressing), "{name}: Progressing");
            assert_eq!(plan.failure.is_some(), case.gives_up, "{name}: given up");
        }
    }

    #[test]
    fn a_rollback_restores_the_stable_template_and_records_the_failure() {
        let live = settled(&deployment(1, "app:v1"), &[pod("a", "app:v1", true)], at(0));
        let pods = [pod("a", "app:v1", true), pod("b", "app:v2", false)];
        let rolling = settled(
            &changed(&live, |d| d.spec.template = template("app:v2")),
            &pods,
            at(0),
        );
        let plan = plan(&rolling, &pods, at(600));
        let Some(Step::RollBack(stable)) = plan.steps.last() else {
            panic!("no rollback: {:?}", plan.steps);
        };
        assert_eq!(stable.template, template("app:v1"));
        let failure = plan.status.history[1].failure.as_deref().unwrap();
        assert!(failure.starts_with("progress deadline exceeded: 0 of 1 pods of revision 2"));
    }

    #[test]
    fn only_a_fresh_activation_from_zero_prefers_its_node() {
        use crate::controllers::autoscaler::{ACTIVATED_ANNOTATION, ACTIVATED_ON_ANNOTATION};
        let activated = |second: i64, on: Option<&str>| {
            changed(&deployment(1, "a"), |d| {
                let annotations = &mut d.metadata.annotations;
                annotations.insert(
                    ACTIVATED_ANNOTATION.into(),
                    at(second).to_rfc3339_opts(SecondsFormat::Millis, true),
                );
                if let Some(node) = on {
                    annotations.insert(ACTIVATED_ON_ANNOTATION.into(), node.into());
                }
            })
        };
        let by_n2 = activated(100, Some("n2"));
        assert_eq!(preferred_node(&by_n2, true, at(101)), Some("n2".into()));
        // Pods already there: a scale-up, not a start from zero.
        assert_eq!(preferred_node(&by_n2, false, at(101)), None);
        // Long after: some other reason to scale.
        assert_eq!(preferred_node(&by_n2, true, at(200)), None);
        // A tenant's activation names no node.
        assert_eq!(preferred_node(&activated(100, None), true, at(101)), None);
        assert_eq!(preferred_node(&deployment(1, "a"), true, at(101)), None);
    }

    #[test]
    fn old_pods_are_deleted_by_name_and_uid() {
        let live = settled(&deployment(1, "app:v1"), &[pod("a", "app:v1", true)], at(0));
        let plan = plan(
            &changed(&live, |d| d.spec.replicas = Some(0)),
            &[pod("a", "app:v1", true)],
            at(1),
        );
        assert_eq!(
            plan.steps[0],
            Step::DeletePod {
                name: "a".into(),
                uid: Some("uid-a".into())
            }
        );
    }

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
