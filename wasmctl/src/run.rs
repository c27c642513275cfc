//! `wasmctl run`: run a component on this machine with the semantics a
//! cluster gives it: the same runtime, limits and deny-by-default sandbox.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_wasm::quantity::{self, format_bytes, format_duration};
use skiff_wasm::{
    AllowList, AllowRule, App, CacheOutcome, CommandApp, DirGrant, Engine, EngineConfig,
    GuestFailure, HttpApp, Limits, LoadedComponent, Sandbox, Stdio, limits,
};

use crate::{BadInput, cargo_project};
use skiff_oci::OciError;

/// Exit code when a command guest traps or exceeds its fuel or memory, as a
/// process killed by SIGABRT would report it.
const EXIT_GUEST_TRAPPED: u8 = 134;
/// Exit code when a command guest exceeds its timeout, as `timeout(1)` does.
const EXIT_GUEST_TIMED_OUT: u8 = 124;
/// How long in-flight requests may take to finish after Ctrl-C or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Run a component locally: serve a wasi:http component, or run a wasi:cli
/// command to completion (its exit code becomes wasmctl's).
#[derive(clap::Args)]
#[command(
    after_help = "Guests get no files, environment or network unless granted with \
--dir, --env and --allow-outbound."
)]
pub struct RunArgs {
    /// A component (.wasm); a Cargo project (a directory or its Cargo.toml)
    /// to build for wasm32-wasip2 in release mode; or a registry reference
    /// (REGISTRY/REPOSITORY:TAG) to pull.
    target: PathBuf,

    /// Arguments for a command component.
    #[arg(last = true, value_name = "ARGS")]
    args: Vec<String>,

    /// Address to serve an HTTP component on (port 0 picks a free one).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    listener: skiff_serve::Limits,

    /// Set an environment variable in the guest; KEY alone passes this
    /// shell's value. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// Preopen a host directory for the guest, at GUEST (default: the same
    /// path), read-only with `:ro`. Repeatable.
    #[arg(long = "dir", value_name = "HOST[::GUEST][:ro]", value_parser = DirGrant::parse)]
    dirs: Vec<DirGrant>,

    /// Allow outbound HTTP to a destination; everything else is denied.
    /// HOST may be `*.domain` or `*`; PORT may be `*`. Repeatable.
    #[arg(
        long = "allow-outbound",
        value_name = "[SCHEME://]HOST[:PORT]",
        value_parser = AllowRule::parse
    )]
    allow_outbound: Vec<AllowRule>,

    /// Linear memory per instance (e.g. 64Mi, 1Gi).
    #[arg(long, value_name = "SIZE", default_value = "128Mi", value_parser = quantity::parse_bytes)]
    memory: u64,

    /// Fuel per request or run (e.g. 50M); off unless given.
    #[arg(long, value_name = "AMOUNT", value_parser = quantity::parse_fuel)]
    fuel: Option<u64>,

    /// Wall-clock limit per request or run (e.g. 500ms, 30s, 2m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = quantity::parse_duration)]
    timeout: Duration,

    /// Instances that may run at once; further requests wait their turn.
    #[arg(long, value_name = "N", default_value_t = limits::DEFAULT_MAX_INSTANCES)]
    max_instances: u32,

    /// Where compiled components are cached [default: $XDG_CACHE_HOME/wasmctl
    /// or ~/.cache/wasmctl].
    #[arg(long, value_name = "DIR", env = "WASMCTL_CACHE_DIR")]
    cache_dir: Option<PathBuf>,

    /// Compile the component afresh and do not cache it.
    #[arg(long, conflicts_with = "cache_dir")]
    no_cache: bool,

    /// containerd's socket, for registry references that are ordinary
    /// Linux images rather than components.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd_socket: PathBuf,

    #[command(flatten)]
    registry: crate::registry::RegistryArgs,
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let component_path = match cargo_project::manifest_of(&args.target) {
        Some(manifest) => cargo_project::build(&manifest)?,
        None if crate::registry::is_reference(&args.target) => match pull_to_cache(&args) {
            Err(e) if matches!(e.downcast_ref(), Some(OciError::LinuxImage { .. })) => {
                return run_linux(&args);
            }
            other => other?,
        },
        None if args.target.is_dir() => {
            return Err(BadInput(format!(
                "{}: is a directory without a Cargo.toml; give a component (.wasm) or a Cargo project",
                args.target.display()
            ))
            .into());
        }
        None => args.target.clone(),
    };
    let limits = Limits {
        memory: args.memory,
        fuel: args.fuel,
        timeout: args.timeout,
        max_instances: args.max_instances,
    };
    limits.validate().map_err(|e| BadInput(e.to_string()))?;

    let cache_dir = if args.no_cache {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let runtime = Engine::new(EngineConfig::for_limits(&limits, cache_dir))?;
    let loaded = runtime
        .load_file(&component_path)
        .map_err(|e| BadInput(e.to_string()))?;
    report_loaded(&loaded);

    let sandbox = Sandbox {
        env: args.env.clone(),
        args: args.args.clone(),
        dirs: args.dirs.clone(),
        outbound: Arc::new(AllowList::new(args.allow_outbound.clone())),
        services: None,
        // Loopback and private addresses stay closed unless a rule names
        // them; a developer's machine has no node addresses to add.
        denied_addresses: Arc::default(),
        stdio: Stdio::Inherit,
    };
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        let app = runtime
            .prepare(&loaded, limits, sandbox)
            .await
            .map_err(|e| BadInput(e.to_string()))?;
        match app {
            App::Http(app) => serve(app, &args).await,
            App::Command(app) => Ok(run_command(&app, loaded.name()).await),
        }
    })
}

async fn serve(app: HttpApp, args: &RunArgs) -> Result<ExitCode> {
    if !args.args.is_empty() {
        tracing::warn!(
            "arguments after `--` are for command components; an HTTP component gets none"
        );
    }
    let listener = skiff_serve::bind(args.listen)
        .await
        .map_err(|e| BadInput(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr()?;
    let limits = app.limits();
    eprintln!(
        "Serving http://{addr}/ (memory {}, timeout {}, fuel {}, max {} instances)",
        format_bytes(limits.memory),
        format_duration(limits.timeout),
        limits.fuel.map_or("unlimited".into(), |f| f.to_string()),
        limits.max_instances,
    );
    eprintln!("Try: curl http://{addr}/    (Ctrl-C stops)");
    let options = skiff_serve::Options {
        limits: args.listener.clone(),
        ..skiff_serve::Options::http1(SHUTDOWN_GRACE)
    };
    wasm_node::ingress::serve(app, listener, options, shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

async fn run_command(app: &CommandApp, name: &str) -> ExitCode {
    match app.run().await {
        // Unix keeps the low 8 bits of an exit status; so does this.
        Ok(code) => ExitCode::from(code as u8),
        Err(failure) => {
            eprintln!("error: {name}: {failure}");
            match failure {
                GuestFailure::Timeout(_) => ExitCode::from(EXIT_GUEST_TIMED_OUT),
                _ => ExitCode::from(EXIT_GUEST_TRAPPED),
            }
        }
    }
}

/// Runs an ordinary Linux image through containerd, as a pod would run on
/// a node: its output goes to ours, its exit code becomes ours, and an HTTP
/// server in it finds its port in PORT (`--listen`'s port; the container
/// shares the host's network). Ctrl-C stops it.
fn run_linux(args: &RunArgs) -> Result<ExitCode> {
    use wasm_node::runtimes::linux::containerd::{Containerd, RunSpec, image_defaults};
    let text = args.target.to_string_lossy().into_owned();
    let reference = skiff_oci::parse_reference(&text).map_err(|e| BadInput(e.to_string()))?;
    let credentials = args.registry.credentials()?;
    let registry = args.registry.registry();
    crate::cluster::block_on(async {
        let containerd = Containerd::connect(&args.containerd_socket, "overlayfs")
            .await
            .map_err(|e| {
                BadInput(format!(
                    "{text} is a Linux container image, which runs through containerd: {e}"
                ))
            })?;
        let digest = registry.resolve(&reference, &credentials).await?;
        let pinned = skiff_oci::parse_reference(&format!(
            "{}/{}@{digest}",
            reference.resolve_registry(),
            reference.repository()
        ))?;
        let image = registry.pull_linux(&pinned, &credentials).await?;
        let (namespace, id) = ("wasmctl", format!("run-{}", std::process::id()));
        let top = containerd.unpack(namespace, &id, &image).await?;
        let (mut argv, mut env, cwd, _) = image_defaults(&image.config.bytes);
        if !args.args.is_empty() {
            argv.clone_from(&args.args);
        }
        env.extend(args.env.iter().cloned());
        env.push(("PORT".into(), args.listen.port().to_string()));
        // The container's stdout and stderr FIFOs, in a directory of this run.
        let fifos = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&fifos).with_context(|| format!("creating {}", fifos.display()))?;
        let spec = RunSpec {
            args: argv,
            env,
            cwd,
            hostname: "wasmctl".into(),
            memory_bytes: Some(args.memory),
            binds: args
                .dirs
                .iter()
                .map(|d| (d.host.clone(), d.guest.clone(), d.read_only))
                .collect(),
            output_dir: fifos.clone(),
            output: Some(wasm_node::runtimes::linux::containerd::LogOutput(Arc::new(
                Print,
            ))),
            ..Default::default()
        };
        let started = containerd
            .start(namespace, &id, &id, &text, &top, &spec)
            .await?;
        let wait = containerd.wait(namespace, &id);
        tokio::pin!(wait);
        let exit = tokio::select! {
            exit = &mut wait => Some(exit),
            _ = tokio::signal::ctrl_c() => None,
        };
        let exit = match exit {
            Some(exit) => exit?,
            None => {
                containerd.signal(namespace, &id, 15).await?;
                wait.await?
            }
        };
        containerd.remove_container(namespace, &id).await?;
        started.log.finish(Duration::from_secs(10)).await;
        containerd.release(namespace, &id).await?;
        let _ = std::fs::remove_dir_all(&fifos);
        if exit.oom_killed {
            tracing::warn!("{text}: killed for exceeding its memory limit");
        }
        Ok(ExitCode::from(u8::try_from(exit.code).unwrap_or(u8::MAX)))
    })?
}

/// A container's output, printed as it comes: its stdout on ours, its
/// stderr on ours.
struct Print;

impl skiff_wasm::LogSink for Print {
    fn line(&self, stream: skiff_wasm::LogStream, _request: Option<&[u8]>, text: &[u8]) {
        use std::io::Write;
        let _ = match stream {
            skiff_wasm::LogStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(text).and_then(|()| out.write_all(b"\n"))
            }
            skiff_wasm::LogStream::Stderr => {
                let mut out = std::io::stderr().lock();
                out.write_all(text).and_then(|()| out.write_all(b"\n"))
            }
        };
    }
}

/// Pulls a registry reference into the local cache and returns the file.
fn pull_to_cache(args: &RunArgs) -> Result<PathBuf> {
    let text = args.target.to_string_lossy();
    let reference = skiff_oci::parse_reference(&text).map_err(|e| BadInput(e.to_string()))?;
    let pulled = crate::registry::pull_component(&args.registry, &reference)?;
    let dir = args
        .cache_dir
        .clone()
        .or_else(default_cache_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("pulled");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.wasm", pulled.layer_digest.replace(':', "-")));
    std::fs::write(&path, &pulled.component)
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!("pulled {} ({})", reference.whole(), pulled.manifest_digest);
    Ok(path)
}

fn report_loaded(loaded: &LoadedComponent) {
    let took = loaded.ready_in();
    match loaded.cache_outcome() {
        CacheOutcome::Hit => tracing::info!(
            "loaded {} from the compilation cache in {took:.1?}",
            loaded.name()
        ),
        CacheOutcome::Compiled => tracing::info!(
            "compiled {} in {took:.1?} (cached for the next start)",
            loaded.name()
        ),
        CacheOutcome::CompiledUncached => {
            tracing::info!("compiled {} in {took:.1?}", loaded.name())
        }
        CacheOutcome::Shared => tracing::info!("{} was already loaded", loaded.name()),
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("Shutting down: finishing requests in flight");
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))?;
    Some(base.join("wasmctl"))
}

/// `KEY=VALUE`, or `KEY` to pass this process's value through.
fn parse_env(input: &str) -> Result<(String, String), String> {
    let (key, value) = match input.split_once('=') {
        Some((key, value)) => (key, value.to_owned()),
        None => (
            input,
            std::env::var(input).map_err(|_| {
                format!("`{input}` is not set in this shell; give a value with {input}=VALUE")
            })?,
        ),
    };
    if key.is_empty() || key.contains('\0') || value.contains('\0') {
        return Err(format!("`{input}` is not KEY=VALUE with a non-empty KEY"));
    }
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_takes_key_value_or_passes_a_key_through() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), String::new())));
        assert!(parse_env("=x").is_err());
        let err = parse_env("WASMCTL_SURELY_UNSET_VARIABLE").unwrap_err();
        assert!(err.contains("is not set"), "{err}");
        // PATH is set wherever tests run.
        assert_eq!(parse_env("PATH").unwrap().0, "PATH");
    }
}
