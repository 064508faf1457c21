//! CI webhooks over HTTP against a real PostgreSQL: signatures checked over the raw body,
//! deliveries matched to triggers, de-duplicated by delivery id, and answered 202 / 204 / 401.

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "tests fail with a message"
)]

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Resp, TestApp};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use sqlx::PgPool;

const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
const GITHUB_SECRET: &str = "github-webhook-secret-0123456789";
const GITLAB_TOKEN: &str = "gitlab-secret-token-0123456789";
/// A Standard Webhooks secret: `whsec_` and the base64 of 24 bytes.
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SHA: &str = "3f2a9c1d0b8e7f6a5c4d3e2f1a0b9c8d7e6f5a4b";

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn github_signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&hmac(secret.as_bytes(), &[body])))
}

fn standard_signature(whsec: &str, id: &str, ts: i64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(whsec.strip_prefix("whsec_").unwrap())
        .unwrap();
    let sig = hmac(
        &key,
        &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
    );
    format!("v1,{}", STANDARD.encode(sig))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn app(pool: PgPool) -> TestApp {
    let app = TestApp::builder(pool).secrets_key(KEY).start().await;
    app.seed().await;
    app.seed_env("web", "staging").await;
    app
}

async fn trigger(app: &TestApp, body: Value) -> String {
    let r = app.post_json("/v1/apps/web/triggers", &body).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn push_trigger(app: &TestApp) -> String {
    trigger(
        app,
        json!({"source": "github", "event": "push", "repository": "acme/web", "branch": "main",
               "image": "ghcr.io/acme/web:${sha}", "environment": "prod", "secret": GITHUB_SECRET}),
    )
    .await
}

fn push_payload(branch: &str) -> Value {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": "0000000000000000000000000000000000000000",
        "after": SHA,
        "deleted": false,
        "compare": "https://github.com/acme/web/compare/abc...def",
        "repository": {"id": 1, "full_name": "acme/web", "name": "web"},
        "sender": {"login": "octocat", "id": 2},
        "head_commit": {"id": SHA, "message": "fix"}
    })
}

/// A GitHub delivery of `event` with `body`, signed with `secret`.
fn github(
    app: &TestApp,
    event: &str,
    delivery: &str,
    body: &[u8],
    secret: &str,
) -> reqwest::RequestBuilder {
    app.request(Method::POST, "/v1/webhooks/github?app=web")
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", github_signature(secret, body))
        .body(body.to_vec())
}

async fn deployments(app: &TestApp) -> i64 {
    app.count("deployments").await
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_signed_push_deploys_the_rendered_image(pool: PgPool) {
    let app = app(pool).await;
    let trigger_id = push_trigger(&app).await;
    let body = push_payload("main").to_string();
    let r = app
        .send(github(&app, "push", "d-1", body.as_bytes(), GITHUB_SECRET))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["delivery_id"], "d-1");
    let created = &r.body["deployments"][0];
    assert_eq!(created["trigger"], json!(trigger_id));
    assert_eq!(created["environment"], "prod");
    let id = created["id"].as_str().unwrap();
    let d = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(d.body["image"], json!(format!("ghcr.io/acme/web:{SHA}")));
    assert_eq!(d.body["version"], "3f2a9c1");
    assert_eq!(d.body["status"], "queued");
    assert_eq!(d.body["source"]["kind"], "github");
    assert_eq!(d.body["source"]["commit"], SHA);
    assert_eq!(d.body["source"]["repository"], "acme/web");
    assert_eq!(d.body["source"]["user"], "octocat");
    assert_eq!(
        d.body["created_by"],
        json!(format!("webhook:github/{trigger_id}"))
    );

    // A redelivery of the same id answers the same, creating nothing.
    let again = app
        .send(github(&app, "push", "d-1", body.as_bytes(), GITHUB_SECRET))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body, r.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(deployments(&app).await, 1);
    let metrics = app.get("/metrics").await.text;
    let replayed = metrics.lines().any(|l| {
        l.starts_with("slipway_webhook_deliveries_total")
            && l.contains("source=\"github\"")
            && l.contains("outcome=\"replayed\"")
    });
    assert!(replayed, "{metrics}");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn bad_signatures_missing_headers_and_tampered_bodies_are_refused(pool: PgPool) {
    let app = app(pool).await;
    push_trigger(&app).await;
    let body = push_payload("main").to_string();

    // Signed with another secret.
    app.send(github(
        &app,
        "push",
        "d-1",
        body.as_bytes(),
        "not-the-secret-0123456789",
    ))
    .await
    .assert_problem(401, "unauthorized");
    // The body changed after signing (one byte).
    let signature = github_signature(GITHUB_SECRET, body.as_bytes());
    let tampered = body.replace("octocat", "octocau");
    let r = app
        .send(
            app.request(Method::POST, "/v1/webhooks/github?app=web")
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", "d-2")
                .header("x-hub-signature-256", signature)
                .body(tampered),
        )
        .await;
    r.assert_problem(401, "unauthorized");
    // No signature at all.
    app.send(
        app.request(Method::POST, "/v1/webhooks/github?app=web")
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-3")
            .body(body.clone()),
    )
    .await
    .assert_problem(401, "unauthorized");
    // A signature of the wrong form.
    app.send(
        app.request(Method::POST, "/v1/webhooks/github?app=web")
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", "d-3")
            .header("x-hub-signature-256", "sha256=zz")
            .body(body.clone()),
    )
    .await
    .assert_problem(401, "unauthorized");
    // No delivery id: 400 naming it.
    let r = app
        .send(
            app.request(Method::POST, "/v1/webhooks/github?app=web")
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header(
                    "x-hub-signature-256",
                    github_signature(GITHUB_SECRET, body.as_bytes()),
                )
                .body(body.clone()),
        )
        .await;
    r.assert_problem(400, "bad-request");
    assert!(r.text.contains("x-github-delivery"), "{}", r.text);
    // An app without triggers, or none at all, is indistinguishable from a bad signature.
    app.seed_app("other").await;
    let r = app
        .send(
            app.request(Method::POST, "/v1/webhooks/github?app=other")
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", "d-4")
                .header(
                    "x-hub-signature-256",
                    github_signature(GITHUB_SECRET, body.as_bytes()),
                )
                .body(body.clone()),
        )
        .await;
    r.assert_problem(401, "unauthorized");
    // Without ?app= the delivery cannot be attributed.
    let r = app
        .send(
            app.request(Method::POST, "/v1/webhooks/github")
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", "d-5")
                .header(
                    "x-hub-signature-256",
                    github_signature(GITHUB_SECRET, body.as_bytes()),
                )
                .body(body.clone()),
        )
        .await;
    r.assert_invalid_parameter("app");
    assert_eq!(deployments(&app).await, 0);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn fifty_concurrent_copies_of_one_delivery_make_one_deployment(pool: PgPool) {
    let app = app(pool).await;
    push_trigger(&app).await;
    let body = push_payload("main").to_string();
    let requests = (0..50).map(|_| {
        app.send(github(
            &app,
            "push",
            "same-delivery",
            body.as_bytes(),
            GITHUB_SECRET,
        ))
    });
    let answers: Vec<Resp> = futures::future::join_all(requests).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|r| {
            assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
            r.body["deployments"][0]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(deployments(&app).await, 1);
    assert_eq!(app.count("webhook_deliveries").await, 1);
    let fresh = answers
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(fresh, 1);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn unmatched_and_ignored_deliveries_answer_204_with_the_reason(pool: PgPool) {
    let app = app(pool).await;
    push_trigger(&app).await;
    let reason = |r: &Resp| r.header("slipway-reason").unwrap_or_default().to_owned();

    let body = push_payload("feature/x").to_string();
    let r = app
        .send(github(&app, "push", "d-1", body.as_bytes(), GITHUB_SECRET))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(r.text.is_empty());
    assert!(reason(&r).contains("branch feature/x"), "{}", reason(&r));

    let mut deleted = push_payload("main");
    deleted["deleted"] = json!(true);
    let body = deleted.to_string();
    let r = app
        .send(github(&app, "push", "d-2", body.as_bytes(), GITHUB_SECRET))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(reason(&r).contains("deleted"), "{}", reason(&r));

    let body = json!({"zen": "Keep it logically awesome.", "hook_id": 1}).to_string();
    let r = app
        .send(github(&app, "ping", "d-3", body.as_bytes(), GITHUB_SECRET))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(reason(&r).contains("pong"), "{}", reason(&r));
    app.send(github(
        &app,
        "ping",
        "d-3",
        body.as_bytes(),
        "wrong-secret-0123456789",
    ))
    .await
    .assert_problem(401, "unauthorized");

    let body = json!({"action": "opened"}).to_string();
    let r = app
        .send(github(
            &app,
            "issues",
            "d-4",
            body.as_bytes(),
            GITHUB_SECRET,
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(reason(&r).contains("issues"), "{}", reason(&r));

    // Another repository's push does not match either.
    let mut other = push_payload("main");
    other["repository"]["full_name"] = json!("acme/api");
    let body = other.to_string();
    let r = app
        .send(github(&app, "push", "d-5", body.as_bytes(), GITHUB_SECRET))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(reason(&r).contains("acme/api"), "{}", reason(&r));

    // A verified delivery that is not the event's shape: 422 naming the field.
    let body =
        json!({"ref": "refs/heads/main", "repository": {"full_name": "acme/web"}}).to_string();
    app.send(github(&app, "push", "d-6", body.as_bytes(), GITHUB_SECRET))
        .await
        .assert_invalid_field("/after");
    assert_eq!(deployments(&app).await, 0);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn releases_workflow_runs_and_github_deployments(pool: PgPool) {
    let app = app(pool).await;
    trigger(
        &app,
        json!({"source": "github", "event": "release", "repository": "acme/web", "tag": "v*",
               "image": "ghcr.io/acme/web:${version}", "environment": "prod", "secret": GITHUB_SECRET}),
    )
    .await;
    trigger(
        &app,
        json!({"source": "github", "event": "workflow_run", "repository": "acme/web", "branch": "main",
               "workflow": "build", "image": "ghcr.io/acme/web:${branch}-${short_sha}",
               "environment": "staging", "secret": GITHUB_SECRET}),
    )
    .await;
    trigger(
        &app,
        json!({"source": "github", "event": "deployment", "repository": "acme/web",
               "deployment_environment": "production",
               "image": "ghcr.io/acme/web:${sha}", "environment": "prod", "secret": GITHUB_SECRET}),
    )
    .await;
    let repo = json!({"full_name": "acme/web"});

    let release = json!({"action": "published", "release": {"tag_name": "v1.4.2", "html_url": "https://github.com/acme/web/releases/v1.4.2"}, "repository": repo});
    let body = release.to_string();
    let r = app
        .send(github(
            &app,
            "release",
            "r-1",
            body.as_bytes(),
            GITHUB_SECRET,
        ))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["deployments"][0]["id"].as_str().unwrap();
    let d = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(d.body["image"], "ghcr.io/acme/web:1.4.2");
    assert_eq!(d.body["version"], "1.4.2");
    let mut draft = release.clone();
    draft["action"] = json!("created");
    let body = draft.to_string();
    let r = app
        .send(github(
            &app,
            "release",
            "r-2",
            body.as_bytes(),
            GITHUB_SECRET,
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);

    let run = |conclusion: &str| {
        json!({"action": "completed", "workflow_run": {"name": "build", "conclusion": conclusion,
            "head_branch": "main", "head_sha": SHA, "html_url": "https://github.com/acme/web/actions/runs/1"},
            "repository": repo})
        .to_string()
    };
    let body = run("failure");
    let r = app
        .send(github(
            &app,
            "workflow_run",
            "w-1",
            body.as_bytes(),
            GITHUB_SECRET,
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let body = run("success");
    let r = app
        .send(github(
            &app,
            "workflow_run",
            "w-2",
            body.as_bytes(),
            GITHUB_SECRET,
        ))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["deployments"][0]["environment"], "staging");
    let id = r.body["deployments"][0]["id"].as_str().unwrap();
    let d = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(d.body["image"], "ghcr.io/acme/web:main-3f2a9c1");

    let deployment = json!({"action": "created", "deployment": {"id": 987654, "sha": SHA, "ref": "main",
        "environment": "production"}, "repository": repo, "sender": {"login": "octocat"}});
    let body = deployment.to_string();
    let r = app
        .send(github(
            &app,
            "deployment",
            "g-1",
            body.as_bytes(),
            GITHUB_SECRET,
        ))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["deployments"][0]["id"].as_str().unwrap();
    let linked: (String, i64, String) = sqlx::query_as(
        "SELECT repository, github_deployment_id, github_environment FROM github_deployments
         WHERE deployment_id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(linked, ("acme/web".into(), 987654, "production".into()));
    // A GitHub deployment to another GitHub environment does not match.
    let mut staging = deployment.clone();
    staging["deployment"]["environment"] = json!("staging");
    let body = staging.to_string();
    let r = app
        .send(github(
            &app,
            "deployment",
            "g-2",
            body.as_bytes(),
            GITHUB_SECRET,
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.header("slipway-reason")
            .unwrap_or_default()
            .contains("staging"),
        "{:?}",
        r.headers
    );
}

fn generic_body(env: &str, image: &str) -> Value {
    json!({"app": "web", "environment": env, "image": image, "version": "1.4.2",
           "metadata": {"commit": "3f2a9c1", "repository": "acme/web", "pipeline": 42}})
}

fn generic(
    app: &TestApp,
    id: &str,
    ts: i64,
    body: &[u8],
    signature: Option<String>,
) -> reqwest::RequestBuilder {
    let mut request = app
        .request(Method::POST, "/v1/webhooks/generic?app=web")
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string());
    if let Some(sig) = signature {
        request = request.header("webhook-signature", sig);
    }
    request.body(body.to_vec())
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn generic_deliveries_are_standard_webhooks(pool: PgPool) {
    let app = app(pool).await;
    let trigger_id = trigger(
        &app,
        json!({"source": "generic", "environment": "prod", "secret": WHSEC}),
    )
    .await;
    let body = generic_body("prod", "ghcr.io/acme/web:1.4.2").to_string();
    let ts = now();
    let sig = standard_signature(WHSEC, "msg_1", ts, body.as_bytes());
    let r = app
        .send(generic(
            &app,
            "msg_1",
            ts,
            body.as_bytes(),
            Some(sig.clone()),
        ))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["deployments"][0]["trigger"], json!(trigger_id));
    let id = r.body["deployments"][0]["id"].as_str().unwrap();
    let d = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(d.body["image"], "ghcr.io/acme/web:1.4.2");
    assert_eq!(d.body["source"]["kind"], "webhook");
    assert_eq!(d.body["source"]["commit"], "3f2a9c1");
    let metadata: Value = sqlx::query_scalar("SELECT metadata FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(metadata["pipeline"], 42);
    // Replayed, not repeated.
    let again = app
        .send(generic(&app, "msg_1", ts, body.as_bytes(), Some(sig)))
        .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(deployments(&app).await, 1);

    // Stale and future timestamps (more than 5 minutes either way).
    for ts in [now() - 301, now() + 301] {
        let sig = standard_signature(WHSEC, "msg_2", ts, body.as_bytes());
        app.send(generic(&app, "msg_2", ts, body.as_bytes(), Some(sig)))
            .await
            .assert_problem(401, "unauthorized");
    }
    // Within the window is fine.
    let ts = now() - 240;
    let other = generic_body("prod", "ghcr.io/acme/web:1.4.3").to_string();
    let sig = standard_signature(WHSEC, "msg_3", ts, other.as_bytes());
    let r = app
        .send(generic(&app, "msg_3", ts, other.as_bytes(), Some(sig)))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // Body modified after signing; signature missing; signed with another secret; the
    // signature of another id.
    let ts = now();
    let sig = standard_signature(WHSEC, "msg_4", ts, body.as_bytes());
    let modified = body.replace("1.4.2", "6.6.6");
    app.send(generic(
        &app,
        "msg_4",
        ts,
        modified.as_bytes(),
        Some(sig.clone()),
    ))
    .await
    .assert_problem(401, "unauthorized");
    app.send(generic(&app, "msg_5", ts, body.as_bytes(), Some(sig)))
        .await
        .assert_problem(401, "unauthorized");
    app.send(generic(&app, "msg_4", ts, body.as_bytes(), None))
        .await
        .assert_problem(401, "unauthorized");
    let other_secret = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let sig = standard_signature(other_secret, "msg_4", ts, body.as_bytes());
    app.send(generic(&app, "msg_4", ts, body.as_bytes(), Some(sig)))
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(deployments(&app).await, 2);

    // Verified, but wrong in itself: 422 by pointer.
    let send_signed = |body: Value, id: &'static str| {
        let body = body.to_string();
        let ts = now();
        let sig = standard_signature(WHSEC, id, ts, body.as_bytes());
        app.send(generic(&app, id, ts, body.as_bytes(), Some(sig)))
    };
    let mut wrong_app = generic_body("prod", "ghcr.io/acme/web:1.4.2");
    wrong_app["app"] = json!("other");
    send_signed(wrong_app, "msg_6")
        .await
        .assert_invalid_field("/app");
    send_signed(generic_body("prod", "not an image"), "msg_7")
        .await
        .assert_invalid_field("/image");
    let mut bad_commit = generic_body("prod", "ghcr.io/acme/web:1.4.2");
    bad_commit["metadata"]["commit"] = json!("not-a-sha");
    send_signed(bad_commit, "msg_8")
        .await
        .assert_invalid_field("/metadata/commit");
    let mut unknown = generic_body("prod", "ghcr.io/acme/web:1.4.2");
    unknown["surprise"] = json!(true);
    send_signed(unknown, "msg_9")
        .await
        .assert_invalid_field("/surprise");
    // No generic trigger deploys to staging.
    let r = send_signed(generic_body("staging", "ghcr.io/acme/web:1.4.2"), "msg_10").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.header("slipway-reason")
            .unwrap_or_default()
            .contains("staging"),
        "{:?}",
        r.headers
    );
    assert_eq!(deployments(&app).await, 2);
}

fn pipeline(status: &str, git_ref: &str, tag: bool) -> Value {
    json!({"object_kind": "pipeline",
           "object_attributes": {"id": 7, "ref": git_ref, "tag": tag, "sha": SHA, "status": status,
                                 "url": "https://gitlab.com/acme/platform/web/-/pipelines/7"},
           "project": {"path_with_namespace": "acme/platform/web", "web_url": "https://gitlab.com/acme/platform/web"},
           "user": {"username": "alice"}})
}

fn gitlab(app: &TestApp, event: &str, body: &[u8]) -> reqwest::RequestBuilder {
    app.request(Method::POST, "/v1/webhooks/gitlab?app=web")
        .header("content-type", "application/json")
        .header("x-gitlab-event", event)
        .body(body.to_vec())
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn gitlab_pipelines_by_token_and_tag_pushes_by_signature(pool: PgPool) {
    let app = app(pool).await;
    trigger(
        &app,
        json!({"source": "gitlab", "event": "pipeline", "repository": "acme/platform/web", "branch": "main",
               "image": "registry.gitlab.com/acme/web:${short_sha}", "environment": "staging", "secret": GITLAB_TOKEN}),
    )
    .await;
    trigger(
        &app,
        json!({"source": "gitlab", "event": "tag_push", "repository": "acme/platform/web", "tag": "v*",
               "image": "registry.gitlab.com/acme/web:${tag}", "environment": "prod", "secret": WHSEC}),
    )
    .await;

    let body = pipeline("success", "main", false).to_string();
    let r = app
        .send(
            gitlab(&app, "Pipeline Hook", body.as_bytes())
                .header("x-gitlab-token", GITLAB_TOKEN)
                .header("idempotency-key", "gl-1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["deployments"][0]["id"].as_str().unwrap();
    let d = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(d.body["image"], "registry.gitlab.com/acme/web:3f2a9c1");
    assert_eq!(d.body["source"]["kind"], "gitlab");
    assert_eq!(d.body["source"]["user"], "alice");
    // The same Idempotency-Key again: replayed.
    let again = app
        .send(
            gitlab(&app, "Pipeline Hook", body.as_bytes())
                .header("x-gitlab-token", GITLAB_TOKEN)
                .header("idempotency-key", "gl-1"),
        )
        .await;
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // Wrong token, no token, no delivery id.
    app.send(
        gitlab(&app, "Pipeline Hook", body.as_bytes())
            .header("x-gitlab-token", "wrong-token-0123456789")
            .header("idempotency-key", "gl-2"),
    )
    .await
    .assert_problem(401, "unauthorized");
    app.send(gitlab(&app, "Pipeline Hook", body.as_bytes()).header("idempotency-key", "gl-2"))
        .await
        .assert_problem(401, "unauthorized");
    app.send(gitlab(&app, "Pipeline Hook", body.as_bytes()).header("x-gitlab-token", GITLAB_TOKEN))
        .await
        .assert_problem(400, "bad-request");
    // A failed pipeline deploys nothing.
    let failed = pipeline("failed", "main", false).to_string();
    let r = app
        .send(
            gitlab(&app, "Pipeline Hook", failed.as_bytes())
                .header("x-gitlab-token", GITLAB_TOKEN)
                .header("x-gitlab-event-uuid", "gl-3"),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(deployments(&app).await, 1);

    // Tag push signed with the signing token (Standard Webhooks).
    let tag = json!({"object_kind": "tag_push", "ref": "refs/tags/v2.0.0", "checkout_sha": SHA,
        "project": {"path_with_namespace": "acme/platform/web"}, "user_username": "bob"})
    .to_string();
    let ts = now();
    let sig = standard_signature(WHSEC, "gl-tag-1", ts, tag.as_bytes());
    let signed = |sig: String, ts: i64| {
        gitlab(&app, "Tag Push Hook", tag.as_bytes())
            .header("webhook-id", "gl-tag-1")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
    };
    let r = app.send(signed(sig, ts)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(r.body["deployments"][0]["environment"], "prod");
    let id = r.body["deployments"][0]["id"].as_str().unwrap();
    let d = app.get(&format!("/v1/deployments/{id}")).await;
    assert_eq!(d.body["image"], "registry.gitlab.com/acme/web:v2.0.0");
    assert_eq!(d.body["version"], "2.0.0");
    // A stale signed delivery, and a signing token sent as a plain token, are refused.
    let old = now() - 600;
    let sig = standard_signature(WHSEC, "gl-tag-1", old, tag.as_bytes());
    app.send(signed(sig, old))
        .await
        .assert_problem(401, "unauthorized");
    app.send(
        gitlab(&app, "Tag Push Hook", tag.as_bytes())
            .header("x-gitlab-token", WHSEC)
            .header("idempotency-key", "gl-tag-2"),
    )
    .await
    .assert_problem(401, "unauthorized");
    assert_eq!(deployments(&app).await, 2);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_trigger_whose_environment_is_gone_answers_409_and_records_nothing(pool: PgPool) {
    let app = app(pool).await;
    trigger(
        &app,
        json!({"source": "github", "event": "push", "repository": "acme/web", "branch": "main",
               "image": "ghcr.io/acme/web:${sha}", "environment": "canary", "secret": GITHUB_SECRET}),
    )
    .await;
    let body = push_payload("main").to_string();
    let r = app
        .send(github(&app, "push", "d-1", body.as_bytes(), GITHUB_SECRET))
        .await;
    r.assert_problem(409, "conflict");
    assert!(r.text.contains("canary"), "{}", r.text);
    assert_eq!(app.count("webhook_deliveries").await, 0);
    assert_eq!(deployments(&app).await, 0);
}

/// GitHub's push payload (the shape of crates/api/tests/fixtures/github/push.json) for
/// commit `sha` made at `timestamp`, pushed by `sender`.
fn push_fixture(sha: &str, timestamp: &str, sender: &str) -> Value {
    let mut push: Value =
        serde_json::from_str(include_str!("fixtures/github/push.json")).expect("the fixture");
    push["after"] = json!(sha);
    push["head_commit"]["id"] = json!(sha);
    push["head_commit"]["timestamp"] = json!(timestamp);
    push["commits"][0]["id"] = json!(sha);
    push["commits"][0]["timestamp"] = json!(timestamp);
    push["sender"]["login"] = json!(sender);
    push["pusher"]["name"] = json!(sender);
    push
}

async fn push_fixture_delivered(app: &TestApp, delivery: &str, push: &Value) -> Resp {
    let body = push.to_string();
    app.send(github(
        app,
        "push",
        delivery,
        body.as_bytes(),
        GITHUB_SECRET,
    ))
    .await
}

/// Marks a deployment as the one serving its environment (as the engine does when it ends
/// promoted).
async fn serving(app: &TestApp, id: &str) {
    sqlx::query(
        "UPDATE deployments SET status = 'succeeded', outcome = 'promoted',
             serving_health = 'healthy', serving_version = version
         WHERE id = $1::uuid",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
}

/// `user`'s approval of deployment `id`.
async fn approve_as(app: &TestApp, user: &str, id: &str) -> Resp {
    app.as_user(user, &[])
        .post_json(&format!("/v1/deployments/{id}/approve"), &json!({}))
        .await
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_pusher_cannot_approve_their_own_push_where_a_distinct_approver_is_required(
    pool: PgPool,
) {
    let app = TestApp::builder(pool)
        .secrets_key(KEY)
        .auth(common::test_auth())
        .start()
        .await;
    app.seed().await;
    push_trigger(&app).await;
    app.bind("web", "octocat", "approver", None).await;
    app.bind("web", "hubot", "approver", None).await;
    // prod requires approval by someone other than the requester (common::canary_env).
    let push = push_fixture(SHA, "2026-12-08T10:15:03+01:00", "octocat");
    let r = push_fixture_delivered(&app, "d-1", &push).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["deployments"][0]["id"].as_str().unwrap().to_owned();
    let own = approve_as(&app, "octocat", &id).await;
    own.assert_problem(403, "forbidden");
    assert!(
        own.text.contains("other than the requester"),
        "{}",
        own.text
    );
    // Someone else passes authorization (the queued deployment is not awaiting approval yet).
    approve_as(&app, "hubot", &id)
        .await
        .assert_problem(409, "conflict");

    // GitLab's `user_username` and a generic delivery's `metadata.user` are requesters too.
    trigger(
        &app,
        json!({"source": "gitlab", "event": "tag_push", "repository": "acme/platform/web", "tag": "v*",
               "image": "registry.gitlab.com/acme/web:${tag}", "environment": "prod", "secret": GITLAB_TOKEN}),
    )
    .await;
    let tag = json!({"object_kind": "tag_push", "ref": "refs/tags/v2.0.0", "before": "0000000000000000000000000000000000000000",
        "after": SHA, "checkout_sha": SHA, "user_username": "hubot", "user_name": "Hubot",
        "project": {"path_with_namespace": "acme/platform/web", "web_url": "https://gitlab.com/acme/platform/web"},
        "commits": [], "total_commits_count": 0})
    .to_string();
    let r = app
        .send(
            gitlab(&app, "Tag Push Hook", tag.as_bytes())
                .header("x-gitlab-token", GITLAB_TOKEN)
                .header("x-gitlab-event-uuid", "gl-1"),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["deployments"][0]["id"].as_str().unwrap();
    approve_as(&app, "hubot", id)
        .await
        .assert_problem(403, "forbidden");

    trigger(
        &app,
        json!({"source": "generic", "environment": "prod", "secret": WHSEC}),
    )
    .await;
    let mut body = generic_body("prod", "ghcr.io/acme/web:1.4.2");
    body["metadata"]["user"] = json!("octocat");
    let body = body.to_string();
    let ts = now();
    let sig = standard_signature(WHSEC, "msg_1", ts, body.as_bytes());
    let r = app
        .send(generic(&app, "msg_1", ts, body.as_bytes(), Some(sig)))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let id = r.body["deployments"][0]["id"].as_str().unwrap();
    approve_as(&app, "octocat", id)
        .await
        .assert_problem(403, "forbidden");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_captured_delivery_resent_under_a_new_delivery_id_deploys_nothing(pool: PgPool) {
    let app = app(pool).await;
    push_trigger(&app).await;
    let push = push_fixture(SHA, "2026-12-08T10:15:03+01:00", "octocat");
    let first = push_fixture_delivered(&app, "d-1", &push).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.text);
    // X-GitHub-Delivery is not signed: the same signed body under another id is the same
    // delivery, answered as before.
    let again = push_fixture_delivered(&app, "d-2-made-up", &push).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(deployments(&app).await, 1);
    // Concurrent copies under fresh ids make one deployment too.
    let mut other = push_fixture(
        "4e3b0d2e1c9f8a7b6d5e4f3a2b1c0d9e8f7a6b5c",
        "2026-12-08T11:00:00+01:00",
        "octocat",
    );
    other["before"] = json!(SHA);
    let copies = (0..10).map(|i| {
        let other = &other;
        let app = &app;
        async move { push_fixture_delivered(app, &format!("copy-{i}"), other).await }
    });
    let answers: Vec<Resp> = futures::future::join_all(copies).await;
    for r in &answers {
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    }
    assert_eq!(deployments(&app).await, 2);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_push_older_than_the_serving_deployment_needs_a_human(pool: PgPool) {
    let app = app(pool).await;
    let strict = push_trigger(&app).await;
    // A trigger that allows older commits (deliberate downgrades), to staging.
    let allowing = trigger(
        &app,
        json!({"source": "github", "event": "push", "repository": "acme/web", "branch": "main",
               "image": "ghcr.io/acme/web:${sha}", "environment": "staging", "secret": GITHUB_SECRET,
               "allow_older": true}),
    )
    .await;
    let got = app.get(&format!("/v1/apps/web/triggers/{allowing}")).await;
    assert_eq!(got.body["allow_older"], true);
    let got = app.get(&format!("/v1/apps/web/triggers/{strict}")).await;
    assert_eq!(got.body["allow_older"], false);
    let old_sha = "1111111111111111111111111111111111111111";
    let new_sha = "2222222222222222222222222222222222222222";
    // The newer commit is deployed by both and serves in both environments.
    let newer = push_fixture(new_sha, "2026-12-08T12:00:00+01:00", "octocat");
    let r = push_fixture_delivered(&app, "d-new", &newer).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    for d in r.body["deployments"].as_array().unwrap() {
        serving(&app, d["id"].as_str().unwrap()).await;
    }
    // A captured delivery of an older commit (its own, different body) arrives: the strict
    // trigger refuses it, the allowing one deploys it.
    let older = push_fixture(old_sha, "2026-12-01T09:00:00+01:00", "octocat");
    let r = push_fixture_delivered(&app, "d-old", &older).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let made = r.body["deployments"].as_array().unwrap();
    assert_eq!(made.len(), 1, "{}", r.text);
    assert_eq!(made[0]["trigger"], json!(allowing));
    assert_eq!(deployments(&app).await, 3);
    // Without the allowing trigger, nothing is deployed and the reason says why.
    app.delete(&format!("/v1/apps/web/triggers/{allowing}"))
        .await;
    let even_older = push_fixture(
        "0000000000000000000000000000000000000001",
        "2026-11-30T09:00:00+01:00",
        "octocat",
    );
    let r = push_fixture_delivered(&app, "d-older", &even_older).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let reason = r.header("slipway-reason").unwrap_or_default().to_owned();
    assert!(reason.contains("older"), "{reason}");
    assert_eq!(deployments(&app).await, 3);
    assert_eq!(app.count("webhook_deliveries").await, 2);
    // A newer commit still deploys.
    let newest = push_fixture(
        "3333333333333333333333333333333333333333",
        "2026-12-08T13:00:00+01:00",
        "octocat",
    );
    let r = push_fixture_delivered(&app, "d-newest", &newest).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    // allow_older is only for the events whose commit has a time to compare.
    app.post_json(
        "/v1/apps/web/triggers",
        &json!({"source": "generic", "environment": "prod", "secret": WHSEC, "allow_older": true}),
    )
    .await
    .assert_invalid_field("/allow_older");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_timestamp_at_the_edge_of_i64_is_refused_not_a_crash(pool: PgPool) {
    let app = app(pool).await;
    trigger(
        &app,
        json!({"source": "generic", "environment": "prod", "secret": WHSEC}),
    )
    .await;
    let body = generic_body("prod", "ghcr.io/acme/web:1.4.2").to_string();
    for ts in [i64::MIN, i64::MAX] {
        let sig = standard_signature(WHSEC, "msg_1", ts, body.as_bytes());
        app.send(generic(&app, "msg_1", ts, body.as_bytes(), Some(sig)))
            .await
            .assert_problem(401, "unauthorized");
    }
    assert_eq!(deployments(&app).await, 0);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn deliveries_are_rate_limited_per_app_before_any_signature_is_checked(pool: PgPool) {
    let app = TestApp::builder(pool)
        .secrets_key(KEY)
        .webhook_rate_limit(1, 2)
        .start()
        .await;
    app.seed().await;
    app.seed_app("other").await;
    push_trigger(&app).await;
    let body = push_payload("main").to_string();
    let unsigned = |app_name: &str, delivery: &str| {
        app.request(Method::POST, &format!("/v1/webhooks/github?app={app_name}"))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", "sha256=00")
            .body(body.clone())
    };
    for i in 0..2 {
        app.send(unsigned("web", &format!("d-{i}")))
            .await
            .assert_problem(401, "unauthorized");
    }
    // The app's burst is spent: refused before its secrets are even read.
    let r = app.send(unsigned("web", "d-3")).await;
    r.assert_problem(429, "too-many-requests");
    assert!(r.header("retry-after").is_some(), "{:?}", r.headers);
    let signed = app
        .send(github(&app, "push", "d-4", body.as_bytes(), GITHUB_SECRET))
        .await;
    signed.assert_problem(429, "too-many-requests");
    // Another app has its own budget.
    app.send(unsigned("other", "d-5"))
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(deployments(&app).await, 0);
}
