//! What the cluster benchmarks share: the machine line, wasmctl as the
//! admin, hello-http built for release, a tiny HTTP/1.1 client, servers
//! killed when dropped, and the percentile report.

#![allow(dead_code)] // each bench uses its own part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_client::{Client, ClientConfig};
#[allow(unused_imports)] // each bench uses its own part
pub use testkit::rss_mib;
use testkit::{ControlPlane, Node, Postgres, Registry};

/// A control plane (release build, on a database of its own) with
/// hello-http pushed to a registry, and wasmctl as its admin.
pub struct Cluster {
    pub ctl: Ctl,
    pub registry: Registry,
    pub plane: ControlPlane,
    pub api: Client,
    /// The cluster admin's token.
    pub admin: String,
    pub hello: PathBuf,
    pub hello_ref: String,
    /// The control plane's database.
    pub database: String,
    /// Scratch space, `name` and the process id under the temp directory.
    pub work: PathBuf,
}

impl Cluster {
    pub fn start(name: &str) -> Cluster {
        let control_plane = testkit::release_binary("control-plane");
        let hello = build_hello();
        let work = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&work).expect("work directory");
        let ctl = Ctl {
            binary: testkit::release_binary("wasmctl"),
            config: work.join("config.yaml"),
            cache: work.join("wasmctl-cache"),
        };
        let registry = Registry::start();
        let database = Postgres::shared().create_database();
        let admin = testkit::init_cluster(&control_plane, &database, &[]);
        let plane = ControlPlane::start(&control_plane, &database, &[]);
        let api = Client::new(&ClientConfig {
            server: plane.url.clone(),
            token: admin.clone(),
            ..Default::default()
        })
        .expect("client");
        ctl.run(&[
            "config",
            "set-context",
            "admin",
            "--server",
            &plane.url,
            "--token",
            &admin,
        ]);
        let hello_ref = format!("{}/hello:v1", registry.addr);
        ctl.run(&["push", path_str(&hello), &hello_ref]);
        Cluster {
            ctl,
            registry,
            plane,
            api,
            admin,
            hello,
            hello_ref,
            database,
            work,
        }
    }
}

pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib >> 20);
    format!("{cores} cores, {memory} GiB")
}

/// wasmctl, as the cluster's admin.
pub struct Ctl {
    pub binary: PathBuf,
    pub config: PathBuf,
    pub cache: PathBuf,
}

impl Ctl {
    /// Runs wasmctl; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let output = Command::new(&self.binary)
            .args(args)
            .env("WASMCTL_CONFIG", &self.config)
            .env("WASMCTL_CACHE_DIR", &self.cache)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .expect("wasmctl runs");
        assert!(
            output.status.success(),
            "wasmctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Joins a node labelled `bench=NAME` with its own node token.
    pub fn join(&self, binary: &Path, server: &str, name: &str, flags: &[&str]) -> Node {
        let token = self.run(&["create", "token", "--node", name]);
        let label = format!("bench={name}");
        let mut flags = flags.to_vec();
        flags.extend(["--label", &label]);
        Node::start_logging(binary, server, &token, name, &flags, "wasm_node=info,warn")
    }
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("paths are utf-8")
}

pub fn build_hello() -> PathBuf {
    build_component("examples", "hello-http")
}

/// Builds `package` of the guest workspace `workspace` (relative to the
/// repository) for release; returns its component.
pub fn build_component(workspace: &str, package: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(workspace);
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "build",
            "--quiet",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
        ])
        .current_dir(&dir)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {workspace}/{package} failed");
    dir.join("target/wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// One `wrk` run's figures: requests/s, and p50 and p99 in ms.
pub struct WrkRun {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
}

/// A `wrk` load: `connections` over `threads` for `seconds`, every answer
/// expected 2xx unless [`Wrk::any_status`].
pub struct Wrk {
    command: Command,
    what: String,
    any_status: bool,
}

impl Wrk {
    pub fn new(
        addr: SocketAddr,
        host: &str,
        path: &str,
        threads: usize,
        connections: usize,
        seconds: usize,
    ) -> Wrk {
        let mut command = Command::new("wrk");
        command
            .arg(format!("-t{threads}"))
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .args(["--latency", "-H"])
            .arg(format!("Host: {host}"))
            .arg(format!("http://{addr}{path}"))
            .stdin(Stdio::null());
        Wrk {
            command,
            what: format!("{host}{path}"),
            any_status: false,
        }
    }

    /// Takes non-2xx answers (a load whose answers do not matter).
    pub fn any_status(mut self) -> Wrk {
        self.any_status = true;
        self
    }

    /// Starts the load in the background.
    pub fn spawn(mut self) -> Child {
        self.command
            .stdout(Stdio::null())
            .spawn()
            .expect("wrk runs")
    }

    pub fn run(mut self) -> WrkRun {
        let output = self.command.output().expect("wrk runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            self.any_status || !text.contains("Non-2xx"),
            "{}: some answers were not 2xx:\n{text}",
            self.what
        );
        let percentile = |p: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(p))
                .map(|v| millis(v.trim()))
                .unwrap_or_else(|| panic!("wrk printed no {p}:\n{text}"))
        };
        WrkRun {
            rps: text
                .lines()
                .find_map(|l| l.strip_prefix("Requests/sec:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("wrk printed no rate:\n{text}")),
            p50: percentile("50%"),
            p99: percentile("99%"),
        }
    }
}

/// wrk's `1.23ms`, `456.00us` or `1.20s` in milliseconds.
fn millis(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1000.0,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => number,
    }
}

/// The status of one `GET /` for `host` over `stream` (kept alive).
pub fn get(stream: &mut BufReader<TcpStream>, host: &str) -> std::io::Result<u16> {
    get_path(stream, host, "/")
}

/// The status of one `GET path` for `host` over `stream` (kept alive).
pub fn get_path(stream: &mut BufReader<TcpStream>, host: &str, path: &str) -> std::io::Result<u16> {
    write!(
        stream.get_mut(),
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n"
    )?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked) = (0usize, false);
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        }
    }
    if !chunked {
        stream.read_exact(&mut vec![0; length])?;
        return Ok(status);
    }
    // Chunks until the empty one, then the (empty) trailer line.
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
        stream.read_exact(&mut vec![0; size + 2])?;
        if size == 0 {
            return Ok(status);
        }
    }
}

pub fn connect(addr: SocketAddr) -> std::io::Result<BufReader<TcpStream>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(BufReader::new(stream))
}

/// Polls `addr` every millisecond until `host` answers 200.
pub fn wait_for_200(addr: SocketAddr, host: &str, timeout: Duration) {
    if let Err(last) = answers_200(addr, host, timeout) {
        panic!("{host} never answered 200 on {addr} (last: {last})");
    }
}

/// Asks `host` until it answers 200 or `timeout` passes; then what it
/// answered last (a status, or the connection's error).
pub fn answers_200(addr: SocketAddr, host: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut connection = None;
    let mut last = String::from("no answer");
    loop {
        if connection.is_none() {
            connection = connect(addr).ok();
        }
        if let Some(stream) = connection.as_mut() {
            match get(stream, host) {
                Ok(200) => return Ok(()),
                Ok(status) => last = status.to_string(),
                Err(e) => {
                    last = e.to_string();
                    connection = None;
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A server process, killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_server(mut command: Command) -> Server {
    Server(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts"),
    )
}

pub fn percentile(values: &[f64], p: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}

pub fn report(what: &str, seconds: &[f64]) {
    println!(
        "  {what:<58} p50 {:>7.1} ms   p99 {:>7.1} ms   (n={})",
        percentile(seconds, 50) * 1000.0,
        percentile(seconds, 99) * 1000.0,
        seconds.len()
    );
}

/// Seconds from starting the server `command(port)` builds to its first
/// 200, over `runs` runs after one that warms caches.
pub fn start_to_first_200(runs: usize, command: impl Fn(u16) -> Command) -> Vec<f64> {
    (0..=runs)
        .map(|_| {
            let port = testkit::free_port();
            let started = Instant::now();
            let _server = spawn_server(command(port));
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            wait_for_200(addr, "localhost", Duration::from_secs(60));
            started.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect()
}
