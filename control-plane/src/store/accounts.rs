//! Tokens of ServiceAccounts: stored by hash, bound to the account's uid
//! and optionally to a pod's; what one may do is read with it, from the
//! account as it is now.

use sqlx::Row;

use super::{Store, StoreError, db_unavailable};

/// Whom a ServiceAccount token is for.
#[derive(Debug, Clone)]
pub struct AccountTokenGrant<'a> {
    pub namespace: &'a str,
    pub account: &'a str,
    pub account_uid: uuid::Uuid,
    /// The pod (name, uid) the token dies with, if any.
    pub pod: Option<(&'a str, uuid::Uuid)>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A ServiceAccount token that still works: its account's namespace and
/// role now, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTokenRecord {
    pub namespace: String,
    pub role: Option<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl Store {
    pub async fn create_account_token(
        &self,
        secret_hash: &[u8],
        grant: &AccountTokenGrant<'_>,
    ) -> Result<(), StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // A pod's own tokens are bounded by its pods; those people hold
        // count against the namespace's `tokens`.
        if grant.pod.is_none() {
            super::quota::admit_token(&mut tx, grant.namespace).await?;
        }
        sqlx::query(
            "INSERT INTO service_account_tokens
                 (secret_hash, namespace, account, account_uid, pod_name, pod_uid, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(secret_hash)
        .bind(grant.namespace)
        .bind(grant.account)
        .bind(grant.account_uid)
        .bind(grant.pod.map(|(name, _)| name))
        .bind(grant.pod.map(|(_, uid)| uid))
        .bind(grant.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    /// The token with this hash, if it is unexpired, its account is the
    /// one it was made for, and its pod (if bound to one) is still there,
    /// not being deleted and not finished.
    pub async fn find_account_token(
        &self,
        secret_hash: &[u8],
    ) -> Result<Option<AccountTokenRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT t.namespace, a.body -> 'spec' ->> 'role' AS role, t.expires_at
             FROM service_account_tokens t
             JOIN objects a ON a.kind = 'ServiceAccount' AND a.namespace = t.namespace
                  AND a.name = t.account AND a.uid = t.account_uid
             WHERE t.secret_hash = $1 AND t.expires_at > now()
               AND (t.pod_uid IS NULL OR EXISTS (
                   SELECT 1 FROM objects p
                   WHERE p.kind = 'Pod' AND p.namespace = t.namespace AND p.name = t.pod_name
                     AND p.uid = t.pod_uid
                     AND p.body -> 'metadata' -> 'deletionTimestamp' IS NULL
                     AND coalesce(p.body -> 'status' ->> 'phase', '')
                         NOT IN ('Succeeded', 'Failed')))",
        )
        .bind(secret_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))?;
        Ok(row.map(|row| AccountTokenRecord {
            namespace: row.get("namespace"),
            role: row.get("role"),
            expires_at: row.get("expires_at"),
        }))
    }

    /// Forgets tokens that expired: they no longer authenticate anyway.
    pub async fn delete_expired_account_tokens(&self) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM service_account_tokens WHERE expires_at <= now()")
            .execute(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        Ok(deleted.rows_affected())
    }
}
