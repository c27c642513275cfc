//! `wasmctl`, the Skiff command line. One module per verb.

mod apply;
mod cargo_project;
mod cluster;
mod config;
mod create;
mod delete;
mod describe;
mod dev;
mod get;
mod logs;
mod manifests;
mod node;
mod policy;
mod registry;
mod rollout;
mod run;
mod table;
mod tokens;
mod top;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for input that cannot be run: a bad flag, a file that is not a
/// component, a project that does not build. Clap uses it for usage errors
/// too.
pub const EXIT_BAD_INPUT: u8 = 2;

#[derive(Parser)]
#[command(
    name = "wasmctl",
    version,
    about = "Run and manage WebAssembly components with Skiff"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Run(run::RunArgs),
    /// Run a whole single-node cluster on this machine.
    Dev(dev::DevArgs),
    /// Push a component to an OCI registry.
    Push(registry::PushArgs),
    /// Pull a component from an OCI registry.
    Pull(registry::PullArgs),
    /// Create or update objects from manifests (YAML or JSON).
    Apply(apply::ApplyArgs),
    /// List objects, or show some, as a table, YAML or JSON.
    Get(get::GetArgs),
    /// Show objects in detail.
    Describe(describe::DescribeArgs),
    /// Print a pod's output (or a Deployment's, or those -l picks).
    Logs(logs::LogsArgs),
    /// Show pods' or nodes' CPU, memory and request rates.
    #[command(subcommand)]
    Top(top::TopCommand),
    /// Delete objects by name or by manifest.
    Delete(delete::DeleteArgs),
    /// Create a namespace, a token, a Secret or a ConfigMap.
    #[command(subcommand)]
    Create(create::CreateCommand),
    /// Follow, inspect, undo, pause and resume a Deployment's rollouts.
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Set a Deployment's number of replicas.
    Scale(rollout::ScaleArgs),
    /// Have a Deployment's replicas follow its load, down to zero if asked.
    Autoscale(rollout::AutoscaleArgs),
    /// Set a namespace's tenant policy (cluster admins).
    #[command(subcommand)]
    Set(SetCommand),
    /// Stop scheduling pods on a node.
    Cordon(node::NodeArgs),
    /// Schedule pods on a node again.
    Uncordon(node::NodeArgs),
    /// Cordon a node and move its pods to other nodes.
    Drain(node::NodeArgs),
    /// Manage contexts: which cluster, token and namespace to use.
    Config {
        #[command(subcommand)]
        command: config::ConfigCommand,
        /// Config file [default: $WASMCTL_CONFIG or ~/.config/wasmctl/config.yaml].
        #[arg(long, global = true, value_name = "FILE")]
        config: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum SetCommand {
    /// Pod security level, egress ceiling, Route hosts, priority ceiling.
    Policy(policy::SetPolicyArgs),
}

/// An error caused by the user's input rather than by the system: reported
/// as one line with exit code [`EXIT_BAD_INPUT`].
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Dev(args) => dev::run(args).map(|()| ExitCode::SUCCESS),
        Command::Push(args) => registry::push(args).map(|()| ExitCode::SUCCESS),
        Command::Pull(args) => registry::pull(args).map(|()| ExitCode::SUCCESS),
        Command::Apply(args) => apply::run(args).map(|()| ExitCode::SUCCESS),
        Command::Get(args) => get::run(args).map(|()| ExitCode::SUCCESS),
        Command::Describe(args) => describe::run(args).map(|()| ExitCode::SUCCESS),
        Command::Logs(args) => logs::run(args).map(|()| ExitCode::SUCCESS),
        Command::Top(command) => top::run(command).map(|()| ExitCode::SUCCESS),
        Command::Delete(args) => delete::run(args).map(|()| ExitCode::SUCCESS),
        Command::Create(command) => create::run(command).map(|()| ExitCode::SUCCESS),
        Command::Rollout(command) => rollout::run(command),
        Command::Scale(args) => rollout::scale(args).map(|()| ExitCode::SUCCESS),
        Command::Autoscale(args) => rollout::autoscale(args).map(|()| ExitCode::SUCCESS),
        Command::Set(SetCommand::Policy(args)) => policy::set(args).map(|()| ExitCode::SUCCESS),
        Command::Cordon(args) => node::cordon(args, true).map(|()| ExitCode::SUCCESS),
        Command::Uncordon(args) => node::cordon(args, false).map(|()| ExitCode::SUCCESS),
        Command::Drain(args) => node::drain(args).map(|()| ExitCode::SUCCESS),
        Command::Config { command, config } => {
            config::run(command, config.as_deref()).map(|()| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(EXIT_BAD_INPUT)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("wasmctl=info,wasm_node=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
