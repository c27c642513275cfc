//! `wasmctl delete -f FILE` or `wasmctl delete KIND NAME...`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use skiff_api::Kind;
use skiff_api::meta::{DeleteOptions, PropagationPolicy};
use skiff_client::Client;

use crate::BadInput;
use crate::cluster::{Target, block_on, kind_word, parse_kind};
use crate::manifests;

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Cascade {
    Background,
    Foreground,
}

/// How long a foreground deletion is waited for.
const FOREGROUND_WAIT: Duration = Duration::from_secs(300);

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// KIND NAME... (or use -f).
    args: Vec<String>,
    /// Delete the objects of these manifests.
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    files: Vec<PathBuf>,
    #[arg(short, long)]
    namespace: Option<String>,
    /// Succeed when an object is already gone.
    #[arg(long)]
    ignore_not_found: bool,
    /// `background`: the object goes now, what it owns after it.
    /// `foreground`: what it owns goes first; waits until the object is
    /// gone too.
    #[arg(long, value_enum, default_value = "background")]
    cascade: Cascade,
    /// Tokens only: delete cluster-level tokens (cluster-admin and node
    /// tokens, or any token), rather than the namespace's.
    #[arg(long)]
    cluster_scope: bool,
    /// Check everything the delete would, without deleting.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    target: Target,
}

pub fn run(args: DeleteArgs) -> Result<()> {
    if let [word, ids @ ..] = args.args.as_slice()
        && crate::tokens::named(word)
    {
        if ids.is_empty() {
            return Err(BadInput("give the ids of the tokens to delete".into()).into());
        }
        let session = args.target.connect()?;
        let namespace = (!args.cluster_scope)
            .then(|| args.namespace.clone().unwrap_or(session.namespace.clone()));
        return crate::tokens::delete(&session, namespace.as_deref(), ids);
    }
    let mut targets = Vec::new();
    match (args.files.is_empty(), args.args.as_slice()) {
        (false, []) => {
            for file in &args.files {
                for manifest in manifests::read(file)? {
                    let namespace = manifest.namespace().map(str::to_owned);
                    targets.push((manifest.kind, namespace, manifest.name().to_owned()));
                }
            }
        }
        (true, [kind, names @ ..]) if !names.is_empty() => {
            let kind = parse_kind(kind)?;
            for name in names {
                targets.push((kind, None, name.clone()));
            }
        }
        _ => return Err(BadInput("give KIND NAME... or -f FILE, not both".into()).into()),
    }
    let session = args.target.connect()?;
    block_on(async {
        for (kind, manifest_namespace, name) in targets {
            let namespace = manifest_namespace
                .filter(|_| kind.namespaced())
                .or_else(|| session.namespace_for(kind, args.namespace.as_deref()));
            let options = DeleteOptions {
                propagation_policy: (args.cascade == Cascade::Foreground)
                    .then_some(PropagationPolicy::Foreground),
                dry_run: if args.dry_run {
                    vec!["All".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            };
            let client = &session.client;
            match client
                .delete_with(kind, namespace.as_deref(), &name, &options)
                .await
            {
                Ok(_) if args.dry_run => {
                    println!("{} \"{name}\" deleted (dry run)", kind_word(kind));
                }
                Ok(_) => {
                    if args.cascade == Cascade::Foreground {
                        wait_gone(client, kind, namespace.as_deref(), &name).await?;
                    }
                    println!("{} \"{name}\" deleted", kind_word(kind));
                }
                Err(e) if e.is_not_found() && args.ignore_not_found => {}
                Err(e) => return Err(anyhow!(e)),
            }
        }
        Ok(())
    })?
}

/// Waits until a foreground deletion has taken the object itself.
async fn wait_gone(client: &Client, kind: Kind, namespace: Option<&str>, name: &str) -> Result<()> {
    let started = Instant::now();
    loop {
        match client.get(kind, namespace, name).await {
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(anyhow!(e)),
            Ok(_) if started.elapsed() > FOREGROUND_WAIT => bail!(
                "{} \"{name}\" is still waiting for its dependents after {}s",
                kind_word(kind),
                FOREGROUND_WAIT.as_secs()
            ),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
