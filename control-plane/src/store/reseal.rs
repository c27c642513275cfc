//! Sealing again what is stored under another key than the current one
//! (after a rotation), or not sealed at all (written before encryption):
//! Secrets in `objects`, their entries in the change log, and the cluster's
//! own secrets. Runs beside live writers: a row changed meanwhile is left
//! to its writer, which seals with the key it holds, and is looked at
//! again by the next pass.

use serde_json::Value;
use skiff_api::Kind;
use sqlx::Row;

use super::{Store, StoreError, db_unavailable};
use crate::encryption::{Keyring, cluster_secret_context};

/// Rows read per query, so memory stays bounded whatever the table's size.
const PAGE: i64 = 500;

/// Which stored values a pass seals again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reseal {
    /// Everything not sealed under the current key.
    NotUnderCurrentKey,
    /// Only what is stored in plaintext (at start, after an upgrade).
    Plaintext,
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResealReport {
    pub objects: u64,
    pub changes: u64,
    pub cluster_secrets: u64,
    /// Objects a writer changed while the pass ran, left for another pass.
    pub raced: u64,
}

impl ResealReport {
    pub fn total(&self) -> u64 {
        self.objects + self.changes + self.cluster_secrets
    }
}

/// The condition a sealed JSON column (`column`) meets when `mode` wants it
/// sealed again; `$1` is the current key's id.
fn wants(column: &str, mode: Reseal) -> String {
    match mode {
        Reseal::NotUnderCurrentKey => {
            format!("({column} -> 'sealed' ->> 'key') IS DISTINCT FROM $1")
        }
        Reseal::Plaintext => format!("NOT ({column} ? 'sealed') AND $1::text IS NOT NULL"),
    }
}

impl Store {
    /// One pass over every stored Secret and cluster secret.
    pub async fn reseal(&self, mode: Reseal) -> Result<ResealReport, StoreError> {
        let unavailable = |e: sqlx::Error| db_unavailable(&e);
        let primary = self.keyring.primary_id();
        let mut report = ResealReport::default();

        // Secrets, by name, a page at a time.
        let mut after = (String::new(), String::new());
        loop {
            let rows = sqlx::query(&format!(
                "SELECT namespace, name, resource_version, body FROM objects
                 WHERE kind = 'Secret' AND {} AND (namespace, name) > ($2, $3)
                 ORDER BY namespace, name LIMIT $4",
                wants("body", mode)
            ))
            .bind(&primary)
            .bind(&after.0)
            .bind(&after.1)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
            let Some(last) = rows.last() else { break };
            after = (last.get("namespace"), last.get("name"));
            for row in &rows {
                let body = self
                    .keyring
                    .seal_secret(&self.opened(Kind::Secret, row.get("body"))?);
                let updated = sqlx::query(
                    "UPDATE objects SET body = $4 WHERE kind = 'Secret'
                     AND namespace = $1 AND name = $2 AND resource_version = $3",
                )
                .bind(row.get::<String, _>("namespace"))
                .bind(row.get::<String, _>("name"))
                .bind(row.get::<i64, _>("resource_version"))
                .bind(&body)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
                if updated.rows_affected() == 1 {
                    report.objects += 1;
                } else {
                    report.raced += 1;
                }
            }
        }

        // Their change log entries, which nobody else writes once made.
        let mut after_revision = 0i64;
        loop {
            let rows = sqlx::query(&format!(
                "SELECT revision, object, previous FROM changes
                 WHERE kind = 'Secret' AND revision > $2
                   AND ({} OR (previous IS NOT NULL AND {}))
                 ORDER BY revision LIMIT $3",
                wants("object", mode),
                wants("previous", mode)
            ))
            .bind(&primary)
            .bind(after_revision)
            .bind(PAGE)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
            let Some(last) = rows.last() else { break };
            after_revision = last.get("revision");
            for row in &rows {
                let object = self
                    .keyring
                    .seal_secret(&self.opened(Kind::Secret, row.get("object"))?);
                let previous = row
                    .get::<Option<Value>, _>("previous")
                    .map(|p| {
                        self.opened(Kind::Secret, p)
                            .map(|plain| self.keyring.seal_secret(&plain))
                    })
                    .transpose()?;
                sqlx::query("UPDATE changes SET object = $2, previous = $3 WHERE revision = $1")
                    .bind(row.get::<i64, _>("revision"))
                    .bind(&object)
                    .bind(&previous)
                    .execute(&self.pool)
                    .await
                    .map_err(unavailable)?;
                report.changes += 1;
            }
        }

        // The cluster's own secrets: few, read whole.
        let rows = sqlx::query("SELECT name, value FROM cluster_secrets")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        for row in rows {
            let name: String = row.get("name");
            let stored: Vec<u8> = row.get("value");
            let sealed = Keyring::is_sealed(&stored);
            let current = Keyring::key_of(&stored).as_deref() == Some(primary.as_str());
            let wanted = match mode {
                Reseal::NotUnderCurrentKey => !current,
                Reseal::Plaintext => !sealed,
            };
            if !wanted {
                continue;
            }
            let context = cluster_secret_context(&name);
            let plain = if sealed {
                self.keyring
                    .unseal(&format!("cluster secret {name}"), &context, &stored)?
            } else {
                stored.clone()
            };
            sqlx::query("UPDATE cluster_secrets SET value = $3 WHERE name = $1 AND value = $2")
                .bind(&name)
                .bind(&stored)
                .bind(self.keyring.seal(&context, &plain))
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
            report.cluster_secrets += 1;
        }
        Ok(report)
    }

    /// Which keys stored values name, and how many values name each
    /// (`None` for plaintext).
    pub async fn keys_in_use(&self) -> Result<Vec<(Option<String>, i64)>, StoreError> {
        let mut uses: Vec<(Option<String>, i64)> = sqlx::query_as(
            "SELECT key, count(*) FROM (
                 SELECT body -> 'sealed' ->> 'key' AS key FROM objects WHERE kind = 'Secret'
                 UNION ALL
                 SELECT object -> 'sealed' ->> 'key' FROM changes WHERE kind = 'Secret'
                 UNION ALL
                 SELECT previous -> 'sealed' ->> 'key' FROM changes
                 WHERE kind = 'Secret' AND previous IS NOT NULL
             ) k GROUP BY key ORDER BY key",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(|e| db_unavailable(&e))?;
        let secrets: Vec<Vec<u8>> = sqlx::query_scalar("SELECT value FROM cluster_secrets")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| db_unavailable(&e))?;
        for stored in secrets {
            let key = Keyring::key_of(&stored);
            match uses.iter_mut().find(|(k, _)| *k == key) {
                Some((_, n)) => *n += 1,
                None => uses.push((key, 1)),
            }
        }
        Ok(uses)
    }
}
