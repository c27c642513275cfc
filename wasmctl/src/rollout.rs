//! `wasmctl rollout status|history|undo|pause|resume` and `wasmctl scale`:
//! a Deployment's rollouts as kubectl shows them. Revisions live in the
//! Deployment's status, so each verb is one read and at most one write.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::kinds::deployment::{Deployment, Revision};
use skiff_client::Client;

use crate::BadInput;
use crate::cluster::{Target, block_on, parse_kind};

#[derive(clap::Subcommand)]
pub enum RolloutCommand {
    /// Wait until the rollout finishes; exit 1 if it fails or times out.
    Status(StatusArgs),
    /// List the Deployment's revisions.
    History(HistoryArgs),
    /// Roll back to the previous revision, or to --to-revision.
    Undo(UndoArgs),
    /// Stop rolling out template changes (lost pods are still replaced).
    Pause(DeploymentArgs),
    /// Roll out template changes again.
    Resume(DeploymentArgs),
}

#[derive(clap::Args)]
pub struct DeploymentArgs {
    /// `deployment/NAME`, `deploy/NAME` or `NAME`.
    deployment: String,
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    deployment: DeploymentArgs,
    /// Give up after this long, e.g. `90s` or `2m`.
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    timeout: Duration,
}

#[derive(clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    deployment: DeploymentArgs,
    /// Show one revision's pod template.
    #[arg(long)]
    revision: Option<u32>,
}

#[derive(clap::Args)]
pub struct UndoArgs {
    #[command(flatten)]
    deployment: DeploymentArgs,
    /// The revision to go back to; default the one before the current.
    #[arg(long)]
    to_revision: Option<u32>,
}

#[derive(clap::Args)]
pub struct ScaleArgs {
    #[command(flatten)]
    deployment: DeploymentArgs,
    #[arg(long)]
    replicas: u32,
}

#[derive(clap::Args)]
pub struct AutoscaleArgs {
    /// `deployment NAME`, `deployment/NAME` or `NAME`.
    #[arg(num_args = 1..=2, required = true)]
    target: Vec<String>,
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    cluster: Target,
    /// Fewest replicas; 0 lets the Deployment scale to zero when idle.
    #[arg(long, default_value_t = 0)]
    min: u32,
    /// Most replicas.
    #[arg(long, required_unless_present = "off")]
    max: Option<u32>,
    /// Requests in flight per pod to aim at [default: 100].
    #[arg(long)]
    concurrency: Option<u32>,
    /// How long a lower load (or no request at all, for the last pod)
    /// must last before pods go, e.g. `30s` [default: 30s].
    #[arg(long, value_parser = parse_timeout)]
    scale_down_delay: Option<Duration>,
    /// Stop autoscaling: the replicas stay where the autoscaler left them.
    #[arg(long, conflicts_with_all = ["max", "concurrency", "scale_down_delay"])]
    off: bool,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    skiff_api::quantity::parse_duration(text).map_err(|e| e.to_string())
}

/// The Deployment's name from `deployment/NAME`, `deploy/NAME` or `NAME`.
fn deployment_name(text: &str) -> Result<&str> {
    match text.split_once('/') {
        Some((kind, name)) => {
            if parse_kind(kind)? != Kind::Deployment {
                bail!(BadInput(format!(
                    "`{text}`: rollouts are of deployments, not {kind}"
                )));
            }
            Ok(name)
        }
        None => Ok(text),
    }
}

struct Opened<'a> {
    client: Client,
    namespace: String,
    name: &'a str,
}

impl DeploymentArgs {
    fn open(&self) -> Result<Opened<'_>> {
        let name = deployment_name(&self.deployment)?;
        let session = self.target.connect()?;
        let namespace = self.namespace.clone().unwrap_or(session.namespace);
        Ok(Opened {
            client: session.client,
            namespace,
            name,
        })
    }
}

impl Opened<'_> {
    async fn get(&self) -> Result<(Value, Deployment)> {
        let object = self
            .client
            .get(Kind::Deployment, Some(&self.namespace), self.name)
            .await?;
        let typed = serde_json::from_value(object.clone())?;
        Ok((object, typed))
    }

    async fn patch_spec(&self, spec: Value) -> Result<()> {
        self.client
            .patch(
                Kind::Deployment,
                Some(&self.namespace),
                self.name,
                &json!({ "spec": spec }),
                false,
            )
            .await?;
        Ok(())
    }
}

pub fn run(command: RolloutCommand) -> Result<std::process::ExitCode> {
    match command {
        RolloutCommand::Status(args) => status(args),
        RolloutCommand::History(args) => history(args).map(|()| std::process::ExitCode::SUCCESS),
        RolloutCommand::Undo(args) => undo(args).map(|()| std::process::ExitCode::SUCCESS),
        RolloutCommand::Pause(args) => pause(args, true).map(|()| std::process::ExitCode::SUCCESS),
        RolloutCommand::Resume(args) => {
            pause(args, false).map(|()| std::process::ExitCode::SUCCESS)
        }
    }
}

/// Where a rollout stands, as one line; `Some(ok)` once it is over.
/// `target` is the revision being waited for, fixed when first observed, so
/// that a rollout rolled back automatically reads as failed even once the
/// rollback itself has finished.
fn progress(deployment: &Deployment, target: &mut Option<u32>) -> (String, Option<bool>) {
    let name = &deployment.metadata.name;
    let replicas = deployment.spec.replicas.unwrap_or(1);
    let Some(status) = &deployment.status else {
        return (format!("waiting for deployment \"{name}\" to start"), None);
    };
    if status.observed_generation < deployment.metadata.generation {
        return (
            format!("waiting for deployment \"{name}\" to be observed"),
            None,
        );
    }
    if deployment.spec.paused {
        return (format!("deployment \"{name}\" is paused"), Some(false));
    }
    let target = *target.get_or_insert(status.revision.unwrap_or(0));
    if let Some(failure) = status
        .history
        .iter()
        .find(|r| r.revision == target)
        .and_then(|r| r.failure.as_ref())
    {
        let back = match status.revision {
            Some(now) if now != target => format!(" (rolled back: revision {now} is current)"),
            _ => String::new(),
        };
        return (
            format!("deployment \"{name}\" revision {target} failed: {failure}{back}"),
            Some(false),
        );
    }
    if status.updated_replicas == replicas
        && status.replicas == replicas
        && status.ready_replicas == replicas
        && status.stable_revision == status.revision
    {
        let revision = status.revision.unwrap_or(0);
        return (
            format!("deployment \"{name}\" successfully rolled out (revision {revision})"),
            Some(true),
        );
    }
    let exceeded = status.conditions.iter().find(|c| {
        c.condition_type == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if let Some(condition) = exceeded {
        let message = condition.message.clone().unwrap_or_default();
        return (
            format!("deployment \"{name}\" failed: {message}"),
            Some(false),
        );
    }
    (
        format!(
            "waiting for deployment \"{name}\": {} of {replicas} updated replicas, {} ready, {} total",
            status.updated_replicas, status.ready_replicas, status.replicas
        ),
        None,
    )
}

fn status(args: StatusArgs) -> Result<std::process::ExitCode> {
    let opened = args.deployment.open()?;
    block_on(async {
        let started = Instant::now();
        let mut last = String::new();
        let mut target = None;
        loop {
            let (_, deployment) = opened.get().await?;
            let (line, done) = progress(&deployment, &mut target);
            match done {
                Some(true) => {
                    println!("{line}");
                    return Ok(std::process::ExitCode::SUCCESS);
                }
                Some(false) => {
                    eprintln!("error: {line}");
                    return Ok(std::process::ExitCode::FAILURE);
                }
                None if started.elapsed() >= args.timeout => {
                    eprintln!(
                        "error: timed out after {}s waiting for the rollout ({line})",
                        args.timeout.as_secs()
                    );
                    return Ok(std::process::ExitCode::FAILURE);
                }
                None => {
                    if line != last {
                        println!("{line}");
                        last = line;
                    }
                    // Status changes arrive a few times a second at most;
                    // a short poll keeps this simple and prompt.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    })?
}

fn history(args: HistoryArgs) -> Result<()> {
    let target = args.deployment.open()?;
    let (_, deployment) = block_on(target.get())??;
    let status = deployment.status.unwrap_or_default();
    if let Some(wanted) = args.revision {
        let revision = find(&status.history, wanted, target.name)?;
        print!("{}", serde_yaml_ng::to_string(&revision.template)?);
        return Ok(());
    }
    let mut rows = vec![vec![
        "REVISION".to_owned(),
        "STATE".into(),
        "CHANGE-CAUSE".into(),
    ]];
    for revision in &status.history {
        let state = if revision.failure.is_some() {
            "failed"
        } else if Some(revision.revision) == status.revision {
            "current"
        } else if Some(revision.revision) == status.stable_revision {
            "stable"
        } else {
            ""
        };
        rows.push(vec![
            revision.revision.to_string(),
            state.into(),
            revision
                .change_cause
                .clone()
                .or_else(|| revision.failure.clone())
                .unwrap_or_else(|| "<none>".into()),
        ]);
    }
    println!("deployment/{}", target.name);
    print!("{}", crate::table::render(&rows));
    Ok(())
}

fn find<'a>(history: &'a [Revision], wanted: u32, name: &str) -> Result<&'a Revision> {
    history
        .iter()
        .find(|r| r.revision == wanted)
        .ok_or_else(|| {
            let known: Vec<String> = history.iter().map(|r| r.revision.to_string()).collect();
            BadInput(format!(
                "deployment/{name} has no revision {wanted} (it has {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
            .into()
        })
}

fn undo(args: UndoArgs) -> Result<()> {
    let target = args.deployment.open()?;
    block_on(async {
        let (mut object, deployment) = target.get().await?;
        let status = deployment.status.unwrap_or_default();
        let revision = match args.to_revision {
            Some(wanted) => find(&status.history, wanted, target.name)?,
            None => status
                .history
                .iter()
                .filter(|r| Some(r.revision) < status.revision)
                .max_by_key(|r| r.revision)
                .ok_or_else(|| {
                    BadInput(format!(
                        "deployment/{} has no revision before the current one",
                        target.name
                    ))
                })?,
        };
        // The whole template is replaced (a merge patch would merge maps),
        // conditional on the version read.
        object["spec"]["template"] = serde_json::to_value(&revision.template)?;
        target
            .client
            .replace(
                Kind::Deployment,
                Some(&target.namespace),
                target.name,
                &object,
            )
            .await?;
        println!(
            "deployment/{} rolled back to revision {}",
            target.name, revision.revision
        );
        Ok(())
    })?
}

fn pause(args: DeploymentArgs, paused: bool) -> Result<()> {
    let target = args.open()?;
    block_on(target.patch_spec(json!({ "paused": paused })))??;
    let word = if paused { "paused" } else { "resumed" };
    println!("deployment/{} {word}", target.name);
    Ok(())
}

pub fn scale(args: ScaleArgs) -> Result<()> {
    let target = args.deployment.open()?;
    block_on(target.patch_spec(json!({ "replicas": args.replicas })))??;
    println!("deployment/{} scaled to {}", target.name, args.replicas);
    Ok(())
}

/// `wasmctl autoscale deployment NAME --min 0 --max 20 --concurrency 50`:
/// sets (or with `--off` removes) the Deployment's `spec.autoscaling`.
pub fn autoscale(args: AutoscaleArgs) -> Result<()> {
    let name = match args.target.as_slice() {
        [one] => deployment_name(one)?.to_owned(),
        [kind, name] => {
            if parse_kind(kind)? != Kind::Deployment {
                bail!(BadInput(format!(
                    "`{kind}`: only deployments are autoscaled"
                )));
            }
            name.clone()
        }
        _ => unreachable!("clap takes one or two"),
    };
    let deployment = DeploymentArgs {
        deployment: name,
        namespace: args.namespace,
        target: args.cluster,
    };
    let target = deployment.open()?;
    if args.off {
        block_on(target.patch_spec(json!({ "autoscaling": null })))??;
        println!("deployment/{} autoscaling off", target.name);
        return Ok(());
    }
    let max = args.max.expect("clap requires --max without --off");
    if max == 0 || args.min > max {
        bail!(BadInput(format!(
            "--min {} --max {max}: max must be at least 1 and at least min",
            args.min
        )));
    }
    if args.concurrency == Some(0) {
        bail!(BadInput("--concurrency: must be at least 1".into()));
    }
    let mut autoscaling = json!({ "minReplicas": args.min, "maxReplicas": max });
    if let Some(concurrency) = args.concurrency {
        autoscaling["targetConcurrency"] = concurrency.into();
    }
    if let Some(delay) = args.scale_down_delay {
        autoscaling["scaleDownDelay"] = skiff_api::quantity::format_duration(delay).into();
    }
    block_on(target.patch_spec(json!({ "autoscaling": autoscaling })))??;
    println!(
        "deployment/{} autoscaled from {} to {max} replicas",
        target.name, args.min
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployments_are_named_like_kubectl_names_them() {
        assert_eq!(deployment_name("web").unwrap(), "web");
        assert_eq!(deployment_name("deployment/web").unwrap(), "web");
        assert_eq!(deployment_name("deploy/web").unwrap(), "web");
        let wrong = deployment_name("pod/web").unwrap_err().to_string();
        assert!(wrong.contains("not pod"), "{wrong}");
    }

    fn deployment(status: Value) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "skiff.dev/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "generation": 2},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn progress_reads_the_status() {
        let progress = |d: &Deployment| progress(d, &mut None);
        let (line, done) = progress(&deployment(json!({"observedGeneration": 1})));
        assert_eq!(done, None);
        assert!(line.contains("observed"), "{line}");
        let (line, done) = progress(&deployment(json!({
            "observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "readyReplicas": 2,
            "revision": 2, "stableRevision": 1,
        })));
        assert_eq!(done, None);
        assert!(line.contains("1 of 2 updated"), "{line}");
        let (line, done) = progress(&deployment(json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
            "revision": 2, "stableRevision": 2,
        })));
        assert_eq!(done, Some(true));
        assert!(
            line.contains("successfully rolled out (revision 2)"),
            "{line}"
        );
        let (line, done) = progress(&deployment(json!({
            "observedGeneration": 2, "revision": 3, "stableRevision": 2,
            "conditions": [{"type": "Progressing", "status": "False",
                "reason": "ProgressDeadlineExceeded", "message": "too slow"}],
        })));
        assert_eq!(done, Some(false));
        assert!(line.contains("failed: too slow"), "{line}");
        // Waiting for revision 3, which then failed and was rolled back:
        // a failure even once revision 4 (the old template) is complete.
        let mut target = Some(3);
        let rolled_back = deployment(json!({
            "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
            "revision": 4, "stableRevision": 4,
            "history": [
                {"revision": 3, "templateHash": "x", "template": {}, "created": "t", "failure": "stuck"},
                {"revision": 4, "templateHash": "y", "template": {}, "created": "t"},
            ],
        }));
        let (line, done) = super::progress(&rolled_back, &mut target);
        assert_eq!(done, Some(false));
        assert!(
            line.contains("revision 3 failed: stuck (rolled back: revision 4 is current)"),
            "{line}"
        );
        assert_eq!(progress(&rolled_back).1, Some(true));
    }
}
