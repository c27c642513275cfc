//! Controllers: loops that drive the cluster toward what its objects
//! declare. They run in every control-plane process and act only in the one
//! holding the controllers' advisory lock ([`crate::leader`]).

pub mod gc;

use crate::store::Store;
use crate::watch::WatchHub;

/// The advisory lock key of the controllers' leadership.
const LEADER_KEY: i64 = 0x736b_6966_6663_746c; // "skiffctl"

/// Starts the controllers' leadership loop in the background.
pub fn spawn(store: Store, hub: WatchHub) {
    crate::leader::spawn(store.clone(), LEADER_KEY, "controllers", move || {
        gc::run(store.clone(), hub.clone())
    });
}
