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

use crate::store::Store;
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
            tokio::try_join!(
                gc::run(store.clone(), hub.clone()),
                crate::events::expire(store.clone(), event_ttl),
                nodes::run(store.clone(), nodes),
                autoscaler::run(
                    store.clone(),
                    hub.clone(),
                    crate::events::recorder(&store, "autoscaler")
                ),
                reconciler::run(
                    store.clone(),
                    hub.clone(),
                    deployments::Deployments {
                        store: store.clone(),
                        events: crate::events::recorder(&store, "deployment-controller"),
                    }
                ),
                reconciler::run(
                    store.clone(),
                    hub.clone(),
                    accounts::ServiceAccounts {
                        store: store.clone()
                    }
                ),
                reconciler::run(store.clone(), hub, endpoints::Endpoints::new(store)),
            )?;
            Ok(())
        }
    })
    .await
}
