//! Every rule of a request body, checked over HTTP: a 422 problem names each bad field by
//! JSON pointer, and nothing is stored.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use common::{DEPLOYMENTS, TestApp, canary_env, overridable_env};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

const PROD: &str = "/v1/apps/web/environments/prod";

fn with_steps(steps: Value) -> Value {
    let mut env = canary_env();
    env["strategy"]["steps"] = steps;
    env
}

async fn seeded(pool: PgPool) -> TestApp {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_unpinned_image_is_refused(pool: PgPool) {
    let app = seeded(pool).await;
    for image in [
        "ghcr.io/acme/web",
        "ghcr.io/acme/web:latest@sha256:abc",
        "Acme/Web:1",
        "",
    ] {
        let r = app.post_json(DEPLOYMENTS, &json!({"image": image})).await;
        r.assert_invalid_field("/image");
    }
    let r = app
        .post_json(
            DEPLOYMENTS,
            &json!({"image": "ghcr.io/acme/web", "version": "no spaces", "source": {"commit": "xyz"}}),
        )
        .await;
    r.assert_invalid_field("/image");
    r.assert_invalid_field("/version");
    r.assert_invalid_field("/source/commit");
    assert_eq!(app.count("deployments").await, 0);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn canary_weights_must_be_1_to_100_and_never_decrease(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_cluster("local").await;
    app.seed_app("web").await;

    let zero = app
        .put_json(PROD, &with_steps(json!([{"set_weight": 0}])))
        .await;
    zero.assert_invalid_field("/strategy/steps/0/set_weight");

    let over = app
        .put_json(
            PROD,
            &with_steps(json!([{"set_weight": 10}, {"set_weight": 101}])),
        )
        .await;
    over.assert_invalid_field("/strategy/steps/1/set_weight");

    let decreasing = app
        .put_json(
            PROD,
            &with_steps(json!([{"set_weight": 50}, {"pause": {}}, {"set_weight": 20}])),
        )
        .await;
    decreasing.assert_invalid_field("/strategy/steps/2/set_weight");
    assert_eq!(decreasing.pointers(), ["/strategy/steps/2/set_weight"]);

    let empty = app.put_json(PROD, &with_steps(json!([]))).await;
    empty.assert_invalid_field("/strategy/steps");

    // The same rules hold for a strategy given with a deployment (where overrides are allowed).
    let r = app.put_json(PROD, &overridable_env()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = app
        .post_json(
            DEPLOYMENTS,
            &json!({"image": "web:1", "strategy": {"type": "canary", "steps": [{"set_weight": 0}]}}),
        )
        .await;
    r.assert_invalid_field("/strategy/steps/0/set_weight");
    assert_eq!(app.count("environments").await, 1);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_pause_may_last_at_most_a_week(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_cluster("local").await;
    app.seed_app("web").await;
    let r = app
        .put_json(
            PROD,
            &with_steps(json!([{"set_weight": 10}, {"pause": {"duration": "8d"}}])),
        )
        .await;
    r.assert_invalid_field("/strategy/steps/1/pause/duration");
    let r = app
        .put_json(PROD, &with_steps(json!([{"pause": {"duration": "0s"}}])))
        .await;
    r.assert_invalid_field("/strategy/steps/0/pause/duration");
    let ok = app
        .put_json(PROD, &with_steps(json!([{"pause": {"duration": "7d"}}])))
        .await;
    assert_eq!(ok.status.as_u16(), 201, "{}", ok.text);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_workload_needs_replicas(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_cluster("local").await;
    app.seed_app("web").await;
    let mut env = canary_env();
    env["workload"]["replicas"] = json!(0);
    app.put_json(PROD, &env)
        .await
        .assert_invalid_field("/workload/replicas");
    assert_eq!(app.count("environments").await, 0);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn pod_labels_are_kubernetes_labels_and_not_slipways_own(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_cluster("local").await;
    app.seed_app("web").await;
    let mut env = canary_env();
    env["workload"]["pod_labels"] = json!({"slipway.dev/track": "canary"});
    app.put_json(PROD, &env)
        .await
        .assert_invalid_field("/workload/pod_labels/slipway.dev~1track");
    env["workload"]["pod_labels"] = json!({"team": "two words"});
    app.put_json(PROD, &env)
        .await
        .assert_invalid_field("/workload/pod_labels/team");
    env["workload"]["pod_labels"] = json!({"team": 7});
    app.put_json(PROD, &env)
        .await
        .assert_invalid_field("/workload/pod_labels/team");
    assert_eq!(app.count("environments").await, 0);

    env["workload"]["pod_labels"] = json!({"team": "shop"});
    let ok = app.put_json(PROD, &env).await;
    assert_eq!(ok.status.as_u16(), 201, "{}", ok.text);
    assert_eq!(
        ok.body["workload"]["pod_labels"],
        json!({"team": "shop"}),
        "{}",
        ok.text
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn unknown_fields_are_refused_where_they_are(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;

    let mut top = canary_env();
    top["colour"] = json!("blue");
    let r = app.put_json(PROD, &top).await;
    r.assert_invalid_field("/colour");
    assert!(
        r.body["errors"][0]["detail"]
            .as_str()
            .expect("detail")
            .contains("colour")
    );

    let mut nested = canary_env();
    nested["workload"]["cpu"] = json!("1");
    app.put_json(PROD, &nested)
        .await
        .assert_invalid_field("/workload/cpu");

    let mut in_step = canary_env();
    in_step["strategy"]["steps"][1]["pause"]["until"] = json!("approved");
    app.put_json(PROD, &in_step)
        .await
        .assert_invalid_field("/strategy/steps/1/pause/until");

    let mut in_strategy = canary_env();
    in_strategy["strategy"]["max_weight"] = json!(50);
    app.put_json(PROD, &in_strategy)
        .await
        .assert_invalid_field("/strategy/max_weight");

    app.post_json("/v1/apps", &json!({"name": "api", "owner": "me"}))
        .await
        .assert_invalid_field("/owner");
    app.post_json(
        DEPLOYMENTS,
        &json!({"image": "web:1", "source": {"branch": "main"}}),
    )
    .await
    .assert_invalid_field("/source/branch");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_wrong_type_names_the_field(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_cluster("local").await;
    app.seed_app("web").await;
    let mut env = canary_env();
    env["workload"]["replicas"] = json!("four");
    app.put_json(PROD, &env)
        .await
        .assert_invalid_field("/workload/replicas");

    let mut missing = canary_env();
    missing.as_object_mut().expect("object").remove("namespace");
    let r = app.put_json(PROD, &missing).await;
    r.assert_invalid_field("/namespace");
    assert!(r.text.contains("missing field"), "{}", r.text);
    let mut missing_nested = canary_env();
    missing_nested["workload"]
        .as_object_mut()
        .expect("object")
        .remove("port");
    app.put_json(PROD, &missing_nested)
        .await
        .assert_invalid_field("/workload/port");
    let mut untyped = canary_env();
    untyped["strategy"]
        .as_object_mut()
        .expect("object")
        .remove("type");
    app.put_json(PROD, &untyped)
        .await
        .assert_invalid_field("/strategy/type");
    let mut unknown_type = canary_env();
    unknown_type["strategy"]["type"] = json!("big_bang");
    app.put_json(PROD, &unknown_type)
        .await
        .assert_invalid_field("/strategy/type");

    let mut bad_duration = canary_env();
    bad_duration["progress_deadline"] = json!("ten minutes");
    app.put_json(PROD, &bad_duration)
        .await
        .assert_invalid_field("/progress_deadline");

    app.post_json("/v1/clusters", &json!({"name": "x", "kind": "docker"}))
        .await
        .assert_invalid_field("/kind");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_environment_needs_a_registered_cluster(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_app("web").await;
    let r = app.put_json(PROD, &canary_env()).await;
    r.assert_invalid_field("/cluster");
    assert!(r.text.contains("local"), "{}", r.text);
    assert_eq!(app.count("environments").await, 0);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn names_are_unique(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_app("web").await;
    let r = app.post_json("/v1/apps", &json!({"name": "web"})).await;
    r.assert_problem(409, "already-exists");
    assert!(r.header("etag").is_none(), "an error carries no ETag");
    app.seed_cluster("local").await;
    app.post_json(
        "/v1/clusters",
        &json!({"name": "local", "kind": "in_cluster"}),
    )
    .await
    .assert_problem(409, "already-exists");
    assert_eq!(app.count("apps").await, 1);
    assert_eq!(app.count("clusters").await, 1);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn nul_characters_are_refused_before_they_reach_the_database(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    // Postgres cannot store U+0000 in text or jsonb: each place one can come in is refused.
    let r = app
        .post_json(
            "/v1/apps",
            &json!({"name": "api", "description": "a\u{0}b"}),
        )
        .await;
    r.assert_invalid_field("/description");
    app.post_json(DEPLOYMENTS, &json!({"image": "web:1", "reason": "\u{0}"}))
        .await
        .assert_invalid_field("/reason");
    app.post_json(
        DEPLOYMENTS,
        &json!({"image": "web:1", "source": {"url": "https://ci.example/\u{0}"}}),
    )
    .await
    .assert_invalid_field("/source/url");
    app.patch_json("/v1/apps/web", &json!({"description": "\u{0}"}))
        .await
        .assert_invalid_field("/description");
    assert_eq!(app.count("deployments").await, 0);

    for path in [
        "/v1/apps/%00",
        "/v1/apps/web%00",
        "/v1/clusters/local%00",
        "/v1/apps/web/environments/%00",
        "/v1/apps/%00/environments",
    ] {
        app.get(path).await.assert_problem(404, "not-found");
    }
    app.delete("/v1/apps/web%00")
        .await
        .assert_problem(404, "not-found");
    app.patch_json("/v1/apps/web%00", &json!({}))
        .await
        .assert_problem(404, "not-found");
    app.put_json("/v1/apps/%00/environments/prod", &canary_env())
        .await
        .assert_problem(404, "not-found");
    app.post_json(
        "/v1/apps/web%00/environments/prod/deployments",
        &json!({"image": "web:1"}),
    )
    .await
    .assert_problem(404, "not-found");

    // A cursor is base64 of `n1:<name>`; one hiding a NUL is not one the list issued.
    app.get("/v1/apps?cursor=bjE6AA")
        .await
        .assert_invalid_parameter("cursor");
    assert_eq!(app.get("/v1/apps/web").await.status.as_u16(), 200);
}

/// A query the framework cannot parse (a parameter given twice) is a 422 naming the
/// parameter, like every other invalid parameter, not a plain-text 400.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_query_parameter_given_twice_is_named(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for (path, parameter) in [
        ("/v1/apps?limit=1&limit=2", "limit"),
        ("/v1/deployments?cursor=a&cursor=b", "cursor"),
        ("/v1/audit?limit=5&limit=6", "limit"),
    ] {
        let answer = app.get(path).await;
        answer.assert_problem(422, "validation-failed");
        answer.assert_invalid_parameter(parameter);
    }
}
