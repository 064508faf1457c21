//! Lease fencing against the real API server: a worker whose write to the cluster stalls
//! after its fence check (here behind its client's rate limit, as under a burst of calls)
//! must not write once its lease has run out and another worker has acted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use slipway_cluster::{KubeSettings, SimCluster, Target};
use slipway_core::TrafficRouting;
use slipway_core::rollout::CommandKind;
use slipway_engine::step::{self, StepContext};
use slipway_engine::{Drivers, Engine, EngineSettings, StepOutcome};
use slipway_store::{PgPool, commands, rollouts};

use crate::harness::*;

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_write_stalled_after_the_fence_check_never_lands_after_the_next_holders(pool: PgPool) {
    let mut e = E2e::start(pool.clone(), "fence").await;
    let rolling = json!({"type": "rolling", "max_surge": 1, "max_unavailable": 0});
    e.put_env(2, rolling, json!({})).await;
    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;
    e.stop_workers().await;

    // From here on, worker b is stepped by hand.
    let sim = Arc::new(SimCluster::default());
    let b = Engine::new(
        pool.clone(),
        Drivers::new(sim.clone()),
        EngineSettings::new("b"),
    );
    let v2 = e.deploy("2.0.0", json!({})).await;
    e.step_until(&b, v2, "running").await;
    let image_now = async || deployment_image(&e.k8s_deployment("web").await.unwrap());
    assert_eq!(image_now().await, image("1.0.0"), "nothing applied yet");

    // Worker a's client may send 20 requests per 20 s. All but one of a window are spent, so
    // a's observation gets the last, and its write, after its fence check, waits for the
    // next window: far past its 3 s lease, which no heartbeat extends.
    let ttl = Duration::from_secs(3);
    let drivers = Drivers::new(sim).with_kube_settings(KubeSettings {
        qps: 1,
        burst: 20,
        ..KubeSettings::default()
    });
    let mut conn = pool.acquire().await.unwrap();
    let record = rollouts::read(&mut conn, v2).await.unwrap();
    let driver = drivers.for_cluster(&record.cluster).unwrap();
    let target = Target {
        namespace: record.spec.namespace.clone(),
        workload: record.spec.workload.clone(),
        traffic: TrafficRouting::Replicas,
        blue_green: false,
        environment: record.environment_id.to_string(),
        adopt: false,
    };
    let spending = Instant::now();
    loop {
        assert!(spending.elapsed() < PATIENCE, "the rate limit never bit");
        let call = Instant::now();
        driver.observe(&target).await.unwrap();
        if call.elapsed() > Duration::from_secs(2) {
            break; // that call opened a new window
        }
    }
    for _ in 0..18 {
        driver.observe(&target).await.unwrap();
    }
    let claims = rollouts::claim_due(&mut conn, "a", ttl, 1).await.unwrap();
    assert_eq!(claims.len(), 1, "{claims:?}");
    let claim = claims[0].claim;
    assert_eq!(claim.id, v2);
    let worker_a = StepContext::new(
        pool.clone(),
        drivers,
        &EngineSettings {
            lease_ttl: ttl,
            ..EngineSettings::new("a")
        },
    );
    let step_a = tokio::spawn(async move { step::run(&worker_a, claim, 1).await });

    // Once a's lease has run out, the deployment is aborted, and b rolls it back.
    poll("a's lease to run out", || async {
        let expired: bool = sqlx::query_scalar(
            "SELECT lease_expires_at IS NULL OR lease_expires_at < now()
             FROM deployments WHERE id = $1",
        )
        .bind(v2)
        .fetch_one(&pool)
        .await
        .unwrap();
        expired.then_some(())
    })
    .await;
    commands::insert(&mut conn, v2, CommandKind::Abort, "carol", None, None)
        .await
        .unwrap();
    e.step_until(&b, v2, "rolled_back").await;
    assert_eq!(image_now().await, image("1.0.0"), "b rolled back");

    // a resumes: whatever it does, 2.0.0 never reaches the cluster.
    let outcome = tokio::time::timeout(PATIENCE, step_a)
        .await
        .expect("a's step ends")
        .expect("a's task")
        .expect("a's step");
    assert_ne!(outcome, StepOutcome::Advanced, "a's stale step counted");
    assert_eq!(
        image_now().await,
        image("1.0.0"),
        "the cluster saw a's stale write after b had rolled back"
    );
    assert_eq!(e.deployment(v2).await["status"], "rolled_back");
    e.finish().await;
}
