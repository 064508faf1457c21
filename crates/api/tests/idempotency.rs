//! `Idempotency-Key`: replays, reuse with another body, races, expiry and scope.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{DEPLOYMENTS, TestApp, deployment_request};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_replay_answers_the_stored_response(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;

    let first = app
        .post_keyed(DEPLOYMENTS, "release-1.4.2", &deployment_request())
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(first.header("idempotent-replayed").is_none());

    // Key order and whitespace do not make another request.
    let reordered = serde_json::to_string_pretty(&json!({
        "source": {"user": "alice", "repository": "acme/web", "commit": "3f2a9c1", "kind": "api"},
        "reason": "release 1.4.2",
        "image": "ghcr.io/acme/web:1.4.2"
    }))
    .expect("json");
    for body in [deployment_request().to_string(), reordered] {
        let replay = app
            .send(
                app.request(reqwest::Method::POST, DEPLOYMENTS)
                    .header("content-type", "application/json")
                    .header("idempotency-key", "release-1.4.2")
                    .body(body),
            )
            .await;
        assert_eq!(replay.status, first.status);
        assert_eq!(replay.body, first.body);
        assert_eq!(replay.header("location"), first.header("location"));
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    }

    assert_eq!(app.count("deployments").await, 1);
    assert_eq!(app.count("deployment_events").await, 1);
    let list = app.get("/v1/deployments").await;
    assert_eq!(list.body["items"].as_array().map(Vec::len), Some(1));
    let stored: Option<String> = sqlx::query_scalar("SELECT idempotency_key FROM deployments")
        .fetch_one(&app.pool)
        .await
        .expect("key");
    assert_eq!(stored.as_deref(), Some("release-1.4.2"));

    // Without a key every request is new.
    app.post_json(DEPLOYMENTS, &deployment_request()).await;
    app.post_json(DEPLOYMENTS, &deployment_request()).await;
    assert_eq!(app.count("deployments").await, 3);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn apps_and_clusters_replay_too(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let body = json!({"name": "web", "description": "storefront"});
    let first = app.post_keyed("/v1/apps", "k1", &body).await;
    let again = app.post_keyed("/v1/apps", "k1", &body).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "a replay is not a duplicate name"
    );
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), Some("\"1\""));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let cluster = json!({"name": "local", "kind": "simulated"});
    let first = app.post_keyed("/v1/clusters", "k1", &cluster).await;
    let again = app.post_keyed("/v1/clusters", "k1", &cluster).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(
        first.header("idempotent-replayed").is_none(),
        "keys are scoped per route"
    );
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.count("apps").await, 1);
    assert_eq!(app.count("clusters").await, 1);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_same_key_with_another_body_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let first = app
        .post_keyed(DEPLOYMENTS, "k", &json!({"image": "web:1"}))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = app
        .post_keyed(DEPLOYMENTS, "k", &json!({"image": "web:2"}))
        .await;
    other.assert_problem(422, "idempotency-key-reused");
    assert!(other.header("idempotent-replayed").is_none());
    assert_eq!(app.count("deployments").await, 1);
    // The original is still replayed afterwards.
    let replay = app
        .post_keyed(DEPLOYMENTS, "k", &json!({"image": "web:1"}))
        .await;
    assert_eq!(replay.body, first.body);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_failed_request_does_not_use_up_its_key(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let invalid = app
        .post_keyed(DEPLOYMENTS, "k", &json!({"image": "web"}))
        .await;
    invalid.assert_invalid_field("/image");
    let missing = app
        .post_keyed(
            "/v1/apps/web/environments/staging/deployments",
            "k",
            &json!({"image": "web:1"}),
        )
        .await;
    missing.assert_problem(404, "not-found");
    assert_eq!(app.count("idempotency_keys").await, 0);
    let ok = app
        .post_keyed(DEPLOYMENTS, "k", &json!({"image": "web:1"}))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.text);
    // A failed request does not replay either: the app exists now, the same key answers 409.
    let dup = app
        .post_keyed("/v1/apps", "dup", &json!({"name": "web"}))
        .await;
    dup.assert_problem(409, "already-exists");
    let dup_again = app
        .post_keyed("/v1/apps", "dup", &json!({"name": "web"}))
        .await;
    dup_again.assert_problem(409, "already-exists");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_key_is_free_again_as_soon_as_its_request_is_answered(pool: PgPool) {
    // A pool that is slow to take connections back: whatever a request leaves for the pool to
    // clean up (such as a transaction dropped without a rollback) outlives its answer.
    let slow_release = PgPoolOptions::new()
        .max_connections(10)
        .after_release(|_, _| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Ok(true)
            })
        })
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("pool");
    let app = TestApp::spawn(slow_release.clone()).await;
    app.seed().await;
    let first = app
        .post_keyed(DEPLOYMENTS, "k", &json!({"image": "web:1"}))
        .await;
    assert_eq!(first.status, StatusCode::CREATED);

    // Each retry is sent the moment the previous answer arrives, and is never told that the
    // key is still in flight: an answered request holds no lock on its key.
    for _ in 0..3 {
        let failed = app
            .post_keyed("/v1/apps", "dup", &json!({"name": "web"}))
            .await;
        failed.assert_problem(409, "already-exists");
        let refused = app
            .post_keyed(DEPLOYMENTS, "k", &json!({"image": "web:2"}))
            .await;
        refused.assert_problem(422, "idempotency-key-reused");
        let replay = app
            .post_keyed(DEPLOYMENTS, "k", &json!({"image": "web:1"}))
            .await;
        assert_eq!(replay.status, StatusCode::CREATED, "{}", replay.text);
        assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    }
    assert_eq!(app.count("deployments").await, 1);
    drop(app);
    slow_release.close().await;
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn concurrent_requests_with_one_key_create_one_deployment(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let body = deployment_request();
    let requests = (0..20).map(|_| app.post_keyed(DEPLOYMENTS, "one-key", &body));
    let answers = futures::future::join_all(requests).await;

    let mut ids = HashSet::new();
    let mut fresh = 0;
    for answer in &answers {
        match answer.status.as_u16() {
            201 => {
                ids.insert(answer.body["id"].as_str().expect("id").to_owned());
                if answer.header("idempotent-replayed").is_none() {
                    fresh += 1;
                }
            }
            409 => {
                answer.assert_problem(409, "idempotency-key-in-flight");
            }
            other => panic!("unexpected {other}: {}", answer.text),
        }
    }
    assert_eq!(fresh, 1, "exactly one request did the work");
    assert_eq!(ids.len(), 1, "every 201 names the same deployment: {ids:?}");
    assert_eq!(app.count("deployments").await, 1);
    assert_eq!(app.count("idempotency_keys").await, 1);

    // Once settled, the key replays.
    let after = app.post_keyed(DEPLOYMENTS, "one-key", &body).await;
    assert_eq!(after.status, StatusCode::CREATED);
    assert_eq!(after.header("idempotent-replayed"), Some("true"));
    assert!(ids.contains(after.body["id"].as_str().expect("id")));
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_expired_key_creates_anew(pool: PgPool) {
    let app = TestApp::builder(pool)
        .idempotency_ttl(Duration::from_secs(1))
        .start()
        .await;
    app.seed().await;
    let body = json!({"image": "web:1"});
    let first = app.post_keyed(DEPLOYMENTS, "k", &body).await;
    assert_eq!(first.status, StatusCode::CREATED);

    let (ttl_ok,): (bool,) = sqlx::query_as(
        "SELECT expires_at - created_at BETWEEN interval '0.9 s' AND interval '1.1 s' FROM idempotency_keys",
    )
    .fetch_one(&app.pool)
    .await
    .expect("ttl");
    assert!(ttl_ok, "the key lives for the configured TTL");
    let within = app.post_keyed(DEPLOYMENTS, "k", &body).await;
    assert_eq!(within.header("idempotent-replayed"), Some("true"));

    sqlx::query("UPDATE idempotency_keys SET expires_at = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .expect("expire the key");

    let second = app.post_keyed(DEPLOYMENTS, "k", &body).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    assert!(second.header("idempotent-replayed").is_none());
    assert_ne!(second.body["id"], first.body["id"]);
    assert_eq!(app.count("deployments").await, 2);
    assert_eq!(app.count("idempotency_keys").await, 1);

    // The renewed key replays the new deployment, with a different body refused again.
    let replay = app.post_keyed(DEPLOYMENTS, "k", &body).await;
    assert_eq!(replay.body["id"], second.body["id"]);
    app.post_keyed(DEPLOYMENTS, "k", &json!({"image": "web:2"}))
        .await
        .assert_problem(422, "idempotency-key-reused");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn keys_are_scoped_per_route(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.seed_env("web", "staging").await;
    let body = json!({"image": "web:1"});

    let prod = app.post_keyed(DEPLOYMENTS, "shared", &body).await;
    let staging = app
        .post_keyed(
            "/v1/apps/web/environments/staging/deployments",
            "shared",
            &body,
        )
        .await;
    let new_app = app
        .post_keyed("/v1/apps", "shared", &json!({"name": "api"}))
        .await;
    let cluster = app
        .post_keyed(
            "/v1/clusters",
            "shared",
            &json!({"name": "edge", "kind": "simulated"}),
        )
        .await;
    for r in [&prod, &staging, &new_app, &cluster] {
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(r.header("idempotent-replayed").is_none());
    }
    assert_ne!(prod.body["id"], staging.body["id"]);
    assert_eq!(staging.body["environment"], "staging");
    assert_eq!(app.count("deployments").await, 2);
    assert_eq!(app.count("idempotency_keys").await, 4);
}
