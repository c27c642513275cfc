//! Components in wasmtime: pulled into the node's blob cache, compiled once
//! per image (the compiled code is shared through the engine's cache), and
//! served with a fresh instance per request (`wasi:http/proxy`) or run to
//! completion (`wasi:cli/command`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use skiff_api::kinds::pod::{PodSpec, parse_millicores};
use skiff_api::quantity::{parse_bytes, parse_duration, parse_fuel};
use tokio::sync::Notify;

use super::Backend;
use super::meters::{Cache, Meter, Metered, Meters, PullRuntime};
use super::{Artifact, Ended, Failure, Image, Instance, Launch, PodId, Runtime};
use skiff_oci::{BlobCache, CacheError, Registry};
use skiff_wasm::{
    self, App, CommandApp, EngineConfig, EngineError, FairShare, HttpApp, Limits, LoadedComponent,
};

/// The node's wasmtime engines: one without fuel metering and, made when a
/// pod first asks for fuel, one with (metering changes generated code, so
/// it is an engine-wide choice).
pub struct Engines {
    config: EngineConfig,
    plain: Mutex<Option<Arc<skiff_wasm::Engine>>>,
    metered: Mutex<Option<Arc<skiff_wasm::Engine>>>,
}

impl Engines {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            plain: Mutex::new(None),
            metered: Mutex::new(None),
        }
    }

    pub fn get(&self, fuel: bool) -> Result<Arc<skiff_wasm::Engine>, EngineError> {
        let slot = if fuel { &self.metered } else { &self.plain };
        let mut slot = slot.lock().expect("runtime lock");
        if let Some(runtime) = slot.as_ref() {
            return Ok(runtime.clone());
        }
        let runtime = Arc::new(skiff_wasm::Engine::new(EngineConfig {
            fuel_metering: fuel,
            ..self.config.clone()
        })?);
        *slot = Some(runtime.clone());
        Ok(runtime)
    }
}

pub struct WasmRuntime {
    share: Arc<FairShare>,
    engines: Arc<Engines>,
    blobs: BlobCache,
    registry: Registry,
    /// Shared with the node's other runtime (set by [`super::Runtimes::new`]).
    pub(super) meters: Arc<Meters>,
}

impl WasmRuntime {
    pub fn new(
        share: Arc<FairShare>,
        engines: Engines,
        blobs: BlobCache,
        registry: Registry,
    ) -> Self {
        Self {
            share,
            engines: Arc::new(engines),
            blobs,
            registry,
            meters: Arc::default(),
        }
    }

    /// Whether the component of a manifest is in the node's cache.
    pub fn holds(&self, manifest_digest: &str) -> bool {
        self.blobs.holds(manifest_digest)
    }
}

impl Runtime for WasmRuntime {
    fn pull<'a>(
        &'a self,
        pod: &'a PodId,
        artifact: &'a Artifact,
    ) -> BoxFuture<'a, Result<Box<dyn Image>, Failure>> {
        Box::pin(async move {
            let (registry, pinned, credentials, resolved) = (
                self.registry.clone(),
                artifact.pinned.clone(),
                artifact.credentials.clone(),
                artifact.resolved.clone(),
            );
            // Whether this pull downloaded (a miss) or found the
            // component in the cache, or being downloaded for another pod.
            let fetched = std::sync::atomic::AtomicBool::new(false);
            let fetching = &fetched;
            let bytes = self
                .blobs
                .get_or_fetch(&artifact.digest, || async move {
                    fetching.store(true, std::sync::atomic::Ordering::Relaxed);
                    match resolved {
                        Some(resolved) => {
                            registry
                                .pull_resolved(&pinned, &credentials, &resolved)
                                .await
                        }
                        None => registry.pull(&pinned, &credentials).await,
                    }
                })
                .await;
            let counts = &self.meters.counts;
            if fetched.into_inner() {
                counts.looked_up(Cache::Blob, false);
                counts.pulled(PullRuntime::Wasm, bytes.is_ok());
            } else if bytes.is_ok() {
                counts.looked_up(Cache::Blob, true);
            }
            let bytes = bytes.map_err(|e| match e {
                CacheError::Pull(e) => Failure::of_pull(e),
                other => Failure::retry("ErrImagePull")(&other),
            })?;
            Ok(Box::new(WasmImage {
                share: self.share.clone(),
                pod: pod.clone(),
                meters: self.meters.clone(),
                namespace: pod.namespace.clone(),
                engines: self.engines.clone(),
                name: format!("{}@{}", artifact.image, artifact.digest),
                bytes: Some(bytes),
                loaded: None,
            }) as Box<dyn Image>)
        })
    }
}

/// A pod's component: its bytes until compiled, then the compiled code,
/// which serves every restart.
struct WasmImage {
    share: Arc<FairShare>,
    pod: PodId,
    meters: Arc<Meters>,
    namespace: String,
    engines: Arc<Engines>,
    name: String,
    bytes: Option<Arc<Vec<u8>>>,
    loaded: Option<LoadedComponent>,
}

impl Image for WasmImage {
    fn start<'a>(
        &'a mut self,
        launch: Launch<'a>,
    ) -> BoxFuture<'a, Result<Box<dyn Instance>, Failure>> {
        Box::pin(async move {
            let invalid = Failure::fatal("InvalidComponent");
            let limits = limits_of(launch.spec).map_err(|e| Failure::fatal("InvalidLimits")(&e))?;
            let engine = self
                .engines
                .get(limits.fuel.is_some())
                .map_err(|e| Failure::fatal("RuntimeUnavailable")(&e))?;
            let component = match &mut self.loaded {
                Some(component) => component,
                loaded @ None => {
                    let bytes = self.bytes.take().expect("compiled once, from the pull");
                    // Compiling takes long and blocks: off the async
                    // workers, which keep serving the node's other pods.
                    let (name, engine) = (self.name.clone(), engine.clone());
                    let component = tokio::task::spawn_blocking(move || engine.load(&name, &bytes))
                        .await
                        .map_err(|e| invalid(&e))?
                        .map_err(|e| invalid(&e))?;
                    let hit = matches!(
                        component.cache_outcome(),
                        skiff_wasm::CacheOutcome::Hit | skiff_wasm::CacheOutcome::Shared
                    );
                    self.meters.counts.looked_up(Cache::Compiled, hit);
                    loaded.insert(component)
                }
            };
            let cpu = launch
                .spec
                .resources
                .cpu
                .as_deref()
                .and_then(parse_millicores);
            let tenant = self.share.tenant(&self.namespace, cpu);
            let app = engine
                .prepare_shared(component, limits, launch.sandbox, Some(tenant))
                .await
                .map_err(|e| invalid(&e))?;
            Ok(match app {
                App::Http(app) => Box::new(Served {
                    _metered: self.meters.register(&self.pod, Meter::Wasm(app.usage())),
                    app,
                    killed: Notify::new(),
                }) as Box<dyn Instance>,
                App::Command(app) => Box::new(Run {
                    _metered: self.meters.register(&self.pod, Meter::Wasm(app.usage())),
                    app,
                    killed: Notify::new(),
                }),
            })
        })
    }

    fn release(&mut self) -> BoxFuture<'_, ()> {
        // The blob cache and the compiled code are the node's, shared with
        // other pods of the image.
        Box::pin(async {})
    }
}

/// How long a stop waits, once it has ended a served component's
/// instances, for them to be gone: each ends at its next epoch tick
/// (10 ms) or await point.
const STOP_WAIT: Duration = Duration::from_millis(500);

/// A served component: it runs only while it handles a request, so it
/// "ends" only when killed.
struct Served {
    app: HttpApp,
    killed: Notify,
    /// The run's usage meter, until the run is dropped.
    _metered: Metered,
}

impl Instance for Served {
    fn backend(&self) -> Option<Backend> {
        Some(Backend::Wasm(self.app.clone()))
    }

    fn exited(&self) -> BoxFuture<'_, Ended> {
        Box::pin(async {
            self.killed.notified().await;
            Ended::default()
        })
    }

    fn kill(&self) -> BoxFuture<'_, ()> {
        self.killed.notify_one();
        Box::pin(async {})
    }

    /// Lets requests in flight finish, up to the grace period, then ends
    /// the instances still running: a request left to its own timeout
    /// (up to a day) would go on acting, outbound, after its pod was
    /// deleted or evicted and while its replacement runs.
    fn stop(self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let deadline = Instant::now() + grace;
            while self.app.in_flight() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            self.app.stop_instances();
            // They end at their next epoch tick or await point; waiting
            // for it lets the caller count them gone when this returns.
            let ended = Instant::now() + STOP_WAIT;
            while self.app.in_flight() > 0 && Instant::now() < ended {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    }
}

/// A command component running to completion.
struct Run {
    app: Box<CommandApp>,
    killed: Notify,
    /// The run's usage meter, until the run is dropped.
    _metered: Metered,
}

impl Instance for Run {
    fn backend(&self) -> Option<Backend> {
        None
    }

    fn exited(&self) -> BoxFuture<'_, Ended> {
        Box::pin(async {
            tokio::select! {
                exited = self.app.run() => match exited {
                    Ok(code) => Ended::code(code),
                    Err(failure) => Ended {
                        code: None,
                        message: Some(failure.to_string()),
                    },
                },
                () = self.killed.notified() => Ended::default(),
            }
        })
    }

    fn kill(&self) -> BoxFuture<'_, ()> {
        self.killed.notify_one();
        Box::pin(async {})
    }

    /// The guest stops where it is when its run future is dropped.
    fn stop(self: Box<Self>, _grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async {})
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
