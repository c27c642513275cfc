//! Deployment: replicas of a pod template, rolled out revision by revision.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Object;
use super::pod::{Condition, PodSpec};
use crate::selector::LabelSelector;
use crate::validate::{Validator, validate_labels};

pub type Deployment = Object<DeploymentSpec, DeploymentStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u32>,
    /// Must match the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplate,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Old revisions kept for rollback (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<u32>,
    /// A rollout that makes no progress for this long fails (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub progress_deadline_seconds: Option<u32>,
    /// Roll back to the last good revision when a rollout fails (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_rollback: Option<bool>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// When set, the autoscaler owns `replicas`: it sets them from the
    /// concurrency the nodes observe, down to zero if `minReplicas` is 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

/// How the autoscaler sizes a Deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    /// At least this many pods, 0 for scale to zero (default 0); at most
    /// `maxReplicas`.
    #[serde(default)]
    #[schemars(range(max = 10000))]
    pub min_replicas: u32,
    /// At most this many pods.
    #[schemars(range(min = 1, max = 10000))]
    pub max_replicas: u32,
    /// In-flight requests per pod the autoscaler aims at (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_concurrency: Option<u32>,
    /// How long a lower load must last before pods are removed, and how
    /// long without any request before the last goes (default `30s`).
    /// At most `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(
        r"^(0|[1-9][0-9]{0,5}ms|([1-9][0-9]{0,2}|[12][0-9]{3}|3[0-5][0-9]{2}|3600)s?|([1-9]|[1-5][0-9]|60)m|1h)$"
    ))]
    pub scale_down_delay: Option<String>,
}

/// Default of `spec.autoscaling.targetConcurrency`.
pub const DEFAULT_TARGET_CONCURRENCY: u32 = 100;
/// Default of `spec.autoscaling.scaleDownDelay`.
pub const DEFAULT_SCALE_DOWN_DELAY: &str = "30s";
/// The longest `scaleDownDelay`.
pub const MAX_SCALE_DOWN_DELAY: std::time::Duration = std::time::Duration::from_secs(3600);

impl Autoscaling {
    pub fn target(&self) -> u32 {
        self.target_concurrency
            .unwrap_or(DEFAULT_TARGET_CONCURRENCY)
            .max(1)
    }

    pub fn delay(&self) -> std::time::Duration {
        self.scale_down_delay
            .as_deref()
            .and_then(|d| crate::quantity::parse_duration(d).ok())
            .unwrap_or(std::time::Duration::from_secs(30))
    }

    /// `n` brought within `minReplicas..=maxReplicas`.
    pub fn clamp(&self, n: u32) -> u32 {
        n.clamp(self.min_replicas, self.max_replicas.max(self.min_replicas))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodTemplate {
    #[serde(default)]
    pub metadata: TemplateMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateMeta {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::validate::label_map_schema")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::validate::annotation_map_schema")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Strategy {
    #[serde(rename = "type", default)]
    pub strategy_type: StrategyType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StrategyType {
    #[default]
    RollingUpdate,
    Recreate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdate {
    /// Pods above `replicas` during a rollout: a count or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrPercent>,
    /// Pods below `replicas` during a rollout: a count or a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
}

/// `3` or `"25%"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum IntOrPercent {
    Int(u32),
    Percent(String),
}

impl IntOrPercent {
    /// The absolute number for `total` replicas, rounding percentages up
    /// (`round_up`, for surge) or down (for unavailability).
    pub fn resolve(&self, total: u32, round_up: bool) -> Option<u32> {
        match self {
            Self::Int(n) => Some(*n),
            Self::Percent(p) => {
                let percent: u32 = p.strip_suffix('%')?.parse().ok().filter(|p| *p <= 100)?;
                let scaled = total * percent;
                Some(if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                })
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub replicas: u32,
    #[serde(default)]
    pub updated_replicas: u32,
    #[serde(default)]
    pub ready_replicas: u32,
    #[serde(default)]
    pub available_replicas: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The revision being rolled out, or rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    /// The last revision that had every replica available: where a failed
    /// rollout goes back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<u32>,
    /// When the rollout last made progress (RFC 3339); the progress deadline
    /// counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressed_at: Option<String>,
    /// Revisions, oldest first; the current one and up to
    /// `revisionHistoryLimit` before it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Revision>,
}

/// One pod template the Deployment has rolled out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Revision {
    pub revision: u32,
    /// Labels the revision's pods (`skiff.dev/template-hash`).
    pub template_hash: String,
    pub template: PodTemplate,
    /// RFC 3339.
    pub created: String,
    /// The Deployment's `skiff.dev/change-cause` annotation at the time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_cause: Option<String>,
    /// Why the revision's rollout failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// Label on every pod of a Deployment naming its template's hash.
pub const TEMPLATE_HASH_LABEL: &str = "skiff.dev/template-hash";
/// Annotation whose value is recorded as a revision's change cause.
pub const CHANGE_CAUSE_ANNOTATION: &str = "skiff.dev/change-cause";

impl DeploymentSpec {
    pub fn set_defaults(&mut self) {
        match &mut self.autoscaling {
            // A function starts with one pod (it has just been deployed,
            // someone is about to call it) and the autoscaler goes on from
            // there.
            Some(autoscaling) => {
                autoscaling
                    .target_concurrency
                    .get_or_insert(DEFAULT_TARGET_CONCURRENCY);
                autoscaling
                    .scale_down_delay
                    .get_or_insert_with(|| DEFAULT_SCALE_DOWN_DELAY.into());
                let initial = autoscaling.clamp(self.replicas.unwrap_or(1));
                self.replicas = Some(initial);
            }
            None => {
                self.replicas.get_or_insert(1);
            }
        }
        self.revision_history_limit.get_or_insert(10);
        self.progress_deadline_seconds.get_or_insert(600);
        self.auto_rollback.get_or_insert(true);
        let strategy = self.strategy.get_or_insert(Strategy {
            strategy_type: StrategyType::RollingUpdate,
            rolling_update: None,
        });
        if strategy.strategy_type == StrategyType::RollingUpdate {
            let rolling = strategy.rolling_update.get_or_insert(RollingUpdate {
                max_surge: None,
                max_unavailable: None,
            });
            rolling
                .max_surge
                .get_or_insert_with(|| IntOrPercent::Percent("25%".into()));
            rolling
                .max_unavailable
                .get_or_insert_with(|| IntOrPercent::Percent("25%".into()));
        }
        self.template.spec.set_defaults();
    }

    pub fn validate(&self, v: &mut Validator) {
        if self.selector.is_empty() {
            v.error("spec.selector", "is required");
        } else {
            self.selector.validate(v, "spec.selector");
            if !self.selector.matches(&self.template.metadata.labels) {
                v.error("spec.template.metadata.labels", "must match spec.selector");
            }
        }
        validate_labels(
            v,
            "spec.template.metadata.labels",
            &self.template.metadata.labels,
        );
        self.template.spec.validate(v, "spec.template.spec");
        if !self.template.spec.node_name.is_empty() {
            v.error(
                "spec.template.spec.nodeName",
                "must be empty: the scheduler places pods",
            );
        }
        if let Some(autoscaling) = &self.autoscaling {
            autoscaling.validate(v, "spec.autoscaling");
        }
        if self.progress_deadline_seconds == Some(0) {
            v.error("spec.progressDeadlineSeconds", "must be at least 1");
        }
        if let Some(rolling) = self
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
        {
            let check = |v: &mut Validator, name: &str, value: &Option<IntOrPercent>| {
                if let Some(value) = value
                    && value.resolve(100, true).is_none()
                {
                    v.error(
                        format!("spec.strategy.rollingUpdate.{name}"),
                        "must be a whole number or a percentage from 0% to 100%",
                    );
                }
            };
            check(v, "maxSurge", &rolling.max_surge);
            check(v, "maxUnavailable", &rolling.max_unavailable);
            let zero = |value: &Option<IntOrPercent>| {
                value.as_ref().and_then(|x| x.resolve(100, true)) == Some(0)
            };
            if zero(&rolling.max_surge) && zero(&rolling.max_unavailable) {
                v.error(
                    "spec.strategy.rollingUpdate",
                    "maxSurge and maxUnavailable cannot both be 0",
                );
            }
        }
    }
}

impl Autoscaling {
    pub fn validate(&self, v: &mut Validator, at: &str) {
        if self.max_replicas == 0 {
            v.error(format!("{at}.maxReplicas"), "must be at least 1");
        } else if self.max_replicas > 10_000 {
            v.error(format!("{at}.maxReplicas"), "must be at most 10000");
        }
        if self.min_replicas > self.max_replicas {
            v.error(
                format!("{at}.minReplicas"),
                format!("must not exceed maxReplicas ({})", self.max_replicas),
            );
        }
        if self.target_concurrency == Some(0) {
            v.error(format!("{at}.targetConcurrency"), "must be at least 1");
        }
        if let Some(delay) = &self.scale_down_delay {
            match crate::quantity::parse_duration(delay) {
                Err(e) => v.error(format!("{at}.scaleDownDelay"), e.to_string()),
                Ok(d) if d > MAX_SCALE_DOWN_DELAY => {
                    v.error(format!("{at}.scaleDownDelay"), "must be at most 1h")
                }
                Ok(_) => {}
            }
        }
    }
}
