//! The containerd fallback against a real containerd (started by the test,
//! as root): busybox images built with umoci, pushed to a real registry,
//! run as pods next to Wasm pods.

use serde_json::{Value, json};
use testkit::{
    Containerd, push_busybox_image, push_busybox_image_as, push_busybox_image_running_as,
    push_busybox_index, wait_until,
};

use crate::nodes::{NodeCluster, WAIT, pod};
use crate::registry::tamper;
use crate::support::{http_request, stderr_of, stdout_of, wasmctl};

/// A node with containerd (`linux`) and one without (`wasm-only`).
fn cluster() -> (NodeCluster, Containerd) {
    let containerd = Containerd::start();
    let socket = containerd.socket.display().to_string();
    let linux = ["--containerd-socket", socket.as_str()];
    let cluster = NodeCluster::start(&[("linux", &linux), ("wasm-only", &["--no-containerd"])]);
    (cluster, containerd)
}

/// A node with containerd only, with these further flags.
fn linux_node(flags: &[&str]) -> (NodeCluster, Containerd) {
    let containerd = Containerd::start();
    let socket = containerd.socket.display().to_string();
    let mut linux = vec!["--containerd-socket", socket.as_str()];
    linux.extend_from_slice(flags);
    let cluster = NodeCluster::start(&[("linux", &linux)]);
    (cluster, containerd)
}

/// A Namespace whose pods may be as the level (`Baseline`, `Privileged`)
/// allows.
fn namespace(name: &str, pod_security: &str) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1", "kind": "Namespace",
        "metadata": {"name": name},
        "spec": {"policy": {"podSecurity": pod_security}},
    })
}

/// A Linux pod in `namespace`.
fn linux_pod_in(namespace: &str, name: &str, image: &str, spec: Value) -> Value {
    let mut pod = linux_pod(name, image, spec);
    pod["metadata"]["namespace"] = json!(namespace);
    pod
}

/// The pod's log file on the node, and the file it was rotated into.
fn log_files(cluster: &NodeCluster, pod: &Value) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = cluster.node("linux").data_dir.join(format!(
        "logs/{}_{}_{}",
        pod["metadata"]["namespace"].as_str().unwrap(),
        pod["metadata"]["name"].as_str().unwrap(),
        pod["metadata"]["uid"].as_str().unwrap()
    ));
    (dir.join("current.log"), dir.join("current.log.1"))
}

/// The records of a log file, as (stream, text): a Linux pod's lines
/// belong to no request.
fn records_of(log: &str) -> Vec<(String, String)> {
    log.lines()
        .map(|line| {
            let fields: Vec<&str> = line.splitn(4, ' ').collect();
            assert!(
                fields.len() == 4
                    && chrono::DateTime::parse_from_rfc3339(fields[0]).is_ok()
                    && ["stdout", "stderr"].contains(&fields[1])
                    && fields[2] == "-",
                "not a record of a Linux pod: {line}"
            );
            (fields[1].to_owned(), fields[3].to_owned())
        })
        .collect()
}

/// What the pod wrote, a line each (its log file, once it has ended): one
/// stream's lines in order, the two streams' interleaved as they were read.
fn log_of(cluster: &NodeCluster, pod: &Value) -> String {
    let (log, _) = log_files(cluster, pod);
    let log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    records_of(&log)
        .into_iter()
        .map(|(_, text)| text + "\n")
        .collect()
}

fn succeeded(p: &Value) -> bool {
    p["status"]["phase"] == "Succeeded"
}

fn failed(p: &Value) -> bool {
    p["status"]["phase"] == "Failed"
}

/// A pod of a Linux image that says so.
fn linux_pod(name: &str, image: &str, spec: Value) -> Value {
    let mut pod = pod(name, image, spec);
    pod["spec"]["runtime"] = json!("Linux");
    pod
}

fn lines(text: &str) -> usize {
    // `ctr ... ls` prints a header line, `ls -q` none.
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn linux_pods_run_log_exit_with_their_code_restart_and_leave_nothing_behind() {
    let (cluster, containerd) = cluster();
    let image = format!("{}/busybox:exit3", cluster.registry.addr);
    push_busybox_image(
        &image,
        &[
            "sh",
            "-c",
            "echo hello from linux; echo to stderr >&2; exit 3",
        ],
    );
    cluster.apply(&[
        linux_pod("exits", &image, json!({"restartPolicy": "Never"})),
        linux_pod(
            "succeeds",
            &image,
            json!({"restartPolicy": "OnFailure", "args": ["sh", "-c", "test -x /bin/busybox"]}),
        ),
        linux_pod("loops", &image, json!({"restartPolicy": "Always"})),
        linux_pod(
            "read-only",
            &image,
            json!({
                "restartPolicy": "Never", "readOnlyRootFilesystem": true,
                "args": ["sh", "-c", "touch /tmp/ok && touch /not-ok"],
            }),
        ),
    ]);

    let exits = cluster.wait_pod("exits", "Failed", |p| p["status"]["phase"] == "Failed");
    assert_eq!(exits["status"]["exitCode"], 3, "{exits:#}");
    assert_eq!(exits["status"]["message"], "exited with code 3");
    assert_eq!(exits["spec"]["nodeName"], "linux");
    let (log, _) = log_files(&cluster, &exits);
    let log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    // Both streams, each line whole and tagged with its stream.
    let mut logged = records_of(&log);
    logged.sort();
    assert_eq!(
        logged,
        [
            ("stderr".to_owned(), "to stderr".to_owned()),
            ("stdout".to_owned(), "hello from linux".to_owned()),
        ],
        "{log}"
    );

    let read_only = cluster.wait_pod("read-only", "Failed", |p| p["status"]["phase"] == "Failed");
    assert_eq!(read_only["status"]["exitCode"], 1, "{read_only:#}");
    let succeeds = cluster.wait_pod("succeeds", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(succeeds["status"]["exitCode"], 0);
    let loops = cluster.wait_pod("loops", "restarted twice", |p| {
        p["status"]["restartCount"].as_u64() >= Some(2)
    });
    assert_eq!(loops["status"]["phase"], "Pending", "{loops:#}");
    assert_eq!(loops["status"]["reason"], "CrashLoopBackOff", "{loops:#}");

    // While pods exist, containerd holds their containers and leases.
    assert!(lines(&containerd.ctr("skiff-default", &["leases", "ls", "-q"])) >= 4);
    cluster
        .cluster
        .ok(&["delete", "pod", "exits", "succeeds", "loops", "read-only"]);
    for what in ["containers", "tasks", "leases"] {
        assert!(
            wait_until(WAIT, || lines(
                &containerd.ctr("skiff-default", &[what, "ls", "-q"])
            ) == 0),
            "{what} left behind: {}",
            containerd.ctr("skiff-default", &[what, "ls"])
        );
    }
    assert!(
        wait_until(WAIT, || lines(
            &containerd.ctr("skiff-default", &["snapshots", "ls"])
        ) <= 1),
        "snapshots left behind: {}",
        containerd.ctr("skiff-default", &["snapshots", "ls"])
    );
}

#[test]
fn a_memory_hog_is_oom_killed_and_reported_so() {
    let (cluster, _containerd) = cluster();
    let image = format!("{}/busybox:hog", cluster.registry.addr);
    // tmpfs pages count against the container's memory cgroup.
    push_busybox_image(
        &image,
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/shm/fill bs=1M count=60",
        ],
    );
    cluster.apply(&[linux_pod(
        "hog",
        &image,
        json!({"restartPolicy": "Never", "resources": {"memory": "16Mi"}}),
    )]);
    let hog = cluster.wait_pod("hog", "Failed", |p| p["status"]["phase"] == "Failed");
    let message = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("OOMKilled: exceeded its memory limit"),
        "{hog:#}"
    );
}

#[test]
fn a_multi_platform_image_runs_its_entry_for_this_machine() {
    let (cluster, _containerd) = cluster();
    // As most public images are: an index of one image per platform. The
    // entry for another architecture exits 9, ours 7.
    let image = format!("{}/busybox:multi", cluster.registry.addr);
    let digest = push_busybox_index(&image, &["sh", "-c", "exit 7"], &["sh", "-c", "exit 9"]);
    cluster.apply(&[pod("multi", &image, json!({"restartPolicy": "Never"}))]);
    let multi = cluster.wait_pod("multi", "Failed", |p| p["status"]["phase"] == "Failed");
    assert_eq!(multi["status"]["exitCode"], 7, "{multi:#}");
    // The index counts as a Linux image: never sent to the Wasm-only node.
    assert_eq!(multi["spec"]["nodeName"], "linux", "{multi:#}");
    assert_eq!(multi["status"]["imageDigest"], digest.as_str());
}

#[test]
fn linux_pods_go_only_to_nodes_with_containerd_stop_when_deleted_and_bad_images_fail() {
    let (cluster, containerd) = cluster();
    let image = format!("{}/busybox:sleep", cluster.registry.addr);
    let digest = push_busybox_image(&image, &["sleep", "3600"]);
    // Spread would put half of them on the emptier Wasm-only node; they
    // all go to the node with containerd, whether they say `runtime:
    // Linux` (even) or leave the scheduler to learn it from the registry
    // (odd).
    let names: Vec<String> = (0..4).map(|i| format!("spread-{i}")).collect();
    let pods: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, name)| match i % 2 {
            0 => linux_pod(name, &image, json!({"placement": "Spread"})),
            _ => pod(name, &image, json!({"placement": "Spread"})),
        })
        .collect();
    cluster.apply(&pods);
    for name in &names {
        let running = cluster.wait_running(name);
        assert_eq!(running["spec"]["nodeName"], "linux", "{running:#}");
    }
    let nodes = cluster.json(&["get", "node", "linux"]);
    assert!(
        nodes["status"]["nodeInfo"]["containerd"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{nodes:#}"
    );

    // Deleted, running pods stop: `sleep` as PID 1 ignores SIGTERM, so
    // this goes through SIGKILL after the nodes' grace (1 s here).
    let mut delete = vec!["delete", "pod"];
    delete.extend(names.iter().map(String::as_str));
    cluster.cluster.ok(&delete);
    assert!(
        wait_until(WAIT, || lines(
            &containerd.ctr("skiff-default", &["tasks", "ls", "-q"])
        ) == 0),
        "tasks left running: {}",
        containerd.ctr("skiff-default", &["tasks", "ls"])
    );

    // The scheduler reads a private image's manifest with the pod's pull
    // secret: both pods, under Spread, still go to the containerd node.
    let private = testkit::Registry::with_user("puller", "pa55word");
    let secret_image = format!("{}/busybox:private", private.addr);
    push_busybox_image_as(&secret_image, &["sleep", "3600"], "puller", "pa55word");
    cluster.apply(&[json!({
        "apiVersion": "skiff.dev/v1", "kind": "Secret",
        "metadata": {"name": "regcred"},
        "stringData": {"username": "puller", "password": "pa55word"},
    })]);
    let private_pods: Vec<Value> = ["private-0", "private-1"]
        .iter()
        .map(|name| {
            pod(
                name,
                &secret_image,
                json!({"placement": "Spread", "imagePullSecret": "regcred"}),
            )
        })
        .collect();
    cluster.apply(&private_pods);
    for name in ["private-0", "private-1"] {
        let running = cluster.wait_running(name);
        assert_eq!(running["spec"]["nodeName"], "linux", "{running:#}");
    }
    cluster
        .cluster
        .ok(&["delete", "pod", "private-0", "private-1"]);

    // With the containerd node cordoned, a Linux pod waits, and says why.
    cluster.cluster.ok(&["cordon", "linux"]);
    cluster.apply(&[linux_pod("waits", &image, json!({}))]);
    cluster.wait_pod("waits", "Unschedulable", |p| {
        p["status"]["conditions"]
            .to_string()
            .contains("0/2 nodes: 1 cordoned, 1 no Linux runtime")
    });
    cluster.cluster.ok(&["uncordon", "linux"]);

    // A Linux image that does not say so, pinned to the Wasm-only node by
    // a selector, is never sent there: it waits, and says why.
    let pinned = pod(
        "pinned",
        &image,
        json!({"nodeSelector": {"skiff.dev/hostname": "wasm-only"}}),
    );
    cluster.apply(&[pinned]);
    let pinned = cluster.wait_pod("pinned", "Unschedulable", |p| {
        p["status"]["conditions"]
            .to_string()
            .contains("0/2 nodes: 1 no Linux runtime, 1 node selector not matched")
    });
    assert_eq!(pinned["spec"]["nodeName"], Value::Null, "{pinned:#}");

    // Bound by hand (nodeName at creation skips the scheduler), it fails
    // on that node with the reason.
    let bound = pod("bound", &image, json!({"nodeName": "wasm-only"}));
    cluster.apply(&[bound]);
    let bound = cluster.wait_pod("bound", "Failed", |p| p["status"]["phase"] == "Failed");
    assert_eq!(bound["status"]["reason"], "NoLinuxRuntime", "{bound:#}");
    assert!(
        bound["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("a Linux container image")),
        "{bound:#}"
    );

    // A tampered layer fails its pod with the digest named, once no pod
    // holds the image on the node (while one does, a pod starts from what
    // containerd has, verified when it was downloaded, and the registry's
    // copy is never read).
    cluster.cluster.ok(&["delete", "pod", "waits"]);
    assert!(
        wait_until(WAIT, || lines(
            &containerd.ctr("skiff-default", &["leases", "ls", "-q"])
        ) == 0),
        "leases left: {}",
        containerd.ctr("skiff-default", &["leases", "ls"])
    );
    let manifest = cluster.registry.blob_file(&digest);
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    tamper(&cluster.registry.blob_file(layer));
    let bad = format!("{}/busybox@{digest}", cluster.registry.addr);
    cluster.apply(&[linux_pod("bad", &bad, json!({}))]);
    let bad = cluster.wait_pod("bad", "failed to pull", |p| {
        p["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not match its digest"))
    });
    let reason = bad["status"]["reason"].as_str().unwrap_or_default();
    assert!(
        ["ImageDigestMismatch", "ImagePullBackOff"].contains(&reason),
        "{bad:#}"
    );

    // A blob missing from the registry (here the image's config) fails its
    // pod as not found.
    let missing = format!("{}/busybox:missing", cluster.registry.addr);
    let missing_digest = push_busybox_image(&missing, &["true"]);
    let manifest = cluster.registry.blob_file(&missing_digest);
    let manifest: Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    let config = cluster
        .registry
        .blob_file(manifest["config"]["digest"].as_str().unwrap());
    std::fs::remove_dir_all(config.parent().unwrap()).unwrap();
    cluster.apply(&[linux_pod("missing", &missing, json!({}))]);
    cluster.wait_pod("missing", "failed to pull", |p| {
        p["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not found in the registry"))
    });
}

#[test]
fn a_service_balances_over_wasm_and_linux_pods_and_linux_pods_are_probed() {
    let (mut cluster, _containerd) = cluster();
    let image = format!("{}/busybox:httpd", cluster.registry.addr);
    push_busybox_image(
        &image,
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo linux > /www/index.html && exec httpd -f -p $PORT -h /www",
        ],
    );
    let mut linux = linux_pod(
        "from-linux",
        &image,
        json!({
            "ports": [{"port": 80}],
            "readinessProbe": {"httpGet": {"path": "/index.html"}, "periodSeconds": 1},
        }),
    );
    linux["metadata"]["labels"] = json!({"app": "mixed"});
    // Its liveness probe asks for a page httpd does not have: restarted.
    let sick = linux_pod(
        "sick",
        &image,
        json!({
            "ports": [{"port": 80}],
            "livenessProbe": {"httpGet": {"path": "/missing"}, "periodSeconds": 1, "failureThreshold": 1},
        }),
    );
    let mut wasm = pod("from-wasm", &cluster.hello, json!({}));
    wasm["metadata"]["labels"] = json!({"app": "mixed"});
    cluster.apply(&[
        linux,
        wasm,
        sick,
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Service",
            "metadata": {"name": "mixed"}, "spec": {"selector": {"app": "mixed"}},
        }),
        json!({
            "apiVersion": "skiff.dev/v1", "kind": "Route",
            "metadata": {"name": "mixed"},
            "spec": {"host": "mixed.example.com", "service": "mixed"},
        }),
    ]);
    cluster.wait_pod("from-linux", "Ready", |p| {
        p["status"]["conditions"][0]["status"] == "True"
    });
    cluster.wait_running("from-wasm");
    cluster.wait_pod("sick", "restarted by its liveness probe", |p| {
        p["status"]["restartCount"].as_u64() >= Some(1)
    });
    // Through either node: the Linux node serves its pod in place, the
    // other proxies to it.
    for node in ["linux", "wasm-only"] {
        let ingress = cluster.node(node).ingress;
        let mut bodies = std::collections::BTreeMap::new();
        assert!(
            wait_until(WAIT, || {
                if let Ok(answer) = http_request(ingress, "mixed.example.com", "/", &[])
                    && answer.status == 200
                {
                    *bodies.entry(answer.body).or_insert(0) += 1;
                }
                bodies.len() == 2
            }),
            "through {node}: {bodies:?}"
        );
        assert_eq!(
            bodies.keys().collect::<Vec<_>>(),
            ["Hello, world! (GET /)\n", "linux\n"],
            "through {node}"
        );
    }

    // With the registry gone, pods of images their node holds still start:
    // the tags were pulled there before (IfNotPresent), the component is in
    // the node's cache and the Linux layers are in containerd, held by the
    // running pods. Nothing is downloaded again.
    let wasm_node = cluster.pod("from-wasm")["spec"]["nodeName"].clone();
    cluster.registry.stop();
    cluster.apply(&[
        linux_pod("linux-again", &image, json!({"ports": [{"port": 80}]})),
        pod(
            "wasm-again",
            &cluster.hello,
            json!({"nodeSelector": {"skiff.dev/hostname": wasm_node}}),
        ),
    ]);
    cluster.wait_running("linux-again");
    cluster.wait_running("wasm-again");
}

#[test]
fn wasmctl_run_runs_a_linux_image_through_containerd_or_says_why_not() {
    let containerd = Containerd::start();
    let registry = testkit::Registry::start();
    let image = format!("{}/busybox:run", registry.addr);
    push_busybox_image(&image, &["sh", "-c", "echo hello from linux; exit 3"]);
    let socket = containerd.socket.display().to_string();
    let output = wasmctl()
        .args(["run", &image, "--containerd-socket", &socket])
        .output()
        .expect("wasmctl runs");
    assert_eq!(output.status.code(), Some(3), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "hello from linux\n");
    // Arguments after -- replace the image's command.
    let output = wasmctl()
        .args(["run", &image, "--containerd-socket", &socket])
        .args(["--env", "GREETING=hi", "--", "sh", "-c", "echo $GREETING"])
        .output()
        .expect("wasmctl runs");
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert_eq!(stdout_of(&output), "hi\n");
    // A multi-platform index runs its entry for this machine.
    let multi = format!("{}/busybox:multi", registry.addr);
    push_busybox_index(&multi, &["sh", "-c", "exit 7"], &["sh", "-c", "exit 9"]);
    let output = wasmctl()
        .args(["run", &multi, "--containerd-socket", &socket])
        .output()
        .expect("wasmctl runs");
    assert_eq!(output.status.code(), Some(7), "{}", stderr_of(&output));
    assert!(
        wait_until(WAIT, || lines(
            &containerd.ctr("wasmctl", &["leases", "ls", "-q"])
        ) == 0),
        "wasmctl run left a lease behind"
    );

    let output = wasmctl()
        .args(["run", &image, "--containerd-socket", "/nonexistent.sock"])
        .output()
        .expect("wasmctl runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = stderr_of(&output);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is a Linux container image, which runs through containerd")
            && stderr.contains("/nonexistent.sock"),
        "{stderr}"
    );
}

#[test]
fn linux_pods_hold_no_capabilities_gain_no_privileges_and_are_filtered_by_seccomp() {
    let (cluster, _containerd) = cluster();
    let image = format!("{}/busybox:status", cluster.registry.addr);
    // grep's own status: what every process of the pod inherits. Then two
    // syscalls the profile denies, and a fork, which it allows. All on
    // stdout, since the shim copies stderr apart and may order it
    // differently.
    push_busybox_image(
        &image,
        &[
            "sh",
            "-c",
            "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status; \
             unshare -m true 2>&1; echo \"unshare exited $?\"; \
             mkdir -p /tmp/mnt; mount -t tmpfs none /tmp/mnt 2>&1; echo \"mount exited $?\"; \
             (echo forked)",
        ],
    );
    cluster.apply(&[
        namespace("privileged", "Privileged"),
        linux_pod("plain", &image, json!({"restartPolicy": "Never"})),
        // As much as a Privileged namespace may ask for: CAP_SYS_ADMIN
        // would allow unshare and mount, but the profile does not.
        linux_pod_in(
            "privileged",
            "granted",
            &image,
            json!({
                "restartPolicy": "Never",
                "securityContext": {"addCapabilities": ["SYS_ADMIN", "CAP_NET_ADMIN"]},
            }),
        ),
        linux_pod_in(
            "privileged",
            "misspelt",
            &image,
            json!({
                "restartPolicy": "Never",
                "securityContext": {"addCapabilities": ["NET_ADMIN", "net_raw"]},
            }),
        ),
    ]);

    let status_lines = |caps: &str| {
        let mut lines: Vec<String> = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
            .iter()
            .map(|set| format!("{set}:\t{caps}"))
            .collect();
        lines.extend(["NoNewPrivs:\t1".to_owned(), "Seccomp:\t2".to_owned()]);
        lines
    };
    let head = |log: &str| -> Vec<String> { log.lines().take(7).map(str::to_owned).collect() };
    let plain = cluster.wait_pod("plain", "Succeeded", succeeded);
    let log = log_of(&cluster, &plain);
    assert_eq!(head(&log), status_lines("0000000000000000"), "{log}");
    assert!(log.contains("unshare exited 1"), "{log}");
    assert!(log.contains("forked"), "{log}");

    let granted = cluster.wait_pod_in("privileged", "granted", "Succeeded", succeeded);
    let log = log_of(&cluster, &granted);
    // Bits 21 (SYS_ADMIN) and 12 (NET_ADMIN), and nothing else.
    assert_eq!(head(&log), status_lines("0000000000201000"), "{log}");
    // Its two lines went to stderr and stdout: either may be read first.
    assert!(
        log.contains("unshare: unshare(0x20000): Operation not permitted\n")
            && log.contains("unshare exited 1\n"),
        "{log}"
    );
    assert!(log.contains("mount: permission denied"), "{log}");
    assert!(!log.contains("mount exited 0"), "{log}");
    assert!(log.contains("forked"), "{log}");

    let misspelt = cluster.wait_pod_in("privileged", "misspelt", "Failed", failed);
    assert_eq!(misspelt["status"]["reason"], "InvalidSpec", "{misspelt:#}");
    assert_eq!(
        misspelt["status"]["message"],
        "securityContext.addCapabilities: `net_raw` is not a Linux capability (capability names are upper case: NET_RAW)",
        "{misspelt:#}"
    );
}

#[test]
fn linux_pods_run_as_the_pods_user_and_never_as_root_where_they_must_not() {
    let (cluster, containerd) = linux_node(&[]);
    let registry = &cluster.registry.addr;
    let unset = format!("{registry}/busybox:unset");
    let root = format!("{registry}/busybox:root");
    let user = format!("{registry}/busybox:user");
    let id = ["sh", "-c", "id -u; id -g"];
    push_busybox_image(&unset, &id);
    push_busybox_image_running_as(&root, &id, "root");
    push_busybox_image_running_as(&user, &id, "1000");
    // Reads its Secret volume, which the node keeps owner-only: handed
    // over to the pod's user, it opens for that user alone.
    let reads_secret = format!("{registry}/busybox:reads-secret");
    push_busybox_image(
        &reads_secret,
        &[
            "sh",
            "-c",
            "cat /creds/token && echo && stat -c %a-%u-%g /creds/token",
        ],
    );
    let non_root = |more: Value| {
        let mut context = json!({"runAsNonRoot": true});
        for (key, value) in more.as_object().unwrap() {
            context[key] = value.clone();
        }
        json!({"restartPolicy": "Never", "securityContext": context})
    };
    cluster.apply(&[
        namespace("baseline", "Baseline"),
        linux_pod(
            "as-user",
            &unset,
            json!({
                "restartPolicy": "Never",
                "securityContext": {"runAsUser": 1000, "runAsGroup": 3000},
            }),
        ),
        linux_pod_in("baseline", "unset", &unset, non_root(json!({}))),
        linux_pod_in("baseline", "root", &root, non_root(json!({}))),
        linux_pod_in(
            "baseline",
            "run-as-1000",
            &unset,
            non_root(json!({"runAsUser": 1000})),
        ),
        linux_pod_in("baseline", "image-user", &user, non_root(json!({}))),
        json!({"apiVersion": "skiff.dev/v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "baseline"},
            "stringData": {"token": "for-1000-only"}}),
        linux_pod_in(
            "baseline",
            "secret-reader",
            &reads_secret,
            json!({
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 3000},
                "volumes": [{"name": "creds", "mountPath": "/creds", "secret": {"name": "creds"}}],
            }),
        ),
    ]);

    let as_user = cluster.wait_pod("as-user", "Succeeded", succeeded);
    assert_eq!(log_of(&cluster, &as_user), "1000\n3000\n");
    let run_as = cluster.wait_pod_in("baseline", "run-as-1000", "Succeeded", succeeded);
    assert_eq!(log_of(&cluster, &run_as), "1000\n1000\n");
    let image_user = cluster.wait_pod_in("baseline", "image-user", "Succeeded", succeeded);
    assert_eq!(log_of(&cluster, &image_user), "1000\n1000\n");
    let reader = cluster.wait_pod_in("baseline", "secret-reader", "Succeeded", succeeded);
    assert_eq!(log_of(&cluster, &reader), "for-1000-only\n600-1000-3000\n");

    for (name, image, why) in [
        ("unset", &unset, "its user is unset"),
        ("root", &root, "its user is `root`"),
    ] {
        let refused = cluster.wait_pod_in("baseline", name, "Failed", failed);
        assert_eq!(
            refused["status"]["reason"], "CreateContainerConfigError",
            "{refused:#}"
        );
        assert_eq!(
            refused["status"]["message"],
            format!(
                "image {image} runs as root ({why}) and the pod must not run as root: set securityContext.runAsUser"
            ),
            "{refused:#}"
        );
        assert_eq!(refused["status"]["restartCount"].as_u64().unwrap_or(0), 0);
        let (log, _) = log_files(&cluster, &refused);
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(log.is_empty(), "{name} never ran, yet it has a log: {log}");
    }
    // Refused before anything was made for them: the pods that ran have
    // ended, and nothing of any pod is left running.
    for what in ["containers", "tasks"] {
        let listed = containerd.ctr("skiff-baseline", &[what, "ls", "-q"]);
        assert!(
            !listed.contains("unset-") && !listed.contains("root-"),
            "{what}: {listed}"
        );
    }
}

#[test]
fn the_node_caps_a_linux_pods_processes_and_its_log() {
    let (cluster, _containerd) =
        linux_node(&["--pod-max-pids", "16", "--pod-log-max-size", "64Ki"]);
    let registry = &cluster.registry.addr;
    // A bounded fork bomb: 64 sleeps, of which the limit lets 15 start (the
    // shell is the 16th process); busybox sh gives up at the first fork
    // that fails.
    let forks = format!("{registry}/busybox:forks");
    push_busybox_image(
        &forks,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 64 ]; do sleep 600 & i=$((i+1)); echo started $i; done",
        ],
    );
    // About 290 KB of numbered lines, past the 64 KiB cap four times.
    let chatty = format!("{registry}/busybox:chatty");
    push_busybox_image(&chatty, &["seq", "1", "50000"]);
    cluster.apply(&[
        linux_pod("forks", &forks, json!({"restartPolicy": "Never"})),
        linux_pod("chatty", &chatty, json!({"restartPolicy": "Never"})),
    ]);

    let forks = cluster.wait_pod("forks", "Failed", failed);
    let log = log_of(&cluster, &forks);
    assert!(
        log.contains("started 15\n") && !log.contains("started 16"),
        "{log}"
    );
    assert!(
        log.contains("can't fork: Resource temporarily unavailable"),
        "{log}"
    );

    let chatty = cluster.wait_pod("chatty", "Succeeded", succeeded);
    let (log, rotated) = log_files(&cluster, &chatty);
    let (log, rotated) = (
        std::fs::read_to_string(&log).unwrap(),
        std::fs::read_to_string(&rotated).unwrap(),
    );
    assert!(log.len() <= 64 << 10, "{} bytes", log.len());
    assert!(rotated.len() <= 64 << 10, "{} bytes", rotated.len());
    // The latest output is kept, in order: the two files end with what
    // the pod wrote last. (Should the node have fallen behind, lines are
    // dropped, never reordered; a stderr record then says so.)
    assert!(rotated.len() + log.len() > 64 << 10, "kept too little");
    let kept: Vec<u32> = records_of(&format!("{rotated}{log}"))
        .into_iter()
        .filter(|(stream, _)| stream == "stdout")
        .map(|(_, text)| text.parse().unwrap())
        .collect();
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "out of order");
    assert_eq!(kept[kept.len() - 2..], [49999, 50000]);
}
