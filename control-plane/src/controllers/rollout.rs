//! The arithmetic of a rolling update, apart from any I/O: given a
//! Deployment's pods, which to create and which to delete next.

use skiff_api::kinds::deployment::{IntOrPercent, StrategyType};

/// A pod of the Deployment as the plan sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub name: String,
    /// Of the revision being rolled out.
    pub current: bool,
    pub ready: bool,
}

/// How far the Deployment may stray from `replicas` while it rolls out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub replicas: u32,
    /// Pods allowed above `replicas`.
    pub surge: u32,
    /// Ready pods allowed below `replicas`.
    pub unavailable: u32,
    pub strategy: StrategyType,
}

impl Bounds {
    pub fn new(
        replicas: u32,
        strategy: StrategyType,
        max_surge: Option<&IntOrPercent>,
        max_unavailable: Option<&IntOrPercent>,
    ) -> Self {
        let surge = max_surge
            .and_then(|s| s.resolve(replicas, true))
            .unwrap_or(0);
        let mut unavailable = max_unavailable
            .and_then(|u| u.resolve(replicas, false))
            .unwrap_or(0);
        // Both zero would deadlock a rollout (validation refuses it when
        // written; a percentage of few replicas may round to it).
        if surge == 0 && unavailable == 0 {
            unavailable = 1;
        }
        Self {
            replicas,
            surge,
            unavailable,
            strategy,
        }
    }
}

/// What to do next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pods of the current revision to create.
    pub create: u32,
    /// Pods to delete, by name.
    pub delete: Vec<String>,
}

/// The next step of the rollout toward `replicas` ready pods of the current
/// revision. Never takes the ready pods below `replicas - unavailable`, nor
/// the pods above `replicas + surge`; pods that are not ready go first.
/// (The same arithmetic as Kubernetes' Deployment controller.)
pub fn plan(bounds: &Bounds, pods: &[PodView]) -> Plan {
    let replicas = bounds.replicas as usize;
    let (mut current, mut old): (Vec<&PodView>, Vec<&PodView>) =
        pods.iter().partition(|p| p.current);
    // Unready first, so that they are the ones deleted.
    current.sort_by_key(|p| (p.ready, p.name.clone()));
    old.sort_by_key(|p| (p.ready, p.name.clone()));
    let mut delete: Vec<&PodView> = Vec::new();
    if current.len() > replicas {
        delete.extend(&current[..current.len() - replicas]);
        current.drain(..current.len() - replicas);
    }
    if bounds.strategy == StrategyType::Recreate {
        if !old.is_empty() {
            delete.extend(old);
            return finish(0, delete);
        }
        return finish(replicas - current.len(), delete);
    }
    let total = current.len() + old.len();
    let create =
        (replicas - current.len()).min((replicas + bounds.surge as usize).saturating_sub(total));
    // Old pods may go as long as the ready ones stay at the minimum, not
    // counting on current pods that are not ready yet.
    let min_ready = replicas.saturating_sub(bounds.unavailable as usize);
    let current_unready = current.iter().filter(|p| !p.ready).count();
    let may_go = total.saturating_sub(min_ready + current_unready);
    delete.extend(old.into_iter().take(may_go));
    finish(create, delete)
}

fn finish(create: usize, delete: Vec<&PodView>) -> Plan {
    Plan {
        create: u32::try_from(create).unwrap_or(u32::MAX),
        delete: delete.into_iter().map(|p| p.name.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolling(replicas: u32, surge: u32, unavailable: u32) -> Bounds {
        Bounds::new(
            replicas,
            StrategyType::RollingUpdate,
            Some(&IntOrPercent::Int(surge)),
            Some(&IntOrPercent::Int(unavailable)),
        )
    }

    fn pods(spec: &[(&str, bool, bool)]) -> Vec<PodView> {
        spec.iter()
            .map(|(name, current, ready)| PodView {
                name: (*name).into(),
                current: *current,
                ready: *ready,
            })
            .collect()
    }

    /// Runs the plan to completion, making every created pod ready at once
    /// (or never, if `broken`), and checks the bounds at every step.
    fn roll(bounds: Bounds, mut state: Vec<PodView>, broken: bool) -> (Vec<PodView>, usize) {
        let mut steps = 0;
        loop {
            let next = plan(&bounds, &state);
            if next.create == 0 && next.delete.is_empty() {
                return (state, steps);
            }
            steps += 1;
            assert!(steps < 100, "no convergence: {state:?}");
            state.retain(|p| !next.delete.contains(&p.name));
            let ready = state.iter().filter(|p| p.ready).count();
            assert!(
                ready >= (bounds.replicas - bounds.unavailable) as usize,
                "too few ready after deleting {:?}: {state:?}",
                next.delete
            );
            for i in 0..next.create {
                state.push(PodView {
                    name: format!("new-{steps}-{i}"),
                    current: true,
                    ready: false,
                });
            }
            assert!(
                state.len() <= (bounds.replicas + bounds.surge) as usize,
                "too many pods: {state:?}"
            );
            if !broken {
                for pod in &mut state {
                    pod.ready = true;
                }
            }
        }
    }

    #[test]
    fn a_fresh_deployment_creates_its_replicas() {
        let plan = plan(&rolling(3, 1, 0), &[]);
        assert_eq!(plan.create, 3);
        assert!(plan.delete.is_empty());
    }

    #[test]
    fn a_rollout_replaces_every_old_pod_within_its_bounds() {
        for (surge, unavailable) in [(1, 0), (0, 1), (2, 1), (3, 3)] {
            let old = pods(&[("a", false, true), ("b", false, true), ("c", false, true)]);
            let (done, _) = roll(rolling(3, surge, unavailable), old, false);
            assert_eq!(done.len(), 3);
            assert!(done.iter().all(|p| p.current && p.ready), "{done:?}");
        }
    }

    #[test]
    fn surge_without_unavailability_adds_before_it_removes() {
        let old = pods(&[("a", false, true), ("b", false, true), ("c", false, true)]);
        let plan = plan(&rolling(3, 1, 0), &old);
        assert_eq!(
            plan,
            Plan {
                create: 1,
                delete: vec![]
            }
        );
    }

    #[test]
    fn a_revision_that_never_gets_ready_stops_at_the_bounds() {
        let old = pods(&[("a", false, true), ("b", false, true), ("c", false, true)]);
        let (stuck, _) = roll(rolling(3, 1, 1), old, true);
        let ready_old = stuck.iter().filter(|p| !p.current && p.ready).count();
        assert_eq!(ready_old, 2, "{stuck:?}");
        assert_eq!(stuck.len(), 4, "{stuck:?}");
    }

    #[test]
    fn unready_pods_go_first() {
        let state = pods(&[
            ("old-ready", false, true),
            ("old-broken", false, false),
            ("new", true, true),
        ]);
        assert_eq!(
            plan(&rolling(2, 0, 1), &state)
                .delete
                .first()
                .map(String::as_str),
            Some("old-broken")
        );
        let state = pods(&[("x", true, true), ("y", true, false), ("z", true, true)]);
        assert_eq!(plan(&rolling(2, 1, 0), &state).delete, vec!["y".to_owned()]);
    }

    #[test]
    fn scaling_adds_or_removes_current_pods() {
        let state = pods(&[("a", true, true), ("b", true, true)]);
        assert_eq!(plan(&rolling(4, 1, 0), &state).create, 2);
        assert_eq!(plan(&rolling(1, 1, 0), &state).delete.len(), 1);
        assert_eq!(plan(&rolling(0, 1, 0), &state).delete.len(), 2);
    }

    #[test]
    fn recreate_deletes_every_old_pod_before_creating() {
        let bounds = Bounds::new(2, StrategyType::Recreate, None, None);
        let old = pods(&[("a", false, true), ("b", false, true)]);
        assert_eq!(
            plan(&bounds, &old),
            Plan {
                create: 0,
                delete: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(plan(&bounds, &[]).create, 2);
    }

    #[test]
    fn percentages_resolve_against_replicas() {
        let bounds = Bounds::new(
            10,
            StrategyType::RollingUpdate,
            Some(&IntOrPercent::Percent("25%".into())),
            Some(&IntOrPercent::Percent("25%".into())),
        );
        assert_eq!((bounds.surge, bounds.unavailable), (3, 2));
        let tiny = Bounds::new(
            1,
            StrategyType::RollingUpdate,
            Some(&IntOrPercent::Percent("0%".into())),
            Some(&IntOrPercent::Percent("25%".into())),
        );
        assert_eq!((tiny.surge, tiny.unavailable), (0, 1));
    }
}
