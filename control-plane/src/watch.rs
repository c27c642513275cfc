//! Watches. One hub per process follows the change log (woken by
//! `LISTEN/NOTIFY`, with a periodic poll as a safety net for notifications
//! lost while reconnecting) and fans changes out in memory. Each watch reads
//! its backlog from the database, then follows the hub, falling back to the
//! database whenever it falls behind. Revisions are gapless and in commit
//! order (see `store::writer`), so "everything after N, in order, once" is
//! just reading forward from N, whichever process serves the watch.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use skiff_api::selector::{FieldSelector, Selector};
use skiff_api::{EventType, Kind, Status, WatchEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, mpsc};

use crate::store::{CHANGE_PAGE_BYTES, Change, ListQuery, Store, StoreError};

/// Changes read from the database per query.
const PAGE: i64 = 500;
/// Changes the hub buffers for slow watches before they must re-read from
/// the database.
const HUB_BUFFER: usize = 8 * 1024;
/// Largest change (object and previous version, as stored) the hub passes
/// on whole; of a larger one it passes only the revision, and each watch
/// reads it from the database. The hub's buffer keeps every slot until it
/// is overwritten, so this bounds what it holds: `HUB_BUFFER` times this
/// (128 MiB), however large the objects written.
const HUB_CHANGE_BYTES: usize = 16 << 10;
/// Large changes the hub keeps whole for the watches that want them (each
/// up to about 2 MiB: an object and its previous version), the latest
/// first: a watch that comes for one still kept shares it instead of
/// reading it again, so a large write costs one read, not one per watch.
const HUB_LARGE_KEPT: usize = 16;
/// Bytes of events (about, as JSON) one watch holds while its client is
/// slow to read them; an event larger than this is held alone. With the
/// page it reads the change log by ([`WATCH_PAGE_BYTES`]), this bounds
/// what a watch costs, however far behind it starts and however large the
/// objects: a few MiB, not its backlog.
const WATCH_BUFFER_BYTES: usize = 1 << 20;
/// Events one watch holds at most, however small.
const WATCH_BUFFER_EVENTS: usize = 256;
/// Bytes of stored objects a watch reads from the change log at a time
/// when catching up (the hub, one reader for every watch, reads larger
/// pages: [`CHANGE_PAGE_BYTES`]).
const WATCH_PAGE_BYTES: usize = 1 << 20;
/// How often the hub polls even without a notification.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Pause before reconnecting a lost `LISTEN` connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// The in-process fan-out of the change log. It follows the log while any
/// handle to it is held; when the last goes, following stops and the
/// watches fed by it end.
#[derive(Clone)]
pub struct WatchHub {
    events: broadcast::Sender<Arc<Live>>,
    /// Open API watches per caller (a token's hash).
    open: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    metrics: Arc<crate::metrics::Metrics>,
    _following: Arc<Following>,
}

/// One open watch counted against its caller, until dropped.
pub struct WatchPermit {
    open: Arc<Mutex<HashMap<[u8; 32], usize>>>,
    caller: [u8; 32],
    metrics: Arc<crate::metrics::Metrics>,
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        self.metrics.watch_closed();
        let mut open = self.open.lock().expect("open watches lock");
        if let Some(count) = open.get_mut(&self.caller) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.caller);
            }
        }
    }
}

/// The task following the change log, stopped when dropped.
struct Following(tokio::task::AbortHandle);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl WatchHub {
    /// Starts following the change log from its current end.
    pub fn start(store: Store) -> Self {
        let (events, _) = broadcast::channel(HUB_BUFFER);
        let metrics = store.metrics().clone();
        let following = tokio::spawn(follow(store, events.clone())).abort_handle();
        Self {
            events,
            open: Arc::default(),
            metrics,
            _following: Arc::new(Following(following)),
        }
    }

    /// Counts a new watch against `caller`, unless it already has `max`
    /// open; then says how many it has.
    pub fn admit(&self, caller: [u8; 32], max: usize) -> Result<WatchPermit, usize> {
        let mut open = self.open.lock().expect("open watches lock");
        let count = open.entry(caller).or_default();
        if *count >= max {
            return Err(*count);
        }
        *count += 1;
        self.metrics.watch_opened();
        Ok(WatchPermit {
            open: self.open.clone(),
            caller,
            metrics: self.metrics.clone(),
        })
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Live>> {
        self.events.subscribe()
    }
}

/// A change as the hub passes it on.
enum Live {
    Change(Change),
    /// A change too large to buffer: the watches it concerns take it from
    /// the hub's few kept whole (`change`, while it is kept) or read it
    /// from the database; the others pass it by. The buffer holds only the
    /// weak reference.
    Large {
        revision: i64,
        kind: Kind,
        namespace: String,
        change: std::sync::Weak<Change>,
    },
}

impl Live {
    /// The change as the hub passes it on; a large one is added to `kept`
    /// (the latest [`HUB_LARGE_KEPT`]).
    fn of(change: Change, kept: &mut std::collections::VecDeque<Arc<Change>>) -> Live {
        if change.bytes <= HUB_CHANGE_BYTES {
            return Live::Change(change);
        }
        let (revision, kind, namespace) = (change.revision, change.kind, change.namespace.clone());
        let change = Arc::new(change);
        let weak = Arc::downgrade(&change);
        if kept.len() == HUB_LARGE_KEPT {
            kept.pop_front();
        }
        kept.push_back(change);
        Live::Large {
            revision,
            kind,
            namespace,
            change: weak,
        }
    }

    fn revision(&self) -> i64 {
        match self {
            Live::Change(change) => change.revision,
            Live::Large { revision, .. } => *revision,
        }
    }
}

async fn follow(store: Store, events: broadcast::Sender<Arc<Live>>) {
    let mut kept = std::collections::VecDeque::with_capacity(HUB_LARGE_KEPT);
    let mut cursor = loop {
        match store.current_revision().await {
            Ok(revision) => break revision,
            Err(_) => tokio::time::sleep(RECONNECT_PAUSE).await,
        }
    };
    loop {
        let mut listener = match store.listen_changes().await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!("cannot listen for changes: {e}");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        loop {
            cursor = catch_up(&store, cursor, &events, &mut kept).await;
            tokio::select! {
                notification = listener.recv() => match notification {
                    Ok(()) => {}
                    // The connection was lost; reconnect (and poll, since
                    // notifications in the gap are gone).
                    Err(_) => break,
                },
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
}

/// Broadcasts every change after `cursor`; returns the new cursor.
async fn catch_up(
    store: &Store,
    mut cursor: i64,
    events: &broadcast::Sender<Arc<Live>>,
    kept: &mut std::collections::VecDeque<Arc<Change>>,
) -> i64 {
    loop {
        match store.changes_after(cursor, PAGE, CHANGE_PAGE_BYTES).await {
            Ok(page) => {
                for change in page.changes {
                    // No subscribers is fine: nobody is watching.
                    let _ = events.send(Arc::new(Live::of(change, kept)));
                }
                cursor = page.last.unwrap_or(cursor);
                if !page.more {
                    return cursor;
                }
            }
            Err(StoreError::Compacted { compacted, .. }) => {
                // The hub itself fell behind the retained log (the process
                // was stalled for long); watches detect their own gaps.
                tracing::warn!("change log compacted past the hub; skipping to {compacted}");
                cursor = compacted;
            }
            Err(_) => return cursor,
        }
    }
}

/// What a watch follows.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub kind: Kind,
    /// `None` watches every namespace.
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: FieldSelector,
    /// Resume after this revision; `None` starts with the current objects
    /// (as ADDED events) and continues from there.
    pub from: Option<i64>,
    pub bookmark_interval: Duration,
    pub timeout: Duration,
}

impl WatchRequest {
    /// Every object of `kind` in every namespace, after revision `from`, for
    /// the control plane's own loops: no bookmarks, and no end of its own.
    pub fn everything(kind: Kind, from: i64) -> Self {
        Self {
            kind,
            namespace: None,
            labels: Selector::everything(),
            fields: FieldSelector::default(),
            from: Some(from),
            bookmark_interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// Starts a watch and returns its events. The watch ends when the receiver
/// is dropped, at the timeout, or after an ERROR event.
pub fn start(store: Store, hub: &WatchHub, request: WatchRequest) -> Events {
    let (lines, events) = channel();
    // Subscribe before reading the backlog so that nothing committed in
    // between is missed (duplicates are skipped by revision).
    let live = hub.subscribe();
    tokio::spawn(async move {
        let mut watch = Watch {
            store,
            request,
            lines,
            cursor: 0,
        };
        let deadline = tokio::time::sleep(watch.request.timeout);
        tokio::pin!(deadline);
        tokio::select! {
            _ = watch.run(live) => {}
            () = &mut deadline => {}
        }
    });
    events
}

/// A watch's buffer: bounded by [`WATCH_BUFFER_EVENTS`] and, about, by
/// [`WATCH_BUFFER_BYTES`].
fn channel() -> (Outbox, Events) {
    let (lines, receiver) = mpsc::channel(WATCH_BUFFER_EVENTS);
    let budget = Arc::new(Semaphore::new(WATCH_BUFFER_BYTES));
    (Outbox { lines, budget }, Events { receiver })
}

/// The sending side of a watch's buffer.
struct Outbox {
    lines: mpsc::Sender<Held>,
    /// Bytes the events the client has yet to read may take.
    budget: Arc<Semaphore>,
}

impl Outbox {
    /// Sends an event once the client has read enough of those before it
    /// that this one fits the budget; ends if the client goes meanwhile.
    async fn send(&self, event: WatchEvent<Value>) -> Result<(), Ended> {
        // At most the whole budget: an event larger than it waits for the
        // buffer to empty and is then held alone.
        let cost = json_bytes(&event.object).clamp(1, WATCH_BUFFER_BYTES);
        let cost = u32::try_from(cost).expect("the buffer budget fits in u32");
        let budget = tokio::select! {
            budget = self.budget.clone().acquire_many_owned(cost) => {
                budget.expect("the budget is never closed")
            }
            () = self.lines.closed() => return Err(Ended),
        };
        self.lines
            .send(Held {
                event,
                _budget: budget,
            })
            .await
            .map_err(|_| Ended)
    }

    fn is_closed(&self) -> bool {
        self.lines.is_closed()
    }

    async fn closed(&self) {
        self.lines.closed().await;
    }
}

/// The events of one watch, as its client reads them.
pub struct Events {
    receiver: mpsc::Receiver<Held>,
}

/// An event with the part of its watch's buffer budget it takes, given
/// back when the event is dropped: a consumer that passes events on (as
/// [`follow_kinds`] does) keeps them counted until they are used.
struct Held {
    event: WatchEvent<Value>,
    _budget: OwnedSemaphorePermit,
}

impl Events {
    /// The next event; `None` once the watch has ended.
    pub async fn recv(&mut self) -> Option<WatchEvent<Value>> {
        self.receiver.recv().await.map(|held| held.event)
    }
}

/// What an event costs to hold, about: its length as JSON (escapes aside).
/// Walking the tree is cheap next to serialising it, and strings, where
/// the bytes of a large object are, count by their length.
fn json_bytes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => 8,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|v| json_bytes(v) + 1).sum::<usize>(),
        Value::Object(fields) => {
            2 + fields
                .iter()
                .map(|(k, v)| k.len() + 4 + json_bytes(v))
                .sum::<usize>()
        }
    }
}

/// The client went away or the watch must end.
struct Ended;

struct Watch {
    store: Store,
    request: WatchRequest,
    lines: Outbox,
    /// Every change up to here has been considered.
    cursor: i64,
}

impl Watch {
    async fn run(&mut self, mut live: broadcast::Receiver<Arc<Live>>) -> Result<(), Ended> {
        self.cursor = match self.request.from {
            Some(revision) => revision,
            None => self.send_current_objects().await?,
        };
        let mut bookmarks = tokio::time::interval(self.request.bookmark_interval);
        bookmarks.tick().await;
        loop {
            self.catch_up_from_database().await?;
            loop {
                tokio::select! {
                    received = live.recv() => match received {
                        Ok(live) if live.revision() <= self.cursor => {}
                        Ok(live) => match &*live {
                            Live::Change(change) if change.revision == self.cursor + 1 => {
                                self.consider(change).await?;
                            }
                            Live::Large { revision, kind, namespace, change }
                                if *revision == self.cursor + 1 =>
                            {
                                if !self.concerns(*kind, namespace) {
                                    self.cursor = *revision;
                                } else if let Some(change) = change.upgrade() {
                                    self.consider(&change).await?;
                                } else {
                                    // No longer kept: read it from the database.
                                    break;
                                }
                            }
                            // A gap (should not happen): read from the
                            // database.
                            _ => break,
                        },
                        // A lagging receiver: re-read from the database.
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => return Err(Ended),
                    },
                    _ = bookmarks.tick() => self.send_bookmark().await?,
                    () = self.lines.closed() => return Err(Ended),
                }
            }
        }
    }

    async fn send_current_objects(&mut self) -> Result<i64, Ended> {
        let mut after = None;
        loop {
            let page = self
                .store
                .list(
                    self.request.kind,
                    ListQuery {
                        namespace: self.request.namespace.as_deref(),
                        labels: Some(&self.request.labels),
                        fields: Some(&self.request.fields),
                        limit: Some(PAGE),
                        after,
                        json: &[],
                    },
                )
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e) => return Err(self.fail(503, "ServiceUnavailable", &e.to_string()).await),
            };
            for object in page.items {
                self.send(EventType::Added, object).await?;
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(page.revision),
            }
        }
    }

    async fn catch_up_from_database(&mut self) -> Result<(), Ended> {
        loop {
            // A client gone mid catch-up (most changes concern other
            // watches, so nothing is sent that would notice) ends it here.
            if self.lines.is_closed() {
                return Err(Ended);
            }
            let page = match self
                .store
                .changes_after(self.cursor, PAGE, WATCH_PAGE_BYTES)
                .await
            {
                Ok(page) => page,
                Err(e @ StoreError::Compacted { .. }) => {
                    return Err(self.fail(410, "Gone", &e.to_string()).await);
                }
                Err(e) => return Err(self.fail(503, "ServiceUnavailable", &e.to_string()).await),
            };
            // Each page is sent on before the next is read: what a watch
            // from an old revision holds is one page, not the backlog.
            for change in &page.changes {
                self.consider(change).await?;
            }
            self.cursor = page.last.unwrap_or(self.cursor);
            if !page.more {
                return Ok(());
            }
        }
    }

    /// Whether a change of `kind` in `namespace` may concern this watch.
    fn concerns(&self, kind: Kind, namespace: &str) -> bool {
        kind == self.request.kind
            && self
                .request
                .namespace
                .as_deref()
                .is_none_or(|wanted| wanted == namespace)
    }

    /// Sends the change if it concerns this watch, as the event a client
    /// following the selectors should see: an object entering the selection
    /// is ADDED, one leaving it DELETED.
    async fn consider(&mut self, change: &Change) -> Result<(), Ended> {
        self.cursor = change.revision;
        if !self.concerns(change.kind, &change.namespace) {
            return Ok(());
        }
        let selected = |object: &Value| {
            let labels = object["metadata"]
                .get("labels")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
                .unwrap_or_default();
            self.request.labels.matches(&labels) && self.request.fields.matches(object)
        };
        let now = selected(&change.object);
        let before = change.previous.as_ref().is_some_and(selected);
        let event = match (change.event_type, before, now) {
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Deleted, _, true) => EventType::Deleted,
            _ => return Ok(()),
        };
        self.send(event, change.object.clone()).await
    }

    async fn send_bookmark(&mut self) -> Result<(), Ended> {
        let object = json!({
            "apiVersion": skiff_api::API_VERSION,
            "kind": self.request.kind.name(),
            "metadata": {"resourceVersion": self.cursor.to_string()},
        });
        self.send(EventType::Bookmark, object).await
    }

    async fn send(&self, event_type: EventType, object: Value) -> Result<(), Ended> {
        self.lines.send(WatchEvent { event_type, object }).await
    }

    /// Sends an ERROR event and ends the watch.
    async fn fail(&self, code: u16, reason: &str, message: &str) -> Ended {
        let status =
            serde_json::to_value(Status::failure(code, reason, message)).expect("serialises");
        let _ = self.send(EventType::Error, status).await;
        Ended
    }
}

/// Every change to objects of `kinds`, in every namespace, after revision
/// `from`, merged into one channel for a controller. The watches stop when
/// the returned set is dropped; the channel closes if any of them ends.
pub fn follow_kinds(
    store: &Store,
    hub: &WatchHub,
    kinds: &[Kind],
    from: i64,
) -> (tokio::task::JoinSet<()>, KindEvents) {
    // Each event keeps its budget until the controller takes it, so what
    // waits here is bounded by bytes per kind, not only by this count.
    let (events, receiver) = mpsc::channel(1024);
    let mut watches = tokio::task::JoinSet::new();
    for &kind in kinds {
        let mut stream = start(store.clone(), hub, WatchRequest::everything(kind, from));
        let events = events.clone();
        watches.spawn(async move {
            while let Some(held) = stream.receiver.recv().await {
                if events.send((kind, held)).await.is_err() {
                    return;
                }
            }
        });
    }
    (watches, KindEvents { receiver })
}

/// The merged events of [`follow_kinds`].
pub struct KindEvents {
    receiver: mpsc::Receiver<(Kind, Held)>,
}

impl KindEvents {
    /// The next event; `None` once a watch has ended.
    pub async fn recv(&mut self) -> Option<(Kind, WatchEvent<Value>)> {
        let (kind, held) = self.receiver.recv().await?;
        Some((kind, held.event))
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Result<(Kind, WatchEvent<Value>), mpsc::error::TryRecvError> {
        let (kind, held) = self.receiver.try_recv()?;
        Ok((kind, held.event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn event(bytes: usize) -> WatchEvent<Value> {
        WatchEvent {
            event_type: EventType::Added,
            object: json!({"data": {"blob": "x".repeat(bytes)}}),
        }
    }

    #[tokio::test]
    async fn a_watch_holds_events_up_to_its_byte_budget() {
        let (outbox, mut events) = channel();
        // Three events of 40% of the budget: two fit, the third waits for
        // the client to read one.
        let size = WATCH_BUFFER_BYTES * 2 / 5;
        outbox.send(event(size)).await.map_err(|_| ()).unwrap();
        outbox.send(event(size)).await.map_err(|_| ()).unwrap();
        let mut third = std::pin::pin!(outbox.send(event(size)));
        assert!(
            third.as_mut().now_or_never().is_none(),
            "held past the budget"
        );
        assert!(events.recv().await.is_some());
        assert!(third.await.is_ok(), "fits once one was read");
        // An event larger than the whole budget is held alone.
        let (outbox, mut events) = channel();
        outbox.send(event(16)).await.map_err(|_| ()).unwrap();
        let mut huge = std::pin::pin!(outbox.send(event(WATCH_BUFFER_BYTES * 3)));
        assert!(
            huge.as_mut().now_or_never().is_none(),
            "waits for the buffer to empty"
        );
        assert!(events.recv().await.is_some());
        assert!(huge.await.is_ok());
        // Many small events are bounded by count.
        let (outbox, _events) = channel();
        for _ in 0..WATCH_BUFFER_EVENTS {
            outbox.send(event(0)).await.map_err(|_| ()).unwrap();
        }
        assert!(outbox.send(event(0)).now_or_never().is_none());
    }

    #[tokio::test]
    async fn a_send_waiting_for_budget_ends_when_the_client_goes() {
        let (outbox, events) = channel();
        outbox
            .send(event(WATCH_BUFFER_BYTES))
            .await
            .map_err(|_| ())
            .unwrap();
        let waiting = tokio::spawn(async move { outbox.send(event(16)).await.is_err() });
        drop(events);
        assert!(waiting.await.unwrap(), "ends instead of waiting for budget");
    }

    #[test]
    fn json_bytes_is_about_the_serialised_length() {
        for value in [
            json!(null),
            json!({"a": "x".repeat(1000), "b": [1, 2, {"c": true}], "d": {}}),
            json!({"metadata": {"name": "web", "labels": {"app": "web"}}, "data": {"k": "v".repeat(100_000)}}),
        ] {
            let exact = serde_json::to_vec(&value).unwrap().len();
            let estimate = json_bytes(&value);
            assert!(
                estimate >= exact / 2 && estimate <= exact * 2 + 16,
                "{estimate} for {exact} bytes: {value}"
            );
        }
        // Large objects, where the budget matters, are counted closely.
        let large = json!({"data": {"blob": "x".repeat(1 << 20)}});
        let exact = serde_json::to_vec(&large).unwrap().len();
        assert!(json_bytes(&large).abs_diff(exact) < 64);
    }
}
