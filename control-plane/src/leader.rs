//! Leadership for the loops that must act in one process at a time (the
//! scheduler, the controllers): every control-plane process runs the loop,
//! only the holder of a Postgres advisory lock acts, and it stops acting
//! when the lock's connection goes. Another process takes over within a
//! retry period. Dropping the loop drops the lock, and with it the lock's
//! connection: that is how a control plane shutting down hands over.
//!
//! A link that goes silent without closing is bounded on both ends (see
//! `store::LeaderTiming`): the holder stops acting once a check of its
//! connection goes unanswered (at most 3/5 of `--leader-timeout`), and the
//! server ends the connection, freeing the lock, after the whole timeout
//! without a check, so the old leader has stopped before another can lead:
//! leadership moves within the timeout plus a retry period.

use std::future::Future;
use std::time::Duration;

use crate::store::{Store, StoreError};

/// How often a follower tries for the lock.
const RETRY: Duration = Duration::from_secs(2);

/// Runs `term` whenever this process holds advisory lock `key`; a new term
/// starts (with fresh state) after an error or a lost lock. Never returns.
pub async fn run<F, Fut>(store: Store, key: i64, what: &'static str, mut term: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    loop {
        match store.try_lead(key).await {
            Ok(Some(lock)) => {
                tracing::info!("{what}: leading");
                tokio::select! {
                    outcome = term() => {
                        if let Err(e) = outcome {
                            tracing::warn!("{what}: restarting: {e}");
                        }
                    }
                    () = lock.lost() => tracing::warn!("{what}: lost leadership"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!("{what}: cannot try for leadership: {e}"),
        }
        tokio::time::sleep(RETRY).await;
    }
}
