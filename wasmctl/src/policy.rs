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
}

impl PolicyFlags {
    fn is_empty(&self) -> bool {
        self.pod_security.is_none()
            && self.egress.is_empty()
            && self.route_host.is_empty()
            && self.max_priority.is_none()
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
            "say what to set: --pod-security, --egress, --route-host or --max-priority".into(),
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
    format!(
        "Policy:\n  Pod security:  {}\n  Egress:        {}\n  Route hosts:   {}\n  Max priority:  {}\n",
        policy.pod_security.as_str(),
        list(&policy.egress),
        list(&policy.route_hosts),
        policy.max_priority
    )
}
