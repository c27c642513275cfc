//! Liveness and readiness probes: HTTP GETs the node makes to a pod, in
//! process for a component (a fresh instance per check, as for any
//! request), over loopback for a Linux pod's port. A status from 200 to 399
//! within the timeout passes.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use skiff_api::kinds::pod::Probe;
use tokio::time::Instant;

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::runtimes::Backend;
use skiff_wasm::BodyError;

/// What the probes found that the worker must act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Readiness changed.
    Ready(bool),
    /// Liveness failed its threshold: restart, for this reason.
    Dead(String),
}

struct Check {
    probe: Probe,
    due: Instant,
    failures: u32,
    /// The last verdict reported (readiness only).
    reported: Option<bool>,
}

impl Check {
    fn new(probe: &Probe, started: Instant) -> Self {
        let mut probe = probe.clone();
        probe.set_defaults();
        let delay = Duration::from_secs(u64::from(probe.initial_delay_seconds.unwrap_or(0)));
        Self {
            probe,
            due: started + delay,
            failures: 0,
            reported: None,
        }
    }

    fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.probe.period_seconds.unwrap_or(2)))
    }

    fn threshold(&self) -> u32 {
        self.probe.failure_threshold.unwrap_or(3)
    }
}

type ProbeClient = Client<HttpConnector, Empty<Bytes>>;

/// How often a Linux pod's port is tried until it takes connections.
const PORT_POLL: Duration = Duration::from_millis(100);

/// A pod's probes.
pub struct Prober {
    backend: Backend,
    client: Option<ProbeClient>,
    host: String,
    liveness: Option<Check>,
    readiness: Option<Check>,
    /// A process without a readiness probe is Ready once its port takes
    /// connections: when to try it next, until it does.
    port_due: Option<Instant>,
}

impl Prober {
    pub fn new(
        backend: Backend,
        host: String,
        liveness: Option<&Probe>,
        readiness: Option<&Probe>,
    ) -> Self {
        let now = Instant::now();
        let process = matches!(backend, Backend::Process(_));
        Self {
            backend,
            client: process
                .then(|| Client::builder(TokioExecutor::new()).build(HttpConnector::new())),
            host,
            liveness: liveness.map(|p| Check::new(p, now)),
            readiness: readiness.map(|p| Check::new(p, now)),
            port_due: (process && readiness.is_none()).then_some(now),
        }
    }

    /// Whether the pod is Ready before any check ran: a component without
    /// a readiness probe is (it takes requests the moment it is prepared).
    pub fn ready_at_start(&self) -> bool {
        self.readiness.is_none() && self.port_due.is_none()
    }

    /// Checks as the probes' periods come round, until there is something
    /// to report. Never returns for a pod without probes.
    pub async fn next(&mut self) -> Verdict {
        loop {
            let due = [&self.liveness, &self.readiness]
                .into_iter()
                .flatten()
                .map(|c| c.due)
                .chain(self.port_due)
                .min();
            let Some(due) = due else {
                return std::future::pending().await;
            };
            tokio::time::sleep_until(due).await;
            let now = Instant::now();
            if let (Some(_), Backend::Process(addr)) = (self.port_due, &self.backend)
                && self.port_due <= Some(now)
            {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    self.port_due = None;
                    return Verdict::Ready(true);
                }
                self.port_due = Some(Instant::now() + PORT_POLL);
            }
            if let Some(check) = self.liveness.as_mut().filter(|c| c.due <= now)
                && let Err(why) = check
                    .run(&self.backend, self.client.as_ref(), &self.host)
                    .await
            {
                check.failures += 1;
                if check.failures >= check.threshold() {
                    check.failures = 0;
                    return Verdict::Dead(format!(
                        "liveness probe failed {} times: {why}",
                        check.threshold()
                    ));
                }
            }
            if let Some(check) = self.readiness.as_mut().filter(|c| c.due <= now) {
                // Not ready until the first success; once ready, only the
                // threshold's worth of failures in a row takes it out.
                let ready = match check
                    .run(&self.backend, self.client.as_ref(), &self.host)
                    .await
                {
                    Ok(()) => true,
                    Err(_) => {
                        check.failures += 1;
                        check.reported == Some(true) && check.failures < check.threshold()
                    }
                };
                if check.reported != Some(ready) {
                    check.reported = Some(ready);
                    return Verdict::Ready(ready);
                }
            }
        }
    }
}

impl Check {
    /// Runs the check and schedules the next; a success clears the
    /// failures counted so far.
    async fn run(
        &mut self,
        backend: &Backend,
        client: Option<&ProbeClient>,
        host: &str,
    ) -> Result<(), String> {
        let outcome = get(backend, client, host, &self.probe).await;
        self.due = Instant::now() + self.period();
        if outcome.is_ok() {
            self.failures = 0;
        }
        outcome
    }
}

/// One check: `Ok` for 2xx and 3xx within the timeout.
async fn get(
    backend: &Backend,
    client: Option<&ProbeClient>,
    host: &str,
    probe: &Probe,
) -> Result<(), String> {
    let path = &probe.http_get.path;
    let timeout = Duration::from_secs(u64::from(probe.timeout_seconds.unwrap_or(1)));
    let request = |uri: String| {
        http::Request::get(uri)
            .header(http::header::HOST, host)
            .header(http::header::USER_AGENT, "skiff-probe")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("GET {path}: {e}"))
    };
    let status = match (backend, client) {
        (Backend::Wasm(app), _) => {
            let request = request(path.clone())?
                .map(|b| b.map_err(|never: Infallible| -> BodyError { match never {} }));
            tokio::time::timeout(timeout, app.handle(request))
                .await
                .map(|r| r.status())
        }
        (Backend::Process(addr), Some(client)) => {
            let request = request(format!("http://{addr}{path}"))?;
            match tokio::time::timeout(timeout, client.request(request)).await {
                Ok(Ok(response)) => Ok(response.status()),
                Ok(Err(e)) => return Err(format!("GET {path}: {e}")),
                Err(elapsed) => Err(elapsed),
            }
        }
        (Backend::Process(_), None) => unreachable!("a process backend has a client"),
    };
    match status {
        Ok(status) if status.is_success() || status.is_redirection() => Ok(()),
        Ok(status) => Err(format!("GET {path}: {status}")),
        Err(_) => Err(format!(
            "GET {path}: no answer within {}s",
            timeout.as_secs()
        )),
    }
}
