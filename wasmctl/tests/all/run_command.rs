//! `wasmctl run` running command components to completion.

use crate::support::{
    example, path_str, repo_root, run, stderr_of, stdout_of, temp_dir, test_guest,
};

#[test]
fn a_command_gets_its_args_and_env_and_its_exit_code_becomes_ours() {
    let project = repo_root().join("examples/echo-env");
    let output = run(&[
        path_str(&project),
        "--env",
        "GREETING=hi",
        "--env",
        "EXIT_CODE=7",
        "--",
        "one",
        "two words",
    ]);
    assert_eq!(output.status.code(), Some(7), "{}", stderr_of(&output));
    let stdout = stdout_of(&output);
    assert!(stdout.contains("arg[0]=echo-env.wasm\n"), "{stdout}");
    assert!(
        stdout.contains("arg[1]=one\narg[2]=two words\n"),
        "{stdout}"
    );
    assert!(stdout.contains("env GREETING=hi\n"), "{stdout}");
    // Nothing from wasmctl's own environment leaks in.
    let env_lines: Vec<_> = stdout.lines().filter(|l| l.starts_with("env ")).collect();
    assert_eq!(env_lines, ["env EXIT_CODE=7", "env GREETING=hi"]);
}

#[test]
fn a_successful_command_exits_zero() {
    let output = run(&[path_str(&example("echo-env"))]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
}

#[test]
fn files_outside_granted_directories_are_invisible() {
    let data = temp_dir("cmd-data");
    std::fs::write(data.join("inside.txt"), "inside\n").unwrap();
    let probe = test_guest("probe");
    let grant = format!("{}::/data", data.display());
    let with_grant = |args: &[&str]| {
        let mut all = vec![path_str(&probe), "--dir", &grant, "--"];
        all.extend_from_slice(args);
        run(&all)
    };

    let inside = with_grant(&["cat", "/data/inside.txt"]);
    assert_eq!(inside.status.code(), Some(0), "{}", stderr_of(&inside));
    assert_eq!(stdout_of(&inside), "inside\n");

    for outside in ["/etc/hostname", "/data/../etc/hostname", "../inside.txt"] {
        let output = with_grant(&["cat", outside]);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{outside} must not be readable"
        );
        assert!(stderr_of(&output).contains(&format!("cannot read {outside}")));
    }

    let listing = with_grant(&["ls", "/data"]);
    assert_eq!(
        stdout_of(&listing),
        "inside.txt\n",
        "{}",
        stderr_of(&listing)
    );

    // Without a grant there is no filesystem at all.
    let bare = run(&[path_str(&probe), "--", "cat", "/data/inside.txt"]);
    assert_eq!(bare.status.code(), Some(1));
}

#[test]
fn read_only_grants_refuse_writes() {
    let data = temp_dir("ro-data");
    let probe = test_guest("probe");
    let read_write = format!("{}::/data", data.display());
    let read_only = format!("{}::/data:ro", data.display());

    let output = run(&[
        path_str(&probe),
        "--dir",
        &read_only,
        "--",
        "write",
        "/data/x",
        "no",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(!data.join("x").exists());

    let output = run(&[
        path_str(&probe),
        "--dir",
        &read_write,
        "--",
        "write",
        "/data/x",
        "yes",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(std::fs::read_to_string(data.join("x")).unwrap(), "yes");
}

#[test]
fn command_limits_fail_the_run_with_a_distinct_exit_code() {
    let probe = test_guest("probe");
    let probe = path_str(&probe);
    let cases: [(&[&str], i32, &str); 4] = [
        (
            &[probe, "--timeout", "300ms", "--", "loop"],
            124,
            "guest exceeded its timeout of 300ms",
        ),
        (
            &[probe, "--memory", "16Mi", "--", "alloc"],
            134,
            "guest exceeded its memory limit of 16Mi",
        ),
        (
            &[probe, "--fuel", "1M", "--", "burn", "1000000000"],
            134,
            "guest ran out of fuel (limit 1000000)",
        ),
        (
            &[probe, "--", "trap"],
            134,
            "guest trapped: wasm `unreachable` instruction executed",
        ),
    ];
    for (args, code, message) in cases {
        let output = run(args);
        let stderr = stderr_of(&output);
        assert_eq!(output.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("error: {probe}: {message}\n")),
            "{args:?}: {stderr}"
        );
    }
}
