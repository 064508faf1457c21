//! Canary: ordered steps shift traffic to a `Canary` workload beside `Stable`, then Stable is
//! updated to the release and the canary removed.
//!
//! Safety rules: traffic is moved off a workload, and the move verified, before it is scaled
//! down; traffic is only moved onto the canary once it is available at its size; Stable is never
//! asked for fewer than the workload's replicas.

use super::budget::percent_up;
use super::machine::{Flow, Tick, after, duration, failure, failure_code};
use super::phase::Phase;
use super::types::{Action, Track};
use crate::deployment::FailureReason;
use crate::event::EventKind;
use crate::strategy::{CanarySpec, CanaryStep, TrafficRouting};

/// What the canary should look like at a step: its traffic weight and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Target {
    weight: u32,
    replicas: u32,
}

/// The target in force at step `index` (a `set_weight`/`set_canary_scale` step's own goal
/// included): the last weight set, and the size from the last `set_canary_scale`, else
/// `ceil(replicas * weight / 100)`.
fn target(c: &CanarySpec, replicas: u32, index: usize) -> Target {
    let mut weight = 0;
    let mut scale = None;
    for s in c.steps.iter().take(index.saturating_add(1)) {
        match s {
            CanaryStep::SetWeight(w) => weight = (*w).min(100),
            CanaryStep::SetCanaryScale(cs) => {
                if let Some(n) = cs.replicas {
                    scale = Some(n.min(replicas));
                } else if let Some(w) = cs.weight {
                    scale = Some(percent_up(replicas, w.min(100)));
                } else if cs.match_traffic_weight == Some(true) {
                    scale = None;
                }
            }
            CanaryStep::Pause(_) | CanaryStep::Analysis(_) => {}
        }
    }
    Target {
        weight,
        replicas: scale.unwrap_or_else(|| percent_up(replicas, weight)),
    }
}

fn routed(c: &CanarySpec) -> bool {
    !matches!(c.traffic, TrafficRouting::Replicas)
}

fn set_weight(t: &mut Tick<'_>, canary_weight: u32) {
    t.push(Action::SetCanaryWeight {
        canary_weight: canary_weight.min(100),
    });
}

fn step_index(t: &Tick<'_>) -> usize {
    usize::try_from(t.state.step).unwrap_or(usize::MAX)
}

/// Works on the current phase: what the machine does in it this tick, and how that ended.
pub(super) fn run_phase(t: &mut Tick<'_>, c: &CanarySpec) -> Flow {
    let result = match &t.state.phase {
        Phase::Deploying => deploying(t),
        Phase::CanaryStep => canary_step(t, c),
        Phase::PausedStep => paused_step(t, c),
        // A first deploy waits for approval before anything is applied.
        Phase::AwaitingApproval if t.state.gated_phase == Some(Phase::Deploying) => Ok(Flow::Hold),
        Phase::AwaitingApproval => {
            let tg = target(c, t.replicas(), step_index(t));
            // Keep the last step's shape while waiting; a stuck canary is not a failure here.
            let _ = converge(t, c, tg);
            Ok(Flow::Hold)
        }
        Phase::Promoting => promoting(t, c),
        Phase::ShiftingTraffic => shifting_traffic(t),
        Phase::ScalingDownCanary => scaling_down_canary(t, c),
        Phase::RestoringTraffic => restoring_traffic(t, c),
        Phase::RemovingCanary => removing_canary(t, c),
        other => Err(failure(
            failure_code::INVALID_STATE,
            format!("a canary has no phase {:?}", other.as_str()),
        )),
    };
    result.unwrap_or_else(Flow::Fail)
}

/// Nothing served before: Stable straight at full size, no steps.
fn deploying(t: &mut Tick<'_>) -> Result<Flow, FailureReason> {
    let release = t.release().clone();
    if t.ensure(Track::Stable, &release, t.replicas())? {
        t.succeed();
        return Ok(Flow::Next);
    }
    Ok(Flow::Wait)
}

/// Work toward `tg`; `Ok(true)` once the canary is available at its size and (with a router)
/// the router reports the weight. Traffic going down moves before replicas; going up, after.
fn converge(t: &mut Tick<'_>, c: &CanarySpec, tg: Target) -> Result<bool, FailureReason> {
    let observed = t.obs.canary_weight;
    if routed(c) && observed.is_some_and(|w| w > tg.weight) {
        set_weight(t, tg.weight);
        return Ok(false);
    }
    let release = t.release().clone();
    if !t.ensure(Track::Canary, &release, tg.replicas)? {
        return Ok(false);
    }
    if routed(c) && observed != Some(tg.weight) {
        set_weight(t, tg.weight);
        return Ok(false);
    }
    Ok(true)
}

fn canary_step(t: &mut Tick<'_>, c: &CanarySpec) -> Result<Flow, FailureReason> {
    let index = step_index(t);
    let Some(current) = c.steps.get(index) else {
        // Past the last step (or no steps at all): on to approval or promotion.
        advance(t, c, index);
        return Ok(Flow::Next);
    };
    match current {
        CanaryStep::Pause(p) => {
            match p.duration {
                Some(d) => {
                    let at = after(t.now, duration(d));
                    t.wait_until(Phase::PausedStep, at);
                    t.note(
                        EventKind::StepStarted,
                        format!("step {index}: pausing for {d}"),
                    );
                }
                None => {
                    t.hold_in(Phase::PausedStep);
                    t.note(
                        EventKind::Paused,
                        format!("step {index}: paused until promoted"),
                    );
                }
            }
            Ok(Flow::Next)
        }
        CanaryStep::Analysis(a) => Err(failure(
            failure_code::ANALYSIS_UNAVAILABLE,
            format!(
                "step {index}: analysis {:?} cannot run: no analysis provider is configured",
                a.template
            ),
        )),
        CanaryStep::SetWeight(_) | CanaryStep::SetCanaryScale(_) => {
            let tg = target(c, t.replicas(), index);
            if !converge(t, c, tg)? {
                return Ok(Flow::Wait);
            }
            if let CanaryStep::SetWeight(w) = current {
                t.note(
                    EventKind::TrafficShifted,
                    format!("canary at {w}% ({} replicas)", tg.replicas),
                );
            }
            t.note(EventKind::StepCompleted, format!("step {index} done"));
            advance(t, c, index.saturating_add(1));
            Ok(Flow::Next)
        }
    }
}

fn paused_step(t: &mut Tick<'_>, c: &CanarySpec) -> Result<Flow, FailureReason> {
    let index = step_index(t);
    if let Some(at) = t.state.timer_at
        && t.now >= at
    {
        t.note(
            EventKind::StepCompleted,
            format!("step {index}: pause over"),
        );
        advance(t, c, index.saturating_add(1));
        return Ok(Flow::Next);
    }
    // Keep the shape of the last step while paused; a stuck canary does not fail a pause.
    let tg = target(c, t.replicas(), index);
    let _ = converge(t, c, tg);
    Ok(match t.state.timer_at {
        Some(at) => Flow::Timer(at),
        None => Flow::Hold,
    })
}

/// `promote` in a pause step: skip the rest of it.
pub(super) fn promote(t: &mut Tick<'_>, c: &CanarySpec, actor: &str) {
    let index = step_index(t);
    t.note(
        EventKind::StepCompleted,
        format!("step {index}: pause ended by {actor}"),
    );
    advance(t, c, index.saturating_add(1));
}

/// Go to step `next`, or past the last step to promotion (held for approval when required).
fn advance(t: &mut Tick<'_>, c: &CanarySpec, next: usize) {
    if next < c.steps.len() {
        t.state.step = u32::try_from(next).unwrap_or(u32::MAX);
        t.enter(Phase::CanaryStep);
        t.note(EventKind::StepStarted, format!("step {next}"));
        return;
    }
    t.state.step = u32::try_from(c.steps.len()).unwrap_or(u32::MAX);
    t.go_live(Phase::Promoting, "promoting");
}

/// Stable moves to the release at full size (never below it), while the canary keeps serving.
fn promoting(t: &mut Tick<'_>, c: &CanarySpec) -> Result<Flow, FailureReason> {
    let release = t.release().clone();
    if !t.ensure(Track::Stable, &release, t.replicas())? {
        return Ok(Flow::Wait);
    }
    t.note(
        EventKind::StepCompleted,
        format!("stable runs {}", release.version),
    );
    t.enter(if routed(c) {
        Phase::ShiftingTraffic
    } else {
        Phase::ScalingDownCanary
    });
    Ok(Flow::Next)
}

fn shifting_traffic(t: &mut Tick<'_>) -> Result<Flow, FailureReason> {
    let release = t.release().clone();
    if !t.ensure(Track::Stable, &release, t.replicas())? {
        // Stable lost pods: no traffic moves onto it until it is whole again.
        return Ok(Flow::Wait);
    }
    if t.obs.canary_weight != Some(0) {
        set_weight(t, 0);
        return Ok(Flow::Wait);
    }
    t.note(EventKind::TrafficShifted, "all traffic on stable");
    t.enter(Phase::ScalingDownCanary);
    Ok(Flow::Next)
}

/// Scale the canary to zero, once (with a router) its weight is verified 0.
fn remove_canary(t: &mut Tick<'_>, c: &CanarySpec) -> bool {
    if routed(c) && t.obs.canary_weight != Some(0) {
        set_weight(t, 0);
        return false;
    }
    if t.is_zero(Track::Canary) {
        return true;
    }
    t.push(Action::ScaleWorkload {
        track: Track::Canary,
        replicas: 0,
    });
    false
}

fn scaling_down_canary(t: &mut Tick<'_>, c: &CanarySpec) -> Result<Flow, FailureReason> {
    let release = t.release().clone();
    if !t.ensure(Track::Stable, &release, t.replicas())? {
        return Ok(Flow::Wait);
    }
    if remove_canary(t, c) {
        t.succeed();
        return Ok(Flow::Next);
    }
    Ok(Flow::Wait)
}

/// Rollback, first half: all traffic back on Stable, which runs the previous release at full
/// size. Nothing is scaled down here.
fn restoring_traffic(t: &mut Tick<'_>, c: &CanarySpec) -> Result<Flow, FailureReason> {
    let Some(previous) = t.state.previous.clone() else {
        return Err(failure(
            failure_code::INVALID_STATE,
            "rolling back with no previous release",
        ));
    };
    let stable_ok = t.ensure(Track::Stable, &previous, t.replicas())?;
    let traffic_ok = !routed(c) || t.obs.canary_weight == Some(0);
    if !traffic_ok {
        set_weight(t, 0);
    }
    if !(stable_ok && traffic_ok) {
        return Ok(Flow::Wait);
    }
    t.note(
        EventKind::TrafficShifted,
        format!("all traffic on stable at {}", previous.version),
    );
    t.enter(Phase::RemovingCanary);
    Ok(Flow::Next)
}

/// Rollback, second half: the canary is scaled to zero.
fn removing_canary(t: &mut Tick<'_>, c: &CanarySpec) -> Result<Flow, FailureReason> {
    let Some(previous) = t.state.previous.clone() else {
        return Err(failure(
            failure_code::INVALID_STATE,
            "rolling back with no previous release",
        ));
    };
    if !t.ensure(Track::Stable, &previous, t.replicas())? {
        // Stable lost pods: the canary keeps serving until Stable is whole again.
        return Ok(Flow::Wait);
    }
    if remove_canary(t, c) {
        t.rolled_back();
        return Ok(Flow::Next);
    }
    Ok(Flow::Wait)
}
