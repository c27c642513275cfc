//! `wasmctl push` and `wasmctl pull`: components to and from OCI
//! registries, in the CNCF Wasm artifact layout.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use skiff_oci::{self as oci, Credentials, Registry};

use crate::{BadInput, cargo_project};

/// Registry credentials, for push, pull and run.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RegistryArgs {
    /// User name for basic authentication; the password comes from
    /// WASMCTL_REGISTRY_PASSWORD or, with --password-stdin, stdin.
    #[arg(long)]
    username: Option<String>,
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// A registry (host:port) to reach over plain HTTP (loopback ones always
    /// are). Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure: Vec<String>,
}

impl RegistryArgs {
    pub fn credentials(&self) -> Result<Credentials> {
        if let Some(username) = &self.username {
            let password = if self.password_stdin {
                let mut password = String::new();
                std::io::stdin().read_to_string(&mut password)?;
                password.trim_end_matches(['\n', '\r']).to_owned()
            } else {
                std::env::var("WASMCTL_REGISTRY_PASSWORD").map_err(|_| {
                    BadInput("--username needs a password: set WASMCTL_REGISTRY_PASSWORD or pass --password-stdin".into())
                })?
            };
            return Ok(Credentials::Basic {
                username: username.clone(),
                password,
            });
        }
        if let Ok(token) = std::env::var("WASMCTL_REGISTRY_TOKEN") {
            return Ok(Credentials::Bearer(token));
        }
        Ok(Credentials::Anonymous)
    }

    pub fn registry(&self) -> Registry {
        Registry::new(&self.insecure)
    }
}

#[derive(clap::Args)]
pub struct PushArgs {
    /// A component (.wasm) or a Cargo project to build first.
    source: PathBuf,
    /// Where to push: REGISTRY/REPOSITORY:TAG.
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY:TAG or REGISTRY/REPOSITORY@sha256:...
    reference: String,
    /// Where to write the component [default: REPOSITORY's last part.wasm].
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn push(args: PushArgs) -> Result<()> {
    let path = match cargo_project::manifest_of(&args.source) {
        Some(manifest) => cargo_project::build(&manifest)?,
        None => args.source.clone(),
    };
    let component = std::fs::read(&path)
        .map_err(|e| BadInput(format!("{}: cannot read: {e}", path.display())))?;
    let reference = oci::parse_reference(&args.reference).map_err(|e| BadInput(e.to_string()))?;
    let credentials = args.registry.credentials()?;
    let registry = args.registry.registry();
    let total = component.len() as u64;
    let show = std::io::stderr().is_terminal() && total > 1 << 20;
    let digest = crate::cluster::block_on(registry.push(
        &reference,
        component,
        &credentials,
        move |sent, total| {
            if show {
                progress_bar(sent, total);
            }
        },
    ))?
    .map_err(push_error)?;
    if show {
        eprintln!();
    }
    eprintln!("pushed {} ({})", reference.whole(), human(total));
    println!("{digest}");
    Ok(())
}

fn push_error(e: oci::OciError) -> anyhow::Error {
    match e {
        e @ (oci::OciError::NotWasm { .. }
        | oci::OciError::TooLarge { .. }
        | oci::OciError::Reference(..)) => BadInput(e.to_string()).into(),
        e => e.into(),
    }
}

pub fn pull(args: PullArgs) -> Result<()> {
    let reference = oci::parse_reference(&args.reference).map_err(|e| BadInput(e.to_string()))?;
    let output = args.output.clone().unwrap_or_else(|| {
        let name = reference
            .repository()
            .rsplit('/')
            .next()
            .unwrap_or("component");
        PathBuf::from(format!("{name}.wasm"))
    });
    let pulled = pull_component(&args.registry, &reference)?;
    std::fs::write(&output, &pulled.component)
        .with_context(|| format!("writing {}", output.display()))?;
    eprintln!(
        "pulled {} to {} ({})",
        reference.whole(),
        output.display(),
        human(pulled.component.len() as u64)
    );
    println!("{}", pulled.manifest_digest);
    Ok(())
}

/// Resolves and pulls a component, every blob checked against its digest.
pub fn pull_component(registry: &RegistryArgs, reference: &oci::Reference) -> Result<oci::Pulled> {
    let credentials = registry.credentials()?;
    let client = registry.registry();
    crate::cluster::block_on(async {
        let digest = client.resolve(reference, &credentials).await?;
        let pinned = oci::parse_reference(&format!(
            "{}/{}@{digest}",
            reference.resolve_registry(),
            reference.repository()
        ))?;
        client.pull(&pinned, &credentials).await
    })?
    .map_err(Into::into)
}

/// Whether `target` names a registry artifact rather than a local path.
pub fn is_reference(target: &Path) -> bool {
    let Some(text) = target.to_str() else {
        return false;
    };
    !target.exists()
        && text.contains('/')
        && (text.contains(':') || text.contains('@'))
        && !text.starts_with('.')
        && !text.starts_with('/')
        && oci::parse_reference(text).is_ok()
}

fn progress_bar(sent: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (sent * WIDTH / total.max(1)) as usize;
    eprint!(
        "\r[{}{}] {} / {}",
        "#".repeat(filled),
        ".".repeat(WIDTH as usize - filled),
        human(sent),
        human(total)
    );
    let _ = std::io::stderr().flush();
}

fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}
