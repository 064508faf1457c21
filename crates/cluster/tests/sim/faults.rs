//! Faults a test injects: pods that never become ready, flapping readiness, API errors and
//! latency.

use std::time::Duration;

use slipway_cluster::{DriverError, Fault, FaultKind, FaultScope, SimSettings};
use slipway_core::TrafficRouting;
use slipway_core::rollout::Track;

use super::{Sim, apply_workload, release, target, target_in};

#[tokio::test]
async fn a_release_that_never_becomes_ready_exceeds_the_progress_deadline() {
    let s = Sim::paced(5);
    let t = target();
    s.apply(&t, &[apply_workload(Track::Stable, "1", 4, 1, 0)])
        .await;
    s.advance(5);
    s.sim
        .faults()
        .set(FaultScope::target(&t), Fault::NeverReady(release("2")));
    s.apply(&t, &[apply_workload(Track::Stable, "2", 4, 1, 0)])
        .await;

    s.advance(599);
    let st = s.status(&t, Track::Stable).await;
    assert!(!st.progress_deadline_exceeded);
    assert_eq!((st.updated, st.old, st.available), (1, 4, 4));
    s.advance(1);
    let st = s.status(&t, Track::Stable).await;
    assert!(st.progress_deadline_exceeded);
    assert!(!st.is_complete(&release("2"), 4));

    // Once the release can become ready, the rollout finishes and the condition clears.
    s.sim
        .faults()
        .clear(&FaultScope::target(&t), FaultKind::NeverReady);
    s.advance(100);
    let st = s.status(&t, Track::Stable).await;
    assert!(st.is_complete(&release("2"), 4), "{st:?}");
    assert!(!st.progress_deadline_exceeded);
}

#[tokio::test]
async fn the_progress_deadline_follows_the_settings() {
    let s = Sim::new(SimSettings {
        progress_deadline: Duration::from_secs(30),
        ..SimSettings::default()
    });
    let t = target();
    s.sim
        .faults()
        .set(FaultScope::Cluster, Fault::NeverReady(release("1")));
    s.apply(&t, &[apply_workload(Track::Canary, "1", 2, 1, 0)])
        .await;
    s.advance(29);
    assert!(!s.status(&t, Track::Canary).await.progress_deadline_exceeded);
    s.advance(1);
    let st = s.status(&t, Track::Canary).await;
    assert!(st.progress_deadline_exceeded);
    assert_eq!((st.updated, st.ready), (2, 0));
}

#[tokio::test]
async fn flapping_readiness_alternates_between_full_and_one_less() {
    let s = Sim::paced(0);
    let t = target();
    s.apply(&t, &[apply_workload(Track::Stable, "1", 4, 1, 0)])
        .await;
    s.sim
        .faults()
        .set(FaultScope::Cluster, Fault::FlappingReadiness);
    let mut seen = Vec::new();
    for _ in 0..6 {
        let st = s.status(&t, Track::Stable).await;
        assert_eq!(st.ready, st.available);
        seen.push(st.ready);
    }
    assert!(seen.windows(2).all(|w| w[0] != w[1]), "{seen:?}");
    assert!(seen.iter().all(|r| *r == 4 || *r == 3), "{seen:?}");
    // The snapshot shows the truth.
    assert_eq!(s.sim.snapshot(&t).workloads[&Track::Stable].status.ready, 4);

    s.sim
        .faults()
        .clear(&FaultScope::Cluster, FaultKind::FlappingReadiness);
    for _ in 0..3 {
        assert_eq!(s.status(&t, Track::Stable).await.ready, 4);
    }
}

#[tokio::test]
async fn injected_api_errors_fail_calls_until_used_up_or_cleared() {
    let s = Sim::paced(0);
    let t = target();
    let other = target_in("shop", "api", TrafficRouting::Replicas);
    let faults = s.sim.faults();

    faults.set(
        FaultScope::target(&t),
        Fault::fail_next(2, DriverError::unreachable("connection refused")),
    );
    for _ in 0..2 {
        let err = s.driver.observe(&t).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(err.reason(), "cluster_unreachable");
        assert!(matches!(err, DriverError::Retryable { .. }));
        // Other targets are unaffected.
        s.driver.observe(&other).await.unwrap();
    }
    s.driver.observe(&t).await.unwrap();
    assert!(faults.active().is_empty());

    faults.set(
        FaultScope::Cluster,
        Fault::fail_all(DriverError::permanent("forbidden", "RBAC denies patch")),
    );
    for _ in 0..3 {
        let err = s
            .driver
            .apply(&t, &[apply_workload(Track::Stable, "1", 4, 1, 0)])
            .await
            .unwrap_err();
        assert!(matches!(&err, DriverError::Permanent { reason, .. } if reason == "forbidden"));
    }
    assert!(
        s.sim.snapshot(&t).workloads.is_empty(),
        "a failed call changes nothing"
    );
    faults.clear_all();
    s.apply(&t, &[apply_workload(Track::Stable, "1", 4, 1, 0)])
        .await;
    assert_eq!(s.sim.snapshot(&t).replicas(Track::Stable), Some(4));

    let calls = s.sim.api_calls();
    assert_eq!((calls.observe, calls.apply, calls.failed), (5, 4, 5));
    assert_eq!(calls.actions, 1);
}

#[tokio::test(start_paused = true)]
async fn latency_delays_every_call() {
    let s = Sim::paced(0);
    let t = target();
    s.sim.faults().set(
        FaultScope::target(&t),
        Fault::Latency(Duration::from_millis(750)),
    );
    let start = tokio::time::Instant::now();
    s.apply(&t, &[apply_workload(Track::Stable, "1", 2, 1, 0)])
        .await;
    s.observe(&t).await;
    assert_eq!(start.elapsed(), Duration::from_millis(1500));

    s.sim.faults().clear_scope(&FaultScope::target(&t));
    let start = tokio::time::Instant::now();
    s.observe(&t).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
}
