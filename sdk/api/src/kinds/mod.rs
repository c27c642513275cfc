//! The kinds of the API, and admission: turning submitted JSON into a
//! checked, defaulted object, or into field-path errors.

pub mod account;
pub mod cluster;
pub mod config;
pub mod deployment;
pub mod event;
pub mod pod;
pub mod quota;
pub mod service;

use std::fmt;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::meta::{API_VERSION, ObjectMeta};
use crate::validate::{FieldError, Validator};

/// An object with a spec and a status: every kind but Secret and ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(bound = "S: JsonSchema + Default + Serialize, T: JsonSchema")]
pub struct Object<S, T> {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: S,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<T>,
}

/// Every kind the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Deployment,
    Service,
    Route,
    Secret,
    ConfigMap,
    ResourceQuota,
    ServiceAccount,
    Event,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Deployment,
        Kind::Service,
        Kind::Route,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::ResourceQuota,
        Kind::ServiceAccount,
        Kind::Event,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::Route => "Route",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::ResourceQuota => "ResourceQuota",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Event => "Event",
        }
    }

    /// The path segment: `pods`.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::Deployment => "deployments",
            Kind::Service => "services",
            Kind::Route => "routes",
            Kind::Secret => "secrets",
            Kind::ConfigMap => "configmaps",
            Kind::ResourceQuota => "resourcequotas",
            Kind::ServiceAccount => "serviceaccounts",
            Kind::Event => "events",
        }
    }

    /// The short name `wasmctl` and kubectl take: `po`, `deploy`.
    pub fn short_name(self) -> &'static str {
        match self {
            Kind::Namespace => "ns",
            Kind::Node => "no",
            Kind::Pod => "po",
            Kind::Deployment => "deploy",
            Kind::Service => "svc",
            Kind::Route => "rt",
            Kind::Secret => "secret",
            Kind::ConfigMap => "cm",
            Kind::ResourceQuota => "quota",
            Kind::ServiceAccount => "sa",
            Kind::Event => "ev",
        }
    }

    /// Namespaces and Nodes are cluster-scoped; everything else lives in a
    /// namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// Whether the kind has a `status` written through `/status`. A
    /// ResourceQuota's status is what its namespace uses, computed when it
    /// is read, never written.
    pub fn has_status(self) -> bool {
        !matches!(
            self,
            Kind::Secret
                | Kind::ConfigMap
                | Kind::ResourceQuota
                | Kind::ServiceAccount
                | Kind::Event
        )
    }

    /// Fields a `fieldSelector` may name for this kind.
    pub fn selectable_fields(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "status.phase",
            ],
            Kind::Namespace | Kind::Node => &["metadata.name"],
            Kind::Event => &[
                "metadata.name",
                "metadata.namespace",
                "involvedObject.kind",
                "involvedObject.name",
                "involvedObject.namespace",
                "involvedObject.uid",
                "reason",
                "type",
            ],
            _ => &["metadata.name", "metadata.namespace"],
        }
    }

    /// By kind name (`Pod`), plural (`pods`), singular (`pod`) or short
    /// name (`po`), in any case.
    pub fn parse(text: &str) -> Option<Kind> {
        let lower = text.to_ascii_lowercase();
        Kind::ALL.into_iter().find(|k| {
            let name = k.name().to_ascii_lowercase();
            lower == name || lower == k.plural() || lower == k.short_name()
        })
    }

    pub fn from_plural(plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.plural() == plural)
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a submitted object was refused. Each variant names the field.
#[derive(Debug, Clone, PartialEq)]
pub enum AdmitError {
    /// The JSON does not have the kind's shape: a wrong type, an unknown
    /// field, a missing required field.
    Shape { field: String, message: String },
    /// The shape is right but values are not.
    Invalid(Vec<FieldError>),
}

impl AdmitError {
    pub fn causes(&self) -> Vec<FieldError> {
        match self {
            AdmitError::Shape { field, message } => vec![FieldError {
                field: field.clone(),
                message: message.clone(),
            }],
            AdmitError::Invalid(errors) => errors.clone(),
        }
    }
}

impl fmt::Display for AdmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let causes: Vec<String> = self.causes().iter().map(ToString::to_string).collect();
        f.write_str(&causes.join("; "))
    }
}

impl std::error::Error for AdmitError {}

/// What admission needs of a kind's Rust type.
trait Admissible: Serialize + DeserializeOwned {
    fn meta(&self) -> &ObjectMeta;
    fn validate(&self, v: &mut Validator);
    fn set_defaults(&mut self) {}
}

/// The parts of [`Admissible`] that belong to a spec.
trait SpecRules {
    fn validate_spec(&self, _v: &mut Validator) {}
    fn set_spec_defaults(&mut self) {}
}

impl<S, T> Admissible for Object<S, T>
where
    S: SpecRules + Serialize + DeserializeOwned + Default,
    T: Serialize + DeserializeOwned + Default,
{
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn validate(&self, v: &mut Validator) {
        self.spec.validate_spec(v);
    }
    fn set_defaults(&mut self) {
        self.spec.set_spec_defaults();
    }
}

impl SpecRules for cluster::NamespaceSpec {
    fn validate_spec(&self, v: &mut Validator) {
        for error in crate::policy::validate_policy(&self.policy, "spec.policy") {
            v.error(error.field, error.message);
        }
    }
}
impl SpecRules for cluster::NodeSpec {
    fn validate_spec(&self, v: &mut Validator) {
        self.validate(v);
    }
}
impl SpecRules for pod::PodSpec {
    fn validate_spec(&self, v: &mut Validator) {
        self.validate(v, "spec");
    }
    fn set_spec_defaults(&mut self) {
        self.set_defaults();
    }
}
impl SpecRules for deployment::DeploymentSpec {
    fn validate_spec(&self, v: &mut Validator) {
        self.validate(v);
    }
    fn set_spec_defaults(&mut self) {
        self.set_defaults();
    }
}
impl SpecRules for service::ServiceSpec {
    fn validate_spec(&self, v: &mut Validator) {
        self.validate(v);
    }
}
impl SpecRules for service::RouteSpec {
    fn validate_spec(&self, v: &mut Validator) {
        self.validate(v);
    }
    fn set_spec_defaults(&mut self) {
        self.set_defaults();
    }
}

impl SpecRules for quota::ResourceQuotaSpec {
    fn validate_spec(&self, v: &mut Validator) {
        self.validate(v);
    }
}

impl SpecRules for account::ServiceAccountSpec {
    fn validate_spec(&self, v: &mut Validator) {
        self.validate(v);
    }
}

impl Admissible for config::Secret {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn validate(&self, v: &mut Validator) {
        config::Secret::validate(self, v);
    }
    fn set_defaults(&mut self) {
        config::Secret::set_defaults(self);
    }
}

impl Admissible for config::ConfigMap {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn validate(&self, v: &mut Validator) {
        config::ConfigMap::validate(self, v);
    }
}

impl Admissible for event::Event {
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn validate(&self, v: &mut Validator) {
        event::Event::validate(self, v);
    }
}

/// Checks a submitted object of `kind` and returns it normalised: unknown
/// fields refused, values validated, defaults filled in.
pub fn admit(kind: Kind, object: Value) -> Result<Value, AdmitError> {
    check_type_meta(kind, &object)?;
    match kind {
        Kind::Namespace => admit_as::<cluster::Namespace>(object),
        Kind::Node => admit_as::<cluster::Node>(object),
        Kind::Pod => admit_as::<pod::Pod>(object),
        Kind::Deployment => admit_as::<deployment::Deployment>(object),
        Kind::Service => admit_as::<service::Service>(object),
        Kind::Route => admit_as::<service::Route>(object),
        Kind::Secret => admit_as::<config::Secret>(object),
        Kind::ConfigMap => admit_as::<config::ConfigMap>(object),
        Kind::ResourceQuota => admit_as::<quota::ResourceQuota>(object),
        Kind::ServiceAccount => admit_as::<account::ServiceAccount>(object),
        Kind::Event => admit_as::<event::Event>(object),
    }
}

/// Checks a submitted `status` of `kind` and returns it normalised.
pub fn admit_status(kind: Kind, status: Value) -> Result<Value, AdmitError> {
    let checked = match kind {
        Kind::Namespace => decode_at::<cluster::NamespaceStatus>(status, "status").map(to_value)?,
        Kind::Node => {
            let status = decode_at::<cluster::NodeStatus>(status, "status")?;
            let mut v = Validator::default();
            status.validate(&mut v);
            v.finish().map_err(AdmitError::Invalid)?;
            to_value(status)
        }
        Kind::Pod => decode_at::<pod::PodStatus>(status, "status").map(to_value)?,
        Kind::Deployment => {
            decode_at::<deployment::DeploymentStatus>(status, "status").map(to_value)?
        }
        Kind::Service => decode_at::<service::ServiceStatus>(status, "status").map(to_value)?,
        Kind::Route => decode_at::<service::RouteStatus>(status, "status").map(to_value)?,
        Kind::Secret
        | Kind::ConfigMap
        | Kind::ResourceQuota
        | Kind::ServiceAccount
        | Kind::Event => {
            return Err(AdmitError::Shape {
                field: "status".into(),
                message: format!("{kind} has no status"),
            });
        }
    };
    Ok(checked)
}

fn check_type_meta(kind: Kind, object: &Value) -> Result<(), AdmitError> {
    let shape = |field: &str, message: String| AdmitError::Shape {
        field: field.into(),
        message,
    };
    if !object.is_object() {
        return Err(shape("", "must be a JSON object".into()));
    }
    match object.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(shape(
                "apiVersion",
                format!("must be {API_VERSION}, not {other}"),
            ));
        }
        None => return Err(shape("apiVersion", format!("is required ({API_VERSION})"))),
    }
    match object.get("kind").and_then(Value::as_str) {
        Some(name) if name == kind.name() => Ok(()),
        Some(other) => Err(shape("kind", format!("must be {kind} here, not {other}"))),
        None => Err(shape("kind", format!("is required ({kind})"))),
    }
}

fn admit_as<T: Admissible>(object: Value) -> Result<Value, AdmitError> {
    let mut typed: T = decode_at(object, "")?;
    let mut v = Validator::default();
    typed.meta().validate(&mut v);
    typed.validate(&mut v);
    v.finish().map_err(AdmitError::Invalid)?;
    typed.set_defaults();
    Ok(to_value(typed))
}

/// Deserialises with the path of the first problem, prefixed with `at`.
/// Whole numbers written as floats are read as integers first (see
/// [`whole_floats_as_integers`]).
fn decode_at<T: DeserializeOwned>(mut value: Value, at: &str) -> Result<T, AdmitError> {
    whole_floats_as_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (at, path.as_str()) {
            (at, ".") => at.to_owned(),
            ("", path) => path.to_owned(),
            (at, path) => format!("{at}.{path}"),
        };
        AdmitError::Shape {
            field,
            message: e.into_inner().to_string(),
        }
    })
}

/// Rewrites every whole-number float in `value` (`3.0`, `-2.0`, `1e3`)
/// that fits an `i64` or `u64` as that integer. JSON Schema, and so the
/// OpenAPI document, counts `3.0` as the integer 3, and some clients
/// write whole numbers that way; serde refuses any float for an integer
/// field. A fraction, or a whole number too large for 64 bits, stays a
/// float, and the integer field it lands in refuses it by name.
pub fn whole_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            let Some(f) = n.as_f64() else { return };
            if f.fract() != 0.0 {
                return;
            }
            // `i64::MAX as f64` and `u64::MAX as f64` round up to 2^63 and
            // 2^64, which do not fit: the upper bounds are exclusive.
            if f >= i64::MIN as f64 && f < i64::MAX as f64 {
                *value = Value::from(f as i64);
            } else if f >= 0.0 && f < u64::MAX as f64 {
                *value = Value::from(f as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_floats_as_integers),
        Value::Object(fields) => fields.values_mut().for_each(whole_floats_as_integers),
        _ => {}
    }
}

fn to_value<T: Serialize>(typed: T) -> Value {
    serde_json::to_value(typed).expect("API types always serialise")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "skiff.dev/v1", "kind": "Pod", "metadata": {"name": "web"}, "spec": spec})
    }

    fn error_of(kind: Kind, object: Value) -> String {
        admit(kind, object).unwrap_err().to_string()
    }

    #[test]
    fn a_valid_pod_gets_defaults() {
        let admitted = admit(Kind::Pod, pod(json!({"image": "127.0.0.1:5000/hello:v1"}))).unwrap();
        assert_eq!(admitted["spec"]["resources"]["memory"], "128Mi");
        assert_eq!(admitted["spec"]["resources"]["timeout"], "30s");
        assert_eq!(admitted["spec"]["resources"]["maxInstances"], 100);
        assert_eq!(admitted["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn field_paths_name_the_problem() {
        let cases = [
            (
                pod(json!({"image": "x", "resources": {"memory": "512Ki"}})),
                "spec.resources.memory: must be at least 1Mi",
            ),
            (
                pod(json!({"image": "x", "resources": {"memroy": "1Mi"}})),
                "spec.resources.memroy: unknown field `memroy`, expected one of `memory`",
            ),
            (pod(json!({})), "spec.image: is required"),
            (
                pod(json!({"image": "x", "restartPolicy": "Sometimes"})),
                "spec.restartPolicy: unknown variant `Sometimes`",
            ),
            (
                pod(
                    json!({"image": "x", "env": [{"name": "A", "value": "1", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
                ),
                "spec.env[0]: may have value or valueFrom, not both",
            ),
            (
                pod(json!({"image": "x", "allowOutbound": ["ftp://x"]})),
                "spec.allowOutbound[0]: invalid outbound rule `ftp://x`",
            ),
            (
                pod(json!({"image": "x", "ports": [{"port": 70000}]})),
                "spec.ports[0].port: must be between 1 and 65535",
            ),
        ];
        for (object, want) in cases {
            let got = error_of(Kind::Pod, object);
            assert!(got.starts_with(want), "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn routes_may_not_claim_the_clusters_own_hosts() {
        let route = |host: &str| {
            json!({
                "apiVersion": "skiff.dev/v1", "kind": "Route",
                "metadata": {"name": "r", "namespace": "shop"},
                "spec": {"host": host, "service": "web"},
            })
        };
        for host in ["n1.node", "*.node", "web.shop.pod", "*.svc", "api.shop.svc"] {
            let got = error_of(Kind::Route, route(host));
            assert!(
                got.starts_with("spec.host: hosts under .") && got.contains("the cluster's own"),
                "{host}: {got}"
            );
        }
        for host in [
            "shop.example.com",
            "*.example.com",
            "node.example.com",
            "pod",
        ] {
            assert!(admit(Kind::Route, route(host)).is_ok(), "{host}");
        }
    }

    #[test]
    fn names_labels_and_type_meta_are_checked() {
        let mut object = pod(json!({"image": "x"}));
        object["metadata"]["name"] = json!("Not_A_Label");
        assert!(error_of(Kind::Pod, object).starts_with("metadata.name: must be a DNS label"));

        let mut object = pod(json!({"image": "x"}));
        object["metadata"]["labels"] = json!({"app": "bad value"});
        assert!(error_of(Kind::Pod, object).starts_with("metadata.labels[app]:"));

        let mut object = pod(json!({"image": "x"}));
        object["apiVersion"] = json!("v1");
        assert_eq!(
            error_of(Kind::Pod, object),
            "apiVersion: must be skiff.dev/v1, not v1"
        );

        let object = pod(json!({"image": "x"}));
        assert_eq!(
            error_of(Kind::Service, object),
            "kind: must be Service here, not Pod"
        );
    }

    #[test]
    fn every_error_is_reported_not_just_the_first() {
        let object = pod(json!({"image": "", "resources": {"memory": "1Ki", "maxInstances": 0}}));
        let AdmitError::Invalid(errors) = admit(Kind::Pod, object).unwrap_err() else {
            panic!("expected field errors");
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.image",
                "spec.resources.memory",
                "spec.resources.maxInstances"
            ]
        );
    }

    #[test]
    fn deployments_need_a_selector_matching_the_template() {
        let object = json!({
            "apiVersion": "skiff.dev/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"image": "x"}}}
        });
        assert_eq!(
            error_of(Kind::Deployment, object),
            "spec.template.metadata.labels: must match spec.selector"
        );
        let object = json!({
            "apiVersion": "skiff.dev/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"image": "x"}}}
        });
        let admitted = admit(Kind::Deployment, object).unwrap();
        assert_eq!(admitted["spec"]["replicas"], 1);
        assert_eq!(
            admitted["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
            "25%"
        );
        assert_eq!(
            admitted["spec"]["template"]["spec"]["resources"]["memory"],
            "128Mi"
        );
    }

    #[test]
    fn whole_numbers_written_as_floats_are_integers() {
        let deployment = |replicas: Value| {
            json!({
                "apiVersion": "skiff.dev/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"image": "x"}}}
            })
        };
        let admitted = admit(Kind::Deployment, deployment(json!(3.0))).unwrap();
        assert_eq!(admitted["spec"]["replicas"], json!(3));
        assert!(admitted["spec"]["replicas"].is_u64());
        let err = error_of(Kind::Deployment, deployment(json!(3.5)));
        assert!(
            err.starts_with("spec.replicas: invalid type: floating point `3.5`"),
            "{err}"
        );
        // Too large for any integer: still a float, refused by name.
        let err = error_of(Kind::Deployment, deployment(json!(1e20)));
        assert!(err.starts_with("spec.replicas: "), "{err}");
        // Statuses too.
        let status = admit_status(Kind::Pod, json!({"restartCount": 2.0})).unwrap();
        assert_eq!(status["restartCount"], json!(2));

        let mut value = json!({"a": [-2.0, 1e3, 0.5, 7], "b": 9.3e18, "c": 1.9e19});
        whole_floats_as_integers(&mut value);
        assert_eq!(
            value,
            json!({"a": [-2, 1000, 0.5, 7], "b": 9_300_000_000_000_000_000_u64, "c": 1.9e19})
        );
    }

    #[test]
    fn secrets_fold_string_data_into_data() {
        let object = json!({
            "apiVersion": "skiff.dev/v1", "kind": "Secret", "metadata": {"name": "keys"},
            "stringData": {"api": "s3cret"}
        });
        let admitted = admit(Kind::Secret, object).unwrap();
        assert_eq!(admitted["data"]["api"], "czNjcmV0");
        assert!(admitted.get("stringData").is_none());
        assert_eq!(admitted["type"], "Opaque");
    }

    #[test]
    fn data_keys_that_would_name_a_directory_are_refused() {
        for key in [".", "..", "a/b", "", "ключ"] {
            for kind in [Kind::Secret, Kind::ConfigMap] {
                let object = json!({
                    "apiVersion": "skiff.dev/v1", "kind": kind.name(), "metadata": {"name": "k"},
                    "data": {key: ""},
                });
                let err = admit(kind, object).unwrap_err().to_string();
                assert!(
                    err.starts_with(&format!("data[{key}]: key must")),
                    "{key}: {err}"
                );
            }
        }
        assert_eq!(
            crate::kinds::config::data_key(".."),
            Err("key must not be `.` or `..`")
        );
        assert_eq!(crate::kinds::config::data_key(".hidden.env"), Ok(()));
    }

    #[test]
    fn statuses_are_checked_with_their_path() {
        let err = admit_status(Kind::Pod, json!({"phase": "Sleeping"})).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("status.phase: unknown variant `Sleeping`"),
            "{err}"
        );
        assert!(admit_status(Kind::Secret, json!({})).is_err());
        assert_eq!(
            admit_status(Kind::Pod, json!({"phase": "Running"})).unwrap()["phase"],
            "Running"
        );
    }

    #[test]
    fn kinds_parse_from_any_common_spelling() {
        for (text, kind) in [
            ("pods", Kind::Pod),
            ("Pod", Kind::Pod),
            ("po", Kind::Pod),
            ("deploy", Kind::Deployment),
            ("svc", Kind::Service),
            ("ns", Kind::Namespace),
            ("configmap", Kind::ConfigMap),
        ] {
            assert_eq!(Kind::parse(text), Some(kind), "{text}");
        }
        assert_eq!(Kind::parse("gizmos"), None);
    }
}
