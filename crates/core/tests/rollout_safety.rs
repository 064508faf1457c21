//! Edge cases of the safety rules: traffic before replicas, nothing scaled down while the other
//! side is not whole, and when the machine asks to be woken.

mod common;

use common::*;
use serde_json::json;
use slipway_core::rollout::{
    CommandKind, FIRST_POLL, HOLD_POLL, POLL, Phase, RolloutSpec, ServiceRole, Track, decide, start,
};
use slipway_core::{DeploymentStatus, Outcome};

fn gateway_canary(steps: serde_json::Value) -> RolloutSpec {
    spec(strategy(json!({"type": "canary", "steps": steps,
        "traffic": {"router": "gateway_api", "http_route": "web"}})))
}

#[test]
fn leftover_router_weight_is_lowered_before_the_canary_is_resized() {
    let mut cluster = Cluster::with_stable();
    cluster.obs.canary_weight = Some(60);
    let mut run = Run::new(gateway_canary(json!([{"set_weight": 10}])), cluster);
    let d = run.tick();
    assert_eq!(d.actions, vec![weight(10)]);
    let d = run.tick();
    assert_eq!(d.actions, vec![apply(Track::Canary, &v2(), 1)]);
}

#[test]
fn canary_is_not_removed_while_stable_lost_pods() {
    let mut run = Run::new(gateway_canary(json!([{"set_weight": 50}])), {
        let mut c = Cluster::with_stable();
        c.obs.canary_weight = Some(0);
        c
    });
    run.tick_until(10, |s| s.phase == Phase::ShiftingTraffic);
    assert_eq!(run.cluster.obs.canary_weight, Some(0));
    // Stable (now at v2) loses pods before the canary is scaled down.
    run.cluster.stick(Track::Stable);
    let d = run.tick();
    assert_eq!(run.phase(), Phase::ShiftingTraffic);
    assert!(!d.actions.contains(&scale(Track::Canary, 0)));
    run.advance(DEADLINE_SECS);
    let d = run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(d.actions, vec![apply(Track::Stable, &v1(), REPLICAS)]);
    // The canary keeps serving until stable is whole again.
    run.tick();
    assert!(run.cluster.desired(Track::Canary) > 0);
    run.cluster.stuck.clear();
    run.cluster.unstick(Track::Stable);
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.status(), DeploymentStatus::RolledBack);
    assert_eq!(run.cluster.desired(Track::Canary), 0);
}

#[test]
fn old_color_stays_while_the_new_one_lost_pods_after_the_switch() {
    let spec = spec(strategy(
        json!({"type": "blue_green", "scale_down_delay": "10s"}),
    ));
    let mut run = Run::new(spec, Cluster::with_live(Track::Blue));
    run.tick_until(10, |s| s.phase == Phase::ScalingDownOld);
    run.cluster.stick(Track::Green);
    run.advance(10);
    let d = run.tick();
    assert!(d.actions.iter().all(|a| *a != scale(Track::Blue, 0)));
    assert_eq!(run.cluster.desired(Track::Blue), REPLICAS);
    // No progress: the deadline rolls back to Blue, which is still there.
    run.advance(DEADLINE_SECS);
    let d = run.tick();
    assert_eq!(run.status(), DeploymentStatus::RollingBack);
    assert_eq!(
        d.actions,
        vec![
            slipway_core::rollout::Action::SelectTrack {
                service: ServiceRole::Active,
                track: Track::Blue
            },
            select(ServiceRole::Preview, Track::Blue),
        ]
    );
    run.tick_until(10, |s| s.status.is_terminal());
    assert_eq!(run.state.outcome, Some(Outcome::RolledBack));
    assert_eq!(run.cluster.desired(Track::Green), 0);
    assert_eq!(run.cluster.active(), Some(Track::Blue));
}

#[test]
fn wake_times() {
    // Waiting on the cluster: a quick first look, then slower polls (half the time waited,
    // at most POLL).
    let spec = rolling();
    let cluster = Cluster::with_stable();
    let state = start(&spec, &cluster.obs, t0());
    let d = decide(&spec, &state, &cluster.obs, &[], t0());
    assert_eq!(d.wake_at, Some(t0() + FIRST_POLL));
    let later = t0() + chrono::Duration::seconds(1);
    let d = decide(&spec, &d.state, &cluster.obs, &[], later);
    assert_eq!(d.wake_at, Some(later + chrono::Duration::milliseconds(500)));
    let much_later = t0() + chrono::Duration::seconds(30);
    let d = decide(&spec, &d.state, &cluster.obs, &[], much_later);
    assert_eq!(d.wake_at, Some(much_later + POLL));

    // Waiting for a person: a slow poll (commands wake the engine anyway).
    let mut run = Run::new(rolling(), Cluster::with_stable());
    let d = run.command(CommandKind::Pause, "bob");
    assert_eq!(d.wake_at, Some(run.now + HOLD_POLL));

    // Close to the deadline: wake at the deadline, not after it.
    let mut run = Run::new(rolling(), Cluster::with_stable());
    run.cluster.stick(Track::Stable);
    run.advance(DEADLINE_SECS - 1);
    let d = run.tick();
    assert_eq!(
        d.wake_at,
        Some(t0() + chrono::Duration::seconds(DEADLINE_SECS))
    );
}

#[test]
fn decide_is_deterministic() {
    let spec = gateway_canary(json!([{"set_weight": 10}, {"pause": {"duration": "1m"}}]));
    let mut cluster = Cluster::with_stable();
    cluster.obs.canary_weight = Some(0);
    let state = start(&spec, &cluster.obs, t0());
    let a = decide(&spec, &state, &cluster.obs, &[], t0());
    let b = decide(&spec, &state, &cluster.obs, &[], t0());
    assert_eq!(a, b);
}
