//! Ordinary Linux images through containerd: pulled with the node's
//! registry client (every blob checked), unpacked into containerd under a
//! lease per pod, run as a runc container with the pod's limits, and
//! reached over a port of the node's own when they serve HTTP. Every pod,
//! whatever its namespace, runs without new privileges, with only the
//! capabilities it was granted, under the node's seccomp profile and pids
//! limit, its output in a log file of capped size.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use skiff_api::kinds::pod::Protocol;
use skiff_api::quantity::parse_bytes;

use super::Backend;
use super::meters::{Cache, Meter, Metered, Meters, PullRuntime};
use super::{Artifact, Ended, Failure, Image, Instance, Launch, PodId, Runtime};
pub mod cgroup;
pub mod containerd;
pub mod log;
pub mod seccomp;
pub mod security;

use containerd::{Containerd, ContainerdError, DEFAULT_PIDS_LIMIT, RunSpec, image_defaults};
use log::LogCopy;
use security::UserError;
use skiff_oci::LinuxImage;
use skiff_oci::Reference;
use skiff_oci::{Credentials, Registry};

pub struct LinuxRuntime {
    containerd: Containerd,
    registry: Registry,
    limits: LinuxLimits,
    /// Images pulled before, without their layers' bytes, by manifest
    /// digest: while containerd still holds the layers (other pods of the
    /// image keep them), a pod starts from these without downloading.
    skeletons: Mutex<HashMap<String, LinuxImage>>,
    /// Shared with the node's other runtime (set by [`super::Runtimes::new`]).
    pub(super) meters: std::sync::Arc<Meters>,
}

/// Skeletons kept at most; past it they are forgotten.
const MAX_SKELETONS: usize = 256;

/// What the node allows every Linux pod, whatever its spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinuxLimits {
    /// Processes and threads at once (the pids cgroup's limit).
    pub pids: u32,
}

impl Default for LinuxLimits {
    fn default() -> Self {
        Self {
            pids: DEFAULT_PIDS_LIMIT,
        }
    }
}

impl LinuxRuntime {
    pub fn new(containerd: Containerd, registry: Registry, limits: LinuxLimits) -> Self {
        Self {
            containerd,
            registry,
            limits,
            skeletons: Mutex::default(),
            meters: std::sync::Arc::default(),
        }
    }

    /// The image's skeleton, if every layer of it is in containerd's
    /// content store for `namespace`.
    async fn present(&self, namespace: &str, digest: &str) -> Option<LinuxImage> {
        let skeleton = self
            .skeletons
            .lock()
            .expect("skeletons lock")
            .get(digest)
            .cloned()?;
        for layer in &skeleton.layers {
            if !self.containerd.holds(namespace, &layer.digest).await {
                return None;
            }
        }
        Some(skeleton)
    }
}

impl Runtime for LinuxRuntime {
    fn pull<'a>(
        &'a self,
        pod: &'a PodId,
        artifact: &'a Artifact,
    ) -> BoxFuture<'a, Result<Box<dyn Image>, Failure>> {
        Box::pin(async move {
            // Pods of a namespace live in a containerd namespace of their
            // own; the container and its lease are named after this very
            // pod (a pod of the same name later is another).
            let namespace = format!("skiff-{}", pod.namespace);
            let present = self.present(&namespace, &artifact.digest).await;
            let counts = &self.meters.counts;
            counts.looked_up(Cache::Layers, present.is_some());
            let image = match present {
                Some(skeleton) => skeleton,
                None => {
                    let (pinned, credentials) = (&artifact.pinned, &artifact.credentials);
                    let image = match &artifact.resolved {
                        Some(resolved) => {
                            self.registry
                                .pull_linux_resolved(pinned, credentials, resolved)
                                .await
                        }
                        None => self.registry.pull_linux(pinned, credentials).await,
                    };
                    counts.pulled(PullRuntime::Linux, image.is_ok());
                    let image = image.map_err(Failure::of_pull)?;
                    let mut skeletons = self.skeletons.lock().expect("skeletons lock");
                    if skeletons.len() >= MAX_SKELETONS {
                        skeletons.clear();
                    }
                    skeletons.insert(artifact.digest.clone(), image.skeleton());
                    image
                }
            };
            let uid: String = pod.uid.chars().filter(|c| *c != '-').take(12).collect();
            Ok(Box::new(ContainerImage {
                containerd: self.containerd.clone(),
                registry: self.registry.clone(),
                artifact: (artifact.pinned.clone(), artifact.credentials.clone()),
                namespace,
                id: format!("{}-{uid}", pod.name),
                hostname: pod.name.clone(),
                limits: self.limits,
                pulled: Some(Box::new(image)),
                unpacked: None,
                leased: false,
                pod: pod.clone(),
                meters: self.meters.clone(),
            }) as Box<dyn Image>)
        })
    }
}

/// A pod's image: pulled, then unpacked into containerd once (its top
/// snapshot serves every restart).
struct ContainerImage {
    containerd: Containerd,
    /// Where to download the image again, should its layers leave
    /// containerd before this pod holds them.
    registry: Registry,
    artifact: (Reference, Credentials),
    namespace: String,
    id: String,
    hostname: String,
    limits: LinuxLimits,
    pulled: Option<Box<LinuxImage>>,
    unpacked: Option<Unpacked>,
    /// Whether the pod may hold a lease in containerd (from the first
    /// unpack on, even one that failed halfway).
    leased: bool,
    pod: PodId,
    meters: std::sync::Arc<Meters>,
}

/// A Linux image in containerd: its top snapshot and its config.
struct Unpacked {
    chain: String,
    config: Vec<u8>,
    reference: String,
}

impl Image for ContainerImage {
    fn start<'a>(
        &'a mut self,
        launch: Launch<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Instance>, Failure>> {
        Box::pin(async move {
            let failed = |e: ContainerdError| Failure::retry("CreateContainerError")(&e);
            let containerd = &self.containerd;
            let (namespace, id) = (&self.namespace, &self.id);
            let (unpacked, mut spec) = match &mut self.unpacked {
                Some(unpacked) => {
                    let spec = run_spec(&launch, &unpacked.config, &self.hostname, self.limits)?;
                    (unpacked, spec)
                }
                unpacked @ None => {
                    let image = match self.pulled.take() {
                        Some(image) => image,
                        None => {
                            let (pinned, credentials) = &self.artifact;
                            let image = self.registry.pull_linux(pinned, credentials).await;
                            self.meters.counts.pulled(PullRuntime::Linux, image.is_ok());
                            Box::new(image.map_err(Failure::of_pull)?)
                        }
                    };
                    // Decided from the image's config before anything is
                    // unpacked: a pod refused (root where it must not be,
                    // an unknown capability) leaves nothing in containerd.
                    let spec =
                        match run_spec(&launch, &image.config.bytes, &self.hostname, self.limits) {
                            Ok(spec) => spec,
                            Err(failure) => {
                                self.pulled = kept_for_retry(&failure, image);
                                return Err(failure);
                            }
                        };
                    self.leased = true;
                    let chain = match containerd.unpack(namespace, id, &image).await {
                        Ok(chain) => chain,
                        Err(e) => {
                            // Kept for the retry if it has all its bytes;
                            // otherwise the retry downloads it.
                            if image.complete() {
                                self.pulled = Some(image);
                            }
                            return Err(failed(e));
                        }
                    };
                    let unpacked = unpacked.insert(Unpacked {
                        chain,
                        config: image.config.bytes,
                        reference: image.reference,
                    });
                    (unpacked, spec)
                }
            };
            // The Secret volumes are the node's alone until now: the
            // process reads them as its own user.
            if let Some(secrets) = &launch.secrets {
                hand_over(secrets, spec.uid, spec.gid).map_err(|e| {
                    Failure::retry("CreateContainerConfigError")(&format_args!(
                        "secret volumes: {e}"
                    ))
                })?;
            }
            // Containers share the host's network, so each HTTP pod gets a
            // port of its own, in PORT, and the ingress sends its requests
            // there.
            let port = if launch
                .spec
                .ports
                .iter()
                .any(|p| p.protocol == Protocol::Http)
            {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port())
                    .map_err(|e| {
                        Failure::retry("CreateContainerError")(&format_args!("no free port: {e}"))
                    })?;
                spec.env.push(("PORT".into(), port.to_string()));
                Some(port)
            } else {
                None
            };
            // Whatever a previous run left (a node restarted mid-run) goes
            // first.
            containerd
                .remove_container(namespace, id)
                .await
                .map_err(failed)?;
            let started = containerd
                .start(
                    namespace,
                    id,
                    id,
                    &unpacked.reference,
                    &unpacked.chain,
                    &spec,
                )
                .await
                .map_err(failed)?;
            Ok(Box::new(Task {
                _metered: self.meters.register(&self.pod, Meter::Cgroup(id.clone())),
                containerd: containerd.clone(),
                namespace: namespace.clone(),
                id: id.clone(),
                port,
                log: started.log,
            }) as Box<dyn Instance>)
        })
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            if !self.leased {
                return;
            }
            if let Err(e) = self.containerd.release(&self.namespace, &self.id).await {
                tracing::warn!("{}/{}: {e}", self.namespace, self.id);
            }
        })
    }
}

/// What of its pulled image a pod whose start failed before unpacking
/// keeps: all of it when it will try again (a skeleton's layers are in
/// containerd, a download's in memory), nothing when it failed for good.
/// A Failed pod waits for its deletion, and each one holding its layers
/// (up to the unpacked cap each) would pin them in the node's memory.
fn kept_for_retry(failure: &Failure, image: Box<LinuxImage>) -> Option<Box<LinuxImage>> {
    match failure {
        Failure::Retry { .. } => Some(image),
        Failure::Fatal { .. } => None,
    }
}

/// The container's process, environment, user, capabilities, limits and
/// mounts, from the image's config and the pod's spec (the pod's args
/// replace the image's command; its env comes after the image's; its
/// securityContext overrides the image's user), with the node's limits.
/// Gives `dir` and everything in it to `uid`:`gid`, not following links
/// (the node made every entry, but a link would be handed over, not its
/// target).
fn hand_over(dir: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(dir)?.is_dir() {
        for entry in std::fs::read_dir(dir)? {
            hand_over(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

fn run_spec(
    launch: &Launch<'_>,
    config: &[u8],
    hostname: &str,
    limits: LinuxLimits,
) -> Result<RunSpec, Failure> {
    let pod = launch.spec;
    let invalid = Failure::fatal("InvalidSpec");
    let (mut args, mut env, cwd, user) = image_defaults(config);
    if !pod.args.is_empty() {
        args = pod.args.clone();
    }
    if args.is_empty() {
        return Err(invalid(&format_args!(
            "{}: the image names no command and the pod gives no args",
            pod.image
        )));
    }
    env.extend(launch.sandbox.env.iter().cloned());
    let context = pod.security_context.as_ref();
    let (uid, gid) = security::user(&pod.image, &user, context).map_err(|e| match e {
        UserError::NotNumeric(message) => invalid(&message),
        UserError::Root(message) => Failure::fatal("CreateContainerConfigError")(&message),
    })?;
    let capabilities = security::capabilities(context).map_err(|e| invalid(&e))?;
    let r = &pod.resources;
    let memory = r
        .memory
        .as_deref()
        .map(parse_bytes)
        .transpose()
        .map_err(|e| invalid(&e))?;
    std::fs::create_dir_all(&launch.dir).map_err(|e| {
        Failure::retry("CreateContainerError")(&format_args!("{}: {e}", launch.dir.display()))
    })?;
    Ok(RunSpec {
        args,
        env,
        cwd,
        uid,
        gid,
        capabilities,
        hostname: hostname.to_owned(),
        memory_bytes: memory,
        cpu_millis: r
            .cpu
            .as_deref()
            .and_then(skiff_api::kinds::pod::parse_millicores),
        pids_limit: limits.pids,
        read_only_root: pod.read_only_root_filesystem,
        binds: launch
            .sandbox
            .dirs
            .iter()
            .map(|d| (d.host.clone(), d.guest.clone(), d.read_only))
            .collect(),
        output_dir: launch.dir.clone(),
        output: match &launch.sandbox.stdio {
            skiff_wasm::Stdio::Capture(sink) => Some(containerd::LogOutput(sink.clone())),
            _ => None,
        },
    })
}

/// A started container.
struct Task {
    containerd: Containerd,
    namespace: String,
    id: String,
    /// The host port it was told to serve HTTP on (`PORT`), if it does.
    port: Option<u16>,
    /// Its output on the way to the pod's log file.
    log: LogCopy,
    /// Its cgroup's usage meter, until the task is dropped.
    _metered: Metered,
}

impl Instance for Task {
    fn backend(&self) -> Option<Backend> {
        self.port
            .map(|port| Backend::Process(SocketAddr::from(([127, 0, 0, 1], port))))
    }

    fn exited(&self) -> BoxFuture<'_, Ended> {
        Box::pin(async {
            match self.containerd.wait(&self.namespace, &self.id).await {
                Ok(exit) => {
                    let code = i32::try_from(exit.code).unwrap_or(i32::MAX);
                    let mut ended = Ended::code(code);
                    if exit.oom_killed {
                        ended.message = Some(format!(
                            "OOMKilled: exceeded its memory limit (exit code {code})"
                        ));
                    }
                    ended
                }
                Err(e) => Ended {
                    code: None,
                    message: Some(e.to_string()),
                },
            }
        })
    }

    fn kill(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {
            let _ = self.containerd.signal(&self.namespace, &self.id, 9).await;
        })
    }

    /// SIGTERM, then SIGKILL after the grace period; then the container
    /// goes, and the last of its output reaches the log file.
    fn stop(self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let c = &self.containerd;
            let _ = c.signal(&self.namespace, &self.id, 15).await;
            if tokio::time::timeout(grace, self.exited()).await.is_err() {
                let _ = c.signal(&self.namespace, &self.id, 9).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), self.exited()).await;
            }
            if let Err(e) = c.remove_container(&self.namespace, &self.id).await {
                tracing::warn!("{}/{}: {e}", self.namespace, self.id);
            }
            // Deleting the task has the shim finish copying and close the
            // FIFO (it gives itself 2 s for that).
            let Task { log, .. } = *self;
            log.finish(Duration::from_secs(10)).await;
        })
    }
}

#[cfg(test)]
mod tests {
    use skiff_api::kinds::pod::{PodSpec, SecurityContext};
    use skiff_wasm::Sandbox;

    use super::*;

    fn spec_for(
        pod: &PodSpec,
        image_user: &str,
        dir: &std::path::Path,
    ) -> Result<RunSpec, Failure> {
        let launch = Launch {
            spec: pod,
            sandbox: Sandbox::default(),
            dir: dir.to_owned(),
            secrets: None,
        };
        let config = serde_json::json!({"config": {"Cmd": ["sh"], "User": image_user}});
        let limits = LinuxLimits { pids: 64 };
        run_spec(&launch, config.to_string().as_bytes(), "web", limits)
    }

    #[test]
    fn a_run_spec_carries_the_security_context_and_the_node_limits() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodSpec {
            image: "127.0.0.1:5000/app:v1".into(),
            security_context: Some(SecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(3000),
                run_as_non_root: Some(true),
                add_capabilities: vec!["NET_RAW".into()],
            }),
            ..Default::default()
        };
        let spec = spec_for(&pod, "", dir.path()).unwrap();
        assert_eq!((spec.uid, spec.gid), (1000, 3000));
        assert_eq!(spec.capabilities, ["CAP_NET_RAW"]);
        assert_eq!(spec.pids_limit, 64);
        assert_eq!(spec.output_dir, dir.path());
    }

    #[test]
    fn a_root_image_where_root_is_refused_fails_the_pod_before_it_starts() {
        let dir = tempfile::tempdir().unwrap();
        let mut pod = PodSpec {
            image: "127.0.0.1:5000/app:v1".into(),
            security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        match spec_for(&pod, "root", dir.path()) {
            Err(Failure::Fatal { reason, message }) => {
                assert_eq!(reason, "CreateContainerConfigError");
                assert_eq!(
                    message,
                    "image 127.0.0.1:5000/app:v1 runs as root (its user is `root`) and the pod must not run as root: set securityContext.runAsUser"
                );
            }
            other => panic!("{other:?}"),
        }
        pod.security_context = Some(SecurityContext {
            add_capabilities: vec!["SYS_TIME_TRAVEL".into()],
            ..Default::default()
        });
        match spec_for(&pod, "", dir.path()) {
            Err(Failure::Fatal { reason, message }) => {
                assert_eq!(reason, "InvalidSpec");
                assert_eq!(
                    message,
                    "securityContext.addCapabilities: `SYS_TIME_TRAVEL` is not a Linux capability"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    fn image_with_layer(bytes: usize) -> Box<LinuxImage> {
        let blob = |bytes: Vec<u8>| skiff_oci::Blob {
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            digest: "sha256:00".into(),
            size: bytes.len() as i64,
            bytes,
        };
        Box::new(LinuxImage {
            reference: "127.0.0.1:5000/app:v1".into(),
            manifest: blob(Vec::new()),
            config: blob(Vec::new()),
            layers: vec![blob(vec![7; bytes])],
        })
    }

    #[test]
    fn a_pod_failed_for_good_lets_go_of_its_image_and_a_retried_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodSpec {
            image: "127.0.0.1:5000/app:v1".into(),
            security_context: Some(SecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        // The start of a root image under runAsNonRoot, as `start` takes it.
        let fatal = spec_for(&pod, "root", dir.path()).unwrap_err();
        assert!(
            kept_for_retry(&fatal, image_with_layer(1 << 20)).is_none(),
            "a Failed pod waits for its deletion: it must not hold its layers meanwhile"
        );
        let retry = Failure::retry("CreateContainerError")(&"containerd away");
        let kept = kept_for_retry(&retry, image_with_layer(1 << 20)).expect("kept for the retry");
        assert_eq!(kept.layers[0].bytes.len(), 1 << 20);
    }
}
