//! Service (a stable name over pods selected by labels) and Route (host and
//! path to a Service, served by every node's ingress).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Object;
use super::pod::Protocol;
use crate::validate::{
    Validator, dns_label, dns_subdomain, label_key, label_value, validate_dns_label,
};

pub type Service = Object<ServiceSpec, ServiceStatus>;
pub type Route = Object<RouteSpec, RouteStatus>;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// Pods with all these labels are the Service's endpoints.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::validate::label_map_schema")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    /// Namespaces whose pods may call the Service (`*` for every one);
    /// its own namespace always may. Closed to others by default: a
    /// caller's `allowOutbound` never opens another namespace's Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(
        length(max = 63),
        pattern(r"^(\*|[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)$")
    ))]
    pub allowed_callers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 63), pattern(crate::validate::DNS_LABEL_OR_EMPTY_PATTERN))]
    pub name: String,
    #[schemars(range(min = 1, max = 65535))]
    pub port: u32,
    /// The pod port requests go to; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<u32>,
    #[serde(default)]
    pub protocol: Protocol,
}

/// Written by the endpoints controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceStatus {
    /// The selected pods that are Ready, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,
    /// Selected pods that are not Ready (yet, or any more).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_ready: u32,
    /// An autoscaled Deployment that may have no pods sits behind the
    /// Service: with no endpoint, nodes hold its requests and have a pod
    /// started, rather than answer 503.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub scales_from_zero: bool,
    /// While no selected pod is Ready: why one of them cannot start (its
    /// image cannot be pulled, it crash-loops), which is what held
    /// requests are answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A Ready pod behind a Service, and the node ingress that serves it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    pub pod: String,
    pub node: String,
    /// The node's ingress, `host:port`.
    pub address: String,
}

/// A Route's `spec.host`: empty (any host), or a route host
/// ([`super::cluster::ROUTE_HOST_PATTERN`]).
pub const ROUTE_HOST_OR_EMPTY_PATTERN: &str =
    r"^((\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*)?$";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteSpec {
    /// Host the route answers for (`Host` header); any host when empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253), pattern(ROUTE_HOST_OR_EMPTY_PATTERN))]
    pub host: String,
    /// Path prefix; default `/`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(pattern(r"^(/[^\u0000]*)?$"))]
    pub path: String,
    /// The Service (same namespace) requests go to.
    #[serde(default)]
    #[schemars(length(min = 1, max = 63), pattern(crate::validate::DNS_LABEL_PATTERN))]
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteStatus {}

impl ServiceSpec {
    pub fn validate(&self, v: &mut Validator) {
        for (key, value) in &self.selector {
            if let Err(reason) = label_key(key).and_then(|()| label_value(value)) {
                v.error(format!("spec.selector[{key}]"), reason);
            }
        }
        let mut names = Vec::new();
        for (i, port) in self.ports.iter().enumerate() {
            let field = format!("spec.ports[{i}]");
            for (name, value) in [("port", Some(port.port)), ("targetPort", port.target_port)] {
                if let Some(value) = value
                    && !(1..=65535).contains(&value)
                {
                    v.error(format!("{field}.{name}"), "must be between 1 and 65535");
                }
            }
            if !port.name.is_empty() {
                if let Err(reason) = dns_label(&port.name) {
                    v.error(format!("{field}.name"), reason);
                }
                if names.contains(&&port.name) {
                    v.error(format!("{field}.name"), "must be unique");
                }
                names.push(&port.name);
            }
        }
        for (i, caller) in self.allowed_callers.iter().enumerate() {
            if caller != "*" {
                validate_dns_label(v, &format!("spec.allowedCallers[{i}]"), caller);
            }
        }
    }

    /// Whether pods of `namespace` may call this Service of `own`.
    pub fn admits_caller(&self, own: &str, namespace: &str) -> bool {
        namespace == own
            || self
                .allowed_callers
                .iter()
                .any(|c| c == "*" || c == namespace)
    }
}

/// Last labels of the hosts a node's ingress answers itself.
const RESERVED_HOST_SUFFIXES: [&str; 3] = ["pod", "svc", "node"];

impl RouteSpec {
    pub fn set_defaults(&mut self) {
        if self.path.is_empty() {
            self.path = "/".into();
        }
    }

    pub fn validate(&self, v: &mut Validator) {
        validate_dns_label(v, "spec.service", &self.service);
        if !self.host.is_empty() {
            let host = self.host.strip_prefix("*.").unwrap_or(&self.host);
            if let Err(reason) = dns_subdomain(host) {
                v.error("spec.host", reason);
            } else if let Some((_, tld)) = self
                .host
                .rsplit_once('.')
                .filter(|(_, tld)| RESERVED_HOST_SUFFIXES.contains(tld))
            {
                // Nodes answer these hosts themselves, before any Route
                // is looked at: such a Route would never be served.
                v.error(
                    "spec.host",
                    format!("hosts under .{tld} are the cluster's own (pods, Services, nodes)"),
                );
            }
        }
        // Empty is defaulted to `/` after validation.
        if !self.path.is_empty() && !self.path.starts_with('/') {
            v.error("spec.path", "must start with '/'");
        }
        if let Some(port) = self.port
            && !(1..=65535).contains(&port)
        {
            v.error("spec.port", "must be between 1 and 65535");
        }
    }
}
