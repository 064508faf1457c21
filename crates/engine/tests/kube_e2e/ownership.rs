//! Ownership on the real cluster: an environment cannot deploy over another environment's
//! workload (reached through a second registration of the same cluster, which the database's
//! uniqueness cannot see), and a Service Slipway does not manage is touched only when the
//! environment adopts it.

use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use reqwest::StatusCode;
use serde_json::{Value, json};
use slipway_store::PgPool;
use uuid::Uuid;

use crate::harness::*;

const ENVIRONMENT_LABEL: &str = "slipway.dev/environment";

fn rolling() -> Value {
    json!({"type": "rolling", "max_surge": 1, "max_unavailable": 0})
}

#[expect(
    clippy::expect_used,
    reason = "a helper of the tests: its failure fails the test"
)]
async fn environment_id(e: &E2e, name: &str) -> String {
    let id: Uuid = sqlx::query_scalar("SELECT id FROM environments WHERE name = $1")
        .bind(name)
        .fetch_one(&e.pool)
        .await
        .expect("the environment's id");
    id.to_string()
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_environment_cannot_deploy_over_another_environments_workload(pool: PgPool) {
    let e = E2e::start(pool, "owned").await;
    e.put_env(2, rolling(), json!({})).await;
    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;
    let prod = environment_id(&e, ENV).await;
    let dep = e.k8s_deployment("web").await.unwrap();
    assert_eq!(
        dep.metadata.labels.as_ref().unwrap().get(ENVIRONMENT_LABEL),
        Some(&prod),
        "the Deployment names its environment"
    );

    // The same cluster registered again, and an environment there naming prod's workload.
    let path = kubeconfig_e2e().to_str().unwrap().to_owned();
    e.expect(
        "POST",
        "/v1/clusters",
        json!({"name": "e2e-again", "kind": "kubernetes", "kubeconfig_path": path}),
        StatusCode::CREATED,
    )
    .await;
    e.expect(
        "PUT",
        &format!("/v1/apps/{APP}/environments/staging"),
        json!({
            "cluster": "e2e-again",
            "namespace": e.namespace,
            "workload": {"name": "web", "container": "app", "replicas": 2, "port": 8080},
            "strategy": rolling(),
        }),
        StatusCode::CREATED,
    )
    .await;
    let d = e
        .expect(
            "POST",
            &format!("/v1/apps/{APP}/environments/staging/deployments"),
            json!({"image": image("6.6.6"), "version": "6.6.6"}),
            StatusCode::CREATED,
        )
        .await;
    let id: Uuid = d["id"].as_str().unwrap().parse().unwrap();
    let d = e.wait_status(id, "failed").await;
    assert_eq!(d["reason"]["code"], "owned_by_other_environment", "{d}");
    let dep = e.k8s_deployment("web").await.unwrap();
    assert_eq!(
        deployment_image(&dep),
        image("1.0.0"),
        "prod's release stays"
    );
    e.finish().await;
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_unmanaged_service_is_switched_only_when_the_environment_adopts_it(pool: PgPool) {
    let e = E2e::start(pool, "adopt").await;
    // Someone else's Service named like the workload's active Service.
    e.create_service("web", json!({"app": "legacy"})).await;
    let strategy = json!({"type": "blue_green", "auto_promote": true, "scale_down_delay": "1s"});
    e.put_env(2, strategy.clone(), json!({})).await;
    let v1 = e.deploy("1.0.0", json!({})).await;
    let d = e.wait_status(v1, "failed").await;
    assert_eq!(d["reason"]["code"], "not_managed", "{d}");
    let services: Api<Service> = Api::namespaced(e.kube.clone(), &e.namespace);
    let web = services.get("web").await.unwrap();
    assert_eq!(
        web.spec.as_ref().unwrap().selector.as_ref().unwrap()["app"],
        "legacy",
        "left alone"
    );

    // With `adopt: true` the selector is switched, and the rest of the Service kept.
    e.put_env(2, strategy, json!({"adopt": true})).await;
    let v2 = e.deploy("1.0.1", json!({})).await;
    e.wait_status(v2, "succeeded").await;
    let web = services.get("web").await.unwrap();
    let selector = web.spec.as_ref().unwrap().selector.clone().unwrap();
    assert_eq!(
        selector.get("app.kubernetes.io/name").map(String::as_str),
        Some("web")
    );
    assert!(selector.contains_key("slipway.dev/track"), "{selector:?}");
    assert_eq!(
        web.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        80
    );
    let labels = web.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(ENVIRONMENT_LABEL),
        Some(&environment_id(&e, ENV).await)
    );
    assert!(
        !labels.contains_key("app.kubernetes.io/managed-by"),
        "adopted, not managed: {labels:?}"
    );
    e.finish().await;
}
