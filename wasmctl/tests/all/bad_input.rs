//! Input that cannot run gets one precise error line and exit code 2.

use std::path::Path;

use crate::support::{example, path_str, run, stderr_of, temp_dir};

/// Runs `wasmctl run ARGS` and returns its only stderr line, asserting exit
/// code 2.
fn single_error_line(args: &[&str]) -> String {
    let output = run(args);
    let stderr = stderr_of(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one line expected for {args:?}, got:\n{stderr}"
    );
    lines[0].to_owned()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path_str(&path).to_owned()
}

#[test]
fn a_core_module_is_not_a_component() {
    let dir = temp_dir("bad-core");
    let module = write(&dir, "core.wasm", &wat::parse_str("(module)").unwrap());
    assert_eq!(
        single_error_line(&[&module]),
        format!(
            "error: {module}: is a core WebAssembly module, not a component; \
             build it for wasm32-wasip2 or wrap it with `wasm-tools component new`"
        )
    );
}

#[test]
fn a_truncated_component_is_invalid() {
    let dir = temp_dir("bad-truncated");
    let whole = std::fs::read(example("hello_http")).unwrap();
    let truncated = write(&dir, "truncated.wasm", &whole[..whole.len() / 2]);
    let line = single_error_line(&[&truncated]);
    assert!(
        line.starts_with(&format!("error: {truncated}: invalid component: ")),
        "{line}"
    );
    // Cut mid-section: the parser says which section runs past the end.
    assert!(line.contains("out of bounds"), "{line}");
}

#[test]
fn a_file_that_is_not_wasm_is_named_as_such() {
    let dir = temp_dir("bad-text");
    let text = write(&dir, "notes.wasm", b"just some text\n");
    assert_eq!(
        single_error_line(&[&text]),
        format!(
            "error: {text}: not a WebAssembly file (it does not start with the `\\0asm` header)"
        )
    );
}

#[test]
fn a_missing_file_is_reported() {
    let line = single_error_line(&["/no/such/app.wasm"]);
    assert_eq!(
        line,
        "error: /no/such/app.wasm: cannot read: No such file or directory (os error 2)"
    );
}

#[test]
fn a_directory_that_is_not_a_cargo_project_is_named() {
    let dir = temp_dir("bad-dir");
    let dir = path_str(&dir);
    assert_eq!(
        single_error_line(&[dir]),
        format!(
            "error: {dir}: is a directory without a Cargo.toml; give a component (.wasm) or a Cargo project"
        )
    );
}

#[test]
fn a_component_with_no_entry_point_is_refused() {
    let dir = temp_dir("bad-empty");
    let empty = write(&dir, "empty.wasm", &wat::parse_str("(component)").unwrap());
    let output = run(&[&empty]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert!(
        stderr.ends_with(&format!(
            "error: {empty}: exports neither wasi:http/incoming-handler (to serve) \
             nor wasi:cli/run (to run)\n"
        )),
        "{stderr}"
    );
}

#[test]
fn an_import_the_host_lacks_is_named() {
    let dir = temp_dir("bad-import");
    let component = wat::parse_str(
        r#"(component
            (import "skiff:test/missing@1.0.0" (instance (export "f" (func))))
            (core module $m (func (export "run") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $run (result (result)) (canon lift (core func $i "run")))
            (instance $cli (export "run" (func $run)))
            (export "wasi:cli/run@0.2.0" (instance $cli)))"#,
    )
    .unwrap();
    let path = write(&dir, "needs-missing.wasm", &component);
    let output = run(&[&path]);
    assert_eq!(output.status.code(), Some(2));
    let last = stderr_of(&output)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    assert!(
        last.starts_with(&format!("error: {path}: cannot be linked: ")),
        "{last}"
    );
    assert!(last.contains("skiff:test/missing@1.0.0"), "{last}");
}

#[test]
fn bad_flags_name_the_flag_and_the_value() {
    let hello = example("hello_http");
    let hello = path_str(&hello);
    let cases: [(&[&str], &str); 7] = [
        (&[hello, "--memory", "12X"], "invalid memory size `12X`"),
        (
            &[hello, "--memory", "1Ki"],
            "memory limit 1Ki is out of range",
        ),
        (&[hello, "--fuel", "0"], "fuel limit must be at least 1"),
        (&[hello, "--timeout", "1.5s"], "invalid duration `1.5s`"),
        (
            &[hello, "--allow-outbound", "ftp://x"],
            "invalid outbound rule `ftp://x`",
        ),
        (
            &[hello, "--dir", "/no/such::/d"],
            "invalid directory grant `/no/such::/d`",
        ),
        (&[hello, "--env", "=x"], "`=x` is not KEY=VALUE"),
    ];
    for (args, want) in cases {
        let output = run(args);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
