//! The rolling strategy, stepped by hand.

mod common;

use common::*;
use serde_json::json;
use slipway_core::rollout::{
    Action, CommandKind, FIRST_POLL, Phase, RollbackCause, RolloutState, Track, decide,
    failure_code, resolve_budget,
};
use slipway_core::strategy::IntOrPercent;
use slipway_core::{DeploymentStatus, Outcome, ServingHealth};

use CommandKind::*;

#[test]
fn budgets_resolve_like_kubernetes() {
    let b = resolve_budget(IntOrPercent::Percent(25), IntOrPercent::Percent(25), 10);
    assert_eq!((b.max_surge, b.max_unavailable), (3, 2));
    let b = resolve_budget(IntOrPercent::Count(2), IntOrPercent::Count(0), 10);
    assert_eq!((b.max_surge, b.max_unavailable), (2, 0));
    // Both zero after rounding: one may be unavailable, so the update can move.
    let b = resolve_budget(IntOrPercent::Percent(0), IntOrPercent::Percent(10), 5);
    assert_eq!((b.max_surge, b.max_unavailable), (0, 1));
    let b = resolve_budget(IntOrPercent::Percent(100), IntOrPercent::Count(0), 1);
    assert_eq!((b.max_surge, b.max_unavailable), (1, 0));
}

#[test]
fn start_records_what_serves() {
    let run = Run::new(rolling(), Cluster::with_stable());
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Running);
    assert_eq!(s.phase, Phase::RollingUpdate);
    assert_eq!(s.previous, Some(v1()));
    assert_eq!(s.serving, Some(v1()));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(s.progress_deadline_at, Some(run.at(DEADLINE_SECS)));

    let fresh = Run::new(rolling(), Cluster::empty());
    assert_eq!(fresh.state.previous, None);
    assert_eq!(fresh.state.serving_health, ServingHealth::Unknown);
}

#[test]
fn success_path() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.lag = 2;
    let d = run.tick();
    assert_eq!(d.actions, vec![apply(Track::Stable, &v2(), REPLICAS)]);
    assert_eq!(
        d.actions[0],
        Action::ApplyWorkload {
            track: Track::Stable,
            release: v2(),
            replicas: 4,
            max_surge: 1,
            max_unavailable: 0,
        }
    );
    assert_eq!(d.wake_at, Some(run.now + FIRST_POLL));
    assert_eq!(run.status(), DeploymentStatus::Running);

    // Not there yet: the same action again (a lost one is re-applied).
    run.advance(2);
    let d = run.tick();
    assert_eq!(d.actions, vec![apply(Track::Stable, &v2(), REPLICAS)]);
    assert_eq!(run.phase(), Phase::RollingUpdate);

    run.advance(2);
    let d = run.tick();
    assert!(d.actions.is_empty());
    assert_eq!(note_kinds(&d), vec!["promoted"]);
    assert_eq!(d.wake_at, None);
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Succeeded);
    assert_eq!(s.outcome, Some(Outcome::Promoted));
    assert_eq!(s.serving, Some(v2()));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(s.failure, None);
}

#[test]
fn a_lost_action_is_reapplied() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    let first = run.tick_with(&[]);
    // Pretend the driver never applied it: the cluster still shows v1.
    run.cluster = Cluster::with_stable();
    run.advance(2);
    let again = run.tick();
    assert_eq!(first.actions, again.actions);
}

#[test]
fn progress_deadline_rolls_back_healthy() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.stick(Track::Stable);
    run.tick();
    run.advance(DEADLINE_SECS - 1);
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::Running, "not yet");

    run.advance(1);
    run.cluster.stuck.clear();
    let d = run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(run.phase(), Phase::RollingBack);
    assert_eq!(run.state.rollback_cause, Some(RollbackCause::Failed));
    let failure = run.state.failure.clone().unwrap();
    assert_eq!(failure.code, failure_code::PROGRESS_DEADLINE_EXCEEDED);
    assert_eq!(d.actions, vec![apply(Track::Stable, &v1(), REPLICAS)]);
    assert_eq!(note_kinds(&d), vec!["rollback_started"]);
    assert_eq!(run.state.progress_deadline_at, Some(run.at(DEADLINE_SECS)));

    run.advance(2);
    let d = run.tick();
    assert_eq!(note_kinds(&d), vec!["rolled_back"]);
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::RolledBack);
    assert_eq!(s.outcome, Some(Outcome::RolledBack));
    assert_eq!(s.serving, Some(v1()));
    assert_eq!(s.serving_health, ServingHealth::Healthy);
    assert_eq!(
        s.failure.as_ref().map(|f| f.code.as_str()),
        Some("progress_deadline_exceeded")
    );
}

#[test]
fn workload_reporting_progress_deadline_fails_at_once() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.report_stuck = true;
    run.cluster.stick(Track::Stable);
    run.tick();
    assert!(
        run.cluster
            .workload(Track::Stable)
            .unwrap()
            .progress_deadline_exceeded
    );
    run.cluster.stuck.clear();
    run.advance(2);
    let d = run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(
        run.state.failure.as_ref().unwrap().code,
        "progress_deadline_exceeded"
    );
    assert_eq!(d.actions, vec![apply(Track::Stable, &v1(), REPLICAS)]);
}

#[test]
fn no_previous_fails_degraded() {
    let mut run = Run::new(rolling(), Cluster::empty());
    run.cluster.stick(Track::Stable);
    run.tick();
    run.advance(DEADLINE_SECS);
    let d = run.tick();
    assert!(d.actions.is_empty());
    assert_eq!(note_kinds(&d), vec!["failed"]);
    assert_eq!(d.wake_at, None);
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
fn a_rollback_that_cannot_complete_fails() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.stick(Track::Stable);
    run.tick();
    run.advance(DEADLINE_SECS);
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    run.advance(DEADLINE_SECS - 1);
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    run.advance(1);
    run.tick();
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Failed);
    assert_eq!(s.outcome, Some(Outcome::Failed));
    assert_eq!(s.serving_health, ServingHealth::Degraded);
    assert_eq!(
        s.failure.as_ref().unwrap().code,
        failure_code::ROLLBACK_FAILED
    );
}

#[test]
fn abort_returns_to_previous() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.lag = 3;
    run.tick();
    let d = run.command(Abort, "bob");
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(run.state.rollback_cause, Some(RollbackCause::Aborted));
    assert_eq!(run.state.failure, None);
    assert_eq!(d.actions, vec![apply(Track::Stable, &v1(), REPLICAS)]);
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(run.state.outcome, Some(Outcome::Aborted));
    assert_eq!(run.state.serving_health, ServingHealth::Healthy);

    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.command(Rollback, "bob");
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.state.outcome, Some(Outcome::RolledBack));
}

#[test]
fn abort_without_previous_is_a_failure_that_says_so() {
    let mut run = Run::new(rolling(), Cluster::empty());
    run.tick();
    let d = run.command(Abort, "bob");
    assert!(d.actions.is_empty());
    let s = &run.state;
    assert_eq!(s.status, DeploymentStatus::Failed);
    assert_eq!(s.outcome, Some(Outcome::Aborted));
    assert_eq!(
        s.failure.as_ref().unwrap().code,
        failure_code::NO_PREVIOUS_RELEASE
    );
}

#[test]
fn pause_holds_and_stops_the_deadline() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.stick(Track::Stable);
    run.tick();
    let d = run.command(Pause, "bob");
    assert!(d.actions.is_empty());
    assert_eq!(note_kinds(&d), vec!["paused"]);
    assert_eq!(run.status(), DeploymentStatus::Paused);
    assert!(run.state.paused_by_command);
    assert_eq!(run.state.progress_deadline_at, None);
    assert!(d.wake_at.is_some());

    run.advance(10 * DEADLINE_SECS);
    let d = run.tick();
    assert!(d.actions.is_empty(), "paused: hold");
    assert_eq!(run.status(), DeploymentStatus::Paused);

    run.cluster.stuck.clear();
    let d = run.command(Resume, "bob");
    assert_eq!(note_kinds(&d), vec!["resumed"]);
    assert_eq!(run.status(), DeploymentStatus::Running);
    assert_eq!(d.actions, vec![apply(Track::Stable, &v2(), REPLICAS)]);
    assert_eq!(run.state.progress_deadline_at, Some(run.at(DEADLINE_SECS)));
    run.tick();
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
}

#[test]
fn abort_while_paused_by_command() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.tick();
    run.command(Pause, "bob");
    let d = run.command(Abort, "bob");
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert!(!run.state.paused_by_command);
    assert_eq!(d.actions, vec![apply(Track::Stable, &v1(), REPLICAS)]);
}

#[test]
fn commands_in_every_state() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.lag = 3;
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);
    run.tick();
    assert_eq!(run.accepted("bob"), vec![Pause, Abort, Rollback]);

    run.command(Pause, "bob");
    assert_eq!(run.accepted("bob"), vec![Resume, Abort, Rollback]);
    run.command(Resume, "bob");

    run.command(Abort, "bob");
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(run.accepted("bob"), Vec::<CommandKind>::new());
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(run.accepted("bob"), vec![Retry]);

    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.tick_until(5, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
    assert_eq!(run.accepted("bob"), Vec::<CommandKind>::new());

    let mut run = Run::new(rolling(), Cluster::empty());
    run.command(Abort, "bob");
    assert_eq!(run.status(), DeploymentStatus::Failed);
    assert_eq!(run.accepted("bob"), vec![Retry]);
}

#[test]
fn commands_that_no_longer_apply_are_ignored_with_a_note() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.stick(Track::Stable);
    let before = run.state.clone();
    let d = run.command(Promote, "bob");
    assert_eq!(note_kinds(&d), vec!["command_ignored"]);
    assert_eq!(d.state.phase, before.phase);
    let d = run.command(Resume, "bob");
    assert_eq!(note_kinds(&d), vec!["command_ignored"]);
    let d = run.command(Retry, "bob");
    assert_eq!(note_kinds(&d), vec!["command_ignored"]);
    assert_eq!(run.status(), DeploymentStatus::Running);

    // Several commands in one tick, in order: pause, then a second pause (ignored), resume.
    let cmds = [Pause, Pause, Resume].map(|kind| slipway_core::rollout::Command {
        kind,
        actor: "bob".into(),
    });
    let d = run.tick_with(&cmds);
    assert_eq!(note_kinds(&d), vec!["paused", "command_ignored", "resumed"]);
    assert_eq!(run.status(), DeploymentStatus::Running);
}

#[test]
fn terminal_states_never_change() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.tick_until(5, |s| s.status.is_terminal());
    let done = run.state.clone();
    for kind in CommandKind::ALL {
        run.advance(1000);
        let d = run.command(kind, "bob");
        assert_eq!(d.state, done);
        assert!(d.actions.is_empty());
        assert_eq!(d.wake_at, None);
        assert_eq!(note_kinds(&d), vec!["command_ignored"]);
    }
}

/// A rolling update with approval required: nothing applied, whatever the time, until
/// someone other than the requester approves; then the update runs as usual.
#[test]
fn approval_gates_a_rolling_update_before_anything_is_applied() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    assert_held_for_approval(&mut run);
    assert_eq!(
        run.cluster.workload(Track::Stable).unwrap().release,
        Some(v1())
    );

    let d = run.command(Approve, "bob");
    assert_eq!(note_kinds(&d), vec!["approved", "step_started"]);
    assert_eq!(run.phase(), Phase::RollingUpdate);
    assert_eq!(run.status(), DeploymentStatus::Running);
    assert_eq!(d.actions, vec![apply(Track::Stable, &v2(), REPLICAS)]);
    assert_eq!(run.state.progress_deadline_at, Some(run.at(DEADLINE_SECS)));
    run.tick_until(5, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
    assert_eq!(run.state.approved_by.as_deref(), Some("bob"));
}

/// The first deployment of an environment is gated like every other.
#[test]
fn approval_gates_the_first_rolling_deployment() {
    let mut run = Run::new(rolling(), Cluster::empty());
    assert_held_for_approval(&mut run);
    assert!(run.cluster.workload(Track::Stable).is_none());

    // Aborting at the gate leaves the cluster as it is.
    let mut aborted = run.clone();
    let d = aborted.command(Abort, "bob");
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(aborted.status(), DeploymentStatus::Failed);
    assert_eq!(aborted.state.outcome, Some(Outcome::Aborted));

    let d = run.command(Approve, "bob");
    assert_eq!(d.actions, vec![apply(Track::Stable, &v2(), REPLICAS)]);
    run.tick_until(5, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::Succeeded);
}

/// A state stored with a phase this version does not know (written by a newer version, or
/// damaged) still reads, fails as `invalid_state` instead of panicking, and a state stored
/// with a known phase reads back as it was written.
#[test]
fn an_unknown_stored_phase_fails_as_invalid_state() {
    for spec in [
        rolling(),
        spec(strategy(json!({"type": "blue_green"}))),
        spec(strategy(
            json!({"type": "canary", "steps": [{"set_weight": 50}]}),
        )),
    ] {
        let run = Run::new(spec, Cluster::empty());
        let mut stored = serde_json::to_value(&run.state).expect("state as JSON");
        assert!(stored["phase"].is_string());
        let back: RolloutState = serde_json::from_value(stored.clone()).expect("read back");
        assert_eq!(back, run.state);

        stored["phase"] = json!("warp_drive");
        let state: RolloutState = serde_json::from_value(stored).expect("an unknown phase reads");
        let d = decide(&run.spec, &state, &run.cluster.obs, &[], run.now);
        assert_eq!(d.state.status, DeploymentStatus::Failed);
        let failure = d.state.failure.expect("a failure reason");
        assert_eq!(failure.code, failure_code::INVALID_STATE);
        assert!(
            failure.message.contains("warp_drive"),
            "{}",
            failure.message
        );
    }
}

/// A cluster that refuses the deployment for good (a permanent driver error) ends it
/// `failed` where it stands, with the cluster's reason and serving health unknown; a
/// deployment refused before it started fails from the state it would have started in.
#[test]
fn a_refusing_cluster_fails_the_rollout_where_it_stands() {
    let reason = || slipway_core::FailureReason {
        code: "forbidden".into(),
        message: "the cluster said no".into(),
    };
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.stick(Track::Stable);
    run.tick();
    let failed = slipway_core::rollout::refused(&run.spec, Some(&run.state), reason(), run.now);
    assert_eq!(failed.status, DeploymentStatus::Failed);
    assert_eq!(failed.phase, Phase::Failed);
    assert_eq!(failed.outcome, Some(Outcome::Failed));
    assert_eq!(failed.failure, Some(reason()));
    assert_eq!(failed.serving_health, ServingHealth::Unknown);
    assert_eq!(failed.previous, run.state.previous);

    let unstarted = slipway_core::rollout::refused(&run.spec, None, reason(), run.now);
    assert_eq!(unstarted.status, DeploymentStatus::Failed);
    assert_eq!(unstarted.phase, Phase::Failed);
    assert_eq!(unstarted.previous, None);
    // A terminal state is the machine's: nothing it decides afterwards changes it.
    let d = decide(&run.spec, &failed, &run.cluster.obs, &[], run.now);
    assert_eq!(d.state, failed);
}

/// `retry` is accepted exactly when the deployment failed or was rolled back: the rule the
/// API answers 409 by and the one the engine re-queues by are the same function.
#[test]
fn retry_is_accepted_only_after_a_failure_or_a_rollback() {
    use slipway_core::rollout::retries;
    for status in [
        DeploymentStatus::Queued,
        DeploymentStatus::Running,
        DeploymentStatus::Paused,
        DeploymentStatus::RollingBack,
        DeploymentStatus::Succeeded,
        DeploymentStatus::Cancelled,
        DeploymentStatus::Superseded,
    ] {
        assert!(!retries(status), "{status:?}");
    }
    assert!(retries(DeploymentStatus::Failed));
    assert!(retries(DeploymentStatus::RolledBack));
}

/// A refused command says the status and phase as the API shows them (the 409's detail).
#[test]
fn a_refused_command_names_the_phase_as_stored() {
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.stick(Track::Stable);
    run.tick();
    let refused = slipway_core::rollout::accepts(&run.spec, &run.state, Promote, "bob", "alice")
        .expect_err("promote does not apply to a rolling update");
    assert_eq!(
        refused.to_string(),
        "cannot promote a deployment that is running (rolling_update)"
    );
}
