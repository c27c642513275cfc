//! ResourceQuota enforcement: inside a create's transaction, under the
//! revision lock every write takes, what the namespace uses is read and
//! the object is refused if it does not fit. So creates racing from any
//! number of processes can never exceed a quota: each sees every write
//! committed before it, and those earlier in its own batch.
//!
//! What a namespace under a quota uses is kept in `quota_usage`, one row
//! per count and pod sum, moved by the writer in the same statement as
//! each create and delete of a counted object (every path that adds or
//! removes one: the API, controllers, the garbage collector, a namespace's
//! delete), so admission reads a few rows instead of scanning the
//! namespace. An update moves nothing: a pod's resources are fixed once it
//! is created (`objects::updated`), and other kinds count by number. The
//! rows are counted from the objects by the first create admitted under a
//! quota (the namespace may hold objects already, and a quota older than
//! the table has no rows), and dropped with the last quota or with the
//! namespace, so a quota set again counts afresh. They are only ever
//! written under the revision lock: a row, while it exists, is exact.

use std::collections::BTreeMap;

use serde_json::Value;
use skiff_api::Kind;
use skiff_api::kinds::pod::{PodSpec, Resources};
use skiff_api::kinds::quota::{
    self, COUNTED, PodUsage, Resource, ResourceQuotaSpec, Usage, check_create, check_pod_caps,
};
use sqlx::{PgConnection, Row};

use super::{ObjectKey, Store, StoreError, db_unavailable};

/// The caps of every ResourceQuota in `namespace`, parsed.
pub(super) async fn caps(
    conn: &mut PgConnection,
    namespace: &str,
) -> Result<Vec<(Resource, u64)>, sqlx::Error> {
    let bodies: Vec<Value> = sqlx::query_scalar(
        "SELECT body FROM objects WHERE kind = 'ResourceQuota' AND namespace = $1",
    )
    .bind(namespace)
    .fetch_all(conn)
    .await?;
    Ok(bodies
        .into_iter()
        .filter_map(|body| serde_json::from_value::<ResourceQuotaSpec>(body["spec"].clone()).ok())
        .flat_map(|spec| spec.caps())
        .collect())
}

/// The resources a namespace's `quota_usage` rows hold: every count and
/// every pod sum, whichever its quotas cap, so a quota edited to cap
/// another finds it there.
fn tracked() -> impl Iterator<Item = Resource> {
    COUNTED.into_iter().map(Resource::Count).chain([
        Resource::Memory,
        Resource::Instances,
        Resource::Cpu,
    ])
}

/// Amounts by resource, wide enough that sums never saturate while they
/// are kept (a `Usage` saturates at u64::MAX when it is read, as the sums
/// always did).
type Amounts = BTreeMap<Resource, u128>;

fn usage_of(amounts: &Amounts) -> Usage {
    let get = |r| u64::try_from(amounts.get(&r).copied().unwrap_or(0)).unwrap_or(u64::MAX);
    Usage {
        counts: COUNTED
            .into_iter()
            .map(|k| (k, get(Resource::Count(k))))
            .collect(),
        pods: PodUsage {
            memory: get(Resource::Memory),
            instances: get(Resource::Instances),
            cpu: get(Resource::Cpu),
        },
        tokens: 0,
    }
}

/// What one stored object of `kind` adds to its namespace's usage: one of
/// its kind and, for a pod, its sums (read from the stored object the same
/// way on create, delete and recount, so kept rows and a recount agree).
/// Nothing for kinds no quota counts.
pub(super) fn uses(kind: Kind, object: &Value) -> Vec<(Resource, u64)> {
    if !COUNTED.contains(&kind) {
        return Vec::new();
    }
    let mut uses = vec![(Resource::Count(kind), 1)];
    if kind == Kind::Pod {
        let resources = serde_json::from_value::<Resources>(object["spec"]["resources"].clone())
            .unwrap_or_default();
        let pod = PodUsage::of_resources(&resources);
        uses.extend([
            (Resource::Memory, pod.memory),
            (Resource::Instances, pod.instances),
            (Resource::Cpu, pod.cpu),
        ]);
    }
    uses
}

/// `uses` as the writer binds them: resource names, and amounts as text
/// (u64 has no SQL type; SQL casts them to numeric).
pub(super) fn binds(uses: &[(Resource, u64)]) -> (Vec<&'static str>, Vec<String>) {
    uses.iter()
        .map(|(resource, amount)| (resource.name(), amount.to_string()))
        .unzip()
}

/// What `namespace` uses, counted afresh from its objects: a scan of its
/// counted objects, for when its rows are missing.
async fn recount(conn: &mut PgConnection, namespace: &str) -> Result<Amounts, sqlx::Error> {
    let kinds: Vec<&str> = COUNTED.iter().map(|k| k.name()).collect();
    let rows = sqlx::query(
        "SELECT kind, count(*) AS n FROM objects WHERE namespace = $1 AND kind = ANY($2)
         GROUP BY kind",
    )
    .bind(namespace)
    .bind(&kinds)
    .fetch_all(&mut *conn)
    .await?;
    let mut amounts: Amounts = tracked().map(|r| (r, 0)).collect();
    for row in rows {
        if let Some(kind) = Kind::from_name(row.get("kind")) {
            amounts.insert(Resource::Count(kind), row.get::<i64, _>("n") as u128);
        }
    }
    let pods: Vec<Value> = sqlx::query_scalar(
        "SELECT jsonb_build_object('spec', jsonb_build_object('resources', body -> 'spec' -> 'resources'))
         FROM objects WHERE kind = 'Pod' AND namespace = $1",
    )
    .bind(namespace)
    .fetch_all(&mut *conn)
    .await?;
    for pod in pods {
        for (resource, amount) in uses(Kind::Pod, &pod) {
            if resource != Resource::Count(Kind::Pod) {
                *amounts.entry(resource).or_default() += u128::from(amount);
            }
        }
    }
    Ok(amounts)
}

/// Sets `namespace`'s rows to `amounts`. Only the writer calls this, under
/// the revision lock: a row written outside it could miss a write that
/// commits in between, and stay wrong from then on.
async fn store_usage(
    conn: &mut PgConnection,
    namespace: &str,
    amounts: &Amounts,
) -> Result<(), sqlx::Error> {
    let (resources, used): (Vec<&str>, Vec<String>) = amounts
        .iter()
        .map(|(resource, amount)| (resource.name(), amount.to_string()))
        .unzip();
    sqlx::query(
        "INSERT INTO quota_usage (namespace, resource, used)
         SELECT $1, resource, used::numeric FROM unnest($2::text[], $3::text[]) AS u(resource, used)
         ON CONFLICT (namespace, resource) DO UPDATE SET used = EXCLUDED.used",
    )
    .bind(namespace)
    .bind(&resources)
    .bind(&used)
    .execute(conn)
    .await
    .map(drop)
}

/// Drops `namespace`'s rows once no ResourceQuota is left in it, so writes
/// there stop keeping them. Writer only.
pub(super) async fn forget_if_unquoted(
    conn: &mut PgConnection,
    namespace: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM quota_usage WHERE namespace = $1
         AND NOT EXISTS (SELECT 1 FROM objects WHERE kind = 'ResourceQuota' AND namespace = $1)",
    )
    .bind(namespace)
    .execute(conn)
    .await
    .map(drop)
}

/// What `read` finds of a namespace's quotas.
struct Quotas {
    caps: Vec<(Resource, u64)>,
    /// Whether the namespace has any `quota_usage` rows (its creates and
    /// deletes must move them).
    kept: bool,
    /// What it uses, when its rows are all there.
    used: Option<Usage>,
}

/// `namespace`'s caps and rows: one round trip, as many as reading the
/// caps alone.
async fn read(conn: &mut PgConnection, namespace: &str) -> Result<Quotas, sqlx::Error> {
    let row = sqlx::query(
        "SELECT
           (SELECT coalesce(jsonb_agg(body -> 'spec'), '[]') FROM objects
            WHERE kind = 'ResourceQuota' AND namespace = $1) AS specs,
           (SELECT coalesce(jsonb_object_agg(resource, used::text), '{}') FROM quota_usage
            WHERE namespace = $1) AS used",
    )
    .bind(namespace)
    .fetch_one(conn)
    .await?;
    let specs: Vec<Value> = serde_json::from_value(row.get("specs")).unwrap_or_default();
    let caps = specs
        .into_iter()
        .filter_map(|spec| serde_json::from_value::<ResourceQuotaSpec>(spec).ok())
        .flat_map(|spec| spec.caps())
        .collect();
    let rows: BTreeMap<String, String> =
        serde_json::from_value(row.get("used")).unwrap_or_default();
    // A row missing (none kept yet, as for a quota older than the table,
    // or a resource counted since) or not a whole amount sends the caller
    // to a recount.
    let amounts: Option<Amounts> = tracked()
        .map(|r| Some((r, rows.get(r.name())?.parse::<u128>().ok()?)))
        .collect();
    Ok(Quotas {
        caps,
        kept: !rows.is_empty(),
        used: amounts.as_ref().map(usage_of),
    })
}

/// What admission decided about a create.
pub(super) struct Admission {
    /// Why it would exceed its namespace's quotas, if it would.
    pub refused: Option<StoreError>,
    /// Whether its namespace's usage is kept in rows the create must move.
    pub kept: bool,
    /// Whether its namespace has quotas or usage rows.
    pub quoted: bool,
}

/// Whether creating `object` at `key` fits its namespace's quotas.
/// `in_writer`: called under the revision lock, so a recount may be kept
/// in the rows (a dry run's may not, see `store_usage`).
pub(super) async fn admit(
    conn: &mut PgConnection,
    key: &ObjectKey,
    object: &Value,
    in_writer: bool,
) -> Result<Admission, sqlx::Error> {
    if !COUNTED.contains(&key.kind) {
        return Ok(Admission {
            refused: None,
            kept: false,
            quoted: false,
        });
    }
    let Quotas {
        caps,
        mut kept,
        used,
    } = read(conn, &key.namespace).await?;
    let refused = if caps.is_empty() {
        None
    } else if let Some(refused) = pod_caps_refusal(&caps, key.kind, object) {
        Some(refused)
    } else {
        let used = match used {
            Some(used) => used,
            None => {
                let amounts = recount(conn, &key.namespace).await?;
                if in_writer {
                    store_usage(conn, &key.namespace, &amounts).await?;
                    kept = true;
                }
                usage_of(&amounts)
            }
        };
        let pod = (key.kind == Kind::Pod)
            .then(|| serde_json::from_value::<PodSpec>(object["spec"].clone()).ok())
            .flatten()
            .map(|spec| PodUsage::of(&spec));
        check_create(&caps, &used, key.kind, pod)
            .err()
            .map(|e| StoreError::QuotaExceeded(e.to_string()))
    };
    Ok(Admission {
        quoted: kept || !caps.is_empty(),
        refused,
        kept,
    })
}

/// The per-pod caps against a pod's spec or a Deployment's template.
pub(super) fn pod_caps_refusal(
    caps: &[(Resource, u64)],
    kind: Kind,
    object: &Value,
) -> Option<StoreError> {
    let (spec, at) = match kind {
        Kind::Pod => (&object["spec"], "spec"),
        Kind::Deployment => (&object["spec"]["template"]["spec"], "spec.template.spec"),
        _ => return None,
    };
    let spec = serde_json::from_value::<PodSpec>(spec.clone()).ok()?;
    check_pod_caps(caps, &spec, at)
        .err()
        .map(|e| StoreError::QuotaExceeded(e.to_string()))
}

impl Store {
    /// `quota` (a stored ResourceQuota) with its status as of now: its
    /// caps and what the namespace uses of them.
    pub async fn with_quota_status(&self, mut quota: Value) -> Result<Value, StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let spec: ResourceQuotaSpec =
            serde_json::from_value(quota["spec"].clone()).unwrap_or_default();
        let namespace = quota["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let Quotas { used, .. } = read(&mut conn, &namespace).await.map_err(unavailable)?;
        // Read only: a recount here is not kept (see `store_usage`).
        let mut used = match used {
            Some(used) => used,
            None => usage_of(&recount(&mut conn, &namespace).await.map_err(unavailable)?),
        };
        if spec.caps().iter().any(|(r, _)| *r == Resource::Tokens) {
            used.tokens = tokens_used(&mut conn, &namespace)
                .await
                .map_err(unavailable)?;
        }
        quota["status"] =
            serde_json::to_value(quota::status(&spec, &used)).expect("API types serialise");
        Ok(quota)
    }

    /// Whether a create would exceed its namespace's quotas (for a dry run;
    /// real creates check inside their transaction).
    pub async fn check_quota(&self, key: &ObjectKey, object: &Value) -> Result<(), StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        match admit(&mut conn, key, object, false)
            .await
            .map_err(unavailable)?
            .refused
        {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }
}

/// Caps on `tokens` are checked when a token is made, in its transaction,
/// after a lock per namespace that every token create there takes: so
/// racing creates never exceed the cap (tokens are not objects, and the
/// revision lock does not cover them).
pub(super) async fn admit_token(
    conn: &mut PgConnection,
    namespace: &str,
) -> Result<(), StoreError> {
    let unavailable = |e: sqlx::Error| db_unavailable(&e);
    let hard = caps(conn, namespace)
        .await
        .map_err(unavailable)?
        .into_iter()
        .filter(|(resource, _)| *resource == Resource::Tokens)
        .map(|(_, hard)| hard)
        .min();
    let Some(hard) = hard else {
        return Ok(());
    };
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('skiff tokens of ' || $1))")
        .bind(namespace)
        .execute(&mut *conn)
        .await
        .map_err(unavailable)?;
    let used = tokens_used(conn, namespace).await.map_err(unavailable)?;
    if used >= hard {
        return Err(StoreError::QuotaExceeded(format!(
            "exceeded quota: tokens, used {used}, hard {hard}"
        )));
    }
    Ok(())
}

/// The tokens `namespace`'s quota counts: unexpired role tokens of the
/// namespace as it is now, and unexpired service account tokens bound to
/// no pod.
async fn tokens_used(conn: &mut PgConnection, namespace: &str) -> Result<u64, sqlx::Error> {
    let count: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM token_roles r JOIN tokens t ON t.id = r.token_id
                 WHERE r.namespace = $1
                   AND (t.expires_at IS NULL OR t.expires_at > now())
                   AND r.namespace_uid = (SELECT uid FROM objects
                       WHERE kind = 'Namespace' AND namespace = '' AND name = $1))
              + (SELECT count(*) FROM service_account_tokens
                 WHERE namespace = $1 AND pod_uid IS NULL AND expires_at > now())",
    )
    .bind(namespace)
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}
