//! The hard limits every guest instance runs under, and the one function that
//! applies them to a fresh store ([`Limits::apply`]).
//!
//! Memory is capped through a [`ResourceLimiter`], fuel with
//! [`Store::set_fuel`], wall-clock time with an epoch deadline (the engine's
//! epoch is advanced every [`EPOCH_TICK`] by a ticker thread), and concurrency
//! by a semaphore in front of instantiation. The engine's pooling allocator is
//! sized from the same numbers in [`pooling_config`].

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Enabled, PoolingAllocationConfig, ResourceLimiter, Store, UpdateDeadline};

use crate::share::{Runner, Tick};
use crate::usage::Usage;

use skiff_api::quantity::{format_bytes, format_duration};

/// Linear memory an instance may use unless told otherwise.
pub const DEFAULT_MEMORY: u64 = 128 << 20;
/// Wall-clock time a request (or a command run) may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Instances that may run at once unless told otherwise.
pub const DEFAULT_MAX_INSTANCES: u32 = 100;

/// How often the engine's epoch advances; the granularity of timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

const MIN_MEMORY: u64 = 1 << 20;
/// 32-bit linear memories cannot address more.
const MAX_MEMORY: u64 = 4 << 30;
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_INSTANCES: u32 = 10_000;

/// Core instances, memories and tables a single component may need from the
/// pool. Toolchains differ: a Rust component has one or two core instances,
/// a componentize-py one a dozen.
const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
const MEMORIES_PER_COMPONENT: u32 = 4;
const TABLES_PER_COMPONENT: u32 = 32;

/// Bytes of a pooled linear memory and of its tables kept mapped between
/// instances and reset in place rather than released to the kernel.
const KEEP_RESIDENT_MEMORY: usize = 1 << 20;
const KEEP_RESIDENT_TABLES: usize = 256 << 10;

/// Per-instance limits of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of linear memory per instance (all memories together).
    pub memory: u64,
    /// Fuel per request or run; `None` leaves fuel metering off.
    pub fuel: Option<u64>,
    /// Wall-clock time per request or run.
    pub timeout: Duration,
    /// Instances that may exist at once.
    pub max_instances: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: DEFAULT_MEMORY,
            fuel: None,
            timeout: DEFAULT_TIMEOUT,
            max_instances: DEFAULT_MAX_INSTANCES,
        }
    }
}

/// A limit outside what the runtime can enforce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("memory limit {0} is out of range: must be between 1Mi and 4Gi")]
    Memory(String),
    #[error("fuel limit must be at least 1")]
    Fuel,
    #[error("timeout {0} is out of range: must be between 1ms and 24h")]
    Timeout(String),
    #[error("max instances {0} is out of range: must be between 1 and 10000")]
    MaxInstances(u32),
    #[error("{what} {asked} is above this runtime's maximum of {max}")]
    AboveRuntime {
        what: &'static str,
        asked: String,
        max: String,
    },
    #[error("a fuel limit needs fuel metering, which this runtime was started without")]
    FuelMeteringOff,
}

impl Limits {
    /// Checks that every limit is one the runtime can enforce.
    pub fn validate(&self) -> Result<(), LimitsError> {
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&self.memory) {
            return Err(LimitsError::Memory(format_bytes(self.memory)));
        }
        if self.fuel == Some(0) {
            return Err(LimitsError::Fuel);
        }
        if self.timeout < Duration::from_millis(1) || self.timeout > MAX_TIMEOUT {
            return Err(LimitsError::Timeout(format_duration(self.timeout)));
        }
        if !(1..=MAX_INSTANCES).contains(&self.max_instances) {
            return Err(LimitsError::MaxInstances(self.max_instances));
        }
        Ok(())
    }

    /// Applies every per-instance limit to a fresh store. This is the only
    /// place limits meet a store: memory through the limiter, fuel, and the
    /// wall-clock deadline, checked at every epoch tick by the instance's
    /// [`Runner`], which also makes a long-running guest give up its thread
    /// (see [`crate::share`]).
    pub(crate) fn apply<T: InstanceState>(&self, store: &mut Store<T>) -> wasmtime::Result<()> {
        // The limit is set on the store's own limiter, which keeps the
        // component's usage counters (see [`crate::usage`]).
        store.data_mut().memory_limiter().set_limit(self.memory);
        store.limiter(|data| data.memory_limiter());
        if let Some(fuel) = self.fuel {
            store.set_fuel(fuel)?;
        }
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut store| {
            Ok(match store.data_mut().runner().tick() {
                Tick::Expired => UpdateDeadline::Interrupt,
                Tick::Continue => UpdateDeadline::Continue(1),
                Tick::Yield => UpdateDeadline::Yield(1),
                Tick::WaitTurn(turn) => UpdateDeadline::YieldCustom(1, turn),
            })
        });
        Ok(())
    }
}

/// How the pooling allocator readies a slot for its next instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotReset {
    /// Reset just the pages the last instance dirtied, in place, found with
    /// the `PAGEMAP_SCAN` ioctl (Linux 6.7+). Engine creation fails where the
    /// ioctl is missing.
    InPlace,
    /// Release the slot's pages to the kernel (`madvise`), as stock Wasmtime
    /// does: a TLB shootdown now and page faults on the next instance.
    Release,
}

/// Engine-wide sizing of the pooling allocator: enough slots for
/// `max_instances` instances of components of any common toolchain, each
/// memory capped at `max_memory` bytes.
pub fn pooling_config(
    max_memory: u64,
    max_instances: u32,
    reset: SlotReset,
) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
        .total_memories(max_instances.saturating_mul(MEMORIES_PER_COMPONENT))
        .total_tables(max_instances.saturating_mul(TABLES_PER_COMPONENT))
        .total_stacks(max_instances)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX));
    if reset == SlotReset::InPlace {
        // Without the ioctl, keeping pages resident would mean a memset of
        // the whole kept size per instance, slower than releasing them; so
        // this is all or nothing. With it, a small component's per-request
        // cost halves.
        pool.pagemap_scan(Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
            .table_keep_resident(KEEP_RESIDENT_TABLES);
    }
    pool
}

/// Store data that carries what [`Limits::apply`] installs: the memory
/// limiter and the instance's [`Runner`].
pub(crate) trait InstanceState: Send + 'static {
    fn memory_limiter(&mut self) -> &mut MemoryLimiter;
    fn runner(&mut self) -> &mut Runner;
}

/// Caps the linear memory of one instance. Growth past the cap traps with
/// [`MemoryLimitExceeded`] rather than letting `memory.grow` return -1, so the
/// failure is reported as what it is instead of as a guest-side abort.
#[derive(Debug, Default)]
pub struct MemoryLimiter {
    limit: usize,
    /// Bytes of every memory of the instance; components may hold several
    /// memories and the cap is for all of them.
    in_use: usize,
    /// The component's usage, told of every change of `in_use` and of the
    /// instance's end.
    usage: Option<Arc<Usage>>,
}

impl MemoryLimiter {
    pub fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            in_use: 0,
            usage: None,
        }
    }

    /// A limiter (its limit set later, by [`Limits::apply`]) that counts
    /// its instance and memory into `usage`.
    pub(crate) fn counted(usage: Arc<Usage>) -> Self {
        usage.instance_started();
        Self {
            limit: 0,
            in_use: 0,
            usage: Some(usage),
        }
    }

    fn set_limit(&mut self, limit: u64) {
        self.limit = usize::try_from(limit).unwrap_or(usize::MAX);
    }
}

impl Drop for MemoryLimiter {
    /// The instance's store is going, with its memories.
    fn drop(&mut self) {
        if let Some(usage) = &self.usage {
            usage.instance_ended(self.in_use as u64);
        }
    }
}

/// A guest tried to grow its memory past its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("guest exceeded its memory limit of {}", format_bytes(*.limit as u64))]
pub struct MemoryLimitExceeded {
    pub limit: usize,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let others = self.in_use.saturating_sub(current);
        if others.saturating_add(desired) > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                limit: self.limit,
            }));
        }
        let before = self.in_use;
        self.in_use = others + desired;
        if let Some(usage) = &self.usage {
            usage.memory_changed(before as u64, self.in_use as u64);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Table sizes are bounded by the pooling allocator's slots.
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones() {
        let limits = Limits::default();
        assert_eq!(limits.memory, 128 << 20);
        assert_eq!(limits.fuel, None);
        assert_eq!(limits.timeout, Duration::from_secs(30));
        assert_eq!(limits.max_instances, 100);
        assert_eq!(limits.validate(), Ok(()));
    }

    #[test]
    fn validation_rejects_each_out_of_range_limit() {
        let ok = Limits::default();
        let cases = [
            (Limits { memory: 1000, ..ok }, "memory limit 1000B"),
            (
                Limits {
                    memory: 8 << 30,
                    ..ok
                },
                "memory limit 8Gi",
            ),
            (
                Limits {
                    fuel: Some(0),
                    ..ok
                },
                "fuel limit",
            ),
            (
                Limits {
                    timeout: Duration::ZERO,
                    ..ok
                },
                "timeout 0ms",
            ),
            (
                Limits {
                    timeout: Duration::from_secs(48 * 3600),
                    ..ok
                },
                "timeout 48h",
            ),
            (
                Limits {
                    max_instances: 0,
                    ..ok
                },
                "max instances 0",
            ),
        ];
        for (limits, want) in cases {
            let err = limits.validate().unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn limiter_caps_all_memories_together() {
        let mut limiter = MemoryLimiter::new(10 << 20);
        assert!(limiter.memory_growing(0, 6 << 20, None).unwrap());
        // A second memory may only take what the first left.
        assert!(limiter.memory_growing(0, 4 << 20, None).unwrap());
        let err = limiter.memory_growing(4 << 20, 5 << 20, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<MemoryLimitExceeded>(),
            Some(&MemoryLimitExceeded { limit: 10 << 20 })
        );
        assert_eq!(err.to_string(), "guest exceeded its memory limit of 10Mi");
    }

    #[test]
    fn a_counted_limiter_reports_its_memories_until_dropped() {
        let usage = Arc::new(Usage::default());
        let mut limiter = MemoryLimiter::counted(usage.clone());
        limiter.set_limit(10 << 20);
        assert!(limiter.memory_growing(0, 2 << 20, None).unwrap());
        assert!(limiter.memory_growing(2 << 20, 5 << 20, None).unwrap());
        // A growth refused changes nothing.
        assert!(limiter.memory_growing(5 << 20, 11 << 20, None).is_err());
        assert_eq!((usage.instances(), usage.memory_bytes()), (1, 5 << 20));
        drop(limiter);
        assert_eq!((usage.instances(), usage.memory_bytes()), (0, 0));
    }

    #[test]
    fn pool_has_room_for_max_instances() {
        let pool = pooling_config(64 << 20, 50, SlotReset::Release);
        let mut config = wasmtime::Config::new();
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        // The engine accepts the pool as sized.
        wasmtime::Engine::new(&config).expect("pool config is valid");
    }
}
