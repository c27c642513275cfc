//! What runs pods. The pod worker drives every pod through the same
//! lifecycle against three traits and never learns which runtime it talks
//! to: the artifact's media types choose a [`Runtime`], which pulls the
//! artifact into an [`Image`], which starts [`Instance`]s (one per run;
//! restarts start another from the same image).
//!
//! Two runtimes implement them: [`wasm`] (components in wasmtime) and
//! [`linux`] (ordinary images through containerd).

pub mod linux;
pub mod meters;
pub mod wasm;

use std::collections::HashMap;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use skiff_api::kinds::pod::{PodRuntime, PodSpec};
use skiff_oci::Reference;

use skiff_oci::{Credentials, OciError, Registry, Resolved};
use skiff_wasm::Sandbox;

/// What serves a running pod's HTTP on this node: the ingress routes to
/// it, the probes check it.
#[derive(Clone)]
pub enum Backend {
    /// A Wasm component: a fresh instance per request, in process.
    Wasm(skiff_wasm::HttpApp),
    /// A Linux container listening on the host network.
    Process(std::net::SocketAddr),
}

/// Why getting a pod ready failed: worth retrying, or not. The reason is
/// the pod's status reason (`ErrImagePull`, `InvalidImage`, ...).
#[derive(Debug)]
pub enum Failure {
    Retry {
        reason: &'static str,
        message: String,
    },
    Fatal {
        reason: &'static str,
        message: String,
    },
}

impl Failure {
    pub fn retry(reason: &'static str) -> impl Fn(&dyn Display) -> Failure {
        move |message| Failure::Retry {
            reason,
            message: message.to_string(),
        }
    }

    pub fn fatal(reason: &'static str) -> impl Fn(&dyn Display) -> Failure {
        move |message| Failure::Fatal {
            reason,
            message: message.to_string(),
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            Failure::Retry { reason, .. } | Failure::Fatal { reason, .. } => reason,
        }
    }

    /// How a registry error fails a pull: a bad artifact is for good, a
    /// registry that fails may do better next time.
    pub fn of_pull(error: OciError) -> Failure {
        match error {
            // Over a cap is for good: the content named by digest is
            // what it is. A registry that timed out may answer next time.
            e @ (OciError::NotWasm { .. }
            | OciError::TooLarge { .. }
            | OciError::OverCap { .. }
            | OciError::TooManyLayers { .. }
            | OciError::Reference(..)
            | OciError::NoPlatform { .. }
            | OciError::LinuxImage { .. }) => Failure::fatal("InvalidImage")(&e),
            e @ OciError::DigestMismatch { .. } => Failure::retry("ImageDigestMismatch")(&e),
            e => Failure::retry("ErrImagePull")(&e),
        }
    }
}

/// A pod, as the runtimes name what they make for it.
#[derive(Debug, Clone)]
pub struct PodId {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// An artifact to pull: its reference pinned to the manifest digest.
pub struct Artifact {
    pub image: String,
    pub pinned: Reference,
    pub digest: String,
    pub credentials: Credentials,
    /// Its manifest, when the worker read it from the registry for this
    /// pull already: the runtimes go on from it instead of asking again.
    pub resolved: Option<Resolved>,
}

/// What a runtime is given to start one run of a pod.
pub struct Launch<'a> {
    pub spec: &'a PodSpec,
    /// Environment, arguments, directories and outbound grants, resolved
    /// from the pod's spec (Secrets and ConfigMaps read).
    pub sandbox: Sandbox,
    /// The pod's own directory on the node (volumes, logs), removed with
    /// the pod.
    pub dir: PathBuf,
    /// Where the pod's Secret volumes are, if it has any: owner-only, on
    /// memory, removed with the pod. A runtime that runs the pod as
    /// another user hands this directory to that user.
    pub secrets: Option<PathBuf>,
}

/// How a run ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// The exit code, when the run exited by itself.
    pub code: Option<i32>,
    /// Why, when it did not succeed.
    pub message: Option<String>,
}

impl Ended {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    pub fn code(code: i32) -> Self {
        Self {
            code: Some(code),
            message: (code != 0).then(|| format!("exited with code {code}")),
        }
    }
}

/// Runs one kind of artifact.
pub trait Runtime: Send + Sync {
    /// Gets the artifact onto the node for the pod. Starting it (compiling,
    /// unpacking) is the image's business.
    fn pull<'a>(
        &'a self,
        pod: &'a PodId,
        artifact: &'a Artifact,
    ) -> BoxFuture<'a, Result<Box<dyn Image>, Failure>>;
}

/// An artifact pulled for one pod: what its runs start from.
pub trait Image: Send {
    /// Starts a run (the first one also compiles or unpacks the artifact).
    fn start<'a>(
        &'a mut self,
        launch: Launch<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Instance>, Failure>>;

    /// Lets go of what the pod held in the runtime, once it is gone.
    fn release(&mut self) -> BoxFuture<'_, ()>;
}

/// One run of a pod.
pub trait Instance: Send + Sync {
    /// Where the ingress and the probes reach it, if it serves HTTP.
    fn backend(&self) -> Option<Backend>;

    /// Resolves when the run ends by itself (or after [`Instance::kill`]).
    /// Dropping the future leaves the run as it is.
    fn exited(&self) -> BoxFuture<'_, Ended>;

    /// Ends the run at once (a failed liveness probe).
    fn kill(&self) -> BoxFuture<'_, ()>;

    /// Ends the run, letting it finish within `grace`, and frees what it
    /// holds. Also called after it ended by itself.
    fn stop(self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()>;
}

/// The node's runtimes, and which runs what.
pub struct Runtimes {
    pub wasm: wasm::WasmRuntime,
    /// Present when the node has containerd.
    pub linux: Option<linux::LinuxRuntime>,
    registry: Registry,
    /// The running pods' usage meters and the pull and cache counts, which
    /// both runtimes keep.
    pub meters: std::sync::Arc<meters::Meters>,
    /// The kind of every manifest digest seen: a digest names its content,
    /// so the answer never changes.
    kinds: Mutex<HashMap<String, PodRuntime>>,
}

impl Runtimes {
    pub fn new(
        mut wasm: wasm::WasmRuntime,
        mut linux: Option<linux::LinuxRuntime>,
        registry: Registry,
    ) -> Self {
        let meters = std::sync::Arc::new(meters::Meters::default());
        wasm.meters = meters.clone();
        if let Some(linux) = &mut linux {
            linux.meters = meters.clone();
        }
        Self {
            meters,
            wasm,
            linux,
            registry,
            kinds: Mutex::default(),
        }
    }

    /// The runtime for an artifact, chosen by its media types, checked
    /// against the runtime the pod asks for.
    pub async fn select(
        &self,
        artifact: &Artifact,
        declared: Option<PodRuntime>,
    ) -> Result<&dyn Runtime, Failure> {
        let known = self
            .kinds
            .lock()
            .expect("kinds lock")
            .get(&artifact.digest)
            .copied();
        let kind = match (known, &artifact.resolved) {
            (Some(kind), _) => kind,
            (None, Some(resolved)) => {
                self.kinds
                    .lock()
                    .expect("kinds lock")
                    .insert(artifact.digest.clone(), resolved.runtime);
                resolved.runtime
            }
            // A component in the node's cache needs no registry round trip.
            (None, None) if self.wasm.holds(&artifact.digest) => PodRuntime::Wasm,
            (None, None) => {
                let kind = self
                    .registry
                    .kind_of(&artifact.pinned, &artifact.credentials)
                    .await
                    .map_err(Failure::of_pull)?;
                self.kinds
                    .lock()
                    .expect("kinds lock")
                    .insert(artifact.digest.clone(), kind);
                kind
            }
        };
        if let Some(declared) = declared.filter(|d| *d != kind) {
            return Err(Failure::fatal("InvalidImage")(&format_args!(
                "{}: the pod asks for runtime {declared:?}, but the image is {}",
                artifact.image,
                match kind {
                    PodRuntime::Wasm => "a Wasm component",
                    PodRuntime::Linux => "a Linux image",
                }
            )));
        }
        match (kind, &self.linux) {
            (PodRuntime::Wasm, _) => Ok(&self.wasm),
            (PodRuntime::Linux, Some(linux)) => Ok(linux),
            (PodRuntime::Linux, None) => Err(Failure::fatal("NoLinuxRuntime")(&format_args!(
                "{}: a Linux container image; it needs the containerd runtime, which this node does not have",
                artifact.image
            ))),
        }
    }
}
