//! One pod on this node: a task that drives the pod through its lifecycle
//! (pull, start, run, back off, stop) and reports each step to the API.
//! Which runtime runs the pod is the runtimes' business (`super::runtimes`):
//! the worker only sees an image that starts instances.

use skiff_api::kinds::event::{InvolvedObject, Severity};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::kinds::pod::{
    Condition, ImagePullPolicy, PartitionPolicy, Pod, PodPhase, PodSpec, PodStatus, Volume,
};
use skiff_api::outbound::AllowList;
use skiff_api::tokens::{BoundPod, ServiceAccountTokenRequest};
use tokio::sync::watch;

use super::NodeContext;
use super::lifecycle::{Backoff, Event, State, next};
use super::probes::{Prober, Verdict};
use crate::logs::PodLogs;
use crate::runtimes::{Artifact, Failure, Image, Instance, Launch, PodId};
use skiff_oci::{self as oci, Credentials};
use skiff_wasm::{DirGrant, Sandbox, ServiceGateway, Stdio};

/// A running pod worker.
pub struct PodHandle {
    pub uid: String,
    /// What to do with the pod while the node is cut off.
    pub partition_policy: PartitionPolicy,
    /// The pod's revision when its worker was started from what was read
    /// outside the pod watch (an activation's answer, the partition's
    /// read on renewal): a relist older than it knows nothing of the pod
    /// (see `agent::PodWatchPosition`).
    pub seen_outside_watch: Option<i64>,
    /// Set to the grace in-flight requests get, to stop the worker.
    stop: watch::Sender<Option<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodHandle {
    /// Asks the worker to stop and waits until it has (in-flight requests
    /// get the node's grace period).
    pub async fn stop(self) {
        self.stop_within(Duration::MAX).await;
    }

    /// As [`PodHandle::stop`], with in-flight requests given at most
    /// `grace`.
    pub async fn stop_within(self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
        let _ = self.task.await;
    }
}

pub fn spawn(context: Arc<NodeContext>, pod: Pod) -> PodHandle {
    let (stop, stopping) = watch::channel(None);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let partition_policy = pod.spec.partition_policy;
    let task = tokio::spawn(Worker::new(context, pod).run(stopping));
    PodHandle {
        uid,
        partition_policy,
        seen_outside_watch: None,
        stop,
        task,
    }
}

struct Worker {
    context: Arc<NodeContext>,
    namespace: String,
    name: String,
    uid: String,
    spec: PodSpec,
    state: State,
    status: Reported,
    reporter: watch::Sender<Option<PodStatus>>,
    /// Keeps the pod's service account token fresh while the pod lives.
    token_refresh: Option<AbortOnDrop>,
    /// Where the pod's stdout and stderr go; none if its directory could
    /// not be made (the output is then discarded).
    logs: Option<Arc<PodLogs>>,
}

/// A task that ends when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where a pod's guest finds its service account token (`token`) and its
/// namespace (`namespace`), as Kubernetes pods find theirs.
pub const ACCOUNT_TOKEN_MOUNT: &str = "/var/run/secrets/skiff/serviceaccount";

/// The token's directory within the pod's secrets directory: not a DNS
/// label, so no volume's name can be it.
const ACCOUNT_TOKEN_DIR: &str = ".serviceaccount";

/// What the worker tells the API about the pod.
#[derive(Clone)]
struct Reported {
    reason: Option<String>,
    message: Option<String>,
    restarts: u32,
    digest: Option<String>,
    endpoint: Option<String>,
    started: Option<String>,
    exit_code: Option<i32>,
    ready: Readiness,
}

impl Reported {
    fn status(&self, phase: PodPhase) -> PodStatus {
        PodStatus {
            phase,
            conditions: vec![self.ready.condition()],
            message: self.message.clone(),
            reason: self.reason.clone(),
            restart_count: self.restarts,
            image_digest: self.digest.clone(),
            endpoint: self.endpoint.clone(),
            start_time: self.started.clone(),
            exit_code: self.exit_code,
        }
    }
}

/// The Ready condition as reported: whether, and since when. The time
/// moves only when readiness does, as Kubernetes' lastTransitionTime.
#[derive(Debug, Clone, PartialEq)]
struct Readiness {
    ready: bool,
    since: String,
}

impl Readiness {
    /// As the pod's stored status has it, or not ready since `now`.
    fn of(status: Option<&PodStatus>, now: &str) -> Self {
        let stored = status
            .into_iter()
            .flat_map(|s| &s.conditions)
            .find(|c| c.condition_type == "Ready");
        match stored {
            Some(c) if c.last_transition_time.is_some() => Readiness {
                ready: c.status == "True",
                since: c.last_transition_time.clone().unwrap_or_default(),
            },
            _ => Readiness {
                ready: false,
                since: now.to_owned(),
            },
        }
    }

    fn set(&mut self, ready: bool, now: &str) {
        if ready != self.ready {
            self.ready = ready;
            self.since = now.to_owned();
        }
    }

    fn condition(&self) -> Condition {
        Condition {
            condition_type: "Ready".into(),
            status: if self.ready { "True" } else { "False" }.into(),
            reason: None,
            message: None,
            last_transition_time: Some(self.since.clone()),
            last_heartbeat_time: None,
        }
    }
}

/// A status as a merge patch: what the worker does not report is removed
/// (`null`), so a reason or message from an earlier state never lingers.
fn status_patch(status: &PodStatus, uid: &str) -> Value {
    let mut patch = serde_json::to_value(status).expect("a status serialises");
    for field in [
        "reason",
        "message",
        "imageDigest",
        "endpoint",
        "startTime",
        "exitCode",
    ] {
        patch
            .as_object_mut()
            .expect("a status is an object")
            .entry(field)
            .or_insert(Value::Null);
    }
    json!({"metadata": {"uid": uid}, "status": patch})
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Worker {
    fn new(context: Arc<NodeContext>, pod: Pod) -> Self {
        let (reporter, latest) = watch::channel(None);
        let namespace = pod.metadata.namespace.clone();
        let name = pod.metadata.name.clone();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        tokio::spawn(report_statuses(
            context.clone(),
            namespace.clone(),
            name.clone(),
            uid.clone(),
            latest,
        ));
        let logs = if context.logs.config().capture {
            context
                .logs
                .open(&namespace, &name, &uid)
                .inspect_err(|e| {
                    tracing::warn!("{namespace}/{name}: its log: {e}; its output is discarded")
                })
                .ok()
        } else {
            None
        };
        Self {
            logs,
            context,
            namespace,
            name,
            uid,
            spec: pod.spec,
            state: State::Pending,
            // The digest a tag resolved to is kept: a pod picked up again
            // (after a node restart) runs what it ran, not whatever the tag
            // names now.
            status: Reported {
                restarts: pod.status.as_ref().map_or(0, |s| s.restart_count),
                ready: Readiness::of(pod.status.as_ref(), &now_rfc3339()),
                digest: pod.status.and_then(|s| s.image_digest),
                reason: None,
                message: None,
                endpoint: None,
                started: None,
                exit_code: None,
            },
            reporter,
            token_refresh: None,
        }
    }

    fn move_on(&mut self, event: Event) {
        match next(self.state, &event, self.spec.restart_policy) {
            Some(state) => self.state = state,
            None => tracing::error!(
                "{}/{}: no transition from {:?} on {event:?}",
                self.namespace,
                self.name,
                self.state
            ),
        }
    }

    fn report(&self) {
        let _ = self
            .reporter
            .send(Some(self.status.status(self.state.phase())));
    }

    fn set_ready(&mut self, ready: bool) {
        self.status.ready.set(ready, &now_rfc3339());
        self.context.local_pods.set_ready(
            &(self.namespace.clone(), self.name.clone()),
            &self.uid,
            ready,
        );
    }

    fn set(&mut self, reason: Option<&str>, message: Option<String>) {
        self.status.reason = reason.map(str::to_owned);
        self.status.message = message;
        self.report();
    }

    /// Tells an Event about this pod.
    fn tell(&self, severity: Severity, reason: &str, message: &str) {
        let involved = InvolvedObject {
            kind: "Pod".into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        };
        self.context
            .events
            .emit(involved, severity, reason, message);
    }

    /// Reports a failed pull or start and moves the lifecycle on: a
    /// retryable failure backs off and tries again, a fatal one fails the
    /// pod. True when it will be retried.
    fn fail(&mut self, pod: &str, failure: Failure) -> bool {
        let (reason, message, retry) = match failure {
            Failure::Retry { reason, message } => (reason, message, true),
            Failure::Fatal { reason, message } => (reason, message, false),
        };
        tracing::warn!("{pod}: {message}");
        self.tell(Severity::Warning, "Failed", &format!("{reason}: {message}"));
        self.set(Some(reason), Some(message));
        self.move_on(if retry {
            Event::PullFailed
        } else {
            Event::Invalid
        });
        retry
    }

    async fn run(mut self, mut stopping: watch::Receiver<Option<Duration>>) {
        let pod = format!("{}/{}", self.namespace, self.name);
        let mut backoff = Backoff::new(self.context.backoff_base, self.context.backoff_cap);
        let mut pull_backoff = Backoff::new(self.context.backoff_base, self.context.backoff_cap);
        // The pulled image serves every restart.
        let mut image: Option<Box<dyn Image>> = None;
        let mut instance: Option<Box<dyn Instance>> = None;
        let mut ran_for = Duration::ZERO;
        // While getting the pod started fails and is retried: the reason
        // shown during the back-off (ImagePullBackOff, or the start's own,
        // such as CreateContainerError).
        let mut setup_failed: Option<&'static str> = None;
        self.move_on(Event::Begin);
        loop {
            match self.state {
                State::Pulling if image.is_some() => self.move_on(Event::Pulled),
                State::Pulling => {
                    // A retry keeps the last failure on show until the pull
                    // ends one way or the other: a reader should never see
                    // the reason vanish.
                    // What the node already holds, and may use without
                    // asking the registry, is not pulled: an Event saying
                    // so would be one more write on every cold start.
                    let present = self.already_present();
                    if setup_failed.is_none() {
                        self.set(Some("Pulling"), None);
                        if !present {
                            let message = format!("pulling image {}", self.spec.image);
                            self.tell(Severity::Normal, "Pulling", &message);
                        }
                    }
                    let outcome = tokio::select! {
                        outcome = self.pull() => outcome,
                        _ = stopping.changed() => { self.move_on(Event::Stop); continue; }
                    };
                    match outcome {
                        Ok(pulled) => {
                            image = Some(pulled);
                            setup_failed = None;
                            let digest = self.status.digest.as_deref().unwrap_or("no digest");
                            let message = if present {
                                format!(
                                    "image {} ({digest}) already present on the node",
                                    self.spec.image
                                )
                            } else {
                                format!("pulled image {} ({digest})", self.spec.image)
                            };
                            self.tell(Severity::Normal, "Pulled", &message);
                            self.move_on(Event::Pulled);
                        }
                        Err(failure) => {
                            if self.fail(&pod, failure) {
                                setup_failed = Some("ImagePullBackOff");
                            }
                        }
                    }
                }
                State::Starting => {
                    // As for pulls, a retried start keeps its failure on show.
                    if setup_failed.is_none() {
                        self.set(Some("Starting"), None);
                        // A new run (not a retried start): the last run's
                        // output becomes the previous run's.
                        if let Some(logs) = &self.logs
                            && let Err(e) = logs.start_run().await
                        {
                            tracing::warn!("{pod}: rotating its log: {e}");
                        }
                    }
                    let image = image.as_mut().expect("pulled before starting");
                    let started = match self.sandbox().await {
                        Ok(sandbox) => {
                            let launch = Launch {
                                spec: &self.spec,
                                sandbox,
                                dir: self.pod_dir(),
                                secrets: (self.spec.automount_service_account_token
                                    || self.spec.volumes.iter().any(|v| v.secret.is_some()))
                                .then(|| self.secrets_dir()),
                            };
                            image.start(launch).await
                        }
                        Err(failure) => Err(failure),
                    };
                    match started {
                        Ok(started) => {
                            instance = Some(started);
                            setup_failed = None;
                            self.tell(Severity::Normal, "Started", "started the pod");
                            self.move_on(Event::Started);
                        }
                        Err(failure) => {
                            let reason = failure.reason();
                            if self.fail(&pod, failure) {
                                setup_failed = Some(reason);
                            }
                        }
                    }
                }
                State::Running => {
                    let instance = instance.take().expect("started before running");
                    let started = Instant::now();
                    self.status.started = Some(now_rfc3339());
                    self.status.exit_code = None;
                    let key = (self.namespace.clone(), self.name.clone());
                    let backend = instance.backend();
                    let mut prober = backend.clone().map(|backend| {
                        Prober::new(
                            backend,
                            format!("{}.{}.pod", self.name, self.namespace),
                            self.spec.liveness_probe.as_ref(),
                            self.spec.readiness_probe.as_ref(),
                        )
                    });
                    if let Some(backend) = backend {
                        self.context.local_pods.add(key.clone(), &self.uid, backend);
                        self.status.endpoint = Some(self.context.endpoint.clone());
                    }
                    self.set_ready(prober.as_ref().is_none_or(Prober::ready_at_start));
                    self.set(None, None);
                    let mut killed_for = None;
                    let ended = {
                        let exited = instance.exited();
                        tokio::pin!(exited);
                        loop {
                            let verdict = async {
                                match prober.as_mut() {
                                    Some(prober) if killed_for.is_none() => prober.next().await,
                                    _ => std::future::pending().await,
                                }
                            };
                            tokio::select! {
                                ended = &mut exited => break Some(ended),
                                _ = stopping.changed() => break None,
                                verdict = verdict => match verdict {
                                    Verdict::Ready(ready) => {
                                        self.set_ready(ready);
                                        self.report();
                                    }
                                    Verdict::Dead(why) => {
                                        tracing::warn!("{pod}: {why}: restarting");
                                        self.tell(Severity::Warning, "Unhealthy", &why);
                                        self.tell(
                                            Severity::Normal,
                                            "Killing",
                                            &format!("restarting the pod: {why}"),
                                        );
                                        killed_for = Some(why);
                                        instance.kill().await;
                                    }
                                },
                            }
                        }
                    };
                    self.context.local_pods.remove(&key, &self.uid);
                    // A stop may shorten the grace (a node cut off stops
                    // its pods before their lease lapses); `MAX` means the
                    // node's.
                    let grace = stopping
                        .borrow()
                        .map_or(self.context.grace, |grace| grace.min(self.context.grace));
                    instance.stop(grace).await;
                    // The run's last output is in its file before its end
                    // is reported.
                    if let Some(logs) = &self.logs {
                        logs.flush().await;
                    }
                    let Some(ended) = ended else {
                        self.tell(Severity::Normal, "Killing", "stopping the pod");
                        self.move_on(Event::Stop);
                        continue;
                    };
                    ran_for = started.elapsed();
                    self.set_ready(false);
                    self.status.exit_code = ended.code;
                    let success = killed_for.is_none() && ended.success();
                    if !success && killed_for.is_none() {
                        let message = ended.message.as_deref().unwrap_or("exited");
                        self.tell(Severity::Warning, failure_reason(message), message);
                    }
                    // Killed for a failed liveness probe: that is why.
                    self.status.message = killed_for.or(ended.message);
                    self.move_on(Event::Exited { success });
                }
                State::BackOff => {
                    let (reason, delay) = match setup_failed {
                        Some(reason) => (reason, pull_backoff.next_delay(Duration::ZERO)),
                        None => ("CrashLoopBackOff", backoff.next_delay(ran_for)),
                    };
                    if setup_failed.is_none() {
                        self.status.restarts += 1;
                    }
                    // A crash loop says how long it waits, so the growing
                    // delays can be seen; the cause stays in the message.
                    let message = if setup_failed.is_some() {
                        self.status.message.clone()
                    } else {
                        let cause = self.status.message.as_deref().unwrap_or("exited");
                        Some(format!(
                            "back-off {}ms restarting: {cause}",
                            delay.as_millis()
                        ))
                    };
                    let told = message.as_deref().unwrap_or(reason);
                    self.tell(Severity::Warning, "BackOff", told);
                    self.set(Some(reason), message);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => self.move_on(Event::BackOffElapsed),
                        _ = stopping.changed() => self.move_on(Event::Stop),
                    }
                }
                State::Succeeded | State::Failed => {
                    self.set_ready(false);
                    self.report();
                    let _ = stopping.changed().await;
                    break;
                }
                State::Stopped => break,
                State::Pending => self.move_on(Event::Begin),
            }
        }
        if let Some(mut image) = image {
            image.release().await;
        }
        self.token_refresh = None;
        if let Some(logs) = self.logs.take() {
            logs.close().await;
            let _ = std::fs::remove_dir_all(logs.dir());
        }
        let _ = std::fs::remove_dir_all(self.pod_dir());
        let _ = std::fs::remove_dir_all(self.secrets_dir());
        tracing::debug!("{pod} ({}): stopped, its files removed", self.uid);
    }

    /// The pod's own files (volumes, a Linux pod's log), by uid as well as
    /// name: a pod re-created under the same name gets a directory of its
    /// own, which the old pod's worker, still stopping, does not touch.
    fn pod_dir(&self) -> PathBuf {
        self.context
            .data_dir
            .join("pods")
            .join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
    }

    /// The pod's Secret volumes, apart from its other files: under the
    /// node's secrets directory (memory-backed, owner-only), keyed by uid
    /// like the pod's directory.
    fn secrets_dir(&self) -> PathBuf {
        self.context
            .secrets_dir
            .join(format!("{}_{}_{}", self.namespace, self.name, self.uid))
    }

    /// The key under which the node remembers what it pulled an image as:
    /// per namespace and pull secret, as only those may reuse it.
    fn known(&self) -> (String, String, String) {
        (
            self.namespace.clone(),
            self.spec.image_pull_secret.clone().unwrap_or_default(),
            self.spec.image.clone(),
        )
    }

    /// Whether the image's pull policy lets what the node pulled before be
    /// used without asking the registry.
    fn reuses(&self) -> bool {
        self.spec
            .image_pull_policy
            .unwrap_or_else(|| ImagePullPolicy::default_for(&self.spec.image))
            == ImagePullPolicy::IfNotPresent
    }

    /// Whether the pull will neither ask the registry nor download: the
    /// policy reuses, the node pulled the image for this namespace and
    /// secret, and the component is still in its cache (one evicted since
    /// is downloaded again, which is a pull). Linux images always count as
    /// pulled, as containerd is asked for their layers.
    fn already_present(&self) -> bool {
        self.status.digest.is_none()
            && self.reuses()
            && self
                .context
                .pulled
                .lock()
                .expect("pulled lock")
                .get(&self.known())
                .is_some_and(|digest| self.context.runtimes.wasm.holds(digest))
    }

    /// Resolves the image to a digest (recorded in the status) and pulls
    /// it with the runtime its media types call for.
    async fn pull(&mut self) -> Result<Box<dyn Image>, Failure> {
        let reference = oci::parse_reference(&self.spec.image)
            .map_err(|e| Failure::fatal("InvalidImageName")(&e))?;
        let credentials = self.credentials().await?;
        // A tag is resolved once; afterwards the pod pulls (or finds in the
        // cache) what it was resolved to. With IfNotPresent, what the node
        // pulled the image as before for this namespace and pull secret is
        // used as it is. Otherwise the registry is asked, even for a digest
        // reference: what the node holds is shared by every pod, and only
        // the registry's answer shows this pod may read the image.
        let known = self.known();
        let reuse = self.reuses();
        // What the registry said of the reference, when it was asked: the
        // pull goes on from it rather than asking again.
        let mut resolved = None;
        let digest = match &self.status.digest {
            // The status says which bytes the pod ran before (a restart
            // runs the same), but a status is no proof that this pod may
            // read them: whoever wrote it could have named another
            // tenant's component, which the node's shared cache would
            // serve. The registry decides, with the pod's credentials and
            // in the pod's own repository.
            Some(digest) => {
                let answer = self
                    .confirm_digest(&reference, digest, &credentials)
                    .await?;
                resolved = Some(answer);
                digest.clone()
            }
            None => {
                let pulled = reuse
                    .then(|| {
                        self.context
                            .pulled
                            .lock()
                            .expect("pulled lock")
                            .get(&known)
                            .cloned()
                    })
                    .flatten();
                let digest = match pulled {
                    Some(digest) => digest,
                    None => {
                        let answer = self
                            .context
                            .registry
                            .resolve_manifest(&reference, &credentials)
                            .await
                            .map_err(Failure::of_pull)?;
                        let digest = answer.digest.clone();
                        resolved = Some(answer);
                        digest
                    }
                };
                self.status.digest = Some(digest.clone());
                self.report();
                digest
            }
        };
        let pinned = oci::pinned(&reference, &digest).map_err(Failure::of_pull)?;
        let artifact = Artifact {
            image: self.spec.image.clone(),
            pinned,
            digest,
            credentials,
            resolved,
        };
        let pod = PodId {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        };
        let runtimes = &self.context.runtimes;
        let runtime = runtimes.select(&artifact, self.spec.runtime).await?;
        let image = runtime.pull(&pod, &artifact).await?;
        self.context
            .pulled
            .lock()
            .expect("pulled lock")
            .insert(known, artifact.digest);
        Ok(image)
    }

    /// Asks the registry for `digest` in the pod's repository with the
    /// pod's credentials. Refused, missing or another digest than asked
    /// for, the pod fails for good: the digest is fixed, so asking again
    /// would get the same answer. A registry that cannot answer is retried.
    async fn confirm_digest(
        &self,
        reference: &oci::Reference,
        digest: &str,
        credentials: &Credentials,
    ) -> Result<oci::Resolved, Failure> {
        let image = &self.spec.image;
        let refused = |why: &dyn std::fmt::Display| Failure::Fatal {
            reason: "ErrImagePull",
            message: format!("image {image} at digest {digest} from the pod's status: {why}"),
        };
        let pinned = oci::pinned(reference, digest).map_err(|e| refused(&e))?;
        match self
            .context
            .registry
            .resolve_manifest(&pinned, credentials)
            .await
        {
            Ok(answer) if answer.digest == digest => Ok(answer),
            Ok(answer) => Err(refused(&format_args!(
                "the registry answered with {}",
                answer.digest
            ))),
            Err(
                e @ (oci::OciError::NotFound { .. }
                | oci::OciError::Unauthorized { .. }
                | oci::OciError::DigestMismatch { .. }),
            ) => Err(refused(&e)),
            Err(e) => Err(Failure::of_pull(e)),
        }
    }

    /// Registry credentials from the pod's pull secret, if it names one.
    async fn credentials(&self) -> Result<Credentials, Failure> {
        let Some(secret) = self
            .spec
            .image_pull_secret
            .as_deref()
            .filter(|s| !s.is_empty())
        else {
            return Ok(Credentials::Anonymous);
        };
        let data = self.secret_data(secret).await?;
        let registry = oci::parse_reference(&self.spec.image)
            .map(|r| r.registry().to_owned())
            .unwrap_or_default();
        Credentials::from_secret(secret, &data, &registry).map_err(|e| Failure::Retry {
            reason: "ErrImagePull",
            message: e.to_string(),
        })
    }

    async fn secret_data(
        &self,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Failure> {
        // Secret values are base64 in the API; a value that is not is skipped.
        self.object_data(Kind::Secret, "secret", name, |v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str()?)
                .ok()
        })
        .await
    }

    async fn config_map_data(
        &self,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Failure> {
        self.object_data(Kind::ConfigMap, "config map", name, |v| {
            Some(v.as_str()?.as_bytes().to_vec())
        })
        .await
    }

    /// The `data` of a Secret or ConfigMap in the pod's namespace, each
    /// value through `decode`.
    async fn object_data(
        &self,
        kind: Kind,
        what: &str,
        name: &str,
        decode: impl Fn(&serde_json::Value) -> Option<Vec<u8>>,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, Failure> {
        let object = self
            .context
            .client
            .get(kind, Some(&self.namespace), name)
            .await
            .map_err(|e| Failure::Retry {
                reason: "CreateContainerConfigError",
                message: format!("{what} {name}: {e}"),
            })?;
        Ok(object["data"]
            .as_object()
            .map(|data| {
                data.iter()
                    .filter_map(|(k, v)| Some((k.clone(), decode(v)?)))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// What the pod is granted: env (Secrets and ConfigMaps read), args,
    /// volumes as directories, outbound hosts, Services.
    async fn sandbox(&mut self) -> Result<Sandbox, Failure> {
        let mut env = Vec::new();
        for var in &self.spec.env {
            let value = match (&var.value, &var.value_from) {
                (Some(value), _) => value.clone(),
                (None, Some(from)) => {
                    let (data, reference, what) =
                        match (&from.secret_key_ref, &from.config_map_key_ref) {
                            (Some(r), _) => (self.secret_data(&r.name).await?, r, "secret"),
                            (None, Some(r)) => {
                                (self.config_map_data(&r.name).await?, r, "config map")
                            }
                            (None, None) => continue,
                        };
                    let bytes = data.get(&reference.key).ok_or_else(|| Failure::Retry {
                        reason: "CreateContainerConfigError",
                        message: format!("{what} {} has no key {}", reference.name, reference.key),
                    })?;
                    String::from_utf8_lossy(bytes).into_owned()
                }
                (None, None) => String::new(),
            };
            env.push((var.name.clone(), value));
        }
        let mut dirs = Vec::new();
        for volume in &self.spec.volumes {
            dirs.push(self.volume(volume).await?);
        }
        if self.spec.automount_service_account_token {
            dirs.push(self.account_token().await?);
        }
        let outbound = AllowList::parse(&self.spec.allow_outbound).map_err(|e| Failure::Fatal {
            reason: "InvalidSpec",
            message: e.to_string(),
        })?;
        let gateway = ServiceGateway::new(
            &self.namespace,
            self.context.gateway,
            self.context.caller_key.credential(&self.namespace),
        )
        .map_err(|e| Failure::Fatal {
            reason: "InvalidSpec",
            message: format!("namespace {}: {e}", self.namespace),
        })?;
        Ok(Sandbox {
            env,
            args: self.spec.args.clone(),
            dirs,
            outbound: Arc::new(outbound),
            services: Some(Arc::new(gateway)),
            denied_addresses: self.context.denied_addresses.clone(),
            stdio: match &self.logs {
                Some(logs) => Stdio::Capture(logs.clone()),
                None => Stdio::Null,
            },
        })
    }

    /// The pod's service account token, asked for afresh (bound to this
    /// pod, so it dies with it) and written owner-only among the pod's
    /// secrets; a task asks again before it expires for as long as the
    /// pod lives, and replaces the file whole.
    async fn account_token(&mut self) -> Result<DirGrant, Failure> {
        let dir = self.secrets_dir().join(ACCOUNT_TOKEN_DIR);
        let token = request_account_token(&self.context, self.pod_ref())
            .await
            .map_err(|message| Failure::Retry {
                reason: "CreateContainerConfigError",
                message,
            })?;
        let files = [
            ("token".to_owned(), token.into_bytes()),
            ("namespace".to_owned(), self.namespace.clone().into_bytes()),
        ];
        write_private(&dir, files).map_err(|e| Failure::Retry {
            reason: "CreateContainerConfigError",
            message: format!("service account token: {e}"),
        })?;
        let (context, pod, path) = (self.context.clone(), self.pod_ref(), dir.join("token"));
        self.token_refresh = Some(AbortOnDrop(tokio::spawn(refresh_account_token(
            context, pod, path,
        ))));
        Ok(DirGrant {
            host: dir,
            guest: ACCOUNT_TOKEN_MOUNT.into(),
            read_only: true,
        })
    }

    fn pod_ref(&self) -> PodRef {
        PodRef {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            account: self.spec.service_account_name.clone(),
        }
    }

    /// Materialises a volume as a host directory the guest is granted.
    /// A Secret's files go to the pod's secrets directory, owner-only
    /// (0700 directories, 0600 files), so no other user of the node reads
    /// them and they never reach a disk.
    async fn volume(&self, volume: &Volume) -> Result<DirGrant, Failure> {
        let io = |e: std::io::Error| Failure::Retry {
            reason: "CreateContainerConfigError",
            message: format!("volume {}: {e}", volume.name),
        };
        let (local, files) = if let Some(host) = &volume.host_path {
            return Ok(DirGrant {
                host: PathBuf::from(&host.path),
                guest: volume.mount_path.clone(),
                read_only: volume.read_only,
            });
        } else if let Some(source) = &volume.secret {
            let local = self.secrets_dir().join(&volume.name);
            (local, Some(self.secret_data(&source.name).await?))
        } else if let Some(source) = &volume.config_map {
            let local = self.pod_dir().join(&volume.name);
            (local, Some(self.config_map_data(&source.name).await?))
        } else {
            (self.pod_dir().join(&volume.name), None)
        };
        if volume.secret.is_some() {
            write_private(&local, files.unwrap_or_default()).map_err(io)?;
            return Ok(DirGrant {
                host: local,
                guest: volume.mount_path.clone(),
                read_only: true,
            });
        }
        std::fs::create_dir_all(&local).map_err(io)?;
        let read_only = volume.read_only || files.is_some();
        for (key, bytes) in files.unwrap_or_default() {
            std::fs::write(local.join(key), bytes).map_err(io)?;
        }
        Ok(DirGrant {
            host: local,
            guest: volume.mount_path.clone(),
            read_only,
        })
    }
}

/// A pod as its token is asked for.
#[derive(Clone)]
struct PodRef {
    namespace: String,
    name: String,
    uid: String,
    account: String,
}

/// A token of the pod's service account, bound to the pod, living the
/// node's `pod_token_duration`.
async fn request_account_token(context: &NodeContext, pod: PodRef) -> Result<String, String> {
    let account = if pod.account.is_empty() {
        skiff_api::kinds::account::DEFAULT_SERVICE_ACCOUNT
    } else {
        &pod.account
    };
    let request = ServiceAccountTokenRequest {
        duration: Some(skiff_api::quantity::format_duration(
            context.pod_token_duration,
        )),
        bound_pod: Some(BoundPod {
            name: pod.name.clone(),
            uid: pod.uid.clone(),
        }),
    };
    let token = context
        .client
        .create_account_token(&pod.namespace, account, &request)
        .await
        .map_err(|e| format!("service account {account}'s token: {e}"))?;
    Ok(token.token)
}

/// Asks for a new token when four fifths of the last one's life have
/// passed (again every few seconds while the control plane does not
/// answer), and puts it in place of the old in one rename, so the guest
/// never reads a partial or missing file.
async fn refresh_account_token(context: Arc<NodeContext>, pod: PodRef, path: PathBuf) {
    let lifetime = context.pod_token_duration;
    let mut wait = lifetime.mul_f64(0.8);
    loop {
        tokio::time::sleep(wait).await;
        let fresh = match request_account_token(&context, pod.clone()).await {
            Ok(token) => replace_private(&path, token.as_bytes()).map_err(|e| e.to_string()),
            Err(message) => Err(message),
        };
        wait = match fresh {
            Ok(()) => lifetime.mul_f64(0.8),
            Err(e) => {
                tracing::warn!(
                    "{}/{}: refreshing its service account token: {e}",
                    pod.namespace,
                    pod.name
                );
                Duration::from_secs(2).min(lifetime / 4)
            }
        };
    }
}

/// Replaces `path` whole with an owner-only file holding `bytes`, owned
/// as the file it replaces (a Linux pod's user was handed the first).
fn replace_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let owner = std::fs::symlink_metadata(path)?;
    let staged = path.with_extension("new");
    let _ = std::fs::remove_file(&staged);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)?;
    std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid()))?;
    file.write_all(bytes)?;
    std::fs::rename(&staged, path)
}

/// Writes `files` into `dir` (made, with its parents, owner-only), each
/// created owner-only from its first byte, in place of what was there.
fn write_private(
    dir: &std::path::Path,
    files: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for (key, bytes) in files {
        let path = dir.join(key);
        // A file left by an earlier start may carry another mode.
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.write_all(&bytes)?;
    }
    Ok(())
}

/// How long a Pulling or Starting status waits for a later one.
const PASSING_STATES_HELD: Duration = Duration::from_millis(20);

/// What became of one status report.
#[derive(Debug)]
enum Delivery {
    Sent,
    /// The pod is gone from the API: nothing more to report.
    Gone,
    /// Not delivered (the control plane is unreachable, say): try again.
    Failed(String),
}

/// Sends the latest status to the API whenever it changes, retrying while
/// the control plane is unreachable (the pod keeps running meanwhile).
async fn report_statuses(
    context: Arc<NodeContext>,
    namespace: String,
    name: String,
    uid: String,
    latest: watch::Receiver<Option<PodStatus>>,
) {
    let send = |status: PodStatus| {
        let (context, namespace, name, uid) = (
            context.clone(),
            namespace.clone(),
            name.clone(),
            uid.clone(),
        );
        async move {
            // The uid makes the write conditional on the pod being this
            // one, not a pod re-created under its name.
            let patch = status_patch(&status, &uid);
            match context
                .client
                .patch(Kind::Pod, Some(&namespace), &name, &patch, true)
                .await
            {
                Ok(_) => Delivery::Sent,
                Err(e) if e.is_not_found() || e.is_uid_mismatch() => Delivery::Gone,
                Err(e) => Delivery::Failed(format!("{namespace}/{name}: {e}")),
            }
        }
    };
    deliver_statuses(send, latest, STATUS_RETRY).await;
}

/// Pause between attempts to deliver a status.
const STATUS_RETRY: Duration = Duration::from_secs(1);

/// The delivery loop of [`report_statuses`]. It ends when the pod is gone
/// from the API or its worker has ended (the pod was deleted or moved):
/// a status nobody will read is not worth retrying.
async fn deliver_statuses<F, Fut>(
    mut send: F,
    mut latest: watch::Receiver<Option<PodStatus>>,
    retry: Duration,
) where
    F: FnMut(PodStatus) -> Fut,
    Fut: std::future::Future<Output = Delivery>,
{
    let mut sent = None;
    loop {
        let status = latest.borrow_and_update().clone();
        // Pulling and Starting are held back a moment: a pod that gets
        // past them at once reports where it got (one write, not three,
        // and its Running does not queue behind them).
        let passing = status
            .as_ref()
            .is_some_and(|s| matches!(s.reason.as_deref(), Some("Pulling" | "Starting")));
        if passing
            && status != sent
            && let Ok(Ok(())) = tokio::time::timeout(PASSING_STATES_HELD, latest.changed()).await
        {
            continue;
        }
        if let Some(report) = status.clone().filter(|_| status != sent) {
            match send(report).await {
                Delivery::Sent => sent = status,
                Delivery::Gone => return,
                Delivery::Failed(why) => {
                    tracing::debug!("status not reported yet: {why}");
                    // A newer status is tried at once; a worker that ended
                    // has nothing more to say.
                    match tokio::time::timeout(retry, latest.changed()).await {
                        Ok(Err(_)) => return,
                        Ok(Ok(())) | Err(_) => continue,
                    }
                }
            }
        }
        if latest.changed().await.is_err() {
            return;
        }
    }
}

/// The reason of the Event telling a run that failed, from how it ended:
/// a guest out of fuel or over its memory cap, a Linux pod killed for
/// memory, or any other failure.
fn failure_reason(message: &str) -> &'static str {
    if message.contains("OOMKilled") || message.contains("memory limit") {
        "OOMKilled"
    } else if message.contains("out of fuel") {
        "OutOfFuel"
    } else {
        "Failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Retries come this quickly in the tests.
    const QUICK_RETRY: Duration = Duration::from_millis(5);

    /// Runs the delivery loop with a send that answers from `answers` in
    /// turn (the last one for good) and records what it was asked.
    /// The status channel's sender, what the send was asked, the loop.
    type Delivering = (
        watch::Sender<Option<PodStatus>>,
        Arc<Mutex<Vec<PodStatus>>>,
        tokio::task::JoinHandle<()>,
    );

    fn delivering(answers: Vec<fn() -> Delivery>) -> Delivering {
        let (sender, latest) = watch::channel(None);
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let send = move |status: PodStatus| {
            let mut seen = seen.lock().unwrap();
            let answer = answers[seen.len().min(answers.len() - 1)]();
            seen.push(status);
            std::future::ready(answer)
        };
        let task = tokio::spawn(deliver_statuses(send, latest, QUICK_RETRY));
        (sender, asked, task)
    }

    fn running() -> PodStatus {
        PodStatus {
            phase: PodPhase::Running,
            ..Default::default()
        }
    }

    #[test]
    fn readiness_moves_its_time_only_on_a_transition() {
        let mut ready = Readiness::of(None, "t0");
        assert_eq!((ready.ready, ready.since.as_str()), (false, "t0"));
        ready.set(false, "t1");
        assert_eq!(
            ready.since, "t0",
            "not ready before and after: no transition"
        );
        ready.set(true, "t2");
        ready.set(true, "t3");
        assert_eq!((ready.ready, ready.since.as_str()), (true, "t2"));
        ready.set(false, "t4");
        assert_eq!(
            ready.condition().last_transition_time.as_deref(),
            Some("t4")
        );
        assert_eq!(ready.condition().status, "False");

        // A worker picking its pod up again starts from what was stored.
        let stored = PodStatus {
            conditions: vec![
                Readiness {
                    ready: true,
                    since: "t9".into(),
                }
                .condition(),
            ],
            ..Default::default()
        };
        assert_eq!(
            Readiness::of(Some(&stored), "t10"),
            Readiness {
                ready: true,
                since: "t9".into()
            }
        );
    }

    #[test]
    fn a_status_patch_removes_what_is_not_reported() {
        let status = PodStatus {
            phase: PodPhase::Running,
            endpoint: Some("10.0.0.1:8080".into()),
            ..Default::default()
        };
        let patch = status_patch(&status, "u1");
        assert_eq!(patch["metadata"]["uid"], "u1");
        assert_eq!(patch["status"]["phase"], "Running");
        assert_eq!(patch["status"]["endpoint"], "10.0.0.1:8080");
        for cleared in ["reason", "message", "imageDigest", "startTime", "exitCode"] {
            assert!(patch["status"][cleared].is_null(), "{cleared}");
            assert!(
                patch["status"].as_object().unwrap().contains_key(cleared),
                "{cleared}"
            );
        }
    }

    fn failed() -> Delivery {
        Delivery::Failed("unreachable".into())
    }

    async fn until_asked(asked: &Mutex<Vec<PodStatus>>, times: usize) {
        let wait = async {
            while asked.lock().unwrap().len() < times {
                tokio::time::sleep(QUICK_RETRY).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("not asked {times} times"));
    }

    #[tokio::test]
    async fn a_status_is_retried_until_it_gets_through_and_sent_once() {
        let (sender, asked, task) = delivering(vec![failed, failed, || Delivery::Sent]);
        sender.send(Some(running())).unwrap();
        until_asked(&asked, 3).await;
        assert!(!task.is_finished(), "the worker still runs");
        drop(sender);
        task.await.unwrap();
        assert_eq!(
            asked.lock().unwrap().len(),
            3,
            "not sent again once through"
        );
    }

    #[tokio::test]
    async fn retries_end_when_the_worker_ends() {
        let (sender, asked, task) = delivering(vec![failed]);
        sender.send(Some(running())).unwrap();
        until_asked(&asked, 2).await;
        drop(sender);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the delivery loop ends with its worker")
            .unwrap();
    }

    #[tokio::test]
    async fn delivery_ends_when_the_pod_is_gone() {
        let (sender, asked, task) = delivering(vec![|| Delivery::Gone]);
        sender.send(Some(running())).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a pod gone from the API gets no more reports")
            .unwrap();
        assert_eq!(asked.lock().unwrap().len(), 1);
        drop(sender);
    }
}
