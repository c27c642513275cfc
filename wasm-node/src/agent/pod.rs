//! One pod on this node: a task that drives the pod through its lifecycle
//! (pull, start, run, back off, stop) and reports each step to the API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::kinds::pod::{Pod, PodRuntime, PodSpec, Protocol, Volume};
use skiff_api::outbound::AllowList;
use skiff_api::quantity::{parse_bytes, parse_duration, parse_fuel};
use tokio::sync::watch;

use super::NodeContext;
use super::ingress::Backend;
use super::lifecycle::{Backoff, Event, State, next};
use super::probes::{Prober, Verdict};
use crate::containerd::{Containerd, ContainerdError, Exit, LinuxImage, RunSpec};
use crate::oci::{self, Credentials, OciError};
use crate::runtime::{App, DirGrant, Limits, LoadedComponent, Sandbox, ServiceGateway, Stdio};

/// A running pod worker.
pub struct PodHandle {
    pub uid: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl PodHandle {
    /// Asks the worker to stop and waits until it has (in-flight requests
    /// get the node's grace period).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

pub fn spawn(context: Arc<NodeContext>, pod: Pod) -> PodHandle {
    let (stop, stopping) = watch::channel(false);
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let task = tokio::spawn(Worker::new(context, pod).run(stopping));
    PodHandle { uid, stop, task }
}

/// What a pull brought.
enum Fetched {
    /// A component's digest and bytes.
    Wasm(String, Arc<Vec<u8>>),
    Linux(Box<LinuxImage>),
}

/// A Linux image in containerd: its top snapshot and its config.
struct Unpacked {
    chain: String,
    config: Vec<u8>,
    reference: String,
}

/// What runs.
enum Prepared {
    Wasm(App),
    Linux(LinuxTask),
}

/// A started container.
struct LinuxTask {
    containerd: Containerd,
    namespace: String,
    id: String,
    /// The host port it was told to serve HTTP on (`PORT`), if it does.
    port: Option<u16>,
}

impl LinuxTask {
    async fn wait(&self) -> Result<Exit, ContainerdError> {
        self.containerd.wait(&self.namespace, &self.id).await
    }

    /// SIGTERM, then SIGKILL after the grace period; then the container
    /// goes.
    async fn stop(&self, grace: Duration) {
        let c = &self.containerd;
        let _ = c.signal(&self.namespace, &self.id, 15).await;
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            let _ = c.signal(&self.namespace, &self.id, 9).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), self.wait()).await;
        }
        self.remove().await;
    }

    async fn remove(&self) {
        if let Err(e) = self
            .containerd
            .remove_container(&self.namespace, &self.id)
            .await
        {
            tracing::warn!("{}/{}: {e}", self.namespace, self.id);
        }
    }
}

/// Why getting a pod ready failed: worth retrying, or not.
enum Failure {
    Retry {
        reason: &'static str,
        message: String,
    },
    Fatal {
        reason: &'static str,
        message: String,
    },
}

struct Worker {
    context: Arc<NodeContext>,
    namespace: String,
    name: String,
    uid: String,
    spec: PodSpec,
    state: State,
    status: Reported,
    reporter: watch::Sender<Value>,
}

/// What the worker tells the API about the pod.
#[derive(Default, Clone)]
struct Reported {
    reason: Option<String>,
    message: Option<String>,
    restarts: u32,
    digest: Option<String>,
    endpoint: Option<String>,
    started: Option<String>,
    exit_code: Option<i32>,
    ready: bool,
}

impl Worker {
    fn new(context: Arc<NodeContext>, pod: Pod) -> Self {
        let (reporter, latest) = watch::channel(Value::Null);
        let namespace = pod.metadata.namespace.clone();
        let name = pod.metadata.name.clone();
        tokio::spawn(report_statuses(
            context.clone(),
            namespace.clone(),
            name.clone(),
            latest,
        ));
        Self {
            context,
            namespace,
            name,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            spec: pod.spec,
            state: State::Pending,
            // The digest a tag resolved to is kept: a pod picked up again
            // (after a node restart) runs what it ran, not whatever the tag
            // names now.
            status: Reported {
                restarts: pod.status.as_ref().map_or(0, |s| s.restart_count),
                digest: pod.status.and_then(|s| s.image_digest),
                ..Default::default()
            },
            reporter,
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
        let s = &self.status;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let status = json!({
            "phase": self.state.phase(),
            "reason": s.reason,
            "message": s.message,
            "restartCount": s.restarts,
            "imageDigest": s.digest,
            "endpoint": s.endpoint,
            "startTime": s.started,
            "exitCode": s.exit_code,
            "conditions": [{
                "type": "Ready",
                "status": if s.ready { "True" } else { "False" },
                "lastTransitionTime": now,
            }],
        });
        let _ = self.reporter.send(status);
    }

    fn set(&mut self, reason: Option<&str>, message: Option<String>) {
        self.status.reason = reason.map(str::to_owned);
        self.status.message = message;
        self.report();
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
        self.set(Some(reason), Some(message));
        self.move_on(if retry {
            Event::PullFailed
        } else {
            Event::Invalid
        });
        retry
    }

    async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let pod = format!("{}/{}", self.namespace, self.name);
        let mut backoff = Backoff::new(self.context.backoff_base, self.context.backoff_cap);
        let mut pull_backoff = Backoff::new(self.context.backoff_base, self.context.backoff_cap);
        // The fetched bytes live only until they are loaded; the loaded
        // component (shared with other pods of the image) serves restarts.
        let mut fetched: Option<Fetched> = None;
        let mut loaded: Option<LoadedComponent> = None;
        // A Linux image, once unpacked into containerd, serves restarts.
        let mut unpacked: Option<Unpacked> = None;
        let mut leased = false;
        let mut app: Option<Prepared> = None;
        let mut ran_for = Duration::ZERO;
        let mut pull_failed = false;
        self.move_on(Event::Begin);
        loop {
            match self.state {
                State::Pulling if loaded.is_some() || unpacked.is_some() => {
                    self.move_on(Event::Pulled);
                }
                State::Pulling => {
                    // A retry keeps the last failure on show (as
                    // ImagePullBackOff) until the pull ends one way or the
                    // other: a reader should never see the reason vanish.
                    if !pull_failed {
                        self.set(Some("Pulling"), None);
                    }
                    let outcome = tokio::select! {
                        outcome = self.fetch() => outcome,
                        _ = stopping.changed() => { self.move_on(Event::Stop); continue; }
                    };
                    match outcome {
                        Ok(artifact) => {
                            fetched = Some(artifact);
                            pull_failed = false;
                            self.move_on(Event::Pulled);
                        }
                        Err(failure) => pull_failed |= self.fail(&pod, failure),
                    }
                }
                State::Starting => {
                    self.set(Some("Starting"), None);
                    let started =
                        if unpacked.is_some() || matches!(fetched, Some(Fetched::Linux(_))) {
                            // From here the pod may hold a lease in
                            // containerd, even if the unpack fails halfway.
                            leased = true;
                            self.start_linux(&mut fetched, &mut unpacked).await
                        } else {
                            self.start(&mut fetched, &mut loaded)
                                .await
                                .map(Prepared::Wasm)
                        };
                    match started {
                        Ok(prepared) => {
                            app = Some(prepared);
                            self.move_on(Event::Started);
                        }
                        Err(failure) => pull_failed |= self.fail(&pod, failure),
                    }
                }
                State::Running => {
                    let started = Instant::now();
                    self.status.started =
                        Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                    self.status.exit_code = None;
                    match app.take().expect("prepared before running") {
                        Prepared::Linux(task) => {
                            // A pod that serves HTTP is Ready once its port
                            // takes connections; others once started.
                            let key = (self.namespace.clone(), self.name.clone());
                            let listen = task
                                .port
                                .map(|port| std::net::SocketAddr::from(([127, 0, 0, 1], port)));
                            if let Some(addr) = listen {
                                self.context.routes.add(key.clone(), Backend::Process(addr));
                                self.status.endpoint = Some(self.context.endpoint.clone());
                            }
                            self.status.ready = listen.is_none();
                            self.set(None, None);
                            // Probes as for a component, against the port;
                            // without a readiness probe, Ready is the port
                            // taking connections.
                            let mut prober = listen.map(|addr| {
                                Prober::new(
                                    Backend::Process(addr),
                                    format!("{}.{}.pod", self.name, self.namespace),
                                    self.spec.liveness_probe.as_ref(),
                                    self.spec.readiness_probe.as_ref(),
                                )
                            });
                            let probed = self.spec.readiness_probe.is_some();
                            let mut killed_for = None;
                            let wait = task.wait();
                            tokio::pin!(wait);
                            let exited = loop {
                                let verdict = async {
                                    match prober.as_mut() {
                                        Some(prober) => prober.next().await,
                                        None => std::future::pending().await,
                                    }
                                };
                                tokio::select! {
                                    exited = &mut wait => break Some(exited),
                                    _ = stopping.changed() => break None,
                                    verdict = verdict => match verdict {
                                        Verdict::Ready(ready) => {
                                            self.status.ready = ready;
                                            self.report();
                                        }
                                        Verdict::Dead(why) => {
                                            tracing::warn!("{pod}: {why}: restarting");
                                            killed_for = Some(why);
                                            let _ = task.containerd.signal(&task.namespace, &task.id, 9).await;
                                        }
                                    },
                                    () = tokio::time::sleep(Duration::from_millis(100)),
                                        if !self.status.ready && !probed =>
                                    {
                                        let addr = listen.expect("only HTTP pods wait to listen");
                                        if tokio::net::TcpStream::connect(addr).await.is_ok() {
                                            self.status.ready = true;
                                            self.report();
                                        }
                                    }
                                }
                            };
                            if listen.is_some() {
                                self.context.routes.remove(&key);
                            }
                            let Some(exited) = exited else {
                                task.stop(self.context.grace).await;
                                self.move_on(Event::Stop);
                                continue;
                            };
                            ran_for = started.elapsed();
                            self.status.ready = false;
                            task.remove().await;
                            let (success, message) = match exited {
                                Ok(exit) => {
                                    let code = i32::try_from(exit.code).unwrap_or(i32::MAX);
                                    self.status.exit_code = Some(code);
                                    let message = if exit.oom_killed {
                                        Some(format!(
                                            "OOMKilled: exceeded its memory limit (exit code {code})"
                                        ))
                                    } else {
                                        (code != 0).then(|| format!("exited with code {code}"))
                                    };
                                    (code == 0, message)
                                }
                                Err(e) => (false, Some(e.to_string())),
                            };
                            // Killed for a failed liveness probe: that is why.
                            let (success, message) = match killed_for {
                                Some(why) => (false, Some(why)),
                                None => (success, message),
                            };
                            self.status.message = message;
                            self.move_on(Event::Exited { success });
                        }
                        Prepared::Wasm(App::Http(http)) => {
                            let key = (self.namespace.clone(), self.name.clone());
                            self.context
                                .routes
                                .add(key.clone(), Backend::Wasm(http.clone()));
                            let mut prober = Prober::new(
                                Backend::Wasm(http.clone()),
                                format!("{}.{}.pod", self.name, self.namespace),
                                self.spec.liveness_probe.as_ref(),
                                self.spec.readiness_probe.as_ref(),
                            );
                            self.status.ready = self.spec.readiness_probe.is_none();
                            self.status.endpoint = Some(self.context.endpoint.clone());
                            self.set(None, None);
                            let dead = loop {
                                tokio::select! {
                                    _ = stopping.changed() => break None,
                                    verdict = prober.next() => match verdict {
                                        Verdict::Ready(ready) => {
                                            self.status.ready = ready;
                                            self.report();
                                        }
                                        Verdict::Dead(why) => break Some(why),
                                    },
                                }
                            };
                            self.context.routes.remove(&key);
                            self.drain(&http).await;
                            match dead {
                                None => self.move_on(Event::Stop),
                                Some(why) => {
                                    tracing::warn!("{pod}: {why}: restarting");
                                    ran_for = started.elapsed();
                                    self.status.ready = false;
                                    self.status.message = Some(why);
                                    self.move_on(Event::Exited { success: false });
                                }
                            }
                        }
                        Prepared::Wasm(App::Command(command)) => {
                            self.status.ready = true;
                            self.set(None, None);
                            let exited = tokio::select! {
                                exited = command.run() => exited,
                                _ = stopping.changed() => { self.move_on(Event::Stop); continue; }
                            };
                            ran_for = started.elapsed();
                            self.status.ready = false;
                            let (success, message) = match exited {
                                Ok(code) => {
                                    self.status.exit_code = Some(code);
                                    (
                                        code == 0,
                                        (code != 0).then(|| format!("exited with code {code}")),
                                    )
                                }
                                Err(failure) => (false, Some(failure.to_string())),
                            };
                            self.status.message = message;
                            self.move_on(Event::Exited { success });
                        }
                    }
                }
                State::BackOff => {
                    let (reason, delay) = if pull_failed {
                        ("ImagePullBackOff", pull_backoff.next_delay(Duration::ZERO))
                    } else {
                        ("CrashLoopBackOff", backoff.next_delay(ran_for))
                    };
                    if !pull_failed {
                        self.status.restarts += 1;
                    }
                    // A crash loop says how long it waits, so the growing
                    // delays can be seen; the cause stays in the message.
                    let message = if pull_failed {
                        self.status.message.clone()
                    } else {
                        let cause = self.status.message.as_deref().unwrap_or("exited");
                        Some(format!(
                            "back-off {}ms restarting: {cause}",
                            delay.as_millis()
                        ))
                    };
                    self.set(Some(reason), message);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => self.move_on(Event::BackOffElapsed),
                        _ = stopping.changed() => self.move_on(Event::Stop),
                    }
                }
                State::Succeeded | State::Failed => {
                    self.status.ready = false;
                    self.report();
                    let _ = stopping.changed().await;
                    break;
                }
                State::Stopped => break,
                State::Pending => self.move_on(Event::Begin),
            }
        }
        if leased && let Some(containerd) = &self.context.containerd {
            let (namespace, id) = self.container_names();
            if let Err(e) = containerd.release(&namespace, &id).await {
                tracing::warn!("{pod}: {e}");
            }
        }
        self.cleanup();
    }

    /// Lets requests in flight finish, up to the grace period.
    async fn drain(&self, http: &crate::runtime::HttpApp) {
        let deadline = Instant::now() + self.context.grace;
        while http.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn cleanup(&self) {
        let _ = std::fs::remove_dir_all(self.pod_dir());
    }

    fn pod_dir(&self) -> PathBuf {
        self.context
            .data_dir
            .join("pods")
            .join(format!("{}_{}", self.namespace, self.name))
    }

    /// Resolves the image to a digest (recorded in the status) and gets the
    /// component, from the node's cache or the registry.
    async fn fetch(&mut self) -> Result<Fetched, Failure> {
        let reference = oci::parse_reference(&self.spec.image).map_err(|e| Failure::Fatal {
            reason: "InvalidImageName",
            message: e.to_string(),
        })?;
        let credentials = self.credentials().await?;
        let pull_error = |e: OciError| match e {
            e
            @ (OciError::NotWasm { .. } | OciError::TooLarge { .. } | OciError::Reference(..)) => {
                Failure::Fatal {
                    reason: "InvalidImage",
                    message: e.to_string(),
                }
            }
            e @ OciError::DigestMismatch { .. } => Failure::Retry {
                reason: "ImageDigestMismatch",
                message: e.to_string(),
            },
            e => Failure::Retry {
                reason: "ErrImagePull",
                message: e.to_string(),
            },
        };
        // A tag is resolved once; afterwards the pod pulls (or finds in the
        // cache) what it was resolved to.
        let digest = match &self.status.digest {
            Some(digest) => digest.clone(),
            None => {
                let digest = self
                    .context
                    .registry
                    .resolve(&reference, &credentials)
                    .await
                    .map_err(pull_error)?;
                self.status.digest = Some(digest.clone());
                self.report();
                digest
            }
        };
        let pinned = oci::parse_reference(&format!(
            "{}/{}@{digest}",
            reference.resolve_registry(),
            reference.repository()
        ))
        .map_err(pull_error)?;
        let registry = self.context.registry.clone();
        let pulled = {
            let (pinned, credentials) = (pinned.clone(), credentials.clone());
            self.context
                .blobs
                .get_or_fetch(&digest, || async move {
                    registry.pull(&pinned, &credentials).await
                })
                .await
        };
        let runtime = self.spec.runtime;
        let mismatch = |what: &str| Failure::Fatal {
            reason: "InvalidImage",
            message: format!(
                "{}: the pod asks for runtime {runtime:?}, but the image is {what}",
                self.spec.image
            ),
        };
        match pulled {
            Ok(_) if runtime == Some(PodRuntime::Linux) => Err(mismatch("a Wasm component")),
            Err(crate::oci::CacheError::Pull(OciError::LinuxImage { .. }))
                if runtime == Some(PodRuntime::Wasm) =>
            {
                Err(mismatch("a Linux image"))
            }
            Ok(component) => Ok(Fetched::Wasm(digest, component)),
            // An ordinary Linux image: containerd's, if this node has it.
            Err(crate::oci::CacheError::Pull(OciError::LinuxImage { .. }))
                if self.context.containerd.is_some() =>
            {
                let image = self
                    .context
                    .registry
                    .pull_linux(&pinned, &credentials)
                    .await
                    .map_err(pull_error)?;
                Ok(Fetched::Linux(Box::new(image)))
            }
            Err(crate::oci::CacheError::Pull(e @ OciError::LinuxImage { .. })) => {
                Err(Failure::Fatal {
                    reason: "NoLinuxRuntime",
                    message: e.to_string(),
                })
            }
            Err(crate::oci::CacheError::Pull(e)) => Err(pull_error(e)),
            Err(other) => Err(Failure::Retry {
                reason: "ErrImagePull",
                message: other.to_string(),
            }),
        }
    }

    /// The containerd namespace of the pod's namespace, and the pod's
    /// container (and lease) id, unique to this very pod.
    fn container_names(&self) -> (String, String) {
        let uid: String = self.uid.chars().filter(|c| *c != '-').take(12).collect();
        (
            format!("skiff-{}", self.namespace),
            format!("{}-{uid}", self.name),
        )
    }

    /// Unpacks a Linux image into containerd (once) and starts the pod's
    /// container on it.
    async fn start_linux(
        &self,
        fetched: &mut Option<Fetched>,
        unpacked: &mut Option<Unpacked>,
    ) -> Result<Prepared, Failure> {
        let containerd = self
            .context
            .containerd
            .clone()
            .ok_or_else(|| Failure::Fatal {
                reason: "NoLinuxRuntime",
                message: "this node has no containerd".into(),
            })?;
        let (namespace, id) = self.container_names();
        let retry = |e: crate::containerd::ContainerdError| Failure::Retry {
            reason: "CreateContainerError",
            message: e.to_string(),
        };
        if unpacked.is_none() {
            let Some(Fetched::Linux(image)) = fetched.take() else {
                unreachable!("a Linux image is fetched before it is started");
            };
            let chain = containerd
                .unpack(&namespace, &id, &image)
                .await
                .map_err(retry)?;
            *unpacked = Some(Unpacked {
                chain,
                config: image.config.bytes.clone(),
                reference: image.reference.clone(),
            });
        }
        let image = unpacked.as_ref().expect("unpacked above");
        let mut spec = self.run_spec(image).await?;
        // Containers share the host's network, so each HTTP pod gets a port
        // of its own, in PORT, and the ingress sends its requests there.
        let port = if self.spec.ports.iter().any(|p| p.protocol == Protocol::Http) {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| Failure::Retry {
                    reason: "CreateContainerError",
                    message: format!("no free port: {e}"),
                })?;
            spec.env.push(("PORT".into(), port.to_string()));
            Some(port)
        } else {
            None
        };
        // Whatever a previous run left (a node restarted mid-run) goes first.
        containerd
            .remove_container(&namespace, &id)
            .await
            .map_err(retry)?;
        containerd
            .start(&namespace, &id, &id, &image.reference, &image.chain, &spec)
            .await
            .map_err(retry)?;
        Ok(Prepared::Linux(LinuxTask {
            containerd,
            namespace,
            id,
            port,
        }))
    }

    /// The container's process, environment, limits and mounts, from the
    /// image's config and the pod's spec (the pod's args replace the
    /// image's command; its env comes after the image's).
    async fn run_spec(&self, image: &Unpacked) -> Result<RunSpec, Failure> {
        let invalid = |message: String| Failure::Fatal {
            reason: "InvalidSpec",
            message,
        };
        let (mut args, mut env, cwd, user) = crate::containerd::image_defaults(&image.config);
        if !self.spec.args.is_empty() {
            args = self.spec.args.clone();
        }
        if args.is_empty() {
            return Err(invalid(format!(
                "{}: the image names no command and the pod gives no args",
                self.spec.image
            )));
        }
        let sandbox = self.sandbox().await?;
        env.extend(sandbox.env);
        // Names would need the image's /etc/passwd; running as root instead
        // of an unknown user is never the answer.
        let id = |text: &str| {
            text.parse::<u32>().map_err(|_| {
                invalid(format!(
                    "{}: the image's user `{user}` is not numeric (uid[:gid]); names are not supported",
                    self.spec.image
                ))
            })
        };
        let (uid, gid) = match user.split_once(':') {
            _ if user.is_empty() => (0, 0),
            Some((u, g)) => (id(u)?, id(g)?),
            None => (id(&user)?, id(&user)?),
        };
        let r = &self.spec.resources;
        let memory = r
            .memory
            .as_deref()
            .map(parse_bytes)
            .transpose()
            .map_err(|e| invalid(e.to_string()))?;
        let log = self.pod_dir().join("container.log");
        std::fs::create_dir_all(self.pod_dir()).map_err(|e| Failure::Retry {
            reason: "CreateContainerError",
            message: format!("{}: {e}", self.pod_dir().display()),
        })?;
        Ok(RunSpec {
            args,
            env,
            cwd,
            uid,
            gid,
            hostname: self.name.clone(),
            memory_bytes: memory,
            cpu_millis: r
                .cpu
                .as_deref()
                .and_then(skiff_api::kinds::pod::parse_millicores),
            read_only_root: self.spec.read_only_root_filesystem,
            binds: sandbox
                .dirs
                .into_iter()
                .map(|d| (d.host, d.guest, d.read_only))
                .collect(),
            log,
        })
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
        let text = |key: &str| {
            data.get(key)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        match (text("username"), text("password"), text("token")) {
            (Some(username), Some(password), _) => Ok(Credentials::Basic { username, password }),
            (_, _, Some(token)) => Ok(Credentials::Bearer(token)),
            _ => Err(Failure::Retry {
                reason: "ErrImagePull",
                message: format!("secret {secret} has neither username and password nor token"),
            }),
        }
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

    /// Compiles (or loads) the fetched component, once, and prepares it
    /// with the pod's limits and grants.
    async fn start(
        &self,
        fetched: &mut Option<Fetched>,
        loaded: &mut Option<LoadedComponent>,
    ) -> Result<App, Failure> {
        let fatal =
            |reason: &'static str| move |message: String| Failure::Fatal { reason, message };
        let limits = limits_of(&self.spec).map_err(fatal("InvalidLimits"))?;
        let sandbox = self.sandbox().await?;
        let runtime = self
            .context
            .runtimes
            .get(limits.fuel.is_some())
            .map_err(|e| fatal("RuntimeUnavailable")(e.to_string()))?;
        let component = match loaded {
            Some(component) => component,
            None => {
                let Some(Fetched::Wasm(digest, bytes)) = fetched.take() else {
                    unreachable!("a component is fetched before it is started");
                };
                // Compiling takes long and blocks: off the async workers,
                // which keep serving the node's other pods meanwhile.
                let name = format!("{}@{digest}", self.spec.image);
                let runtime = runtime.clone();
                let component = tokio::task::spawn_blocking(move || runtime.load(&name, &bytes))
                    .await
                    .map_err(|e| fatal("InvalidComponent")(e.to_string()))?
                    .map_err(|e| fatal("InvalidComponent")(e.to_string()))?;
                loaded.insert(component)
            }
        };
        runtime
            .prepare(component, limits, sandbox)
            .await
            .map_err(|e| fatal("InvalidComponent")(e.to_string()))
    }

    async fn sandbox(&self) -> Result<Sandbox, Failure> {
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
        let outbound = AllowList::parse(&self.spec.allow_outbound).map_err(|e| Failure::Fatal {
            reason: "InvalidSpec",
            message: e.to_string(),
        })?;
        Ok(Sandbox {
            env,
            args: self.spec.args.clone(),
            dirs,
            outbound: Arc::new(outbound),
            services: Some(Arc::new(ServiceGateway {
                namespace: self.namespace.clone(),
                ingress: self.context.gateway,
            })),
            stdio: Stdio::Null,
        })
    }

    /// Materialises a volume as a host directory the guest is granted.
    async fn volume(&self, volume: &Volume) -> Result<DirGrant, Failure> {
        let local = self.pod_dir().join(&volume.name);
        let io = |e: std::io::Error| Failure::Retry {
            reason: "CreateContainerConfigError",
            message: format!("volume {}: {e}", volume.name),
        };
        let files = if let Some(host) = &volume.host_path {
            return Ok(DirGrant {
                host: PathBuf::from(&host.path),
                guest: volume.mount_path.clone(),
                read_only: volume.read_only,
            });
        } else if let Some(source) = &volume.secret {
            Some(self.secret_data(&source.name).await?)
        } else if let Some(source) = &volume.config_map {
            Some(self.config_map_data(&source.name).await?)
        } else {
            None
        };
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

/// The runtime limits a pod spec asks for.
pub fn limits_of(spec: &PodSpec) -> Result<Limits, String> {
    let defaults = Limits::default();
    let r = &spec.resources;
    Ok(Limits {
        memory: r
            .memory
            .as_deref()
            .map(parse_bytes)
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or(defaults.memory),
        fuel: r
            .fuel
            .as_deref()
            .map(parse_fuel)
            .transpose()
            .map_err(|e| e.to_string())?,
        timeout: r
            .timeout
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or(defaults.timeout),
        max_instances: r.max_instances.unwrap_or(defaults.max_instances),
    })
}

/// Sends the latest status to the API whenever it changes, retrying while
/// the control plane is unreachable (the pod keeps running meanwhile).
async fn report_statuses(
    context: Arc<NodeContext>,
    namespace: String,
    name: String,
    mut latest: watch::Receiver<Value>,
) {
    let mut sent = Value::Null;
    loop {
        let status = latest.borrow_and_update().clone();
        if !status.is_null() && status != sent {
            let patch = json!({"status": status});
            match context
                .client
                .patch(Kind::Pod, Some(&namespace), &name, &patch, true)
                .await
            {
                Ok(_) => sent = status,
                Err(e) if e.is_not_found() => return,
                Err(e) => {
                    tracing::debug!("{namespace}/{name}: status not reported yet: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        if latest.changed().await.is_err() {
            return;
        }
    }
}
