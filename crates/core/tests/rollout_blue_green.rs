//! The blue-green strategy, stepped by hand.

mod common;

use common::*;
use serde_json::json;
use slipway_core::rollout::{CommandKind, Phase, RolloutSpec, ServiceRole, Track, failure_code};
use slipway_core::{DeploymentStatus, Outcome, ServingHealth};

use CommandKind::*;
use ServiceRole::{Active, Preview};
use Track::{Blue, Green};

fn blue_green(extra: serde_json::Value) -> RolloutSpec {
    let mut body = json!({"type": "blue_green", "scale_down_delay": "30s", "preview_replicas": 2});
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    spec(strategy(body))
}

/// Exactly one color has replicas, and the active Service selects it.
fn one_live_color(c: &Cluster) -> Track {
    let live: Vec<Track> = [Blue, Green]
        .into_iter()
        .filter(|t| c.desired(*t) > 0)
        .collect();
    assert_eq!(live.len(), 1, "colors with replicas: {live:?}");
    assert_eq!(c.active(), Some(live[0]));
    live[0]
}

#[test]
fn start_finds_the_live_color() {
    let run = Run::new(blue_green(json!({})), Cluster::with_live(Green));
    assert_eq!(run.phase(), Phase::Preview);
    assert_eq!(run.state.live_color, Some(Green));
    assert_eq!(run.state.previous, Some(v1()));
    assert_eq!(run.state.serving_health, ServingHealth::Healthy);

    let run = Run::new(blue_green(json!({})), Cluster::empty());
    assert_eq!(run.phase(), Phase::Deploying);
    assert_eq!(run.state.live_color, None);
    assert_eq!(run.state.previous, None);
}

#[test]
fn first_deploy_goes_straight_to_blue() {
    let mut run = Run::new(blue_green(json!({})), Cluster::empty());
    let d = run.tick();
    assert_eq!(
        d.actions,
        vec![
            apply(Blue, &v2(), REPLICAS),
            select(Active, Blue),
            select(Preview, Blue),
        ]
    );
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
    assert_eq!(run.state.serving, Some(v2()));
    assert_eq!(one_live_color(&run.cluster), Blue);
}

#[test]
fn success_path_with_manual_promotion() {
    let mut run = Run::new(
        blue_green(json!({"auto_promote": false})),
        Cluster::with_live(Blue),
    );
    let d = run.tick();
    assert_eq!(run.phase(), Phase::Preview);
    assert_eq!(
        d.actions,
        vec![apply(Green, &v2(), 2), select(Preview, Green)]
    );

    let d = run.tick();
    assert_eq!(run.phase(), Phase::AwaitingPromotion);
    assert_eq!(run.status(), DeploymentStatus::Paused);
    assert!(d.actions.is_empty());
    assert_eq!(note_kinds(&d), vec!["step_completed", "paused"]);
    assert_eq!(run.state.progress_deadline_at, None);
    assert_eq!(run.accepted("bob"), vec![Promote, Abort, Rollback]);

    // A long wait at the gate is not a lack of progress.
    run.advance(100 * DEADLINE_SECS);
    let d = run.tick();
    assert!(d.actions.is_empty());
    assert_eq!(run.phase(), Phase::AwaitingPromotion);

    let d = run.command(Promote, "bob");
    assert_eq!(run.phase(), Phase::Promoting);
    assert_eq!(run.status(), DeploymentStatus::Running);
    assert_eq!(d.actions, vec![apply(Green, &v2(), REPLICAS)]);
    assert_eq!(run.state.progress_deadline_at, Some(run.at(DEADLINE_SECS)));

    let d = run.tick();
    assert_eq!(run.phase(), Phase::Switching);
    assert_eq!(d.actions, vec![select(Active, Green)]);
    assert_eq!(run.cluster.active(), Some(Green));

    let d = run.tick();
    assert_eq!(run.phase(), Phase::ScalingDownOld);
    assert!(d.actions.is_empty());
    assert_eq!(note_kinds(&d), vec!["traffic_shifted"]);
    assert_eq!(run.state.timer_at, Some(run.at(30)));
    assert_eq!(d.wake_at, Some(run.at(30)));
    assert_eq!(run.state.progress_deadline_at, None);

    run.advance(29);
    assert!(
        run.tick().actions.is_empty(),
        "the old color stays during the delay"
    );
    run.advance(1);
    let d = run.tick();
    assert_eq!(d.actions, vec![scale(Blue, 0)]);
    assert_eq!(run.status(), DeploymentStatus::Running);

    let d = run.tick();
    assert_eq!(note_kinds(&d), vec!["promoted"]);
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Succeeded);
    assert_eq!(s.outcome, Some(Outcome::Promoted));
    assert_eq!(s.serving, Some(v2()));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(one_live_color(&run.cluster), Green);
}

#[test]
fn auto_promotion_at_once_and_after_a_wait() {
    let mut run = Run::new(blue_green(json!({})), Cluster::with_live(Blue));
    run.tick();
    let d = run.tick();
    assert_eq!(run.phase(), Phase::Promoting);
    assert_eq!(d.actions, vec![apply(Green, &v2(), REPLICAS)]);

    let mut run = Run::new(
        blue_green(json!({"auto_promote_after": "2m"})),
        Cluster::with_live(Blue),
    );
    run.tick();
    let d = run.tick();
    assert_eq!(run.phase(), Phase::AutoPromoteWait);
    assert_eq!(run.status(), DeploymentStatus::Running);
    assert_eq!(d.wake_at, Some(run.at(120)));
    assert_eq!(run.accepted("bob"), vec![Promote, Pause, Abort, Rollback]);
    run.advance(120);
    let d = run.tick();
    assert_eq!(run.phase(), Phase::Promoting);
    assert_eq!(d.actions, vec![apply(Green, &v2(), REPLICAS)]);
    run.tick_until(10, |s| s.phase == Phase::ScalingDownOld);
    run.advance(30);
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
    assert_eq!(one_live_color(&run.cluster), Green);

    // Promote skips the wait.
    let mut run = Run::new(
        blue_green(json!({"auto_promote_after": "2m"})),
        Cluster::with_live(Blue),
    );
    run.tick_until(5, |s| s.phase == Phase::AutoPromoteWait);
    run.command(Promote, "bob");
    assert_eq!(run.phase(), Phase::Promoting);
}

#[test]
fn approval_with_a_distinct_approver() {
    let mut run = Run::new(
        blue_green(json!({"auto_promote": false})),
        Cluster::with_live(Blue),
    );
    run.spec.approval.required = true;
    run.spec.approval.distinct_approver = true;
    run.tick();
    let d = run.tick();
    assert_eq!(run.phase(), Phase::AwaitingApproval);
    assert_eq!(run.status(), DeploymentStatus::Paused);
    assert_eq!(note_kinds(&d), vec!["step_completed", "awaiting_approval"]);

    assert_eq!(run.accepted(REQUESTER), vec![Abort, Rollback]);
    let err = slipway_core::rollout::accepts(&run.spec, &run.state, Approve, REQUESTER, REQUESTER)
        .unwrap_err();
    assert!(
        err.to_string().contains("someone other than the requester"),
        "{err}"
    );
    assert_eq!(run.accepted("bob"), vec![Approve, Abort, Rollback]);

    let d = run.command(Approve, "bob");
    assert_eq!(note_kinds(&d), vec!["approved", "step_started"]);
    assert_eq!(run.state.approved_by.as_deref(), Some("bob"));
    assert_eq!(run.phase(), Phase::Promoting);
    assert_eq!(d.actions, vec![apply(Green, &v2(), REPLICAS)]);
}

#[test]
fn abort_before_the_switch() {
    let mut run = Run::new(
        blue_green(json!({"auto_promote": false})),
        Cluster::with_live(Blue),
    );
    run.tick_until(5, |s| s.phase == Phase::AwaitingPromotion);
    let d = run.command(Abort, "bob");
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(run.phase(), Phase::SwitchingBack);
    assert_eq!(d.actions, vec![select(Preview, Blue)]);
    assert_eq!(note_kinds(&d), vec!["rollback_started"]);

    let d = run.tick();
    assert_eq!(run.phase(), Phase::ScalingDownNew);
    assert_eq!(d.actions, vec![scale(Green, 0)]);

    let d = run.tick();
    assert_eq!(note_kinds(&d), vec!["rolled_back"]);
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::RolledBack);
    assert_eq!(s.outcome, Some(Outcome::Aborted));
    assert_eq!(s.serving, Some(v1()));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(one_live_color(&run.cluster), Blue);
}

#[test]
fn abort_after_the_switch_switches_back_in_the_same_tick() {
    let mut run = Run::new(blue_green(json!({})), Cluster::with_live(Blue));
    run.tick_until(10, |s| s.phase == Phase::ScalingDownOld);
    assert_eq!(run.cluster.active(), Some(Green));
    run.advance(10);
    let d = run.command(Abort, "bob");
    assert_eq!(run.phase(), Phase::SwitchingBack);
    assert_eq!(d.actions, vec![select(Active, Blue), select(Preview, Blue)]);
    assert_eq!(run.cluster.active(), Some(Blue));
    assert!(run.cluster.desired(Green) > 0, "not scaled before verified");

    let d = run.tick();
    assert_eq!(d.actions, vec![scale(Green, 0)]);
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(run.state.outcome, Some(Outcome::Aborted));
    assert_eq!(one_live_color(&run.cluster), Blue);
}

#[test]
fn rollback_while_the_old_color_scales_down_brings_it_back_first() {
    let mut run = Run::new(
        blue_green(json!({"scale_down_delay": "0s"})),
        Cluster::with_live(Blue),
    );
    run.cluster.lag = 3;
    let d = run.tick_until(20, |s| s.phase == Phase::ScalingDownOld);
    assert_eq!(d.actions, vec![scale(Blue, 0)]);
    let d = run.command(Rollback, "bob");
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(d.actions, vec![apply(Blue, &v1(), REPLICAS)]);
    assert_eq!(
        run.cluster.active(),
        Some(Green),
        "no switch to a color not up"
    );
    let rollback_tick = run.history.len() - 1;
    run.tick_until(10, |s| s.phase == Phase::ScalingDownNew);
    let switch_tick = run
        .history
        .iter()
        .position(|d| d.actions.contains(&select(Active, Blue)))
        .unwrap();
    assert!(
        switch_tick > rollback_tick + 1,
        "switched back only once Blue was up"
    );
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(run.state.outcome, Some(Outcome::RolledBack));
    assert_eq!(one_live_color(&run.cluster), Blue);
}

#[test]
fn progress_deadline_in_preview_rolls_back_healthy() {
    let mut run = Run::new(blue_green(json!({})), Cluster::with_live(Blue));
    run.cluster.stick(Green);
    run.tick();
    run.advance(DEADLINE_SECS);
    let d = run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(d.actions, vec![select(Preview, Blue)]);
    run.tick_until(10, |s| s.status.is_terminal());
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::RolledBack);
    assert_eq!(s.outcome, Some(Outcome::RolledBack));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(
        s.failure.as_ref().unwrap().code,
        "progress_deadline_exceeded"
    );
    assert_eq!(one_live_color(&run.cluster), Blue);
}

#[test]
fn first_deploy_that_never_comes_up_fails_degraded() {
    let mut run = Run::new(blue_green(json!({})), Cluster::empty());
    run.cluster.stick(Blue);
    run.tick();
    run.advance(DEADLINE_SECS);
    let d = run.tick();
    assert_eq!(note_kinds(&d), vec!["failed"]);
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Failed);
    assert_eq!(s.outcome, Some(Outcome::Failed));
    assert_eq!(s.serving_health, ServingHealth::Degraded);
    assert_eq!(
        s.failure.as_ref().unwrap().code,
        "progress_deadline_exceeded"
    );
    assert_eq!(one_live_color(&run.cluster), Blue);
}

#[test]
fn a_rollback_that_cannot_switch_back_fails_leaving_one_color() {
    let mut run = Run::new(
        blue_green(json!({"scale_down_delay": "0s"})),
        Cluster::with_live(Blue),
    );
    run.cluster.lag = 3;
    let d = run.tick_until(20, |s| s.phase == Phase::ScalingDownOld);
    assert_eq!(d.actions, vec![scale(Blue, 0)]);
    run.cluster.stick(Blue);
    run.command(Abort, "bob");
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    run.advance(DEADLINE_SECS);
    let d = run.tick();
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Failed);
    assert_eq!(
        s.failure.as_ref().unwrap().code,
        failure_code::ROLLBACK_FAILED
    );
    assert_eq!(s.serving_health, ServingHealth::Degraded);
    assert_eq!(d.actions, vec![scale(Blue, 0)]);
    assert_eq!(one_live_color(&run.cluster), Green);
}

#[test]
fn commands_in_every_state() {
    let mut run = Run::new(
        blue_green(json!({"auto_promote": false})),
        Cluster::with_live(Blue),
    );
    run.cluster.lag = 2;
    // preview
    run.tick();
    assert_eq!(run.phase(), Phase::Preview);
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);
    run.command(Pause, "bob");
    assert_eq!(run.accepted("bob"), vec![Resume, Abort, Rollback]);
    run.command(Resume, "bob");
    // awaiting_promotion
    run.tick_until(5, |s| s.phase == Phase::AwaitingPromotion);
    assert_eq!(run.accepted("bob"), vec![Promote, Abort, Rollback]);
    // promoting
    run.command(Promote, "bob");
    assert_eq!(run.phase(), Phase::Promoting);
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);
    // switching
    run.tick_until(5, |s| s.phase == Phase::Switching);
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);
    // scaling_down_old
    run.tick_until(5, |s| s.phase == Phase::ScalingDownOld);
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);
    // switching_back
    run.command(Abort, "bob");
    assert_eq!(run.phase(), Phase::SwitchingBack);
    assert_eq!(run.accepted("bob"), Vec::<CommandKind>::new());
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(run.accepted("bob"), vec![Retry]);
}

#[test]
fn pause_during_the_scale_down_delay_holds_the_old_color() {
    let mut run = Run::new(blue_green(json!({})), Cluster::with_live(Blue));
    run.tick_until(10, |s| s.phase == Phase::ScalingDownOld);
    run.command(Pause, "bob");
    run.advance(300);
    assert!(run.tick().actions.is_empty());
    assert!(run.cluster.desired(Blue) > 0);
    let d = run.command(Resume, "bob");
    assert_eq!(d.actions, vec![scale(Blue, 0)]);
}

#[test]
fn the_scale_down_delay_starts_once_the_active_endpoints_hold_the_new_color_only() {
    let mut run = Run::new(blue_green(json!({})), Cluster::with_live(Blue));
    // The endpoint controller lags: the selector moves, the EndpointSlices do not (yet).
    run.cluster.endpoints_stale = true;
    run.tick_until(10, |s| s.phase == Phase::Switching);
    assert_eq!(run.cluster.active(), Some(Green));
    assert_eq!(run.cluster.obs.ready_endpoints(Active, Blue), REPLICAS);
    assert_eq!(run.cluster.obs.ready_endpoints(Active, Green), 0);

    run.advance(10);
    let d = run.tick();
    assert_eq!(run.phase(), Phase::Switching);
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert!(note_kinds(&d).is_empty(), "traffic has not shifted yet");
    assert_eq!(run.state.timer_at, None, "the delay has not started");
    assert!(
        d.wake_at.is_some_and(|w| w <= run.at(2)),
        "polls the cluster"
    );

    // Half-way: the slices hold pods of both colors. Still waiting.
    let active = run.cluster.obs.endpoints.entry(Active).or_default();
    active.ready.insert(Green, 2);
    run.advance(10);
    let d = run.tick();
    assert_eq!(run.phase(), Phase::Switching);
    assert!(d.actions.is_empty() && run.state.timer_at.is_none());

    // Green only: the delay starts now, not at the switch.
    run.cluster.endpoints_stale = false;
    run.cluster.sync_endpoints();
    run.advance(10);
    let d = run.tick();
    assert_eq!(run.phase(), Phase::ScalingDownOld);
    assert_eq!(note_kinds(&d), vec!["traffic_shifted"]);
    assert_eq!(run.state.timer_at, Some(run.at(30)));
    assert!(d.actions.is_empty());
    run.advance(30);
    assert_eq!(run.tick().actions, vec![scale(Blue, 0)]);
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
    assert_eq!(one_live_color(&run.cluster), Green);
}

#[test]
fn endpoints_that_never_follow_the_switch_hit_the_deadline_and_blue_is_never_scaled() {
    let mut run = Run::new(blue_green(json!({})), Cluster::with_live(Blue));
    run.cluster.endpoints_stale = true;
    run.tick_until(10, |s| s.phase == Phase::Switching);
    let deadline = run
        .state
        .progress_deadline_at
        .expect("a deadline while switching");
    run.now = deadline;
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(
        run.state.failure.as_ref().map(|f| f.code.as_str()),
        Some(failure_code::PROGRESS_DEADLINE_EXCEEDED)
    );
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(one_live_color(&run.cluster), Blue);
    assert!(
        run.history
            .iter()
            .all(|d| !d.actions.contains(&scale(Blue, 0))),
        "blue still had the traffic"
    );
}

#[test]
fn switching_back_scales_the_new_color_down_once_the_endpoints_leave_it() {
    let mut run = Run::new(blue_green(json!({})), Cluster::with_live(Blue));
    run.tick_until(10, |s| s.phase == Phase::ScalingDownOld);
    assert_eq!(run.cluster.obs.ready_endpoints(Active, Green), REPLICAS);
    run.cluster.endpoints_stale = true;
    run.command(Abort, "bob");
    assert_eq!(run.cluster.active(), Some(Blue));
    for _ in 0..3 {
        run.advance(5);
        let d = run.tick();
        assert!(d.actions.is_empty(), "{:?}", d.actions);
        assert_eq!(run.phase(), Phase::ScalingDownNew);
    }
    run.cluster.endpoints_stale = false;
    run.cluster.sync_endpoints();
    assert_eq!(run.tick().actions, vec![scale(Green, 0)]);
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(one_live_color(&run.cluster), Blue);
}

/// A first blue-green deploy puts Blue behind both Services at once, so with approval
/// required it waits for it before anything is applied.
#[test]
fn approval_gates_a_first_deploy() {
    let mut run = Run::new(blue_green(json!({})), Cluster::empty());
    assert_held_for_approval(&mut run);
    assert!(run.cluster.obs.workloads.is_empty());
    assert!(run.cluster.obs.services.is_empty());

    let d = run.command(Approve, "bob");
    assert_eq!(run.phase(), Phase::Deploying);
    assert!(
        d.actions.contains(&apply(Blue, &v2(), REPLICAS)),
        "{:?}",
        d.actions
    );
    run.tick_until(5, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
    assert_eq!(one_live_color(&run.cluster), Blue);
}

/// With approval required, neither `promote` nor an automatic promotion gets past it.
#[test]
fn approval_is_not_skipped_by_auto_promotion() {
    let mut run = Run::new(
        blue_green(json!({"auto_promote": true})),
        Cluster::with_live(Blue),
    );
    run.spec.approval.required = true;
    run.tick_until(5, |s| s.phase == Phase::AwaitingApproval);
    assert_eq!(run.phase(), Phase::AwaitingApproval);
    assert_eq!(run.accepted("bob"), vec![Approve, Abort, Rollback]);
    run.advance(3600);
    run.tick();
    assert_eq!(run.cluster.active(), Some(Blue));
    assert_eq!(run.phase(), Phase::AwaitingApproval);
}
