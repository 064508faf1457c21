//! ETags and `If-Match`, conflicts with unfinished work, and the one-active-deployment index.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use common::{TestApp, canary_env};
use reqwest::{Method, StatusCode};
use serde_json::json;
use slipway_core::DeploymentStatus;
use sqlx::PgPool;
use uuid::Uuid;

const PROD: &str = "/v1/apps/web/environments/prod";

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_app_changes_only_from_its_current_etag(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_app("web").await;

    let got = app.get("/v1/apps/web").await;
    let etag = got.header("etag").expect("an ETag").to_owned();

    let patch = |tag: &str, description: &str| {
        app.json_request(
            Method::PATCH,
            "/v1/apps/web",
            &json!({"description": description}),
        )
        .header("if-match", tag)
    };
    let changed = app.send(patch(&etag, "first")).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let new_etag = changed.header("etag").expect("a new ETag").to_owned();
    assert_ne!(new_etag, etag);
    assert_eq!(
        app.get("/v1/apps/web").await.header("etag"),
        Some(new_etag.as_str())
    );

    let stale = app.send(patch(&etag, "second")).await;
    stale.assert_problem(412, "precondition-failed");
    assert_eq!(app.get("/v1/apps/web").await.body["description"], "first");

    // Tags that are not ours never match; `*` matches any existing app.
    for tag in ["W/\"2\"", "garbage", "\"\""] {
        app.send(patch(tag, "x"))
            .await
            .assert_problem(412, "precondition-failed");
    }
    let any = app.send(patch("*", "third")).await;
    assert_eq!(any.status, StatusCode::OK);
    let missing = app
        .send(
            app.json_request(Method::PATCH, "/v1/apps/nope", &json!({"description": "x"}))
                .header("if-match", "*"),
        )
        .await;
    missing.assert_problem(412, "precondition-failed");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_environment_is_replaced_only_from_its_current_etag(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let etag = app.get(PROD).await.header("etag").expect("ETag").to_owned();

    let mut rolling = canary_env();
    rolling["strategy"] = json!({"type": "rolling"});
    let put = |tag: &str| {
        app.json_request(Method::PUT, PROD, &rolling)
            .header("if-match", tag)
    };
    let replaced = app.send(put(&etag)).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.text);
    assert_ne!(replaced.header("etag"), Some(etag.as_str()));

    let stale = app.send(put(&etag)).await;
    stale.assert_problem(412, "precondition-failed");
    assert_eq!(app.get(PROD).await.header("etag"), replaced.header("etag"));

    // `If-Match: *` demands that it exists: it cannot create.
    let create_star = app
        .send(
            app.json_request(
                Method::PUT,
                "/v1/apps/web/environments/staging",
                &canary_env(),
            )
            .header("if-match", "*"),
        )
        .await;
    create_star.assert_problem(412, "precondition-failed");
    app.get("/v1/apps/web/environments/staging")
        .await
        .assert_problem(404, "not-found");

    let create_tagged = app
        .send(
            app.json_request(
                Method::PUT,
                "/v1/apps/web/environments/staging",
                &canary_env(),
            )
            .header("if-match", "\"1\""),
        )
        .await;
    create_tagged.assert_problem(412, "precondition-failed");

    let replace_star = app.send(put("*")).await;
    assert_eq!(replace_star.status, StatusCode::OK);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_app_is_deleted_only_from_its_current_etag(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed_app("web").await;
    let etag = app
        .get("/v1/apps/web")
        .await
        .header("etag")
        .expect("ETag")
        .to_owned();
    app.patch_json("/v1/apps/web", &json!({"description": "changed"}))
        .await;

    let stale = app
        .send(
            app.request(Method::DELETE, "/v1/apps/web")
                .header("if-match", &etag),
        )
        .await;
    stale.assert_problem(412, "precondition-failed");
    assert_eq!(app.get("/v1/apps/web").await.status, StatusCode::OK);

    let current = app
        .get("/v1/apps/web")
        .await
        .header("etag")
        .expect("ETag")
        .to_owned();
    let deleted = app
        .send(
            app.request(Method::DELETE, "/v1/apps/web")
                .header("if-match", &current),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get("/v1/apps/web")
        .await
        .assert_problem(404, "not-found");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_app_with_unfinished_deployments_is_not_deleted(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let d = app.deploy("web", "prod", "web:1").await;

    let refused = app.delete("/v1/apps/web").await;
    refused.assert_problem(409, "conflict");
    assert!(refused.text.contains("unfinished"), "{}", refused.text);
    assert_eq!(app.get("/v1/apps/web").await.status, StatusCode::OK);
    assert_eq!(app.count("deployments").await, 1);

    // Once finished, the app goes with its environments and deployments.
    let id: Uuid = d["id"].as_str().expect("id").parse().expect("uuid");
    app.force_status(id, DeploymentStatus::Cancelled)
        .await
        .expect("cancel");
    assert_eq!(
        app.delete("/v1/apps/web").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.count("environments").await, 0);
    assert_eq!(app.count("deployments").await, 0);
    assert_eq!(app.count("deployment_events").await, 0);
    app.get(&format!("/v1/deployments/{id}"))
        .await
        .assert_problem(404, "not-found");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn one_active_deployment_per_environment(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.seed_env("web", "staging").await;
    let id =
        |d: &serde_json::Value| -> Uuid { d["id"].as_str().expect("id").parse().expect("uuid") };
    let first = id(&app.deploy("web", "prod", "web:1").await);
    let second = id(&app.deploy("web", "prod", "web:2").await);
    let elsewhere = id(&app.deploy("web", "staging", "web:2").await);

    app.force_status(first, DeploymentStatus::Running)
        .await
        .expect("first runs");

    for active in [
        DeploymentStatus::Running,
        DeploymentStatus::Paused,
        DeploymentStatus::RollingBack,
    ] {
        let refused = app.force_status(second, active).await;
        let constraint = refused
            .as_ref()
            .err()
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.constraint());
        assert_eq!(
            constraint,
            Some("deployments_one_active_per_environment"),
            "a second {active:?} deployment in prod: {refused:?}"
        );
    }
    // Another environment is independent, and waiting is not active.
    app.force_status(elsewhere, DeploymentStatus::Running)
        .await
        .expect("staging runs beside prod");
    app.force_status(second, DeploymentStatus::Queued)
        .await
        .expect("still queued");

    app.force_status(first, DeploymentStatus::Succeeded)
        .await
        .expect("first done");
    app.force_status(second, DeploymentStatus::Running)
        .await
        .expect("the second runs once the first is done");

    let running = app
        .get("/v1/deployments?status=running&environment=prod")
        .await;
    assert_eq!(running.body["items"][0]["id"], second.to_string());
    assert_eq!(running.body["items"].as_array().map(Vec::len), Some(1));
}

/// Runs `request` while `tx` holds its locks: once Postgres has the request waiting on a lock,
/// commits `tx`, then returns the request's answer.
async fn while_uncommitted<F: std::future::Future<Output = common::Resp>>(
    pool: &PgPool,
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    request: F,
) -> common::Resp {
    let release = async {
        let mut polls = 0;
        loop {
            let waiting: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE NOT granted")
                    .fetch_one(pool)
                    .await
                    .expect("pg_locks");
            if waiting > 0 {
                break;
            }
            polls += 1;
            assert!(
                polls < 2_000,
                "the request never waited for the open transaction"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        tx.commit().await.expect("commit");
    };
    let (answer, ()) = tokio::join!(request, release);
    answer
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_app_is_not_deleted_under_a_deployment_being_recorded(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;

    // A deployment request is being recorded: its transaction is not committed yet.
    let mut tx = pool.begin().await.expect("begin");
    let by = slipway_store::deployments::Requester {
        principal: "test",
        idempotency_key: None,
        traceparent: None,
    };
    let request: slipway_core::DeploymentRequest =
        serde_json::from_value(json!({"image": "web:1"})).expect("request");
    let recorded = slipway_engine::intake::record_deployment(
        &mut tx,
        "web",
        "prod",
        request,
        slipway_core::Channel::Api,
        &by,
    )
    .await
    .expect("record");

    let deleted = while_uncommitted(&pool, tx, app.delete("/v1/apps/web")).await;
    deleted.assert_problem(409, "conflict");
    let kept = app.get(&format!("/v1/deployments/{}", recorded.id)).await;
    assert_eq!(
        kept.status,
        StatusCode::OK,
        "an accepted deployment was dropped: {}",
        kept.text
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_deployment_to_an_app_being_deleted_is_not_found(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;

    let mut tx = pool.begin().await.expect("begin");
    slipway_engine::intake::delete_app(&mut tx, "web", slipway_engine::Precondition::None)
        .await
        .expect("delete");

    let created = while_uncommitted(
        &pool,
        tx,
        app.post_json(
            "/v1/apps/web/environments/prod/deployments",
            &json!({"image": "web:1"}),
        ),
    )
    .await;
    created.assert_problem(404, "not-found");
    assert_eq!(app.count("deployments").await, 0);
}
