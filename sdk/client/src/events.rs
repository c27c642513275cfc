//! Recording Events: the scheduler, controllers and nodes say what
//! happened to an object with [`Recorder::emit`], which never waits and
//! never fails the caller; a task folds repeats and paces the writes
//! ([`skiff_api::kinds::event::Folder`]), so a crash loop costs a few
//! writes of one Event with a growing count, not a write per restart.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use skiff_api::Kind;
use skiff_api::kinds::event::{
    EventSource, FoldPolicy, Folder, InvolvedObject, Severity, cut_message, event_name,
};
use tokio::sync::mpsc;

use crate::{Client, ClientError};

/// Where Events are written: the API (nodes) or the store (the control
/// plane, which writes its own).
pub trait EventSink: Send + Sync + 'static {
    /// Creates the Event; [`SinkError::AlreadyExists`] if one of its name
    /// is stored.
    fn create(
        &self,
        namespace: &str,
        event: Value,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
    fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, SinkError>> + Send;
    /// Replaces the Event if it is still at the `resourceVersion` it
    /// names; [`SinkError::Conflict`] if not.
    fn replace(
        &self,
        namespace: &str,
        name: &str,
        event: Value,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("already exists")]
    AlreadyExists,
    #[error("changed meanwhile")]
    Conflict,
    /// Refused for good (not allowed, invalid, its namespace or object
    /// gone): trying again cannot help, so the happening is dropped.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Other(String),
}

impl From<ClientError> for SinkError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Api(status) if status.code == 409 && status.reason == "AlreadyExists" => {
                SinkError::AlreadyExists
            }
            _ if e.is_conflict() => SinkError::Conflict,
            // 429 and 5xx may pass; any other refusal will not.
            ClientError::Api(status) if (400..500).contains(&status.code) && status.code != 429 => {
                SinkError::Refused(e.to_string())
            }
            _ => SinkError::Other(e.to_string()),
        }
    }
}

impl EventSink for Client {
    async fn create(&self, namespace: &str, event: Value) -> Result<(), SinkError> {
        Client::create(self, Kind::Event, Some(namespace), &event).await?;
        Ok(())
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Value>, SinkError> {
        match Client::get(self, Kind::Event, Some(namespace), name).await {
            Ok(event) => Ok(Some(event)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn replace(&self, namespace: &str, name: &str, event: Value) -> Result<(), SinkError> {
        Client::replace(self, Kind::Event, Some(namespace), name, &event).await?;
        Ok(())
    }
}

/// One happening, as told.
#[derive(Debug, Clone)]
struct Happening {
    involved: InvolvedObject,
    severity: Severity,
    reason: String,
    message: String,
    at: chrono::DateTime<chrono::Utc>,
}

/// Happenings waiting for the recorder's task; beyond this they are
/// dropped (the caller never waits on Events).
const QUEUE: usize = 4096;
/// Events not seen for this long are forgotten by the folder.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Tells what happened to objects. Cheap to clone; the task writing the
/// Events ends, after a last flush, when every clone is dropped.
#[derive(Clone)]
pub struct Recorder {
    happenings: mpsc::Sender<Happening>,
}

impl Recorder {
    /// Starts a recorder writing through `sink` as `source`.
    pub fn start(sink: impl EventSink, source: EventSource, policy: FoldPolicy) -> Self {
        let (happenings, received) = mpsc::channel(QUEUE);
        tokio::spawn(run(sink, source, policy, received));
        Self { happenings }
    }

    /// Records that `reason` happened to `involved` (`message` is cut to
    /// what an Event holds). Never waits: if the recorder is far behind,
    /// the happening is dropped.
    pub fn emit(
        &self,
        involved: InvolvedObject,
        severity: Severity,
        reason: &str,
        message: impl AsRef<str>,
    ) {
        let happening = Happening {
            involved,
            severity,
            reason: reason.to_owned(),
            message: cut_message(message.as_ref()),
            at: chrono::Utc::now(),
        };
        if self.happenings.try_send(happening).is_err() {
            tracing::warn!("an Event was dropped: the recorder is behind");
        }
    }
}

/// An object's reference, from its stored form.
pub fn involved(kind: Kind, object: &Value) -> InvolvedObject {
    let meta = &object["metadata"];
    let text = |field: &str| meta[field].as_str().unwrap_or_default().to_owned();
    InvolvedObject {
        kind: kind.name().to_owned(),
        namespace: text("namespace"),
        name: text("name"),
        uid: text("uid"),
    }
}

async fn run(
    sink: impl EventSink,
    source: EventSource,
    policy: FoldPolicy,
    mut received: mpsc::Receiver<Happening>,
) {
    let mut folder = Folder::new(policy);
    let mut open = true;
    while open || folder.next_due().is_some() {
        let wake = folder
            .next_due()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + FORGET_AFTER);
        tokio::select! {
            happening = received.recv(), if open => match happening {
                Some(happening) => {
                    let name = event_name(&happening.involved, &happening.reason, &source);
                    folder.record(&name, happening, Instant::now());
                }
                // The last clone is gone: write what is pending, at once.
                None => open = false,
            },
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        let due = if open {
            folder.due(now)
        } else {
            folder.drain()
        };
        for flush in due {
            match write(&sink, &source, &flush.name, flush.count, &flush.latest).await {
                Ok(()) => {}
                // Such as an Event about a pod deleted meanwhile: retrying
                // would only spend the pace other Events need.
                Err(e @ SinkError::Refused(_)) => {
                    tracing::debug!("Event {} dropped: {e}", flush.name);
                }
                Err(e) => {
                    tracing::warn!("cannot write Event {}: {e}", flush.name);
                    if open {
                        folder.retry(flush, Instant::now());
                    }
                }
            }
        }
        if let Some(before) = now.checked_sub(FORGET_AFTER) {
            folder.forget_idle(before);
        }
    }
}

/// Writes `count` more happenings of Event `name`: creates it, or adds to
/// the stored one's count (which another process, or this one before a
/// restart, may have written).
async fn write(
    sink: &impl EventSink,
    source: &EventSource,
    name: &str,
    count: u64,
    latest: &Happening,
) -> Result<(), SinkError> {
    let namespace = if latest.involved.namespace.is_empty() {
        "default"
    } else {
        latest.involved.namespace.as_str()
    };
    let at = latest.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let event = json!({
        "apiVersion": skiff_api::API_VERSION,
        "kind": "Event",
        "metadata": {"name": name, "namespace": namespace},
        "involvedObject": latest.involved,
        "reason": latest.reason,
        "message": latest.message,
        "type": latest.severity,
        "count": count,
        "firstTimestamp": at,
        "lastTimestamp": at,
        "source": source,
    });
    match sink.create(namespace, event.clone()).await {
        Err(SinkError::AlreadyExists) => {}
        other => return other,
    }
    // Stored already: add to it. A conflict means another writer added
    // meanwhile; read again.
    for _ in 0..3 {
        let Some(stored) = sink.get(namespace, name).await? else {
            return match sink.create(namespace, event.clone()).await {
                Err(SinkError::AlreadyExists) => Err(SinkError::Conflict),
                other => other,
            };
        };
        // Only an Event of this very happening is added to: one that took
        // its name about something else is not ours to change.
        let same = ["involvedObject", "reason", "source"]
            .iter()
            .all(|field| stored[field] == event[field]);
        if !same {
            return Err(SinkError::Refused(format!(
                "Event {name} exists about something else"
            )));
        }
        let mut updated = event.clone();
        updated["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
        updated["count"] = json!(stored["count"].as_u64().unwrap_or(1).saturating_add(count));
        if let Some(first) = stored["firstTimestamp"].as_str() {
            updated["firstTimestamp"] = json!(first);
        }
        match sink.replace(namespace, name, updated).await {
            Err(SinkError::Conflict) => continue,
            other => return other,
        }
    }
    Err(SinkError::Conflict)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Refuses Events about `refused`, stores the rest; counts attempts.
    #[derive(Clone, Default)]
    struct Sink {
        attempts: Arc<Mutex<Vec<String>>>,
        refused: String,
    }

    impl EventSink for Sink {
        async fn create(&self, _: &str, event: Value) -> Result<(), SinkError> {
            let about = event["involvedObject"]["name"].as_str().unwrap().to_owned();
            self.attempts.lock().unwrap().push(about.clone());
            if about == self.refused {
                Err(SinkError::Refused("forbidden".into()))
            } else {
                Ok(())
            }
        }
        async fn get(&self, _: &str, _: &str) -> Result<Option<Value>, SinkError> {
            Ok(None)
        }
        async fn replace(&self, _: &str, _: &str, _: Value) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn pod(name: &str) -> InvolvedObject {
        InvolvedObject {
            kind: "Pod".into(),
            namespace: "default".into(),
            name: name.into(),
            uid: "u".into(),
        }
    }

    #[tokio::test]
    async fn a_refused_event_is_dropped_not_retried() {
        let sink = Sink {
            refused: "gone".into(),
            ..Default::default()
        };
        let policy = FoldPolicy {
            first_delay: Duration::from_millis(10),
            ..Default::default()
        };
        let recorder = Recorder::start(sink.clone(), EventSource::default(), policy);
        recorder.emit(pod("gone"), Severity::Normal, "Killing", "stopping");
        // A later Event is written, so the first was tried before it.
        recorder.emit(pod("here"), Severity::Normal, "Started", "started");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sink.attempts.lock().unwrap().contains(&"here".to_owned()) {
            assert!(Instant::now() < deadline, "never written");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Twenty of its retry delays later, it was still tried once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let attempts = sink.attempts.lock().unwrap().clone();
        assert_eq!(
            attempts.iter().filter(|a| *a == "gone").count(),
            1,
            "{attempts:?}"
        );
    }
}
