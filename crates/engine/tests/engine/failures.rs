//! A release that never becomes ready: the deployment gives up at its progress deadline and
//! rolls back to what served before (or fails, when nothing did).

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use slipway_cluster::{Fault, FaultScope, SimSettings};
use slipway_core::rollout::Track;
use slipway_core::{DeploymentStatus, Outcome, ServingHealth};
use slipway_store::PgPool;
use uuid::Uuid;

use crate::common::*;

/// Moves the machine's own progress deadline into the past and makes the deployment due.
async fn expire_progress_deadline(pool: &PgPool, id: Uuid) {
    let past = serde_json::to_value(Utc::now() - chrono::Duration::seconds(1)).expect("json");
    sqlx::query(
        "UPDATE deployments SET state = jsonb_set(state, '{progress_deadline_at}', $2),
             next_wake_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(past)
    .execute(pool)
    .await
    .expect("expire the deadline");
}

/// The cluster runs `version` on Stable at full size, and nothing else.
fn assert_serves(sim: &slipway_cluster::SimCluster, ns: &str, version: &str) {
    let snap = sim.snapshot(&target(ns));
    let stable = &snap.workloads[&Track::Stable];
    assert_eq!(stable.spec.release, release(version), "{stable:?}");
    assert_eq!(stable.spec.replicas, REPLICAS);
    assert_eq!(stable.status.available, REPLICAS);
    assert_eq!(stable.status.old, 0, "{stable:?}");
    assert!(
        stable
            .templates
            .iter()
            .all(|t| t.release == release(version)),
        "{stable:?}"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_stalled_workload_rolls_back_to_the_previous_version(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    deploy_ok(&engine, &pool, "prod", "1.0.0").await;

    // 2.0.0 never becomes ready, and the workload reports ProgressDeadlineExceeded after 2 s.
    sim.set_settings(SimSettings {
        progress_deadline: Duration::from_secs(2),
        ..SimSettings::default()
    });
    sim.faults().set(
        FaultScope::target(&target("shop")),
        Fault::NeverReady(release("2.0.0")),
    );
    let id = deploy(&pool, "prod", "2.0.0").await;
    let d = drive(&engine, &pool, id, "a terminal status", |d| {
        d.status.is_terminal()
    })
    .await;

    assert_eq!(d.status, DeploymentStatus::RolledBack, "{d:?}");
    assert_eq!(d.outcome, Some(Outcome::RolledBack));
    assert_eq!(d.phase.as_deref(), Some("rolled_back"));
    let reason = d.reason.expect("a failure reason");
    assert_eq!(reason.code, "progress_deadline_exceeded");
    assert!(
        reason.message.contains("ProgressDeadlineExceeded"),
        "{reason:?}"
    );
    assert_eq!(d.serving.health, ServingHealth::Healthy);
    assert_eq!(d.serving.version.as_deref(), Some("1.0.0"));
    assert_serves(&sim, "shop", "1.0.0");

    let log = events_of(&pool, id).await;
    let kinds = kinds(&log);
    let back = kinds.iter().position(|k| *k == "rollback_started");
    let done = kinds.iter().position(|k| *k == "rolled_back");
    assert!(back.is_some() && back < done, "{kinds:?}");
    assert!(
        first(&log, "rollback_started")
            .message
            .contains("rolling back")
    );
    assert_eq!(
        first(&log, "rolled_back").message,
        "1.0.0 serves again, healthy"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_progress_deadline_of_the_rollout_rolls_back(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    deploy_ok(&engine, &pool, "prod", "1.0.0").await;

    sim.faults().set(
        FaultScope::target(&target("shop")),
        Fault::NeverReady(release("2.0.0")),
    );
    let id = deploy(&pool, "prod", "2.0.0").await;
    drive_to(&engine, &pool, id, DeploymentStatus::Running).await;
    // One more step applies 2.0.0, whose new pod never becomes ready.
    engine.run_once(4).await.expect("step");
    let snap = sim.snapshot(&target("shop"));
    let stable = &snap.workloads[&Track::Stable];
    assert_eq!(stable.spec.release, release("2.0.0"));
    assert!(stable.status.updated > 0 && stable.status.available == REPLICAS);
    assert_eq!(get(&pool, id).await.status, DeploymentStatus::Running);

    // The environment's deadline is at least 10 s; move the stored instant instead of waiting.
    expire_progress_deadline(&pool, id).await;
    let d = drive(&engine, &pool, id, "a terminal status", |d| {
        d.status.is_terminal()
    })
    .await;
    assert_eq!(d.status, DeploymentStatus::RolledBack, "{d:?}");
    assert_eq!(d.outcome, Some(Outcome::RolledBack));
    let reason = d.reason.expect("a failure reason");
    assert_eq!(reason.code, "progress_deadline_exceeded");
    assert_eq!(
        reason.message,
        "no progress in phase rolling_update within the progress deadline (10m)"
    );
    assert_eq!(d.serving.health, ServingHealth::Healthy);
    assert_eq!(d.serving.version.as_deref(), Some("1.0.0"));
    assert_serves(&sim, "shop", "1.0.0");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_first_deployment_that_cannot_progress_fails(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    sim.faults().set(
        FaultScope::target(&target("shop")),
        Fault::NeverReady(release("1.0.0")),
    );
    let id = deploy(&pool, "prod", "1.0.0").await;
    drive_to(&engine, &pool, id, DeploymentStatus::Running).await;
    expire_progress_deadline(&pool, id).await;
    let d = drive(&engine, &pool, id, "a terminal status", |d| {
        d.status.is_terminal()
    })
    .await;
    // Nothing to go back to: failed, and the environment is not known to be healthy.
    assert_eq!(d.status, DeploymentStatus::Failed, "{d:?}");
    assert_eq!(d.outcome, Some(Outcome::Failed));
    assert_eq!(d.serving.health, ServingHealth::Degraded);
    assert_eq!(
        d.reason.map(|r| r.code).as_deref(),
        Some("progress_deadline_exceeded")
    );
    assert!(kinds(&events_of(&pool, id).await).contains(&"failed"));
}
