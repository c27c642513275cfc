//! The compilation cache: the second start of a component compiles nothing.

use crate::support::{Served, example, path_str, stderr_of, temp_dir, wasmctl};

fn cached_artifacts(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".cwasm"))
        .collect()
}

#[test]
fn the_second_start_loads_from_the_cache() {
    let cache = temp_dir("cache");
    let hello = example("hello_http");
    let start = || {
        let mut command = wasmctl();
        command.env("WASMCTL_CACHE_DIR", &cache);
        Served::start_with(command, &[path_str(&hello)])
    };

    let first = start();
    assert!(first.log().contains("compiled "), "{}", first.log());
    assert_eq!(first.get("/").status, 200);
    drop(first);
    let artifacts = cached_artifacts(&cache);
    assert_eq!(artifacts.len(), 1, "{artifacts:?}");

    let second = start();
    let log = second.log();
    assert!(log.contains("from the compilation cache"), "{log}");
    assert!(!log.contains("compiled "), "{log}");
    assert_eq!(second.get("/").status, 200);
    assert_eq!(cached_artifacts(&cache), artifacts);
}

#[test]
fn fuel_metering_gets_its_own_cache_entry() {
    let cache = temp_dir("cache-fuel");
    let echo = example("echo-env");
    let run = |extra: &[&str]| {
        let output = wasmctl()
            .env("WASMCTL_CACHE_DIR", &cache)
            .arg("run")
            .arg(&echo)
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        stderr_of(&output)
    };
    assert!(run(&[]).contains("compiled "));
    // Code compiled without fuel checks must not run with a fuel limit.
    assert!(run(&["--fuel", "10M"]).contains("compiled "));
    assert!(run(&["--fuel", "10M"]).contains("from the compilation cache"));
    assert_eq!(cached_artifacts(&cache).len(), 2);
}

#[test]
fn a_corrupt_cache_entry_is_replaced() {
    let cache = temp_dir("cache-corrupt");
    let echo = example("echo-env");
    let run = || {
        let output = wasmctl()
            .env("WASMCTL_CACHE_DIR", &cache)
            .arg("run")
            .arg(&echo)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr_of(&output));
        stderr_of(&output)
    };
    run();
    let entry = cache.join(&cached_artifacts(&cache)[0]);
    std::fs::write(&entry, b"garbage").unwrap();
    let stderr = run();
    assert!(
        stderr.contains("discarding unusable cache entry"),
        "{stderr}"
    );
    assert!(stderr.contains("compiled "), "{stderr}");
    assert!(run().contains("from the compilation cache"));
}
