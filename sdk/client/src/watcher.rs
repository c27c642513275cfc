//! A watcher: the current objects of a kind, then every change to them, for
//! as long as the stream is polled. It lists, watches from the list's
//! revision, resumes from the last revision it saw when a watch ends or
//! breaks, and lists again when that revision is gone (410, or an ERROR
//! event). The server sends BOOKMARK events on every watch unasked; they move
//! the revision forward past changes the selectors filtered out, so a resume
//! after a quiet spell is not needlessly a relist.
//!
//! The watcher is a state machine in the manner of kube-rs's
//! `kube_runtime::watcher`: [`transition`] decides, from what one request
//! gave, the next [`State`] and what to yield; the driver only makes the
//! requests the state asks for.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use serde_json::Value;
use skiff_api::{EventType, Kind, List, WatchEvent};

use crate::{Client, ClientError, ListOptions, Result, WatchOptions};

/// Pause before a request again after one failed (the server is
/// unreachable or refusing), so a watcher never spins.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What a watcher follows.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `None` follows every namespace.
    pub namespace: Option<String>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
}

/// What a watcher yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The full list, after a (re)list: whatever is not in it is gone.
    /// `revision` is the list's: what it shows is the state then, and the
    /// changes yielded next are those after it.
    Restarted {
        items: Vec<Value>,
        revision: String,
    },
    Added(Value),
    Modified(Value),
    Deleted(Value),
}

/// Where a watcher is between two requests.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Nothing known, at the start or once the revision is gone: list next.
    Empty,
    /// Everything up to `revision` is known: open a watch from it next.
    InitListed { revision: String },
    /// A watch is open; everything up to `revision` is known.
    Watching { revision: String },
}

/// What the request a state asked for gave, with that state's revision.
#[derive(Debug)]
enum Step {
    /// From `Empty`: the list.
    Listed(Result<List<Value>>),
    /// From `InitListed`: whether the watch opened.
    WatchOpened {
        revision: String,
        opened: Result<()>,
    },
    /// From `Watching`: the next line of the watch, `None` when it ended.
    Received {
        revision: String,
        event: Option<Result<WatchEvent<Value>>>,
    },
}

/// The state after a step, what to yield, and whether to wait
/// [`RETRY_PAUSE`] before the next request.
#[derive(Debug)]
struct Next {
    state: State,
    output: Option<Result<Event>>,
    pause: bool,
}

impl Next {
    fn to(state: State) -> Self {
        Self {
            state,
            output: None,
            pause: false,
        }
    }

    fn yielding(mut self, event: Event) -> Self {
        self.output = Some(Ok(event));
        self
    }

    /// A failed request is reported, and tried again after the pause.
    fn failed(state: State, error: ClientError) -> Self {
        Self {
            state,
            output: Some(Err(error)),
            pause: true,
        }
    }
}

/// The pure transition of the watcher's state machine.
fn transition(step: Step) -> Next {
    match step {
        Step::Listed(Ok(list)) => Next::to(State::InitListed {
            revision: list.metadata.resource_version.clone(),
        })
        .yielding(Event::Restarted {
            items: list.items,
            revision: list.metadata.resource_version,
        }),
        Step::Listed(Err(error)) => Next::failed(State::Empty, error),
        Step::WatchOpened {
            revision,
            opened: Ok(()),
        } => Next::to(State::Watching { revision }),
        Step::WatchOpened {
            opened: Err(error), ..
        } if error.code() == Some(410) => Next::to(State::Empty),
        Step::WatchOpened {
            revision,
            opened: Err(error),
        } => Next::failed(State::InitListed { revision }, error),
        Step::Received {
            revision,
            event: Some(Ok(event)),
        } => {
            let revision = match event.object["metadata"]["resourceVersion"].as_str() {
                Some(seen) => seen.to_owned(),
                None => revision,
            };
            let watching = Next::to(State::Watching { revision });
            match event.event_type {
                EventType::Added => watching.yielding(Event::Added(event.object)),
                EventType::Modified => watching.yielding(Event::Modified(event.object)),
                EventType::Deleted => watching.yielding(Event::Deleted(event.object)),
                EventType::Bookmark => watching,
                // The server ends the watch after an ERROR; whatever it was
                // (410 when the log was compacted under a slow watch), a
                // fresh list is the way back to a known state.
                EventType::Error => Next::to(State::Empty),
            }
        }
        // A broken connection is reported; resuming at once costs one
        // request, and that request pauses if the server is really gone.
        Step::Received {
            revision,
            event: Some(Err(error)),
        } => Next {
            state: State::InitListed { revision },
            output: Some(Err(error)),
            pause: false,
        },
        Step::Received {
            revision,
            event: None,
        } => Next::to(State::InitListed { revision }),
    }
}

/// Follows `kind`: yields [`Event::Restarted`] with the full list first and
/// after every relist, then the changes. Errors are yielded as they happen
/// and the watcher carries on (after [`RETRY_PAUSE`] when a request
/// failed); a consumer that gives up on an error simply drops the stream.
pub fn watcher(
    client: Client,
    kind: Kind,
    config: Config,
) -> impl Stream<Item = Result<Event>> + Send + 'static {
    let driver = Driver {
        target: Target {
            client,
            kind,
            config,
        },
        state: State::Empty,
        events: None,
        pause: false,
    };
    futures::stream::unfold(driver, |mut driver| async move {
        let item = driver.next().await;
        Some((item, driver))
    })
}

struct Driver {
    target: Target,
    state: State,
    /// The open watch while `Watching`.
    events: Option<BoxStream<'static, Result<WatchEvent<Value>>>>,
    pause: bool,
}

impl Driver {
    async fn next(&mut self) -> Result<Event> {
        loop {
            if std::mem::take(&mut self.pause) {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let step = match &self.state {
                State::Empty => Step::Listed(self.target.list().await),
                State::InitListed { revision } => {
                    let opened = match self.target.watch(revision).await {
                        Ok(events) => {
                            self.events = Some(events);
                            Ok(())
                        }
                        Err(error) => Err(error),
                    };
                    Step::WatchOpened {
                        revision: revision.clone(),
                        opened,
                    }
                }
                State::Watching { revision } => Step::Received {
                    revision: revision.clone(),
                    event: match &mut self.events {
                        Some(events) => events.next().await,
                        None => None,
                    },
                },
            };
            let next = transition(step);
            if !matches!(next.state, State::Watching { .. }) {
                self.events = None;
            }
            self.state = next.state;
            self.pause = next.pause;
            if let Some(output) = next.output {
                return output;
            }
        }
    }
}

/// What the requests are about.
struct Target {
    client: Client,
    kind: Kind,
    config: Config,
}

impl Target {
    async fn list(&self) -> Result<List<Value>> {
        let options = ListOptions {
            label_selector: self.config.label_selector.clone(),
            field_selector: self.config.field_selector.clone(),
            ..Default::default()
        };
        self.client
            .list_all(self.kind, self.config.namespace.as_deref(), &options)
            .await
    }

    async fn watch(&self, revision: &str) -> Result<BoxStream<'static, Result<WatchEvent<Value>>>> {
        let options = WatchOptions {
            resource_version: Some(revision.to_owned()),
            label_selector: self.config.label_selector.clone(),
            field_selector: self.config.field_selector.clone(),
            timeout: None,
        };
        let events = self
            .client
            .watch(self.kind, self.config.namespace.as_deref(), &options)
            .await?;
        Ok(events.boxed())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use skiff_api::{ListMeta, Status};

    use super::*;

    fn empty() -> State {
        State::Empty
    }

    fn listed(revision: &str) -> State {
        State::InitListed {
            revision: revision.into(),
        }
    }

    fn watching(revision: &str) -> State {
        State::Watching {
            revision: revision.into(),
        }
    }

    fn list(revision: &str, names: &[&str]) -> Result<List<Value>> {
        Ok(List {
            api_version: skiff_api::API_VERSION.into(),
            kind: "ConfigMapList".into(),
            metadata: ListMeta {
                resource_version: revision.into(),
                continue_token: None,
            },
            items: names.iter().map(|n| object(n, "1")).collect(),
        })
    }

    fn object(name: &str, revision: &str) -> Value {
        json!({"metadata": {"name": name, "resourceVersion": revision}})
    }

    fn api(code: u16) -> ClientError {
        ClientError::Api(Box::new(Status::failure(code, "Reason", "message")))
    }

    fn unreachable() -> ClientError {
        ClientError::Connect {
            server: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        }
    }

    fn received(revision: &str, event_type: EventType, object: Value) -> Step {
        Step::Received {
            revision: revision.into(),
            event: Some(Ok(WatchEvent { event_type, object })),
        }
    }

    fn bookmark(revision: &str) -> Value {
        json!({"kind": "ConfigMap", "metadata": {"resourceVersion": revision}})
    }

    /// What was yielded, in short: the event and the names it carries, or
    /// the error's code.
    fn shown(output: &Option<Result<Event>>) -> String {
        let name = |o: &Value| o["metadata"]["name"].as_str().unwrap_or("?").to_owned();
        match output {
            None => "-".into(),
            Some(Ok(Event::Restarted { items, revision })) => {
                let names: Vec<String> = items.iter().map(name).collect();
                format!("Restarted[{}]@{revision}", names.join(","))
            }
            Some(Ok(Event::Added(o))) => format!("Added {}", name(o)),
            Some(Ok(Event::Modified(o))) => format!("Modified {}", name(o)),
            Some(Ok(Event::Deleted(o))) => format!("Deleted {}", name(o)),
            Some(Err(e)) => format!("Err {}", e.code().unwrap_or(0)),
        }
    }

    #[test]
    fn transitions() {
        let table: Vec<(&str, Step, State, &str, bool)> = vec![
            (
                "a list restarts from its revision",
                Step::Listed(list("7", &["a", "b"])),
                listed("7"),
                "Restarted[a,b]@7",
                false,
            ),
            (
                "an empty list restarts with nothing",
                Step::Listed(list("3", &[])),
                listed("3"),
                "Restarted[]@3",
                false,
            ),
            (
                "a failed list is reported and retried after a pause",
                Step::Listed(Err(unreachable())),
                empty(),
                "Err 0",
                true,
            ),
            (
                "an opened watch is followed",
                Step::WatchOpened {
                    revision: "7".into(),
                    opened: Ok(()),
                },
                watching("7"),
                "-",
                false,
            ),
            (
                "a compacted revision is listed again at once",
                Step::WatchOpened {
                    revision: "7".into(),
                    opened: Err(api(410)),
                },
                empty(),
                "-",
                false,
            ),
            (
                "an unreachable server keeps the revision and pauses",
                Step::WatchOpened {
                    revision: "7".into(),
                    opened: Err(unreachable()),
                },
                listed("7"),
                "Err 0",
                true,
            ),
            (
                "a refused watch keeps the revision and pauses",
                Step::WatchOpened {
                    revision: "7".into(),
                    opened: Err(api(503)),
                },
                listed("7"),
                "Err 503",
                true,
            ),
            (
                "ADDED moves the revision",
                received("7", EventType::Added, object("c", "8")),
                watching("8"),
                "Added c",
                false,
            ),
            (
                "MODIFIED moves the revision",
                received("8", EventType::Modified, object("c", "9")),
                watching("9"),
                "Modified c",
                false,
            ),
            (
                "DELETED moves the revision",
                received("9", EventType::Deleted, object("c", "10")),
                watching("10"),
                "Deleted c",
                false,
            ),
            (
                "a BOOKMARK moves the revision and yields nothing",
                received("10", EventType::Bookmark, bookmark("25")),
                watching("25"),
                "-",
                false,
            ),
            (
                "an object without a revision keeps the last one",
                received("10", EventType::Added, json!({"metadata": {"name": "d"}})),
                watching("10"),
                "Added d",
                false,
            ),
            (
                "an ERROR event lists again at once",
                received(
                    "10",
                    EventType::Error,
                    serde_json::to_value(Status::failure(410, "Gone", "compacted")).unwrap(),
                ),
                empty(),
                "-",
                false,
            ),
            (
                "a watch the server ended resumes from the last revision",
                Step::Received {
                    revision: "25".into(),
                    event: None,
                },
                listed("25"),
                "-",
                false,
            ),
            (
                "a broken watch is reported and resumed at once",
                Step::Received {
                    revision: "25".into(),
                    event: Some(Err(unreachable())),
                },
                listed("25"),
                "Err 0",
                false,
            ),
        ];
        for (what, step, state, output, pause) in table {
            let next = transition(step);
            assert_eq!(
                (&next.state, shown(&next.output).as_str(), next.pause),
                (&state, output, pause),
                "{what}"
            );
        }
    }
}
