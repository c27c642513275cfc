//! `wasmctl run` serving HTTP components, including ones that misbehave.

use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::support::{Served, Upstream, example, path_str, repo_root, temp_dir, test_guest};

/// How long a log line may take to travel from wasmctl to the test.
const LOG_WAIT: Duration = Duration::from_secs(10);

#[test]
fn serves_a_cargo_project_built_on_the_fly() {
    let project = repo_root().join("examples/hello-http");
    let server = Served::start(&[path_str(&project)]);
    let response = server.get("/greet?name=tester");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "Hello, tester! (GET /greet)\n");
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[test]
fn answers_200_concurrent_requests() {
    let server = Arc::new(Served::start(&[path_str(&example("hello_http"))]));
    let start = Arc::new(Barrier::new(200));
    let clients: Vec<_> = (0..200)
        .map(|i| {
            let (server, start) = (server.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                server.get(&format!("/?name=c{i}"))
            })
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        let response = client.join().unwrap();
        assert_eq!(response.status, 200, "request {i}: {response:?}");
        assert_eq!(response.body, format!("Hello, c{i}! (GET /)\n"));
    }
}

#[test]
fn every_request_gets_a_fresh_instance() {
    let server = Served::start(&[path_str(&test_guest("misbehave"))]);
    for _ in 0..3 {
        assert_eq!(server.get("/count").body, "1\n");
    }
}

#[test]
fn an_endless_loop_hits_the_timeout_and_the_next_request_works() {
    let server = Served::start(&[path_str(&test_guest("misbehave")), "--timeout", "500ms"]);
    let response = server.get("/loop");
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body, "guest exceeded its timeout of 500ms\n");
    assert_eq!(response.header("retry-after"), Some("1"));
    assert_eq!(server.get("/").status, 200);
    // The log names the request and carries the guest's backtrace.
    assert!(
        server.wait_for_log(
            "GET /loop failed: guest exceeded its timeout of 500ms",
            LOG_WAIT
        ),
        "{}",
        server.log()
    );
    assert!(server.log().contains("misbehave.wasm!"), "{}", server.log());
}

#[test]
fn waiting_in_the_host_also_hits_the_timeout() {
    let server = Served::start(&[path_str(&test_guest("misbehave")), "--timeout", "500ms"]);
    let response = server.get("/sleep?ms=20000");
    assert_eq!(response.status, 503, "{response:?}");
    assert_eq!(response.body, "guest exceeded its timeout of 500ms\n");
    assert_eq!(server.get("/sleep?ms=1").status, 200);
}

#[test]
fn a_memory_bomb_is_stopped_at_the_cap() {
    let server = Served::start(&[path_str(&test_guest("misbehave")), "--memory", "32Mi"]);
    let response = server.get("/alloc");
    assert_eq!(response.status, 500, "{response:?}");
    assert_eq!(response.body, "guest exceeded its memory limit of 32Mi\n");
    // Below the cap, allocating works, in a fresh instance.
    let response = server.get("/alloc?mb=8");
    assert_eq!(
        (response.status, response.body.as_str()),
        (200, "allocated 8 MiB\n")
    );
}

#[test]
fn running_out_of_fuel_is_reported_and_fuel_is_per_request() {
    let server = Served::start(&[path_str(&test_guest("misbehave")), "--fuel", "5M"]);
    let response = server.get("/burn?n=100000000");
    assert_eq!(response.status, 500, "{response:?}");
    assert_eq!(response.body, "guest ran out of fuel (limit 5000000)\n");
    // Each of these takes well over a third of the budget, so three in a
    // row succeed only if every request starts with a full tank.
    let one_third = server.get("/burn?n=200000");
    assert_eq!(one_third.status, 200, "{one_third:?}");
    let three_thirds = server.get("/burn?n=600000");
    assert_eq!(three_thirds.status, 500, "{three_thirds:?}");
    for _ in 0..3 {
        assert_eq!(server.get("/burn?n=200000").status, 200);
    }
}

#[test]
fn a_trap_fails_only_its_request() {
    let server = Served::start(&[path_str(&test_guest("misbehave"))]);
    let response = server.get("/trap");
    assert_eq!(response.status, 500, "{response:?}");
    assert_eq!(
        response.body,
        "guest trapped: wasm `unreachable` instruction executed\n"
    );
    assert_eq!(server.get("/").body, "ok\n");
    assert!(
        server.wait_for_log("wasm backtrace", LOG_WAIT),
        "{}",
        server.log()
    );
    assert!(
        server.log().contains("asked to trap"),
        "guest stderr reaches the log: {}",
        server.log()
    );
}

#[test]
fn guests_see_no_files_or_environment_unless_granted() {
    let data = temp_dir("data");
    std::fs::write(data.join("hello.txt"), "granted file\n").unwrap();
    let bare = Served::start(&[path_str(&test_guest("misbehave"))]);
    assert_eq!(bare.get("/read?path=/etc/hostname").status, 404);
    assert_eq!(bare.get("/env?name=HOME").status, 404);
    assert_eq!(bare.get("/env?name=PATH").status, 404);

    let granted = Served::start(&[
        path_str(&test_guest("misbehave")),
        "--dir",
        &format!("{}::/data", data.display()),
        "--env",
        "GREETING=hi there",
    ]);
    let file = granted.get("/read?path=/data/hello.txt");
    assert_eq!((file.status, file.body.as_str()), (200, "granted file\n"));
    assert_eq!(granted.get("/read?path=/data/../etc/hostname").status, 404);
    assert_eq!(granted.get("/read?path=/etc/hostname").status, 404);
    assert_eq!(granted.get("/env?name=GREETING").body, "hi there");
    assert_eq!(granted.get("/env?name=HOME").status, 404);
}

#[test]
fn outbound_http_reaches_only_allowed_hosts() {
    let allowed = Upstream::start("from the allowed upstream", Duration::ZERO);
    let denied = Upstream::start("from the denied upstream", Duration::ZERO);
    let server = Served::start(&[
        path_str(&example("fetch_http")),
        "--allow-outbound",
        &allowed.addr.to_string(),
    ]);

    let response = server.get(&format!("/?url=http://{}/x", allowed.addr));
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "from the allowed upstream");

    let response = server.get(&format!("/?url=http://{}/x", denied.addr));
    assert_eq!(response.status, 403, "{response:?}");
    assert!(response.body.starts_with("request denied"), "{response:?}");
    assert_eq!(denied.hits(), 0, "no connection reached the denied host");
    assert!(server.wait_for_log("outbound request denied", LOG_WAIT));
}

#[test]
fn max_instances_caps_concurrency_and_the_rest_wait_their_turn() {
    let upstream = Upstream::start("slow", Duration::from_millis(200));
    let server = Arc::new(Served::start(&[
        path_str(&test_guest("misbehave")),
        "--max-instances",
        "2",
        "--allow-outbound",
        &upstream.addr.to_string(),
    ]));
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (server, url) = (
                server.clone(),
                format!("/fetch?url=http://{}/", upstream.addr),
            );
            std::thread::spawn(move || server.get(&url))
        })
        .collect();
    for client in clients {
        let response = client.join().unwrap();
        assert_eq!((response.status, response.body.as_str()), (200, "slow"));
    }
    assert_eq!(upstream.hits(), 6);
    assert_eq!(upstream.peak_concurrency(), 2);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let server = Served::start(&[path_str(&example("hello_http"))]);
    assert_eq!(server.get("/").status, 200);
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = server.wait();
    assert!(status.success(), "exit status {status}");
}
