//! What the ingress's credentials cost per request, in nanoseconds: a
//! proxy credential signed afresh (as every proxied request did before the
//! per-endpoint cache), taken from the cache (as now), and verified (as the
//! receiving node does); a caller credential checked. Each is timed over
//! many iterations, median of rounds; the baseline in the same run is a
//! clone of a header value (what a cached credential costs at least).
//!
//! `cargo bench -p wasm-node --bench credentials`

use std::hint::black_box;
use std::time::{Instant, SystemTime};

use wasm_node::ingress::{CallerKey, PROXY_KEY_LEN, ProxyKey, SignedCache};

const ITERATIONS: u32 = 200_000;
const ROUNDS: usize = 7;

/// Median over rounds of the nanoseconds one call of `f` takes.
fn time(mut f: impl FnMut()) -> f64 {
    let mut rounds: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..ITERATIONS {
                f();
            }
            started.elapsed().as_nanos() as f64 / f64::from(ITERATIONS)
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[ROUNDS / 2]
}

fn main() {
    let key = ProxyKey::new(&[7; PROXY_KEY_LEN]);
    let pod = ("shop".to_owned(), "web-7d9f8c6b5-x2x4z".to_owned());
    let cache = SignedCache::default();
    let signed = key.sign(&pod, SystemTime::now());
    let caller = CallerKey::random();
    let vouched = caller.credential("shop");

    let clone = time(|| {
        black_box(black_box(&signed).clone());
    });
    let rows = [
        (
            "sign afresh (before the cache)",
            time(|| {
                black_box(key.sign(black_box(&pod), SystemTime::now()));
            }),
        ),
        (
            "sign, cached per endpoint (now)",
            time(|| {
                black_box(key.sign_cached(&cache, black_box(&pod), SystemTime::now()));
            }),
        ),
        (
            "verify on the receiving node",
            time(|| {
                black_box(key.verify(black_box(signed.as_bytes()), &pod, SystemTime::now())).ok();
            }),
        ),
        (
            "caller credential checked",
            time(|| {
                black_box(caller.verify("shop", black_box(vouched.as_bytes())));
            }),
        ),
    ];
    println!(
        "ingress credentials, ns per call, median of {ROUNDS} rounds of {ITERATIONS}; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  {:<34} {:>8.1} ns   (baseline)",
        "clone of a header value", clone
    );
    for (what, ns) in rows {
        println!("  {what:<34} {ns:>8.1} ns   {:>6.1}x baseline", ns / clone);
    }
}
