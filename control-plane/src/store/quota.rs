//! ResourceQuota enforcement: inside a create's transaction, under the
//! revision lock every write takes, what the namespace uses is read afresh
//! and the object is refused if it does not fit. So creates racing from
//! any number of processes can never exceed a quota: each sees every
//! write committed before it, and those earlier in its own batch.

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

/// What `namespace` uses now: its objects of each of `kinds` and, when
/// `pods` is asked for, the sums over its pods. (Both are read afresh, so
/// a create costs a scan of the namespace's objects of its kind; a usage
/// table kept by the writer would make it constant.)
pub(super) async fn usage(
    conn: &mut PgConnection,
    namespace: &str,
    kinds: &[Kind],
    pods: bool,
) -> Result<Usage, sqlx::Error> {
    let kinds: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let rows = if kinds.is_empty() {
        Vec::new()
    } else {
        sqlx::query(
            "SELECT kind, count(*) AS n FROM objects WHERE namespace = $1 AND kind = ANY($2)
         GROUP BY kind",
        )
        .bind(namespace)
        .bind(&kinds)
        .fetch_all(&mut *conn)
        .await?
    };
    let mut usage = Usage::default();
    for row in rows {
        if let Some(kind) = Kind::from_name(row.get("kind")) {
            usage.counts.insert(kind, row.get::<i64, _>("n") as u64);
        }
    }
    if pods {
        let resources: Vec<Value> = sqlx::query_scalar(
            "SELECT body -> 'spec' -> 'resources' FROM objects
             WHERE kind = 'Pod' AND namespace = $1",
        )
        .bind(namespace)
        .fetch_all(&mut *conn)
        .await?;
        for resources in resources {
            let resources = serde_json::from_value::<Resources>(resources).unwrap_or_default();
            usage.pods.add(PodUsage::of_resources(&resources));
        }
    }
    Ok(usage)
}

/// Why creating `object` at `key` would exceed its namespace's quotas, if
/// it would.
pub(super) async fn refusal(
    conn: &mut PgConnection,
    key: &ObjectKey,
    object: &Value,
) -> Result<Option<StoreError>, sqlx::Error> {
    if !COUNTED.contains(&key.kind) {
        return Ok(None);
    }
    let caps = caps(conn, &key.namespace).await?;
    if caps.is_empty() {
        return Ok(None);
    }
    if let Some(refused) = pod_caps_refusal(&caps, key.kind, object) {
        return Ok(Some(refused));
    }
    let pod = (key.kind == Kind::Pod)
        .then(|| serde_json::from_value::<PodSpec>(object["spec"].clone()).ok())
        .flatten()
        .map(|spec| PodUsage::of(&spec));
    let sums = pod.is_some()
        && caps
            .iter()
            .any(|(r, _)| matches!(r, Resource::Memory | Resource::Instances | Resource::Cpu));
    let counted = caps.iter().any(|(r, _)| *r == Resource::Count(key.kind));
    let kinds: &[Kind] = if counted { &[key.kind] } else { &[] };
    let used = usage(conn, &key.namespace, kinds, sums).await?;
    Ok(check_create(&caps, &used, key.kind, pod)
        .err()
        .map(|e| StoreError::QuotaExceeded(e.to_string())))
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
        let used = usage(&mut conn, &namespace, &COUNTED, true)
            .await
            .map_err(unavailable)?;
        quota["status"] =
            serde_json::to_value(quota::status(&spec, &used)).expect("API types serialise");
        Ok(quota)
    }

    /// Whether a create would exceed its namespace's quotas (for a dry run;
    /// real creates check inside their transaction).
    pub async fn check_quota(&self, key: &ObjectKey, object: &Value) -> Result<(), StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        match refusal(&mut conn, key, object).await.map_err(unavailable)? {
            Some(refused) => Err(refused),
            None => Ok(()),
        }
    }
}
