//! `wasmctl config`: contexts (server, token, default namespace, CA) in a
//! config file, `$WASMCTL_CONFIG` or `~/.config/wasmctl/config.yaml`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use skiff_client::{Client, ClientConfig};

use crate::BadInput;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub current_context: String,
    #[serde(default)]
    pub contexts: Vec<Context>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    pub name: String,
    pub server: String,
    pub token: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// PEM file of the cluster's CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

fn default_namespace() -> String {
    "default".into()
}

/// Where the config lives.
pub fn path(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    if let Some(path) = std::env::var_os("WASMCTL_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .context("cannot find a config directory: set WASMCTL_CONFIG or HOME")?;
    Ok(base.join("wasmctl/config.yaml"))
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_yaml_ng::from_str(&text)
                .map_err(|e| BadInput(format!("{}: {e}", path.display())).into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the config readable by the user only: it holds tokens.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_yaml_ng::to_string(self).context("serialising the config")?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
        drop(file);
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }

    /// The named context, or the current one.
    pub fn context(&self, name: Option<&str>) -> Result<&Context> {
        let name = match name {
            Some(name) => name,
            None if self.current_context.is_empty() => {
                return Err(BadInput(
                    "no current context; create one with `wasmctl config set-context NAME --server URL --token TOKEN`"
                        .into(),
                )
                .into());
            }
            None => &self.current_context,
        };
        self.contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| BadInput(format!("no context named `{name}` in the config")).into())
    }
}

impl Context {
    pub fn client(&self) -> Result<Client> {
        let ca_pem = match &self.certificate_authority {
            Some(path) => Some(std::fs::read(path).with_context(|| {
                format!("reading the certificate authority {}", path.display())
            })?),
            None => None,
        };
        Ok(Client::new(&ClientConfig {
            server: self.server.clone(),
            token: self.token.clone(),
            ca_pem,
            insecure_skip_tls_verify: self.insecure_skip_tls_verify,
            timeout: Some(std::time::Duration::from_secs(10)),
        })?)
    }
}

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Create or update a context; the first one becomes current.
    SetContext {
        name: String,
        #[arg(long)]
        server: Option<String>,
        #[arg(long)]
        token: Option<String>,
        /// Namespace used when a command names none.
        #[arg(long)]
        namespace: Option<String>,
        /// PEM file of the CA that signed the server's certificate.
        #[arg(long, value_name = "FILE")]
        certificate_authority: Option<PathBuf>,
        #[arg(long)]
        insecure_skip_tls_verify: bool,
        /// Also make it the current context.
        #[arg(long = "use")]
        make_current: bool,
    },
    /// Make a context current.
    UseContext { name: String },
    /// List contexts.
    GetContexts,
    /// Print the current context's name.
    CurrentContext,
    /// Remove a context.
    DeleteContext { name: String },
    /// Print the config with tokens redacted.
    View,
    /// Print a kubeconfig for a context (the current one by default), for
    /// kubectl and Kubernetes client libraries: `wasmctl config kubeconfig
    /// > ~/.kube/config`. It holds the context's token.
    Kubeconfig {
        /// The context to write; the current one when not given.
        #[arg(long)]
        context: Option<String>,
    },
}

pub fn run(command: ConfigCommand, explicit: Option<&Path>) -> Result<()> {
    let path = path(explicit)?;
    let mut config = Config::load(&path)?;
    match command {
        ConfigCommand::SetContext {
            name,
            server,
            token,
            namespace,
            certificate_authority,
            insecure_skip_tls_verify,
            make_current,
        } => {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(BadInput(format!(
                    "context name `{name}` must be non-empty without whitespace"
                ))
                .into());
            }
            let index = match config.contexts.iter().position(|c| c.name == name) {
                Some(index) => index,
                None => {
                    let (Some(server), Some(token)) = (&server, &token) else {
                        return Err(BadInput(format!(
                            "context `{name}` is new: --server and --token are required"
                        ))
                        .into());
                    };
                    config.contexts.push(Context {
                        name: name.clone(),
                        server: server.clone(),
                        token: token.clone(),
                        namespace: default_namespace(),
                        ..Default::default()
                    });
                    config.contexts.len() - 1
                }
            };
            let context = &mut config.contexts[index];
            if let Some(server) = server {
                if !(server.starts_with("http://") || server.starts_with("https://")) {
                    return Err(BadInput(format!(
                        "--server `{server}` must start with http:// or https://"
                    ))
                    .into());
                }
                context.server = server;
            }
            if let Some(token) = token {
                context.token = token;
            }
            if let Some(namespace) = namespace {
                skiff_api::validate::dns_label(&namespace)
                    .map_err(|reason| BadInput(format!("--namespace `{namespace}`: {reason}")))?;
                context.namespace = namespace;
            }
            if let Some(ca) = certificate_authority {
                let ca = ca.canonicalize().map_err(|e| {
                    BadInput(format!("--certificate-authority {}: {e}", ca.display()))
                })?;
                context.certificate_authority = Some(ca);
            }
            context.insecure_skip_tls_verify |= insecure_skip_tls_verify;
            if make_current || config.current_context.is_empty() {
                config.current_context = name.clone();
            }
            config.save(&path)?;
            eprintln!("context \"{name}\" set in {}", path.display());
        }
        ConfigCommand::UseContext { name } => {
            config.context(Some(&name))?;
            config.current_context = name.clone();
            config.save(&path)?;
            eprintln!("switched to context \"{name}\"");
        }
        ConfigCommand::GetContexts => {
            let mut rows = vec![vec![
                "CURRENT".into(),
                "NAME".into(),
                "SERVER".into(),
                "NAMESPACE".into(),
            ]];
            for c in &config.contexts {
                let current = if c.name == config.current_context {
                    "*"
                } else {
                    ""
                };
                rows.push(vec![
                    current.into(),
                    c.name.clone(),
                    c.server.clone(),
                    c.namespace.clone(),
                ]);
            }
            print!("{}", crate::table::render(&rows));
        }
        ConfigCommand::CurrentContext => {
            if config.current_context.is_empty() {
                bail!(BadInput("no current context".into()));
            }
            println!("{}", config.current_context);
        }
        ConfigCommand::DeleteContext { name } => {
            config.context(Some(&name))?;
            config.contexts.retain(|c| c.name != name);
            if config.current_context == name {
                config.current_context.clear();
            }
            config.save(&path)?;
            eprintln!("deleted context \"{name}\"");
        }
        ConfigCommand::Kubeconfig { context } => {
            let context = config.context(context.as_deref())?;
            print!("{}", kubeconfig(context)?);
        }
        ConfigCommand::View => {
            for context in &mut config.contexts {
                context.token = "REDACTED".into();
            }
            print!("{}", serde_yaml_ng::to_string(&config)?);
        }
    }
    Ok(())
}

/// `context` as a kubeconfig, self-contained: the CA is embedded, so the
/// file works wherever it is copied. Refused for a server on plain HTTP:
/// kubectl sends no token there, and every call would be refused.
fn kubeconfig(context: &Context) -> Result<String> {
    use base64::Engine as _;
    if !context.server.starts_with("https://") {
        return Err(BadInput(format!(
            "context `{}` reaches {} over plain HTTP, and kubectl sends no token there: serve the API over TLS (as `wasmctl dev` does) and set the context's server to https://",
            context.name, context.server
        ))
        .into());
    }
    let mut cluster = serde_json::json!({"server": context.server});
    if let Some(ca) = &context.certificate_authority {
        let pem = std::fs::read(ca)
            .with_context(|| format!("reading the certificate authority {}", ca.display()))?;
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(pem).into();
    }
    if context.insecure_skip_tls_verify {
        cluster["insecure-skip-tls-verify"] = true.into();
    }
    let name = &context.name;
    let document = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": context.token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": context.namespace}}],
        "current-context": name,
        "preferences": {},
    });
    Ok(serde_yaml_ng::to_string(&document)?)
}
