//! What the integration tests share: building guests, starting `wasmctl`
//! as a real process, a small HTTP client and an upstream server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long a `wasmctl run` may take to start serving: it may compile a
/// large component (the Python one) with a debug build of the compiler.
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long any single HTTP exchange may take before the test fails.
const HTTP_TIMEOUT: Duration = Duration::from_secs(60);

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("wasmctl lives in the workspace root")
}

/// A directory for this test binary's files, kept between runs.
pub fn scratch() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// A fresh, empty directory.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = scratch().join(format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The compilation cache the tests share, so each component is compiled
/// once per test run rather than once per test.
fn shared_cache() -> PathBuf {
    scratch().join("compiled")
}

/// `wasmctl` with a quiet, predictable environment.
pub fn wasmctl() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wasmctl"));
    command
        .env("WASMCTL_CACHE_DIR", shared_cache())
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0");
    command
}

/// Runs `wasmctl run ARGS` to completion.
pub fn run(args: &[&str]) -> Output {
    wasmctl()
        .arg("run")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("wasmctl starts")
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds a wasm32-wasip2 workspace once per test run; panics with cargo's
/// output if it fails.
fn build_guest_workspace(manifest: &Path) {
    let output = cargo()
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("cargo starts");
    assert!(
        output.status.success(),
        "building {} failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn wasm_in(workspace: &str, built: &'static OnceLock<()>, file: &str) -> PathBuf {
    let dir = repo_root().join(workspace);
    built.get_or_init(|| build_guest_workspace(&dir.join("Cargo.toml")));
    let path = dir.join("target/wasm32-wasip2/release").join(file);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A component from `tests/guests` (`misbehave`, `probe`).
pub fn test_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    wasm_in("tests/guests", &BUILT, &format!("{name}.wasm"))
}

/// A component from `examples/` (`hello_http`, `echo-env`, `fetch_http`).
pub fn example(file_stem: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    wasm_in("examples", &BUILT, &format!("{file_stem}.wasm"))
}

/// The Python HTTP component from `tests/guests/python`, built with
/// componentize-py in a virtualenv of its own, for the `http` world of
/// `sdk/wit`.
pub fn python_guest() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build_python_guest).clone()
}

const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

fn build_python_guest() -> PathBuf {
    let venv = scratch().join("python-venv");
    let tool = venv.join("bin/componentize-py");
    if !tool.exists() {
        checked(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating a Python virtualenv (needs python3 with venv)",
        );
        checked(
            Command::new(venv.join("bin/pip")).args(["install", "--quiet", COMPONENTIZE_PY]),
            "installing componentize-py",
        );
    }
    let out = scratch().join("python-hello.wasm");
    checked(
        Command::new(&tool)
            .arg("-d")
            .arg(wasi_http_wit_dir())
            .arg("-d")
            .arg(repo_root().join("sdk/wit"))
            .args([
                "-w",
                "skiff:platform/http@0.1.0",
                "componentize",
                "app",
                "-o",
            ])
            .arg(&out)
            .current_dir(repo_root().join("tests/guests/python")),
        "building the Python component",
    );
    out
}

/// The WASI WIT files that ship with the wasmtime-wasi-http crate this
/// workspace builds against: the packages `sdk/wit` includes, at exactly the
/// version the runtime serves.
fn wasi_http_wit_dir() -> PathBuf {
    let output = checked(
        cargo()
            .args(["metadata", "--format-version", "1", "--manifest-path"])
            .arg(repo_root().join("Cargo.toml")),
        "cargo metadata",
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let package = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "wasmtime-wasi-http")
        .expect("wasmtime-wasi-http is a dependency");
    Path::new(package["manifest_path"].as_str().unwrap())
        .parent()
        .unwrap()
        .join("wit")
}

fn checked(command: &mut Command, what: &str) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A `wasmctl run` serving HTTP; killed when dropped.
pub struct Served {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Served {
    /// Starts `wasmctl run ARGS --listen 127.0.0.1:0` and waits until it
    /// says where it serves.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(wasmctl(), args)
    }

    pub fn start_with(mut command: Command, args: &[&str]) -> Self {
        let mut child = command
            .arg("run")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wasmctl starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (serving, serving_at) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.strip_prefix("Serving http://") {
                        let addr = rest.split('/').next().unwrap().to_owned();
                        let _ = serving.send(addr);
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            }
        });
        match serving_at.recv_timeout(START_TIMEOUT) {
            Ok(addr) => Self {
                child,
                addr: addr.parse().unwrap(),
                log,
            },
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "wasmctl run {args:?} did not start serving ({status}):\n{}",
                    log.lock().unwrap()
                );
            }
        }
    }

    pub fn get(&self, path: &str) -> HttpResponse {
        http_get(self.addr, path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\nserver log:\n{}", self.log()))
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`, for at most `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A plain HTTP/1.1 GET over a fresh connection.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    http_request(addr, &addr.to_string(), path, &[])
}

/// A GET to `addr` naming `host` (a node ingress tells pods apart by it),
/// with further headers.
pub fn http_request(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    http_call(addr, "GET", host, path, headers, "")
}

/// A request of any method with a body (sent with its length).
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<HttpResponse> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<HttpResponse> {
    let bad = |what: &str| std::io::Error::other(format!("malformed response: {what}"));
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of head"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| bad("head not utf-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[head_end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("chunked body"))?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A tiny HTTP server guests can call out to. It counts the connections it
/// gets and the most it held at once, and holds each for `hold` before
/// answering `body`.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Upstream {
    pub fn start(body: &'static str, hold: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        std::thread::spawn({
            let (hits, peak) = (hits.clone(), peak.clone());
            move || {
                for stream in listener.incoming().map_while(Result::ok) {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    let active = active.clone();
                    std::thread::spawn(move || answer(stream, body, hold, &active));
                }
            }
        });
        Self { addr, hits, peak }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn peak_concurrency(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, body: &str, hold: Duration, active: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    // Read the request head; guests send no body on GET.
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
        line.clear();
    }
    std::thread::sleep(hold);
    // The connection stops counting before the answer goes out: once the
    // guest has it, its instance may end and the next guest may connect
    // before this thread is scheduled again.
    active.fetch_sub(1, Ordering::SeqCst);
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// stderr of a finished process as text.
pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn stdout_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are utf-8")
}

/// A TCP proxy in front of `target` that records the request line of every
/// HTTP request passing through (its clients send GETs and HEADs, which
/// have no bodies, so every line up to a blank one is head).
pub struct CountingProxy {
    pub addr: SocketAddr,
    requests: Arc<std::sync::Mutex<Vec<String>>>,
}

impl CountingProxy {
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().map_while(Result::ok) {
                let Ok(upstream) = TcpStream::connect(target) else {
                    continue;
                };
                let (mut from_upstream, mut to_client) =
                    (upstream.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || std::io::copy(&mut from_upstream, &mut to_client));
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut to_upstream = upstream;
                    let mut lines = BufReader::new(client);
                    let mut line = String::new();
                    let mut at_start = true;
                    while lines.read_line(&mut line).is_ok_and(|n| n > 0) {
                        if at_start {
                            seen.lock().unwrap().push(line.trim_end().to_owned());
                        }
                        at_start = line == "\r\n";
                        if to_upstream.write_all(line.as_bytes()).is_err() {
                            break;
                        }
                        line.clear();
                    }
                });
            }
        });
        Self { addr, requests }
    }

    /// The request lines seen so far, such as `GET /v2/x/manifests/v1 HTTP/1.1`.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// A GET of `url` (https://…) trusting only the CA in `ca`, with `token`
/// as bearer when given: the status and body.
pub fn https_get(url: &str, ca: &Path, token: Option<&str>) -> reqwest::Result<(u16, String)> {
    control_plane::tls::install_crypto_provider();
    let pem = std::fs::read(ca).expect("the CA is readable");
    let certs = reqwest::Certificate::from_pem_bundle(&pem).expect("the CA is PEM");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .tls_certs_only(certs)
            .timeout(HTTP_TIMEOUT)
            .build()?;
        let mut request = client.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.text().await?))
    })
}
