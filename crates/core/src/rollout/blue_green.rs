//! Blue-green: the new color comes up beside the live one on the preview Service, the active
//! Service switches to it, and once the active Service's EndpointSlices hold pods of the new
//! color only, the old color is scaled down after `scale_down_delay`.
//!
//! A rollback before the switch points the preview Service back at the live color and scales the
//! new one down; after the switch it points the active Service back at once (the old color is
//! still up during the delay), verifies it (selector and endpoints), and only then scales the
//! new color down.

use super::machine::{Flow, Tick, after, duration, failure, failure_code};
use super::phase::Phase;
use super::types::{Action, ServiceRole, Track};
use crate::deployment::FailureReason;
use crate::event::EventKind;
use crate::strategy::BlueGreenSpec;

/// Works on the current phase: what the machine does in it this tick, and how that ended.
pub(super) fn run_phase(t: &mut Tick<'_>, b: &BlueGreenSpec) -> Flow {
    let result = match &t.state.phase {
        Phase::Deploying => first_deploy(t),
        Phase::Preview => preview(t, b),
        // A first deploy waits for approval before anything is applied.
        Phase::AwaitingApproval if t.state.live_color.is_none() => Ok(Flow::Hold),
        Phase::AwaitingApproval | Phase::AwaitingPromotion => colors(t).map(|(_, new)| {
            maintain_preview(t, b, new);
            Flow::Hold
        }),
        Phase::AutoPromoteWait => colors(t).map(|(_, new)| match t.state.timer_at {
            Some(at) if t.now < at => {
                maintain_preview(t, b, new);
                Flow::Timer(at)
            }
            _ => {
                t.go_live(Phase::Promoting, "promoting automatically");
                Flow::Next
            }
        }),
        Phase::Promoting => promoting(t),
        Phase::Switching => switching(t, b),
        Phase::ScalingDownOld => scaling_down_old(t),
        Phase::SwitchingBack => switching_back(t),
        Phase::ScalingDownNew => scaling_down_new(t),
        other => Err(failure(
            failure_code::INVALID_STATE,
            format!("a blue-green rollout has no phase {:?}", other.as_str()),
        )),
    };
    result.unwrap_or_else(Flow::Fail)
}

/// The live (old) color and the new one.
fn colors(t: &Tick<'_>) -> Result<(Track, Track), FailureReason> {
    match t.state.live_color {
        Some(live @ (Track::Blue | Track::Green)) => Ok((live, live.other_color())),
        _ => Err(failure(
            failure_code::INVALID_STATE,
            format!("phase {} needs a live color", t.state.phase),
        )),
    }
}

fn select(t: &mut Tick<'_>, service: ServiceRole, track: Track) {
    if !t.selects(service, track) {
        t.push(Action::SelectTrack { service, track });
    }
}

fn scale_to_zero(t: &mut Tick<'_>, track: Track) {
    if !t.is_zero(track) {
        t.push(Action::ScaleWorkload { track, replicas: 0 });
    }
}

fn preview_replicas(t: &Tick<'_>, b: &BlueGreenSpec) -> u32 {
    b.preview_replicas.unwrap_or(t.replicas()).min(t.replicas())
}

/// Nothing served before: Blue at full size, both Services on it at once.
fn first_deploy(t: &mut Tick<'_>) -> Result<Flow, FailureReason> {
    let release = t.release().clone();
    let ready = t.ensure(Track::Blue, &release, t.replicas())?;
    select(t, ServiceRole::Active, Track::Blue);
    select(t, ServiceRole::Preview, Track::Blue);
    scale_to_zero(t, Track::Green);
    let selected =
        t.selects(ServiceRole::Active, Track::Blue) && t.selects(ServiceRole::Preview, Track::Blue);
    if ready && selected && t.is_zero(Track::Green) {
        t.succeed();
        return Ok(Flow::Next);
    }
    Ok(Flow::Wait)
}

fn preview(t: &mut Tick<'_>, b: &BlueGreenSpec) -> Result<Flow, FailureReason> {
    let (_, new) = colors(t)?;
    let release = t.release().clone();
    let ready = t.ensure(new, &release, preview_replicas(t, b))?;
    select(t, ServiceRole::Preview, new);
    if !(ready && t.selects(ServiceRole::Preview, new)) {
        return Ok(Flow::Wait);
    }
    t.note(
        EventKind::StepCompleted,
        format!("{} is available on the preview service", new.as_str()),
    );
    if t.spec.approval.required {
        // The approval is the only human gate: promotion waits for it, and for nothing else.
        t.go_live(Phase::Promoting, "promoting");
    } else if !b.auto_promote {
        t.hold_in(Phase::AwaitingPromotion);
        t.note(EventKind::Paused, "waiting for promote");
    } else if let Some(wait) = b.auto_promote_after.filter(|d| d.as_secs() > 0) {
        let at = after(t.now, duration(wait));
        t.wait_until(Phase::AutoPromoteWait, at);
        t.note(
            EventKind::StepStarted,
            format!("promoting automatically at {}", at.to_rfc3339()),
        );
    } else {
        t.go_live(Phase::Promoting, "promoting");
    }
    Ok(Flow::Next)
}

/// While a gate holds: keep the new color at its preview size and on the preview Service.
fn maintain_preview(t: &mut Tick<'_>, b: &BlueGreenSpec, new: Track) {
    let release = t.release().clone();
    let n = preview_replicas(t, b);
    if !t.complete(new, &release, n) {
        t.apply(new, &release, n);
    }
    select(t, ServiceRole::Preview, new);
}

/// `promote` at `awaiting_promotion` or during the auto-promote wait.
pub(super) fn promote(t: &mut Tick<'_>, actor: &str) {
    t.go_live(Phase::Promoting, format!("promoted by {actor}"));
}

fn promoting(t: &mut Tick<'_>) -> Result<Flow, FailureReason> {
    let (_, new) = colors(t)?;
    let release = t.release().clone();
    let ready = t.ensure(new, &release, t.replicas())?;
    select(t, ServiceRole::Preview, new);
    if !ready {
        return Ok(Flow::Wait);
    }
    t.note(
        EventKind::StepCompleted,
        format!("{} is available at full size", new.as_str()),
    );
    t.enter(Phase::Switching);
    Ok(Flow::Next)
}

fn switching(t: &mut Tick<'_>, b: &BlueGreenSpec) -> Result<Flow, FailureReason> {
    let (_, new) = colors(t)?;
    let release = t.release().clone();
    if !t.ensure(new, &release, t.replicas())? {
        // The new color lost pods: no traffic onto it until it is whole again.
        return Ok(Flow::Wait);
    }
    if !t.selects(ServiceRole::Active, new) {
        t.push(Action::SelectTrack {
            service: ServiceRole::Active,
            track: new,
        });
        return Ok(Flow::Wait);
    }
    if !t.serves_only(ServiceRole::Active, new) {
        // The selector moved; the endpoint controller has yet to move the traffic.
        return Ok(Flow::Wait);
    }
    t.note(
        EventKind::TrafficShifted,
        format!(
            "the active service selects {} and its endpoints are {} pods only",
            new.as_str(),
            new.as_str()
        ),
    );
    let at = after(t.now, duration(b.scale_down_delay));
    t.wait_until(Phase::ScalingDownOld, at);
    Ok(Flow::Next)
}

fn scaling_down_old(t: &mut Tick<'_>) -> Result<Flow, FailureReason> {
    let (old, new) = colors(t)?;
    if let Some(at) = t.state.timer_at {
        if t.now < at {
            select(t, ServiceRole::Active, new);
            return Ok(Flow::Timer(at));
        }
        t.enter(Phase::ScalingDownOld);
        t.note(
            EventKind::StepStarted,
            format!("scaling down {}", old.as_str()),
        );
    }
    let release = t.release().clone();
    if !t.ensure(new, &release, t.replicas())? {
        // The new color lost pods: keep the old one (a rollback can still switch back to it).
        return Ok(Flow::Wait);
    }
    if !t.selects(ServiceRole::Active, new) {
        // Someone moved the active Service: put it back before touching the old color.
        select(t, ServiceRole::Active, new);
        return Ok(Flow::Wait);
    }
    if !t.serves_only(ServiceRole::Active, new) && !t.is_zero(old) {
        // Traffic still reaches the old color (e.g. after someone moved the Service back).
        return Ok(Flow::Wait);
    }
    if t.is_zero(old) {
        t.succeed();
        return Ok(Flow::Next);
    }
    scale_to_zero(t, old);
    Ok(Flow::Wait)
}

fn switching_back(t: &mut Tick<'_>) -> Result<Flow, FailureReason> {
    let (old, _) = colors(t)?;
    let Some(previous) = t.state.previous.clone() else {
        return Err(failure(
            failure_code::INVALID_STATE,
            "rolling back with no previous release",
        ));
    };
    if !t.ensure(old, &previous, t.replicas())? {
        return Ok(Flow::Wait);
    }
    select(t, ServiceRole::Active, old);
    select(t, ServiceRole::Preview, old);
    if !(t.selects(ServiceRole::Active, old) && t.selects(ServiceRole::Preview, old)) {
        return Ok(Flow::Wait);
    }
    t.note(
        EventKind::TrafficShifted,
        format!("both services select {} again", old.as_str()),
    );
    t.enter(Phase::ScalingDownNew);
    Ok(Flow::Next)
}

fn scaling_down_new(t: &mut Tick<'_>) -> Result<Flow, FailureReason> {
    let (old, new) = colors(t)?;
    let Some(previous) = t.state.previous.clone() else {
        return Err(failure(
            failure_code::INVALID_STATE,
            "rolling back with no previous release",
        ));
    };
    let old_ready = t.ensure(old, &previous, t.replicas())?;
    if !t.selects(ServiceRole::Active, old) {
        if old_ready {
            select(t, ServiceRole::Active, old);
        }
        return Ok(Flow::Wait);
    }
    if old_ready && t.is_zero(new) {
        t.rolled_back();
        return Ok(Flow::Next);
    }
    if t.obs.ready_endpoints(ServiceRole::Active, new) > 0 {
        // The active Service's endpoints still hold pods of the new color.
        return Ok(Flow::Wait);
    }
    scale_to_zero(t, new);
    Ok(Flow::Wait)
}

/// On a terminal failure: leave exactly one color with replicas, and the active Service on it.
/// The color kept is the one the active Service selects when it has replicas, else one that has.
pub(super) fn settle(t: &mut Tick<'_>) {
    let new = t.state.live_color.map_or(Track::Blue, Track::other_color);
    let active = t
        .obs
        .services
        .get(&ServiceRole::Active)
        .copied()
        .filter(|c| matches!(c, Track::Blue | Track::Green));
    let keep = active.filter(|c| t.has_replicas(*c)).or_else(|| {
        [new, new.other_color()]
            .into_iter()
            .find(|c| t.has_replicas(*c))
    });
    if let Some(keep) = keep {
        select(t, ServiceRole::Active, keep);
        if t.has_replicas(keep.other_color()) {
            t.push(Action::ScaleWorkload {
                track: keep.other_color(),
                replicas: 0,
            });
        }
    }
}
