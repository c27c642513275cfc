//! A Postgres server run from the installed binaries in a directory of its
//! own, for `wasmctl dev` and the tests: `initdb` once, then `pg_ctl`. When
//! run as root, the server runs as the `postgres` user (it refuses root), so
//! its directory must be reachable by that user.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's Postgres 15 lives.
pub const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin";

#[derive(Debug, thiserror::Error)]
pub enum LocalPostgresError {
    #[error("Postgres 15 is not installed ({POSTGRES_BIN}/{0} is missing); install postgresql-15")]
    Missing(&'static str),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
}

/// A cluster directory and the port it serves on.
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    pub data: PathBuf,
    pub port: u16,
}

pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A Postgres program, run as `postgres` when we are root.
fn command(program: &'static str) -> Result<Command, LocalPostgresError> {
    let path = Path::new(POSTGRES_BIN).join(program);
    if !path.exists() {
        return Err(LocalPostgresError::Missing(program));
    }
    Ok(if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    })
}

fn run(mut command: Command, what: &str) -> Result<String, LocalPostgresError> {
    let output = command.output().map_err(|e| LocalPostgresError::Command {
        what: what.to_owned(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(LocalPostgresError::Command {
            what: what.to_owned(),
            detail: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl LocalPostgres {
    /// Creates the cluster in `data` unless one is there, configured to
    /// listen on loopback only.
    pub fn init(data: &Path) -> Result<(), LocalPostgresError> {
        if data.join("PG_VERSION").exists() {
            return Ok(());
        }
        let io = |e: std::io::Error| LocalPostgresError::Io {
            path: data.to_owned(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(data).map_err(io)?;
        if running_as_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(data);
                    c
                },
                "chown",
            )?;
        }
        let mut initdb = command("initdb")?;
        initdb.arg("-D").arg(data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        ]);
        run(initdb, "initdb")?;
        let config = format!(
            "listen_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nmax_connections = 300\nshared_buffers = 128MB\n",
            data.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, config.as_bytes()))
            .map_err(io)
    }

    /// Starts the server on `port` (stopping a stale one first).
    pub fn start(data: &Path, port: u16) -> Result<LocalPostgres, LocalPostgresError> {
        let server = LocalPostgres {
            data: data.to_owned(),
            port,
        };
        if server.running() {
            server.stop()?;
        }
        let mut start = command("pg_ctl")?;
        start
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(data.join("server.log"))
            .arg("-o")
            .arg(format!("-p {port}"))
            .args(["-w", "start"]);
        run(start, "pg_ctl start")?;
        Ok(server)
    }

    pub fn running(&self) -> bool {
        command("pg_ctl")
            .map(|mut c| {
                c.arg("-D").arg(&self.data).arg("status");
                c.output().is_ok_and(|o| o.status.success())
            })
            .unwrap_or(false)
    }

    /// Fast shutdown: open connections are cut.
    pub fn stop(&self) -> Result<(), LocalPostgresError> {
        let mut stop = command("pg_ctl")?;
        stop.arg("-D")
            .arg(&self.data)
            .args(["-w", "-m", "fast", "stop"]);
        run(stop, "pg_ctl stop").map(drop)
    }

    pub fn restart(&self) -> Result<(), LocalPostgresError> {
        let mut restart = command("pg_ctl")?;
        restart
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .arg("-o")
            .arg(format!("-p {}", self.port))
            .args(["-w", "-m", "fast", "restart"]);
        run(restart, "pg_ctl restart").map(drop)
    }

    /// `postgres://postgres@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` unless it exists.
    pub fn ensure_database(&self, database: &str) -> Result<(), LocalPostgresError> {
        let exists = {
            let mut psql = Command::new(Path::new(POSTGRES_BIN).join("psql"));
            psql.arg(self.url("postgres")).args(["-tAc"]).arg(format!(
                "SELECT 1 FROM pg_database WHERE datname = '{database}'"
            ));
            run(psql, "psql")?.trim() == "1"
        };
        if !exists {
            let mut psql = Command::new(Path::new(POSTGRES_BIN).join("psql"));
            psql.arg(self.url("postgres"))
                .args(["-v", "ON_ERROR_STOP=1", "-qc"])
                .arg(format!("CREATE DATABASE {database}"));
            run(psql, "CREATE DATABASE")?;
        }
        Ok(())
    }
}
