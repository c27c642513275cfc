//! The Events the control plane tells (the scheduler, the controllers),
//! written straight to the store, and their expiry.

use std::time::Duration;

use serde_json::Value;
use skiff_api::Kind;
use skiff_api::kinds::event::{EventSource, FoldPolicy};
use skiff_client::events::{EventSink, Recorder, SinkError};

use crate::store::{ObjectKey, Part, Store, StoreError, Write};

/// How long Events are kept after they last happened, unless told
/// otherwise (`--event-ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// Writes Events as the API would store them, without a round trip.
struct StoreSink(Store);

fn admitted(event: Value) -> Result<Value, SinkError> {
    skiff_api::admit(Kind::Event, event).map_err(|e| SinkError::Refused(e.to_string()))
}

impl From<StoreError> for SinkError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists(_) => SinkError::AlreadyExists,
            StoreError::Conflict { .. } => SinkError::Conflict,
            StoreError::NotFound(_)
            | StoreError::NamespaceNotFound(_)
            | StoreError::Invalid { .. }
            | StoreError::UidMismatch(_) => SinkError::Refused(e.to_string()),
            other => SinkError::Other(other.to_string()),
        }
    }
}

impl EventSink for StoreSink {
    async fn create(&self, namespace: &str, event: Value) -> Result<(), SinkError> {
        let event = admitted(event)?;
        let name = event["metadata"]["name"].as_str().unwrap_or_default();
        let key = ObjectKey::new(Kind::Event, namespace, name);
        self.0.write(Write::Create { key, object: event }).await?;
        Ok(())
    }

    async fn get(&self, namespace: &str, name: &str) -> Result<Option<Value>, SinkError> {
        Ok(self
            .0
            .get(&ObjectKey::new(Kind::Event, namespace, name))
            .await?)
    }

    async fn replace(&self, namespace: &str, name: &str, event: Value) -> Result<(), SinkError> {
        let expected_revision = event["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok());
        let event = admitted(event)?;
        self.0
            .write(Write::Update {
                key: ObjectKey::new(Kind::Event, namespace, name),
                object: event,
                part: Part::Main,
                expected_revision,
            })
            .await?;
        Ok(())
    }
}

/// A recorder telling Events as `component` (`scheduler`,
/// `deployment-controller`). It writes until dropped.
pub fn recorder(store: &Store, component: &str) -> Recorder {
    Recorder::start(
        StoreSink(store.clone()),
        EventSource {
            component: component.to_owned(),
            host: String::new(),
        },
        FoldPolicy::default(),
    )
}

/// Deletes Events that last happened more than `ttl` ago, checking every
/// tenth of it (at most every minute). Runs while the controllers lead.
pub async fn expire(store: Store, ttl: Duration) -> Result<(), StoreError> {
    let every = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut ticks = tokio::time::interval(every);
    loop {
        ticks.tick().await;
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(ttl).unwrap_or_default();
        let mut expired = Vec::new();
        store
            .scan(Kind::Event, |event| {
                // When it last happened, as told; as stored when the tale
                // does not parse (admission checks only its shape), so no
                // Event outlives its ttl by a date nobody can read.
                let time = |field: &Value| {
                    field
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                };
                let last = time(&event["lastTimestamp"])
                    .or_else(|| time(&event["metadata"]["creationTimestamp"]));
                if last.is_none_or(|t| t < cutoff) {
                    expired.push(event);
                }
            })
            .await?;
        for event in expired {
            let meta = &event["metadata"];
            let key = ObjectKey::new(
                Kind::Event,
                meta["namespace"].as_str().unwrap_or_default(),
                meta["name"].as_str().unwrap_or_default(),
            );
            // Only the Event as read: one that happened again meanwhile
            // has a new resourceVersion and stays.
            let expected_revision = meta["resourceVersion"]
                .as_str()
                .and_then(|rv| rv.parse().ok());
            match store
                .write(Write::Delete {
                    key,
                    expected_revision,
                    expected_uid: None,
                })
                .await
            {
                Ok(_) | Err(StoreError::NotFound(_) | StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
