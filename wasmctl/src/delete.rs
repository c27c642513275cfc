//! `wasmctl delete -f FILE` or `wasmctl delete KIND NAME...`.

use std::path::PathBuf;

use anyhow::{Result, anyhow};

use crate::BadInput;
use crate::cluster::{Target, block_on, kind_word, parse_kind};
use crate::manifests;

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
    #[command(flatten)]
    target: Target,
}

pub fn run(args: DeleteArgs) -> Result<()> {
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
            match session
                .client
                .delete(kind, namespace.as_deref(), &name, None)
                .await
            {
                Ok(_) => println!("{} \"{name}\" deleted", kind_word(kind)),
                Err(e) if e.is_not_found() && args.ignore_not_found => {}
                Err(e) => return Err(anyhow!(e)),
            }
        }
        Ok(())
    })?
}
