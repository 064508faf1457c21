//! Rolling updates: a new ReplicaSet replaces the old one; never-ready pods hit the progress
//! deadline and the previous ReplicaSet serves again.

use serde_json::json;
use slipway_store::PgPool;

use crate::harness::*;

fn rolling() -> serde_json::Value {
    json!({"type": "rolling", "max_surge": 1, "max_unavailable": 0})
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn rolling_update_replaces_the_replica_set(pool: PgPool) {
    let e = E2e::start(pool, "rolling").await;
    e.put_env(3, rolling(), json!({})).await;

    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;
    let first = e.replica_sets("web").await;
    assert_eq!(first.len(), 1, "one ReplicaSet after the first deployment");
    let v1_rs = first[0].metadata.uid.clone();
    assert_eq!(rs_counts(&first[0]), (3, 3, 3));

    let v2 = e.deploy("2.0.0", json!({})).await;
    let d = e.wait_status(v2, "succeeded").await;
    assert_eq!(d["outcome"], "promoted", "{d}");
    assert_eq!(
        d["serving"],
        json!({"health": "healthy", "version": "2.0.0"})
    );
    assert_eq!(d["reason"], json!(null));

    // Kubernetes: the Deployment at v2 and done; the new ReplicaSet ready, the old one at 0.
    let dep = e.k8s_deployment("web").await.unwrap();
    assert_eq!(deployment_image(&dep), image("2.0.0"));
    let status = dep.status.clone().unwrap();
    assert!(
        status.observed_generation >= dep.metadata.generation,
        "{status:?}"
    );
    assert_eq!(deployment_counts(&dep), (3, 3, 3));
    let sets = e.replica_sets("web").await;
    assert_eq!(sets.len(), 2, "{sets:?}");
    let (old, new) = (&sets[0], &sets[1]);
    assert_eq!(old.metadata.uid, v1_rs);
    assert_eq!(rs_image(old), image("1.0.0"));
    assert_eq!(rs_image(new), image("2.0.0"));
    assert_eq!(rs_counts(new), (3, 3, 3));
    // The old ReplicaSet is scaled to 0 and its pods are gone.
    assert_eq!(rs_counts(old).0, 0);
    let old_hash = old.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    e.until("the v1 pods gone", || async {
        let left = e
            .all_pods(&format!(
                "app.kubernetes.io/name=web,pod-template-hash={old_hash}"
            ))
            .await;
        left.is_empty().then_some(())
    })
    .await;
    let pods = e.pods("app.kubernetes.io/name=web").await;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(is_ready));
    e.finish().await;
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn never_ready_pods_roll_back_to_the_previous_replica_set(pool: PgPool) {
    let e = E2e::start(pool, "stuck").await;
    e.put_env(3, rolling(), json!({"progress_deadline": "10s"}))
        .await;
    let v1 = e.deploy("1.0.0", json!({})).await;
    e.wait_status(v1, "succeeded").await;
    let v1_rs = e.replica_sets("web").await[0].metadata.uid.clone();

    // From now on the environment's pods carry the label kwok keeps unready.
    e.put_env(
        3,
        rolling(),
        json!({"progress_deadline": "10s", "workload": {"pod_labels": {NEVER_READY_LABEL: "true"}}}),
    )
    .await;
    let v2 = e.deploy("2.0.0", json!({})).await;
    // While it runs, the new pod really is unready (kwok's slipway-pod-never-ready stage).
    e.until("a v2 pod that runs but is not Ready", || async {
        let pods = e.pods(&format!("{NEVER_READY_LABEL}=true")).await;
        pods.iter()
            .any(|p| {
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                    && !is_ready(p)
            })
            .then_some(())
    })
    .await;
    let d = e
        .wait(v2, "rolled_back (if it succeeded instead, the cluster lacks the kwok stage: scripts/cluster/component kwok restart)", |d| {
            d["status"] == "rolled_back"
        })
        .await;
    assert_eq!(d["outcome"], "rolled_back", "{d}");
    assert_eq!(d["reason"]["code"], "progress_deadline_exceeded", "{d}");
    assert_eq!(
        d["serving"],
        json!({"health": "healthy", "version": "1.0.0"})
    );

    // Kubernetes: the Deployment's template is v1 again, without the label, and the v1
    // ReplicaSet (the same object as before) serves again; the v2 one is at 0.
    let dep = e.k8s_deployment("web").await.unwrap();
    assert_eq!(deployment_image(&dep), image("1.0.0"));
    let labels = dep
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert!(!labels.contains_key(NEVER_READY_LABEL), "{labels:?}");
    let sets = e.replica_sets("web").await;
    assert_eq!(sets.len(), 2, "{sets:?}");
    let serving: Vec<_> = sets.iter().filter(|rs| rs_counts(rs).0 > 0).collect();
    assert_eq!(serving.len(), 1, "{sets:?}");
    assert_eq!(
        serving[0].metadata.uid, v1_rs,
        "the previous ReplicaSet serves again"
    );
    assert_eq!(rs_counts(serving[0]), (3, 3, 3));
    let stuck = sets.iter().find(|rs| rs.metadata.uid != v1_rs).unwrap();
    assert_eq!(rs_image(stuck), image("2.0.0"));
    assert_eq!(rs_counts(stuck).0, 0);
    e.until("the never-ready pods gone", || async {
        e.all_pods(&format!("{NEVER_READY_LABEL}=true"))
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    let pods = e.pods("app.kubernetes.io/name=web").await;
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(is_ready));

    let log = e.events(v2).await;
    let kinds: Vec<_> = log.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"rollback_started"), "{kinds:?}");
    e.finish().await;
}
