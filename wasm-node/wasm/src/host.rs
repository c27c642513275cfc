//! The per-instance host state, and the one function that makes a fresh
//! store for an instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::error::GuestFailure;
use super::limits::{InstanceState, Limits, MemoryLimiter};
use super::outbound::OutboundHooks;
use super::sandbox::Sandbox;
use super::share::{Runner, Tenant};
use super::trace::TraceContext;

/// Host-side resources (open streams, headers, bodies) one instance may hold
/// at once. They live outside linear memory, so the memory limit does not
/// bound them; this does.
const MAX_HOST_RESOURCES: usize = 10_000;

pub(crate) struct Host {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: OutboundHooks,
    memory: MemoryLimiter,
    runner: Runner,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

impl InstanceState for Host {
    fn memory_limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.memory
    }
    fn runner(&mut self) -> &mut Runner {
        &mut self.runner
    }
}

/// An instance's permits: its component's own and its namespace's slot.
pub(crate) struct Admitted {
    _own: Option<OwnedSemaphorePermit>,
    _slot: Option<OwnedSemaphorePermit>,
}

/// Who an instance is for: decides whether it may read the host's stdin,
/// what its output lines are tagged with, and which trace its outbound
/// requests continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InstanceRole<'a> {
    /// Serves one HTTP request (its `x-request-id` and its trace, when it
    /// has them); never reads stdin.
    Request(Option<&'a http::HeaderValue>, Option<TraceContext>),
    /// Runs a command to completion.
    Command,
}

/// What every instance of one component is made from: its name (`argv[0]`
/// and the name in logs), its grants, its limits and, on a node, its
/// share of the node.
pub(crate) struct InstanceSpec {
    pub name: String,
    pub sandbox: Sandbox,
    pub limits: Limits,
    pub tenant: Option<Tenant>,
    /// Set when the component's pod stops: its instances end.
    pub halt: Arc<Halt>,
    /// What its instances use (CPU time, memory), for the node's samples.
    pub usage: Arc<crate::usage::Usage>,
}

/// The end of every instance of one component, asked for once (its pod
/// stopped). A guest computing sees it at its next epoch tick, where the
/// [`Runner`] interrupts it; a guest waiting in the host (a sleep, an
/// outbound request) is not ticked, so its task also waits on
/// [`Halt::halted`] and drops the guest there.
#[derive(Debug, Default)]
pub(crate) struct Halt {
    halted: AtomicBool,
    notify: Notify,
}

impl Halt {
    pub(crate) fn halt(&self) {
        self.halted.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub(crate) fn is_halted(&self) -> bool {
        self.halted.load(Ordering::SeqCst)
    }

    /// Resolves once [`Halt::halt`] was called, however long before.
    pub(crate) async fn halted(&self) {
        let notified = self.notify.notified();
        let mut notified = std::pin::pin!(notified);
        // Registered before the flag is read, so a halt in between wakes it.
        notified.as_mut().enable();
        if self.is_halted() {
            return;
        }
        notified.await;
    }
}

impl InstanceSpec {
    /// A fresh store for one instance: the sandbox's grants and every limit.
    pub(crate) fn new_store(
        &self,
        engine: &Engine,
        role: InstanceRole<'_>,
    ) -> wasmtime::Result<Store<Host>> {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        let (wasi, trace) = match role {
            InstanceRole::Command => (self.sandbox.wasi_ctx(&self.name, true, None)?, None),
            InstanceRole::Request(id, trace) => {
                (self.sandbox.wasi_ctx(&self.name, false, id)?, trace)
            }
        };
        let host = Host {
            wasi,
            http: WasiHttpCtx::new(),
            table,
            outbound: OutboundHooks::new(
                self.sandbox.outbound.clone(),
                self.sandbox.services.clone(),
            )
            .denying(self.sandbox.denied_addresses.clone())
            .continuing(trace),
            memory: MemoryLimiter::counted(self.usage.clone()),
            runner: Runner::new(self.tenant.clone(), self.limits.timeout, self.halt.clone()),
        };
        let mut store = Store::new(engine, host);
        self.limits.apply(&mut store)?;
        Ok(store)
    }

    /// Waits, up to the timeout, for one of the component's own instance
    /// permits and then for its namespace's slot on the node, which are
    /// held until the instance ends.
    pub(crate) async fn admit(&self, permits: &Arc<Semaphore>) -> Result<Admitted, GuestFailure> {
        let own = tokio::time::timeout(self.limits.timeout, permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or(GuestFailure::Busy(self.limits.max_instances))?;
        Ok(Admitted {
            _own: Some(own),
            _slot: self.admit_shared().await?,
        })
    }

    /// Waits, up to the timeout, for the namespace's instance slot on the
    /// node and, when the pod has used more than its CPU, for the time to
    /// have earned it back.
    pub(crate) async fn admit_shared(&self) -> Result<Option<OwnedSemaphorePermit>, GuestFailure> {
        let Some(tenant) = &self.tenant else {
            return Ok(None);
        };
        tokio::time::timeout(self.limits.timeout, tenant.admit())
            .await
            .ok()
            .and_then(Result::ok)
            .map(Some)
            .ok_or(GuestFailure::NamespaceBusy(
                tenant.instances_per_namespace(),
            ))
    }

    /// How an instance of this component failed, in the terms of its limits.
    pub(crate) fn failure(&self, error: &wasmtime::Error) -> GuestFailure {
        GuestFailure::classify(error, &self.limits)
    }
}
