//! What the node's sampler ([`crate::stats`]) reads: the running pods'
//! usage meters, registered by the runtimes for as long as a run lasts,
//! and the node's pull and cache counts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::PodId;
use super::linux::cgroup::Cgroups;

/// Where a running pod's usage is read from.
#[derive(Debug, Clone)]
pub enum Meter {
    /// A component's instances, counted by the engine as they run.
    Wasm(Arc<skiff_wasm::Usage>),
    /// A Linux pod's cgroup, `skiff/<id>` under each hierarchy.
    Cgroup(String),
}

/// One running pod's usage, read now. CPU time counts from the start of
/// the pod's current run (`run`); the sampler notices a new run by it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub run: u64,
    pub cpu: Duration,
    pub memory_bytes: u64,
    /// Wasm instances alive now (none for a Linux pod).
    pub instances: u64,
}

struct Entry {
    namespace: String,
    name: String,
    run: u64,
    meter: Meter,
}

/// The running pods' meters by uid, and the node's counts.
pub struct Meters {
    pods: Mutex<HashMap<String, Entry>>,
    runs: AtomicU64,
    cgroups: Cgroups,
    pub counts: Counts,
}

impl Default for Meters {
    fn default() -> Self {
        Self {
            pods: Mutex::default(),
            runs: AtomicU64::new(0),
            cgroups: Cgroups::detect(),
            counts: Counts::default(),
        }
    }
}

impl std::fmt::Debug for Meters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meters").finish_non_exhaustive()
    }
}

impl Meters {
    /// Meters a run of `pod` until the returned guard is dropped (the run
    /// ended). A later run of the same pod takes its place.
    pub fn register(self: &Arc<Self>, pod: &PodId, meter: Meter) -> Metered {
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        self.pods.lock().expect("meters lock").insert(
            pod.uid.clone(),
            Entry {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                run,
                meter,
            },
        );
        Metered {
            meters: self.clone(),
            uid: pod.uid.clone(),
            run,
        }
    }

    /// Every running pod's usage now. A Linux pod's cgroup is read from
    /// its files: a few small reads of the kernel's memory each.
    pub fn read(&self) -> Vec<PodUsage> {
        let meters: Vec<(String, String, String, u64, Meter)> = self
            .pods
            .lock()
            .expect("meters lock")
            .iter()
            .map(|(uid, e)| {
                (
                    e.namespace.clone(),
                    e.name.clone(),
                    uid.clone(),
                    e.run,
                    e.meter.clone(),
                )
            })
            .collect();
        meters
            .into_iter()
            .map(|(namespace, name, uid, run, meter)| {
                let (cpu, memory_bytes, instances) = match meter {
                    Meter::Wasm(usage) => {
                        (usage.cpu_time(), usage.memory_bytes(), usage.instances())
                    }
                    Meter::Cgroup(id) => {
                        let read = self.cgroups.read(&id);
                        (
                            read.cpu.unwrap_or_default(),
                            read.memory_bytes.unwrap_or(0),
                            0,
                        )
                    }
                };
                PodUsage {
                    namespace,
                    name,
                    uid,
                    run,
                    cpu,
                    memory_bytes,
                    instances,
                }
            })
            .collect()
    }
}

/// A run's meter, removed when dropped (unless a later run replaced it).
pub struct Metered {
    meters: Arc<Meters>,
    uid: String,
    run: u64,
}

impl Drop for Metered {
    fn drop(&mut self) {
        let mut pods = self.meters.pods.lock().expect("meters lock");
        if pods.get(&self.uid).is_some_and(|e| e.run == self.run) {
            pods.remove(&self.uid);
        }
    }
}

/// Which runtime pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullRuntime {
    Wasm = 0,
    Linux = 1,
}

/// The node's caches: components' bytes, their compiled code, Linux
/// images' layers in containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    Blob = 0,
    Compiled = 1,
    Layers = 2,
}

/// Downloads from registries and cache lookups, since the node started.
#[derive(Debug, Default)]
pub struct Counts {
    /// By runtime, then failed (0) or succeeded (1).
    pulls: [[AtomicU64; 2]; 2],
    /// By cache, then miss (0) or hit (1).
    cache: [[AtomicU64; 2]; 3],
}

/// What [`Counts`] came to, labelled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountsRead {
    /// (runtime, result, count): every runtime and result, zeros included.
    pub pulls: Vec<(&'static str, &'static str, u64)>,
    /// (cache, hits, misses).
    pub cache: Vec<(&'static str, u64, u64)>,
}

impl Counts {
    pub fn pulled(&self, runtime: PullRuntime, succeeded: bool) {
        self.pulls[runtime as usize][usize::from(succeeded)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn looked_up(&self, cache: Cache, hit: bool) {
        self.cache[cache as usize][usize::from(hit)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn read(&self) -> CountsRead {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut read = CountsRead::default();
        for (runtime, name) in [(PullRuntime::Wasm, "wasm"), (PullRuntime::Linux, "linux")] {
            let [failed, succeeded] = &self.pulls[runtime as usize];
            read.pulls.push((name, "success", load(succeeded)));
            read.pulls.push((name, "failure", load(failed)));
        }
        for (cache, name) in [
            (Cache::Blob, "blob"),
            (Cache::Compiled, "compiled"),
            (Cache::Layers, "layers"),
        ] {
            let [miss, hit] = &self.cache[cache as usize];
            read.cache.push((name, load(hit), load(miss)));
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> PodId {
        PodId {
            namespace: "shop".into(),
            name: "web".into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn a_run_is_metered_until_it_ends_and_a_later_run_keeps_its_place() {
        let meters = Arc::new(Meters::default());
        let usage = Arc::new(skiff_wasm::Usage::default());
        let first = meters.register(&pod("u1"), Meter::Wasm(usage.clone()));
        let second = meters.register(&pod("u1"), Meter::Wasm(usage));
        let read = meters.read();
        assert_eq!(read.len(), 1);
        assert_eq!((read[0].uid.as_str(), read[0].run), ("u1", second.run));
        // The first run ending late does not take the second's meter away.
        drop(first);
        assert_eq!(meters.read().len(), 1);
        drop(second);
        assert!(meters.read().is_empty());
    }

    #[test]
    fn counts_are_read_with_their_labels() {
        let counts = Counts::default();
        counts.pulled(PullRuntime::Wasm, true);
        counts.pulled(PullRuntime::Linux, false);
        counts.looked_up(Cache::Blob, true);
        counts.looked_up(Cache::Blob, true);
        counts.looked_up(Cache::Compiled, false);
        let read = counts.read();
        assert_eq!(
            read.pulls,
            [
                ("wasm", "success", 1),
                ("wasm", "failure", 0),
                ("linux", "success", 0),
                ("linux", "failure", 1),
            ]
        );
        assert_eq!(
            read.cache,
            [("blob", 2, 0), ("compiled", 0, 1), ("layers", 0, 0)]
        );
    }
}
