//! A pod's life on a node, as an explicit state machine: the states, the
//! events that move between them, and nothing else. The pod worker acts;
//! this only says which moves are legal and what restart policy and
//! crash-loop backoff decide.

use std::time::Duration;

use skiff_api::kinds::pod::{PodPhase, RestartPolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Bound here, nothing done yet.
    Pending,
    /// Resolving and fetching the artifact.
    Pulling,
    /// Compiling (or loading compiled code) and linking.
    Starting,
    /// Serving (HTTP) or running (command).
    Running,
    /// Waiting before the next attempt after a failure.
    BackOff,
    /// Ran to completion with exit code 0; not restarted.
    Succeeded,
    /// Failed and not restarted.
    Failed,
    /// Stopped because the pod was deleted or unbound.
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Begin,
    Pulled,
    /// The artifact could not be fetched (retried with backoff).
    PullFailed,
    Started,
    /// The component cannot run as given (not a component, unlinkable):
    /// retrying cannot help.
    Invalid,
    /// A command exited, with its code (traps and limits count as failures).
    Exited {
        success: bool,
    },
    BackOffElapsed,
    Stop,
}

impl State {
    /// The pod phase the API shows for this state.
    pub fn phase(self) -> PodPhase {
        match self {
            State::Pending | State::Pulling | State::Starting | State::BackOff => PodPhase::Pending,
            State::Running => PodPhase::Running,
            State::Succeeded => PodPhase::Succeeded,
            State::Failed | State::Stopped => PodPhase::Failed,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Succeeded | State::Failed | State::Stopped)
    }
}

/// The next state, or `None` if `event` cannot happen in `state`.
pub fn next(state: State, event: &Event, policy: RestartPolicy) -> Option<State> {
    use State::*;
    Some(match (state, event) {
        (_, Event::Stop) if !state.is_terminal() => Stopped,
        (Pending, Event::Begin) => Pulling,
        (Pulling, Event::Pulled) => Starting,
        (Pulling, Event::PullFailed) => BackOff,
        (Starting, Event::Started) => Running,
        (Pulling | Starting, Event::Invalid) => Failed,
        (Starting, Event::PullFailed) => BackOff,
        (Running, Event::Exited { success }) => match (policy, success) {
            (RestartPolicy::Always, _) | (RestartPolicy::OnFailure, false) => BackOff,
            (_, true) => Succeeded,
            (RestartPolicy::Never, false) => Failed,
        },
        (BackOff, Event::BackOffElapsed) => Pulling,
        _ => return None,
    })
}

/// Crash-loop backoff: doubling from `base` up to `cap`, reset after a run
/// that lasted longer than the cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    current: Option<Duration>,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            current: None,
        }
    }

    /// The wait before the next attempt, given how long the last run lasted.
    pub fn next_delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for > self.cap {
            self.current = None;
        }
        let delay = match self.current {
            None => self.base,
            Some(d) => (d * 2).min(self.cap),
        };
        self.current = Some(delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every legal move, and a sample of illegal ones.
    #[test]
    fn transitions() {
        use Event::*;
        use State::*;
        let always = RestartPolicy::Always;
        let legal = [
            (Pending, Begin, always, Pulling),
            (Pulling, Pulled, always, Starting),
            (Pulling, PullFailed, always, BackOff),
            (Pulling, Invalid, always, Failed),
            (Starting, Started, always, Running),
            (Starting, Invalid, always, Failed),
            (Starting, PullFailed, always, BackOff),
            (Running, Exited { success: true }, always, BackOff),
            (Running, Exited { success: false }, always, BackOff),
            (
                Running,
                Exited { success: true },
                RestartPolicy::OnFailure,
                Succeeded,
            ),
            (
                Running,
                Exited { success: false },
                RestartPolicy::OnFailure,
                BackOff,
            ),
            (
                Running,
                Exited { success: true },
                RestartPolicy::Never,
                Succeeded,
            ),
            (
                Running,
                Exited { success: false },
                RestartPolicy::Never,
                Failed,
            ),
            (BackOff, BackOffElapsed, always, Pulling),
            (Pending, Stop, always, Stopped),
            (Running, Stop, always, Stopped),
            (BackOff, Stop, always, Stopped),
        ];
        for (from, event, policy, to) in legal {
            assert_eq!(
                next(from, &event, policy),
                Some(to),
                "{from:?} --{event:?}--> {to:?}"
            );
        }
        let illegal = [
            (Pending, Started),
            (Pulling, Started),
            (Running, Pulled),
            (Succeeded, Begin),
            (Failed, BackOffElapsed),
            (Stopped, Stop),
            (Succeeded, Stop),
        ];
        for (from, event) in illegal {
            assert_eq!(next(from, &event, always), None, "{from:?} --{event:?}");
        }
    }

    #[test]
    fn phases() {
        assert_eq!(State::Pulling.phase(), PodPhase::Pending);
        assert_eq!(State::BackOff.phase(), PodPhase::Pending);
        assert_eq!(State::Running.phase(), PodPhase::Running);
        assert_eq!(State::Succeeded.phase(), PodPhase::Succeeded);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let short = Duration::from_millis(10);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay(short).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 8, 8]);
        assert_eq!(b.next_delay(Duration::from_secs(60)).as_secs(), 1);
    }
}
