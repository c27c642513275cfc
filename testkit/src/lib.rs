//! The real parts tests run against, started by the tests themselves:
//! throwaway Postgres clusters (the installed Postgres binaries, or the
//! server at `DATABASE_URL`), the workspace's own binaries, control-plane
//! and node processes, OCI registries (Debian's `docker-registry`), and a
//! containerd with busybox images for the Linux runtime.
//! Nothing here is a fake.

pub mod browser;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use control_plane::local_postgres::{LocalPostgres, POSTGRES_BIN, running_as_root};

mod containerd;
pub mod relay;
pub use containerd::{
    Containerd, host_architecture, push_busybox_image, push_busybox_image_as,
    push_busybox_image_running_as, push_busybox_index,
};

/// How long a control plane may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A free port below the kernel's ephemeral range (32768 and up), which
/// every process binding port 0 draws from: for a process that must get
/// the same port again after a restart, where a port another test could be
/// handed meanwhile would make the test flaky.
pub fn stable_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let offset = std::process::id() as usize % 12_000;
    loop {
        let port = 20_000 + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        let port = u16::try_from(port).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run_checked(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Postgres server tests may create databases in.
pub struct Postgres {
    /// `postgres://user@host:port` without a database.
    server_url: String,
    /// Set for clusters this harness runs (and may restart).
    managed: Option<Managed>,
}

struct Managed {
    server: LocalPostgres,
    /// Closing this pipe (when the test process exits) makes the watchdog
    /// stop the server and remove its files; the watchdog outlives us.
    _watchdog: Mutex<(Child, ChildStdin)>,
}

impl Postgres {
    /// The Postgres every test of this binary shares: `DATABASE_URL` if
    /// set, else a throwaway cluster started once.
    pub fn shared() -> &'static Postgres {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| match std::env::var("DATABASE_URL") {
            Ok(url) => {
                let server_url = match url.rsplit_once('/') {
                    Some((server, _db))
                        if server.contains("://") && server.len() > "postgres://".len() =>
                    {
                        server.to_owned()
                    }
                    _ => url,
                };
                Postgres {
                    server_url,
                    managed: None,
                }
            }
            Err(_) => Postgres::start(),
        })
    }

    /// Starts a throwaway cluster of its own (for tests that restart it).
    pub fn start() -> Postgres {
        let data = std::env::temp_dir().join(unique("skiff-pg"));
        LocalPostgres::init(&data).unwrap_or_else(|e| panic!("{e}"));
        let server = LocalPostgres::start(&data, free_port()).unwrap_or_else(|e| panic!("{e}"));
        let pg_ctl = Path::new(POSTGRES_BIN).join("pg_ctl");
        let as_postgres = if running_as_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let mut watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "read _; {as_postgres}{} -D '{}' stop -m immediate >/dev/null 2>&1; rm -rf '{}'",
                pg_ctl.display(),
                data.display(),
                data.display()
            ))
            .stdin(Stdio::piped())
            .spawn()
            .expect("starting the Postgres watchdog");
        let stdin = watchdog.stdin.take().expect("piped");
        Postgres {
            server_url: format!("postgres://postgres@127.0.0.1:{}", server.port),
            managed: Some(Managed {
                server,
                _watchdog: Mutex::new((watchdog, stdin)),
            }),
        }
    }

    /// Creates an empty database and returns its URL.
    pub fn create_database(&self) -> String {
        let name = unique("skiff");
        run_checked(
            Command::new(Path::new(POSTGRES_BIN).join("psql"))
                .arg(format!("{}/postgres", self.server_url))
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
                .arg(format!("CREATE DATABASE {name}")),
            "CREATE DATABASE",
        );
        format!("{}/{name}", self.server_url)
    }

    /// Updates the planner's statistics of the database at `url`, as
    /// autovacuum does within a minute of a bulk load: a benchmark that
    /// measures right after creating thousands of objects would otherwise
    /// measure plans made for an empty table.
    pub fn analyze(url: &str) {
        run_checked(
            Command::new(Path::new(POSTGRES_BIN).join("psql"))
                .arg(url)
                .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", "ANALYZE"]),
            "ANALYZE",
        );
    }

    /// Restarts the server (fast shutdown: connections are cut).
    pub fn restart(&self) {
        let managed = self
            .managed
            .as_ref()
            .expect("only a harness-managed Postgres can restart");
        managed.server.restart().unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn port(&self) -> Option<u16> {
        self.managed.as_ref().map(|m| m.server.port)
    }
}

/// Builds a binary of this workspace (once per test process) and returns
/// its path, for tests of one crate that need another crate's binary.
/// Every binary is built in one go: built one package at a time, features
/// unify differently each time and each build undoes the last.
pub fn binary(package: &str) -> PathBuf {
    build_binary(package, false)
}

/// As [`binary`], optimized: for benchmarks.
pub fn release_binary(package: &str) -> PathBuf {
    build_binary(package, true)
}

fn build_binary(package: &str, release: bool) -> PathBuf {
    type Built = Mutex<std::collections::HashMap<(String, bool), PathBuf>>;
    static BUILT: OnceLock<Built> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().expect("lock");
    let key = (package.to_owned(), release);
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(["build", "--workspace", "--bins", "--message-format=json"]);
    if release {
        command.arg("--release");
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    let messages: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    if !output.status.success() {
        // With --message-format=json the compiler's errors go to stdout,
        // which we captured: show them, or the failure says nothing of why.
        let rendered: String = messages
            .iter()
            .filter_map(|m| m["message"]["rendered"].as_str())
            .collect();
        panic!("building {package} failed:\n{rendered}");
    }
    for executable in messages
        .iter()
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
    {
        if let Some(name) = executable.file_name().and_then(|f| f.to_str()) {
            built.insert((name.to_owned(), release), executable.clone());
        }
    }
    built
        .get(&key)
        .cloned()
        .unwrap_or_else(|| panic!("cargo built no {package} binary"))
}

/// A `control-plane serve` process; killed (SIGKILL) when dropped.
pub struct ControlPlane {
    child: Child,
    pub url: String,
    log: Arc<Mutex<String>>,
}

/// The encryption key file of the cluster on `database_url`: one per
/// database, as every control plane on a database needs the same keys.
/// [`init_cluster`] creates it; control planes started here are given it.
pub fn encryption_key_file(database_url: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    database_url.hash(&mut hasher);
    let dir = std::env::temp_dir().join("skiff-test-keys");
    std::fs::create_dir_all(&dir).expect("a directory for test key files");
    dir.join(format!("{:016x}.keys", hasher.finish()))
}

/// `extra`, with the database's key file unless `extra` names one.
fn with_key_file(database_url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    if !extra.contains(&"--encryption-key-file") {
        args.push("--encryption-key-file".into());
        args.push(encryption_key_file(database_url).display().to_string());
    }
    args
}

/// Runs `control-plane init` on a database and returns the admin token.
pub fn init_cluster(binary: &Path, database_url: &str, extra: &[&str]) -> String {
    let output = Command::new(binary)
        .args(["init", "--database-url", database_url])
        .args(with_key_file(database_url, extra))
        .output()
        .expect("control-plane init runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "control-plane init failed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .split_whitespace()
        .find(|w| w.starts_with("skf_"))
        .expect("init prints the admin token")
        .to_owned()
}

/// Spawns `command` with stderr collected into a shared log, and waits
/// until a line of it starts with `ready`; returns the child, the rest of
/// that line and the log. Panics with the log if the line does not come.
pub fn spawn_logged(
    mut command: Command,
    ready: &str,
    what: &str,
) -> (Child, String, Arc<Mutex<String>>) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let log = Arc::new(Mutex::new(String::new()));
    let (found, announced) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    let ready = ready.to_owned();
    std::thread::spawn({
        let log = log.clone();
        move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix(&ready) {
                    let _ = found.send(rest.to_owned());
                }
                let mut log = log.lock().expect("log");
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    match announced.recv_timeout(START_TIMEOUT) {
        Ok(rest) => (child, rest, log),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not start:\n{}", log.lock().expect("log"));
        }
    }
}

impl ControlPlane {
    /// Starts `control-plane serve` on a free port and waits until it says
    /// where it listens.
    pub fn start(binary: &Path, database_url: &str, extra: &[&str]) -> ControlPlane {
        Self::start_at(binary, database_url, "127.0.0.1:0", extra)
    }

    /// Starts `control-plane serve` listening on `listen` (to come back at
    /// the address a killed one had).
    pub fn start_at(
        binary: &Path,
        database_url: &str,
        listen: &str,
        extra: &[&str],
    ) -> ControlPlane {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--database-url", database_url, "--listen", listen])
            .args(with_key_file(database_url, extra))
            .env("RUST_LOG", "control_plane=debug,warn");
        let (child, url, log) = spawn_logged(command, "listening on ", "control plane");
        ControlPlane { child, url, log }
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `condition` holds, checking every 20 ms, for at most
/// `timeout`; returns whether it held.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `wasm-node join` process with its own data directory and a fixed
/// ingress port (so a restarted node serves where it served before);
/// killed (SIGKILL) when dropped.
pub struct Node {
    child: Option<Child>,
    pub name: String,
    /// Where its ingress listens.
    pub ingress: std::net::SocketAddr,
    pub data_dir: PathBuf,
    command: Vec<String>,
    binary: PathBuf,
    log_filter: &'static str,
    log: Arc<Mutex<String>>,
}

impl Node {
    /// Joins `server` as node `name` with a node token; `extra` are further
    /// `wasm-node join` flags. Waits until the node has registered.
    pub fn start(binary: &Path, server: &str, token: &str, name: &str, extra: &[&str]) -> Node {
        Self::start_logging(binary, server, token, name, extra, "wasm_node=debug,warn")
    }

    /// As [`Node::start`], logging at `log_filter` (`RUST_LOG` syntax; it
    /// must keep wasm_node's info lines, which say when the node joined).
    /// Benchmarks log less than tests.
    pub fn start_logging(
        binary: &Path,
        server: &str,
        token: &str,
        name: &str,
        extra: &[&str],
        log_filter: &'static str,
    ) -> Node {
        // Restarts bind it again.
        let ingress = std::net::SocketAddr::from(([127, 0, 0, 1], stable_port()));
        let data_dir = std::env::temp_dir().join(unique(&format!("skiff-node-{name}")));
        let mut command: Vec<String> = [
            "join",
            "--server",
            server,
            "--token",
            token,
            "--name",
            name,
            "--ingress",
            &ingress.to_string(),
            "--data-dir",
            &data_dir.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        command.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Node {
            child: None,
            name: name.to_owned(),
            ingress,
            data_dir,
            command,
            binary: binary.to_owned(),
            log_filter,
            log: Arc::default(),
        };
        node.launch();
        node
    }

    fn launch(&mut self) {
        let mut command = Command::new(&self.binary);
        command.args(&self.command).env("RUST_LOG", self.log_filter);
        let (child, _, log) = spawn_logged(command, &format!("node {} joined", self.name), "node");
        self.child = Some(child);
        self.log = log;
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again with the same name, flags and data directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A `docker-registry` (the CNCF distribution server) on a free loopback
/// port with its storage in a temporary directory; killed and removed when
/// dropped.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, the registry part of references.
    pub addr: String,
    dir: PathBuf,
}

impl Registry {
    /// An anonymous registry: anyone may push and pull.
    pub fn start() -> Registry {
        Self::launch(None)
    }

    /// A registry that takes only `user` with `password` (htpasswd, basic
    /// authentication).
    pub fn with_user(user: &str, password: &str) -> Registry {
        Self::launch(Some((user, password)))
    }

    fn launch(user: Option<(&str, &str)>) -> Registry {
        let dir = std::env::temp_dir().join(unique("skiff-registry"));
        std::fs::create_dir_all(&dir).expect("registry directory");
        let addr = format!("127.0.0.1:{}", free_port());
        let auth = match user {
            Some((user, password)) => {
                let hash = bcrypt::hash_with_result(password, 4)
                    .expect("bcrypt")
                    .format_for_version(bcrypt::Version::TwoY);
                std::fs::write(dir.join("htpasswd"), format!("{user}:{hash}\n")).expect("htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            None => String::new(),
        };
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\n\
                 storage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\n\
                 http:\n  addr: {addr}\n{auth}",
                dir.join("data").display()
            ),
        )
        .expect("registry config");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts (apt-get install docker-registry)");
        // The registry announces nothing; it is ready once its port accepts.
        let up = wait_until(START_TIMEOUT, || {
            std::net::TcpStream::connect(&addr).is_ok() || child.try_wait().ok().flatten().is_some()
        });
        assert!(
            up && child.try_wait().ok().flatten().is_none(),
            "docker-registry did not start on {addr}"
        );
        Registry { child, addr, dir }
    }

    /// Stops the registry (its storage stays until it is dropped): for
    /// tests of what works without it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Where the registry keeps the blob with this digest (`sha256:...`),
    /// for tests that tamper with stored content.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process's resident memory in MiB, from `/proc` (NaN if it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The fields of `/proc/PID/stat` after the command name, which may hold
/// spaces; `[0]` is the state (field 3 in proc(5)).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(
        rest.split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// Clock ticks in a second as `/proc` counts CPU time (USER_HZ, 100 on
/// every Linux architecture).
const TICKS: f64 = 100.0;

/// CPU time (user and system) a process has used so far, in seconds, from
/// `/proc` (NaN if it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_fields(pid)
        .filter(|f| f.len() > 12)
        .map_or(f64::NAN, |f| (f[11] + f[12]) as f64 / TICKS)
}

/// CPU time used so far by every Postgres process on the machine, in
/// seconds: live ones, and backends that have ended (their postmaster
/// reaped them, so their time is in its children's).
pub fn postgres_cpu_seconds() -> f64 {
    let mut ticks = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return f64::NAN;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "postgres");
        if let Some(f) = stat_fields(pid).filter(|f| is_postgres && f.len() > 14) {
            ticks += f[11] + f[12] + f[13] + f[14];
        }
    }
    ticks as f64 / TICKS
}
