//! One workload belongs to one environment: an admin of one app (or of one environment) can
//! aim an environment only at a workload no other environment holds, adopting objects Slipway
//! does not manage is the app's decision, and a cluster can restrict each app's namespaces.

#![expect(
    clippy::expect_used,
    reason = "the harness fails the test with a message"
)]

mod common;

use common::{TestApp, canary_env};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

/// `canary_env` in namespace `ns` with workload `workload`, plus `extra` fields.
fn env_on(ns: &str, workload: &str, extra: Value) -> Value {
    let mut spec = canary_env();
    spec["namespace"] = json!(ns);
    spec["workload"]["name"] = json!(workload);
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_workload_belongs_to_one_environment(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await; // web/prod: namespace web, workload web
    app.seed_app("shop").await;
    app.bind("shop", "ann", "admin", None).await;
    app.bind("web", "sam", "admin", Some("staging")).await;
    let prods_workload = env_on("web", "web", json!({}));

    // An admin of another app cannot aim an environment at web's prod workload...
    let ann = app.as_user("ann", &[]);
    ann.put_json("/v1/apps/shop/environments/prod", &prods_workload)
        .await
        .assert_invalid_field("/workload/name");
    // ...nor can an admin of web's staging, to deploy to prod without prod's approval.
    let sam = app.as_user("sam", &[]);
    sam.put_json("/v1/apps/web/environments/staging", &prods_workload)
        .await
        .assert_invalid_field("/workload/name");
    // Replacing an environment that holds the workload is fine.
    let r = app
        .put_json("/v1/apps/web/environments/prod", &prods_workload)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    // Another workload in the same namespace, or the same name in another namespace, is free.
    let r = sam
        .put_json(
            "/v1/apps/web/environments/staging",
            &env_on("web", "web-staging", json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = ann
        .put_json(
            "/v1/apps/shop/environments/prod",
            &env_on("shop", "web", json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // Nor can an environment be moved onto a workload another one holds.
    ann.put_json("/v1/apps/shop/environments/prod", &prods_workload)
        .await
        .assert_invalid_field("/workload/name");
    assert_eq!(
        app.get("/v1/apps/shop/environments/prod").await.body["namespace"],
        "shop"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn adopting_unmanaged_objects_needs_an_admin_of_the_app(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.bind("web", "sam", "admin", Some("staging")).await;
    app.bind("web", "ann", "admin", None).await;
    let adopting = env_on("web", "web-staging", json!({"adopt": true}));

    let sam = app.as_user("sam", &[]);
    sam.put_json("/v1/apps/web/environments/staging", &adopting)
        .await
        .assert_problem(403, "forbidden");
    let r = sam
        .put_json(
            "/v1/apps/web/environments/staging",
            &env_on("web", "web-staging", json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert!(r.body.get("adopt").is_none(), "off unless set: {}", r.text);

    let ann = app.as_user("ann", &[]);
    let r = ann
        .put_json("/v1/apps/web/environments/staging", &adopting)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["adopt"], true);
    // The environment's own admin may keep editing it, but not with `adopt: true`.
    sam.put_json("/v1/apps/web/environments/staging", &adopting)
        .await
        .assert_problem(403, "forbidden");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_cluster_restricts_which_namespaces_each_app_uses(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.seed_app("shop").await;
    app.bind("shop", "ann", "admin", None).await;
    let ann = app.as_user("ann", &[]);

    // Not restricted until a bootstrap admin says so.
    let r = app.get("/v1/clusters/local/namespaces").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, json!({"apps": null}));
    let list = json!({"apps": {"web": ["web", "web-staging"], "shop": ["shop"]}});
    ann.put_json("/v1/clusters/local/namespaces", &list)
        .await
        .assert_problem(403, "forbidden");
    ann.get("/v1/clusters/local/namespaces")
        .await
        .assert_problem(403, "forbidden");
    let r = app.put_json("/v1/clusters/local/namespaces", &list).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body, list);
    assert_eq!(app.get("/v1/clusters/local/namespaces").await.body, list);

    // shop may not use web's namespace, whatever the workload.
    ann.put_json(
        "/v1/apps/shop/environments/prod",
        &env_on("web", "shop", json!({})),
    )
    .await
    .assert_invalid_field("/namespace");
    let r = ann
        .put_json(
            "/v1/apps/shop/environments/prod",
            &env_on("shop", "shop", json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    // An app the list does not name may use no namespace on the cluster.
    app.seed_app("blog").await;
    app.put_json(
        "/v1/apps/blog/environments/prod",
        &env_on("blog", "blog", json!({})),
    )
    .await
    .assert_invalid_field("/namespace");

    app.put_json(
        "/v1/clusters/local/namespaces",
        &json!({"apps": {"Web": ["ok", "No_Way"]}}),
    )
    .await
    .assert_invalid_field("/apps/Web")
    .assert_invalid_field("/apps/Web/1");
    app.put_json("/v1/clusters/nowhere/namespaces", &list)
        .await
        .assert_problem(404, "not-found");
}
