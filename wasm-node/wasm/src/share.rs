//! Sharing one node between tenants, so that a tenant saturating its own
//! pods cannot starve another's.
//!
//! Two mechanisms, both per [`FairShare`] (one per node):
//!
//! - **Instance slots per namespace.** Every namespace's instances on the
//!   node together hold at most [`ShareConfig::instances_per_namespace`]
//!   slots, on top of each pod's own `maxInstances`; so no tenant can hold
//!   every slot of the node's instance pool.
//! - **CPU turns.** Guest code is interrupted at every epoch tick. A guest
//!   that has run for less than a tick carries on (almost every HTTP
//!   request ends there and never meets the scheduler). One that has run
//!   longer is a *long runner*: at each tick it gives up its worker thread
//!   and waits for a turn. At most [`ShareConfig::cpu_slots`] turns are held
//!   at once, and waiting turns are given round-robin between namespaces,
//!   FIFO within one; so every busy namespace gets an equal share of the
//!   long runners' CPU however many instances it spins, and the worker
//!   threads beyond `cpu_slots` stay free for requests that are short.
//!   A turn lasts one tick; a holder that has not asked again within one
//!   and a half (it is blocked in the host, not running) loses it, so
//!   blocking in the host cannot hold a slot for long.
//!
//! A pod's `cpu` (millicores) caps its guests' time: each turn charges the
//! pod a tick divided by its share of a core, a short instance is charged
//! its time when it ends, and a pod whose charges run ahead of the clock
//! waits before its next instance starts and before its next turn.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::limits::EPOCH_TICK;

/// How long a turn is held before it may be taken back: a holder that is
/// running asks again at the next tick boundary, at most a tick after it
/// got the turn; half a tick more covers a late callback.
const TURN_LEASE: Duration = EPOCH_TICK
    .saturating_mul(3)
    .checked_div(2)
    .expect("not zero");

/// How a node is shared between tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareConfig {
    /// Long-running guests that may hold a worker thread at once.
    pub cpu_slots: usize,
    /// Instances of one namespace's pods that may exist at once.
    pub instances_per_namespace: u32,
}

/// The node's share of CPU turns and instance slots between namespaces.
#[derive(Debug)]
pub struct FairShare {
    config: ShareConfig,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_turn: u64,
    /// Turns held now, with when each was given.
    held: Vec<(u64, Instant)>,
    /// Who waits for a turn, per namespace.
    queues: HashMap<Arc<str>, VecDeque<Waiter>>,
    /// Namespaces with someone waiting, in the order they are served.
    ring: VecDeque<Arc<str>>,
    /// Each namespace's instance slots, while one of its pods runs here.
    slots: HashMap<Arc<str>, Weak<Semaphore>>,
}

#[derive(Debug)]
struct Waiter {
    send: oneshot::Sender<u64>,
    budget: Option<Arc<CpuBudget>>,
}

impl FairShare {
    pub fn new(config: ShareConfig) -> Arc<Self> {
        Arc::new(Self {
            config: ShareConfig {
                cpu_slots: config.cpu_slots.max(1),
                instances_per_namespace: config.instances_per_namespace.max(1),
            },
            state: Mutex::default(),
        })
    }

    pub fn config(&self) -> ShareConfig {
        self.config
    }

    /// The handle one pod of `namespace` runs its instances under; `cpu`
    /// is the pod's CPU in millicores, if it names one.
    pub fn tenant(self: &Arc<Self>, namespace: &str, cpu: Option<u64>) -> Tenant {
        let mut state = self.state.lock().expect("fair share lock");
        state.slots.retain(|_, slots| slots.strong_count() > 0);
        let namespace: Arc<str> = Arc::from(namespace);
        let slots = match state.slots.get(&namespace).and_then(Weak::upgrade) {
            Some(slots) => slots,
            None => {
                let slots = Arc::new(Semaphore::new(self.config.instances_per_namespace as usize));
                state
                    .slots
                    .insert(namespace.clone(), Arc::downgrade(&slots));
                slots
            }
        };
        Tenant {
            share: self.clone(),
            namespace,
            slots,
            budget: cpu.filter(|&m| m > 0).map(|millicores| {
                Arc::new(CpuBudget {
                    millicores,
                    next: Mutex::new(Instant::now()),
                })
            }),
        }
    }

    /// Turns held right now.
    #[cfg(test)]
    fn turns_held(&self) -> usize {
        self.state.lock().expect("fair share lock").held.len()
    }

    /// Waits for a turn for a long runner of `tenant`.
    async fn turn(self: &Arc<Self>, tenant: &Tenant) -> Turn {
        let mut receive = {
            let mut state = self.state.lock().expect("fair share lock");
            let now = Instant::now();
            state.expire(now);
            if state.ring.is_empty() && state.held.len() < self.config.cpu_slots {
                let id = state.give(now, tenant.budget.as_deref());
                return Turn::new(self, id);
            }
            let (send, receive) = oneshot::channel();
            let queue = state.queues.entry(tenant.namespace.clone()).or_default();
            if queue.is_empty() {
                state.ring.push_back(tenant.namespace.clone());
            }
            state
                .queues
                .get_mut(&tenant.namespace)
                .expect("just made")
                .push_back(Waiter {
                    send,
                    budget: tenant.budget.clone(),
                });
            receive
        };
        loop {
            tokio::select! {
                id = &mut receive => match id {
                    Ok(id) => return Turn::new(self, id),
                    // The share never drops a waiter it has not served.
                    Err(_) => unreachable!("a waiting turn's sender is dropped only once sent"),
                },
                // Turns held by guests blocked in the host expire; nobody
                // releases them, so waiters look for themselves.
                () = tokio::time::sleep(TURN_LEASE) => {
                    let mut state = self.state.lock().expect("fair share lock");
                    state.expire(Instant::now());
                    state.dispatch(self.config.cpu_slots);
                }
            }
        }
    }

    fn release(&self, id: u64) {
        let mut state = self.state.lock().expect("fair share lock");
        state.held.retain(|(held, _)| *held != id);
        state.dispatch(self.config.cpu_slots);
    }
}

impl State {
    fn give(&mut self, now: Instant, budget: Option<&CpuBudget>) -> u64 {
        self.next_turn += 1;
        self.held.push((self.next_turn, now));
        if let Some(budget) = budget {
            budget.charge(now, EPOCH_TICK);
        }
        self.next_turn
    }

    fn expire(&mut self, now: Instant) {
        self.held
            .retain(|(_, given)| now.saturating_duration_since(*given) < TURN_LEASE);
    }

    /// Gives free turns to waiters, one namespace after another.
    fn dispatch(&mut self, slots: usize) {
        let now = Instant::now();
        while self.held.len() < slots {
            let Some(namespace) = self.ring.pop_front() else {
                return;
            };
            let Some(queue) = self.queues.get_mut(&namespace) else {
                continue;
            };
            // Waiters that gave up (their request ended) are skipped.
            while let Some(waiter) = queue.pop_front() {
                if waiter.send.is_closed() {
                    continue;
                }
                self.next_turn += 1;
                let id = self.next_turn;
                if waiter.send.send(id).is_ok() {
                    self.held.push((id, now));
                    if let Some(budget) = &waiter.budget {
                        budget.charge(now, EPOCH_TICK);
                    }
                    break;
                }
            }
            let queue = self.queues.get(&namespace).expect("still there");
            if queue.is_empty() {
                self.queues.remove(&namespace);
            } else {
                self.ring.push_back(namespace);
            }
        }
    }
}

/// A turn on a CPU slot; given back when dropped.
struct Turn {
    share: Arc<FairShare>,
    id: u64,
}

impl Turn {
    fn new(share: &Arc<FairShare>, id: u64) -> Self {
        Self {
            share: share.clone(),
            id,
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.share.release(self.id);
    }
}

/// A pod's CPU: the instant by which the time charged to it so far, at
/// its share of a core, will have been earned.
#[derive(Debug)]
struct CpuBudget {
    millicores: u64,
    next: Mutex<Instant>,
}

impl CpuBudget {
    fn charge(&self, now: Instant, used: Duration) {
        let owed = used.saturating_mul(1000) / u32::try_from(self.millicores).unwrap_or(u32::MAX);
        let mut next = self.next.lock().expect("budget lock");
        *next = (*next).max(now) + owed;
    }

    /// Waits until the pod has earned back what it used.
    async fn earned(&self) {
        let next = *self.next.lock().expect("budget lock");
        tokio::time::sleep_until(next.into()).await;
    }
}

/// One pod's part of the node's [`FairShare`]: its namespace's instance
/// slots and CPU turns, and its own CPU budget. Cloning shares them.
#[derive(Debug, Clone)]
pub struct Tenant {
    share: Arc<FairShare>,
    namespace: Arc<str>,
    slots: Arc<Semaphore>,
    budget: Option<Arc<CpuBudget>>,
}

impl Tenant {
    /// Instance slots of the namespace free right now.
    pub fn free_slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// Waits for one of the namespace's instance slots and, when the pod
    /// has used more CPU than its share, for the time to have earned it.
    pub(crate) async fn admit(&self) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
        // Earned first: a pod over its budget waits without holding one
        // of its namespace's slots, which its other pods may use.
        if let Some(budget) = &self.budget {
            budget.earned().await;
        }
        self.slots.clone().acquire_owned().await
    }

    pub(crate) fn instances_per_namespace(&self) -> u32 {
        self.share.config.instances_per_namespace
    }
}

/// The scheduling state of one instance, kept in its store: when it
/// started, when its time is up, and the CPU turn it holds, if it has
/// become a long runner.
pub(crate) struct Runner {
    tenant: Option<Tenant>,
    started: Instant,
    deadline: Instant,
    /// Set by the future that waits for a turn; read at the next tick.
    turn: Arc<Mutex<Option<Turn>>>,
    /// Whether the time before the first turn has been charged.
    charged: bool,
    /// The component's pod stopped: the instance ends at this tick.
    halt: Arc<crate::host::Halt>,
}

/// What the epoch callback tells wasmtime.
pub(crate) enum Tick {
    /// The instance's time is up, or its pod stopped.
    Expired,
    /// Short so far: carry on.
    Continue,
    /// A long runner without a tenant: yield to the executor and carry on.
    Yield,
    /// A long runner: wait for a turn, then carry on.
    WaitTurn(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>),
}

impl Runner {
    pub(crate) fn new(
        tenant: Option<Tenant>,
        timeout: Duration,
        halt: Arc<crate::host::Halt>,
    ) -> Self {
        let started = Instant::now();
        Self {
            tenant,
            started,
            deadline: started + timeout,
            turn: Arc::default(),
            charged: false,
            halt,
        }
    }

    /// Called at every epoch tick the guest runs through.
    pub(crate) fn tick(&mut self) -> Tick {
        let now = Instant::now();
        if now >= self.deadline || self.halt.is_halted() {
            return Tick::Expired;
        }
        if now.saturating_duration_since(self.started) < EPOCH_TICK {
            return Tick::Continue;
        }
        let Some(tenant) = self.tenant.clone() else {
            return Tick::Yield;
        };
        // Give back the turn just used before asking for the next one, so
        // the next goes to whoever's round it is.
        drop(self.turn.lock().expect("turn lock").take());
        if !self.charged {
            self.charged = true;
            if let Some(budget) = &tenant.budget {
                budget.charge(now, now.saturating_duration_since(self.started));
            }
        }
        let slot = self.turn.clone();
        Tick::WaitTurn(Box::pin(async move {
            // Wasmtime suspends the guest's fiber only if this future is
            // pending: a turn free right away would let a lone long runner
            // keep its worker thread for good, and with it whatever the
            // executor queued behind it there (the pod's stop, another
            // request), which no other worker can take. So it yields first.
            tokio::task::yield_now().await;
            if let Some(budget) = &tenant.budget {
                budget.earned().await;
            }
            let turn = tenant.share.turn(&tenant).await;
            *slot.lock().expect("turn lock") = Some(turn);
        }))
    }
}

impl Drop for Runner {
    /// A short instance is charged its whole time when it ends.
    fn drop(&mut self) {
        if !self.charged
            && let Some(budget) = self.tenant.as_ref().and_then(|t| t.budget.as_ref())
        {
            let now = Instant::now();
            budget.charge(now, now.saturating_duration_since(self.started));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(cpu_slots: usize) -> Arc<FairShare> {
        FairShare::new(ShareConfig {
            cpu_slots,
            instances_per_namespace: 4,
        })
    }

    #[tokio::test]
    async fn turns_go_round_robin_between_namespaces() {
        let share = share(1);
        let a = share.tenant("a", None);
        let b = share.tenant("b", None);
        let held = share.turn(&a).await;
        // Three of a's queue before one of b's: b is still served second.
        let (order_send, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for (tenant, name) in [(&a, "a1"), (&a, "a2"), (&a, "a3"), (&b, "b1")] {
            let (mine, tenant, order_send) = (share.clone(), tenant.clone(), order_send.clone());
            waiting.push(tokio::spawn(async move {
                let turn = mine.turn(&tenant).await;
                order_send.send(name).expect("open");
                tokio::task::yield_now().await;
                drop(turn);
            }));
            // Queue them in this order.
            while share
                .state
                .lock()
                .unwrap()
                .queues
                .values()
                .map(VecDeque::len)
                .sum::<usize>()
                < waiting.len()
            {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for task in waiting {
            task.await.expect("waiter");
        }
        let mut seen = Vec::new();
        while let Ok(name) = order.try_recv() {
            seen.push(name);
        }
        assert_eq!(seen, ["a1", "b1", "a2", "a3"]);
    }

    #[tokio::test]
    async fn a_turn_held_by_a_blocked_guest_expires() {
        let share = share(1);
        let a = share.tenant("a", None);
        let b = share.tenant("b", None);
        let _stuck = share.turn(&a).await;
        // `_stuck` is never given back, as by a guest blocked in the host;
        // b gets a turn once its lease has run out.
        let turn = tokio::time::timeout(Duration::from_secs(5), share.turn(&b)).await;
        assert!(turn.is_ok(), "b never got a turn");
        assert_eq!(share.turns_held(), 1);
    }

    /// A long runner gives its worker thread back at every tick, even when
    /// a turn is free at once.
    #[tokio::test]
    async fn a_long_runner_yields_its_thread_even_with_a_free_turn() {
        let share = share(1);
        let halt = Arc::new(crate::host::Halt::default());
        let mut runner = Runner::new(Some(share.tenant("a", None)), Duration::from_secs(60), halt);
        runner.started -= EPOCH_TICK * 2;
        let Tick::WaitTurn(mut wait) = runner.tick() else {
            panic!("a guest past its first tick waits for a turn");
        };
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(
            wait.as_mut().poll(&mut cx).is_pending(),
            "the guest kept its thread"
        );
        assert_eq!(
            share.turns_held(),
            0,
            "the turn is asked for after the yield"
        );
        wait.await;
        assert_eq!(share.turns_held(), 1);
    }

    #[tokio::test]
    async fn namespaces_have_their_own_instance_slots() {
        let share = share(1);
        let a1 = share.tenant("a", None);
        let a2 = share.tenant("a", None);
        let b = share.tenant("b", None);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(a1.admit().await.expect("slot"));
        }
        assert_eq!(a2.free_slots(), 0, "pods of one namespace share its slots");
        assert_eq!(b.free_slots(), 4);
        drop(held);
        assert_eq!(a2.free_slots(), 4);
    }

    #[tokio::test]
    async fn a_pod_over_its_cpu_waits_to_earn_it_back() {
        let share = share(1);
        let pod = share.tenant("a", Some(100));
        let budget = pod.budget.clone().expect("cpu given");
        let now = Instant::now();
        // 10 ms of guest time at a tenth of a core is owed for 100 ms.
        budget.charge(now, Duration::from_millis(10));
        let next = *budget.next.lock().unwrap();
        assert_eq!(next.duration_since(now), Duration::from_millis(100));
        let started = Instant::now();
        let _slot = pod.admit().await.expect("slot");
        assert!(started.elapsed() >= Duration::from_millis(90));
    }
}
