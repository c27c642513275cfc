//! The containerd fallback: ordinary Linux images run as pods through
//! containerd's gRPC API and its runc shim.
//!
//! The node pulls the image itself (the same registry code, credentials and
//! digest checks as for Wasm components), writes its blobs into containerd's
//! content store and unpacks its layers into the snapshotter, then creates a
//! container with an OCI runtime spec made from the pod and runs its task.
//! Everything a pod holds in containerd is tied to a lease named after it,
//! so deleting the pod deletes the lease and containerd's garbage collector
//! takes whatever no other pod uses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::{
    AddResourceRequest, ApplyRequest, Container, CreateContainerRequest, CreateRequest,
    CreateTaskRequest, DeleteContainerRequest, DeleteRequest, DeleteTaskRequest, InfoRequest,
    KillRequest, Resource, StartRequest, WaitRequest, WriteAction, WriteContentRequest,
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    leases_client::LeasesClient, tasks_client::TasksClient, version_client::VersionClient,
};
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};
use containerd_client::types::Descriptor;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use skiff_oci::{Blob, LinuxImage};

use super::log::{LogCopy, LogPipes};
use super::seccomp;

/// The runc shim, as containerd names it.
const RUNC: &str = "io.containerd.runc.v2";
/// The type containerd expects an OCI runtime spec to carry.
const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Bytes per content write message (gRPC's default limit is 4 MiB).
const CHUNK: usize = 1 << 20;
/// Processes and threads a container may have at once, unless the node
/// says otherwise: plenty for a server's workers, and a fork bomb stops
/// there instead of at the node's own limit.
pub const DEFAULT_PIDS_LIMIT: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("cannot reach containerd at {}: {reason}", socket.display())]
    Connect { socket: PathBuf, reason: String },
    #[error("containerd: {what}: {message}")]
    Call {
        what: String,
        message: String,
        not_found: bool,
    },
    #[error("{0}")]
    Image(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn call(what: impl Into<String>) -> impl FnOnce(Status) -> ContainerdError {
    let what = what.into();
    move |status| ContainerdError::Call {
        what,
        message: status.message().to_owned(),
        not_found: status.code() == Code::NotFound,
    }
}

/// `Ok` for success and for the status `fine` (already there, already
/// gone: what an idempotent step expects on a second run).
fn tolerate<T>(result: Result<T, Status>, fine: Code, what: String) -> Result<(), ContainerdError> {
    match result {
        Ok(_) => Ok(()),
        Err(s) if s.code() == fine => Ok(()),
        Err(s) => Err(call(what)(s)),
    }
}

/// A blob as containerd's API describes it.
fn descriptor(blob: &Blob) -> Descriptor {
    Descriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.size,
        ..Default::default()
    }
}

/// What to run, from the pod and the image's config. The default runs as
/// root with no capabilities and the default pids and log limits.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// The capabilities the process holds (`CAP_` names), in every set;
    /// the rest are dropped.
    pub capabilities: Vec<String>,
    pub hostname: String,
    pub memory_bytes: Option<u64>,
    /// CPU in millicores.
    pub cpu_millis: Option<u64>,
    /// Processes and threads at once.
    pub pids_limit: u32,
    pub read_only_root: bool,
    /// Host directories bind-mounted into the container: (host, container,
    /// read-only).
    pub binds: Vec<(PathBuf, String, bool)>,
    /// Where the FIFOs of stdout and stderr are made (the node reads them).
    pub output_dir: PathBuf,
    /// Where their lines go: the pod's log (nowhere when absent).
    pub output: Option<LogOutput>,
}

/// A pod's log, as a run spec holds it.
#[derive(Clone)]
pub struct LogOutput(pub std::sync::Arc<dyn skiff_wasm::LogSink>);

impl std::fmt::Debug for LogOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogOutput")
    }
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            args: Vec::new(),
            env: Vec::new(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            capabilities: Vec::new(),
            hostname: String::new(),
            memory_bytes: None,
            cpu_millis: None,
            pids_limit: DEFAULT_PIDS_LIMIT,
            read_only_root: false,
            binds: Vec::new(),
            output_dir: PathBuf::new(),
            output: None,
        }
    }
}

/// A started task.
pub struct Started {
    pub pid: u32,
    /// Its output on the way to the log file: finish it once the task is
    /// deleted.
    pub log: LogCopy,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    /// The kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// A connection to one containerd.
#[derive(Clone)]
pub struct Containerd {
    channel: Channel,
    snapshotter: String,
    /// The memory cgroup root, to read OOM kills from (cgroup v1 or v2).
    cgroup_root: PathBuf,
    /// One unpack of an image at a time: pods started together from one
    /// image would otherwise race on the same content and snapshots; the
    /// later ones find the work done.
    unpacking: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Containerd {
    pub async fn connect(socket: &Path, snapshotter: &str) -> Result<Self, ContainerdError> {
        let fail = |reason: String| ContainerdError::Connect {
            socket: socket.to_owned(),
            reason,
        };
        if !socket.exists() {
            return Err(fail("no such socket".into()));
        }
        let channel =
            tokio::time::timeout(Duration::from_secs(5), containerd_client::connect(socket))
                .await
                .map_err(|_| fail("timed out".into()))?
                .map_err(|e| fail(e.to_string()))?;
        let containerd = Self {
            channel,
            snapshotter: snapshotter.to_owned(),
            cgroup_root: if Path::new("/sys/fs/cgroup/memory").is_dir() {
                PathBuf::from("/sys/fs/cgroup/memory")
            } else {
                PathBuf::from("/sys/fs/cgroup")
            },
            unpacking: Arc::default(),
        };
        containerd
            .version()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(containerd)
    }

    pub async fn version(&self) -> Result<String, ContainerdError> {
        let version = VersionClient::new(self.channel.clone())
            .version(())
            .await
            .map_err(call("version"))?
            .into_inner();
        Ok(version.version)
    }

    fn request<T>(namespace: &str, lease: Option<&str>, message: T) -> Request<T> {
        let mut request = Request::new(message);
        let metadata = request.metadata_mut();
        if let Ok(value) = namespace.parse() {
            metadata.insert("containerd-namespace", value);
        }
        if let Some(value) = lease.and_then(|l| l.parse().ok()) {
            metadata.insert("containerd-lease", value);
        }
        request
    }

    /// Makes sure the pod's lease exists; everything the pod uses is
    /// attached to it.
    async fn lease(&self, namespace: &str, id: &str) -> Result<(), ContainerdError> {
        let created = LeasesClient::new(self.channel.clone())
            .create(Self::request(
                namespace,
                None,
                CreateRequest {
                    id: id.to_owned(),
                    labels: HashMap::new(),
                },
            ))
            .await;
        tolerate(created, Code::AlreadyExists, format!("create lease {id}"))
    }

    async fn hold(
        &self,
        namespace: &str,
        lease: &str,
        id: &str,
        kind: &str,
    ) -> Result<(), ContainerdError> {
        LeasesClient::new(self.channel.clone())
            .add_resource(Self::request(
                namespace,
                None,
                AddResourceRequest {
                    id: lease.to_owned(),
                    resource: Some(Resource {
                        id: id.to_owned(),
                        r#type: kind.to_owned(),
                    }),
                },
            ))
            .await
            .map_err(call(format!("lease {id}")))?;
        Ok(())
    }

    /// Whether the content store of `namespace` holds a blob.
    pub async fn holds(&self, namespace: &str, digest: &str) -> bool {
        ContentClient::new(self.channel.clone())
            .info(Self::request(
                namespace,
                None,
                InfoRequest {
                    digest: digest.to_owned(),
                },
            ))
            .await
            .is_ok()
    }

    /// Writes a blob into the content store unless it is there already.
    async fn write(
        &self,
        namespace: &str,
        lease: &str,
        blob: &Blob,
    ) -> Result<(), ContainerdError> {
        if self.holds(namespace, &blob.digest).await {
            return self.hold(namespace, lease, &blob.digest, "content").await;
        }
        if !blob.downloaded() {
            return Err(ContainerdError::Image(format!(
                "blob {} left containerd's content store before it could be held",
                blob.digest
            )));
        }
        let total = blob.bytes.len() as i64;
        let reference = format!("skiff-{}", blob.digest);
        let mut messages: Vec<WriteContentRequest> = blob
            .bytes
            .chunks(CHUNK)
            .enumerate()
            .map(|(i, chunk)| WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                expected: blob.digest.clone(),
                offset: (i * CHUNK) as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            })
            .collect();
        messages.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: blob.digest.clone(),
            offset: total,
            data: Vec::new(),
            labels: HashMap::new(),
        });
        let written = ContentClient::new(self.channel.clone())
            .write(Self::request(
                namespace,
                Some(lease),
                futures::stream::iter(messages),
            ))
            .await;
        match written {
            Ok(response) => {
                // Drain the replies: an error in any ends the write.
                let mut replies = response.into_inner();
                while let Some(reply) = replies.message().await.transpose() {
                    if let Err(s) = reply
                        && s.code() != Code::AlreadyExists
                    {
                        return Err(call(format!("write {}", blob.digest))(s));
                    }
                }
                Ok(())
            }
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(call(format!("write {}", blob.digest))(s)),
        }
    }

    /// Puts the image's blobs in the content store and its layers in the
    /// snapshotter; returns the top layer's snapshot (its chain id).
    pub async fn unpack(
        &self,
        namespace: &str,
        lease: &str,
        image: &LinuxImage,
    ) -> Result<String, ContainerdError> {
        let gate = self
            .unpacking
            .lock()
            .expect("unpacking lock")
            .entry(image.manifest.digest.clone())
            .or_default()
            .clone();
        let unpacked = {
            let _turn = gate.lock().await;
            self.unpack_now(namespace, lease, image).await
        };
        let mut unpacking = self.unpacking.lock().expect("unpacking lock");
        // The last one out takes the gate away (the map holds one, the
        // caller one).
        if Arc::strong_count(&gate) == 2 {
            unpacking.remove(&image.manifest.digest);
        }
        unpacked
    }

    async fn unpack_now(
        &self,
        namespace: &str,
        lease: &str,
        image: &LinuxImage,
    ) -> Result<String, ContainerdError> {
        self.lease(namespace, lease).await?;
        for blob in std::iter::once(&image.manifest)
            .chain(std::iter::once(&image.config))
            .chain(&image.layers)
        {
            self.write(namespace, lease, blob).await?;
        }
        let config: Value = serde_json::from_slice(&image.config.bytes)
            .map_err(|e| ContainerdError::Image(format!("{}: config: {e}", image.reference)))?;
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if diff_ids.len() != image.layers.len() {
            return Err(ContainerdError::Image(format!(
                "{}: the config names {} layers, the manifest {}",
                image.reference,
                diff_ids.len(),
                image.layers.len()
            )));
        }
        let mut snapshots = SnapshotsClient::new(self.channel.clone());
        let mut diff = DiffClient::new(self.channel.clone());
        let mut parent = String::new();
        for (layer, diff_id) in image.layers.iter().zip(diff_ids) {
            let chain = chain_id(&parent, diff_id);
            let exists = snapshots
                .stat(Self::request(
                    namespace,
                    Some(lease),
                    StatSnapshotRequest {
                        snapshotter: self.snapshotter.clone(),
                        key: chain.clone(),
                    },
                ))
                .await
                .is_ok();
            if !exists {
                // Named after the pod's lease: unique to this unpack.
                let key = format!("extract-{lease}-{chain}");
                let mounts = self
                    .prepare(namespace, lease, &key, &parent)
                    .await
                    .map_err(call(format!("prepare layer {}", layer.digest)))?;
                let applied = diff
                    .apply(Self::request(
                        namespace,
                        Some(lease),
                        ApplyRequest {
                            diff: Some(descriptor(layer)),
                            mounts,
                            ..Default::default()
                        },
                    ))
                    .await;
                if let Err(s) = applied {
                    let _ = self.remove_snapshot(namespace, &key).await;
                    return Err(call(format!("unpack layer {}", layer.digest))(s));
                }
                let committed = snapshots
                    .commit(Self::request(
                        namespace,
                        Some(lease),
                        CommitSnapshotRequest {
                            snapshotter: self.snapshotter.clone(),
                            name: chain.clone(),
                            key: key.clone(),
                            labels: HashMap::new(),
                        },
                    ))
                    .await;
                match committed {
                    Ok(_) => {}
                    // Another pod unpacked the same layer meanwhile.
                    Err(s) if s.code() == Code::AlreadyExists => {
                        let _ = self.remove_snapshot(namespace, &key).await;
                    }
                    Err(s) => return Err(call(format!("commit layer {}", layer.digest))(s)),
                }
            }
            self.hold(
                namespace,
                lease,
                &chain,
                &format!("snapshots/{}", self.snapshotter),
            )
            .await?;
            parent = chain;
        }
        Ok(parent)
    }

    /// A writable snapshot `key` on `parent` (empty: none), held by `lease`;
    /// its mounts.
    async fn prepare(
        &self,
        namespace: &str,
        lease: &str,
        key: &str,
        parent: &str,
    ) -> Result<Vec<containerd_client::types::Mount>, Status> {
        Ok(SnapshotsClient::new(self.channel.clone())
            .prepare(Self::request(
                namespace,
                Some(lease),
                PrepareSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.to_owned(),
                    parent: parent.to_owned(),
                    labels: HashMap::new(),
                },
            ))
            .await?
            .into_inner()
            .mounts)
    }

    async fn remove_snapshot(&self, namespace: &str, key: &str) -> Result<(), ContainerdError> {
        SnapshotsClient::new(self.channel.clone())
            .remove(Self::request(
                namespace,
                None,
                RemoveSnapshotRequest {
                    snapshotter: self.snapshotter.clone(),
                    key: key.to_owned(),
                },
            ))
            .await
            .map_err(call(format!("remove snapshot {key}")))?;
        Ok(())
    }

    /// Creates the container `id` on top of snapshot `parent` and starts its
    /// task, its output copied into `spec.output`.
    pub async fn start(
        &self,
        namespace: &str,
        lease: &str,
        id: &str,
        image: &str,
        parent: &str,
        spec: &RunSpec,
    ) -> Result<Started, ContainerdError> {
        let pipes = LogPipes::create(&spec.output_dir).map_err(|source| ContainerdError::Io {
            path: spec.output_dir.clone(),
            source,
        })?;
        let rootfs = self
            .prepare(namespace, lease, id, parent)
            .await
            .map_err(call(format!("prepare the root of {id}")))?;
        let runtime_spec = runtime_spec(id, spec);
        let container = Container {
            id: id.to_owned(),
            image: image.to_owned(),
            runtime: Some(ContainerRuntime {
                name: RUNC.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE.into(),
                value: serde_json::to_vec(&runtime_spec).expect("spec serializes"),
            }),
            snapshotter: self.snapshotter.clone(),
            snapshot_key: id.to_owned(),
            ..Default::default()
        };
        ContainersClient::new(self.channel.clone())
            .create(Self::request(
                namespace,
                Some(lease),
                CreateContainerRequest {
                    container: Some(container),
                },
            ))
            .await
            .map_err(call(format!("create container {id}")))?;
        // A FIFO per stream, so each line keeps its stream.
        let fifo = |stream| pipes.path(stream).display().to_string();
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .create(Self::request(
                namespace,
                Some(lease),
                CreateTaskRequest {
                    container_id: id.to_owned(),
                    rootfs,
                    stdout: fifo(skiff_wasm::LogStream::Stdout),
                    stderr: fifo(skiff_wasm::LogStream::Stderr),
                    ..Default::default()
                },
            ))
            .await
            .map_err(call(format!("create the task of {id}")))?;
        // The shim opened its ends while creating the task.
        let log = pipes.copy_into(spec.output.as_ref().map(|output| output.0.clone()));
        let started = tasks
            .start(Self::request(
                namespace,
                None,
                StartRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                },
            ))
            .await
            .map_err(call(format!("start {id}")))?;
        Ok(Started {
            pid: started.into_inner().pid,
            log,
        })
    }

    /// Waits for the task to exit.
    pub async fn wait(&self, namespace: &str, id: &str) -> Result<Exit, ContainerdError> {
        let waited = TasksClient::new(self.channel.clone())
            .wait(Self::request(
                namespace,
                None,
                WaitRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                },
            ))
            .await
            .map_err(call(format!("wait for {id}")))?
            .into_inner();
        Ok(Exit {
            code: waited.exit_status,
            oom_killed: self.oom_kills(id) > 0,
        })
    }

    /// OOM kills in the container's memory cgroup (it is gone once the
    /// task is deleted, so read it first).
    fn oom_kills(&self, id: &str) -> u64 {
        let dir = self.cgroup_root.join("skiff").join(id);
        let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        // cgroup v1 reports it in memory.oom_control, v2 in memory.events.
        format!("{}{}", read("memory.oom_control"), read("memory.events"))
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Sends a signal to every process of the task.
    pub async fn signal(
        &self,
        namespace: &str,
        id: &str,
        signal: u32,
    ) -> Result<(), ContainerdError> {
        let killed = TasksClient::new(self.channel.clone())
            .kill(Self::request(
                namespace,
                None,
                KillRequest {
                    container_id: id.to_owned(),
                    exec_id: String::new(),
                    signal,
                    all: true,
                },
            ))
            .await;
        tolerate(killed, Code::NotFound, format!("signal {id}"))
    }

    /// Removes the task, the container and its root (each if there), but not
    /// the lease: the pod may start again.
    pub async fn remove_container(&self, namespace: &str, id: &str) -> Result<(), ContainerdError> {
        let deleted = TasksClient::new(self.channel.clone())
            .delete(Self::request(
                namespace,
                None,
                DeleteTaskRequest {
                    container_id: id.to_owned(),
                },
            ))
            .await;
        tolerate(deleted, Code::NotFound, format!("delete the task of {id}"))?;
        let deleted = ContainersClient::new(self.channel.clone())
            .delete(Self::request(
                namespace,
                None,
                DeleteContainerRequest { id: id.to_owned() },
            ))
            .await;
        tolerate(deleted, Code::NotFound, format!("delete container {id}"))?;
        match self.remove_snapshot(namespace, id).await {
            Err(ContainerdError::Call {
                not_found: true, ..
            }) => Ok(()),
            other => other,
        }
    }

    /// Drops the pod's lease: containerd collects what no one else holds.
    pub async fn release(&self, namespace: &str, lease: &str) -> Result<(), ContainerdError> {
        let deleted = LeasesClient::new(self.channel.clone())
            .delete(Self::request(
                namespace,
                None,
                DeleteRequest {
                    id: lease.to_owned(),
                    sync: true,
                },
            ))
            .await;
        tolerate(deleted, Code::NotFound, format!("delete lease {lease}"))
    }
}

/// The chain id of a layer on `parent` (empty for the first layer), as the
/// OCI image spec defines it: the snapshot's name.
pub fn chain_id(parent: &str, diff_id: &str) -> String {
    if parent.is_empty() {
        return diff_id.to_owned();
    }
    let digest = Sha256::digest(format!("{parent} {diff_id}").as_bytes());
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// What the image's config says to run, for a pod that says nothing else:
/// (entrypoint + cmd, env, working directory, user).
pub fn image_defaults(config: &[u8]) -> (Vec<String>, Vec<(String, String)>, String, String) {
    let config: Value = serde_json::from_slice(config).unwrap_or_default();
    let c = &config["config"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut args = strings(&c["Entrypoint"]);
    args.extend(strings(&c["Cmd"]));
    let env = strings(&c["Env"])
        .into_iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect();
    let cwd = c["WorkingDir"]
        .as_str()
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    let user = c["User"].as_str().unwrap_or_default();
    (args, env, cwd.to_owned(), user.to_owned())
}

/// The OCI runtime spec of a container: its own pid, ipc, uts and mount
/// namespaces, the host's network (pods are reached through the node's
/// ingress), a memory, CPU and pids cgroup under `skiff/`, the mounts and
/// masked paths every container gets, and the hardening every pod gets
/// whatever it asks: only its own capabilities, no new privileges, and
/// the node's seccomp profile.
pub fn runtime_spec(id: &str, spec: &RunSpec) -> Value {
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // In every set, ambient included: a process that is not root keeps
    // its capabilities across execve only through the ambient set, so
    // without it a non-root pod would hold none of those it was granted.
    let capabilities = &spec.capabilities;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}),
    ];
    for (host, target, read_only) in &spec.binds {
        let mode = if *read_only { "ro" } else { "rw" };
        mounts.push(json!({
            "destination": target, "type": "bind", "source": host,
            "options": ["rbind", "rprivate", mode],
        }));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = spec.memory_bytes {
        // Swap is left alone: its accounting is often off in the kernel,
        // and nodes run without swap anyway.
        resources["memory"] = json!({"limit": limit});
    }
    if let Some(millis) = spec.cpu_millis {
        resources["cpu"] = json!({"quota": millis * 100, "period": 100_000});
    }
    resources["pids"] = json!({"limit": spec.pids_limit});
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": spec.uid, "gid": spec.gid},
            "args": spec.args,
            "env": env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": capabilities, "effective": capabilities,
                "permitted": capabilities, "inheritable": capabilities,
                "ambient": capabilities,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": spec.read_only_root},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "resources": resources,
            "cgroupsPath": format!("/skiff/{id}"),
            "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "seccomp": seccomp::for_this_node(),
            "maskedPaths": [
                "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware"
            ],
            "readonlyPaths": [
                "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                "/proc/sysrq-trigger"
            ],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let a = "sha256:aaaa";
        assert_eq!(chain_id("", a), a);
        let expected = Sha256::digest(b"sha256:aaaa sha256:bbbb");
        let expected: String = expected.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(chain_id(a, "sha256:bbbb"), format!("sha256:{expected}"));
    }

    #[test]
    fn image_defaults_come_from_the_config() {
        let config = br#"{"config": {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"],
            "Env": ["PATH=/bin", "A=b=c"], "WorkingDir": "/srv", "User": "1000"}}"#;
        let (args, env, cwd, user) = image_defaults(config);
        assert_eq!(args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(
            env,
            [("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
        );
        assert_eq!((cwd.as_str(), user.as_str()), ("/srv", "1000"));
        let (args, _, cwd, _) = image_defaults(b"{}");
        assert!(args.is_empty());
        assert_eq!(cwd, "/");
    }

    #[test]
    fn the_runtime_spec_carries_limits_and_the_host_network() {
        let spec = runtime_spec(
            "shop-web",
            &RunSpec {
                args: vec!["httpd".into()],
                env: vec![("PORT".into(), "8080".into())],
                cwd: "/".into(),
                memory_bytes: Some(64 << 20),
                cpu_millis: Some(500),
                read_only_root: true,
                ..Default::default()
            },
        );
        assert_eq!(spec["process"]["env"], json!(["PORT=8080"]));
        assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(spec["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(spec["linux"]["cgroupsPath"], "/skiff/shop-web");
        assert_eq!(spec["root"]["readonly"], true);
        let namespaces = spec["linux"]["namespaces"].to_string();
        assert!(!namespaces.contains("network"), "{namespaces}");
    }

    #[test]
    fn every_runtime_spec_is_hardened() {
        const SETS: [&str; 5] = [
            "bounding",
            "effective",
            "permitted",
            "inheritable",
            "ambient",
        ];
        let plain = runtime_spec("plain", &RunSpec::default());
        let process = &plain["process"];
        assert_eq!(process["noNewPrivileges"], true);
        for set in SETS {
            assert_eq!(process["capabilities"][set], json!([]), "{set}");
        }
        let limit = &plain["linux"]["resources"]["pids"]["limit"];
        assert_eq!(*limit, DEFAULT_PIDS_LIMIT);
        assert_eq!(plain["linux"]["seccomp"], *seccomp::for_this_node());
        assert_eq!(plain["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");

        let granted = runtime_spec(
            "granted",
            &RunSpec {
                uid: 1000,
                gid: 1000,
                capabilities: vec!["CAP_NET_ADMIN".into()],
                pids_limit: 16,
                ..Default::default()
            },
        );
        let process = &granted["process"];
        assert_eq!(process["user"], json!({"uid": 1000, "gid": 1000}));
        for set in SETS {
            let held = &process["capabilities"][set];
            assert_eq!(*held, json!(["CAP_NET_ADMIN"]), "{set}");
        }
        assert_eq!(granted["linux"]["resources"]["pids"]["limit"], 16);
    }
}
