//! The one-statement create path: plans from a cached environment stay correct when the
//! environment changes, disappears or comes back; concurrent uses of one key settle on one
//! deployment; the first answer is what a later read returns.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use common::{DEPLOYMENTS, TestApp, canary_env, deployment_request};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_changed_environment_plans_the_next_deployment(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let first = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.0").await;
    assert_eq!(first["strategy"]["type"], "canary");

    // Replaced after the create path has planned from it once: the next request sees it.
    let mut rolling = canary_env();
    rolling["strategy"] = json!({"type": "rolling"});
    let put = app
        .put_json("/v1/apps/web/environments/prod", &rolling)
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.text);
    let second = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.1").await;
    assert_eq!(second["strategy"]["type"], "rolling", "{second}");
    let frozen: serde_json::Value =
        sqlx::query_scalar("SELECT rollout->'strategy' FROM deployments WHERE id = $1::uuid")
            .bind(second["id"].as_str().expect("id"))
            .fetch_one(&app.pool)
            .await
            .expect("rollout");
    assert_eq!(
        frozen["type"], "rolling",
        "the frozen rollout spec is the new one"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_deleted_environment_is_not_found_and_a_new_one_of_that_name_is_used(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    // Every deployment of the app has to be finished before it can be deleted.
    let first = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.0").await;
    sqlx::query("UPDATE deployments SET status = 'cancelled', outcome = 'cancelled'")
        .execute(&app.pool)
        .await
        .expect("finish");
    let deleted = app.delete("/v1/apps/web").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text);

    let gone = app
        .post_keyed(DEPLOYMENTS, "after-delete", &json!({"image": "web:1"}))
        .await;
    gone.assert_problem(404, "not-found");
    assert_eq!(app.count("idempotency_keys").await, 0);

    // The same names again, with new ids: recorded against the new environment.
    app.seed_app("web").await;
    app.seed_env("web", "prod").await;
    let again = app
        .post_keyed(DEPLOYMENTS, "after-delete", &json!({"image": "web:1"}))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_ne!(again.body["id"], first["id"]);
    let (same_env,): (bool,) = sqlx::query_as(
        "SELECT d.environment_id = e.id FROM deployments d, environments e WHERE d.id = $1::uuid",
    )
    .bind(again.body["id"].as_str().expect("id"))
    .fetch_one(&app.pool)
    .await
    .expect("environment");
    assert!(same_env);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_answer_is_what_a_read_returns_and_its_first_event_is_seq_1(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let created = app
        .post_keyed(DEPLOYMENTS, "k", &deployment_request())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.content_type(), "application/json");
    let id = created.body["id"].as_str().expect("id");
    let got = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(got.body, created.body, "timestamps and all");

    let events = app.get(&format!("/v1/deployments/{id}/events")).await;
    let items = events.body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["seq"], 1);
    assert_eq!(items[0]["kind"], "queued");
    assert_eq!(items[0]["actor"], "admin");
    let (seq, key, stored_body): (i64, Option<String>, serde_json::Value) = sqlx::query_as(
        "SELECT d.last_event_seq, d.idempotency_key, k.response_body
         FROM deployments d, idempotency_keys k WHERE d.id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("row");
    assert_eq!(seq, 1, "the next event is seq 2");
    assert_eq!(key.as_deref(), Some("k"));
    assert_eq!(stored_body, created.body);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn concurrent_uses_of_a_key_wait_and_replay(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let body = deployment_request();
    let answers =
        futures::future::join_all((0..16).map(|_| app.post_keyed(DEPLOYMENTS, "same", &body)))
            .await;
    let fresh = answers
        .iter()
        .filter(|a| a.header("idempotent-replayed").is_none())
        .count();
    for a in &answers {
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert_eq!(a.body["id"], answers[0].body["id"]);
    }
    assert_eq!(fresh, 1);
    assert_eq!(app.count("deployments").await, 1);
    assert_eq!(app.count("deployment_events").await, 1);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_create_wakes_the_engines_and_the_event_streams(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .expect("listener");
    listener
        .listen_all(["slipway_wake", "slipway_events"])
        .await
        .expect("listen");
    let created = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.0").await;
    let id = created["id"].as_str().expect("id");
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let note = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification within 5 s")
            .expect("recv");
        heard.push((note.channel().to_owned(), note.payload().to_owned()));
    }
    heard.sort();
    assert_eq!(
        heard,
        [
            ("slipway_events".to_owned(), format!("{id}:1")),
            ("slipway_wake".to_owned(), id.to_owned()),
        ]
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_create_is_audited_once_with_its_request_id_and_a_replay_is_audited_too(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let before = app.count("audit_log").await;
    let created = app
        .send(
            app.request(reqwest::Method::POST, DEPLOYMENTS)
                .header("idempotency-key", "audited")
                .header("x-request-id", "req-create-1")
                .json(&deployment_request()),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    // Written by the create's own statement (not also by the layer): exactly one row.
    let rows: Vec<(String, String, String, i16, Option<String>)> = sqlx::query_as(
        "SELECT subject, method, path, status, request_id FROM audit_log ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("audit rows");
    assert_eq!(rows.len() as i64, before + 1, "{rows:?}");
    assert_eq!(
        rows.last().expect("a row"),
        &(
            "admin".to_owned(),
            "POST".to_owned(),
            DEPLOYMENTS.to_owned(),
            201,
            Some("req-create-1".to_owned())
        )
    );

    // In the deployment's own transaction: a crash cannot keep one without the other.
    let (same_tx,): (bool,) = sqlx::query_as(
        "SELECT a.xmin::text = d.xmin::text FROM audit_log a, deployments d
         WHERE a.request_id = 'req-create-1' AND d.id = $1::uuid",
    )
    .bind(created.body["id"].as_str().expect("id"))
    .fetch_one(&app.pool)
    .await
    .expect("transaction ids");
    assert!(same_tx, "the audit row and the deployment commit together");

    // A replay changes nothing but is still a request someone made: the layer audits it.
    let replay = app
        .post_keyed(DEPLOYMENTS, "audited", &deployment_request())
        .await;
    assert_eq!(replay.status, StatusCode::CREATED, "{}", replay.text);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.count("audit_log").await, before + 2);
    assert_eq!(app.count("deployments").await, 1);
}
