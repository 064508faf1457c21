//! One workload belongs to one environment, in the cluster as in the database: two cluster
//! registrations of one (simulated) cluster let an environment name another's workload past
//! the database's uniqueness, and the driver must then refuse to touch it.

use serde_json::json;
use slipway_core::rollout::Track;
use slipway_core::{ClusterKind, ClusterSpec, DeploymentStatus, EnvironmentSpec};
use slipway_engine::intake;
use slipway_store::PgPool;

use crate::common::*;

/// Registers a second simulated cluster; the engine's drivers send every simulated cluster to
/// the same `SimCluster`, as two registrations of one real cluster would reach the same API
/// server.
async fn second_registration(pool: &PgPool, name: &str) {
    let mut tx = pool.begin().await.expect("begin");
    let spec = ClusterSpec {
        name: name.into(),
        kind: ClusterKind::Simulated,
        kubeconfig_path: None,
        context: None,
    };
    intake::register_cluster(&mut tx, &spec)
        .await
        .expect("register the cluster");
    tx.commit().await.expect("commit");
}

fn on_cluster(cluster: &str, spec: EnvironmentSpec) -> EnvironmentSpec {
    EnvironmentSpec {
        cluster: cluster.into(),
        ..spec
    }
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_environment_cannot_deploy_over_another_environments_workload(pool: PgPool) {
    seed_app(&pool).await;
    second_registration(&pool, "local-again").await;
    // staging, on the other registration, names prod's workload.
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    put_env(
        &pool,
        "staging",
        &on_cluster("local-again", env_spec("shop", rolling(), json!({}))),
    )
    .await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    deploy_ok(&engine, &pool, "prod", "1.0.0").await;

    let id = deploy(&pool, "staging", "6.6.6").await;
    let d = drive(&engine, &pool, id, "an end", |d| d.status.is_terminal()).await;
    assert_eq!(d.status, DeploymentStatus::Failed, "{d:?}");
    let reason = d.reason.expect("a failure reason");
    assert_eq!(reason.code, "owned_by_other_environment", "{reason:?}");
    assert_eq!(
        sim.snapshot(&target("shop")).release(Track::Stable),
        Some(&release("1.0.0")),
        "prod's workload still runs prod's release"
    );
}
