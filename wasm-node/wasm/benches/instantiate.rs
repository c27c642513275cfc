//! Per-request cost of an HTTP component: fresh store, instantiate, call
//! `handle`, read the whole response. Measured for the Skiff runtime (limits,
//! sandbox, concurrency permit, tuned pool) and, as the baseline in the same
//! run, for a bare Wasmtime embedding of the same component configured as
//! `wasmtime serve` is by default: stock pooling allocator, no epoch
//! interruption, nothing applied per request.
//!
//! `cargo bench -p wasm-node --bench instantiate -- PATH/TO/hello_http.wasm [ITERATIONS]`

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use skiff_wasm::{App, EngineConfig, HttpApp, Limits, Sandbox};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

const WARMUP: usize = 2_000;

fn request() -> http::Request<impl http_body::Body<Data = Bytes, Error = wasmtime_wasi_http::Error>>
{
    http::Request::builder()
        .uri("/?name=bench")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new().map_err(|never| match never {}))
        .unwrap()
}

async fn skiff_request(app: &HttpApp) {
    let response = app.handle(request()).await;
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
}

struct Bare {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// The same work with nothing of Skiff's: default store, no limits.
async fn bare_request(pre: &ProxyPre<Bare>) {
    let mut store = Store::new(
        pre.engine(),
        Bare {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, request())
        .unwrap();
    let out = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .unwrap();
    let pre = pre.clone();
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, req, out)
            .await
    });
    let response = receiver.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    task.await.unwrap().unwrap();
}

fn bare_pre(path: &str) -> ProxyPre<Bare> {
    // What `wasmtime serve` runs by default: the stock pooling allocator
    // and nothing else, so no epoch checks either.
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::default(),
    ));
    let engine = Engine::new(&config).unwrap();
    let component = Component::from_file(&engine, path).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).unwrap();
    ProxyPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

async fn measure<F: Future<Output = ()>>(
    iterations: usize,
    mut one: impl FnMut() -> F,
) -> Vec<Duration> {
    for _ in 0..WARMUP {
        one().await;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        one().await;
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index].as_secs_f64() * 1e6
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let path = args
        .next()
        .expect("usage: instantiate PATH/TO/hello_http.wasm [ITERATIONS]");
    let iterations: usize = args
        .next()
        .map_or(20_000, |n| n.parse().expect("iterations"));

    let limits = Limits::default();
    let runtime = skiff_wasm::Engine::new(EngineConfig::for_limits(&limits, None)).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let loaded = runtime.load_file(path.as_ref()).unwrap();
    let App::Http(app) = tokio
        .block_on(runtime.prepare(&loaded, limits, Sandbox::default()))
        .unwrap()
    else {
        panic!("{path} is not an HTTP component");
    };
    let bare = bare_pre(&path);

    // Alternate the two so drift on a noisy machine hits both alike.
    let (mut skiff, mut baseline) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        skiff.extend(tokio.block_on(measure(iterations / 3, || skiff_request(&app))));
        baseline.extend(tokio.block_on(measure(iterations / 3, || bare_request(&bare))));
    }
    skiff.sort();
    baseline.sort();

    println!(
        "per-request store + instantiate + handle, {} requests each, one thread",
        skiff.len()
    );
    println!("{:<34} {:>9} {:>9}", "", "p50 µs", "p99 µs");
    for (name, samples) in [
        ("skiff runtime (limits, sandbox)", &skiff),
        ("stock wasmtime (baseline)", &baseline),
    ] {
        println!(
            "{name:<34} {:>9.1} {:>9.1}",
            percentile(samples, 0.50),
            percentile(samples, 0.99)
        );
    }
    println!(
        "ratio skiff/baseline at p50: {:.2}",
        percentile(&skiff, 0.50) / percentile(&baseline, 0.50)
    );
}
