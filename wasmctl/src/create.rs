//! `wasmctl create namespace|token|secret|configmap`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Subcommand;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::tokens::{ServiceAccountTokenRequest, TokenRequest};

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
        /// A token that reads the control plane's `/metrics` and nothing
        /// else (made by a cluster admin).
        #[arg(long, conflicts_with_all = ["namespace", "role", "node", "cluster_admin"])]
        metrics: bool,
        /// A node agent's token: its own Node and the pods bound to it.
        #[arg(long, conflicts_with_all = ["namespace", "role"])]
        node: Option<String>,
        /// A short-lived token of this ServiceAccount (of --namespace, or
        /// the context's): what it may do is the account's role.
        #[arg(long, conflicts_with_all = ["role", "cluster_admin", "node", "ttl"])]
        serviceaccount: Option<String>,
        /// How long a service account's token works, 10s to 24h [default: 1h].
        #[arg(long, requires = "serviceaccount")]
        duration: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// How long the token works, e.g. 24h or 720h; for ever without.
        #[arg(long)]
        ttl: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Create a Secret: `generic` from literals and files, or a
    /// `docker-registry` credential.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Create a ServiceAccount, an identity for pods and short-lived
    /// tokens.
    #[command(name = "serviceaccount", visible_alias = "sa")]
    ServiceAccount {
        name: String,
        /// Its role in its namespace: view, edit or admin [default: none].
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        flags: ObjectFlags,
    },
    /// Create a ConfigMap from literals and files.
    #[command(name = "configmap", visible_alias = "cm")]
    ConfigMap {
        name: String,
        #[command(flatten)]
        sources: DataSources,
        #[command(flatten)]
        flags: ObjectFlags,
    },
}

/// Where a Secret's or ConfigMap's entries come from, as kubectl takes them.
#[derive(clap::Args)]
pub struct DataSources {
    /// An entry `KEY=VALUE`. Repeatable.
    #[arg(long = "from-literal", value_name = "KEY=VALUE")]
    literals: Vec<String>,
    /// An entry per file: `PATH` (keyed by the file's name), `KEY=PATH`,
    /// or a directory (each regular file in it). Repeatable.
    #[arg(long = "from-file", value_name = "[KEY=]PATH")]
    files: Vec<String>,
}

/// What every object-creating verb takes besides its own flags.
#[derive(clap::Args)]
pub struct ObjectFlags {
    #[arg(long, short)]
    namespace: Option<String>,
    /// Have the server check the object and answer, writing nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Subcommand)]
pub enum SecretCommand {
    /// A Secret of entries from literals and files.
    Generic {
        name: String,
        #[command(flatten)]
        sources: DataSources,
        /// The Secret's type.
        #[arg(long = "type", default_value = "Opaque")]
        secret_type: String,
        #[command(flatten)]
        flags: ObjectFlags,
    },
    /// A registry credential for `imagePullSecret`: a Docker config with one
    /// entry (type kubernetes.io/dockerconfigjson).
    #[command(name = "docker-registry")]
    DockerRegistry {
        name: String,
        /// The registry, `HOST[:PORT]`.
        #[arg(long)]
        docker_server: String,
        #[arg(long)]
        docker_username: String,
        #[arg(long)]
        docker_password: String,
        #[arg(long)]
        docker_email: Option<String>,
        #[command(flatten)]
        flags: ObjectFlags,
    },
}

impl DataSources {
    /// The entries, by key; a bad key, a missing file or a key given twice
    /// is named with the flag it came from.
    fn read(&self) -> Result<BTreeMap<String, Vec<u8>>> {
        let mut entries = BTreeMap::new();
        let mut add = |flag: &str, key: &str, bytes: Vec<u8>| -> Result<()> {
            skiff_api::kinds::config::data_key(key)
                .map_err(|reason| BadInput(format!("{flag}: key `{key}`: {reason}")))?;
            if entries.insert(key.to_owned(), bytes).is_some() {
                return Err(
                    BadInput(format!("{flag}: key `{key}` is given more than once")).into(),
                );
            }
            Ok(())
        };
        for literal in &self.literals {
            let flag = format!("--from-literal `{literal}`");
            let (key, value) = literal
                .split_once('=')
                .ok_or_else(|| BadInput(format!("{flag}: expected KEY=VALUE")))?;
            add(&flag, key, value.as_bytes().to_vec())?;
        }
        for source in &self.files {
            let flag = format!("--from-file `{source}`");
            let (key, path) = match source.split_once('=') {
                Some((key, path)) => (Some(key), Path::new(path)),
                None => (None, Path::new(source.as_str())),
            };
            let unreadable = |path: &Path, e: std::io::Error| {
                BadInput(format!("{flag}: {}: {e}", path.display()))
            };
            let metadata = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
            if metadata.is_dir() {
                if key.is_some() {
                    return Err(BadInput(format!(
                        "{flag}: a directory takes no KEY (each file is keyed by its name)"
                    ))
                    .into());
                }
                let mut files: Vec<_> = std::fs::read_dir(path)
                    .map_err(|e| unreadable(path, e))?
                    .flatten()
                    .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
                    .map(|entry| entry.path())
                    .collect();
                files.sort();
                for file in files {
                    let name = file.file_name().unwrap_or_default().to_string_lossy();
                    let bytes = std::fs::read(&file).map_err(|e| unreadable(&file, e))?;
                    add(&flag, &name, bytes)?;
                }
            } else {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                let bytes = std::fs::read(path).map_err(|e| unreadable(path, e))?;
                add(&flag, key.unwrap_or(&name), bytes)?;
            }
        }
        Ok(entries)
    }
}

/// Creates `object` (of a namespaced `kind`) as `flags` say and reports it.
fn create_object(kind: Kind, object: Value, flags: &ObjectFlags) -> Result<()> {
    let session = flags.target.connect()?;
    let namespace = session.namespace_for(kind, flags.namespace.as_deref());
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    block_on(
        session
            .client
            .create_with(kind, namespace.as_deref(), &object, flags.dry_run),
    )??;
    let suffix = if flags.dry_run { " (dry run)" } else { "" };
    println!(
        "{}/{name} created{suffix}",
        kind.name().to_ascii_lowercase()
    );
    Ok(())
}

fn check_name(kind: Kind, name: &str) -> Result<()> {
    skiff_api::validate::dns_label(name).map_err(|reason| {
        BadInput(format!(
            "{} `{name}`: {reason}",
            kind.name().to_ascii_lowercase()
        ))
        .into()
    })
}

fn secret(command: SecretCommand) -> Result<()> {
    let (name, secret_type, data, flags) = match command {
        SecretCommand::Generic {
            name,
            sources,
            secret_type,
            flags,
        } => (name, secret_type, sources.read()?, flags),
        SecretCommand::DockerRegistry {
            name,
            docker_server,
            docker_username,
            docker_password,
            docker_email,
            flags,
        } => {
            let auth = STANDARD.encode(format!("{docker_username}:{docker_password}"));
            let mut entry = json!({
                "username": docker_username, "password": docker_password, "auth": auth,
            });
            if let Some(email) = docker_email {
                entry["email"] = json!(email);
            }
            let config = json!({"auths": {docker_server: entry}});
            let data = BTreeMap::from([(
                skiff_oci::DOCKER_CONFIG_KEY.to_owned(),
                config.to_string().into_bytes(),
            )]);
            (
                name,
                "kubernetes.io/dockerconfigjson".to_owned(),
                data,
                flags,
            )
        }
    };
    check_name(Kind::Secret, &name)?;
    let data: BTreeMap<String, String> = data
        .into_iter()
        .map(|(key, bytes)| (key, STANDARD.encode(bytes)))
        .collect();
    let object = json!({"apiVersion": skiff_api::API_VERSION, "kind": "Secret",
        "metadata": {"name": name}, "type": secret_type, "data": data});
    create_object(Kind::Secret, object, &flags)
}

fn config_map(name: String, sources: DataSources, flags: ObjectFlags) -> Result<()> {
    check_name(Kind::ConfigMap, &name)?;
    // Text goes to `data`, anything else to `binaryData`, as kubectl does.
    let mut data = BTreeMap::new();
    let mut binary = BTreeMap::new();
    for (key, bytes) in sources.read()? {
        match String::from_utf8(bytes) {
            Ok(text) => {
                data.insert(key, text);
            }
            Err(e) => {
                binary.insert(key, STANDARD.encode(e.into_bytes()));
            }
        }
    }
    let mut object = json!({"apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
        "metadata": {"name": name}, "data": data});
    if !binary.is_empty() {
        object["binaryData"] = json!(binary);
    }
    create_object(Kind::ConfigMap, object, &flags)
}

pub fn run(command: CreateCommand) -> Result<()> {
    match command {
        CreateCommand::Secret(command) => secret(command)?,
        CreateCommand::ConfigMap {
            name,
            sources,
            flags,
        } => config_map(name, sources, flags)?,
        CreateCommand::ServiceAccount { name, role, flags } => {
            check_name(Kind::ServiceAccount, &name)?;
            if let Some(role) = &role
                && !skiff_api::kinds::account::ROLES.contains(&role.as_str())
            {
                return Err(
                    BadInput(format!("--role `{role}`: must be view, edit or admin")).into(),
                );
            }
            let mut object = json!({"apiVersion": skiff_api::API_VERSION, "kind": "ServiceAccount",
                "metadata": {"name": name}, "spec": {}});
            if let Some(role) = role {
                object["spec"]["role"] = json!(role);
            }
            create_object(Kind::ServiceAccount, object, &flags)?;
        }
        CreateCommand::Token {
            namespace,
            serviceaccount: Some(account),
            duration,
            target,
            ..
        } => {
            check_name(Kind::ServiceAccount, &account)?;
            if let Some(duration) = &duration
                && skiff_api::quantity::parse_duration(duration).is_err()
            {
                return Err(BadInput(format!(
                    "--duration `{duration}`: not a duration such as 1h"
                ))
                .into());
            }
            let session = target.connect()?;
            let namespace = session
                .namespace_for(Kind::ServiceAccount, namespace.as_deref())
                .unwrap_or_else(|| "default".into());
            let request = ServiceAccountTokenRequest {
                duration,
                bound_pod: None,
            };
            let token = block_on(
                session
                    .client
                    .create_account_token(&namespace, &account, &request),
            )??;
            eprintln!(
                "token of service account {namespace}/{account}, until {}:",
                token.expires_at
            );
            println!("{}", token.token);
        }
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
            metrics,
            node,
            description,
            ttl,
            target,
            ..
        } => {
            if let Some(ttl) = &ttl
                && skiff_api::quantity::parse_duration(ttl).is_err()
            {
                return Err(BadInput(format!("--ttl `{ttl}`: not a duration such as 24h")).into());
            }
            let (scope, request) = match (cluster_admin || metrics, node, namespace, role) {
                (true, None, None, None) => (
                    None,
                    TokenRequest {
                        role: if metrics { "metrics" } else { "cluster-admin" }.into(),
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
                        "say whom the token is for: --namespace NS --role admin|edit|view, --node NAME, --metrics or --cluster-admin".into(),
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
