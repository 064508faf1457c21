//! A canary by replica ratio on the real cluster: at each step the canary Deployment has its
//! share of pods beside the full stable one, and a Service selecting both tracks has exactly
//! those pods behind it.

use serde_json::json;
use slipway_store::PgPool;

use crate::harness::*;

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn canary_by_replica_ratio_walks_each_step(pool: PgPool) {
    let e = E2e::start(pool, "canary").await;
    let strategy = json!({"type": "canary", "steps": [
        {"set_weight": 25}, {"pause": {}},
        {"set_weight": 50}, {"pause": {}},
        {"set_weight": 75}, {"pause": {}},
    ], "traffic": {"router": "replicas"}});
    e.put_env(4, strategy, json!({})).await;
    // What users put in front of a replica-ratio canary: a Service over both tracks.
    e.create_service("web-all", json!({"app.kubernetes.io/name": "web"}))
        .await;

    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;
    assert!(e.k8s_deployment("web-canary").await.is_none());
    let stable = e.ready_ips("stable").await;
    assert_eq!(stable.len(), 4);

    let v2 = e.deploy("2.0.0", json!({})).await;
    for (step, weight, canary) in [(1, 25, 1), (3, 50, 2), (5, 75, 3)] {
        let d = e
            .wait(v2, &format!("paused at step {step}"), |d| {
                d["status"] == "paused" && d["phase"] == "paused_step" && d["step"] == step
            })
            .await;
        assert_eq!(d["serving"]["version"], "1.0.0", "{d}");
        let c = e.k8s_deployment("web-canary").await.unwrap();
        assert_eq!(deployment_image(&c), image("2.0.0"));
        assert_eq!(deployment_counts(&c), (canary, canary, canary), "{weight}%");
        let s = e.k8s_deployment("web").await.unwrap();
        assert_eq!(deployment_image(&s), image("1.0.0"));
        assert_eq!(
            deployment_counts(&s),
            (4, 4, 4),
            "stable stays whole at {weight}%"
        );
        let canary_ips = e.ready_ips("canary").await;
        assert_eq!(canary_ips.len(), usize::try_from(canary).unwrap());
        assert_eq!(e.ready_ips("stable").await, stable);
        let both: std::collections::BTreeSet<String> = stable.union(&canary_ips).cloned().collect();
        e.until(&format!("web-all endpoints at {weight}%"), || async {
            (e.endpoint_ips("web-all").await == both).then_some(())
        })
        .await;
        e.accepted(v2, "promote").await;
    }

    let d = e.wait_status(v2, "succeeded").await;
    assert_eq!(
        d["serving"],
        json!({"health": "healthy", "version": "2.0.0"})
    );
    let s = e.k8s_deployment("web").await.unwrap();
    assert_eq!(deployment_image(&s), image("2.0.0"));
    assert_eq!(deployment_counts(&s), (4, 4, 4));
    let c = e.k8s_deployment("web-canary").await.unwrap();
    assert_eq!(deployment_counts(&c).0, 0);
    e.until(
        "canary pods gone, web-all on the new stable pods",
        || async {
            let canary_left = e
                .all_pods("app.kubernetes.io/name=web,slipway.dev/track=canary")
                .await;
            let stable_now = e.ready_ips("stable").await;
            (canary_left.is_empty()
                && stable_now.len() == 4
                && e.endpoint_ips("web-all").await == stable_now)
                .then_some(())
        },
    )
    .await;
    let log = e.events(v2).await;
    let shifted: Vec<_> = log
        .iter()
        .filter(|ev| ev["kind"] == "traffic_shifted")
        .filter_map(|ev| ev["message"].as_str())
        .collect();
    assert_eq!(
        &shifted[..3],
        [
            "canary at 25% (1 replicas)",
            "canary at 50% (2 replicas)",
            "canary at 75% (3 replicas)"
        ]
    );
    e.finish().await;
}
