//! An HTTP component that misbehaves on request, so tests can check that
//! each kind of misbehaviour fails only the request that caused it.

use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};

use skiff_sdk::{Request, Response, outbound};

fn handle(request: Request) -> Response {
    // A build broken on purpose: every request traps.
    if std::env::var_os("TRAP_ALWAYS").is_some() {
        panic!("TRAP_ALWAYS is set");
    }
    let param = |name: &str| request.query_param(name);
    match request.path() {
        "/" => Response::text(200, "ok\n"),
        // Counts the requests this instance has seen: always 1 when every
        // request gets a fresh instance.
        "/count" => {
            static SEEN: AtomicU32 = AtomicU32::new(0);
            Response::text(
                200,
                format!("{}\n", SEEN.fetch_add(1, Ordering::SeqCst) + 1),
            )
        }
        // Spins forever: only the wall-clock deadline stops it.
        "/loop" => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        // Allocates and touches `mb` MiB (forever when absent).
        "/alloc" => {
            let limit: usize = param("mb")
                .and_then(|m| m.parse().ok())
                .unwrap_or(usize::MAX);
            let mut blocks = Vec::new();
            while blocks.len() < limit {
                blocks.push(black_box(vec![1u8; 1 << 20]));
            }
            Response::text(200, format!("allocated {} MiB\n", blocks.len()))
        }
        // Burns `n` iterations of arithmetic: fuel runs out on big `n`.
        "/burn" => {
            let n: u64 = param("n").and_then(|n| n.parse().ok()).unwrap_or(1_000);
            let mut acc = 0u64;
            for i in 0..n {
                acc = black_box(acc.wrapping_mul(31).wrapping_add(i));
            }
            Response::text(200, format!("burned {n}: {acc}\n"))
        }
        "/trap" => panic!("asked to trap"),
        // Waits in the host (a monotonic-clock sleep), not in guest code.
        "/sleep" => {
            let ms: u64 = param("ms").and_then(|m| m.parse().ok()).unwrap_or(0);
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Response::text(200, format!("slept {ms}ms\n"))
        }
        "/read" => {
            let path = param("path").unwrap_or_default();
            match std::fs::read_to_string(&path) {
                Ok(text) => Response::text(200, text),
                Err(e) => Response::text(404, format!("cannot read {path}: {e}\n")),
            }
        }
        "/env" => {
            let name = param("name").unwrap_or_default();
            match std::env::var(&name) {
                Ok(value) => Response::text(200, value),
                Err(_) => Response::text(404, format!("{name} is not set\n")),
            }
        }
        "/fetch" => relay(outbound::get(&param("url").unwrap_or_default())),
        // Fetches `url` with the headers a node's ingress trusts, forged:
        // claiming namespace `as` (default `b`) and a proxy credential.
        "/fetch-forged" => {
            let claimed = param("as").unwrap_or_else(|| "b".into());
            let forged = [
                ("skiff-caller-namespace", claimed.into_bytes()),
                ("skiff-caller-auth", b"forged".to_vec()),
                ("skiff-proxy-auth", b"1700000000.forged".to_vec()),
            ]
            .map(|(name, value)| (name.to_owned(), value));
            relay(outbound::send(
                "GET",
                &param("url").unwrap_or_default(),
                &forged,
                &[],
            ))
        }
        // Answers with the request's headers, one `name: value` line each.
        // How many bytes of body arrived: a proxy streaming a large body
        // through is seen to have passed all of it.
        // One line to stdout, as a typical handler logs a request.
        "/line" => {
            println!("served /line");
            Response::text(200, "ok\n")
        }
        // Prints `lines` lines to stdout (`TAG i`, padded with `x` to
        // `size` bytes), then `TAG done` to stderr and `TAG tail` with no
        // newline to stdout: the host flushes it when the instance ends.
        "/print" => {
            let lines: usize = param("lines").and_then(|n| n.parse().ok()).unwrap_or(1);
            let size: usize = param("size").and_then(|n| n.parse().ok()).unwrap_or(0);
            let tag = param("tag").unwrap_or_else(|| "line".into());
            let mut out = std::io::stdout().lock();
            for i in 0..lines {
                let line = format!("{tag} {i}");
                let pad = size.saturating_sub(line.len());
                let _ = writeln!(out, "{line}{}", "x".repeat(pad));
            }
            eprintln!("{tag} done");
            let _ = write!(out, "{tag} tail");
            let _ = out.flush();
            Response::text(200, format!("printed {lines}\n"))
        }
        "/length" => Response::text(200, format!("{}\n", request.body().len())),
        // Prints the trace context it got (`trace <traceparent>`) and, when
        // `url` is given, fetches it; answers with its `traceparent`,
        // `tracestate` and `x-request-id` lines, then the upstream's body.
        "/trace" => {
            let header = |name: &str| request.header(name).unwrap_or("-").to_owned();
            println!("trace {}", header("traceparent"));
            let mut answer = ["traceparent", "tracestate", "x-request-id"]
                .map(|name| format!("{name}: {}\n", header(name)))
                .concat();
            if let Some(url) = param("url") {
                match outbound::get(&url) {
                    Ok(upstream) => answer.push_str(&String::from_utf8_lossy(upstream.body())),
                    Err(e) => return Response::text(502, format!("{e}\n")),
                }
            }
            Response::text(200, answer)
        }
        "/headers" => {
            let lines: String = request
                .headers()
                .iter()
                .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value)))
                .collect();
            Response::text(200, lines)
        }
        _ => Response::text(404, "no such misbehaviour\n"),
    }
}

/// An upstream answer as this guest's own, a refusal by the host as 403.
fn relay(result: Result<Response, outbound::Error>) -> Response {
    match result {
        Ok(upstream) => Response::new(upstream.status()).with_body(upstream.body().to_vec()),
        Err(e) if e.is_denied() => Response::text(403, format!("{e}\n")),
        Err(e) => Response::text(502, format!("{e}\n")),
    }
}

skiff_sdk::http_handler!(handle);
