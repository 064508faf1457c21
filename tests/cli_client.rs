//! Black-box tests of the client commands (`slipway deploy`, `status`, commands, `events`,
//! lists): the built binary runs as a subprocess against the real API and engine, started
//! in-process on a per-test PostgreSQL database with a simulated cluster whose faults the
//! test controls. Exit codes are what a pipeline gates on, so every test asserts them.
#![expect(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failed expectation is the test failing"
)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::{Value, json};
use slipway_cluster::{Fault, FaultScope, SimCluster, SimSettings, SystemClock};
use slipway_core::rollout::Release;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_slipway");

/// The test servers verify HS256 tokens signed with this secret; `ci` is their bootstrap admin.
const SECRET: &str = "cli-client-tests-secret-0123456789abcdef";

/// A token the test servers accept, for `sub` (and `groups`).
fn token(sub: &str, groups: &[String]) -> String {
    slipway_api::auth::issue_hs256(
        SECRET.as_bytes(),
        "slipway",
        "slipway",
        sub,
        groups,
        Duration::from_secs(600),
    )
    .expect("issue a token")
}

/// What a run of the binary left behind.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}): {self:?}"))
    }

    #[track_caller]
    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "exit code of {self:#?}");
        self
    }
}

/// Runs `slipway args…` as the bootstrap admin `ci` (through `SLIPWAY_TOKEN`), with a clean
/// environment otherwise (no stray SLIPWAY_* from the shell).
async fn slipway(args: &[&str]) -> Run {
    slipway_with(args, Some(&token("ci", &[]))).await
}

/// Runs `slipway args…` with `SLIPWAY_TOKEN` set to `token`, or unset.
async fn slipway_with(args: &[&str], token: Option<&str>) -> Run {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("SLIPWAY_") {
            cmd.env_remove(key);
        }
    }
    if let Some(token) = token {
        cmd.env("SLIPWAY_TOKEN", token);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("slipway {args:?} did not finish within 120 s"))
        .expect("run slipway");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The API and the engine of one test, on a loopback port, over the seeded demo app
/// (`demo`: `staging` rolling in namespace `demo-staging`, `prod` canary in `demo`).
struct Server {
    url: String,
    sim: Arc<SimCluster>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Sends the shutdown signal; true when the server stopped within `limit`.
    async fn stop_within(&mut self, limit: Duration) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(limit, task).await.is_ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(pool: PgPool) -> Server {
    let sim = Arc::new(SimCluster::new(Arc::new(SystemClock)));
    serve_at(pool, sim, "127.0.0.1:0").await
}

/// A server at `addr` driving `sim` (a restarted server keeps its simulated cluster).
async fn serve_at(pool: PgPool, sim: Arc<SimCluster>, addr: &str) -> Server {
    slipway::demo::seed(&pool).await.expect("seed the demo");
    let drivers = slipway_engine::Drivers::new(sim.clone());
    let listener = TcpListener::bind(addr).await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let base = slipway::config::Config::default();
    let config = slipway::config::Config {
        engine: slipway::config::EngineConfig {
            poll_interval_ms: 200,
            ..base.engine
        },
        auth: slipway::config::AuthConfig {
            jwt_secret: Some(slipway::config::Secret::new(SECRET)),
            bootstrap_admins: vec!["ci".to_owned()],
            ..base.auth
        },
        ..base
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        slipway::startup::run(Some(listener), true, pool, &config, drivers, shutdown)
            .await
            .expect("the server runs");
    });
    Server {
        url,
        sim,
        stop: Some(stop),
        task: Some(task),
    }
}

fn release(image: &str, version: &str) -> Release {
    Release {
        image: image.into(),
        version: version.into(),
        ..Release::default()
    }
}

/// Polls `status -o json` until `done` holds (at most 30 s).
async fn status_until(url: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..150 {
        let run = slipway(&["status", id, "--url", url, "-o", "json"]).await;
        let d = run.json();
        if done(&d) {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("deployment {id} never became {what}");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn deploy_wait_exits_0_on_success_and_1_on_rollback(pool: PgPool) {
    let server = serve(pool).await;
    let url = server.url.as_str();

    let run = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "staging",
        "--image",
        "ghcr.io/acme/web:1.0.0",
        "--reason",
        "first",
        "--commit",
        "3f2a9c1",
        "--wait",
        "--timeout",
        "60s",
        "--output",
        "json",
    ])
    .await;
    let d = run.expect_code(0).json();
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["version"], "1.0.0");
    assert_eq!(d["serving"]["version"], "1.0.0");
    assert_eq!(d["source"]["kind"], "cli");
    assert_eq!(d["source"]["commit"], "3f2a9c1");
    assert_eq!(d["request_reason"], "first");

    // 2.0.0 never becomes ready; the workload gives up after 2 s and the engine rolls back.
    server.sim.set_settings(SimSettings {
        progress_deadline: Duration::from_secs(2),
        ..SimSettings::default()
    });
    server.sim.faults().set(
        FaultScope::Target {
            namespace: "demo-staging".into(),
            workload: "web".into(),
        },
        Fault::NeverReady(release("ghcr.io/acme/web:2.0.0", "2.0.0")),
    );
    let run = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "staging",
        "--image",
        "ghcr.io/acme/web:2.0.0",
        "--wait",
        "--timeout",
        "60s",
    ])
    .await;
    run.expect_code(1);
    // Not a terminal: plain lines, one per event, and the ending last.
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("deployment ") && lines[0].contains(" queued: demo/staging"),
        "{run:?}"
    );
    assert!(
        !run.stdout.contains('\r'),
        "no progress line redrawn into a file: {run:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("rollback_started")),
        "{run:?}"
    );
    let last = lines.last().expect("a last line");
    assert!(last.contains(" rolled_back: demo/staging 2.0.0"), "{run:?}");
    assert!(last.contains("progress_deadline_exceeded"), "{run:?}");
    assert!(
        last.contains("demo/staging serves 1.0.0 (healthy)"),
        "{run:?}"
    );

    // `status` without --watch also tells how it ended.
    let id = lines[0].split_whitespace().nth(1).expect("an id");
    let run = slipway(&["status", id, "--url", url, "-o", "json"]).await;
    let d = run.expect_code(1).json();
    assert_eq!(d["status"], "rolled_back");
    assert_eq!(d["reason"]["code"], "progress_deadline_exceeded");

    // Fixed: `retry --wait` waits for the new attempt, not the old attempt's end.
    server.sim.faults().clear_all();
    let run = slipway(&[
        "retry",
        id,
        "--wait",
        "--timeout",
        "60s",
        "--url",
        url,
        "-o",
        "json",
    ])
    .await;
    let d = run.expect_code(0).json();
    assert_eq!(d["status"], "succeeded", "{d}");
    assert_eq!(d["serving"]["version"], "2.0.0");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn status_lists_and_events_print_json(pool: PgPool) {
    let server = serve(pool).await;
    let url = server.url.as_str();

    let run = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "staging",
        "--image",
        "ghcr.io/acme/web:1.0.0",
        "-o",
        "json",
    ])
    .await;
    let created = run.expect_code(0).json();
    assert_eq!(created["status"], "queued");
    let id = created["id"].as_str().expect("id").to_owned();

    let run = slipway(&[
        "status",
        &id,
        "--watch",
        "--timeout",
        "60s",
        "--url",
        url,
        "-o",
        "json",
    ])
    .await;
    let d = run.expect_code(0).json();
    assert_eq!(d["id"], json!(id));
    assert_eq!(d["status"], "succeeded");

    let run = slipway(&["status", &id, "--url", url, "-o", "json"]).await;
    assert_eq!(run.expect_code(0).json()["status"], "succeeded");

    // Events: the whole log as one array, and followed live as JSON lines until the end.
    let run = slipway(&["events", &id, "--url", url, "-o", "json"]).await;
    let events = run.expect_code(0).json();
    let events = events.as_array().expect("an array of events");
    assert_eq!(events[0]["kind"], "queued");
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let run = slipway(&["events", &id, "--follow", "--url", url, "-o", "json"]).await;
    run.expect_code(0);
    let followed: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON event"))
        .collect();
    assert_eq!(
        &followed, events,
        "following a finished deployment prints its log"
    );

    // More deployments, to walk pages of two.
    let mut ids = vec![id.clone()];
    for v in ["1.1.0", "1.2.0", "1.3.0", "1.4.0"] {
        let image = format!("ghcr.io/acme/web:{v}");
        let run = slipway(&[
            "deploy", "--url", url, "--app", "demo", "--env", "staging", "--image", &image, "-o",
            "json",
        ])
        .await;
        ids.push(run.expect_code(0).json()["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let run = slipway(&[
        "deployments",
        "list",
        "--app",
        "demo",
        "--page-size",
        "2",
        "--url",
        url,
        "-o",
        "json",
    ])
    .await;
    let listed: Vec<String> = run
        .expect_code(0)
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, ids, "every deployment, newest first, across pages");
    let run = slipway(&[
        "deployments",
        "list",
        "--limit",
        "3",
        "--page-size",
        "2",
        "--url",
        url,
        "-o",
        "json",
    ])
    .await;
    assert_eq!(run.expect_code(0).json().as_array().unwrap().len(), 3);
    let run = slipway(&[
        "deployments",
        "list",
        "--env",
        "prod",
        "--url",
        url,
        "-o",
        "json",
    ])
    .await;
    assert_eq!(run.expect_code(0).json(), json!([]));

    let run = slipway(&["apps", "list", "--url", url, "-o", "json"]).await;
    let apps = run.expect_code(0).json();
    assert_eq!(apps.as_array().unwrap().len(), 1);
    assert_eq!(apps[0]["name"], "demo");
    let run = slipway(&["envs", "list", "--app", "demo", "--url", url, "-o", "json"]).await;
    let envs = run.expect_code(0).json();
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["prod", "staging"]);

    // For people: tables with a header.
    let run = slipway(&["envs", "list", "--app", "demo", "--url", url]).await;
    let lines: Vec<&str> = run.expect_code(0).stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STRATEGY"),
        "{run:?}"
    );
    assert!(
        lines[1].starts_with("prod") && lines[1].contains("canary"),
        "{run:?}"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn waiting_on_a_paused_canary_times_out_with_3_until_promoted(pool: PgPool) {
    let server = serve(pool).await;
    let url = server.url.as_str();
    let first = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "prod",
        "--image",
        "ghcr.io/acme/web:1.0.0",
        "--wait",
        "--timeout",
        "60s",
    ])
    .await;
    first.expect_code(0);

    // A canary that stops at 50% until promoted, given from a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("strategy.json");
    std::fs::write(
        &file,
        r#"{"type": "canary", "steps": [{"set_weight": 50}, {"pause": {}}], "traffic": {"router": "replicas"}}"#,
    )
    .expect("write the strategy");
    let strategy = format!("@{}", file.display());
    let run = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "prod",
        "--image",
        "ghcr.io/acme/web:1.1.0",
        "--strategy",
        &strategy,
        "-o",
        "json",
    ])
    .await;
    let created = run.expect_code(0).json();
    assert_eq!(created["strategy"]["steps"][0]["set_weight"], 50);
    let id = created["id"].as_str().unwrap().to_owned();
    status_until(url, &id, "paused", |d| d["status"] == "paused").await;

    let run = slipway(&["status", &id, "--watch", "--timeout", "2s", "--url", url]).await;
    run.expect_code(3);
    assert!(run.stderr.contains("timed out after 2s"), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("awaiting promotion: slipway promote {id}")),
        "the wait says what it waits for: {run:?}"
    );
    let run = slipway(&[
        "events",
        &id,
        "--follow",
        "--timeout",
        "2s",
        "--url",
        url,
        "-o",
        "json",
    ])
    .await;
    run.expect_code(3);
    assert!(
        run.stdout.lines().count() >= 2,
        "events so far, as JSON lines: {run:?}"
    );

    let run = slipway(&[
        "promote",
        &id,
        "--reason",
        "looks good",
        "--url",
        url,
        "-o",
        "json",
    ])
    .await;
    let accepted = run.expect_code(0).json();
    assert!(accepted["command_id"].is_string(), "{accepted}");
    assert_eq!(accepted["deployment"]["id"], json!(id));

    let run = slipway(&["status", &id, "--watch", "--timeout", "60s", "--url", url]).await;
    run.expect_code(0);
    assert!(run.stdout.contains("succeeded"), "{run:?}");
    assert!(
        run.stdout.contains("demo/prod serves 1.1.0 (healthy)"),
        "{run:?}"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn bad_input_exits_2_with_the_problem_readable(pool: PgPool) {
    let server = serve(pool).await;
    let url = server.url.as_str();

    // Refused by the argument parser or before any request.
    let run = slipway(&["deploy", "--url", url, "--app", "demo", "--env", "staging"]).await;
    run.expect_code(2);
    assert!(run.stderr.contains("--image"), "{run:?}");
    slipway(&["status", "not-an-id", "--url", url])
        .await
        .expect_code(2);
    let run = slipway(&[
        "status",
        "0193d1e2-0000-7000-8000-000000000000",
        "--watch",
        "--timeout",
        "5 minutes",
        "--url",
        url,
    ])
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("invalid duration"), "{run:?}");
    let run = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "staging",
        "--image",
        "ghcr.io/acme/web:1.0.0",
        "--strategy",
        "{not json",
    ])
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("--strategy"), "{run:?}");
    slipway(&[
        "deploy", "--url", "ftp://x", "--app", "a", "--env", "b", "--image", "i:1",
    ])
    .await
    .expect_code(2);

    // Refused by the server: the problem's title, detail and fields are printed.
    let run = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "staging",
        "--image",
        "NOT AN IMAGE",
        "--strategy",
        r#"{"type": "canary", "steps": [{"set_weight": 500}]}"#,
    ])
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("422"), "{run:?}");
    assert!(run.stderr.contains("  /image: "), "{run:?}");
    assert!(
        run.stderr.contains("  /strategy/steps/0/set_weight: "),
        "{run:?}"
    );

    let run = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "nope",
        "--image",
        "ghcr.io/acme/web:1.0.0",
    ])
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("404"), "{run:?}");
    let run = slipway(&[
        "status",
        "0193d1e2-0000-7000-8000-000000000000",
        "--url",
        url,
    ])
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("404"), "{run:?}");
    let run = slipway(&["deployments", "list", "--status", "sleeping", "--url", url]).await;
    run.expect_code(2);
    assert!(run.stderr.contains("?status: "), "{run:?}");

    // A command that makes no sense in the deployment's state.
    let run = slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "staging",
        "--image",
        "ghcr.io/acme/web:1.0.0",
        "--wait",
        "--timeout",
        "60s",
        "-o",
        "json",
    ])
    .await;
    let id = run.expect_code(0).json()["id"].as_str().unwrap().to_owned();
    let run = slipway(&["promote", &id, "--url", url]).await;
    run.expect_code(2);
    assert!(run.stderr.contains("409"), "{run:?}");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn refused_credentials_exit_4(pool: PgPool) {
    let server = serve(pool).await;
    let url = server.url.as_str();

    // No token: 401, with the hint where a token goes.
    let run = slipway_with(&["apps", "list", "--url", url], None).await;
    run.expect_code(4);
    assert!(run.stderr.contains("401"), "{run:?}");
    assert!(run.stderr.contains("--token or SLIPWAY_TOKEN"), "{run:?}");

    // A token the server did not sign, from the flag and from the environment: 401.
    let forged = slipway_api::auth::issue_hs256(
        b"another-secret-of-at-least-32-bytes!!",
        "slipway",
        "slipway",
        "ci",
        &[],
        Duration::from_secs(600),
    )
    .expect("issue");
    let run = slipway_with(&["apps", "list", "--url", url, "--token", &forged], None).await;
    run.expect_code(4);
    assert!(run.stderr.contains("401 Unauthorized"), "{run:?}");
    let run = slipway_with(&["apps", "list", "--url", url], Some(&forged)).await;
    run.expect_code(4);

    // The flag wins over the environment: a valid token on the flag is accepted.
    let run = slipway_with(
        &[
            "apps",
            "list",
            "--url",
            url,
            "--token",
            &token("ci", &[]),
            "-o",
            "json",
        ],
        Some(&forged),
    )
    .await;
    run.expect_code(0);

    // A deployer of `demo` may deploy but not approve: 403 → 4.
    slipway(&[
        "deploy",
        "--url",
        url,
        "--app",
        "demo",
        "--env",
        "staging",
        "--image",
        "ghcr.io/acme/web:0.9.0",
        "--wait",
    ])
    .await
    .expect_code(0);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let bound = client
        .post(format!("{url}/v1/apps/demo/role-bindings"))
        .bearer_auth(token("ci", &[]))
        .json(&json!({"subject": "dee", "role": "deployer"}))
        .send()
        .await
        .expect("bind");
    assert_eq!(bound.status(), 201, "{:?}", bound.text().await);
    let dee = token("dee", &[]);
    let run = slipway_with(
        &[
            "deploy",
            "--url",
            url,
            "--app",
            "demo",
            "--env",
            "prod",
            "--image",
            "ghcr.io/acme/web:1.0.0",
            "-o",
            "json",
        ],
        Some(&dee),
    )
    .await;
    let id = run.expect_code(0).json()["id"].as_str().unwrap().to_owned();
    let run = slipway_with(&["approve", &id, "--url", url], Some(&dee)).await;
    run.expect_code(4);
    assert!(run.stderr.contains("403 Forbidden"), "{run:?}");

    // Someone with no binding in `demo` does not see it at all: 404 is a usage error (2).
    let run = slipway_with(
        &["status", &id, "--url", url],
        Some(&token("stranger", &[])),
    )
    .await;
    run.expect_code(2);
    assert!(run.stderr.contains("404"), "{run:?}");
}

/// Reads one HTTP/1.1 request (head and Content-Length body) and returns its head.
async fn read_request(stream: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the client closed before sending a request");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return head.to_owned();
            }
        }
    }
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

#[tokio::test]
async fn deploy_retries_a_lost_answer_with_the_same_idempotency_key() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let stub = tokio::spawn(async move {
        let mut heads = Vec::new();
        // The first request is read and the connection dropped without an answer; the
        // second is answered 503, the third 201.
        for answer in [None, Some("503 Service Unavailable"), Some("201 Created")] {
            let (mut stream, _) = listener.accept().await.expect("accept");
            heads.push(read_request(&mut stream).await);
            let Some(status) = answer else {
                drop(stream);
                continue;
            };
            let body = if status.starts_with("201") {
                json!({"id": "0193d1e2-0000-7000-8000-000000000000", "app": "a", "environment": "b",
                       "image": "i:1", "version": "1", "status": "queued",
                       "serving": {"health": "unknown", "version": null}})
            } else {
                json!({"type": "https://slipway.dev/problems/unavailable", "title": "Unavailable",
                       "status": 503, "detail": "the database is not reachable"})
            };
            let body = body.to_string();
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).await.expect("answer");
        }
        heads
    });
    let run = slipway(&[
        "deploy", "--url", &url, "--app", "a", "--env", "b", "--image", "i:1", "-o", "json",
    ])
    .await;
    run.expect_code(0);
    assert_eq!(run.json()["status"], "queued");
    let heads = stub.await.expect("stub");
    let keys: Vec<Option<String>> = heads.iter().map(|h| header(h, "idempotency-key")).collect();
    assert!(keys[0].as_ref().is_some_and(|k| !k.is_empty()), "{heads:?}");
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one key for every try: {keys:?}"
    );
    assert!(
        heads
            .iter()
            .all(|h| h.starts_with("POST /v1/apps/a/environments/b/deployments ")),
        "{heads:?}"
    );

    // A key given on the command line is the one sent.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let stub = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let head = read_request(&mut stream).await;
        let body = r#"{"command_id": "c1", "deployment": {"status": "paused"}}"#;
        let reply = format!(
            "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).await.expect("answer");
        head
    });
    let run = slipway(&[
        "approve",
        "0193d1e2-0000-7000-8000-000000000000",
        "--idempotency-key",
        "ci-run-42",
        "--url",
        &url,
    ])
    .await;
    run.expect_code(0);
    let head = stub.await.expect("stub");
    assert_eq!(
        header(&head, "idempotency-key").as_deref(),
        Some("ci-run-42")
    );
    assert!(
        head.starts_with("POST /v1/deployments/0193d1e2-0000-7000-8000-000000000000/approve "),
        "{head}"
    );
}

#[tokio::test]
async fn an_unreachable_server_exits_5_after_retrying() {
    // Nothing listens on a port that was just released.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let run = slipway(&[
        "deploy",
        "--url",
        &url,
        "--app",
        "a",
        "--env",
        "b",
        "--image",
        "i:1",
        "--idempotency-key",
        "k-1",
    ])
    .await;
    run.expect_code(5);
    assert!(run.stderr.contains("--idempotency-key k-1"), "{run:?}");
}

/// A fake deployment whose event stream breaks after two events.
#[derive(Debug, Default)]
struct BreakingStream {
    /// Events sent so far; the deployment has succeeded once all three were.
    published: Vec<Value>,
    /// The `Last-Event-ID` of each stream request.
    last_event_ids: Vec<Option<String>>,
}

const STUB_ID: &str = "0193d1e2-0000-7000-8000-000000000000";

fn stub_event(seq: i64, kind: &str) -> Value {
    json!({"seq": seq, "deployment_id": STUB_ID, "at": "2026-11-28T23:00:00Z", "kind": kind,
           "actor": "slipway", "message": format!("event {seq}"), "data": {}})
}

impl BreakingStream {
    fn deployment(&self) -> Value {
        let status = if self.published.len() == 3 {
            "succeeded"
        } else {
            "running"
        };
        json!({"id": STUB_ID, "app": "a", "environment": "b", "image": "i:1", "version": "1",
               "status": status, "serving": {"health": "healthy", "version": "1"}})
    }

    /// The JSON page of events published so far, or a stream: events 1 and 2 on the first
    /// connection (then it ends), event 3 on the next.
    fn events(&mut self, headers: &HeaderMap) -> ([(&'static str, &'static str); 1], String) {
        let accept = headers
            .get("accept")
            .and_then(|a| a.to_str().ok())
            .unwrap_or("");
        if !accept.contains("text/event-stream") {
            let page = json!({"items": self.published, "next_cursor": null});
            return ([("content-type", "application/json")], page.to_string());
        }
        let last = headers
            .get("last-event-id")
            .map(|v| v.to_str().unwrap().to_owned());
        self.last_event_ids.push(last);
        let send = if self.last_event_ids.len() == 1 {
            vec![stub_event(1, "queued"), stub_event(2, "started")]
        } else {
            vec![stub_event(3, "promoted")]
        };
        let mut body = String::from(": keep-alive\n\n");
        for e in send {
            body.push_str(&format!(
                "id: {}\nevent: {}\ndata: {e}\n\n",
                e["seq"], e["kind"]
            ));
            self.published.push(e);
        }
        ([("content-type", "text/event-stream")], body)
    }
}

/// `events --follow` reconnects after a broken stream with `Last-Event-ID`, prints every
/// event once, and exits with the deployment's outcome.
#[tokio::test]
async fn events_follow_resumes_after_a_broken_stream() {
    let stub: Arc<Mutex<BreakingStream>> = Arc::default();
    let (s1, s2) = (stub.clone(), stub.clone());
    let app = axum::Router::new()
        .route(
            "/v1/deployments/{id}",
            axum::routing::get(move || {
                let d = s1.lock().unwrap().deployment();
                async move { axum::Json(d) }
            }),
        )
        .route(
            "/v1/deployments/{id}/events",
            axum::routing::get(move |headers: HeaderMap| {
                let answer = s2.lock().unwrap().events(&headers);
                async move { answer }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let run = slipway(&[
        "events",
        STUB_ID,
        "--follow",
        "--timeout",
        "30s",
        "--url",
        &url,
        "-o",
        "json",
    ])
    .await;
    run.expect_code(0);
    let seqs: Vec<i64> = run
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("a JSON line")["seq"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [1, 2, 3], "each event once, in order: {run:?}");
    let ids = stub.lock().unwrap().last_event_ids.clone();
    assert_eq!(
        ids,
        [None, Some("2".to_owned())],
        "resumed after the last event seen"
    );
}

/// `slipway dev` seeds its demo at every start: a second run over the same database must
/// not fail (a failed INSERT used to abort the seeding transaction).
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_demo_seed_runs_again_over_its_own_objects(pool: PgPool) {
    slipway::demo::seed(&pool).await.expect("first seed");
    slipway::demo::seed(&pool).await.expect("second seed");
}

/// A follower of a live stream sees the server shut down (promptly: an open stream must not
/// hold up the drain), reconnects to its successor on the same address, and prints every
/// event exactly once to the end.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_follower_rides_out_a_server_restart(pool: PgPool) {
    use tokio::io::AsyncBufReadExt;

    let sim = Arc::new(SimCluster::new(Arc::new(SystemClock)));
    let mut first = serve_at(pool.clone(), sim.clone(), "127.0.0.1:0").await;
    let url = first.url.clone();
    slipway(&[
        "deploy",
        "--url",
        &url,
        "--app",
        "demo",
        "--env",
        "prod",
        "--image",
        "ghcr.io/acme/web:1.0.0",
        "--wait",
        "--timeout",
        "60s",
    ])
    .await
    .expect_code(0);
    let run = slipway(&[
        "deploy", "--url", &url, "--app", "demo", "--env", "prod",
        "--image", "ghcr.io/acme/web:1.1.0", "-o", "json", "--strategy",
        r#"{"type": "canary", "steps": [{"set_weight": 50}, {"pause": {}}], "traffic": {"router": "replicas"}}"#,
    ])
    .await;
    let id = run.expect_code(0).json()["id"].as_str().unwrap().to_owned();
    status_until(&url, &id, "paused", |d| d["status"] == "paused").await;

    let mut follower = tokio::process::Command::new(BIN)
        .args([
            "events",
            &id,
            "--follow",
            "--timeout",
            "90s",
            "--url",
            &url,
            "-o",
            "json",
        ])
        .env("SLIPWAY_TOKEN", token("ci", &[]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the follower");
    let mut lines = tokio::io::BufReader::new(follower.stdout.take().unwrap()).lines();
    let mut seen: Vec<Value> = Vec::new();
    while !seen.iter().any(|e| e["kind"] == "paused") {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("events within 30 s")
            .expect("read")
            .expect("a line");
        seen.push(serde_json::from_str(&line).expect("a JSON line"));
    }
    // Let the follower open its live stream, then restart the server under it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        first.stop_within(Duration::from_secs(10)).await,
        "an open event stream held up the server's shutdown"
    );
    let addr = url.trim_start_matches("http://").to_owned();
    let _second = serve_at(pool.clone(), sim, &addr).await;
    slipway(&["promote", &id, "--url", &url])
        .await
        .expect_code(0);

    let status = tokio::time::timeout(Duration::from_secs(60), follower.wait())
        .await
        .expect("the follower ends with the deployment")
        .expect("wait");
    while let Some(line) = lines.next_line().await.expect("read") {
        seen.push(serde_json::from_str(&line).expect("a JSON line"));
    }
    assert_eq!(status.code(), Some(0), "succeeded: {seen:?}");
    let seqs: Vec<i64> = seen.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "each event once"
    );
    assert_eq!(seen.last().unwrap()["kind"], "promoted", "{seen:?}");
}
