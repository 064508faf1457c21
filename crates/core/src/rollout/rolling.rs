//! Rolling update: the Stable workload is moved to the release in place, within its budget.
//! Every replica it moves serves production traffic, so where the environment requires
//! approval the update waits for it before it applies anything.

use super::budget::resolve_budget;
use super::machine::{Flow, Tick, failure, failure_code};
use super::phase::Phase;
use super::types::{Action, Release, Track};
use crate::strategy::RollingSpec;

/// Works on the current phase: what the machine does in it this tick, and how that ended.
pub(super) fn run_phase(t: &mut Tick<'_>, r: &RollingSpec) -> Flow {
    match &t.state.phase {
        Phase::RollingUpdate => {
            let release = t.release().clone();
            if t.complete(Track::Stable, &release, t.replicas()) {
                t.succeed();
                return Flow::Next;
            }
            drive(t, r, &release)
        }
        // Approval first: nothing is applied until it is given.
        Phase::AwaitingApproval => Flow::Hold,
        Phase::RollingBack => {
            let Some(previous) = t.state.previous.clone() else {
                return Flow::Fail(failure(
                    failure_code::INVALID_STATE,
                    "rolling back with no previous release",
                ));
            };
            if t.complete(Track::Stable, &previous, t.replicas()) {
                t.rolled_back();
                return Flow::Next;
            }
            drive(t, r, &previous)
        }
        other => Flow::Fail(failure(
            failure_code::INVALID_STATE,
            format!("a rolling update has no phase {:?}", other.as_str()),
        )),
    }
}

/// Apply Stable at `release` with the resolved budget; fail if the workload reports it stuck.
fn drive(t: &mut Tick<'_>, r: &RollingSpec, release: &Release) -> Flow {
    if let Some(reason) = t.stalled(Track::Stable, release) {
        return Flow::Fail(reason);
    }
    let replicas = t.replicas();
    let budget = resolve_budget(r.max_surge, r.max_unavailable, replicas);
    t.push(Action::ApplyWorkload {
        track: Track::Stable,
        release: release.clone(),
        replicas,
        max_surge: budget.max_surge,
        max_unavailable: budget.max_unavailable,
    });
    Flow::Wait
}
