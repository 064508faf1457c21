//! The canary strategy, stepped by hand.

mod common;

use common::*;
use serde_json::{Value, json};
use slipway_core::rollout::{Action, CommandKind, Phase, RolloutSpec, Track, failure_code};
use slipway_core::{DeploymentStatus, Outcome, ServingHealth};

use CommandKind::*;
use Track::{Canary, Stable};

fn canary(steps: Value, traffic: Value) -> RolloutSpec {
    spec(strategy(
        json!({"type": "canary", "steps": steps, "traffic": traffic}),
    ))
}

fn replicas_router() -> Value {
    json!({"router": "replicas"})
}

fn gateway() -> Value {
    json!({"router": "gateway_api", "http_route": "web"})
}

/// A cluster with Stable at v1 and a router reporting weight 0.
fn routed_cluster() -> Cluster {
    let mut c = Cluster::with_stable();
    c.obs.canary_weight = Some(0);
    c
}

#[test]
fn first_deploy_has_no_steps() {
    let mut run = Run::new(
        canary(
            json!([{"set_weight": 10}, {"pause": {}}]),
            replicas_router(),
        ),
        Cluster::empty(),
    );
    assert_eq!(run.phase(), Phase::Deploying);
    let d = run.tick();
    assert_eq!(d.actions, vec![apply(Stable, &v2(), REPLICAS)]);
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
    assert_eq!(run.state.serving, Some(v2()));
    assert!(run.cluster.workload(Canary).is_none());
}

#[test]
fn success_path_with_the_replicas_router() {
    let mut run = Run::new(
        canary(
            json!([{"set_weight": 25}, {"pause": {"duration": "5m"}}, {"set_weight": 50}, {"pause": {}}]),
            replicas_router(),
        ),
        Cluster::with_stable(),
    );
    assert_eq!((run.phase(), run.state.step), (Phase::CanaryStep, 0));
    assert_eq!(run.state.previous, Some(v1()));

    // step 0: set_weight 25 → ceil(4 * 25%) = 1 canary replica.
    let d = run.tick();
    assert_eq!(d.actions, vec![apply(Canary, &v2(), 1)]);
    assert_eq!((run.phase(), run.state.step), (Phase::CanaryStep, 0));

    // done → step 1: a timed pause, still running, no deadline.
    let d = run.tick();
    assert_eq!(
        note_kinds(&d),
        vec![
            "traffic_shifted",
            "step_completed",
            "step_started",
            "step_started"
        ]
    );
    assert!(d.actions.is_empty());
    assert_eq!((run.phase(), run.state.step), (Phase::PausedStep, 1));
    assert_eq!(run.status(), DeploymentStatus::Running);
    assert_eq!(run.state.timer_at, Some(run.at(300)));
    assert_eq!(d.wake_at, Some(run.at(300)));
    assert_eq!(run.state.progress_deadline_at, None);
    assert_eq!(run.accepted("bob"), vec![Promote, Pause, Abort, Rollback]);

    run.advance(299);
    assert!(run.tick().actions.is_empty());
    assert_eq!(run.state.step, 1);

    // step 2: set_weight 50 → 2 replicas.
    run.advance(1);
    let d = run.tick();
    assert_eq!((run.phase(), run.state.step), (Phase::CanaryStep, 2));
    assert_eq!(d.actions, vec![apply(Canary, &v2(), 2)]);
    assert_eq!(run.state.progress_deadline_at, Some(run.at(DEADLINE_SECS)));

    // step 3: pause until promoted.
    let d = run.tick();
    assert_eq!((run.phase(), run.state.step), (Phase::PausedStep, 3));
    assert_eq!(run.status(), DeploymentStatus::Paused);
    assert!(note_kinds(&d).contains(&"paused"));
    assert_eq!(run.accepted("bob"), vec![Promote, Abort, Rollback]);
    run.advance(10 * DEADLINE_SECS);
    assert!(run.tick().actions.is_empty());

    // promote: stable moves to v2 at full size (never below it).
    let d = run.command(Promote, "bob");
    assert_eq!((run.phase(), run.state.step), (Phase::Promoting, 4));
    assert_eq!(run.status(), DeploymentStatus::Running);
    assert_eq!(d.actions, vec![apply(Stable, &v2(), REPLICAS)]);

    // then the canary goes.
    let d = run.tick();
    assert_eq!(run.phase(), Phase::ScalingDownCanary);
    assert_eq!(d.actions, vec![scale(Canary, 0)]);

    let d = run.tick();
    assert_eq!(note_kinds(&d), vec!["promoted"]);
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Succeeded);
    assert_eq!(s.outcome, Some(Outcome::Promoted));
    assert_eq!(s.serving, Some(v2()));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(run.cluster.desired(Canary), 0);
    assert_eq!(run.cluster.desired(Stable), REPLICAS);
}

#[test]
fn success_path_with_a_traffic_router() {
    let mut run = Run::new(
        canary(json!([{"set_weight": 25}, {"pause": {}}]), gateway()),
        routed_cluster(),
    );
    // Replicas first, then traffic onto them.
    let d = run.tick();
    assert_eq!(d.actions, vec![apply(Canary, &v2(), 1)]);
    let d = run.tick();
    assert_eq!(d.actions, vec![weight(25)]);
    assert_eq!(run.state.step, 0);
    let d = run.tick();
    assert!(note_kinds(&d).contains(&"traffic_shifted"));
    assert_eq!(
        (run.phase(), run.status()),
        (Phase::PausedStep, DeploymentStatus::Paused)
    );

    let d = run.command(Promote, "bob");
    assert_eq!(d.actions, vec![apply(Stable, &v2(), REPLICAS)]);
    let d = run.tick();
    assert_eq!(run.phase(), Phase::ShiftingTraffic);
    assert_eq!(d.actions, vec![weight(0)]);
    let d = run.tick();
    assert_eq!(run.phase(), Phase::ScalingDownCanary);
    assert_eq!(d.actions, vec![scale(Canary, 0)]);
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
    assert_eq!(run.cluster.obs.canary_weight, Some(0));
}

#[test]
fn set_canary_scale_overrides_the_size_until_matched_again() {
    let mut run = Run::new(
        canary(
            json!([{"set_canary_scale": {"replicas": 3}}, {"set_weight": 25},
                   {"set_canary_scale": {"match_traffic_weight": true}}, {"set_weight": 50},
                   {"set_canary_scale": {"weight": 100}}]),
            replicas_router(),
        ),
        Cluster::with_stable(),
    );
    let mut sizes = Vec::new();
    for _ in 0..20 {
        let d = run.tick();
        for a in &d.actions {
            if let Action::ApplyWorkload {
                track: Canary,
                replicas,
                ..
            } = a
            {
                sizes.push(*replicas);
            }
        }
        if run.state.status.is_terminal() {
            break;
        }
    }
    assert_eq!(sizes, vec![3, 1, 2, 4]);
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
}

#[test]
fn approval_gates_promotion() {
    let mut run = Run::new(
        canary(json!([{"set_weight": 50}]), replicas_router()),
        Cluster::with_stable(),
    );
    run.spec.approval.required = true;
    run.tick();
    let d = run.tick();
    assert_eq!(run.phase(), Phase::AwaitingApproval);
    assert_eq!(run.status(), DeploymentStatus::Paused);
    assert!(note_kinds(&d).contains(&"awaiting_approval"));
    assert_eq!(run.accepted("bob"), vec![Approve, Abort, Rollback]);
    assert_eq!(run.accepted(REQUESTER), vec![Approve, Abort, Rollback]);
    run.spec.approval.distinct_approver = true;
    assert_eq!(run.accepted(REQUESTER), vec![Abort, Rollback]);

    let d = run.command(Approve, "bob");
    assert_eq!(run.phase(), Phase::Promoting);
    assert_eq!(d.actions, vec![apply(Stable, &v2(), REPLICAS)]);
    run.tick_until(5, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
}

#[test]
fn abort_moves_traffic_off_the_canary_before_scaling_it_down() {
    let mut run = Run::new(
        canary(json!([{"set_weight": 25}, {"pause": {}}]), gateway()),
        routed_cluster(),
    );
    run.tick_until(5, |s| s.phase == Phase::PausedStep);
    assert_eq!(run.cluster.obs.canary_weight, Some(25));

    let d = run.command(Abort, "bob");
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(run.phase(), Phase::RestoringTraffic);
    assert_eq!(
        d.actions,
        vec![weight(0)],
        "no scale-down before the weight is verified"
    );

    let d = run.tick();
    assert_eq!(run.phase(), Phase::RemovingCanary);
    assert_eq!(d.actions, vec![scale(Canary, 0)]);

    let d = run.tick();
    assert_eq!(note_kinds(&d), vec!["rolled_back"]);
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::RolledBack);
    assert_eq!(s.outcome, Some(Outcome::Aborted));
    assert_eq!(s.serving, Some(v1()));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(run.cluster.workload(Stable).unwrap().release, Some(v1()));
    assert_eq!(run.cluster.desired(Stable), REPLICAS);

    // Ordering across ticks: the weight-0 tick comes strictly before the scale-down tick.
    let weight_zero = run
        .history
        .iter()
        .position(|d| d.actions.contains(&weight(0)))
        .unwrap();
    let scaled = run
        .history
        .iter()
        .position(|d| d.actions.contains(&scale(Canary, 0)))
        .unwrap();
    assert!(weight_zero < scaled);
}

#[test]
fn abort_waits_for_the_router_to_report_zero() {
    let mut run = Run::new(
        canary(json!([{"set_weight": 25}, {"pause": {}}]), gateway()),
        routed_cluster(),
    );
    run.tick_until(5, |s| s.phase == Phase::PausedStep);
    run.command(Abort, "bob");
    // The router did not take it: still 25%.
    run.cluster.obs.canary_weight = Some(25);
    for _ in 0..3 {
        let d = run.tick();
        assert_eq!(d.actions, vec![weight(0)]);
        run.cluster.obs.canary_weight = Some(25);
    }
    run.cluster.obs.canary_weight = Some(0);
    assert_eq!(run.tick().actions, vec![scale(Canary, 0)]);
}

#[test]
fn abort_during_promotion_returns_stable_to_the_previous_release() {
    let mut run = Run::new(
        canary(json!([{"set_weight": 50}]), gateway()),
        routed_cluster(),
    );
    run.cluster.lag = 3;
    run.tick_until(20, |s| s.phase == Phase::Promoting);
    run.tick();
    assert_eq!(
        run.cluster.workload(Stable).unwrap().release,
        Some(v2()),
        "stable is being updated"
    );
    let d = run.command(Abort, "bob");
    assert_eq!(d.actions, vec![apply(Stable, &v1(), REPLICAS), weight(0)]);
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(run.cluster.workload(Stable).unwrap().release, Some(v1()));
    for d in &run.history {
        for a in &d.actions {
            if let Action::ApplyWorkload {
                track: Stable,
                replicas,
                ..
            } = a
            {
                assert_eq!(*replicas, REPLICAS);
            }
            assert!(!matches!(a, Action::ScaleWorkload { track: Stable, .. }));
        }
    }
}

#[test]
fn progress_deadline_rolls_back_healthy() {
    let mut run = Run::new(
        canary(
            json!([{"set_weight": 25}, {"pause": {}}]),
            replicas_router(),
        ),
        Cluster::with_stable(),
    );
    run.cluster.stick(Canary);
    run.tick();
    run.advance(DEADLINE_SECS);
    let d = run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(note_kinds(&d), vec!["rollback_started", "traffic_shifted"]);
    assert_eq!(d.actions, vec![scale(Canary, 0)]);
    run.tick();
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::RolledBack);
    assert_eq!(s.outcome, Some(Outcome::RolledBack));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(
        s.failure.as_ref().unwrap().code,
        "progress_deadline_exceeded"
    );
}

#[test]
fn first_deploy_without_previous_fails_degraded() {
    let mut run = Run::new(
        canary(json!([{"set_weight": 25}]), gateway()),
        Cluster::empty(),
    );
    run.cluster.stick(Stable);
    run.tick();
    run.advance(DEADLINE_SECS);
    run.tick();
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Failed);
    assert_eq!(s.outcome, Some(Outcome::Failed));
    assert_eq!(s.serving_health, ServingHealth::Degraded);
    assert_eq!(
        s.failure.as_ref().unwrap().code,
        "progress_deadline_exceeded"
    );
}

#[test]
fn the_deadline_is_per_step() {
    let mut run = Run::new(
        canary(
            json!([{"set_weight": 25}, {"set_weight": 50}]),
            replicas_router(),
        ),
        Cluster::with_stable(),
    );
    run.cluster.lag = 3;
    run.tick();
    run.advance(40);
    run.tick();
    run.advance(10);
    run.tick();
    run.advance(5);
    run.tick();
    assert_eq!(run.state.step, 1, "step 0 done after 55s");
    assert_eq!(run.state.progress_deadline_at, Some(run.at(DEADLINE_SECS)));
    run.advance(50);
    run.tick();
    assert_eq!(
        run.status(),
        DeploymentStatus::Running,
        "105s in, 50s into step 1"
    );
    assert_eq!(run.state.step, 1);
}

#[test]
fn analysis_steps_fail_without_a_provider() {
    let mut run = Run::new(
        canary(
            json!([{"analysis": {"template": "errors"}}]),
            replicas_router(),
        ),
        Cluster::with_stable(),
    );
    run.tick_until(5, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(
        run.state.failure.as_ref().unwrap().code,
        failure_code::ANALYSIS_UNAVAILABLE
    );
}

#[test]
fn pause_by_command_in_a_timed_pause_and_abort_from_there() {
    let mut run = Run::new(
        canary(
            json!([{"set_weight": 25}, {"pause": {"duration": "1m"}}, {"set_weight": 50}]),
            gateway(),
        ),
        routed_cluster(),
    );
    run.tick_until(5, |s| s.phase == Phase::PausedStep);
    run.command(Pause, "bob");
    assert_eq!(run.status(), DeploymentStatus::Paused);
    assert_eq!(run.accepted("bob"), vec![Resume, Abort, Rollback]);
    run.advance(120);
    let d = run.tick();
    assert!(d.actions.is_empty());
    assert_eq!(run.state.step, 1, "held past the timer");
    let d = run.command(Abort, "bob");
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(d.actions, vec![weight(0)]);
}

#[test]
fn commands_in_every_state() {
    let mut run = Run::new(
        canary(
            json!([{"set_weight": 25}, {"pause": {"duration": "1m"}}, {"pause": {}}]),
            gateway(),
        ),
        routed_cluster(),
    );
    run.spec.approval.required = true;
    run.tick();
    assert_eq!(run.phase(), Phase::CanaryStep);
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);
    run.tick_until(5, |s| s.phase == Phase::PausedStep);
    assert_eq!(run.accepted("bob"), vec![Promote, Pause, Abort, Rollback]);
    run.command(Promote, "bob");
    assert_eq!((run.phase(), run.state.step), (Phase::PausedStep, 2));
    assert_eq!(run.accepted("bob"), vec![Promote, Abort, Rollback]);
    run.command(Promote, "bob");
    assert_eq!(run.phase(), Phase::AwaitingApproval);
    assert_eq!(run.accepted("bob"), vec![Approve, Abort, Rollback]);
    run.command(Approve, "bob");
    assert_eq!(run.phase(), Phase::Promoting);
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);
    run.tick();
    assert_eq!(run.phase(), Phase::ShiftingTraffic);
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);
    run.command(Rollback, "bob");
    assert_eq!(run.phase(), Phase::RestoringTraffic);
    assert_eq!(run.accepted("bob"), Vec::<CommandKind>::new());
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(run.state.outcome, Some(Outcome::RolledBack));
    assert_eq!(run.accepted("bob"), vec![Retry]);
}

/// A first canary deploy goes straight to full size, so with approval required it waits for
/// it before anything is applied (not even the first step's canary).
#[test]
fn approval_gates_a_first_deploy() {
    let mut run = Run::new(
        canary(json!([{"set_weight": 10}, {"pause": {}}]), gateway()),
        Cluster::empty(),
    );
    assert_held_for_approval(&mut run);
    assert!(run.cluster.obs.workloads.is_empty());

    let d = run.command(Approve, "bob");
    assert_eq!(run.phase(), Phase::Deploying);
    assert_eq!(d.actions, vec![apply(Stable, &v2(), REPLICAS)]);
    run.tick_until(5, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
}
