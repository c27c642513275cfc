//! The cluster's proxy key: made once, the same from every control-plane
//! process however many ask at once, and read only by each node's own
//! token and cluster admins.

use crate::auth::token;
use crate::support::{Cluster, client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_key_is_made_once_and_read_only_by_its_node_and_admins() {
    let cluster = Cluster::new();
    let (first, second) = (cluster.serve(&[]), cluster.serve(&[]));
    let admin = client(&first, &cluster.admin_token);
    let n1 = token(&admin, None, "node", Some("n1")).await;
    let n2 = token(&admin, None, "node", Some("n2")).await;

    // Both processes asked at once, by both nodes, before any key exists.
    let asks = [
        (client(&first, &n1), "n1"),
        (client(&second, &n1), "n1"),
        (client(&first, &n2), "n2"),
        (client(&second, &n2), "n2"),
    ]
    .map(|(client, node)| tokio::spawn(async move { client.proxy_key(node).await.unwrap() }));
    let mut keys = Vec::new();
    for ask in asks {
        keys.push(ask.await.unwrap());
    }
    assert_eq!(keys[0].len(), 32);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
    assert_eq!(
        client(&second, &cluster.admin_token)
            .proxy_key("n1")
            .await
            .unwrap(),
        keys[0]
    );

    // Each node's API key is its own: derived from the cluster's key and
    // its name, never the cluster's key itself.
    let n1_keys = client(&first, &n1).node_keys("n1").await.unwrap();
    let n2_keys = client(&second, &n2).node_keys("n2").await.unwrap();
    assert_eq!(n1_keys.proxy, keys[0]);
    assert_eq!(n1_keys.api.len(), 32);
    assert_ne!(n1_keys.api, n1_keys.proxy);
    assert_ne!(n1_keys.api, n2_keys.api);
    assert_eq!(
        n1_keys.api,
        skiff_client::node_api::derive_node_key(&keys[0], "n1")
    );

    // Another node's key, or a tenant's look: refused.
    let refused = client(&first, &n1).proxy_key("n2").await.unwrap_err();
    assert_eq!(refused.code(), Some(403), "{refused}");
    let refused = client(&first, &n1).node_keys("n2").await.unwrap_err();
    assert_eq!(refused.code(), Some(403), "{refused}");
    assert_eq!(
        refused.to_string(),
        "only node n2's own token (or a cluster admin) may read its proxy key"
    );
    let tenant = token(&admin, Some("default"), "admin", None).await;
    let refused = client(&first, &tenant).proxy_key("n1").await.unwrap_err();
    assert_eq!(refused.code(), Some(403), "{refused}");
}
