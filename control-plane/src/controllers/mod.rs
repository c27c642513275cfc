//! Controllers: loops that drive the cluster toward what its objects
//! declare. They run in every control-plane process and act only in the one
//! holding the controllers' advisory lock ([`crate::leader`]).

pub mod accounts;
pub mod autoscaler;
pub mod deployments;
pub mod endpoints;
pub mod gc;
pub mod nodes;
pub mod reconciler;
pub mod rollout;

use std::time::Duration;

use crate::store::{Store, StoreError};
use crate::watch::WatchHub;

/// The advisory lock key of the controllers' leadership.
const LEADER_KEY: i64 = 0x736b_6966_6663_746c; // "skiffctl"

/// The controllers' leadership loop. A term runs every controller; one
/// failing ends the term for all, and the next term starts them afresh. It
/// never returns; dropping it ends the term and gives up the lock.
pub async fn run(
    store: Store,
    hub: WatchHub,
    nodes: nodes::NodeLifecycleConfig,
    event_ttl: Duration,
) {
    crate::leader::run(store.clone(), LEADER_KEY, "controllers", move || {
        let (store, hub, nodes) = (store.clone(), hub.clone(), nodes.clone());
        async move {
            // Each controller is a task of its own: they use both cores,
            // and a long burst of work in one (a resync of thousands of
            // objects) never delays another's turn, such as the node
            // lifecycle's check of leases. Dropping the set (a lost lock)
            // aborts them all.
            let mut term = tokio::task::JoinSet::new();
            term.spawn(gc::run(store.clone(), hub.clone()));
            term.spawn(crate::events::expire(store.clone(), event_ttl));
            term.spawn(nodes::run(store.clone(), nodes));
            term.spawn(autoscaler::run(
                store.clone(),
                hub.clone(),
                crate::events::recorder(&store, "autoscaler"),
            ));
            term.spawn(reconciler::run(
                store.clone(),
                hub.clone(),
                deployments::Deployments {
                    store: store.clone(),
                    events: crate::events::recorder(&store, "deployment-controller"),
                },
            ));
            term.spawn(reconciler::run(
                store.clone(),
                hub.clone(),
                accounts::ServiceAccounts {
                    store: store.clone(),
                },
            ));
            term.spawn(reconciler::run(
                store.clone(),
                hub,
                endpoints::Endpoints::new(store),
            ));
            // One failing, by an error or a panic, ends the term for all.
            while let Some(ended) = term.join_next().await {
                match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => {
                        return Err(StoreError::Unavailable(format!("a controller ended: {e}")));
                    }
                }
            }
            Ok(())
        }
    })
    .await
}
