//! Components under limits in wasmtime, shared by `wasmctl run` and the
//! node's Wasm pod runtime. The only crate of the workspace that depends on
//! wasmtime: its edge (requests, bodies, errors, limits, grants) is made of
//! its own types and `http`'s.
//!
//! Expensive work happens once: one [`Engine`] (wasmtime's engine with the pooling
//! allocator and epoch interruption, linker, compilation cache) per process,
//! one compile per component (skipped when the cache has it), one
//! `InstancePre` per component. Cheap work happens per instance: a fresh
//! store with its limits for every HTTP request or command run, so no state
//! survives from one request to the next.

mod cache;
mod command;
mod egress;
mod error;
mod host;
mod http;
pub mod limits;
mod outbound;
mod output;
mod sandbox;
mod send;
pub mod share;
pub mod trace;
mod usage;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy};

use cache::CompileError;
pub use cache::{ArtifactCache, CacheOutcome, Digest};
pub use command::CommandApp;
pub use error::{GuestFailure, LoadError};
pub use http::{BodyError, HttpApp, HttpBody, InstanceStats, REQUEST_ID, text_response};
pub use limits::{Limits, LimitsError, MemoryLimitExceeded};
pub use outbound::{
    CALLER_AUTH_HEADER, CALLER_NAMESPACE_HEADER, INTERNAL_HEADERS, PROXY_AUTH_HEADER, named_host,
    service_of_host,
};
pub use output::{LineSplitter, LogSink, LogStream, MAX_LINE};
pub use sandbox::{DirGrant, DirGrantError, Sandbox, ServiceGateway, Stdio};
pub use share::{FairShare, ShareConfig, Tenant};
pub use skiff_api::outbound::{AllowList, AllowRule, AllowRuleError};
pub use skiff_api::quantity;
pub use usage::Usage;

use error::one_line;
use host::{Host, InstanceSpec};
use limits::{EPOCH_TICK, SlotReset};

/// The wasmtime this engine is built on, as nodes report it.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Engine-wide settings: what every component run by this runtime may at
/// most ask for.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest memory limit a component may be given.
    pub max_memory: u64,
    /// Instances of all components together that may exist at once.
    pub max_instances: u32,
    /// Whether fuel is metered. Metering costs some speed and changes the
    /// generated code, so it is an engine-wide choice.
    pub fuel_metering: bool,
    /// Where compiled components are kept; `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
}

impl EngineConfig {
    /// A runtime sized for exactly one component with `limits`, as
    /// `wasmctl run` uses.
    pub fn for_limits(limits: &Limits, cache_dir: Option<PathBuf>) -> Self {
        Self {
            max_memory: limits.memory,
            max_instances: limits.max_instances,
            fuel_metering: limits.fuel.is_some(),
            cache_dir,
        }
    }
}

/// The runtime could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot create the Wasm engine: {0}")]
    Engine(String),
    #[error("cannot open the compilation cache {}: {reason}", dir.display())]
    Cache { dir: PathBuf, reason: String },
}

/// A component that cannot be prepared with the limits asked for.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{name}: {source}")]
    Limits { name: String, source: LimitsError },
}

/// One engine, linker and cache per process.
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Arc<Linker<Host>>,
    cache: Option<ArtifactCache>,
    shared: SharedComponents,
    config: EngineConfig,
    _epoch: EpochTicker,
}

/// What a component does when run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComponentKind {
    /// Exports `wasi:http/incoming-handler`: served, one instance per request.
    Http,
    /// Exports `wasi:cli/run`: runs to completion.
    Command,
}

/// A compiled component, ready to be prepared for running.
pub struct LoadedComponent {
    name: String,
    digest: Digest,
    kind: ComponentKind,
    component: Component,
    cache: CacheOutcome,
    ready_in: Duration,
}

impl LoadedComponent {
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    pub fn kind(&self) -> ComponentKind {
        self.kind
    }
    /// Whether the compiled code came from the cache or was compiled now.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }
    /// How long compiling (or loading from the cache) took.
    pub fn ready_in(&self) -> Duration {
        self.ready_in
    }
}

/// A component prepared to run with its limits and grants.
pub enum App {
    Http(HttpApp),
    Command(Box<CommandApp>),
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        let engine = new_engine(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .map_err(|e| EngineError::Engine(one_line(&e)))?;
        let cache = match &config.cache_dir {
            Some(dir) => {
                Some(
                    ArtifactCache::open(dir, &engine).map_err(|e| EngineError::Cache {
                        dir: dir.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let epoch = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache,
            shared: SharedComponents::default(),
            config,
            _epoch: epoch,
        })
    }

    pub fn cache(&self) -> Option<&ArtifactCache> {
        self.cache.as_ref()
    }

    /// Reads and loads a component file; its path names it in errors.
    pub fn load_file(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| LoadError::Read {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        self.load(&name, &bytes)
    }

    /// Checks, compiles (or fetches from the cache) and classifies a
    /// component.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        check_encoding(name, bytes)?;
        let started = Instant::now();
        let digest = Digest::of(bytes);
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            name: name.to_owned(),
            reason: one_line(&e),
        };
        // One compile per digest at a time: pods of one image starting
        // together wait for the first and share its code.
        let slot = self.shared.slot(digest);
        let mut slot = slot.lock().expect("component slot");
        if let Some(component) = slot.as_ref() {
            let component = component.clone();
            let kind =
                entry_point(&self.engine, &component).ok_or_else(|| LoadError::NoEntryPoint {
                    name: name.to_owned(),
                })?;
            return Ok(LoadedComponent {
                name: name.to_owned(),
                digest,
                kind,
                component,
                cache: CacheOutcome::Shared,
                ready_in: started.elapsed(),
            });
        }
        let (component, cache) =
            match &self.cache {
                Some(cache) => cache
                    .get_or_compile(&self.engine, &digest, bytes)
                    .map_err(|e| match e {
                        CompileError::Invalid(e) => invalid(e),
                        CompileError::Cache(reason) => LoadError::Cache {
                            name: name.to_owned(),
                            reason,
                        },
                    })?,
                None => (
                    Component::new(&self.engine, bytes).map_err(invalid)?,
                    CacheOutcome::CompiledUncached,
                ),
            };
        let kind =
            entry_point(&self.engine, &component).ok_or_else(|| LoadError::NoEntryPoint {
                name: name.to_owned(),
            })?;
        *slot = Some(component.clone());
        Ok(LoadedComponent {
            name: name.to_owned(),
            digest,
            kind,
            component,
            cache,
            ready_in: started.elapsed(),
        })
    }

    /// Links a loaded component and prepares it to run under `limits` with
    /// the grants of `sandbox`. HTTP components are instantiated once here as
    /// a probe, so that a component that cannot start fails now, not on its
    /// first request.
    pub async fn prepare(
        &self,
        loaded: &LoadedComponent,
        limits: Limits,
        sandbox: Sandbox,
    ) -> Result<App, PrepareError> {
        self.prepare_shared(loaded, limits, sandbox, None).await
    }

    /// As [`Engine::prepare`], for a pod that shares its node with other
    /// tenants: its instances take its namespace's instance slots and CPU
    /// turns, and its CPU budget (see [`share`]).
    pub async fn prepare_shared(
        &self,
        loaded: &LoadedComponent,
        limits: Limits,
        sandbox: Sandbox,
        tenant: Option<Tenant>,
    ) -> Result<App, PrepareError> {
        let limits_error = |source| PrepareError::Limits {
            name: loaded.name.clone(),
            source,
        };
        limits.validate().map_err(limits_error)?;
        self.check_fits(&limits).map_err(limits_error)?;
        let unlinkable = |e: wasmtime::Error| LoadError::Unlinkable {
            name: loaded.name.clone(),
            reason: one_line(&e),
        };
        let pre = self
            .linker
            .instantiate_pre(&loaded.component)
            .map_err(unlinkable)?;
        let spec = InstanceSpec {
            name: program_name(&loaded.name),
            sandbox,
            limits,
            tenant,
            halt: Arc::default(),
            usage: Arc::default(),
        };
        Ok(match loaded.kind {
            ComponentKind::Http => {
                let app = HttpApp::new(spec, pre).map_err(unlinkable)?;
                app.probe()
                    .await
                    .map_err(|failure| LoadError::Instantiate {
                        name: loaded.name.clone(),
                        reason: failure.to_string(),
                    })?;
                App::Http(app)
            }
            ComponentKind::Command => {
                App::Command(Box::new(CommandApp::new(spec, pre).map_err(unlinkable)?))
            }
        })
    }

    /// Whether `limits` fit within what this runtime's engine was built for.
    fn check_fits(&self, limits: &Limits) -> Result<(), LimitsError> {
        if limits.memory > self.config.max_memory {
            return Err(LimitsError::AboveRuntime {
                what: "memory limit",
                asked: quantity::format_bytes(limits.memory),
                max: quantity::format_bytes(self.config.max_memory),
            });
        }
        if limits.max_instances > self.config.max_instances {
            return Err(LimitsError::AboveRuntime {
                what: "max instances",
                asked: limits.max_instances.to_string(),
                max: self.config.max_instances.to_string(),
            });
        }
        if limits.fuel.is_some() && !self.config.fuel_metering {
            return Err(LimitsError::FuelMeteringOff);
        }
        Ok(())
    }
}

/// The engine, with the best instance allocation this machine supports:
/// pooled slots reset in place, else pooled slots released to the kernel,
/// else (too little address space for a pool) allocation on demand.
fn new_engine(config: &EngineConfig) -> Result<wasmtime::Engine, EngineError> {
    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .epoch_interruption(true)
        .consume_fuel(config.fuel_metering);
    let pool = |reset| {
        InstanceAllocationStrategy::Pooling(limits::pooling_config(
            config.max_memory,
            config.max_instances,
            reset,
        ))
    };
    let mut last_error = String::new();
    for reset in [SlotReset::InPlace, SlotReset::Release] {
        wasm.allocation_strategy(pool(reset));
        match wasmtime::Engine::new(&wasm) {
            Ok(engine) => return Ok(engine),
            Err(e) => {
                last_error = one_line(&e);
                tracing::debug!("pool with {reset:?} slot reset unavailable: {last_error}");
            }
        }
    }
    // The pool reserves address space for every slot up front; where there
    // is too little, run with on-demand allocation rather than not at all.
    tracing::warn!("pooling allocator unavailable ({last_error}); allocating instances on demand");
    wasm.allocation_strategy(InstanceAllocationStrategy::OnDemand);
    wasmtime::Engine::new(&wasm).map_err(|e| EngineError::Engine(one_line(&e)))
}

/// Rejects what is not a component before the compiler sees it, so each kind
/// of wrong file gets its own precise message.
fn check_encoding(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    let name = name.to_owned();
    if wasmtime::Engine::detect_precompiled(bytes).is_some() || bytes.starts_with(b"\x7fELF") {
        return Err(LoadError::Precompiled { name });
    }
    if bytes.len() < 8 || !bytes.starts_with(b"\0asm") {
        return Err(LoadError::NotWasm { name });
    }
    const CORE_MODULE: u32 = 1;
    // Version 0x0d, layer 1: the component encoding.
    const COMPONENT: u32 = 0x0001_000d;
    match u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) {
        COMPONENT => Ok(()),
        CORE_MODULE => Err(LoadError::CoreModule { name }),
        version => Err(LoadError::UnknownVersion { name, version }),
    }
}

/// Which world a component implements, from its exports. A component that
/// exports both is served: serving is what nodes do with it.
fn entry_point(engine: &wasmtime::Engine, component: &Component) -> Option<ComponentKind> {
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(name, _)| name).collect();
    let exports_any = |prefix: &str| exports.iter().any(|name| name.starts_with(prefix));
    if exports_any("wasi:http/incoming-handler@0.2.") {
        Some(ComponentKind::Http)
    } else if exports_any("wasi:cli/run@0.2.") {
        Some(ComponentKind::Command)
    } else {
        None
    }
}

/// `argv[0]` for a component: its file name.
fn program_name(name: &str) -> String {
    Path::new(name)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_owned())
}

/// Advances the engine's epoch every [`EPOCH_TICK`], which is what makes
/// wall-clock deadlines fire inside running guest code.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: wasmtime::Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let stop = stop.clone();
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch ticker thread");
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Components this process has loaded, by digest, so that every pod of an
/// image shares one compiled copy (its code is mapped once, its type
/// information allocated once). The most recent [`SharedComponents::KEEP`]
/// digests are remembered; a forgotten one is only reloaded (from the
/// on-disk cache) when next asked for, and pods holding it keep it.
#[derive(Default)]
struct SharedComponents {
    slots: std::sync::Mutex<SharedSlots>,
}

type Slot = Arc<std::sync::Mutex<Option<Component>>>;

#[derive(Default)]
struct SharedSlots {
    by_digest: std::collections::HashMap<Digest, Slot>,
    /// Digests from least to most recently asked for.
    order: std::collections::VecDeque<Digest>,
}

impl SharedComponents {
    const KEEP: usize = 256;

    /// The slot for `digest`, made if new; locking it serializes loads of
    /// one component while loads of others go ahead.
    fn slot(&self, digest: Digest) -> Slot {
        let mut slots = self.slots.lock().expect("component slots");
        let slots = &mut *slots;
        if let Some(at) = slots.order.iter().position(|d| *d == digest) {
            slots.order.remove(at);
        }
        slots.order.push_back(digest);
        while slots.order.len() > Self::KEEP {
            if let Some(old) = slots.order.pop_front() {
                slots.by_digest.remove(&old);
            }
        }
        slots.by_digest.entry(digest).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reported_wasmtime_version_is_the_one_built_on() {
        let manifest = include_str!("../../../Cargo.toml");
        let pinned = format!("wasmtime = {{ version = \"={WASMTIME_VERSION}\"");
        assert!(
            manifest.contains(&pinned),
            "the workspace no longer pins wasmtime {WASMTIME_VERSION}"
        );
    }

    fn load_error(bytes: &[u8]) -> String {
        check_encoding("x.wasm", bytes).unwrap_err().to_string()
    }

    #[test]
    fn wrong_kinds_of_file_are_named() {
        assert!(load_error(b"hello world").contains("not a WebAssembly file"));
        assert!(load_error(b"\0as").contains("not a WebAssembly file"));
        assert!(load_error(b"\x7fELF\x02\x01\x01\0").contains("compiled native code"));
        assert!(load_error(b"\0asm\x01\0\0\0").contains("core WebAssembly module"));
        assert!(load_error(b"\0asm\x0e\0\x01\0").contains("version 0x0001000e"));
        assert!(check_encoding("x.wasm", b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn program_name_is_the_file_name() {
        assert_eq!(program_name("target/x/hello.wasm"), "hello.wasm");
        assert_eq!(program_name("hello.wasm"), "hello.wasm");
    }

    #[test]
    fn one_slot_per_digest_and_the_oldest_forgotten() {
        let shared = SharedComponents::default();
        let digest = |n: usize| Digest::of(n.to_string().as_bytes());
        let first = shared.slot(digest(0));
        assert!(Arc::ptr_eq(&first, &shared.slot(digest(0))));
        for n in 1..SharedComponents::KEEP {
            shared.slot(digest(n));
        }
        // Asking again makes 0 the most recent, so 1 goes first.
        shared.slot(digest(0));
        shared.slot(digest(SharedComponents::KEEP));
        let slots = shared.slots.lock().unwrap();
        assert_eq!(slots.by_digest.len(), SharedComponents::KEEP);
        assert!(slots.by_digest.contains_key(&digest(0)));
        assert!(!slots.by_digest.contains_key(&digest(1)));
    }
}
