//! What every request passes through: request ids, compression and CORS.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use std::sync::{Arc, Mutex, PoisonError};

use common::TestApp;
use reqwest::Method;
use sqlx::PgPool;

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn request_ids_are_kept_or_made(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let given = app
        .send(
            app.request(Method::GET, "/healthz")
                .header("x-request-id", "ci-run-42"),
        )
        .await;
    assert_eq!(given.header("x-request-id"), Some("ci-run-42"));
    let made = app.get("/healthz").await;
    let id = made.header("x-request-id").unwrap_or_default();
    assert_eq!(id.len(), 36, "a UUID is made when none is sent: {id:?}");
}

/// Log output written to memory, for a test to read.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// A request's log lines carry its `x-request-id` (the caller's, or the one made for it), so
/// the id a caller reports finds the server's lines.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn request_logs_carry_the_request_id(pool: PgPool) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // Global, not this thread's: a subscriber set for one thread races with the other tests'
    // threads over the callsites' cached interest, and then sees nothing. No other test of
    // this binary sets one; their lines land here too, and are told apart by their ids.
    tracing::subscriber::set_global_default(subscriber).expect("the binary's only subscriber");
    let app = TestApp::spawn(pool).await;
    app.send(
        app.request(Method::GET, "/healthz")
            .header("x-request-id", "ci-run-77"),
    )
    .await;
    let made = app.get("/v1/apps").await;
    let made = made.header("x-request-id").expect("a made id").to_owned();

    let text = logs.text();
    for id in ["ci-run-77", made.as_str()] {
        let line = text
            .lines()
            .find(|l| l.contains("finished processing request") && l.contains(id));
        let line = line.unwrap_or_else(|| panic!("no response log line with {id}:\n{text}"));
        assert!(line.contains(&format!("request_id={id}")), "{line}");
    }
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn large_answers_are_gzipped_when_asked(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let zipped = app
        .send(
            app.request(Method::GET, "/openapi.json")
                .header("accept-encoding", "gzip"),
        )
        .await;
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    let plain = app.get("/openapi.json").await;
    assert_eq!(plain.header("content-encoding"), None);
    assert!(plain.body["openapi"].is_string());
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn cors_is_off_by_default_and_allows_configured_origins(pool: PgPool) {
    let off = TestApp::spawn(pool.clone()).await;
    let answer = off
        .send(
            off.request(Method::GET, "/v1/apps")
                .header("origin", "https://dash.example"),
        )
        .await;
    assert_eq!(answer.header("access-control-allow-origin"), None);

    let on = TestApp::builder(pool)
        .cors(&["https://dash.example"])
        .start()
        .await;
    let preflight = on
        .send(
            on.request(Method::OPTIONS, "/v1/apps")
                .header("origin", "https://dash.example")
                .header("access-control-request-method", "POST")
                .header(
                    "access-control-request-headers",
                    "content-type,idempotency-key",
                ),
        )
        .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://dash.example")
    );
    let allowed = preflight
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(allowed.contains("idempotency-key"), "{allowed}");
    let other = on
        .send(
            on.request(Method::GET, "/v1/apps")
                .header("origin", "https://evil.example"),
        )
        .await;
    assert_eq!(other.header("access-control-allow-origin"), None);
}

/// The body of `answer` as the client reads it: gunzipped when it says it is gzip.
fn decoded(encoding: Option<&str>, bytes: &[u8]) -> Result<String, String> {
    use std::io::Read;
    match encoding {
        None => String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string()),
        Some("gzip") => {
            let mut text = String::new();
            flate2::read::GzDecoder::new(bytes)
                .read_to_string(&mut text)
                .map_err(|e| format!("not gzip: {e}"))?;
            Ok(text)
        }
        Some(other) => Err(format!("unexpected content-encoding {other}")),
    }
}

/// Every answer a client asks to have gzipped decodes, errors included: the framework's own
/// refusals (a query parameter given twice is refused by the query extractor, in plain text)
/// are turned into problem documents *before* compression, never after it (which sent a
/// plain body labelled `content-encoding: gzip`).
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn gzipped_answers_decode_errors_included(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.post_json("/v1/apps", &serde_json::json!({"name": "web"}))
        .await;
    let id = "0190a4c2-0000-7000-8000-000000000000";
    for path in [
        "/v1/apps",
        "/v1/clusters",
        "/v1/apps/web/environments",
        "/v1/apps/web/role-bindings",
        "/v1/apps/web/triggers",
        "/v1/deployments",
        "/v1/audit",
        &format!("/v1/deployments/{id}/events"),
    ] {
        for query in ["", "?limit=1&limit=2", "?cursor=a&cursor=b"] {
            let answer = app
                .request(Method::GET, &format!("{path}{query}"))
                .header("accept-encoding", "gzip")
                .send()
                .await
                .expect("send");
            let status = answer.status();
            let encoding = answer
                .headers()
                .get("content-encoding")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = answer.bytes().await.expect("read the body");
            let text = decoded(encoding.as_deref(), &bytes)
                .unwrap_or_else(|e| panic!("GET {path}{query} ({status}): {e}"));
            let body: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("GET {path}{query} ({status}): {e}: {text}"));
            assert!(
                status.is_success() || body["type"].is_string(),
                "GET {path}{query} ({status}): {text}"
            );
        }
    }
}

/// A database that cannot be reached answers 503 with the `Retry-After` the document
/// promises, not a bare 503 a client cannot pace its retries by.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_unavailable_database_answers_503_with_retry_after(pool: PgPool) {
    let app = TestApp::spawn(pool.clone()).await;
    pool.close().await;
    for path in ["/v1/apps", "/readyz"] {
        let answer = app.get(path).await;
        answer.assert_problem(503, "unavailable");
        let wait = answer
            .header("retry-after")
            .and_then(|s| s.parse::<u64>().ok());
        assert!(wait.is_some_and(|s| s >= 1), "{path}: Retry-After {wait:?}");
    }
}
