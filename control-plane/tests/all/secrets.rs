//! Secrets at rest: what the database holds is read here directly, table
//! by table, and must never contain a Secret's data (nor its base64), an
//! annotation of one, or the cluster's proxy key; while every client keeps
//! reading plaintext, across a key rotation run beside live control planes
//! and after an upgrade from a version that stored plaintext.

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::StreamExt;
use serde_json::{Value, json};
use skiff_api::{EventType, Kind};
use skiff_client::{Client, WatchOptions};
use sqlx::{PgPool, Row};

use crate::auth::token;
use crate::support::{Cluster, binary, client};

const PASSWORD: &str = "hunter2-plaintext-marker";
const TOKEN: &str = "token-plaintext-marker";
const NOTE: &str = "annotation-plaintext-marker";

fn secret(name: &str, password: &str) -> Value {
    json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "Secret",
        "metadata": {"name": name, "labels": {"app": "db"},
                     "annotations": {"note": NOTE}},
        "stringData": {"password": password},
        "data": {"token": STANDARD.encode(TOKEN)},
    })
}

fn data(object: &Value, key: &str) -> String {
    let encoded = object["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {object}"));
    String::from_utf8(STANDARD.decode(encoded).expect("base64")).expect("utf-8")
}

async fn database(cluster: &Cluster) -> PgPool {
    PgPool::connect(&cluster.database_url)
        .await
        .expect("the test reads the database directly")
}

/// Everything the tables that hold objects, their history and the
/// cluster's secrets contain, as text.
async fn every_stored_byte(db: &PgPool) -> String {
    let mut text = String::new();
    for query in [
        "SELECT body::text FROM objects",
        "SELECT object::text || coalesce(previous::text, '') FROM changes",
    ] {
        for row in sqlx::query(query).fetch_all(db).await.expect(query) {
            text.push_str(row.get::<&str, _>(0));
            text.push('\n');
        }
    }
    text
}

/// The cluster secrets as stored: each sealed, none holding `key`.
async fn assert_cluster_secrets_sealed(db: &PgPool, key: &[u8]) {
    let values: Vec<Vec<u8>> = sqlx::query_scalar("SELECT value FROM cluster_secrets")
        .fetch_all(db)
        .await
        .unwrap();
    assert!(!values.is_empty());
    for value in values {
        assert!(
            value.starts_with(b"{\"v\":1,"),
            "a cluster secret is not sealed"
        );
        assert!(
            !value.windows(key.len()).any(|w| w == key),
            "a cluster secret is stored as it is"
        );
        let text = String::from_utf8(value).expect("a sealed value is JSON");
        assert!(
            !text.contains(&STANDARD.encode(key)[..40]),
            "stored in base64"
        );
    }
}

fn assert_no_plaintext(stored: &str) {
    for plain in [PASSWORD, TOKEN, NOTE] {
        assert!(!stored.contains(plain), "{plain} is stored in plaintext");
        let encoded = STANDARD.encode(plain);
        assert!(
            !stored.contains(&encoded[..encoded.len() - 4]),
            "{plain} is stored in base64"
        );
    }
}

/// The key ids stored Secrets and cluster secrets name (`plain` for none).
async fn stored_key_ids(db: &PgPool) -> Vec<String> {
    let mut ids: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT coalesce(k, 'plain') FROM (
             SELECT body -> 'sealed' ->> 'key' AS k FROM objects WHERE kind = 'Secret'
             UNION ALL SELECT object -> 'sealed' ->> 'key' FROM changes WHERE kind = 'Secret'
             UNION ALL SELECT previous -> 'sealed' ->> 'key' FROM changes
                       WHERE kind = 'Secret' AND previous IS NOT NULL
             UNION ALL SELECT CASE WHEN get_byte(value, 0) = 123
                                   THEN convert_from(value, 'UTF8')::jsonb ->> 'key' END
                       FROM cluster_secrets
         ) ids ORDER BY 1",
    )
    .fetch_all(db)
    .await
    .expect("key ids");
    ids.dedup();
    ids
}

fn key_lines(cluster: &Cluster) -> Vec<String> {
    std::fs::read_to_string(testkit::encryption_key_file(&cluster.database_url))
        .expect("the key file")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_and_the_proxy_key_are_stored_only_as_ciphertext() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin = client(&plane, &cluster.admin_token);
    let start =
        admin.get(Kind::Namespace, None, "default").await.unwrap()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();

    // Created, read, updated (so the change log has a previous), deleted,
    // and swept with a namespace.
    let created = admin
        .create(Kind::Secret, Some("default"), &secret("db", PASSWORD))
        .await
        .unwrap();
    assert_eq!(data(&created, "password"), PASSWORD);
    assert_eq!(created["metadata"]["annotations"]["note"], NOTE);
    let read = admin
        .get(Kind::Secret, Some("default"), "db")
        .await
        .unwrap();
    assert_eq!(data(&read, "password"), PASSWORD);
    assert_eq!(data(&read, "token"), TOKEN);
    assert_eq!(read["metadata"]["annotations"]["note"], NOTE);
    let patched = admin
        .patch(
            Kind::Secret,
            Some("default"),
            "db",
            &json!({"stringData": {"password": format!("{PASSWORD}-2")}}),
            false,
        )
        .await
        .unwrap();
    assert_eq!(data(&patched, "password"), format!("{PASSWORD}-2"));
    assert_eq!(
        data(&patched, "token"),
        TOKEN,
        "the sealed part merges whole"
    );
    admin
        .create(Kind::Secret, Some("default"), &secret("gone", PASSWORD))
        .await
        .unwrap();
    let deleted = admin
        .delete(Kind::Secret, Some("default"), "gone", None)
        .await
        .unwrap();
    assert_eq!(data(&deleted, "password"), PASSWORD);
    admin
        .create(
            Kind::Namespace,
            None,
            &json!({"apiVersion": skiff_api::API_VERSION, "kind": "Namespace",
                    "metadata": {"name": "doomed"}, "spec": {}}),
        )
        .await
        .unwrap();
    admin
        .create(Kind::Secret, Some("doomed"), &secret("db", PASSWORD))
        .await
        .unwrap();
    admin
        .delete(Kind::Namespace, None, "doomed", None)
        .await
        .unwrap();
    // A list and a label-selected list open them too.
    let listed = admin
        .list_all(
            Kind::Secret,
            Some("default"),
            &skiff_client::ListOptions {
                label_selector: Some("app=db".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(data(&listed.items[0], "token"), TOKEN);

    // A watch from before all of it sees every change in plaintext.
    let mut events = Box::pin(
        admin
            .watch(
                Kind::Secret,
                None,
                &WatchOptions {
                    resource_version: Some(start),
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
    );
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let event = events.next().await.expect("an event").expect("an event");
        if matches!(
            event.event_type,
            EventType::Added | EventType::Modified | EventType::Deleted
        ) {
            seen.push(data(&event.object, "token"));
        }
    }
    assert!(seen.iter().all(|t| t == TOKEN), "{seen:?}");

    // A Secret that brings its own `sealed` field, as if already sealed, to
    // be stored as it is: refused, as any unknown field.
    let mut forged = secret("forged", PASSWORD);
    forged["sealed"] = json!({"v": 1, "key": "k0", "dek": "", "data": ""});
    let refused = admin
        .create(Kind::Secret, Some("default"), &forged)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(422), "{refused}");

    let node = token(&admin, None, "node", Some("n1")).await;
    let proxy_key = client(&plane, &node).proxy_key("n1").await.unwrap();

    let db = database(&cluster).await;
    let stored = every_stored_byte(&db).await;
    assert_no_plaintext(&stored);
    assert_cluster_secrets_sealed(&db, &proxy_key).await;
    // What is sealed names the key file's one key; labels stay queryable.
    assert_eq!(stored_key_ids(&db).await, key_lines(&cluster));
    let labels: Value =
        sqlx::query_scalar("SELECT labels FROM objects WHERE kind = 'Secret' AND name = 'db'")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(labels, json!({"app": "db"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_reencrypts_everything_while_two_control_planes_keep_serving() {
    let cluster = Cluster::new();
    let (first, second) = (cluster.serve(&[]), cluster.serve(&[]));
    let admin = client(&first, &cluster.admin_token);
    for i in 0..20 {
        let name = format!("s{i}");
        admin
            .create(Kind::Secret, Some("default"), &secret(&name, PASSWORD))
            .await
            .unwrap();
        admin
            .patch(
                Kind::Secret,
                Some("default"),
                &name,
                &json!({"metadata": {"labels": {"round": "2"}}}),
                false,
            )
            .await
            .unwrap();
    }
    let node = token(&admin, None, "node", Some("n1")).await;
    let proxy_key = client(&first, &node).proxy_key("n1").await.unwrap();
    let db = database(&cluster).await;
    let old = key_lines(&cluster);
    assert_eq!(stored_key_ids(&db).await, old);

    // Writers keep going on the other process while the rotation runs.
    let writer = client(&second, &cluster.admin_token);
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let writes = tokio::spawn(async move {
        let mut n = 0;
        loop {
            let name = format!("during-{n}");
            writer
                .create(Kind::Secret, Some("default"), &secret(&name, PASSWORD))
                .await
                .expect("writes go on during a rotation");
            n += 1;
            if stopped.try_recv().is_ok() {
                return n;
            }
        }
    });
    let key_file = testkit::encryption_key_file(&cluster.database_url);
    let output = tokio::task::spawn_blocking({
        let url = cluster.database_url.clone();
        move || {
            Command::new(binary())
                .args(["rotate-encryption-key", "--database-url", &url])
                .arg("--encryption-key-file")
                .arg(&key_file)
                .arg("--prune")
                .output()
                .expect("rotate runs")
        }
    })
    .await
    .unwrap();
    let _ = stop.send(());
    let written = writes.await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(written > 0);

    // One key left, a new one, and everything stored is under it.
    let new = key_lines(&cluster);
    assert_eq!(new.len(), 1, "{stdout}");
    assert_ne!(new, old);
    assert!(
        stdout.contains(&format!("Every stored value is encrypted under {}", new[0])),
        "{stdout}"
    );
    assert_eq!(stored_key_ids(&db).await, new);
    assert_no_plaintext(&every_stored_byte(&db).await);
    assert_cluster_secrets_sealed(&db, &proxy_key).await;

    // Both processes read everything, old and new, without a restart.
    for plane in [&first, &second] {
        let api = client(plane, &cluster.admin_token);
        let all = api
            .list_all(Kind::Secret, Some("default"), &Default::default())
            .await
            .unwrap();
        assert_eq!(all.items.len(), 20 + written);
        assert!(all.items.iter().all(|s| data(s, "password") == PASSWORD));
        assert_eq!(
            client(plane, &node).proxy_key("n1").await.unwrap(),
            proxy_key
        );
    }
    // And what they write now is under the new key.
    client(&first, &cluster.admin_token)
        .create(Kind::Secret, Some("default"), &secret("after", PASSWORD))
        .await
        .unwrap();
    assert_eq!(stored_key_ids(&db).await, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stored_in_plaintext_before_an_upgrade_are_sealed_at_start() {
    let cluster = Cluster::new();
    let db = database(&cluster).await;
    // What a control plane before encryption left behind: a Secret, its
    // change, and a proxy key, all in plaintext.
    let body = json!({
        "apiVersion": skiff_api::API_VERSION, "kind": "Secret",
        "metadata": {"name": "legacy", "namespace": "default", "uid": uuid::Uuid::new_v4().to_string(),
                     "resourceVersion": "1000", "creationTimestamp": "2026-01-01T00:00:00Z",
                     "annotations": {"note": NOTE}},
        "data": {"password": STANDARD.encode(PASSWORD)},
    });
    let legacy_key = [7u8; 32];
    let mut tx = db.begin().await.unwrap();
    sqlx::query("UPDATE revision SET value = 1000")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO objects (kind, namespace, name, uid, resource_version, body)
         VALUES ('Secret', 'default', 'legacy', ($1::jsonb #>> '{metadata,uid}')::uuid, 1000, $1)",
    )
    .bind(&body)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO changes (revision, kind, namespace, name, type, object)
         VALUES (1000, 'Secret', 'default', 'legacy', 'ADDED', $1)",
    )
    .bind(&body)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO cluster_secrets (name, value) VALUES ('proxy-key', $1)")
        .bind(&legacy_key[..])
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        stored_key_ids(&db).await.first().map(String::as_str),
        Some("plain")
    );

    let plane = cluster.serve(&[]);
    assert_eq!(stored_key_ids(&db).await, key_lines(&cluster));
    assert_no_plaintext(&every_stored_byte(&db).await);
    assert_cluster_secrets_sealed(&db, &legacy_key).await;
    let admin = client(&plane, &cluster.admin_token);
    let read = admin
        .get(Kind::Secret, Some("default"), "legacy")
        .await
        .unwrap();
    assert_eq!(data(&read, "password"), PASSWORD);
    assert_eq!(read["metadata"]["annotations"]["note"], NOTE);
    let node = token(&admin, None, "node", Some("n1")).await;
    assert_eq!(
        client(&plane, &node).proxy_key("n1").await.unwrap(),
        legacy_key,
        "the key the nodes already use is kept, sealed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_key_a_control_plane_refuses_to_start_or_answers_500() {
    let cluster = Cluster::new();
    let plane = cluster.serve(&[]);
    let admin: Client = client(&plane, &cluster.admin_token);
    admin
        .create(Kind::Secret, Some("default"), &secret("db", PASSWORD))
        .await
        .unwrap();
    admin
        .create(
            Kind::ConfigMap,
            Some("default"),
            &json!({
            "apiVersion": skiff_api::API_VERSION, "kind": "ConfigMap",
            "metadata": {"name": "plain"}, "data": {"greeting": "hi"}}),
        )
        .await
        .unwrap();

    // No key file: serve says so and exits.
    let missing = Command::new(binary())
        .args(["serve", "--database-url", &cluster.database_url])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("SKIFF_ENCRYPTION_KEY_FILE")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("--encryption-key-file"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // Another cluster's keys: the Secret is a 500 naming the key it needs,
    // never garbage or a 4xx; everything else still serves.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.keys");
    control_plane::encryption::Keyring::create_file(&other).unwrap();
    let wrong = cluster.serve(&["--encryption-key-file", other.to_str().unwrap()]);
    let api = client(&wrong, &cluster.admin_token);
    let error = api
        .get(Kind::Secret, Some("default"), "db")
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some(500), "{error}");
    let wanted = &key_lines(&cluster)[0];
    assert!(
        error.to_string().contains(&format!(
            "secret default/db is encrypted under key {wanted}, which the encryption key file does not hold"
        )),
        "{error}"
    );
    let config_map = api
        .get(Kind::ConfigMap, Some("default"), "plain")
        .await
        .unwrap();
    assert_eq!(config_map["data"]["greeting"], "hi");
}
