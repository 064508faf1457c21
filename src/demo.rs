//! The demo that `slipway dev` seeds: a simulated cluster, an app and two environments, and
//! the commands to try them. Both environments let a deployment bring its own strategy
//! (`allow_strategy_override`), so every strategy can be tried on them.

use anyhow::Context;
use slipway_core::{ClusterKind, ClusterSpec, EnvironmentSpec, NewApp};
use slipway_engine::{Precondition, intake};

const PROD: &str = r#"{
  "cluster": "local", "namespace": "demo",
  "workload": {"name": "web", "container": "web", "replicas": 4, "port": 8080},
  "strategy": {"type": "canary",
               "steps": [{"set_weight": 25}, {"pause": {"duration": "10s"}}, {"set_weight": 50}, {"pause": {}}],
               "traffic": {"router": "replicas"}},
  "progress_deadline": "5m",
  "allow_strategy_override": true
}"#;

const STAGING: &str = r#"{
  "cluster": "local", "namespace": "demo-staging",
  "workload": {"name": "web", "container": "web", "replicas": 2, "port": 8080},
  "strategy": {"type": "rolling", "max_surge": "25%", "max_unavailable": 0},
  "allow_strategy_override": true
}"#;

/// Registers the demo objects unless they exist.
pub async fn seed(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let cluster = ClusterSpec {
        name: "local".into(),
        kind: ClusterKind::Simulated,
        kubeconfig_path: None,
        context: None,
    };
    if slipway_store::clusters::get(&mut tx, &cluster.name)
        .await
        .is_err()
    {
        intake::register_cluster(&mut tx, &cluster).await?;
    }
    let app = NewApp {
        name: "demo".into(),
        description: "seeded by slipway dev".into(),
    };
    // Look before inserting: a failed INSERT would abort the whole transaction.
    if slipway_store::apps::get(&mut tx, &app.name).await.is_err() {
        intake::create_app(&mut tx, &app).await?;
    }
    for (name, spec) in [("prod", PROD), ("staging", STAGING)] {
        let spec: EnvironmentSpec = serde_json::from_str(spec).context("demo environment")?;
        if slipway_store::environments::get(&mut tx, "demo", name)
            .await
            .is_err()
        {
            intake::put_environment(&mut tx, "demo", name, &spec, Precondition::None).await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// What to try against a server at `addr`.
pub fn walkthrough(addr: &str) -> String {
    format!(
        r#"Try a canary on the seeded app `demo` (simulated cluster `local`):
  curl -s http://{addr}/v1/apps/demo/environments/prod/deployments -H 'content-type: application/json' -d '{{"image": "ghcr.io/acme/web:1.1.0"}}'
  curl -sN http://{addr}/v1/deployments/<id>/events -H 'accept: text/event-stream'     # watch it move
  curl -s -X POST http://{addr}/v1/deployments/<id>/promote                            # past the last pause
  curl -s http://{addr}/v1/deployments/<id>                                           # status: succeeded"#
    )
}
