//! Mistakes at the HTTP level (media type, malformed JSON, body size, routes, missing
//! resources, timeouts, list parameters, headers): each is a problem document, never a 500.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use std::time::Duration;

use common::{TestApp, canary_env};
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_body_must_be_well_formed_json(pool: PgPool) {
    let app = TestApp::spawn(pool).await;

    let malformed = app
        .send(
            app.request(Method::POST, "/v1/apps")
                .header(CONTENT_TYPE, "application/json")
                .body("{\"name\": \"web\""),
        )
        .await;
    malformed.assert_problem(400, "malformed-json");

    let wrong_type = app
        .send(
            app.request(Method::POST, "/v1/apps")
                .header(CONTENT_TYPE, "text/plain")
                .body(json!({"name": "web"}).to_string()),
        )
        .await;
    wrong_type.assert_problem(415, "unsupported-media-type");

    let missing_type = app
        .send(
            app.request(Method::POST, "/v1/apps")
                .body(json!({"name": "web"}).to_string()),
        )
        .await;
    missing_type.assert_problem(415, "unsupported-media-type");

    // JSON with parameters and structured-suffix types are JSON.
    let with_charset = app
        .send(
            app.request(Method::POST, "/v1/apps")
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .body(json!({"name": "web"}).to_string()),
        )
        .await;
    assert_eq!(with_charset.status.as_u16(), 201, "{}", with_charset.text);
    assert_eq!(app.count("apps").await, 1);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_body_over_the_limit_is_refused(pool: PgPool) {
    let app = TestApp::builder(pool).body_limit(1024).start().await;
    let big = json!({"name": "web", "description": "x".repeat(2048)});
    let r = app.post_json("/v1/apps", &big).await;
    r.assert_problem(413, "payload-too-large");

    // Without a Content-Length (a streamed body) the limit holds too.
    let chunks: Vec<Result<String, std::io::Error>> = vec![
        Ok("{\"name\": \"web\", \"description\": \"".to_owned()),
        Ok("y".repeat(2048)),
        Ok("\"}".to_owned()),
    ];
    let streamed = app
        .send(
            app.request(Method::POST, "/v1/apps")
                .header(CONTENT_TYPE, "application/json")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
        )
        .await;
    streamed.assert_problem(413, "payload-too-large");

    let small = app.post_json("/v1/apps", &json!({"name": "web"})).await;
    assert_eq!(small.status.as_u16(), 201, "{}", small.text);
    assert_eq!(app.count("apps").await, 1);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn unknown_routes_and_methods_are_problems(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.get("/v1/nothing-here")
        .await
        .assert_problem(404, "not-found");
    app.get("/v2/apps").await.assert_problem(404, "not-found");
    let r = app.send(app.request(Method::DELETE, "/v1/clusters")).await;
    r.assert_problem(405, "method-not-allowed");
    assert!(r.header("allow").is_some_and(|a| a.contains("POST")));
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn unknown_deployments_are_not_found(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    for id in [uuid::Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        app.get(&format!("/v1/deployments/{id}"))
            .await
            .assert_problem(404, "not-found");
        app.get(&format!("/v1/deployments/{id}/events"))
            .await
            .assert_problem(404, "not-found");
    }
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn unknown_apps_and_environments_are_not_found(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.get("/v1/apps/nope")
        .await
        .assert_problem(404, "not-found");
    app.get("/v1/clusters/nope")
        .await
        .assert_problem(404, "not-found");
    app.patch_json("/v1/apps/nope", &json!({"description": "x"}))
        .await
        .assert_problem(404, "not-found");
    app.delete("/v1/apps/nope")
        .await
        .assert_problem(404, "not-found");
    app.get("/v1/apps/nope/environments")
        .await
        .assert_problem(404, "not-found");
    app.get("/v1/apps/nope/environments/prod")
        .await
        .assert_problem(404, "not-found");
    app.get("/v1/apps/web/environments/nope")
        .await
        .assert_problem(404, "not-found");
    app.put_json("/v1/apps/nope/environments/prod", &canary_env())
        .await
        .assert_problem(404, "not-found");
    app.post_json(
        "/v1/apps/web/environments/nope/deployments",
        &json!({"image": "web:1"}),
    )
    .await
    .assert_problem(404, "not-found");
    app.post_json(
        "/v1/apps/nope/environments/prod/deployments",
        &json!({"image": "web:1"}),
    )
    .await
    .assert_problem(404, "not-found");
    // A name that could never exist is simply not there.
    app.put_json("/v1/apps/web/environments/Not_Valid", &canary_env())
        .await
        .assert_problem(404, "not-found");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_request_that_takes_too_long_times_out(pool: PgPool) {
    // The app's pool has one connection, held here: the request cannot finish before the
    // timeout, however fast the machine is.
    let options = (*pool.connect_options()).clone();
    let small = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("pool");
    let held = small.acquire().await.expect("connection");
    let app = TestApp::builder(small.clone())
        .request_timeout(Duration::from_nanos(1))
        .start()
        .await;
    let r = app.get("/readyz").await;
    r.assert_problem(408, "request-timeout");
    drop(held);
    drop(app);
    small.close().await;
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn list_parameters_are_checked(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    for list in [
        "/v1/apps",
        "/v1/clusters",
        "/v1/deployments",
        "/v1/apps/web/environments",
    ] {
        for limit in ["0", "501", "-1", "ten", ""] {
            app.get(&format!("{list}?limit={limit}"))
                .await
                .assert_invalid_parameter("limit");
        }
        for cursor in ["garbage", "!!", "ZTE6NQ"] {
            app.get(&format!("{list}?cursor={cursor}"))
                .await
                .assert_invalid_parameter("cursor");
        }
        let ok = app.get(&format!("{list}?limit=500")).await;
        assert_eq!(ok.status.as_u16(), 200, "{list}: {}", ok.text);
    }

    // A cursor of one list is refused by another.
    for n in 1..=3 {
        app.seed_app(&format!("app-{n}")).await;
    }
    let page = app.get("/v1/apps?limit=1").await;
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("a cursor")
        .to_owned();
    app.get(&format!("/v1/deployments?cursor={cursor}"))
        .await
        .assert_invalid_parameter("cursor");
    let d = app.deploy("web", "prod", "web:1").await;
    app.get(&format!(
        "/v1/deployments/{}/events?cursor={cursor}",
        d["id"].as_str().expect("id")
    ))
    .await
    .assert_invalid_parameter("cursor");
    app.get(&format!(
        "/v1/deployments/{}/events?limit=0",
        d["id"].as_str().expect("id")
    ))
    .await
    .assert_invalid_parameter("limit");

    let r = app.get("/v1/deployments?status=bogus").await;
    r.assert_invalid_parameter("status");
    assert!(r.text.contains("bogus"));
    app.get("/v1/deployments?status=queued,bogus")
        .await
        .assert_invalid_parameter("status");
    app.get("/v1/deployments?app=Not_A_Name")
        .await
        .assert_invalid_parameter("app");
    app.get("/v1/deployments?environment=-x")
        .await
        .assert_invalid_parameter("environment");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_bad_idempotency_key_is_refused(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let long = "k".repeat(256);
    for key in ["", "with space", long.as_str()] {
        let r = app
            .post_keyed("/v1/apps", key, &json!({"name": "web"}))
            .await;
        r.assert_problem(400, "bad-request");
    }
    assert_eq!(app.count("apps").await, 0);
}
