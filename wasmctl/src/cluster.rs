//! What every cluster verb shares: the context to talk to, the client, the
//! namespace a command applies to, and the async runtime.

use std::path::PathBuf;

use anyhow::Result;
use skiff_api::Kind;
use skiff_client::Client;

use crate::BadInput;
use crate::config::{self, Config};

/// Flags that pick the cluster, accepted by every cluster verb.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// Config file [default: $WASMCTL_CONFIG or ~/.config/wasmctl/config.yaml].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Context to use instead of the current one.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
}

/// A connection to the cluster of the chosen context.
pub struct Session {
    pub client: Client,
    /// The context's default namespace.
    pub namespace: String,
}

impl Target {
    pub fn connect(&self) -> Result<Session> {
        let config = Config::load(&config::path(self.config.as_deref())?)?;
        let context = config.context(self.context.as_deref())?;
        Ok(Session {
            client: context.client()?,
            namespace: context.namespace.clone(),
        })
    }
}

impl Session {
    /// The namespace for `kind`: none for cluster-scoped kinds, else the
    /// flag's or the context's.
    pub fn namespace_for(&self, kind: Kind, flag: Option<&str>) -> Option<String> {
        kind.namespaced()
            .then(|| flag.unwrap_or(&self.namespace).to_owned())
    }
}

/// Resolves a kind as users type it (`pods`, `pod`, `po`, `Pod`).
pub fn parse_kind(text: &str) -> Result<Kind> {
    Kind::parse(text).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        BadInput(format!(
            "unknown kind `{text}`; known kinds: {}",
            known.join(", ")
        ))
        .into()
    })
}

/// `pod`, as kubectl names kinds in its messages (`pod/web created`).
pub fn kind_word(kind: Kind) -> String {
    kind.name().to_ascii_lowercase()
}

pub fn block_on<F: Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(future))
}
