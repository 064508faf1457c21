//! Work survives a worker that dies mid-step, and a wake-up that arrives mid-step is kept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use slipway_cluster::{Fault, FaultKind, FaultScope, SimCluster};
use slipway_core::rollout::{CommandKind, Track};
use slipway_core::{DeploymentStatus, Outcome};
use slipway_engine::{EngineSettings, intake};
use slipway_store::{PgPool, rollouts};
use uuid::Uuid;

use crate::common::*;

/// Waits until the sim has answered (or is answering) more observe calls than `before`.
async fn until_observing(sim: &Arc<SimCluster>, before: u64) {
    let waited = Instant::now();
    while sim.api_calls().observe == before {
        assert!(waited.elapsed() < PATIENCE, "no step reached the cluster");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn lease(pool: &PgPool, id: Uuid) -> (Option<String>, Option<DateTime<Utc>>) {
    sqlx::query_as("SELECT lease_owner, lease_expires_at FROM deployments WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("the lease")
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_worker_killed_mid_step_is_replaced_once_its_lease_expires(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine_a = engine(
        &pool,
        &sim,
        EngineSettings {
            lease_ttl: Duration::from_secs(3),
            ..settings("a")
        },
    );
    let engine_b = engine(&pool, &sim, settings("b"));
    let id = deploy(&pool, "prod", "1.0.0").await;
    drive_to(&engine_a, &pool, id, DeploymentStatus::Running).await;

    // A's next step hangs in its cluster call; A dies there.
    sim.faults()
        .set(FaultScope::Cluster, Fault::Latency(Duration::from_secs(30)));
    let observed = sim.api_calls().observe;
    let task = tokio::spawn({
        let engine_a = engine_a.clone();
        async move { engine_a.run_once(1).await }
    });
    until_observing(&sim, observed).await;
    task.abort();
    let joined = task.await;
    assert!(
        joined.as_ref().is_err_and(|e| e.is_cancelled()),
        "{joined:?}"
    );
    sim.faults().clear(&FaultScope::Cluster, FaultKind::Latency);

    let (owner, expires) = lease(&pool, id).await;
    assert_eq!(owner.as_deref(), Some("a"));
    let expires = expires.expect("a lease expiry");
    assert!(expires > Utc::now(), "the lease outlives its dead holder");
    // Nobody takes it over while the lease runs.
    let stepped = engine_b.run_once(4).await.expect("b's steps");
    assert!(stepped.is_empty(), "{stepped:?}");

    let d = drive_to(&engine_b, &pool, id, DeploymentStatus::Succeeded).await;
    assert_eq!(d.outcome, Some(Outcome::Promoted));
    assert_eq!(d.serving.version.as_deref(), Some("1.0.0"));
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.release(Track::Stable), Some(&release("1.0.0")));
    assert_eq!(snap.workloads[&Track::Stable].status.available, REPLICAS);

    // Every journalled step after the crash is B's, begun after A's lease ran out.
    let journal: Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT worker, started_at, finished_at FROM deployment_journal
         WHERE deployment_id = $1 ORDER BY tick, epoch",
    )
    .bind(id)
    .fetch_all(&pool)
    .await
    .expect("journal");
    assert!(!journal.is_empty());
    for (worker, started_at, finished_at) in &journal {
        assert_eq!(worker, "b", "{journal:?}");
        assert!(*started_at >= expires, "{journal:?} before {expires}");
        assert!(finished_at.is_some(), "{journal:?}");
    }
    let log = events_of(&pool, id).await;
    let kinds = kinds(&log);
    assert_eq!(kinds.iter().filter(|k| **k == "started").count(), 1);
    assert_eq!(kinds.iter().filter(|k| **k == "promoted").count(), 1);
    let (owner, _) = lease(&pool, id).await;
    assert_eq!(owner, None, "released when finished");
}

/// A command recorded while a step of its deployment is in flight must still wake the
/// deployment: the step's release must not push the wake-up back to its own schedule.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_command_sent_during_a_step_is_not_delayed(pool: PgPool) {
    seed_app(&pool).await;
    let strategy = json!({"type": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]});
    put_env(&pool, "prod", &env_spec("shop", strategy, json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    deploy_ok(&engine, &pool, "prod", "1.0.0").await;
    let id = deploy(&pool, "prod", "2.0.0").await;
    drive_to_phase(&engine, &pool, id, DeploymentStatus::Paused, "paused_step").await;

    // A routine look at the held deployment, slowed down by the cluster.
    sim.faults()
        .set(FaultScope::Cluster, Fault::Latency(Duration::from_secs(2)));
    sqlx::query("UPDATE deployments SET next_wake_at = now() WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .expect("make it due");
    let observed = sim.api_calls().observe;
    let step = tokio::spawn({
        let engine = engine.clone();
        async move { engine.run_once(4).await }
    });
    until_observing(&sim, observed).await;
    let mut tx = pool.begin().await.expect("begin");
    intake::command(&mut tx, id, CommandKind::Promote, "bob", None, None)
        .await
        .expect("promote accepted");
    tx.commit().await.expect("commit");
    let stepped = step.await.expect("the step's task").expect("the step");
    assert_eq!(stepped.len(), 1, "{stepped:?}");
    sim.faults().clear(&FaultScope::Cluster, FaultKind::Latency);

    // The step did not see the command; the deployment must be due again at once for it.
    let mut conn = pool.acquire().await.expect("acquire");
    let wake = rollouts::next_wake_at(&mut conn, id).await.expect("wake");
    drop(conn);
    assert!(
        wake.is_some_and(|w| w <= Utc::now()),
        "the promote waits until {wake:?}"
    );
    let d = drive_to(&engine, &pool, id, DeploymentStatus::Succeeded).await;
    assert_eq!(d.serving.version.as_deref(), Some("2.0.0"));
}
