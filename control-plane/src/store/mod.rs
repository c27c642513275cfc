//! The store: cluster state in Postgres. This module is the only place that
//! runs SQL.

mod accounts;
pub mod objects;
mod quota;
mod reseal;
mod writer;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use skiff_api::Kind;
use skiff_api::selector::{FieldSelector, Operator, Selector};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::oneshot;

use crate::encryption::{EncryptionError, Keyring, cluster_secret_context};
pub use accounts::{AccountTokenGrant, AccountTokenRecord};
pub use objects::Part;
pub use reseal::{Reseal, ResealReport};
pub use writer::Write;

/// The `NOTIFY` channel every committed write batch signals on.
const CHANGES_CHANNEL: &str = "skiff_changes";

/// Where an object lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub kind: Kind,
    /// Empty for cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: if kind.namespaced() {
                namespace.to_owned()
            } else {
                String::new()
            },
            name: name.to_owned(),
        }
    }

    pub fn namespace(name: &str) -> Self {
        Self::new(Kind::Namespace, "", name)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} \"{}\"", self.kind.plural(), self.name)
    }
}

/// Why a store operation did not happen. Messages are for clients: they
/// name the object and never carry database internals.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(ObjectKey),
    #[error("{0} already exists")]
    AlreadyExists(ObjectKey),
    #[error(
        "{key} was modified: the request expected resourceVersion {expected}, it is now {current}; read it again and retry"
    )]
    Conflict {
        key: ObjectKey,
        expected: i64,
        current: i64,
    },
    #[error("{0} has a different uid than the request expected")]
    UidMismatch(ObjectKey),
    #[error("namespaces \"{0}\" not found")]
    NamespaceNotFound(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(
        "spec.host: {host} overlaps host {owner_host} of Route {owner_route} in namespace {owner_namespace}, which claimed it first"
    )]
    HostClaimed {
        host: String,
        owner_host: String,
        owner_namespace: String,
        owner_route: String,
    },
    #[error(
        "resourceVersion {requested} is older than the oldest retained change ({compacted}); list again"
    )]
    Compacted { requested: i64, compacted: i64 },
    #[error("{0}")]
    Unavailable(String),
    /// The write would take the namespace beyond a ResourceQuota.
    #[error("{0}")]
    QuotaExceeded(String),
    /// A stored value could not be decrypted: the key file lacks its key,
    /// or the value was altered. The server's fault, never the caller's.
    #[error("{0}")]
    Encryption(String),
}

impl From<EncryptionError> for StoreError {
    fn from(error: EncryptionError) -> Self {
        tracing::error!("{error}");
        StoreError::Encryption(error.to_string())
    }
}

/// Logs a database error and returns what clients are told about it.
pub(crate) fn db_unavailable(error: &sqlx::Error) -> StoreError {
    tracing::warn!("database error: {error}");
    StoreError::Unavailable("the database is unavailable; retry shortly".into())
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// One entry of the change log.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: i64,
    pub kind: Kind,
    pub namespace: String,
    pub event_type: skiff_api::EventType,
    pub object: Value,
    pub previous: Option<Value>,
    /// Bytes the object and its previous version take as stored: what
    /// holding the change costs, about.
    pub bytes: usize,
}

/// Bytes of stored objects a page of the change log holds, about, when
/// the watch hub reads it (a watch catching up reads smaller pages).
pub const CHANGE_PAGE_BYTES: usize = 4 << 20;

/// Rows of the change log asked for first when reading a page; each
/// further batch asks for twice as many.
const FIRST_CHANGE_BATCH: i64 = 4;

/// A page of the change log.
#[derive(Debug)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// Whether there may be more changes after this page.
    pub more: bool,
    /// The revision of the last change read (of a kind this version knows
    /// or not): where the next page starts.
    pub last: Option<i64>,
}

/// The length of a column's value as it came over the wire.
fn raw_len(row: &sqlx::postgres::PgRow, column: &str) -> usize {
    use sqlx::ValueRef;
    row.try_get_raw(column)
        .ok()
        .filter(|value| !value.is_null())
        .and_then(|value| value.as_bytes().ok().map(<[u8]>::len))
        .unwrap_or(0)
}

/// Rows of a list asked for first; later batches are sized by the rows
/// seen so far.
const FIRST_LIST_BATCH: i64 = 16;

/// Bytes of stored objects a page of a list holds, about.
pub const LIST_PAGE_BYTES: usize = 4 << 20;

/// Objects per page of [`Store::scan`].
const SCAN_PAGE: i64 = 500;

/// The query for objects of `kind` matching `query`, after `after`, at most
/// `limit` of them, in list order.
fn list_sql<'q>(
    kind: Kind,
    query: &ListQuery<'_>,
    after: Option<&Continue>,
    limit: Option<i64>,
) -> QueryBuilder<'q, Postgres> {
    prefixed_list_sql("", kind, query, after, limit)
}

/// [`list_sql`] after `prefix` (such as `EXPLAIN `).
fn prefixed_list_sql<'q>(
    prefix: &str,
    kind: Kind,
    query: &ListQuery<'_>,
    after: Option<&Continue>,
    limit: Option<i64>,
) -> QueryBuilder<'q, Postgres> {
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "{prefix}SELECT namespace, name, body FROM objects WHERE kind = "
    ));
    sql.push_bind(kind.name());
    if let Some(namespace) = query.namespace {
        sql.push(" AND namespace = ")
            .push_bind(namespace.to_owned());
    }
    if let Some(after) = after {
        sql.push(" AND (namespace, name) > (")
            .push_bind(after.namespace.clone())
            .push(", ")
            .push_bind(after.name.clone())
            .push(")");
    }
    if let Some(labels) = query.labels {
        push_label_conditions(&mut sql, labels);
    }
    if let Some(fields) = query.fields {
        push_field_conditions(&mut sql, fields);
    }
    for filter in query.json {
        let (path, value, operator) = match filter {
            JsonFilter::ContainsAny(path, values) => {
                sql.push(" AND (false");
                for value in *values {
                    sql.push(" OR ");
                    push_json_path(&mut sql, path);
                    sql.push(" @> ").push_bind(value.clone());
                }
                sql.push(")");
                continue;
            }
            JsonFilter::Contains(path, value) => (path, value, " @> "),
            JsonFilter::WithinNonEmpty(path, value) => {
                sql.push(" AND ");
                push_json_path(&mut sql, path);
                sql.push(" <> '{}'::jsonb");
                (path, value, " <@ ")
            }
        };
        sql.push(" AND ");
        push_json_path(&mut sql, path);
        sql.push(operator).push_bind((*value).clone());
    }
    sql.push(" ORDER BY namespace, name");
    if let Some(limit) = limit {
        sql.push(" LIMIT ").push_bind(limit);
    }
    sql
}

/// `body #> '{a,b}'`: written out, not bound, so that an index on the same
/// expression (such as `objects_owners`) answers it. Paths are the control
/// plane's own constants; one that is not plain keys is bound instead.
fn push_json_path(sql: &mut QueryBuilder<'_, Postgres>, path: &[&str]) {
    let plain = path
        .iter()
        .all(|key| !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric()));
    if plain {
        sql.push(format_args!("body #> '{{{}}}'", path.join(",")));
    } else {
        sql.push("body #> ")
            .push_bind(path.iter().map(|key| key.to_string()).collect::<Vec<_>>());
    }
}

/// [`Store::service_backends`]: a Service's row, joined to each Deployment
/// whose template's labels hold its selector (`objects_template_labels`
/// answers that), each with its pods found by owner uid (`objects_owners`
/// answers that). A selector that is empty or missing selects nothing.
const SERVICE_BACKENDS: &str = "
    SELECT s.body AS service, d.body AS deployment,
           (SELECT jsonb_agg(p.body ORDER BY p.name) FROM objects p
             WHERE p.kind = 'Pod' AND p.namespace = $1
               AND p.body #> '{metadata,ownerReferences}'
                   @> jsonb_build_array(jsonb_build_object('uid', d.body #> '{metadata,uid}'))) AS pods
    FROM objects s
    LEFT JOIN objects d
      ON d.kind = 'Deployment' AND d.namespace = $1
     AND s.body #> '{spec,selector}' <> '{}'::jsonb
     AND d.body #> '{spec,template,metadata,labels}' @> (s.body #> '{spec,selector}')
    WHERE s.kind = 'Service' AND s.namespace = $1 AND s.name = $2
    ORDER BY d.name";

/// The rows of an `EXPLAIN`, a line each.
fn plan_text(rows: &[sqlx::postgres::PgRow]) -> String {
    rows.iter()
        .map(|row| row.get::<String, _>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What [`Store::service_backends`] found.
#[derive(Debug)]
pub struct ServiceBackends {
    pub service: Value,
    /// Each Deployment that may back the Service, with the pods it owns.
    pub deployments: Vec<(Value, Vec<Value>)>,
}

/// A page of a list.
#[derive(Debug)]
pub struct Page {
    pub items: Vec<Value>,
    /// The revision the list reflects.
    pub revision: i64,
    /// Where the next page starts, if there is one.
    pub next: Option<Continue>,
}

/// A position in a paginated list, handed to clients as an opaque token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continue {
    #[serde(rename = "r")]
    pub revision: i64,
    #[serde(rename = "n")]
    pub namespace: String,
    #[serde(rename = "k")]
    pub name: String,
}

impl Continue {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).expect("serialisable"))
    }

    pub fn decode(token: &str) -> Option<Self> {
        let position: Self = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token).ok()?).ok()?;
        // No token this server issued names a position the database could
        // not compare against (it stores no NUL) or a negative revision.
        let sound = position.revision >= 0
            && !position.namespace.contains('\0')
            && !position.name.contains('\0');
        sound.then_some(position)
    }
}

/// What a list asks for.
#[derive(Debug, Default)]
pub struct ListQuery<'a> {
    /// `None` lists every namespace.
    pub namespace: Option<&'a str>,
    pub labels: Option<&'a Selector>,
    pub fields: Option<&'a FieldSelector>,
    pub limit: Option<i64>,
    pub after: Option<Continue>,
    /// Conditions on the stored JSON, all of which must hold; for the
    /// control plane's own look-ups, which Postgres then answers without
    /// sending every object of the namespace.
    pub json: &'a [JsonFilter<'a>],
}

/// A condition on an object's JSON at a path (keys from the root).
#[derive(Debug, Clone, Copy)]
pub enum JsonFilter<'a> {
    /// The value there contains this one (`@>`): an object has at least
    /// its keys with their values, an array at least its elements.
    Contains(&'a [&'a str], &'a Value),
    /// The value there contains one of these at least (an index on the
    /// path answers each); none at all holds for nothing.
    ContainsAny(&'a [&'a str], &'a [Value]),
    /// The value there is a non-empty object held within this one (`<@`):
    /// a Service's selector within a pod's labels.
    WithinNonEmpty(&'a [&'a str], &'a Value),
}

/// A stored API token's grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: uuid::Uuid,
    pub description: String,
    pub cluster_admin: bool,
    /// May read the metrics, nothing else.
    pub metrics: bool,
    pub node_name: Option<String>,
    pub roles: Vec<(String, String)>,
    pub created_at: String,
    /// When the token stops working, if it ever does.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// When the token was last looked up to authenticate a request (at
    /// most once per token cache period).
    pub last_used_at: Option<String>,
}

/// Notifications that the change log grew (see [`Store::listen_changes`]).
pub struct ChangeListener {
    listener: PgListener,
}

impl ChangeListener {
    /// Completes at the next notification. An error means the connection
    /// was lost, and with it any notification sent meanwhile.
    pub async fn recv(&mut self) -> Result<(), StoreError> {
        match self.listener.try_recv().await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(StoreError::Unavailable(
                "the connection listening for changes was lost".into(),
            )),
            Err(e) => Err(db_unavailable(&e)),
        }
    }
}

/// Leadership held through an advisory lock on a dedicated connection;
/// dropping it (or losing the connection) gives the lock up.
pub struct LeaderLock {
    connection: sqlx::PgConnection,
    timing: LeaderTiming,
}

impl LeaderLock {
    /// Completes when the lock's connection stops answering, or answers
    /// too late: a link that went silent costs at most
    /// [`LeaderTiming::gives_up_after`], before the server frees the lock.
    pub async fn lost(mut self) {
        loop {
            tokio::time::sleep(self.timing.check_every).await;
            let check = sqlx::query("SELECT 1").execute(&mut self.connection);
            match tokio::time::timeout(self.timing.check_deadline, check).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!("leadership connection failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::warn!(
                        "leadership connection did not answer within {:?}",
                        self.timing.check_deadline
                    );
                    return;
                }
            }
        }
    }
}

/// A node's lease: it is alive while `renewed_at + duration` is ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub node: String,
    pub renewed_at: chrono::DateTime<chrono::Utc>,
    pub duration_ms: i32,
}

impl Lease {
    pub fn valid_at(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        now < self.renewed_at + chrono::Duration::milliseconds(i64::from(self.duration_ms))
    }
}

/// Whom a new token is for.
#[derive(Debug, Clone)]
pub enum TokenGrant {
    ClusterAdmin,
    Node(String),
    Namespace {
        namespace: String,
        role: String,
    },
    /// Reads the metrics, nothing else.
    Metrics,
}

/// Which tokens a query reads.
enum TokenFilter {
    All,
    Hash(Vec<u8>),
    Namespace(String),
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    writes: writer::Lanes,
    /// Seals Secrets and cluster secrets on their way in, opens them on
    /// their way out: nothing of them is stored in plaintext.
    keyring: Arc<Keyring>,
    leader: LeaderTiming,
    /// How long opening a connection of its own (a leader's) may take.
    connect_deadline: Duration,
    /// Readiness checks sent to the database so far.
    pings: Arc<std::sync::atomic::AtomicU64>,
    /// The process's metrics: made here because every part of the control
    /// plane holds the store.
    metrics: Arc<crate::metrics::Metrics>,
}

/// Settings of the connection pool, and the deadlines that keep a silently
/// dropped link to Postgres from holding locks (the revision row, a
/// leadership lock) for as long as the kernel takes to notice.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// Server side: a statement running longer is cancelled. Generous,
    /// because lists, watch catch-up and reseal pages read many rows.
    pub statement_timeout: Duration,
    /// Server side: a statement waiting this long for a lock (a writer for
    /// the revision row) fails. Longer than `idle_in_transaction_timeout`,
    /// so a writer outwaits a vanished holder rather than failing.
    pub lock_timeout: Duration,
    /// Server side: a transaction left idle this long (its client gone
    /// mid-batch) is ended, and its locks with it.
    pub idle_in_transaction_timeout: Duration,
    /// Client side: a write batch that has not committed within this is
    /// abandoned (its connection closed, its writes answered 503), so a
    /// link that stops answering does not hold the writer forever.
    pub write_deadline: Duration,
    /// How long a leader's lock outlives the last check that reached the
    /// server: its connection is ended by the server after this much
    /// silence (`idle_session_timeout`), which frees the lock for another
    /// process, while the leader itself gives up after
    /// [`LeaderTiming::gives_up_after`], strictly earlier.
    pub leader_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(60),
            lock_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(5),
            write_deadline: Duration::from_secs(15),
            leader_timeout: Duration::from_secs(5),
        }
    }
}

/// Server-side keepalives: on a TCP connection whose peer vanished without
/// a word, the server notices after idle + interval × count (5 + 2 × 3 =
/// 11 s) of silence, or once sent data has gone unacknowledged for the user
/// timeout, and ends the session with its locks. (Ignored on Unix sockets.)
const SERVER_KEEPALIVE: [(&str, &str); 4] = [
    ("tcp_keepalives_idle", "5"),
    ("tcp_keepalives_interval", "2"),
    ("tcp_keepalives_count", "3"),
    ("tcp_user_timeout", "10000"),
];

/// How a leader checks that its lock's connection still reaches the
/// server, derived from [`PoolSettings::leader_timeout`] (`T`): a check
/// every `T/5`, each given `2T/5` to answer. The leader stops acting at
/// most `3T/5` after the last check that reached the server; the server
/// frees the lock `T` after it; so the old leader has stopped before
/// anyone else can lead.
#[derive(Debug, Clone, Copy)]
pub struct LeaderTiming {
    pub check_every: Duration,
    pub check_deadline: Duration,
    pub server_timeout: Duration,
}

impl LeaderTiming {
    fn of(timeout: Duration) -> Self {
        Self {
            check_every: timeout / 5,
            check_deadline: timeout * 2 / 5,
            server_timeout: timeout,
        }
    }

    /// The longest a leader acts after its connection stopped answering.
    pub fn gives_up_after(&self) -> Duration {
        self.check_every + self.check_deadline
    }
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

impl Store {
    /// Connects (lazily: the pool opens connections as they are needed, so
    /// a database that is down at start or restarts later is reconnected
    /// to without help) and starts the writer.
    pub fn connect(
        url: &str,
        settings: &PoolSettings,
        keyring: Arc<Keyring>,
    ) -> Result<Self, sqlx::Error> {
        let options: PgConnectOptions = url.parse()?;
        // Set at connection start, so they cost no round trip and hold for
        // every connection, the LISTEN one (which runs no long statement
        // and is never in a transaction) included.
        let timeouts = [
            ("statement_timeout", millis(settings.statement_timeout)),
            ("lock_timeout", millis(settings.lock_timeout)),
            (
                "idle_in_transaction_session_timeout",
                millis(settings.idle_in_transaction_timeout),
            ),
        ];
        let options = options
            .options(timeouts)
            .options(SERVER_KEEPALIVE.map(|(k, v)| (k, v.to_owned())));
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            // A dead connection fails its query and is dropped; checking
            // every connection before use would cost a round trip per query.
            .test_before_acquire(false)
            .connect_lazy_with(options);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let writes = writer::spawn(
            pool.clone(),
            keyring.clone(),
            settings.write_deadline,
            metrics.clone(),
        );
        Ok(Self {
            pool,
            writes,
            keyring,
            leader: LeaderTiming::of(settings.leader_timeout),
            connect_deadline: settings.acquire_timeout,
            pings: Arc::default(),
            metrics,
        })
    }

    /// The process's metrics.
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// Rereads the encryption key file if it changed; says whether it did.
    pub fn reload_keys(&self) -> Result<bool, EncryptionError> {
        self.keyring.reload_if_changed()
    }

    /// Follows notifications of new changes on a connection of its own.
    pub async fn listen_changes(&self) -> Result<ChangeListener, StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(unavailable)?;
        listener
            .listen(CHANGES_CHANNEL)
            .await
            .map_err(unavailable)?;
        Ok(ChangeListener { listener })
    }

    /// Whether node `name`'s lease is current, and the `resources` of the
    /// pods bound to it that have not finished; one round trip.
    pub async fn node_load(&self, name: &str) -> Result<(bool, Vec<Value>), StoreError> {
        let row = sqlx::query(
            "SELECT coalesce((SELECT now() < renewed_at + duration_ms * interval '1 millisecond' \
                              FROM leases WHERE node = $1), false) AS ready, \
                    coalesce((SELECT jsonb_agg(coalesce(body #> '{spec,resources}', '{}')) \
                              FROM objects WHERE kind = 'Pod' \
                              AND body #>> '{spec,nodeName}' = $1 \
                              AND coalesce(body #>> '{status,phase}', '') \
                                  NOT IN ('Succeeded', 'Failed')), '[]') AS resources",
        )
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))?;
        let resources: Value = row.get("resources");
        Ok((
            row.get("ready"),
            match resources {
                Value::Array(items) => items,
                _ => Vec::new(),
            },
        ))
    }

    /// How many pods are bound to each node that has any.
    pub async fn bound_pods_per_node(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query_as(
            "SELECT body #>> '{spec,nodeName}', count(*) FROM objects \
             WHERE kind = 'Pod' AND body #>> '{spec,nodeName}' IS NOT NULL \
             GROUP BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))
    }

    /// Applies the migrations in `migrations/` (concurrent callers wait for
    /// each other).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("../migrations").run(&self.pool).await
    }

    /// Performs a write; the result is the object as stored (for a delete,
    /// as it was deleted).
    pub async fn write(&self, write: Write) -> Result<Value, StoreError> {
        self.send_write(write, false).await
    }

    /// [`Store::write`] for a write someone waits on (a request held
    /// until a function at zero has its pod): committed in a lane of its
    /// own, ahead of the writes queued in the usual one.
    pub async fn write_urgent(&self, write: Write) -> Result<Value, StoreError> {
        self.send_write(write, true).await
    }

    async fn send_write(&self, write: Write, urgent: bool) -> Result<Value, StoreError> {
        let (reply, outcome) = oneshot::channel();
        if !self
            .writes
            .send(writer::Pending { write, reply }, urgent)
            .await
        {
            return Err(StoreError::Unavailable("the store is shutting down".into()));
        }
        outcome
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the write was dropped".into())))
    }

    /// Refuses a Route whose host another namespace already claimed (for
    /// a dry run; real writes check inside their transaction).
    pub async fn check_host_claim(&self, key: &ObjectKey, route: &Value) -> Result<(), StoreError> {
        match host_claim(&self.pool, key, route).await {
            Ok(None) => Ok(()),
            Ok(Some(claimed)) => Err(claimed),
            Err(e) => Err(db_unavailable(&e)),
        }
    }

    pub async fn get(&self, key: &ObjectKey) -> Result<Option<Value>, StoreError> {
        let stored: Option<Value> = sqlx::query_scalar(
            "SELECT body FROM objects WHERE kind = $1 AND namespace = $2 AND name = $3",
        )
        .bind(key.kind.name())
        .bind(&key.namespace)
        .bind(&key.name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))?;
        stored.map(|body| self.opened(key.kind, body)).transpose()
    }

    /// An object as read from the database, opened if it is sealed.
    fn opened(&self, kind: Kind, stored: Value) -> Result<Value, StoreError> {
        if kind == Kind::Secret {
            Ok(self.keyring.unseal_secret(stored)?)
        } else {
            Ok(stored)
        }
    }

    pub async fn current_revision(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT value FROM revision")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))
    }

    /// Service `namespace/name` and the Deployments of its namespace whose
    /// pod template carries its selector, each with the pods it owns (by
    /// owner uid), in one statement, hence one snapshot: what a
    /// function's activation reads while requests are held at zero, in
    /// one round trip rather than three. `None` if there is no such
    /// Service. The caller still matches each Deployment's selector
    /// exactly; Secrets are never among what this reads.
    pub async fn service_backends(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceBackends>, StoreError> {
        let rows = sqlx::query(SERVICE_BACKENDS)
            .bind(namespace)
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let service: Value = first.get("service");
        let deployments = rows
            .iter()
            .filter_map(|row| {
                let deployment: Option<Value> = row.get("deployment");
                let pods = match row.get::<Option<Value>, _>("pods") {
                    Some(Value::Array(pods)) => pods,
                    _ => Vec::new(),
                };
                Some((deployment?, pods))
            })
            .collect();
        Ok(Some(ServiceBackends {
            service,
            deployments,
        }))
    }

    /// The plan Postgres makes for [`Store::service_backends`]: for tests
    /// that indexes answer it.
    #[doc(hidden)]
    pub async fn explain_service_backends(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, StoreError> {
        let rows = sqlx::query(&format!("EXPLAIN {SERVICE_BACKENDS}"))
            .bind(namespace)
            .bind(name)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        Ok(plan_text(&rows))
    }

    /// The plan Postgres makes for the list `query` (`EXPLAIN`), one line
    /// of it per line: for tests that an index answers a lookup.
    #[doc(hidden)]
    pub async fn explain_list(
        &self,
        kind: Kind,
        query: ListQuery<'_>,
    ) -> Result<String, StoreError> {
        let rows = prefixed_list_sql("EXPLAIN ", kind, &query, None, None)
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        Ok(plan_text(&rows))
    }

    /// The indexes of the `objects` table using access method `method`
    /// (such as `gin`), each with its storage options: for tests of how
    /// the schema keeps them.
    #[doc(hidden)]
    pub async fn object_indexes(
        &self,
        method: &str,
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        sqlx::query_as(
            "SELECT c.relname::text, coalesce(c.reloptions::text[], '{}') FROM pg_index i
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam
             WHERE i.indrelid = 'objects'::regclass AND a.amname = $1 ORDER BY 1",
        )
        .bind(method)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))
    }

    /// Updates the planner's statistics of every table (`ANALYZE`), as
    /// autovacuum does after enough changes: for tests of plans.
    #[doc(hidden)]
    pub async fn analyze(&self) -> Result<(), StoreError> {
        sqlx::query("ANALYZE")
            .execute(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        Ok(())
    }

    /// Lists objects of `kind`, ordered by namespace and name, with the
    /// revision the list reflects. Later pages are read as of their own
    /// request; the revision reported stays that of the first page.
    ///
    /// A page with a `limit` also stops at about [`LIST_PAGE_BYTES`] of
    /// stored objects (but holds at least one), with a `next` position as
    /// any short page has: a list of large objects costs its reader a few
    /// MiB at a time, not `limit` objects of up to 1 MiB each. Rows are
    /// asked for in growing batches (as [`Store::changes_after`] does), so
    /// the database does not send rows past the budget only to have them
    /// dropped.
    pub async fn list(&self, kind: Kind, query: ListQuery<'_>) -> Result<Page, StoreError> {
        use futures::TryStreamExt;
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let Some(limit) = query.limit else {
            return self.list_whole(kind, &query).await;
        };
        let mut tx = self.snapshot().await?;
        let revision: i64 = match &query.after {
            Some(after) => after.revision,
            None => sqlx::query_scalar("SELECT value FROM revision")
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?,
        };
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut after = query.after.clone();
        let mut batch = FIRST_LIST_BATCH;
        // Whether a row past the page was seen (so there is a next page).
        let mut more = false;
        'batches: loop {
            // One row past what the page still takes tells whether there
            // is more.
            let room = limit - items.len() as i64;
            let asked = batch.min(room) + 1;
            let mut got = 0;
            let mut sql = list_sql(kind, &query, after.as_ref(), Some(asked));
            let mut rows = sql.build().fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(unavailable)? {
                got += 1;
                if items.len() as i64 == limit || (bytes >= LIST_PAGE_BYTES && !items.is_empty()) {
                    more = true;
                    break 'batches;
                }
                bytes += raw_len(&row, "body");
                after = Some(Continue {
                    revision,
                    namespace: row.get("namespace"),
                    name: row.get("name"),
                });
                items.push(self.opened(kind, row.get("body"))?);
            }
            if got < asked {
                break;
            }
            // The next batch is what the rest of the budget holds of rows
            // the size of those so far: small objects fill a page in two
            // queries, large ones are not asked for past the budget.
            let average = (bytes / items.len().max(1)).max(1);
            batch = (LIST_PAGE_BYTES.saturating_sub(bytes) / average).max(1) as i64;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Page {
            items,
            revision,
            next: if more { after } else { None },
        })
    }

    /// A list with no limit (the control plane's own full reads) in one
    /// statement: a statement sees one snapshot, so the revision and the
    /// objects agree as they would in a read-only transaction, without
    /// its four more round trips (an activation makes two such lists
    /// while a request waits).
    async fn list_whole(&self, kind: Kind, query: &ListQuery<'_>) -> Result<Page, StoreError> {
        // The revision's single row, joined to whatever matches: it comes
        // back even when nothing does.
        let mut sql = prefixed_list_sql(
            "SELECT r.value AS revision, o.body FROM revision r LEFT JOIN LATERAL (",
            kind,
            query,
            query.after.as_ref(),
            None,
        );
        sql.push(") o ON true ORDER BY o.namespace, o.name");
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        let revision = match &query.after {
            Some(after) => after.revision,
            None => rows.first().map_or(0, |row| row.get("revision")),
        };
        let items = rows
            .into_iter()
            .filter_map(|row| row.get::<Option<Value>, _>("body"))
            .map(|body| self.opened(kind, body))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            revision,
            next: None,
        })
    }

    /// Reads every object of `kind` a page at a time, handing each to
    /// `each`, for readers that keep less than the objects (keys, owner
    /// references): what they hold at once is a page, not every object.
    /// Returns the revision of the first page; later pages are read as of
    /// their own request, so a watch from that revision replays anything
    /// that changed meanwhile.
    pub async fn scan(&self, kind: Kind, mut each: impl FnMut(Value)) -> Result<i64, StoreError> {
        let mut after = None;
        loop {
            let page = self
                .list(
                    kind,
                    ListQuery {
                        limit: Some(SCAN_PAGE),
                        after,
                        ..Default::default()
                    },
                )
                .await?;
            page.items.into_iter().for_each(&mut each);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(page.revision),
            }
        }
    }

    /// A read-only transaction whose reads all see one moment.
    async fn snapshot(&self) -> Result<sqlx::Transaction<'_, Postgres>, StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        Ok(tx)
    }

    /// Changes after `revision`, oldest first: at most `limit`, and no
    /// more than about `page_bytes` of stored objects (but at
    /// least one change). Rows are decoded as they arrive and the read
    /// stops at the budget, so a page of large objects never sits in
    /// memory whole. Fails with `Compacted` when changes after `revision`
    /// may already be gone.
    pub async fn changes_after(
        &self,
        revision: i64,
        limit: i64,
        page_bytes: usize,
    ) -> Result<ChangePage, StoreError> {
        use futures::TryStreamExt;
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let mut tx = self.snapshot().await?;
        let compacted: i64 = sqlx::query_scalar("SELECT revision FROM compaction")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        if revision < compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted,
            });
        }
        let mut changes = Vec::new();
        let (mut bytes, mut read, mut last) = (0usize, 0i64, None);
        let mut more = false;
        // Rows are asked for in growing batches, not `limit` at once: the
        // database sends every row a query asks for, so a page cut at its
        // byte budget after a few large rows would still have had up to
        // `limit` of them sent (and discarded), each page again. A batch
        // starts small and doubles while the rows are small.
        let mut batch = FIRST_CHANGE_BATCH;
        let mut after = revision;
        'pages: while read < limit {
            let asked = batch.min(limit - read);
            let mut got = 0;
            let mut rows = sqlx::query(
                "SELECT revision, kind, namespace, type, object, previous FROM changes
                 WHERE revision > $1 ORDER BY revision LIMIT $2",
            )
            .bind(after)
            .bind(asked)
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await.map_err(unavailable)? {
                if bytes >= page_bytes {
                    // The rest is left for the next page.
                    more = true;
                    break 'pages;
                }
                got += 1;
                bytes += raw_len(&row, "object") + raw_len(&row, "previous");
                read += 1;
                let at: i64 = row.get("revision");
                last = Some(at);
                after = at;
                if let Some(change) = self.change_of(&row)? {
                    changes.push(change);
                }
            }
            if got < asked {
                break;
            }
            batch = batch.saturating_mul(2);
        }
        more |= read == limit;
        tx.commit().await.map_err(unavailable)?;
        Ok(ChangePage {
            changes,
            more,
            last,
        })
    }

    fn change_of(&self, row: &sqlx::postgres::PgRow) -> Result<Option<Change>, StoreError> {
        let event_type = match row.get::<&str, _>("type") {
            "ADDED" => skiff_api::EventType::Added,
            "MODIFIED" => skiff_api::EventType::Modified,
            _ => skiff_api::EventType::Deleted,
        };
        let Some(kind) = Kind::from_name(row.get("kind")) else {
            return Ok(None);
        };
        let previous: Option<Value> = row.get("previous");
        Ok(Some(Change {
            bytes: raw_len(row, "object") + raw_len(row, "previous"),
            revision: row.get("revision"),
            kind,
            namespace: row.get("namespace"),
            event_type,
            object: self.opened(kind, row.get("object"))?,
            previous: previous.map(|p| self.opened(kind, p)).transpose()?,
        }))
    }

    /// The oldest revision a watch may resume from.
    pub async fn compacted_revision(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT revision FROM compaction")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))
    }

    /// Drops changes so that only the last `retain` revisions remain.
    /// Returns the new compaction revision. Safe to run from several
    /// processes at once.
    pub async fn compact(&self, retain: i64) -> Result<i64, StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let current: i64 = sqlx::query_scalar("SELECT value FROM revision")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let cut = (current - retain).max(0);
        let compacted: i64 = sqlx::query_scalar(
            "UPDATE compaction SET revision = GREATEST(revision, $1) RETURNING revision",
        )
        .bind(cut)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("DELETE FROM changes WHERE revision <= $1")
            .bind(compacted)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(compacted)
    }

    /// Renews (or takes) the lease of `node` for `duration_ms` from now.
    pub async fn renew_lease(&self, node: &str, duration_ms: i32) -> Result<Lease, StoreError> {
        let row = sqlx::query(
            "INSERT INTO leases (node, renewed_at, duration_ms) VALUES ($1, now(), $2)
             ON CONFLICT (node) DO UPDATE SET renewed_at = now(), duration_ms = EXCLUDED.duration_ms
             RETURNING renewed_at, duration_ms",
        )
        .bind(node)
        .bind(duration_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))?;
        Ok(Lease {
            node: node.to_owned(),
            renewed_at: row.get("renewed_at"),
            duration_ms: row.get("duration_ms"),
        })
    }

    /// Every node's lease, with the database's clock, so freshness does not
    /// depend on this process's clock.
    pub async fn leases(&self) -> Result<(chrono::DateTime<chrono::Utc>, Vec<Lease>), StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let mut tx = self.snapshot().await?;
        let now: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await
            .map_err(unavailable)?;
        let rows = sqlx::query("SELECT node, renewed_at, duration_ms FROM leases")
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok((
            now,
            rows.into_iter()
                .map(|row| Lease {
                    node: row.get("node"),
                    renewed_at: row.get("renewed_at"),
                    duration_ms: row.get("duration_ms"),
                })
                .collect(),
        ))
    }

    /// Takes the advisory lock `key` on a connection of its own, if no one
    /// holds it: leadership for whoever has it, until its connection goes.
    /// The server ends that connection once it has been silent for the
    /// leader timeout (the holder checks it more often than that), so a
    /// holder cut off without a word frees the lock within that timeout.
    pub async fn try_lead(&self, key: i64) -> Result<Option<LeaderLock>, StoreError> {
        use sqlx::{ConnectOptions, Connection};
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let options = (*self.pool.connect_options())
            .clone()
            .options([("idle_session_timeout", millis(self.leader.server_timeout))]);
        let attempt = async {
            let mut connection = options.connect().await.map_err(unavailable)?;
            let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok::<_, StoreError>((connection, held))
        };
        let (connection, held) = tokio::time::timeout(self.connect_deadline, attempt)
            .await
            .map_err(|_| {
                tracing::warn!(
                    "the database did not answer a leadership attempt within {:?}",
                    self.connect_deadline
                );
                StoreError::Unavailable("the database is unavailable; retry shortly".into())
            })??;
        if held {
            Ok(Some(LeaderLock {
                connection,
                timing: self.leader,
            }))
        } else {
            let _ = tokio::time::timeout(self.leader.check_deadline, connection.close()).await;
            Ok(None)
        }
    }

    /// Whether the database answers.
    /// How many times [`Store::ping`] asked the database, by any clone of
    /// this store (what `/readyz` costs is observable through it).
    pub fn pings(&self) -> u64 {
        self.pings.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn ping(&self) -> bool {
        self.pings
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn initialized(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cluster)")
            .fetch_one(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))
    }

    pub async fn mark_initialized(&self) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO cluster DEFAULT VALUES ON CONFLICT DO NOTHING")
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(|e| db_unavailable(&e))
    }

    /// The cluster secret `name`, made `candidate` if there is none yet.
    /// Safe when several processes ask at once: the insert of all but the
    /// first waits for it and does nothing, and the read (a statement of its
    /// own, so a snapshot taken after the insert) sees the one value kept.
    pub async fn cluster_secret(
        &self,
        name: &str,
        candidate: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let context = cluster_secret_context(name);
        sqlx::query(
            "INSERT INTO cluster_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(self.keyring.seal(&context, candidate))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        let stored: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM cluster_secrets WHERE name = $1")
                .bind(name)
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable)?;
        if Keyring::is_sealed(&stored) {
            Ok(self
                .keyring
                .unseal(&format!("cluster secret {name}"), &context, &stored)?)
        } else {
            // Stored before encryption; `reseal` seals it.
            Ok(stored)
        }
    }

    /// Stores a token by its hash and returns its id.
    pub async fn create_token(
        &self,
        secret_hash: &[u8],
        grant: &TokenGrant,
        description: &str,
    ) -> Result<uuid::Uuid, StoreError> {
        self.create_expiring_token(secret_hash, grant, description, None)
            .await
    }

    /// Creates a token; a namespace role is bound to the namespace's uid,
    /// so deleting the namespace revokes it for good, whatever is created
    /// under its name later.
    pub async fn create_expiring_token(
        &self,
        secret_hash: &[u8],
        grant: &TokenGrant,
        description: &str,
        expires_at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<uuid::Uuid, StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let id = uuid::Uuid::new_v4();
        let (cluster_admin, node_name) = match grant {
            TokenGrant::ClusterAdmin => (true, None),
            TokenGrant::Node(node) => (false, Some(node.clone())),
            TokenGrant::Namespace { .. } | TokenGrant::Metrics => (false, None),
        };
        let metrics = matches!(grant, TokenGrant::Metrics);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        if let TokenGrant::Namespace { namespace, .. } = grant {
            quota::admit_token(&mut tx, namespace).await?;
        }
        sqlx::query(
            "INSERT INTO tokens (id, secret_hash, description, cluster_admin, node_name, expires_at, metrics)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id)
        .bind(secret_hash)
        .bind(description)
        .bind(cluster_admin)
        .bind(node_name)
        .bind(expires_at)
        .bind(metrics)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if let TokenGrant::Namespace { namespace, role } = grant {
            let granted = sqlx::query(
                "INSERT INTO token_roles (token_id, namespace, role, namespace_uid)
                 SELECT $1, $2, $3, uid FROM objects
                 WHERE kind = 'Namespace' AND namespace = '' AND name = $2",
            )
            .bind(id)
            .bind(namespace)
            .bind(role)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            if granted.rows_affected() == 0 {
                return Err(StoreError::NamespaceNotFound(namespace.clone()));
            }
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(id)
    }

    /// The token with this hash, if any and unexpired, with only the roles
    /// whose namespace still is the one they were granted in; records the
    /// use.
    pub async fn find_token(&self, secret_hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
        let used = sqlx::query(
            "UPDATE tokens SET last_used_at = now()
             WHERE secret_hash = $1 AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(secret_hash)
        .execute(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))?;
        if used.rows_affected() == 0 {
            return Ok(None);
        }
        let rows = self
            .token_rows(TokenFilter::Hash(secret_hash.to_vec()))
            .await?;
        Ok(rows.into_iter().next())
    }

    /// Tokens with a role in `namespace`.
    pub async fn namespace_tokens(&self, namespace: &str) -> Result<Vec<TokenRecord>, StoreError> {
        self.token_rows(TokenFilter::Namespace(namespace.to_owned()))
            .await
    }

    pub async fn all_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.token_rows(TokenFilter::All).await
    }

    /// Deletes any token; false if there is none.
    pub async fn delete_token(&self, id: uuid::Uuid) -> Result<bool, StoreError> {
        let deleted = sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn token_rows(&self, filter: TokenFilter) -> Result<Vec<TokenRecord>, StoreError> {
        let mut sql = QueryBuilder::<Postgres>::new(
            "SELECT t.id, t.description, t.cluster_admin, t.metrics, t.node_name, t.created_at,
                    t.expires_at, t.last_used_at,
                    COALESCE(array_agg(r.namespace) FILTER (WHERE r.namespace IS NOT NULL), '{}') AS namespaces,
                    COALESCE(array_agg(r.role) FILTER (WHERE r.role IS NOT NULL), '{}') AS roles
             FROM tokens t LEFT JOIN token_roles r ON r.token_id = t.id
                  AND r.namespace_uid = (SELECT uid FROM objects o
                      WHERE o.kind = 'Namespace' AND o.namespace = '' AND o.name = r.namespace)",
        );
        match filter {
            TokenFilter::All => {}
            TokenFilter::Hash(hash) => {
                sql.push(" WHERE t.secret_hash = ").push_bind(hash);
            }
            TokenFilter::Namespace(namespace) => {
                sql.push(" WHERE t.id IN (SELECT token_id FROM token_roles WHERE namespace = ")
                    .push_bind(namespace)
                    .push(")");
            }
        }
        sql.push(" GROUP BY t.id ORDER BY t.created_at");
        let rows = sql
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let namespaces: Vec<String> = row.get("namespaces");
                let roles: Vec<String> = row.get("roles");
                let created: chrono::DateTime<chrono::Utc> = row.get("created_at");
                let last_used: Option<chrono::DateTime<chrono::Utc>> = row.get("last_used_at");
                TokenRecord {
                    id: row.get("id"),
                    description: row.get("description"),
                    cluster_admin: row.get("cluster_admin"),
                    metrics: row.get("metrics"),
                    node_name: row.get("node_name"),
                    roles: namespaces.into_iter().zip(roles).collect(),
                    created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    expires_at: row.get("expires_at"),
                    last_used_at: last_used
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                }
            })
            .collect())
    }

    /// Deletes a token with a role in `namespace`; false if there is none.
    pub async fn delete_namespace_token(
        &self,
        id: uuid::Uuid,
        namespace: &str,
    ) -> Result<bool, StoreError> {
        let deleted = sqlx::query(
            "DELETE FROM tokens WHERE id = $1
             AND id IN (SELECT token_id FROM token_roles WHERE namespace = $2)",
        )
        .bind(id)
        .bind(namespace)
        .execute(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))?;
        Ok(deleted.rows_affected() > 0)
    }
}

fn push_label_conditions(sql: &mut QueryBuilder<'_, Postgres>, selector: &Selector) {
    for requirement in selector.requirements() {
        let key = requirement.key.clone();
        match requirement.operator {
            // As containment, which the labels' GIN index answers: the
            // controllers look up a Deployment's or a Service's pods this
            // way, and a namespace may hold thousands of others.
            Operator::In if !requirement.values.is_empty() => {
                sql.push(" AND (");
                for (i, value) in requirement.values.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    sql.push("labels @> ")
                        .push_bind(serde_json::json!({ key.clone(): value }));
                }
                sql.push(")");
            }
            Operator::In => {
                sql.push(" AND false");
            }
            Operator::NotIn => {
                sql.push(" AND (NOT labels ? ").push_bind(key.clone());
                sql.push(" OR labels ->> ").push_bind(key).push(" <> ALL(");
                sql.push_bind(requirement.values.clone()).push("))");
            }
            Operator::Exists => {
                sql.push(" AND labels ? ").push_bind(key);
            }
            Operator::DoesNotExist => {
                sql.push(" AND NOT labels ? ").push_bind(key);
            }
            // Not produced by textual selectors.
            Operator::Gt | Operator::Lt => {
                sql.push(" AND false");
            }
        }
    }
}

fn push_field_conditions(sql: &mut QueryBuilder<'_, Postgres>, fields: &FieldSelector) {
    for (field, equal, value) in fields.terms() {
        let column = match field {
            "metadata.name" => "name",
            "metadata.namespace" => "namespace",
            "spec.nodeName" => "COALESCE(body #>> '{spec,nodeName}', '')",
            "status.phase" => "COALESCE(body #>> '{status,phase}', '')",
            "involvedObject.kind" => "COALESCE(body #>> '{involvedObject,kind}', '')",
            "involvedObject.name" => "COALESCE(body #>> '{involvedObject,name}', '')",
            "involvedObject.uid" => "COALESCE(body #>> '{involvedObject,uid}', '')",
            "involvedObject.namespace" => "COALESCE(body #>> '{involvedObject,namespace}', '')",
            "reason" => "COALESCE(body #>> '{reason}', '')",
            "type" => "COALESCE(body #>> '{type}', '')",
            // FieldSelector::parse admits only the fields above.
            _ => "NULL",
        };
        sql.push(format!(" AND {column} {} ", if equal { "=" } else { "<>" }))
            .push_bind(value.to_owned());
    }
}

/// The first Route of another namespace whose host overlaps `route`'s, as
/// the error to refuse it with. A host (exact, wildcard, or the empty
/// catch-all) belongs to the namespace that claimed it first; Routes of one
/// namespace may share hosts (by path). Candidates are found by exact
/// match on the hosts that could cover this one, plus, for a wildcard, a
/// suffix match on the hosts it covers; `policy::hosts_overlap` decides.
pub(crate) async fn host_claim<'e, E>(
    executor: E,
    key: &ObjectKey,
    route: &Value,
) -> Result<Option<StoreError>, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    let host = route["spec"]["host"].as_str().unwrap_or("").to_owned();
    let bare = host.strip_prefix("*.").unwrap_or(&host);
    let mut exact = vec![host.clone()];
    let mut rest = bare;
    while let Some((_, parent)) = rest.split_once('.') {
        exact.push(format!("*.{parent}"));
        rest = parent;
    }
    // Host names are validated DNS names: no LIKE metacharacters in them.
    let covered = host.starts_with("*.").then(|| format!("%{}", &host[1..]));
    let rows = sqlx::query(
        "SELECT namespace, name, COALESCE(body #>> '{spec,host}', '') AS host FROM objects
         WHERE kind = 'Route' AND namespace <> $1
           AND (COALESCE(body #>> '{spec,host}', '') = ANY($2)
                OR ($3::text IS NOT NULL AND body #>> '{spec,host}' LIKE $3))
         ORDER BY resource_version LIMIT 16",
    )
    .bind(&key.namespace)
    .bind(&exact)
    .bind(covered)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().find_map(|row| {
        let owner_host: String = row.get("host");
        let overlaps = if host.is_empty() || owner_host.is_empty() {
            host == owner_host
        } else {
            skiff_api::policy::hosts_overlap(&host, &owner_host)
        };
        overlaps.then(|| StoreError::HostClaimed {
            host: if host.is_empty() {
                "the catch-all".into()
            } else {
                host.clone()
            },
            owner_host: if owner_host.is_empty() {
                "(the catch-all)".into()
            } else {
                owner_host
            },
            owner_namespace: row.get("namespace"),
            owner_route: row.get("name"),
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = Continue {
            revision: 42,
            namespace: "shop".into(),
            name: "web-7".into(),
        };
        assert_eq!(Continue::decode(&token.encode()), Some(token));
        assert_eq!(Continue::decode("not-a-token"), None);
    }

    #[test]
    fn keys_of_cluster_scoped_kinds_have_no_namespace() {
        assert_eq!(ObjectKey::new(Kind::Node, "shop", "n1").namespace, "");
        assert_eq!(ObjectKey::new(Kind::Pod, "shop", "p").namespace, "shop");
        assert_eq!(
            ObjectKey::new(Kind::Pod, "shop", "p").to_string(),
            "pods \"p\""
        );
    }
}
