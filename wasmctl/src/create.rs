//! `wasmctl create namespace NAME` and `wasmctl create token`.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;
use skiff_api::Kind;
use skiff_api::tokens::TokenRequest;

use crate::BadInput;
use crate::cluster::{Target, block_on};

#[derive(Subcommand)]
pub enum CreateCommand {
    /// Create a namespace.
    Namespace {
        name: String,
        #[command(flatten)]
        policy: crate::policy::PolicyFlags,
        #[command(flatten)]
        target: Target,
    },
    /// Create an API token and print it (it is shown only once).
    Token {
        /// Namespace the token's role applies in.
        #[arg(long, short)]
        namespace: Option<String>,
        /// admin, edit or view (with --namespace).
        #[arg(long)]
        role: Option<String>,
        /// A token for everything.
        #[arg(long, conflicts_with_all = ["namespace", "role", "node"])]
        cluster_admin: bool,
        /// A node agent's token: its own Node and the pods bound to it.
        #[arg(long, conflicts_with_all = ["namespace", "role"])]
        node: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// How long the token works, e.g. 24h or 720h; for ever without.
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(command: CreateCommand) -> Result<()> {
    match command {
        CreateCommand::Namespace {
            name,
            policy,
            target,
        } => {
            skiff_api::validate::dns_label(&name)
                .map_err(|reason| BadInput(format!("namespace `{name}`: {reason}")))?;
            let policy = policy.to_json()?;
            let session = target.connect()?;
            let object = json!({"apiVersion": skiff_api::API_VERSION, "kind": "Namespace",
                "metadata": {"name": name}, "spec": {"policy": policy}});
            block_on(session.client.create(Kind::Namespace, None, &object))??;
            println!("namespace/{name} created");
        }
        CreateCommand::Token {
            namespace,
            role,
            cluster_admin,
            node,
            description,
            ttl,
            target,
        } => {
            if let Some(ttl) = &ttl
                && skiff_api::quantity::parse_duration(ttl).is_err()
            {
                return Err(BadInput(format!("--ttl `{ttl}`: not a duration such as 24h")).into());
            }
            let (scope, request) = match (cluster_admin, node, namespace, role) {
                (true, None, None, None) => (
                    None,
                    TokenRequest {
                        role: "cluster-admin".into(),
                        node_name: None,
                        description,
                        ttl,
                    },
                ),
                (false, Some(node), None, None) => (
                    None,
                    TokenRequest {
                        role: "node".into(),
                        node_name: Some(node),
                        description,
                        ttl,
                    },
                ),
                (false, None, Some(ns), Some(role)) => (
                    Some(ns),
                    TokenRequest {
                        role,
                        node_name: None,
                        description,
                        ttl,
                    },
                ),
                _ => {
                    return Err(BadInput(
                        "say whom the token is for: --namespace NS --role admin|edit|view, --node NAME, or --cluster-admin".into(),
                    )
                    .into());
                }
            };
            let session = target.connect()?;
            let info = block_on(session.client.create_token(scope.as_deref(), &request))??;
            eprintln!(
                "token {} created ({}); it is shown only once:",
                info.id, info.role
            );
            println!("{}", info.token.unwrap_or_default());
        }
    }
    Ok(())
}
