//! What a guest is granted. Deny by default: a guest sees no files, no
//! environment, no network and no sockets unless its [`Sandbox`] says so.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use skiff_api::outbound::AllowList;

use super::output::{CaptureStream, LogSink, LogStream};

/// The grants of one component.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// Arguments after `argv[0]` (command components only).
    pub args: Vec<String>,
    /// Host directories visible to the guest.
    pub dirs: Vec<DirGrant>,
    /// Where outbound HTTP may go.
    pub outbound: Arc<AllowList>,
    /// Where `http://<service>.<namespace>.svc` requests go, on a node.
    pub services: Option<Arc<ServiceGateway>>,
    /// Addresses outbound requests may not connect to unless a rule names
    /// them as IP literals, besides loopback, link-local and private ones:
    /// on a node, its own ingress address and the control plane's.
    pub denied_addresses: Arc<[std::net::IpAddr]>,
    /// Whether the guest's stdio is the host process's (local development),
    /// goes to the pod's log (a node) or nowhere.
    pub stdio: Stdio,
}

/// Service discovery for a pod's guest: requests to
/// `http://<service>.<namespace>.svc[:port]` are sent to the node's own
/// ingress, which balances them over the Service's Ready pods. The host
/// names the calling pod's namespace on each such request, with a
/// credential the ingress checks, and the ingress decides whether the
/// Service admits that caller; the guest's allow-list has no say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceGateway {
    pub(crate) ingress: std::net::SocketAddr,
    /// The namespace, as the header value sent.
    pub(crate) namespace: http::HeaderValue,
    /// Proves to the ingress that the host, not the guest, named the
    /// namespace; marked sensitive, so it is never printed.
    pub(crate) credential: http::HeaderValue,
}

impl ServiceGateway {
    /// A gateway for pods of `namespace`, whose credential (made by the
    /// node's ingress) is `credential`.
    pub fn new(
        namespace: &str,
        ingress: std::net::SocketAddr,
        credential: http::HeaderValue,
    ) -> Result<Self, http::header::InvalidHeaderValue> {
        Ok(Self {
            ingress,
            namespace: http::HeaderValue::from_str(namespace)?,
            credential,
        })
    }
}

#[derive(Clone, Default)]
pub enum Stdio {
    /// stdin, stdout and stderr are the host process's own.
    Inherit,
    /// stdin is empty, output is discarded.
    #[default]
    Null,
    /// stdin is empty; stdout and stderr go, a line at a time, to the sink
    /// (the pod's log), shared by every instance.
    Capture(Arc<dyn LogSink>),
}

impl std::fmt::Debug for Stdio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stdio::Inherit => "Inherit",
            Stdio::Null => "Null",
            Stdio::Capture(_) => "Capture",
        })
    }
}

/// A host directory preopened for the guest, written
/// `HOST[::GUEST][:ro]`; without `GUEST` the guest sees the host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

/// A directory grant that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid directory grant `{grant}`: {reason}")]
pub struct DirGrantError {
    grant: String,
    reason: String,
}

impl DirGrant {
    /// Parses a grant and checks that the host directory exists.
    pub fn parse(grant: &str) -> Result<Self, DirGrantError> {
        let fail = |reason: String| DirGrantError {
            grant: grant.to_owned(),
            reason,
        };
        let (spec, read_only) = match grant.strip_suffix(":ro") {
            Some(spec) => (spec, true),
            None => (grant, false),
        };
        let (host, guest) = match spec.split_once("::") {
            Some((host, guest)) => (host, guest),
            None => (spec, spec),
        };
        if host.is_empty() {
            return Err(fail("missing host directory".into()));
        }
        if guest.is_empty() {
            return Err(fail("missing guest path after `::`".into()));
        }
        let metadata = std::fs::metadata(host)
            .map_err(|e| fail(format!("host directory {host}: {}", io_reason(&e))))?;
        if !metadata.is_dir() {
            return Err(fail(format!("{host} is not a directory")));
        }
        Ok(Self {
            host: PathBuf::from(host),
            guest: guest.to_owned(),
            read_only,
        })
    }
}

/// `No such file or directory (os error 2)` without the errno noise.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

impl Sandbox {
    /// Builds the WASI context of one instance from the grants. `argv0` is
    /// the program name a command sees as its first argument; `with_stdin`
    /// says whether an inherited stdio includes stdin (commands) or not
    /// (concurrent request handlers, which must not compete for it);
    /// `request` is the id of the request the instance serves, which a
    /// captured stdio tags its lines with.
    pub(crate) fn wasi_ctx(
        &self,
        argv0: &str,
        with_stdin: bool,
        request: Option<&http::HeaderValue>,
    ) -> std::io::Result<WasiCtx> {
        let mut builder = WasiCtxBuilder::new();
        builder
            .envs(&self.env)
            .arg(argv0)
            .args(&self.args)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        match &self.stdio {
            Stdio::Inherit => {
                builder.inherit_stdout().inherit_stderr();
                if with_stdin {
                    builder.inherit_stdin();
                }
            }
            Stdio::Null => {}
            Stdio::Capture(sink) => {
                builder
                    .stdout(CaptureStream::new(
                        sink.clone(),
                        LogStream::Stdout,
                        request.cloned(),
                    ))
                    .stderr(CaptureStream::new(
                        sink.clone(),
                        LogStream::Stderr,
                        request.cloned(),
                    ));
            }
        }
        for dir in &self.dirs {
            let perms = if dir.read_only {
                FsPerms::ReadOnly
            } else {
                FsPerms::ReadWrite
            };
            builder
                .preopened_dir(&dir.host, &dir.guest, perms)
                .map_err(|e| {
                    std::io::Error::other(format!("cannot open {}: {e}", dir.host.display()))
                })?;
        }
        Ok(builder.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_grants_parse_host_guest_and_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().to_str().unwrap();

        let g = DirGrant::parse(&format!("{host}::/data")).unwrap();
        assert_eq!((g.guest.as_str(), g.read_only), ("/data", false));

        let g = DirGrant::parse(&format!("{host}::/data:ro")).unwrap();
        assert_eq!((g.guest.as_str(), g.read_only), ("/data", true));

        let g = DirGrant::parse(host).unwrap();
        assert_eq!(g.guest, host);
    }

    #[test]
    fn dir_grants_reject_missing_or_non_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();

        let err = DirGrant::parse("/no/such/dir::/d").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid directory grant `/no/such/dir::/d`: host directory /no/such/dir: No such file or directory"
        );
        let err = DirGrant::parse(&format!("{}::/d", file.display()))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("is not a directory"), "{err}");
        assert!(DirGrant::parse("::/d").is_err());
        assert!(DirGrant::parse(&format!("{}::", tmp.path().display())).is_err());
    }
}
