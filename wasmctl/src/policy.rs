//! A namespace's tenant policy from the command line: `wasmctl create
//! namespace NAME --pod-security Baseline ...` and `wasmctl set policy NAME
//! ...` (cluster admins only; the API refuses anyone else).

use anyhow::Result;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::kinds::cluster::NamespacePolicy;

use crate::BadInput;
use crate::cluster::{Target, block_on};

#[derive(clap::Args, Default)]
pub struct PolicyFlags {
    /// Restricted (components only), Baseline (Linux pods, never root) or
    /// Privileged (anything).
    #[arg(long, value_name = "LEVEL")]
    pub pod_security: Option<String>,
    /// An outbound rule pods here may be granted (repeat for more; replaces
    /// the ceiling). A private address is open only if named here.
    #[arg(long, value_name = "RULE")]
    pub egress: Vec<String>,
    /// A Route host the namespace may claim, exact or `*.domain` (repeat;
    /// replaces the list; `--route-host ''` clears it).
    #[arg(long, value_name = "HOST")]
    pub route_host: Vec<String>,
    /// The highest pod priority allowed; above 0 may preempt other
    /// namespaces' pods.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_priority: Option<i32>,
    /// Memory per instance for pods that name none (e.g. 64Mi).
    #[arg(long, value_name = "SIZE")]
    pub default_memory: Option<String>,
    /// Fuel for pods that name none (e.g. 50M): fuel on by default.
    #[arg(long, value_name = "AMOUNT")]
    pub default_fuel: Option<String>,
    /// Timeout for pods that name none (e.g. 5s).
    #[arg(long, value_name = "DURATION")]
    pub default_timeout: Option<String>,
    /// maxInstances for pods that name none.
    #[arg(long, value_name = "N")]
    pub default_max_instances: Option<u32>,
}

impl PolicyFlags {
    fn is_empty(&self) -> bool {
        self.pod_security.is_none()
            && self.egress.is_empty()
            && self.route_host.is_empty()
            && self.max_priority.is_none()
            && self.default_memory.is_none()
            && self.default_fuel.is_none()
            && self.default_timeout.is_none()
            && self.default_max_instances.is_none()
    }

    /// The policy fields these flags set, as a JSON object.
    pub fn to_json(&self) -> Result<Value> {
        let mut policy = json!({});
        if let Some(level) = &self.pod_security {
            let level = match level.to_ascii_lowercase().as_str() {
                "restricted" => "Restricted",
                "baseline" => "Baseline",
                "privileged" => "Privileged",
                _ => {
                    return Err(BadInput(format!(
                        "--pod-security `{level}`: use Restricted, Baseline or Privileged"
                    ))
                    .into());
                }
            };
            policy["podSecurity"] = json!(level);
        }
        if !self.egress.is_empty() {
            policy["egress"] = json!(self.egress);
        }
        if !self.route_host.is_empty() {
            let hosts: Vec<&String> = self.route_host.iter().filter(|h| !h.is_empty()).collect();
            policy["routeHosts"] = json!(hosts);
        }
        if let Some(max) = self.max_priority {
            policy["maxPriority"] = json!(max);
        }
        // Merged into what is set (a merge patch), so one default can be
        // set without repeating the others.
        let mut defaults = json!({});
        for (field, value) in [
            ("memory", self.default_memory.clone().map(Value::from)),
            ("fuel", self.default_fuel.clone().map(Value::from)),
            ("timeout", self.default_timeout.clone().map(Value::from)),
            ("maxInstances", self.default_max_instances.map(Value::from)),
        ] {
            if let Some(value) = value {
                defaults[field] = value;
            }
        }
        if defaults.as_object().is_some_and(|d| !d.is_empty()) {
            policy["podDefaults"] = defaults;
        }
        Ok(policy)
    }
}

#[derive(clap::Args)]
pub struct SetPolicyArgs {
    /// The namespace.
    namespace: String,
    #[command(flatten)]
    flags: PolicyFlags,
    #[command(flatten)]
    target: Target,
}

pub fn set(args: SetPolicyArgs) -> Result<()> {
    if args.flags.is_empty() {
        return Err(BadInput(
            "say what to set: --pod-security, --egress, --route-host, --max-priority or a --default-*".into(),
        )
        .into());
    }
    let patch = json!({"spec": {"policy": args.flags.to_json()?}});
    let session = args.target.connect()?;
    let stored =
        block_on(
            session
                .client
                .patch(Kind::Namespace, None, &args.namespace, &patch, false),
        )??;
    println!("namespace/{} policy set", args.namespace);
    print!("{}", describe(&stored["spec"]["policy"]));
    Ok(())
}

/// A namespace's policy for people, defaults filled in (a namespace stored
/// before policies existed has the closed defaults).
pub fn describe(policy: &Value) -> String {
    let policy: NamespacePolicy = serde_json::from_value(policy.clone()).unwrap_or_default();
    let list = |items: &[String]| {
        if items.is_empty() {
            "<none>".to_owned()
        } else {
            items.join(", ")
        }
    };
    let d = &policy.pod_defaults;
    let defaults: Vec<String> = [
        ("memory", d.memory.clone()),
        ("fuel", d.fuel.clone()),
        ("timeout", d.timeout.clone()),
        ("maxInstances", d.max_instances.map(|n| n.to_string())),
    ]
    .into_iter()
    .filter_map(|(name, value)| Some(format!("{name} {}", value?)))
    .collect();
    format!(
        "Policy:\n  Pod security:  {}\n  Egress:        {}\n  Route hosts:   {}\n  Max priority:  {}\n  Pod defaults:  {}\n",
        policy.pod_security.as_str(),
        list(&policy.egress),
        list(&policy.route_hosts),
        policy.max_priority,
        list(&defaults)
    )
}
