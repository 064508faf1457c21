//! Live events over Server-Sent Events, and commands as the API takes them (the engine that
//! applies commands is tested in `slipway-engine`).

#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use std::time::Duration;

use common::TestApp;
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use slipway_store::events::{self, NewEvent};
use sqlx::PgPool;
use uuid::Uuid;

/// One parsed SSE frame.
#[derive(Debug, Default)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: String,
}

/// Reads frames from an open event stream (keep-alive comments skipped).
struct Reader {
    bytes: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl Reader {
    async fn open(app: &TestApp, path: &str, last_event_id: Option<&str>) -> Reader {
        let mut request = app
            .request(Method::GET, path)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.expect("open the stream");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Reader {
            bytes: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    /// The next event, failing the test after 10 s.
    async fn next(&mut self) -> Frame {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let raw: String = self.buffer.drain(..end + 2).collect();
                    let mut frame = Frame::default();
                    for line in raw.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            frame.id = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("event:") {
                            frame.event = Some(v.trim().to_owned());
                        } else if let Some(v) = line.strip_prefix("data:") {
                            frame.data.push_str(v.trim_start());
                        }
                    }
                    if frame.id.is_some() {
                        return frame;
                    }
                    continue;
                }
                let chunk = self
                    .bytes
                    .next()
                    .await
                    .expect("stream open")
                    .expect("chunk");
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .expect("an event within 10 s")
    }
}

impl Reader {
    /// Reads until the server ends the stream, failing the test if it is still open after
    /// `within`; the events it sent before are returned.
    async fn ends_within(&mut self, within: Duration) -> Vec<String> {
        tokio::time::timeout(within, async {
            // Until the server closes the response (a reset counts as closed too).
            while let Some(Ok(chunk)) = self.bytes.next().await {
                self.buffer.push_str(&String::from_utf8_lossy(&chunk));
            }
            self.buffer
                .lines()
                .filter_map(|l| l.strip_prefix("data:").map(str::to_owned))
                .collect()
        })
        .await
        .unwrap_or_else(|_| panic!("the stream was still open after {within:?}"))
    }
}

/// An HS256 token of the test secret for `sub` that expired `ago` seconds ago, still accepted
/// by the verifier's 60 s of leeway for `60 - ago` seconds.
fn expiring_token(sub: &str, ago: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": sub, "iss": "slipway", "aud": "slipway", "iat": now - 3600,
                        "nbf": now - 3600, "exp": now - ago});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::SECRET).unwrap(),
    )
    .unwrap()
}

async fn note(pool: &PgPool, deployment: Uuid, message: &str) -> i64 {
    let mut conn = pool.acquire().await.unwrap();
    let event = NewEvent {
        kind: slipway_core::EventKind::StepCompleted,
        actor: "test",
        message: message.to_owned(),
        data: json!({}),
    };
    events::append(&mut conn, deployment, &event).await.unwrap()
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_deployment_stream_replays_then_follows_and_resumes(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;
    let deployment = app.deploy("web", "prod", "ghcr.io/acme/web:1.4.2").await;
    let id: Uuid = deployment["id"].as_str().unwrap().parse().unwrap();
    let path = format!("/v1/deployments/{id}/events");

    let mut stream = Reader::open(&app, &path, None).await;
    let first = stream.next().await;
    assert_eq!(first.id.as_deref(), Some("1"));
    assert_eq!(first.event.as_deref(), Some("queued"));
    let body: serde_json::Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(body["seq"], 1);
    assert_eq!(body["deployment_id"], id.to_string());

    // A new event reaches the open stream (woken by NOTIFY).
    assert_eq!(note(&pool, id, "second").await, 2);
    let second = stream.next().await;
    assert_eq!(second.id.as_deref(), Some("2"));
    assert!(second.data.contains("second"));

    // A reconnecting client resumes after the last id it saw.
    note(&pool, id, "third").await;
    let mut resumed = Reader::open(&app, &path, Some("2")).await;
    let third = resumed.next().await;
    assert_eq!(third.id.as_deref(), Some("3"));
    assert!(third.data.contains("third"));
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn stream_errors_are_problems(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let missing = app
        .send(
            app.request(
                Method::GET,
                &format!("/v1/deployments/{}/events", Uuid::new_v4()),
            )
            .header("accept", "text/event-stream"),
        )
        .await;
    missing.assert_problem(404, "not-found");
    let bad_resume = app
        .send(
            app.request(Method::GET, "/v1/events")
                .header("accept", "text/event-stream")
                .header("last-event-id", "yesterday"),
        )
        .await;
    bad_resume.assert_problem(400, "bad-request");
    let not_acceptable = app
        .send(
            app.request(
                Method::GET,
                &format!("/v1/deployments/{}/events", Uuid::new_v4()),
            )
            .header("accept", "text/html"),
        )
        .await;
    not_acceptable.assert_problem(406, "not-acceptable");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_global_feed_starts_now_and_carries_every_deployment(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;
    let old = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.0").await;
    let mut feed = Reader::open(&app, "/v1/events", None).await;
    let new = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.1").await;
    let frame = feed.next().await;
    let body: serde_json::Value = serde_json::from_str(&frame.data).unwrap();
    assert_eq!(
        body["deployment_id"], new["id"],
        "history before the connection is not replayed"
    );
    assert_ne!(body["deployment_id"], old["id"]);

    // Resuming from a feed position replays what came after it, across deployments.
    let mut resumed = Reader::open(&app, "/v1/events", Some("0")).await;
    let first = resumed.next().await;
    let body: serde_json::Value = serde_json::from_str(&first.data).unwrap();
    assert_eq!(body["deployment_id"], old["id"]);
    let second = resumed.next().await;
    assert_eq!(second.id, frame.id);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn commands_are_recorded_or_refused_by_state(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let deployment = app.deploy("web", "prod", "ghcr.io/acme/web:1.4.2").await;
    let id = deployment["id"].as_str().unwrap();

    // A queued deployment can only be aborted; the refusal names its state.
    let promote = app
        .post_json(&format!("/v1/deployments/{id}/promote"), &json!({}))
        .await;
    promote.assert_problem(409, "conflict");
    assert!(
        promote.body["detail"].as_str().unwrap().contains("queued"),
        "{}",
        promote.text
    );

    let abort = app
        .send(app.request(Method::POST, &format!("/v1/deployments/{id}/abort")))
        .await;
    assert_eq!(abort.status, StatusCode::ACCEPTED, "{}", abort.text);
    assert!(abort.body["command_id"].is_string());
    assert_eq!(abort.body["deployment"]["id"], id);
    assert_eq!(app.count("commands").await, 1);

    // Replaying a keyed command answers the stored response and records nothing new.
    let path = format!("/v1/deployments/{id}/abort");
    let body = json!({"reason": "wrong build"});
    let first = app.post_keyed(&path, "abort-1", &body).await;
    let again = app.post_keyed(&path, "abort-1", &body).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["command_id"], first.body["command_id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(app.count("commands").await, 2);

    app.post_json(&format!("/v1/deployments/{id}/launch"), &json!({}))
        .await
        .assert_problem(404, "not-found");
    app.post_json(
        &format!("/v1/deployments/{}/abort", Uuid::new_v4()),
        &json!({}),
    )
    .await
    .assert_problem(404, "not-found");
    app.post_json(&path, &json!({"reason": "x", "force": true}))
        .await
        .assert_invalid_field("/force");
    app.post_json(&path, &json!({"reason": "x".repeat(1001)}))
        .await
        .assert_invalid_field("/reason");
}

/// A deployment's stream is authorized for as long as it is open: removing the reader's role
/// binding ends it (and a new one is refused).
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_deployment_stream_ends_when_the_readers_binding_is_removed(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;
    let deployment = app.deploy("web", "prod", "ghcr.io/acme/web:1.4.2").await;
    let id: Uuid = deployment["id"].as_str().unwrap().parse().unwrap();
    let binding = app.bind("web", "vera", "viewer", None).await;
    let vera = app.as_user("vera", &[]);
    let path = format!("/v1/deployments/{id}/events");
    let mut stream = Reader::open(&vera, &path, None).await;
    assert_eq!(stream.next().await.id.as_deref(), Some("1"));

    let removed = app
        .delete(&format!(
            "/v1/apps/web/role-bindings/{}",
            binding["id"].as_str().unwrap()
        ))
        .await;
    assert!(removed.status.is_success(), "{}", removed.text);
    note(&pool, id, "after the binding was removed").await;
    let sent = stream.ends_within(Duration::from_secs(15)).await;
    assert!(
        sent.iter()
            .all(|d| !d.contains("after the binding was removed")),
        "an event reached a reader without the right to it: {sent:?}"
    );
    vera.send(
        vera.request(Method::GET, &path)
            .header("accept", "text/event-stream"),
    )
    .await
    .assert_problem(404, "not-found");
}

/// A stream ends when its token stops being accepted, the moment a new request with it is
/// refused: the deployment's stream and the feed alike.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn streams_end_when_the_token_stops_being_accepted(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;
    let deployment = app.deploy("web", "prod", "ghcr.io/acme/web:1.4.2").await;
    let id = deployment["id"].as_str().unwrap();
    app.bind("web", "vera", "viewer", None).await;
    // Expired 54 s ago: accepted for about 6 s more.
    let vera = app.with_token(Some(&expiring_token("vera", 54)));
    let opened = std::time::Instant::now();
    let mut stream = Reader::open(&vera, &format!("/v1/deployments/{id}/events"), None).await;
    let mut feed = Reader::open(&vera, "/v1/events", None).await;
    assert_eq!(stream.next().await.id.as_deref(), Some("1"));
    stream.ends_within(Duration::from_secs(20)).await;
    feed.ends_within(Duration::from_secs(5)).await;
    assert!(
        opened.elapsed() >= Duration::from_secs(3),
        "ended before the token's time: {:?}",
        opened.elapsed()
    );
    vera.get("/v1/apps/web")
        .await
        .assert_problem(401, "unauthorized");
}

/// The feed reads with the caller's bindings as they are at each read, not as they were at
/// connect time.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_feed_follows_the_callers_current_bindings(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    app.seed().await;
    app.seed_app("shop").await;
    app.seed_env("shop", "prod").await;
    let web = app.deploy("web", "prod", "ghcr.io/acme/web:1.0.0").await;
    let shop = app.deploy("shop", "prod", "ghcr.io/acme/shop:1.0.0").await;
    let web: Uuid = web["id"].as_str().unwrap().parse().unwrap();
    let shop: Uuid = shop["id"].as_str().unwrap().parse().unwrap();
    let binding = app.bind("web", "vic", "viewer", None).await;
    let vic = app.as_user("vic", &[]);
    let mut feed = Reader::open(&vic, "/v1/events", None).await;
    note(&pool, web, "web while bound").await;
    assert!(feed.next().await.data.contains("web while bound"));

    app.delete(&format!(
        "/v1/apps/web/role-bindings/{}",
        binding["id"].as_str().unwrap()
    ))
    .await;
    app.bind("shop", "vic", "viewer", None).await;
    note(&pool, web, "web after the binding went").await;
    note(&pool, shop, "shop once bound").await;
    let next = feed.next().await;
    assert!(next.data.contains("shop once bound"), "{next:?}");
}
