//! Where a rollout begins: what serves now is what a rollback returns to.

use chrono::{DateTime, Utc};

use super::machine::{after, duration};
use super::phase::Phase;
use super::types::{Observation, RolloutSpec, RolloutState, ServiceRole, Track};
use crate::deployment::{DeploymentStatus, ServingHealth};
use crate::strategy::StrategySpec;

/// The state a deployment starts in when it leaves the queue, given what serves now.
pub fn start(spec: &RolloutSpec, observation: &Observation, now: DateTime<Utc>) -> RolloutState {
    let mut state = RolloutState {
        status: DeploymentStatus::Running,
        phase: Phase::Deploying,
        step: 0,
        outcome: None,
        failure: None,
        serving_health: ServingHealth::Unknown,
        serving: None,
        previous: None,
        live_color: None,
        progress_deadline_at: Some(after(now, duration(spec.progress_deadline))),
        timer_at: None,
        paused_by_command: false,
        approved_by: None,
        gated_phase: None,
        rollback_cause: None,
    };
    let stable = observation.workload(Track::Stable);
    let serving = match &spec.strategy {
        StrategySpec::Rolling(_) => {
            state.phase = Phase::RollingUpdate;
            stable
        }
        StrategySpec::Canary(_) => {
            state.phase = if stable.is_some() {
                Phase::CanaryStep
            } else {
                Phase::Deploying
            };
            stable
        }
        StrategySpec::BlueGreen(_) => {
            let live = observation
                .services
                .get(&ServiceRole::Active)
                .copied()
                .filter(|c| matches!(c, Track::Blue | Track::Green))
                .filter(|c| observation.workload(*c).is_some());
            state.live_color = live;
            state.phase = if live.is_some() {
                Phase::Preview
            } else {
                Phase::Deploying
            };
            live.and_then(|c| observation.workload(c))
        }
    };
    if let Some(w) = serving {
        state.previous = w.release.clone();
        state.serving = w.release.clone();
        if let Some(release) = &w.release
            && w.desired > 0
            && w.is_complete(release, w.desired)
        {
            state.serving_health = ServingHealth::Healthy;
        }
    }
    state
}
