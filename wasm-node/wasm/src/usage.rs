//! What one prepared component's instances use, measured where they run,
//! for the node's usage samples (`wasmctl top`) and metrics.
//!
//! - **CPU time**: the time spent inside polls of each instance's future
//!   (instantiation, guest code and the host calls it makes
//!   synchronously), read from the monotonic clock before and after every
//!   poll. A guest waiting in the host (a sleep, an outbound request) is
//!   not polled, so it is not charged. Reading `CLOCK_MONOTONIC` goes
//!   through the vDSO (no system call), where a per-thread CPU clock
//!   would be one system call per read; the price is that a worker thread
//!   the kernel preempts in the middle of a poll is charged the time it
//!   was off the CPU, which only matters on an oversubscribed machine.
//!   Cost per poll: two clock reads and one relaxed atomic add.
//! - **Memory**: the linear memories of the instances alive now, kept by
//!   each instance's memory limiter, which sees every growth: an atomic
//!   add when a memory is created or grows, a subtraction when the
//!   instance's store is dropped.
//! - **Instances**: stores alive now (an add and a subtraction each).
//!
//! Fuel is not counted here: nodes run without fuel metering.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

/// Counters shared by every instance of one prepared component.
#[derive(Debug, Default)]
pub struct Usage {
    cpu_nanos: AtomicU64,
    memory_bytes: AtomicU64,
    instances: AtomicU64,
}

impl Usage {
    /// Time the instances spent running so far (see the module's notes).
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.cpu_nanos.load(Ordering::Relaxed))
    }

    /// Bytes of linear memory the live instances hold now.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_bytes.load(Ordering::Relaxed)
    }

    /// Instances alive now.
    pub fn instances(&self) -> u64 {
        self.instances.load(Ordering::Relaxed)
    }

    /// Runs `future`, charging the time spent in each of its polls.
    pub(crate) async fn timed<F: Future>(&self, future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| {
            let started = Instant::now();
            let polled = future.as_mut().poll(cx);
            let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.cpu_nanos.fetch_add(spent, Ordering::Relaxed);
            match polled {
                Poll::Ready(output) => Poll::Ready(output),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    pub(crate) fn instance_started(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_ended(&self, memory: u64) {
        self.instances.fetch_sub(1, Ordering::Relaxed);
        self.memory_bytes.fetch_sub(memory, Ordering::Relaxed);
    }

    /// An instance's memories went from `from` to `to` bytes in all.
    pub(crate) fn memory_changed(&self, from: u64, to: u64) {
        if to >= from {
            self.memory_bytes.fetch_add(to - from, Ordering::Relaxed);
        } else {
            self.memory_bytes.fetch_sub(from - to, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn time_inside_polls_is_charged_and_time_waiting_is_not() {
        let usage = Usage::default();
        usage
            .timed(async {
                // Busy in the poll: charged.
                let until = Instant::now() + Duration::from_millis(20);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                // Waiting outside any poll: not charged.
                tokio::time::sleep(Duration::from_millis(200)).await;
            })
            .await;
        let charged = usage.cpu_time();
        assert!(
            charged >= Duration::from_millis(20) && charged < Duration::from_millis(150),
            "{charged:?}"
        );
    }

    #[test]
    fn memory_follows_growth_and_instance_ends() {
        let usage = Usage::default();
        usage.instance_started();
        usage.memory_changed(0, 1 << 20);
        usage.memory_changed(1 << 20, 3 << 20);
        assert_eq!((usage.instances(), usage.memory_bytes()), (1, 3 << 20));
        usage.instance_ended(3 << 20);
        assert_eq!((usage.instances(), usage.memory_bytes()), (0, 0));
    }
}
