//! The simulated cluster behaves like Kubernetes Deployments where Slipway looks.

#[path = "sim/faults.rs"]
mod faults;

use std::sync::Arc;
use std::time::Duration;

use slipway_cluster::{ClusterDriver, ManualClock, SimCluster, SimSettings, Target};
use slipway_core::rollout::{Action, Observation, Release, ServiceRole, Track, WorkloadStatus};
use slipway_core::strategy::GatewayApiRoute;
use slipway_core::{TrafficRouting, Workload};

fn release(version: &str) -> Release {
    Release {
        image: format!("ghcr.io/acme/web:{version}"),
        version: version.to_owned(),
        pod_labels: Default::default(),
    }
}

fn target_in(namespace: &str, name: &str, traffic: TrafficRouting) -> Target {
    Target {
        namespace: namespace.to_owned(),
        workload: Workload {
            name: name.to_owned(),
            container: "web".to_owned(),
            replicas: 4,
            port: 8080,
            pod_labels: Default::default(),
        },
        traffic,
        blue_green: true,
        environment: "env-a".to_owned(),
        adopt: false,
    }
}

fn target() -> Target {
    target_in("shop", "web", TrafficRouting::Replicas)
}

fn apply_workload(track: Track, version: &str, replicas: u32, surge: u32, unavail: u32) -> Action {
    Action::ApplyWorkload {
        track,
        release: release(version),
        replicas,
        max_surge: surge,
        max_unavailable: unavail,
    }
}

struct Sim {
    clock: Arc<ManualClock>,
    sim: Arc<SimCluster>,
    driver: Arc<dyn ClusterDriver>,
}

impl Sim {
    fn new(settings: SimSettings) -> Self {
        let clock = Arc::new(ManualClock::default());
        let sim = Arc::new(SimCluster::with_settings(clock.clone(), settings));
        let driver: Arc<dyn ClusterDriver> = sim.clone();
        Self { clock, sim, driver }
    }

    fn paced(ready_secs: u64) -> Self {
        Self::new(SimSettings {
            ready_after: Duration::from_secs(ready_secs),
            ..SimSettings::default()
        })
    }

    async fn apply(&self, t: &Target, actions: &[Action]) {
        if let Err(e) = self.driver.apply(t, actions).await {
            panic!("apply failed: {e}");
        }
    }

    async fn observe(&self, t: &Target) -> Observation {
        match self.driver.observe(t).await {
            Ok(obs) => obs,
            Err(e) => panic!("observe failed: {e}"),
        }
    }

    async fn status(&self, t: &Target, track: Track) -> WorkloadStatus {
        match self.observe(t).await.workload(track) {
            Some(status) => status.clone(),
            None => panic!("no {} workload", track.as_str()),
        }
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

#[tokio::test]
async fn a_new_workload_rolls_out_at_the_configured_pace() {
    let s = Sim::new(SimSettings {
        ready_after: Duration::from_secs(10),
        observe_delay: Duration::from_secs(2),
        ..SimSettings::default()
    });
    let t = target();
    let v1 = release("1.0.0");
    s.apply(&t, &[apply_workload(Track::Stable, "1.0.0", 4, 1, 0)])
        .await;

    let st = s.status(&t, Track::Stable).await;
    assert_eq!((st.generation, st.observed_generation), (1, 0));
    assert_eq!((st.desired, st.updated, st.ready), (4, 0, 0));
    assert_eq!(st.release.as_ref(), Some(&v1));
    assert!(!st.is_complete(&v1, 4));

    s.advance(2);
    let st = s.status(&t, Track::Stable).await;
    assert_eq!((st.observed_generation, st.updated, st.ready), (1, 4, 0));
    assert!(!st.is_complete(&v1, 4));

    s.advance(9);
    let st = s.status(&t, Track::Stable).await;
    assert_eq!((st.updated, st.ready, st.available), (4, 0, 0));

    s.advance(1);
    let st = s.status(&t, Track::Stable).await;
    assert_eq!((st.updated, st.ready, st.available, st.old), (4, 4, 4, 0));
    assert!(st.is_complete(&v1, 4));
    assert!(!st.progress_deadline_exceeded);

    // The same spec again is a no-op.
    s.apply(&t, &[apply_workload(Track::Stable, "1.0.0", 4, 1, 0)])
        .await;
    let st = s.status(&t, Track::Stable).await;
    assert_eq!((st.generation, st.observed_generation), (1, 1));
    assert!(st.is_complete(&v1, 4));
}

#[tokio::test]
async fn a_new_release_replaces_pods_one_surge_at_a_time() {
    let s = Sim::new(SimSettings {
        ready_after: Duration::from_secs(10),
        observe_delay: Duration::from_secs(2),
        ..SimSettings::default()
    });
    let t = target();
    s.apply(&t, &[apply_workload(Track::Stable, "1.0.0", 4, 1, 0)])
        .await;
    s.advance(12);
    s.apply(&t, &[apply_workload(Track::Stable, "2.0.0", 4, 1, 0)])
        .await;
    let v2 = release("2.0.0");

    // Observe the controller after 2 s, then one new pod every 10 s: complete after 42 s.
    let mut last_updated = 0;
    for second in 0..=42 {
        let st = s.status(&t, Track::Stable).await;
        assert_eq!(st.generation, 2);
        assert_eq!(st.observed_generation, if second < 2 { 1 } else { 2 });
        assert!(st.updated >= last_updated, "updated went down at {second}s");
        last_updated = st.updated;
        assert!(
            st.available >= 4 && st.updated + st.old <= 5,
            "at {second}s: {st:?}"
        );
        assert_eq!(st.is_complete(&v2, 4), second == 42, "at {second}s: {st:?}");
        if second == 2 {
            let snap = s.sim.snapshot(&t);
            let pods: Vec<_> = snap.workloads[&Track::Stable]
                .templates
                .iter()
                .map(|p| (p.release.version.as_str(), p.pods, p.ready))
                .collect();
            assert_eq!(pods, [("1.0.0", 4, 4), ("2.0.0", 1, 0)]);
        }
        if second < 42 {
            s.advance(1);
        }
    }
    let snap = s.sim.snapshot(&t);
    let stable = &snap.workloads[&Track::Stable];
    assert_eq!(stable.templates.len(), 1);
    assert_eq!(
        (stable.templates[0].pods, stable.templates[0].ready),
        (4, 4)
    );
}

#[tokio::test]
async fn rolling_updates_respect_surge_and_unavailability_at_every_observation() {
    let budgets = [
        (10, 3, 2),
        (10, 0, 1),
        (10, 10, 0),
        (4, 1, 0),
        (3, 0, 3),
        (7, 2, 5),
    ];
    for terminate in [0, 3] {
        for (replicas, surge, unavail) in budgets {
            let s = Sim::new(SimSettings {
                ready_after: Duration::from_secs(7),
                terminate_after: Duration::from_secs(terminate),
                ..SimSettings::default()
            });
            let t = target();
            s.apply(
                &t,
                &[apply_workload(Track::Stable, "1", replicas, surge, unavail)],
            )
            .await;
            s.advance(60);
            s.apply(
                &t,
                &[apply_workload(Track::Stable, "2", replicas, surge, unavail)],
            )
            .await;
            let case = format!("replicas {replicas} surge {surge} unavailable {unavail}");
            let mut done = false;
            for second in 0..600 {
                let st = s.status(&t, Track::Stable).await;
                assert!(
                    st.available >= replicas - unavail,
                    "{case} at {second}s: {st:?}"
                );
                assert!(
                    st.updated + st.old <= replicas + surge,
                    "{case} at {second}s: {st:?}"
                );
                assert_eq!(st.ready, st.available);
                if st.is_complete(&release("2"), replicas) {
                    assert!(second >= 7, "{case}: complete before any pod was ready");
                    done = true;
                    break;
                }
                s.advance(1);
            }
            assert!(done, "{case}: never completed");
        }
    }
}

#[tokio::test]
async fn services_select_tracks_and_routers_report_weights() {
    let s = Sim::paced(0);
    let t = target();
    s.apply(
        &t,
        &[
            apply_workload(Track::Blue, "1", 2, 1, 0),
            apply_workload(Track::Green, "2", 2, 1, 0),
            Action::SelectTrack {
                service: ServiceRole::Active,
                track: Track::Blue,
            },
            Action::SelectTrack {
                service: ServiceRole::Preview,
                track: Track::Green,
            },
        ],
    )
    .await;
    let obs = s.observe(&t).await;
    assert_eq!(obs.services[&ServiceRole::Active], Track::Blue);
    assert_eq!(obs.services[&ServiceRole::Preview], Track::Green);
    assert_eq!(obs.workloads.len(), 2);
    // Each Service's endpoints are the ready pods of the color it selects.
    assert_eq!(obs.ready_endpoints(ServiceRole::Active, Track::Blue), 2);
    assert_eq!(obs.ready_endpoints(ServiceRole::Active, Track::Green), 0);
    assert_eq!(obs.ready_endpoints(ServiceRole::Preview, Track::Green), 2);
    s.apply(
        &t,
        &[Action::SelectTrack {
            service: ServiceRole::Active,
            track: Track::Green,
        }],
    )
    .await;
    let obs = s.observe(&t).await;
    assert_eq!(obs.services[&ServiceRole::Active], Track::Green);
    assert_eq!(obs.ready_endpoints(ServiceRole::Active, Track::Green), 2);
    assert_eq!(obs.ready_endpoints(ServiceRole::Active, Track::Blue), 0);

    // The replica-ratio router has no weight to report.
    s.apply(&t, &[Action::SetCanaryWeight { canary_weight: 30 }])
        .await;
    assert_eq!(s.observe(&t).await.canary_weight, None);
    assert_eq!(s.sim.snapshot(&t).canary_weight, Some(30));

    let routed = target_in(
        "shop",
        "checkout",
        TrafficRouting::GatewayApi(GatewayApiRoute {
            http_route: "checkout".to_owned(),
        }),
    );
    assert_eq!(s.observe(&routed).await.canary_weight, Some(0));
    s.apply(&routed, &[Action::SetCanaryWeight { canary_weight: 25 }])
        .await;
    assert_eq!(s.observe(&routed).await.canary_weight, Some(25));

    // Actions apply in order and stop at the first error.
    let err = s
        .driver
        .apply(
            &routed,
            &[
                Action::SetCanaryWeight { canary_weight: 50 },
                Action::SetCanaryWeight { canary_weight: 101 },
                Action::SetCanaryWeight { canary_weight: 75 },
            ],
        )
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(s.observe(&routed).await.canary_weight, Some(50));
}

#[tokio::test]
async fn scaling_to_zero_removes_pods_after_they_terminate() {
    let s = Sim::new(SimSettings {
        terminate_after: Duration::from_secs(5),
        ..SimSettings::default()
    });
    let t = target();
    s.apply(&t, &[apply_workload(Track::Canary, "1", 4, 1, 0)])
        .await;
    let scale = Action::ScaleWorkload {
        track: Track::Canary,
        replicas: 0,
    };
    s.apply(&t, std::slice::from_ref(&scale)).await;
    let st = s.status(&t, Track::Canary).await;
    assert_eq!((st.generation, st.desired, st.updated), (2, 0, 0));
    assert_eq!((st.available, st.old), (0, 4));
    s.advance(5);
    let st = s.status(&t, Track::Canary).await;
    assert_eq!((st.available, st.old, st.ready), (0, 0, 0));
    assert!(st.is_complete(&release("1"), 0));

    s.apply(&t, &[scale]).await;
    assert_eq!(s.status(&t, Track::Canary).await.generation, 2);

    s.apply(
        &t,
        &[Action::DeleteWorkload {
            track: Track::Canary,
        }],
    )
    .await;
    s.apply(
        &t,
        &[Action::DeleteWorkload {
            track: Track::Canary,
        }],
    )
    .await;
    assert!(s.observe(&t).await.workloads.is_empty());
    assert_eq!(s.sim.target_count(), 0);
    let err = s
        .driver
        .apply(
            &t,
            &[Action::ScaleWorkload {
                track: Track::Canary,
                replicas: 2,
            }],
        )
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "workload_not_found");
}

#[tokio::test]
async fn targets_are_kept_apart_by_namespace_and_name() {
    let s = Sim::paced(0);
    let a = target_in("team-a", "web", TrafficRouting::Replicas);
    let b = target_in("team-b", "web", TrafficRouting::Replicas);
    s.apply(&a, &[apply_workload(Track::Stable, "1", 3, 1, 0)])
        .await;
    s.apply(&b, &[apply_workload(Track::Stable, "9", 5, 1, 0)])
        .await;
    assert_eq!(s.sim.snapshot(&a).replicas(Track::Stable), Some(3));
    assert_eq!(
        s.sim.snapshot(&b).release(Track::Stable),
        Some(&release("9"))
    );
    assert!(
        s.sim
            .snapshot(&target_in("team-c", "web", TrafficRouting::Replicas))
            .workloads
            .is_empty()
    );
}

#[tokio::test]
async fn another_environments_workload_is_left_alone_as_on_kubernetes() {
    let dir = scratch_dir();
    let (_, a, b) = shared_pair(dir.path(), SimSettings::default());
    let mine = target();
    a.apply(&mine, &[apply_workload(Track::Stable, "1", 4, 1, 0)])
        .await;
    let theirs = Target {
        environment: "env-b".to_owned(),
        adopt: true,
        ..target()
    };
    // Through another instance on the same state too: the owner is part of the shared state.
    for sim in [&a, &b] {
        let e = sim.driver.observe(&theirs).await.expect_err("not theirs");
        assert_eq!(
            (e.is_retryable(), e.reason()),
            (false, "owned_by_other_environment"),
            "{e}"
        );
        for action in [
            apply_workload(Track::Stable, "6", 4, 1, 0),
            Action::DeleteWorkload {
                track: Track::Stable,
            },
        ] {
            let e = sim
                .driver
                .apply(&theirs, &[action])
                .await
                .expect_err("not theirs");
            assert_eq!(e.reason(), "owned_by_other_environment", "{e}");
        }
    }
    assert_eq!(
        a.sim.snapshot(&mine).release(Track::Stable),
        Some(&release("1"))
    );
    assert_eq!(b.observe(&mine).await.workloads.len(), 1, "still mine");
    // Once nothing of it is left, another environment may start afresh.
    a.apply(
        &mine,
        &[Action::DeleteWorkload {
            track: Track::Stable,
        }],
    )
    .await;
    b.apply(&theirs, &[apply_workload(Track::Stable, "6", 4, 1, 0)])
        .await;
}

#[tokio::test]
async fn ten_thousand_targets_observe_fine() {
    let s = Sim::paced(3);
    let targets: Vec<Target> = (0..10_000)
        .map(|i| {
            target_in(
                &format!("ns-{}", i % 100),
                &format!("app-{i}"),
                TrafficRouting::Replicas,
            )
        })
        .collect();
    for t in &targets {
        s.apply(t, &[apply_workload(Track::Stable, "1", 3, 1, 0)])
            .await;
    }
    assert_eq!(s.sim.target_count(), 10_000);
    s.advance(3);
    for t in &targets {
        assert!(
            s.status(t, Track::Stable)
                .await
                .is_complete(&release("1"), 3)
        );
    }
    let calls = s.sim.api_calls();
    assert_eq!(
        (calls.observe, calls.apply, calls.failed),
        (10_000, 10_000, 0)
    );
    s.sim.reset_api_calls();
    assert_eq!(s.sim.api_calls().observe, 0);
}

/// Two simulated clusters on one state directory (as two engine processes with
/// `SLIPWAY_SIM_STATE_DIR`): what one applies, the other observes, on the same clock.
fn shared_pair(dir: &std::path::Path, settings: SimSettings) -> (Arc<ManualClock>, Sim, Sim) {
    let clock = Arc::new(ManualClock::default());
    let open = || {
        let sim = match SimCluster::shared(clock.clone(), settings.clone(), dir) {
            Ok(sim) => Arc::new(sim),
            Err(e) => panic!("cannot open the shared state: {e}"),
        };
        let driver: Arc<dyn ClusterDriver> = sim.clone();
        Sim {
            clock: clock.clone(),
            sim,
            driver,
        }
    };
    (clock.clone(), open(), open())
}

fn scratch_dir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => panic!("tempdir: {e}"),
    }
}

#[tokio::test]
async fn instances_on_one_state_dir_see_each_others_applies() {
    let dir = scratch_dir();
    let (clock, a, b) = shared_pair(
        dir.path(),
        SimSettings {
            ready_after: Duration::from_secs(5),
            ..SimSettings::default()
        },
    );
    let t = target_in(
        "shop",
        "web",
        TrafficRouting::GatewayApi(GatewayApiRoute {
            http_route: "web".to_owned(),
        }),
    );
    a.apply(&t, &[apply_workload(Track::Stable, "1", 4, 1, 0)])
        .await;
    let seen = b.observe(&t).await;
    assert_eq!(seen.workloads[&Track::Stable].desired, 4);
    assert_eq!(seen.workloads[&Track::Stable].ready, 0);
    clock.advance(Duration::from_secs(5));
    assert_eq!(b.observe(&t).await.workloads[&Track::Stable].ready, 4);

    // And back: b's changes are what a observes next, nothing of a's old view survives.
    b.apply(
        &t,
        &[
            apply_workload(Track::Canary, "2", 1, 1, 0),
            Action::SetCanaryWeight { canary_weight: 20 },
        ],
    )
    .await;
    let seen = a.observe(&t).await;
    assert_eq!(seen.workloads[&Track::Canary].desired, 1);
    assert_eq!(seen.canary_weight, Some(20));
    assert_eq!(
        a.sim.snapshot(&t).release(Track::Canary),
        Some(&release("2"))
    );
    b.apply(
        &t,
        &[Action::DeleteWorkload {
            track: Track::Canary,
        }],
    )
    .await;
    assert!(!a.observe(&t).await.workloads.contains_key(&Track::Canary));
    assert_eq!(a.sim.target_count(), 1);

    // A third instance opened later (a restarted process) finds the cluster as it was.
    let c = match SimCluster::shared(a.clock.clone(), SimSettings::default(), dir.path()) {
        Ok(sim) => sim,
        Err(e) => panic!("reopen: {e}"),
    };
    assert_eq!(c.snapshot(&t).replicas(Track::Stable), Some(4));

    // A delete by one instance is seen by all.
    a.apply(
        &t,
        &[
            Action::DeleteWorkload {
                track: Track::Stable,
            },
            Action::SetCanaryWeight { canary_weight: 0 },
        ],
    )
    .await;
    assert_eq!(b.sim.snapshot(&t).canary_weight, Some(0));
    assert!(b.observe(&t).await.workloads.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_applies_from_two_instances_lose_nothing() {
    let dir = scratch_dir();
    let (_clock, a, b) = shared_pair(dir.path(), SimSettings::default());
    let a = Arc::new(a);
    let b = Arc::new(b);
    let t = target();
    // Each instance creates its own track's workload and rescales it over and over; the
    // file lock makes each apply read-modify-write the latest state, so neither instance
    // overwrites the other's workload with a stale copy.
    let run = |s: Arc<Sim>, track: Track| {
        let t = t.clone();
        tokio::spawn(async move {
            for i in 1..=100u32 {
                let action = if i == 1 {
                    apply_workload(track, "1", 1, 1, 0)
                } else {
                    Action::ScaleWorkload { track, replicas: i }
                };
                s.apply(&t, &[action]).await;
            }
        })
    };
    let (ra, rb) = tokio::join!(run(a.clone(), Track::Stable), run(b.clone(), Track::Canary));
    assert!(ra.is_ok() && rb.is_ok());
    let snapshot = a.sim.snapshot(&t);
    assert_eq!(snapshot.replicas(Track::Stable), Some(100));
    assert_eq!(snapshot.replicas(Track::Canary), Some(100));
}

#[tokio::test]
async fn instances_without_a_state_dir_stay_apart() {
    let a = Sim::paced(0);
    let b = Sim::paced(0);
    let t = target();
    a.apply(&t, &[apply_workload(Track::Stable, "1", 2, 1, 0)])
        .await;
    assert!(b.observe(&t).await.workloads.is_empty());
    assert_eq!(a.sim.shared_dir(), None);
}
