//! Property tests: random strategies, random clusters (lag, stuck workloads, outside changes),
//! random commands and random time; the invariants hold on every tick.

mod common;

use chrono::Duration;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use slipway_core::rollout::{
    Action, Command, CommandKind, Decision, Phase, RollbackCause, RolloutSpec, RolloutState,
    ServiceRole, Track, accepts, decide,
};
use slipway_core::{DeploymentStatus, DurationSpec, Outcome, ServingHealth, StrategySpec};

#[derive(Debug, Clone)]
enum Change {
    Lag(u32),
    Stick(Track, bool),
    Unstick(Track),
    /// Someone else sets the router's weight.
    Weight(u32),
    /// Someone else points the active Service at a color.
    Active(Track),
    /// The endpoint controller stops (true) or resumes (false) updating EndpointSlices.
    StaleEndpoints(bool),
}

#[derive(Debug, Clone)]
struct Op {
    dt: i64,
    command: Option<(CommandKind, bool)>,
    change: Option<Change>,
}

#[derive(Debug, Clone)]
struct Scenario {
    spec: RolloutSpec,
    cluster: Cluster,
    ops: Vec<Op>,
}

fn arb_track() -> impl Strategy<Value = Track> {
    prop_oneof![
        Just(Track::Stable),
        Just(Track::Canary),
        Just(Track::Blue),
        Just(Track::Green)
    ]
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        4 => (0u32..=3).prop_map(Change::Lag),
        2 => (arb_track(), any::<bool>()).prop_map(|(t, r)| Change::Stick(t, r)),
        3 => arb_track().prop_map(Change::Unstick),
        1 => (0u32..=100).prop_map(Change::Weight),
        1 => prop_oneof![Just(Track::Blue), Just(Track::Green)].prop_map(Change::Active),
        1 => any::<bool>().prop_map(Change::StaleEndpoints),
    ]
}

fn arb_op() -> impl Strategy<Value = Op> {
    (
        prop_oneof![3 => 0i64..=5, 2 => 0i64..=90, 1 => 0i64..=400],
        prop::option::weighted(
            0.3,
            (
                prop::sample::select(CommandKind::ALL.to_vec()),
                any::<bool>(),
            ),
        ),
        prop::option::weighted(0.15, arb_change()),
    )
        .prop_map(|(dt, command, change)| Op {
            dt,
            command,
            change,
        })
}

fn arb_step(replicas: u32) -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (1u32..=100).prop_map(|w| json!({"set_weight": w})),
        2 => prop::option::of(1u64..=120).prop_map(|d| match d {
            Some(s) => json!({"pause": {"duration": format!("{s}s")}}),
            None => json!({"pause": {}}),
        }),
        1 => (0u32..=replicas).prop_map(|n| json!({"set_canary_scale": {"replicas": n}})),
        1 => (0u32..=100).prop_map(|w| json!({"set_canary_scale": {"weight": w}})),
        1 => Just(json!({"set_canary_scale": {"match_traffic_weight": true}})),
        1 => Just(json!({"analysis": {"template": "errors"}})),
    ]
}

fn arb_strategy(replicas: u32, analysis: bool) -> impl Strategy<Value = Value> {
    let steps = prop::collection::vec(arb_step(replicas), 1..6).prop_map(move |steps| {
        let mut max = 0;
        steps
            .into_iter()
            .filter(|s| analysis || s.get("analysis").is_none())
            .map(|s| match s.get("set_weight").and_then(Value::as_u64) {
                Some(w) => {
                    max = max.max(w);
                    json!({"set_weight": max})
                }
                None => s,
            })
            .collect::<Vec<_>>()
    });
    let router = prop_oneof![
        Just(json!({"router": "replicas"})),
        Just(json!({"router": "gateway_api", "http_route": "web"})),
        Just(json!({"router": "nginx", "ingress": "web"})),
    ];
    let pct = |max: u32| {
        prop_oneof![
            (0..=max).prop_map(|n| json!(n)),
            (0u32..=100).prop_map(|p| json!(format!("{p}%")))
        ]
    };
    prop_oneof![
        (pct(3), pct(3)).prop_map(|(s, u)| {
            json!({"type": "rolling", "max_surge": s, "max_unavailable": u})
        }),
        (
            any::<bool>(),
            prop::option::of(0u64..=120),
            0u64..=60,
            prop::option::of(1..=replicas)
        )
            .prop_map(|(auto, after, delay, preview)| {
                let mut b = json!({"type": "blue_green", "auto_promote": auto,
                                   "scale_down_delay": format!("{delay}s")});
                if let Some(a) = after {
                    b["auto_promote_after"] = json!(format!("{a}s"));
                }
                if let Some(p) = preview {
                    b["preview_replicas"] = json!(p);
                }
                b
            }),
        (steps, router).prop_map(|(steps, traffic)| {
            json!({"type": "canary", "steps": steps, "traffic": traffic})
        }),
    ]
}

fn arb_setup(analysis: bool, min_deadline: u64) -> impl Strategy<Value = (RolloutSpec, Cluster)> {
    (1u32..=6).prop_flat_map(move |replicas| {
        (
            arb_strategy(replicas, analysis),
            min_deadline..=min_deadline + 300,
            any::<(bool, bool)>(),
            any::<bool>(),
            prop_oneof![Just(Track::Blue), Just(Track::Green)],
            prop::option::of(Just(0u32)),
        )
            .prop_map(
                move |(strategy_json, deadline, approval, has_previous, live, weight)| {
                    let mut spec = spec(strategy(strategy_json));
                    spec.workload.replicas = replicas;
                    spec.progress_deadline = DurationSpec::from_secs(deadline);
                    spec.approval.required = approval.0;
                    spec.approval.distinct_approver = approval.1;
                    let mut cluster = Cluster::empty();
                    if has_previous {
                        let track = match spec.strategy.kind() {
                            "blue_green" => live,
                            _ => Track::Stable,
                        };
                        cluster
                            .obs
                            .workloads
                            .insert(track, complete(&v1(), replicas));
                        if track != Track::Stable {
                            cluster.obs.services.insert(ServiceRole::Active, track);
                            cluster.obs.services.insert(ServiceRole::Preview, track);
                            cluster.sync_endpoints();
                        }
                        cluster.obs.canary_weight = weight;
                    }
                    (spec, cluster)
                },
            )
    })
}

fn arb_scenario() -> impl Strategy<Value = Scenario> {
    (arb_setup(true, 10), prop::collection::vec(arb_op(), 1..80))
        .prop_map(|((spec, cluster), ops)| Scenario { spec, cluster, ops })
}

fn routed(spec: &RolloutSpec) -> bool {
    serde_json::to_value(&spec.strategy)
        .ok()
        .and_then(|v| v.pointer("/traffic/router").cloned())
        .is_some_and(|r| r != json!("replicas"))
}

/// Invariants of one decision, given the state and what the router reported before it.
fn check_decision(
    spec: &RolloutSpec,
    prev: &RolloutState,
    d: &Decision,
    observed_weight: Option<u32>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), TestCaseError> {
    if prev.status.is_terminal() {
        prop_assert_eq!(&d.state, prev, "a terminal state changed");
        prop_assert!(d.actions.is_empty());
        prop_assert_eq!(d.wake_at, None);
    }
    if d.state.status.is_terminal() {
        prop_assert_eq!(d.wake_at, None);
        prop_assert!(d.state.outcome.is_some());
    } else {
        prop_assert!(d.wake_at.is_some_and(|w| w > now), "wake {:?}", d.wake_at);
    }
    let phases = match spec.strategy {
        StrategySpec::Rolling(_) => Phase::of_rolling(),
        StrategySpec::BlueGreen(_) => Phase::of_blue_green(),
        StrategySpec::Canary(_) => Phase::of_canary(),
    };
    prop_assert!(
        phases.contains(&d.state.phase),
        "{} is not a phase of {}",
        d.state.phase,
        spec.strategy.kind()
    );
    match d.state.status {
        DeploymentStatus::Succeeded | DeploymentStatus::RolledBack => {
            prop_assert_eq!(d.state.serving_health, ServingHealth::Healthy);
        }
        DeploymentStatus::Failed => {
            prop_assert!(d.state.failure.is_some());
            prop_assert_ne!(d.state.serving_health, ServingHealth::Healthy);
        }
        _ => {}
    }
    if d.state.status == DeploymentStatus::RolledBack
        && d.state.rollback_cause == Some(RollbackCause::Failed)
    {
        prop_assert!(d.state.failure.is_some());
    }
    let mut last_weight = observed_weight.unwrap_or(0);
    for action in &d.actions {
        match action {
            Action::SetCanaryWeight { canary_weight } => {
                prop_assert!(*canary_weight <= 100, "weight {}", canary_weight);
                last_weight = *canary_weight;
            }
            Action::ApplyWorkload {
                track: Track::Stable,
                replicas,
                ..
            } => prop_assert_eq!(*replicas, spec.workload.replicas, "stable below replicas"),
            Action::ScaleWorkload {
                track: Track::Stable,
                ..
            } => prop_assert!(false, "stable scaled"),
            Action::ScaleWorkload {
                track: Track::Canary,
                replicas: 0,
            } if routed(spec) => {
                prop_assert_eq!(last_weight, 0, "canary scaled down while it has traffic");
            }
            _ => {}
        }
    }
    Ok(())
}

/// Blue-green scales a color down only once the active Service's endpoints hold none of its
/// pods (a terminal failure, which leaves one color standing, aside).
fn check_traffic_off(before: &Cluster, d: &Decision) -> Result<(), TestCaseError> {
    if d.state.status == DeploymentStatus::Failed {
        return Ok(());
    }
    for action in &d.actions {
        if let Action::ScaleWorkload {
            track: track @ (Track::Blue | Track::Green),
            replicas: 0,
        } = action
        {
            prop_assert_eq!(
                before.obs.ready_endpoints(ServiceRole::Active, *track),
                0,
                "{:?} scaled down while the active Service's endpoints hold it: {:?}",
                track,
                before.obs
            );
        }
    }
    Ok(())
}

/// Where approval is required, nothing puts the release live before it is given: no
/// Stable workload is moved to it, no active Service is pointed at a color running it, and
/// nothing succeeds (a terminal failure, which leaves one color standing, aside).
fn check_approval_gate(
    spec: &RolloutSpec,
    before: &Cluster,
    d: &Decision,
) -> Result<(), TestCaseError> {
    if !spec.approval.required || d.state.approved_by.is_some() {
        return Ok(());
    }
    prop_assert_ne!(
        d.state.status,
        DeploymentStatus::Succeeded,
        "live unapproved"
    );
    let mut after = before.clone();
    after.apply(&d.actions);
    for action in &d.actions {
        match action {
            Action::ApplyWorkload {
                track: Track::Stable,
                release,
                ..
            } => prop_assert_ne!(release, &spec.release, "stable moved unapproved"),
            Action::SelectTrack {
                service: ServiceRole::Active,
                track,
            } if d.state.status != DeploymentStatus::Failed => {
                let runs = after.workload(*track).and_then(|w| w.release.as_ref());
                prop_assert_ne!(runs, Some(&spec.release), "active switched unapproved");
            }
            _ => {}
        }
    }
    Ok(())
}

/// After a blue-green finishes: at most one color has replicas, the active Service selects it,
/// and exactly one when something served before or the rollout succeeded.
fn check_colors(c: &Cluster, state: &RolloutState, had_live: bool) -> Result<(), TestCaseError> {
    let live: Vec<Track> = [Track::Blue, Track::Green]
        .into_iter()
        .filter(|t| c.desired(*t) > 0)
        .collect();
    prop_assert!(live.len() <= 1, "two live colors: {:?}", c.obs);
    if let Some(color) = live.first() {
        prop_assert_eq!(c.active(), Some(*color), "active not on the live color");
    }
    if had_live || state.status == DeploymentStatus::Succeeded {
        prop_assert_eq!(live.len(), 1, "no live color: {:?} {:?}", state, c.obs);
    }
    Ok(())
}

/// A rollout that ends healthy (succeeded or rolled back) ends on an observation in which the
/// serving workload runs the serving release at full size, and takes the traffic.
fn check_serving(
    spec: &RolloutSpec,
    before: &Cluster,
    state: &RolloutState,
) -> Result<(), TestCaseError> {
    let track = match spec.strategy.kind() {
        "blue_green" => before.active(),
        _ => Some(Track::Stable),
    };
    let serving = state.serving.clone();
    prop_assert!(serving.is_some());
    let complete = track
        .and_then(|t| before.workload(t))
        .zip(serving)
        .is_some_and(|(w, r)| w.is_complete(&r, spec.workload.replicas));
    prop_assert!(
        complete,
        "healthy, but not serving: {:?} {:?}",
        state,
        before.obs
    );
    if routed(spec) && before.workload(Track::Canary).is_some() {
        prop_assert_eq!(
            before.obs.canary_weight,
            Some(0),
            "canary still has traffic"
        );
        prop_assert_eq!(before.desired(Track::Canary), 0, "canary left running");
    }
    Ok(())
}

fn play(s: Scenario) -> Result<(), TestCaseError> {
    let mut run = Run::new(s.spec.clone(), s.cluster);
    let had_live = run.state.live_color.is_some();
    let blue_green = s.spec.strategy.kind() == "blue_green";
    for op in s.ops {
        match op.change {
            Some(Change::Lag(n)) => run.cluster.lag = n,
            Some(Change::Stick(t, report)) => {
                run.cluster.report_stuck = report;
                run.cluster.stick(t);
            }
            Some(Change::Unstick(t)) => run.cluster.unstick(t),
            Some(Change::Weight(w)) if routed(&s.spec) => run.cluster.obs.canary_weight = Some(w),
            Some(Change::Active(t)) if blue_green => {
                run.cluster.obs.services.insert(ServiceRole::Active, t);
            }
            Some(Change::StaleEndpoints(stale)) => run.cluster.endpoints_stale = stale,
            _ => {}
        }
        let commands: Vec<Command> = op
            .command
            .map(|(kind, mine)| Command {
                kind,
                actor: if mine { REQUESTER } else { "bob" }.to_owned(),
            })
            .into_iter()
            .collect();
        let prev = run.state.clone();
        let observed = run.cluster.obs.canary_weight;
        let d = decide(&run.spec, &prev, &run.cluster.obs, &commands, run.now);
        check_decision(&run.spec, &prev, &d, observed, run.now)?;
        check_approval_gate(&run.spec, &run.cluster, &d)?;
        if blue_green {
            check_traffic_off(&run.cluster, &d)?;
        }
        if !prev.status.is_terminal()
            && matches!(
                d.state.status,
                DeploymentStatus::Succeeded | DeploymentStatus::RolledBack
            )
        {
            check_serving(&run.spec, &run.cluster, &d.state)?;
        }
        run.cluster.apply(&d.actions);
        if blue_green && !prev.status.is_terminal() && d.state.status.is_terminal() {
            check_colors(&run.cluster, &d.state, had_live)?;
        }
        run.cluster.settle();
        run.state = d.state;
        run.now += Duration::seconds(op.dt);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2048,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_under_random_ticks(s in arb_scenario()) {
        play(s)?;
    }

    /// With a cooperative cluster and people who promote and approve whenever asked, every
    /// rollout succeeds.
    #[test]
    fn a_cooperative_cluster_always_succeeds(
        (spec, cluster) in arb_setup(false, 600),
        lags in prop::collection::vec(0u32..=3, 200),
    ) {
        let mut run = Run::new(spec, cluster);
        for lag in lags {
            if run.state.status.is_terminal() {
                break;
            }
            run.cluster.lag = lag;
            let gate = [CommandKind::Approve, CommandKind::Promote]
                .into_iter()
                .find(|k| accepts(&run.spec, &run.state, *k, "bob", REQUESTER).is_ok());
            match gate {
                Some(kind) => run.command(kind, "bob"),
                None => run.tick(),
            };
            run.advance(10);
        }
        prop_assert_eq!(run.state.status, DeploymentStatus::Succeeded, "{:?}", run.state);
        prop_assert_eq!(run.state.outcome, Some(Outcome::Promoted));
        prop_assert_eq!(run.state.serving.as_ref(), Some(&v2()));
    }
}
