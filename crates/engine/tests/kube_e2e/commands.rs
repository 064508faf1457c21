//! promote, abort, rollback and retry sent over HTTP, carried out on the real cluster.

use reqwest::StatusCode;
use serde_json::json;
use slipway_store::PgPool;

use crate::harness::*;

/// Stable at `version` with `replicas` ready, and no canary pods left.
async fn only_stable_at(e: &E2e, version: &str, replicas: i32) {
    e.until(&format!("only stable at {version}"), || async {
        let s = e.k8s_deployment("web").await?;
        let c = e.k8s_deployment("web-canary").await;
        let canary_pods = e
            .all_pods("app.kubernetes.io/name=web,slipway.dev/track=canary")
            .await;
        (deployment_image(&s) == image(version)
            && deployment_counts(&s) == (replicas, replicas, replicas)
            && c.is_none_or(|c| deployment_counts(&c).0 == 0)
            && canary_pods.is_empty())
        .then_some(())
    })
    .await;
}

/// The canary at `version` with one ready pod.
async fn canary_up_at(e: &E2e, version: &str) {
    e.until(&format!("one canary pod at {version}"), || async {
        let c = e.k8s_deployment("web-canary").await?;
        (deployment_image(&c) == image(version) && deployment_counts(&c) == (1, 1, 1)).then_some(())
    })
    .await;
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn promote_abort_rollback_and_retry_over_http(pool: PgPool) {
    let e = E2e::start(pool, "commands").await;
    let strategy = json!({"type": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]});
    e.put_env(2, strategy, json!({})).await;
    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;
    let stable_rs = e.replica_sets("web").await[0].metadata.uid.clone();

    // Abort: back to 1.0.0, canary gone, the same stable ReplicaSet serving.
    let v2 = e.deploy("2.0.0", json!({})).await;
    e.wait_phase(v2, "paused", "paused_step").await;
    canary_up_at(&e, "2.0.0").await;
    e.accepted(v2, "abort").await;
    let d = e.wait_status(v2, "rolled_back").await;
    assert_eq!(d["outcome"], "aborted", "{d}");
    assert_eq!(
        d["serving"],
        json!({"health": "healthy", "version": "1.0.0"})
    );
    only_stable_at(&e, "1.0.0", 2).await;
    let sets = e.replica_sets("web").await;
    assert_eq!(sets.len(), 1, "stable never changed: {sets:?}");
    assert_eq!(sets[0].metadata.uid, stable_rs);
    let (status, body) = e.command(v2, "promote").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    // Retry: attempt 2 runs the canary again; promote makes it live.
    e.accepted(v2, "retry").await;
    e.wait_past_end(v2, "paused at the canary step again", |d| {
        d["status"] == "paused" && d["phase"] == "paused_step"
    })
    .await;
    canary_up_at(&e, "2.0.0").await;
    e.accepted(v2, "promote").await;
    let d = e.wait_status(v2, "succeeded").await;
    assert_eq!(
        d["serving"],
        json!({"health": "healthy", "version": "2.0.0"})
    );
    only_stable_at(&e, "2.0.0", 2).await;
    let started: Vec<_> = e
        .events(v2)
        .await
        .iter()
        .filter(|ev| ev["kind"] == "started")
        .map(|ev| ev["data"]["attempt"].clone())
        .collect();
    assert_eq!(started, [json!(1), json!(2)]);

    // Rollback: the 3.0.0 canary goes, 2.0.0 stays.
    let v3 = e.deploy("3.0.0", json!({})).await;
    e.wait_phase(v3, "paused", "paused_step").await;
    canary_up_at(&e, "3.0.0").await;
    e.accepted(v3, "rollback").await;
    let d = e.wait_status(v3, "rolled_back").await;
    assert_eq!(d["outcome"], "rolled_back", "{d}");
    assert_eq!(
        d["serving"],
        json!({"health": "healthy", "version": "2.0.0"})
    );
    only_stable_at(&e, "2.0.0", 2).await;

    let log = e.events(v3).await;
    let commands: Vec<_> = log
        .iter()
        .filter(|ev| ev["kind"] == "command")
        .map(|ev| (ev["data"]["command"].clone(), ev["data"]["reason"].clone()))
        .collect();
    assert_eq!(commands, [(json!("rollback"), json!("e2e rollback"))]);
    e.finish().await;
}
