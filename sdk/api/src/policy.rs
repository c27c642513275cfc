//! A namespace's tenant policy applied to what its tenants submit: pod
//! security levels, the egress ceiling, the priority ceiling and Route
//! hosts. Pure rules over the policy and the object, so the control plane
//! decides admission from them and tests can table them.

use crate::kinds::cluster::{NamespacePolicy, PodSecurityLevel};
use crate::kinds::pod::{PodRuntime, PodSpec, SecurityContext};
use crate::outbound::AllowRule;
use crate::validate::FieldError;

/// Fills in what a namespace's level implies for a pod it did not say:
/// a `Restricted` namespace's pods run as components (so a Linux image
/// fails on its node instead of running), and below `Privileged` a pod
/// that may be a Linux one must not run as root (the node checks the
/// image's user against it).
pub fn apply_pod_defaults(policy: &NamespacePolicy, spec: &mut PodSpec) {
    match policy.pod_security {
        PodSecurityLevel::Restricted => {
            spec.runtime.get_or_insert(PodRuntime::Wasm);
        }
        PodSecurityLevel::Baseline if spec.runtime != Some(PodRuntime::Wasm) => {
            spec.security_context
                .get_or_insert_with(SecurityContext::default)
                .run_as_non_root
                .get_or_insert(true);
        }
        PodSecurityLevel::Baseline | PodSecurityLevel::Privileged => {}
    }
}

/// What in a pod spec (found at `at`) namespace `namespace`'s pod
/// security level and priority ceiling do not allow, each naming its
/// field. Call after [`apply_pod_defaults`].
pub fn check_pod(
    namespace: &str,
    policy: &NamespacePolicy,
    spec: &PodSpec,
    at: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let level = policy.pod_security;
    let mut refuse = |field: String, what: &str, needs: PodSecurityLevel| {
        errors.push(FieldError {
            field,
            message: format!(
                "{what} is not allowed in namespace {namespace}, whose pod security level is {} \
                 (it needs {}; a cluster admin sets spec.policy.podSecurity)",
                level.as_str(),
                needs.as_str()
            ),
        });
    };
    if level < PodSecurityLevel::Privileged {
        for (i, volume) in spec.volumes.iter().enumerate() {
            if volume.host_path.is_some() {
                refuse(
                    format!("{at}.volumes[{i}].hostPath"),
                    "a host path",
                    PodSecurityLevel::Privileged,
                );
            }
        }
    }
    if level == PodSecurityLevel::Restricted && spec.runtime == Some(PodRuntime::Linux) {
        refuse(
            format!("{at}.runtime"),
            "a Linux pod (Linux pods share the node's network until they get network namespaces of their own)",
            PodSecurityLevel::Baseline,
        );
    }
    if level < PodSecurityLevel::Privileged
        && let Some(context) = &spec.security_context
    {
        if context.run_as_user == Some(0) {
            refuse(
                format!("{at}.securityContext.runAsUser"),
                "running as root (uid 0)",
                PodSecurityLevel::Privileged,
            );
        }
        if context.run_as_group == Some(0) {
            refuse(
                format!("{at}.securityContext.runAsGroup"),
                "running with group root (gid 0)",
                PodSecurityLevel::Privileged,
            );
        }
        if context.run_as_non_root == Some(false) && spec.runtime != Some(PodRuntime::Wasm) {
            refuse(
                format!("{at}.securityContext.runAsNonRoot"),
                "allowing root (runAsNonRoot: false)",
                PodSecurityLevel::Privileged,
            );
        }
        if !context.add_capabilities.is_empty() {
            refuse(
                format!("{at}.securityContext.addCapabilities"),
                "adding capabilities",
                PodSecurityLevel::Privileged,
            );
        }
    }
    if spec.priority > policy.max_priority {
        errors.push(FieldError {
            field: format!("{at}.priority"),
            message: format!(
                "{} is above namespace {namespace}'s ceiling of {} (a cluster admin sets spec.policy.maxPriority)",
                spec.priority, policy.max_priority
            ),
        });
    }
    errors
}

/// The pod's `allowOutbound` rules (at `at`) that fall outside the
/// namespace's egress ceiling.
pub fn check_egress(
    namespace: &str,
    policy: &NamespacePolicy,
    spec: &PodSpec,
    at: &str,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let ceiling: Vec<AllowRule> = policy
        .egress
        .iter()
        .filter_map(|r| AllowRule::parse(r).ok())
        .collect();
    for (i, rule) in spec.allow_outbound.iter().enumerate() {
        let Ok(parsed) = AllowRule::parse(rule) else {
            continue; // reported by validation
        };
        if !ceiling.iter().any(|c| c.covers(&parsed)) {
            let private = if parsed.names_private_address() {
                " (a loopback, link-local or private address must be named in the ceiling itself)"
            } else {
                ""
            };
            errors.push(FieldError {
                field: format!("{at}.allowOutbound[{i}]"),
                message: format!(
                    "`{rule}` is outside namespace {namespace}'s egress ceiling [{}]{private}",
                    policy.egress.join(", ")
                ),
            });
        }
    }
    errors
}

/// Problems with a policy itself, each naming its field under `at`.
pub fn validate_policy(policy: &NamespacePolicy, at: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, rule) in policy.egress.iter().enumerate() {
        if let Err(e) = AllowRule::parse(rule) {
            errors.push(FieldError {
                field: format!("{at}.egress[{i}]"),
                message: e.to_string(),
            });
        }
    }
    let defaults = &policy.pod_defaults;
    let at_default = |field: &str| format!("{at}.podDefaults.{field}");
    let checks: [(&str, Option<Result<(), String>>); 3] = [
        (
            "memory",
            defaults.memory.as_deref().map(|m| {
                crate::quantity::parse_bytes(m)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        ),
        (
            "fuel",
            defaults.fuel.as_deref().map(|f| {
                crate::quantity::parse_fuel(f)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        ),
        (
            "timeout",
            defaults.timeout.as_deref().map(|t| {
                crate::quantity::parse_duration(t)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        ),
    ];
    for (field, check) in checks {
        if let Some(Err(message)) = check {
            errors.push(FieldError {
                field: at_default(field),
                message,
            });
        }
    }
    if defaults.max_instances == Some(0) {
        errors.push(FieldError {
            field: at_default("maxInstances"),
            message: "must be at least 1".into(),
        });
    }
    for (i, host) in policy.route_hosts.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if let Err(reason) = crate::validate::dns_subdomain(bare) {
            errors.push(FieldError {
                field: format!("{at}.routeHosts[{i}]"),
                message: reason.to_owned(),
            });
        }
    }
    errors
}

/// Fills the `resources` a pod spec (as submitted, before admission) does
/// not name from its namespace's defaults; what it names stays, and the
/// cluster's own defaults fill the rest at admission.
pub fn apply_resource_defaults(policy: &NamespacePolicy, spec: &mut serde_json::Value) {
    let defaults = &policy.pod_defaults;
    if defaults.is_empty() || !spec.is_object() {
        return;
    }
    let resources = &mut spec["resources"];
    if resources.is_null() {
        *resources = serde_json::json!({});
    }
    let Some(resources) = resources.as_object_mut() else {
        return;
    };
    let fields = [
        (
            "memory",
            defaults.memory.clone().map(serde_json::Value::from),
        ),
        ("fuel", defaults.fuel.clone().map(serde_json::Value::from)),
        (
            "timeout",
            defaults.timeout.clone().map(serde_json::Value::from),
        ),
        (
            "maxInstances",
            defaults.max_instances.map(serde_json::Value::from),
        ),
    ];
    for (field, default) in fields {
        if let Some(default) = default
            && resources.get(field).is_none_or(serde_json::Value::is_null)
        {
            resources.insert(field.to_owned(), default);
        }
    }
}

/// Whether a namespace with `policy` may claim Route host `host` (exact or
/// `*.domain`). The empty catch-all host is never a tenant's.
pub fn may_claim_host(policy: &NamespacePolicy, host: &str) -> bool {
    !host.is_empty() && policy.route_hosts.iter().any(|h| host_covers(h, host))
}

/// Whether host pattern `pattern` takes in every host `host` stands for:
/// equal, or `*.d` over `x.d` and over `*.x.d`.
pub fn host_covers(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) if suffix.starts_with('.') => {
            let bare = host.strip_prefix('*').unwrap_or(host);
            bare.len() > suffix.len() && bare.ends_with(suffix)
        }
        _ => false,
    }
}

/// Whether two Route hosts can match one request: one covers the other.
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    host_covers(a, b) || host_covers(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::pod::{HostPathSource, Volume};

    fn policy(level: PodSecurityLevel) -> NamespacePolicy {
        NamespacePolicy {
            pod_security: level,
            ..Default::default()
        }
    }

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    fn admitted(policy: &NamespacePolicy, mut spec: PodSpec) -> Vec<FieldError> {
        apply_pod_defaults(policy, &mut spec);
        let mut errors = check_pod("shop", policy, &spec, "spec");
        errors.extend(check_egress("shop", policy, &spec, "spec"));
        errors
    }

    #[test]
    fn namespace_resource_defaults_fill_only_what_a_pod_leaves_out() {
        use crate::kinds::cluster::PodDefaults;
        let policy = NamespacePolicy {
            pod_defaults: PodDefaults {
                memory: Some("32Mi".into()),
                fuel: Some("10M".into()),
                timeout: Some("2s".into()),
                max_instances: Some(5),
            },
            ..Default::default()
        };
        let mut bare = serde_json::json!({"image": "x"});
        apply_resource_defaults(&policy, &mut bare);
        assert_eq!(
            bare["resources"],
            serde_json::json!({"memory": "32Mi", "fuel": "10M", "timeout": "2s", "maxInstances": 5})
        );
        let mut named =
            serde_json::json!({"image": "x", "resources": {"memory": "1Gi", "fuel": null}});
        apply_resource_defaults(&policy, &mut named);
        assert_eq!(
            named["resources"],
            serde_json::json!({"memory": "1Gi", "fuel": "10M", "timeout": "2s", "maxInstances": 5})
        );
        let mut untouched = serde_json::json!({"image": "x"});
        apply_resource_defaults(&NamespacePolicy::default(), &mut untouched);
        assert_eq!(untouched, serde_json::json!({"image": "x"}));

        let bad = NamespacePolicy {
            pod_defaults: PodDefaults {
                memory: Some("lots".into()),
                fuel: Some("-1".into()),
                timeout: Some("soon".into()),
                max_instances: Some(0),
            },
            ..Default::default()
        };
        assert_eq!(
            fields(&validate_policy(&bad, "spec.policy")),
            [
                "spec.policy.podDefaults.memory",
                "spec.policy.podDefaults.fuel",
                "spec.policy.podDefaults.timeout",
                "spec.policy.podDefaults.maxInstances"
            ]
        );
    }

    fn host_path_pod() -> PodSpec {
        PodSpec {
            image: "x".into(),
            volumes: vec![Volume {
                name: "root".into(),
                mount_path: "/host".into(),
                read_only: true,
                host_path: Some(HostPathSource { path: "/".into() }),
                empty_dir: None,
                config_map: None,
                secret: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn host_paths_only_in_privileged_namespaces() {
        use PodSecurityLevel::*;
        for (level, refused) in [(Restricted, true), (Baseline, true), (Privileged, false)] {
            let errors = admitted(&policy(level), host_path_pod());
            assert_eq!(
                fields(&errors) == ["spec.volumes[0].hostPath"],
                refused,
                "{level:?}: {errors:?}"
            );
        }
        let message = &admitted(&policy(Restricted), host_path_pod())[0].message;
        assert!(
            message.contains("namespace shop") && message.contains("Restricted"),
            "{message}"
        );
    }

    #[test]
    fn linux_pods_need_baseline_and_never_root_below_privileged() {
        use PodSecurityLevel::*;
        let linux = |context: Option<SecurityContext>| PodSpec {
            image: "x".into(),
            runtime: Some(PodRuntime::Linux),
            security_context: context,
            ..Default::default()
        };
        assert_eq!(
            fields(&admitted(&policy(Restricted), linux(None))),
            ["spec.runtime"]
        );
        assert!(admitted(&policy(Baseline), linux(None)).is_empty());
        let root = SecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        };
        assert_eq!(
            fields(&admitted(&policy(Baseline), linux(Some(root.clone())))),
            ["spec.securityContext.runAsUser"]
        );
        assert!(admitted(&policy(Privileged), linux(Some(root))).is_empty());
        let allow_root = SecurityContext {
            run_as_non_root: Some(false),
            add_capabilities: vec!["NET_ADMIN".into()],
            ..Default::default()
        };
        assert_eq!(
            fields(&admitted(&policy(Baseline), linux(Some(allow_root)))),
            [
                "spec.securityContext.runAsNonRoot",
                "spec.securityContext.addCapabilities"
            ]
        );
    }

    #[test]
    fn levels_fill_in_what_they_imply() {
        let mut spec = PodSpec::default();
        apply_pod_defaults(&policy(PodSecurityLevel::Restricted), &mut spec);
        assert_eq!(spec.runtime, Some(PodRuntime::Wasm));
        let mut spec = PodSpec::default();
        apply_pod_defaults(&policy(PodSecurityLevel::Baseline), &mut spec);
        assert_eq!(spec.runtime, None);
        assert_eq!(spec.security_context.unwrap().run_as_non_root, Some(true));
        let mut spec = PodSpec::default();
        apply_pod_defaults(&policy(PodSecurityLevel::Privileged), &mut spec);
        assert_eq!(spec, PodSpec::default());
    }

    #[test]
    fn priority_above_the_ceiling_is_refused() {
        let spec = |priority| PodSpec {
            priority,
            ..Default::default()
        };
        let open = policy(PodSecurityLevel::Restricted);
        assert!(admitted(&open, spec(0)).is_empty());
        assert!(admitted(&open, spec(-5)).is_empty());
        assert_eq!(fields(&admitted(&open, spec(1))), ["spec.priority"]);
        let granted = NamespacePolicy {
            max_priority: 1000,
            ..open
        };
        assert!(admitted(&granted, spec(1000)).is_empty());
        assert_eq!(
            fields(&admitted(&granted, spec(i32::MAX))),
            ["spec.priority"]
        );
    }

    #[test]
    fn outbound_rules_stay_inside_the_egress_ceiling() {
        let with = |egress: &[&str], rules: &[&str]| {
            let policy = NamespacePolicy {
                egress: egress.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            let spec = PodSpec {
                allow_outbound: rules.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            };
            admitted(&policy, spec).len()
        };
        // The default ceiling: any public host, no private address.
        assert_eq!(with(&["*"], &["api.example.com", "https://x.test", "*"]), 0);
        for private in [
            "127.0.0.1:8080",
            "[::1]",
            "169.254.169.254",
            "10.1.2.3",
            "localhost:80",
        ] {
            assert_eq!(with(&["*"], &[private]), 1, "{private}");
        }
        // Named in the ceiling itself, a private address may be granted,
        // on the ports the ceiling gives.
        assert_eq!(with(&["127.0.0.1"], &["127.0.0.1:8080"]), 0);
        assert_eq!(with(&["127.0.0.1:9000"], &["127.0.0.1:8080"]), 1);
        assert_eq!(with(&["127.0.0.1:9000"], &["127.0.0.1"]), 1);
        // Narrower ceilings.
        assert_eq!(with(&["*.example.com"], &["api.example.com"]), 0);
        assert_eq!(with(&["*.example.com"], &["*.a.example.com"]), 0);
        assert_eq!(with(&["*.example.com"], &["*"]), 1);
        assert_eq!(with(&["*.example.com"], &["example.org"]), 1);
        assert_eq!(
            with(&["https://*.example.com"], &["http://a.example.com"]),
            1
        );
        assert_eq!(with(&["https://*.example.com"], &["a.example.com"]), 1);
        assert_eq!(with(&[], &["api.example.com"]), 1);
    }

    #[test]
    fn route_hosts_claimable_and_overlapping() {
        let policy = NamespacePolicy {
            route_hosts: vec!["shop.example.com".into(), "*.shop.test".into()],
            ..Default::default()
        };
        assert!(may_claim_host(&policy, "shop.example.com"));
        assert!(may_claim_host(&policy, "a.shop.test"));
        assert!(may_claim_host(&policy, "*.a.shop.test"));
        assert!(!may_claim_host(&policy, "shop.test"));
        assert!(!may_claim_host(&policy, "*.shop.test.evil"));
        assert!(!may_claim_host(&policy, "evilshop.test"));
        assert!(!may_claim_host(&policy, "other.example.com"));
        assert!(!may_claim_host(&policy, ""));
        assert!(hosts_overlap("api.example.com", "api.example.com"));
        assert!(hosts_overlap("*.example.com", "api.example.com"));
        assert!(hosts_overlap("api.example.com", "*.example.com"));
        assert!(hosts_overlap("*.example.com", "*.a.example.com"));
        assert!(!hosts_overlap("*.example.com", "example.com"));
        assert!(!hosts_overlap("api.example.com", "web.example.com"));
        assert!(!hosts_overlap("*.a.example.com", "*.b.example.com"));
    }
}
