//! The write path. Every write of this process goes through one task that
//! commits them in batches: each batch is one transaction that first locks
//! the `revision` row, so revisions are handed out in commit order across
//! every control-plane process on the database, and a watcher that has seen
//! revision N has seen everything before it. Batching is what keeps this
//! fast: concurrent writers share one lock acquisition and one commit
//! (fsync) instead of queueing for one each.
//!
//! Writes someone waits on (an activation's, while requests are held at
//! zero) have a lane and a task of their own: their batch begins at once
//! and waits on the revision lock, not for the usual lane's batch in
//! progress to be answered; and the usual lane begins no batch while
//! they are waiting, so they are not behind the writes queued with them.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use skiff_api::Kind;
use sqlx::{PgPool, Postgres, Row, Transaction};
use tokio::sync::{Notify, mpsc, oneshot};

use super::objects::{self, Part};
use super::{ObjectKey, StoreError, db_unavailable, now_rfc3339};
use crate::encryption::{Keyring, SEALED_FIELD};

/// Writes taken into one transaction at most; bounds how long the revision
/// lock is held.
const MAX_BATCH: usize = 128;

/// A write, with its preconditions.
#[derive(Debug, Clone)]
pub enum Write {
    Create {
        key: ObjectKey,
        object: Value,
    },
    Update {
        key: ObjectKey,
        object: Value,
        part: Part,
        /// The resourceVersion the client read; `None` updates whatever is
        /// stored.
        expected_revision: Option<i64>,
    },
    /// An update of `read`, the object as the caller read it from the
    /// store, conditional on its resourceVersion: as `Update` with that
    /// revision expected, but the batch need not read the object again
    /// (a round trip fewer) unless what is stored is not `read` after all.
    UpdateRead {
        key: ObjectKey,
        object: Value,
        part: Part,
        read: Value,
    },
    Delete {
        key: ObjectKey,
        expected_revision: Option<i64>,
        expected_uid: Option<String>,
    },
    /// Writes nothing: refused (a conflict) unless the object is still at
    /// `expected_revision`. In a group, makes the others conditional on
    /// an object they do not change. Answers null.
    Unchanged {
        key: ObjectKey,
        expected_revision: i64,
    },
    /// These writes together or none of them: the first refused (a
    /// conflict, a quota...) undoes those before it and is the answer.
    /// Answers an array of what each wrote. Groups do not nest.
    All(Vec<Write>),
}

impl Write {
    /// The object it writes; a group has none of its own.
    fn key(&self) -> Option<&ObjectKey> {
        match self {
            Write::Create { key, .. }
            | Write::Update { key, .. }
            | Write::UpdateRead { key, .. }
            | Write::Delete { key, .. }
            | Write::Unchanged { key, .. } => Some(key),
            Write::All(_) => None,
        }
    }
}

pub(super) struct Pending {
    pub write: Write,
    pub reply: oneshot::Sender<Result<Value, StoreError>>,
}

/// Where writes are sent: the usual lane, and that of writes someone
/// waits on.
#[derive(Clone)]
pub(super) struct Lanes {
    usual: mpsc::Sender<Pending>,
    urgent: mpsc::Sender<Pending>,
    gate: Arc<UrgentGate>,
}

/// Urgent writes sent and not yet committed, which the usual lane lets go
/// first.
#[derive(Default)]
struct UrgentGate {
    pending: AtomicUsize,
    /// Told when an urgent batch is done.
    done: Notify,
}

impl Lanes {
    /// Queues `pending` in its lane; `false` if the writer is gone.
    pub async fn send(&self, pending: Pending, urgent: bool) -> bool {
        if !urgent {
            return self.usual.send(pending).await.is_ok();
        }
        // Counted before it is queued, so the usual lane cannot begin a
        // batch between the two; uncounted again if it never is (the
        // writer gone, or the caller gone while the lane was full).
        let counted = Counted::new(&self.gate);
        let sent = self.urgent.send(pending).await.is_ok();
        if sent {
            // The urgent lane uncounts it once it is committed.
            std::mem::forget(counted);
        }
        sent
    }
}

/// An urgent write counted as pending until it is queued.
struct Counted<'g>(&'g UrgentGate);

impl<'g> Counted<'g> {
    fn new(gate: &'g UrgentGate) -> Self {
        gate.pending.fetch_add(1, Ordering::SeqCst);
        Self(gate)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

impl UrgentGate {
    /// Waits, if urgent writes are pending, for the urgent lane's next
    /// batch to be done: for one batch only, so that a stream of them
    /// never stops the usual lane, and no longer than `deadline` (a batch
    /// takes no longer), so that it never hangs on a lane gone.
    async fn let_pass(&self, deadline: Duration) {
        let done = self.done.notified();
        tokio::pin!(done);
        done.as_mut().enable();
        if self.pending.load(Ordering::SeqCst) > 0 {
            let _ = tokio::time::timeout(deadline, done).await;
        }
    }

    fn passed(&self, n: usize) {
        self.pending.fetch_sub(n, Ordering::SeqCst);
        self.done.notify_waiters();
    }
}

/// How a batch went wrong as a whole.
enum BatchError {
    /// Before COMMIT was sent: nothing was written; safe to retry.
    BeforeCommit(sqlx::Error),
    /// During COMMIT: the outcome is unknown.
    AtCommit(sqlx::Error),
    /// The database did not answer within the write deadline: the link is
    /// likely gone, so the batch is not retried. `committing` says whether
    /// COMMIT had been sent (then the outcome is unknown).
    Deadline { committing: bool },
}

/// What every batch is committed with.
#[derive(Clone)]
struct Writer {
    pool: PgPool,
    keyring: Arc<Keyring>,
    /// Namespaces a create found quotas in (see `create`).
    quoted: Arc<Mutex<HashSet<String>>>,
    /// How long a batch may take, client side, before it is abandoned.
    deadline: Duration,
    metrics: Arc<crate::metrics::Metrics>,
}

pub(super) fn spawn(
    pool: PgPool,
    keyring: Arc<Keyring>,
    deadline: Duration,
    metrics: Arc<crate::metrics::Metrics>,
) -> Lanes {
    let (usual, usual_queue) = mpsc::channel(4 * MAX_BATCH);
    let (urgent, urgent_queue) = mpsc::channel(MAX_BATCH);
    let writer = Writer {
        pool,
        keyring,
        quoted: Arc::default(),
        deadline,
        metrics,
    };
    let gate = Arc::new(UrgentGate::default());
    tokio::spawn(run(writer.clone(), usual_queue, Lane::Usual(gate.clone())));
    tokio::spawn(run(writer, urgent_queue, Lane::Urgent(gate.clone())));
    Lanes {
        usual,
        urgent,
        gate,
    }
}

/// Which lane a writer task serves.
enum Lane {
    /// Lets urgent writes pending go first.
    Usual(Arc<UrgentGate>),
    /// Tells the usual lane when its writes are done.
    Urgent(Arc<UrgentGate>),
}

async fn run(writer: Writer, mut receiver: mpsc::Receiver<Pending>, lane: Lane) {
    while let Some(first) = receiver.recv().await {
        let mut queued = vec![first];
        while queued.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(pending) => queued.push(pending),
                Err(_) => break,
            }
        }
        match &lane {
            Lane::Usual(gate) => {
                gate.let_pass(writer.deadline).await;
                commit_batch(&writer, queued).await;
            }
            Lane::Urgent(gate) => {
                let n = queued.len();
                commit_batch(&writer, queued).await;
                gate.passed(n);
            }
        }
    }
}

/// Commits `batch` and answers each of its writers.
async fn commit_batch(writer: &Writer, batch: Vec<Pending>) {
    let writes: Vec<&Write> = batch.iter().map(|p| &p.write).collect();
    let started = std::time::Instant::now();
    let results = commit_with_retry(writer, &writes).await;
    writer.metrics.write_batch(writes.len(), started.elapsed());
    for (pending, result) in batch.into_iter().zip(results) {
        let _ = pending.reply.send(result);
    }
}

/// Commits a batch. A batch that fails before committing is retried once
/// (a connection may have gone stale, e.g. after a database restart), then
/// its writes are committed one by one, so that one poisonous write fails
/// alone.
async fn commit_with_retry(writer: &Writer, writes: &[&Write]) -> Vec<Result<Value, StoreError>> {
    let first = match commit(writer, writes).await {
        Ok(results) => return results,
        Err(BatchError::AtCommit(e)) => return unknown_outcome(writes.len(), &e),
        Err(BatchError::Deadline { committing }) => {
            return past_deadline(writer.deadline, writes.len(), committing);
        }
        Err(BatchError::BeforeCommit(e)) => e,
    };
    tracing::warn!("write batch of {} failed, retrying: {first}", writes.len());
    match commit(writer, writes).await {
        Ok(results) => results,
        Err(BatchError::AtCommit(e)) => unknown_outcome(writes.len(), &e),
        Err(BatchError::Deadline { committing }) => {
            past_deadline(writer.deadline, writes.len(), committing)
        }
        Err(BatchError::BeforeCommit(e)) if writes.len() == 1 => vec![Err(db_unavailable(&e))],
        Err(BatchError::BeforeCommit(_)) => {
            let mut results = Vec::with_capacity(writes.len());
            for write in writes {
                results.push(match commit(writer, &[write]).await {
                    Ok(mut one) => one.remove(0),
                    Err(BatchError::BeforeCommit(e) | BatchError::AtCommit(e)) => {
                        Err(db_unavailable(&e))
                    }
                    Err(BatchError::Deadline { committing }) => {
                        past_deadline(writer.deadline, 1, committing).remove(0)
                    }
                });
            }
            results
        }
    }
}

/// Answers for a batch abandoned at the deadline.
fn past_deadline(deadline: Duration, n: usize, committing: bool) -> Vec<Result<Value, StoreError>> {
    tracing::error!(
        "the database did not answer a write batch within {deadline:?}{}",
        if committing { " (during COMMIT)" } else { "" }
    );
    let message = if committing {
        "the write's outcome is unknown; read before retrying"
    } else {
        "the database is unavailable; retry shortly"
    };
    (0..n)
        .map(|_| Err(StoreError::Unavailable(message.into())))
        .collect()
}

fn unknown_outcome(n: usize, error: &sqlx::Error) -> Vec<Result<Value, StoreError>> {
    tracing::error!("commit failed, outcome unknown: {error}");
    (0..n)
        .map(|_| {
            Err(StoreError::Unavailable(
                "the write's outcome is unknown; read before retrying".into(),
            ))
        })
        .collect()
}

/// State of one batch transaction.
struct Batch<'k> {
    keyring: &'k Keyring,
    /// Namespaces a create found quotas in, in this process: their
    /// creates of counted kinds read the quotas at once rather than first
    /// trying the insert that holds only where there are none. A hint
    /// (a wrong one costs a round trip, never an outcome); it grows with
    /// the namespaces that ever had a quota.
    quoted: &'k Mutex<HashSet<String>>,
    /// The last revision handed out.
    revision: i64,
    /// Timestamp for everything written in the batch.
    now: String,
    /// Namespaces seen to exist in this transaction, so a batch of creates
    /// in one namespace checks it once.
    namespaces: HashSet<String>,
    /// Objects as this transaction wrote them (`None`: deleted), so a
    /// later write of the same object in the batch (an activation's
    /// Deployment, then its status) need not read back what it wrote.
    /// Secrets are not kept: they are stored sealed.
    written: HashMap<ObjectKey, Option<Value>>,
}

/// Commits a batch within the writer's deadline. Past it, the connection
/// is closed rather than returned to the pool (it may be mid-statement);
/// if the server still holds the transaction, with the revision lock, it
/// ends it after `idle_in_transaction_session_timeout`.
async fn commit(
    writer: &Writer,
    writes: &[&Write],
) -> Result<Vec<Result<Value, StoreError>>, BatchError> {
    let mut connection = writer
        .pool
        .acquire()
        .await
        .map_err(BatchError::BeforeCommit)?;
    let mut committing = false;
    let batch = commit_on(&mut connection, writer, writes, &mut committing);
    match tokio::time::timeout(writer.deadline, batch).await {
        Ok(outcome) => outcome,
        Err(_) => {
            connection.close_on_drop();
            Err(BatchError::Deadline { committing })
        }
    }
}

async fn commit_on(
    connection: &mut sqlx::PgConnection,
    writer: &Writer,
    writes: &[&Write],
    committing: &mut bool,
) -> Result<Vec<Result<Value, StoreError>>, BatchError> {
    use sqlx::Connection;
    let before = BatchError::BeforeCommit;
    let mut tx = connection.begin().await.map_err(before)?;
    let start: i64 = sqlx::query_scalar("SELECT value FROM revision FOR UPDATE")
        .fetch_one(&mut *tx)
        .await
        .map_err(before)?;
    let mut batch = Batch {
        keyring: &writer.keyring,
        quoted: &writer.quoted,
        revision: start,
        now: now_rfc3339(),
        namespaces: HashSet::new(),
        written: HashMap::new(),
    };
    let mut results = Vec::with_capacity(writes.len());
    let alone = writes.len() == 1;
    for write in writes {
        let result = match write {
            // A group alone in its batch needs no savepoint of its own:
            // refused, the whole transaction is rolled back.
            Write::All(group) if alone => all(&mut tx, group, &mut batch, false).await,
            write => apply(&mut tx, write, &mut batch).await,
        }
        .map_err(before)?;
        if alone && result.is_err() {
            // Nothing of a refused write may stand, and nothing else is
            // in the batch: dropped, the transaction is rolled back
            // (sent with the connection's next use), no COMMIT awaited.
            return Ok(vec![result]);
        }
        results.push(result);
    }
    if batch.revision != start {
        // NOTIFY is delivered at commit, so listeners never see a revision
        // before its changes are readable.
        sqlx::query(
            "WITH r AS (UPDATE revision SET value = $1 RETURNING value)
             SELECT pg_notify($2, value::text) FROM r",
        )
        .bind(batch.revision)
        .bind(super::CHANGES_CHANNEL)
        .execute(&mut *tx)
        .await
        .map_err(before)?;
    }
    *committing = true;
    tx.commit().await.map_err(BatchError::AtCommit)?;
    Ok(results)
}

/// Applies one write inside the batch transaction. Outcomes the client must
/// hear about (not found, conflict...) are the inner `Err`; the outer `Err`
/// is a database failure that aborts the batch.
async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    write: &Write,
    batch: &mut Batch<'_>,
) -> Result<Result<Value, StoreError>, sqlx::Error> {
    match write {
        Write::Create { key, object } => create(tx, key, object.clone(), batch).await,
        Write::Update {
            key,
            object,
            part,
            expected_revision,
        } => update(tx, key, object.clone(), *part, *expected_revision, batch).await,
        Write::UpdateRead {
            key,
            object,
            part,
            read,
        } => update_read(tx, key, object, *part, read, batch).await,
        Write::Delete {
            key,
            expected_revision,
            expected_uid,
        } => delete(tx, key, *expected_revision, expected_uid.as_deref(), batch).await,
        Write::Unchanged {
            key,
            expected_revision,
        } => Ok(load(tx, key, batch).await?.map_or_else(
            || Err(StoreError::NotFound(key.clone())),
            |existing| {
                check_revision(key, &existing, Some(*expected_revision)).map(|()| Value::Null)
            },
        )),
        Write::All(writes) => all(tx, writes, batch, true).await,
    }
}

/// A group of writes, all or none, under a savepoint of the batch's
/// transaction (with `savepoint`): the batch's other writes stand
/// whatever becomes of it. Without one, the caller rolls the transaction
/// back if the group is refused.
async fn all(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[Write],
    batch: &mut Batch<'_>,
    savepoint: bool,
) -> Result<Result<Value, StoreError>, sqlx::Error> {
    if savepoint {
        sqlx::query("SAVEPOINT write_group")
            .execute(&mut **tx)
            .await?;
    }
    let (revision, namespaces) = (batch.revision, batch.namespaces.clone());
    let mut written = Vec::with_capacity(writes.len());
    for write in writes {
        let outcome = match write {
            Write::All(_) => Err(StoreError::Invalid {
                field: "write".into(),
                message: "write groups do not nest".into(),
            }),
            // Boxed: the call is recursive through `apply`.
            write => Box::pin(apply(tx, write, batch)).await?,
        };
        match outcome {
            Ok(object) => written.push(object),
            Err(refused) if !savepoint => return Ok(Err(refused)),
            Err(refused) => {
                sqlx::query("ROLLBACK TO SAVEPOINT write_group")
                    .execute(&mut **tx)
                    .await?;
                batch.revision = revision;
                batch.namespaces = namespaces;
                // What the group wrote is undone: read again if wanted.
                for write in writes {
                    if let Some(key) = write.key() {
                        batch.written.remove(key);
                    }
                }
                return Ok(Err(refused));
            }
        }
    }
    // Not released: a round trip saved (a seventh of a group's), and the
    // next group's savepoint of the same name shadows this one, so its
    // rollback undoes only its own writes. COMMIT ends them all.
    Ok(Ok(Value::Array(written)))
}

/// A created object and its change.
const INSERT: &str = "WITH o AS (
        INSERT INTO objects (kind, namespace, name, uid, resource_version, labels, body)
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1
    )
    INSERT INTO changes (revision, kind, namespace, name, type, object)
    SELECT $5, $1, $2, $3, 'ADDED', $7 FROM o";

/// `INSERT`, adding what the object uses ($8 resources, $9 amounts) to its
/// namespace's quota usage if it was inserted.
const INSERT_COUNTED: &str = "WITH o AS (
        INSERT INTO objects (kind, namespace, name, uid, resource_version, labels, body)
        VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING 1
    ), counted AS (
        UPDATE quota_usage q SET used = q.used + d.amount::numeric
        FROM unnest($8::text[], $9::text[]) AS d(resource, amount)
        WHERE q.namespace = $2 AND q.resource = d.resource AND EXISTS (SELECT 1 FROM o)
    )
    INSERT INTO changes (revision, kind, namespace, name, type, object)
    SELECT $5, $1, $2, $3, 'ADDED', $7 FROM o";

/// `INSERT`, only if the namespace exists (unless `$8`: known to) and
/// has no quotas or quota usage (unless `$9`: the kind is not counted).
const INSERT_AT_ONCE: &str = "WITH o AS (
        INSERT INTO objects (kind, namespace, name, uid, resource_version, labels, body)
        SELECT $1, $2, $3, $4, $5, $6, $7
        WHERE ($8 OR EXISTS (SELECT 1 FROM objects
                             WHERE kind = 'Namespace' AND namespace = '' AND name = $2))
          AND ($9 OR (NOT EXISTS (SELECT 1 FROM objects
                                  WHERE kind = 'ResourceQuota' AND namespace = $2)
                      AND NOT EXISTS (SELECT 1 FROM quota_usage WHERE namespace = $2)))
        ON CONFLICT DO NOTHING RETURNING 1
    )
    INSERT INTO changes (revision, kind, namespace, name, type, object)
    SELECT $5, $1, $2, $3, 'ADDED', $7 FROM o";

async fn create(
    tx: &mut Transaction<'_, Postgres>,
    key: &ObjectKey,
    object: Value,
    batch: &mut Batch<'_>,
) -> Result<Result<Value, StoreError>, sqlx::Error> {
    let counted = skiff_api::kinds::quota::COUNTED.contains(&key.kind);
    // One round trip where it can be: the insert itself checks that the
    // namespace exists and that no quota applies. What it does not
    // insert (a name taken, a namespace missing, quotas to admit
    // against) takes the way below, which says why.
    let quoted = counted && batch.is_quoted(&key.namespace);
    if key.kind != Kind::Route
        && !quoted
        && let Some(created) = create_at_once(tx, key, &object, counted, batch).await?
    {
        return Ok(Ok(created));
    }
    if key.kind.namespaced() && !batch.namespaces.contains(&key.namespace) {
        if load(tx, &ObjectKey::namespace(&key.namespace), batch)
            .await?
            .is_none()
        {
            return Ok(Err(StoreError::NamespaceNotFound(key.namespace.clone())));
        }
        batch.namespaces.insert(key.namespace.clone());
    }
    if key.kind == Kind::Route
        && let Some(claimed) = super::host_claim(&mut **tx, key, &object).await?
    {
        return Ok(Err(claimed));
    }
    let admission = super::quota::admit(tx, key, &object, true).await?;
    if admission.quoted {
        batch.note_quoted(&key.namespace);
    }
    if let Some(refused) = admission.refused {
        return Ok(Err(refused));
    }
    let uid = uuid::Uuid::new_v4();
    let next = batch.revision + 1;
    let object = objects::created(key.kind, object, &uid.to_string(), next, &batch.now);
    let stored = batch.sealed(key.kind, &object);
    // The object and its change in one round trip, and its namespace's
    // quota usage in the same one when that is kept (only under a quota:
    // creates elsewhere do not pay for moving rows they do not have); no
    // row means the name is taken, and then nothing is counted.
    let sql = if admission.kept {
        INSERT_COUNTED
    } else {
        INSERT
    };
    let mut insert = sqlx::query(sql)
        .bind(key.kind.name())
        .bind(&key.namespace)
        .bind(&key.name)
        .bind(uid)
        .bind(next)
        .bind(labels_of(&object))
        .bind(&*stored);
    if admission.kept {
        let (resources, amounts) = super::quota::binds(&super::quota::uses(key.kind, &object));
        insert = insert.bind(resources).bind(amounts);
    }
    let inserted = insert.execute(&mut **tx).await?;
    if inserted.rows_affected() == 0 {
        return Ok(Err(StoreError::AlreadyExists(key.clone())));
    }
    batch.revision = next;
    batch.remember(key, Some(&object));
    Ok(Ok(object))
}

/// `create`'s way in one statement: the object written, or `None` when
/// nothing was (see `INSERT_AT_ONCE`).
async fn create_at_once(
    tx: &mut Transaction<'_, Postgres>,
    key: &ObjectKey,
    object: &Value,
    counted: bool,
    batch: &mut Batch<'_>,
) -> Result<Option<Value>, sqlx::Error> {
    let known = !key.kind.namespaced() || batch.namespaces.contains(&key.namespace);
    let uid = uuid::Uuid::new_v4();
    let next = batch.revision + 1;
    let object = objects::created(key.kind, object.clone(), &uid.to_string(), next, &batch.now);
    let inserted = sqlx::query(INSERT_AT_ONCE)
        .bind(key.kind.name())
        .bind(&key.namespace)
        .bind(&key.name)
        .bind(uid)
        .bind(next)
        .bind(labels_of(&object))
        .bind(&*batch.sealed(key.kind, &object))
        .bind(known)
        .bind(!counted)
        .execute(&mut **tx)
        .await?;
    if inserted.rows_affected() == 0 {
        return Ok(None);
    }
    batch.wrote_in_namespace(key, next, &object);
    Ok(Some(object))
}

async fn update(
    tx: &mut Transaction<'_, Postgres>,
    key: &ObjectKey,
    incoming: Value,
    part: Part,
    expected: Option<i64>,
    batch: &mut Batch<'_>,
) -> Result<Result<Value, StoreError>, sqlx::Error> {
    let existing = match load_expected(tx, key, expected, batch).await? {
        Ok(existing) => existing,
        Err(refused) => return Ok(Err(refused)),
    };
    let next = batch.revision + 1;
    let object = match objects::updated(key.kind, &existing, incoming, part, next) {
        Ok(Some(object)) => object,
        Ok(None) => return Ok(Ok(existing)),
        Err(invalid) => return Ok(Err(invalid)),
    };
    // A Deployment's new template meets the per-pod caps of its
    // namespace's quotas now, not only when its pods are refused.
    if key.kind == Kind::Deployment && object["spec"]["template"] != existing["spec"]["template"] {
        let caps = super::quota::caps(tx, &key.namespace).await?;
        if let Some(refused) = super::quota::pod_caps_refusal(&caps, key.kind, &object) {
            return Ok(Err(refused));
        }
    }
    // Held under the revision lock, like every write: two namespaces
    // racing for one host cannot both win.
    if key.kind == Kind::Route
        && object["spec"]["host"] != existing["spec"]["host"]
        && let Some(claimed) = super::host_claim(&mut **tx, key, &object).await?
    {
        return Ok(Err(claimed));
    }
    sqlx::query(
        "WITH o AS (
             UPDATE objects SET resource_version = $4, labels = $5, body = $6
             WHERE kind = $1 AND namespace = $2 AND name = $3 RETURNING 1
         )
         INSERT INTO changes (revision, kind, namespace, name, type, object, previous)
         SELECT $4, $1, $2, $3, 'MODIFIED', $6, $7 FROM o",
    )
    .bind(key.kind.name())
    .bind(&key.namespace)
    .bind(&key.name)
    .bind(next)
    .bind(labels_of(&object))
    .bind(&*batch.sealed(key.kind, &object))
    .bind(&*batch.sealed(key.kind, &existing))
    .execute(&mut **tx)
    .await?;
    batch.revision = next;
    batch.remember(key, Some(&object));
    Ok(Ok(object))
}

/// The stored object and its change, if the object is still at
/// `$8` with body `$7` (what the update is from).
const UPDATE_READ: &str = "WITH o AS (
        UPDATE objects SET resource_version = $4, labels = $5, body = $6
        WHERE kind = $1 AND namespace = $2 AND name = $3
          AND resource_version = $8 AND body = $7
        RETURNING 1
    )
    INSERT INTO changes (revision, kind, namespace, name, type, object, previous)
    SELECT $4, $1, $2, $3, 'MODIFIED', $6, $7 FROM o";

/// `Write::UpdateRead`: the update computed from `read` and applied only
/// if the stored object is exactly `read` (its revision and its body, so
/// a caller's copy changed since it was read cannot pass for the stored
/// one). Anything else takes `update`'s way, which reads what is stored:
/// a conflict, a missing object, an object this batch wrote already, a
/// Secret (stored sealed), and the writes that look at more than the
/// object (a Route's host, a Deployment's new template against quotas).
async fn update_read(
    tx: &mut Transaction<'_, Postgres>,
    key: &ObjectKey,
    incoming: &Value,
    part: Part,
    read: &Value,
    batch: &mut Batch<'_>,
) -> Result<Result<Value, StoreError>, sqlx::Error> {
    if let Some(written) = update_as_read(tx, key, incoming, part, read, batch).await? {
        return Ok(Ok(written));
    }
    let expected = Some(stored_revision(read));
    update(tx, key, incoming.clone(), part, expected, batch).await
}

/// `update_read`'s way without reading: the object written, or `None`
/// when it takes `update`'s way instead.
async fn update_as_read(
    tx: &mut Transaction<'_, Postgres>,
    key: &ObjectKey,
    incoming: &Value,
    part: Part,
    read: &Value,
    batch: &mut Batch<'_>,
) -> Result<Option<Value>, sqlx::Error> {
    if matches!(key.kind, Kind::Secret | Kind::Route) || batch.written.contains_key(key) {
        return Ok(None);
    }
    let next = batch.revision + 1;
    // Nothing to change, or refused: decided against what is stored.
    let Ok(Some(object)) = objects::updated(key.kind, read, incoming.clone(), part, next) else {
        return Ok(None);
    };
    if key.kind == Kind::Deployment && object["spec"]["template"] != read["spec"]["template"] {
        return Ok(None);
    }
    let updated = sqlx::query(UPDATE_READ)
        .bind(key.kind.name())
        .bind(&key.namespace)
        .bind(&key.name)
        .bind(next)
        .bind(labels_of(&object))
        .bind(&object)
        .bind(read)
        .bind(stored_revision(read))
        .execute(&mut **tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    batch.wrote_in_namespace(key, next, &object);
    Ok(Some(object))
}

async fn delete(
    tx: &mut Transaction<'_, Postgres>,
    key: &ObjectKey,
    expected: Option<i64>,
    expected_uid: Option<&str>,
    batch: &mut Batch<'_>,
) -> Result<Result<Value, StoreError>, sqlx::Error> {
    let existing = match load_expected(tx, key, expected, batch).await? {
        Ok(existing) => existing,
        Err(refused) => return Ok(Err(refused)),
    };
    if let Some(uid) = expected_uid
        && existing["metadata"]["uid"].as_str() != Some(uid)
    {
        return Ok(Err(StoreError::UidMismatch(key.clone())));
    }
    if key.kind == Kind::Namespace {
        batch.namespaces.remove(&key.name);
        batch
            .written
            .retain(|member, _| member.namespace != key.name);
        // Its tokens' roles go with it (they are bound to its uid anyway,
        // so a namespace created under the name later never revives them);
        // a token left with no role at all goes too.
        sqlx::query(
            "WITH gone AS (DELETE FROM token_roles WHERE namespace = $1 RETURNING token_id)
             DELETE FROM tokens t USING gone
             WHERE t.id = gone.token_id AND NOT t.cluster_admin AND t.node_name IS NULL
               AND NOT EXISTS (SELECT 1 FROM token_roles r
                               WHERE r.token_id = t.id AND r.namespace <> $1)",
        )
        .bind(&key.name)
        .execute(&mut **tx)
        .await?;
        // A namespace takes everything in it along.
        let members =
            sqlx::query("DELETE FROM objects WHERE namespace = $1 RETURNING kind, name, body")
                .bind(&key.name)
                .fetch_all(&mut **tx)
                .await?;
        // Its quota usage too: a namespace created under the name later
        // starts from nothing.
        sqlx::query("DELETE FROM quota_usage WHERE namespace = $1")
            .bind(&key.name)
            .execute(&mut **tx)
            .await?;
        for row in members {
            let kind = Kind::from_name(row.get::<&str, _>("kind")).unwrap_or(Kind::Pod);
            let member = ObjectKey::new(kind, &key.name, row.get::<&str, _>("name"));
            batch.revision += 1;
            // Sealed members stay sealed: only their metadata changes.
            let body = row.get::<Value, _>("body");
            let object = objects::deleted(
                &batch.sealed_if_plain(kind, body),
                batch.revision,
                &batch.now,
            );
            record_change(tx, batch.revision, &member, "DELETED", &object).await?;
        }
    }
    // The object and what it used of its namespace's quotas, in one round
    // trip.
    let (resources, amounts) = super::quota::binds(&super::quota::uses(key.kind, &existing));
    sqlx::query(
        "WITH o AS (
             DELETE FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3 RETURNING 1
         )
         UPDATE quota_usage q SET used = q.used - d.amount::numeric
         FROM unnest($4::text[], $5::text[]) AS d(resource, amount)
         WHERE q.namespace = $2 AND q.resource = d.resource AND EXISTS (SELECT 1 FROM o)",
    )
    .bind(key.kind.name())
    .bind(&key.namespace)
    .bind(&key.name)
    .bind(&resources)
    .bind(&amounts)
    .execute(&mut **tx)
    .await?;
    if key.kind == Kind::ResourceQuota {
        super::quota::forget_if_unquoted(tx, &key.namespace).await?;
    }
    batch.revision += 1;
    batch.remember(key, None);
    let object = objects::deleted(&existing, batch.revision, &batch.now);
    record_change(
        tx,
        batch.revision,
        key,
        "DELETED",
        &batch.sealed(key.kind, &object),
    )
    .await?;
    Ok(Ok(object))
}

/// The stored object (opened, if sealed), refused when missing or not at
/// `expected`.
async fn load_expected(
    tx: &mut Transaction<'_, Postgres>,
    key: &ObjectKey,
    expected: Option<i64>,
    batch: &mut Batch<'_>,
) -> Result<Result<Value, StoreError>, sqlx::Error> {
    let Some(existing) = load(tx, key, batch).await? else {
        return Ok(Err(StoreError::NotFound(key.clone())));
    };
    if let Err(refused) = check_revision(key, &existing, expected) {
        return Ok(Err(refused));
    }
    if key.kind == Kind::Secret {
        return Ok(batch
            .keyring
            .unseal_secret(existing)
            .map_err(StoreError::from));
    }
    Ok(Ok(existing))
}

impl Batch<'_> {
    /// Notes `object` written under `key` at revision `next` by a
    /// statement that held only where its namespace exists (an object of
    /// a namespace shows it exists; see `load`).
    fn wrote_in_namespace(&mut self, key: &ObjectKey, next: i64, object: &Value) {
        if key.kind.namespaced() {
            self.namespaces.insert(key.namespace.clone());
        }
        self.revision = next;
        self.remember(key, Some(object));
    }

    fn is_quoted(&self, namespace: &str) -> bool {
        self.quoted.lock().expect("quoted lock").contains(namespace)
    }

    fn note_quoted(&self, namespace: &str) {
        let mut quoted = self.quoted.lock().expect("quoted lock");
        if !quoted.contains(namespace) {
            quoted.insert(namespace.to_owned());
        }
    }

    /// Notes `object` as this transaction wrote it under `key`.
    fn remember(&mut self, key: &ObjectKey, object: Option<&Value>) {
        if key.kind != Kind::Secret {
            self.written.insert(key.clone(), object.cloned());
        }
    }

    /// `object` as it is stored: a Secret sealed whole, whatever fields it
    /// came with (so none can pass as already sealed), anything else as
    /// it is.
    fn sealed<'v>(&self, kind: Kind, object: &'v Value) -> Cow<'v, Value> {
        if kind == Kind::Secret {
            Cow::Owned(self.keyring.seal_secret(object))
        } else {
            Cow::Borrowed(object)
        }
    }

    /// A value read from the database as it is stored from now on: a
    /// Secret stored before encryption gets sealed.
    fn sealed_if_plain(&self, kind: Kind, stored: Value) -> Value {
        if kind == Kind::Secret && stored.get(SEALED_FIELD).is_none() {
            self.keyring.seal_secret(&stored)
        } else {
            stored
        }
    }
}

fn check_revision(
    key: &ObjectKey,
    existing: &Value,
    expected: Option<i64>,
) -> Result<(), StoreError> {
    let current = stored_revision(existing);
    match expected {
        Some(expected) if expected != current => Err(StoreError::Conflict {
            key: key.clone(),
            expected,
            current,
        }),
        _ => Ok(()),
    }
}

fn stored_revision(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_default()
}

/// The object stored under `key`, as this transaction has it.
async fn load(
    tx: &mut Transaction<'_, Postgres>,
    key: &ObjectKey,
    batch: &mut Batch<'_>,
) -> Result<Option<Value>, sqlx::Error> {
    if let Some(written) = batch.written.get(key) {
        return Ok(written.clone());
    }
    let stored: Option<Value> = sqlx::query_scalar(
        "SELECT body FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3",
    )
    .bind(key.kind.name())
    .bind(&key.namespace)
    .bind(&key.name)
    .fetch_optional(&mut **tx)
    .await?;
    // An object of a namespace shows that namespace exists: deleting one
    // deletes its objects in the same transaction, and every write holds
    // the revision lock. The batch's next create there need not ask.
    if stored.is_some() && key.kind.namespaced() {
        batch.namespaces.insert(key.namespace.clone());
    }
    Ok(stored)
}

async fn record_change(
    tx: &mut Transaction<'_, Postgres>,
    revision: i64,
    key: &ObjectKey,
    event_type: &str,
    object: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO changes (revision, kind, namespace, name, type, object)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(revision)
    .bind(key.kind.name())
    .bind(&key.namespace)
    .bind(&key.name)
    .bind(event_type)
    .bind(object)
    .execute(&mut **tx)
    .await
    .map(drop)
}

fn labels_of(object: &Value) -> Value {
    object["metadata"]
        .get("labels")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> Pending {
        Pending {
            write: Write::Unchanged {
                key: ObjectKey::new(Kind::ConfigMap, "default", "x"),
                expected_revision: 1,
            },
            reply: oneshot::channel().0,
        }
    }

    /// An urgent write whose caller goes away while the lane is full is
    /// not left counted: the usual lane would otherwise wait on every
    /// batch for an urgent one that never comes.
    #[tokio::test]
    async fn an_urgent_write_never_queued_is_not_left_pending() {
        let (usual, _usual_queue) = mpsc::channel(1);
        let (urgent, _urgent_queue) = mpsc::channel(1);
        let lanes = Lanes {
            usual,
            urgent,
            gate: Arc::default(),
        };
        assert!(lanes.send(pending(), true).await, "queued");
        assert_eq!(lanes.gate.pending.load(Ordering::SeqCst), 1);
        // The lane is full: this one waits, and its caller gives up.
        let gave_up =
            tokio::time::timeout(Duration::from_millis(50), lanes.send(pending(), true)).await;
        assert!(gave_up.is_err(), "the lane was full");
        assert_eq!(lanes.gate.pending.load(Ordering::SeqCst), 1);
        // Once the queued one is committed, nothing holds the usual lane.
        lanes.gate.passed(1);
        assert_eq!(lanes.gate.pending.load(Ordering::SeqCst), 0);
        tokio::time::timeout(
            Duration::from_secs(5),
            lanes.gate.let_pass(Duration::from_secs(60)),
        )
        .await
        .expect("nothing pending: the usual lane goes at once");
    }

    /// The usual lane waits for the urgent batch pending, and goes on
    /// when it is done.
    #[tokio::test]
    async fn the_usual_lane_waits_for_the_urgent_batch_pending() {
        let gate = Arc::new(UrgentGate::default());
        gate.pending.fetch_add(1, Ordering::SeqCst);
        let mut waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.let_pass(Duration::from_secs(60)).await }
        });
        let early = tokio::time::timeout(Duration::from_millis(50), &mut waiting).await;
        assert!(early.is_err(), "it waits while one is pending");
        gate.passed(1);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("it goes on once the urgent batch is done")
            .unwrap();
    }
}
