//! Black-box tests of the `slipway` binary: its commands, configuration errors, serving
//! against a real PostgreSQL, graceful shutdown, and `slipway dev` with its private database.
#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_slipway");

fn slipway() -> Command {
    let mut cmd = Command::new(BIN);
    // Only what a test sets: no stray SLIPWAY_* or DATABASE_URL from the developer's shell.
    cmd.env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (key, _) in std::env::vars() {
        if key.starts_with("SLIPWAY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn run_failing(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run slipway");
    assert!(
        !out.status.success(),
        "expected failure, got {:?}",
        out.status
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn openapi_command_prints_the_committed_spec() {
    let out = slipway()
        .arg("openapi")
        .output()
        .expect("run slipway openapi");
    assert!(out.status.success());
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("spec is JSON");
    assert!(
        printed["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"))
    );
    let committed = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json"))
        .expect("openapi/openapi.json is committed");
    let committed: serde_json::Value = serde_json::from_slice(&committed).expect("JSON");
    assert_eq!(
        printed, committed,
        "openapi/openapi.json is stale: run scripts/openapi"
    );
}

#[test]
fn serve_help_states_the_defaults_it_runs_with() {
    let out = slipway()
        .args(["serve", "--help"])
        .output()
        .expect("run slipway serve --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let defaults = slipway::config::Config::default();
    for (flag, default) in [
        ("--listen", defaults.server.listen.clone()),
        ("--workers", defaults.engine.workers.to_string()),
    ] {
        let line = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag))
            .take_while(|l| l.trim_start().starts_with(flag) || !l.trim_start().starts_with('-'))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.contains(&format!("[default: {default}]")),
            "{flag} should say its default is {default}: {line:?}"
        );
    }
}

#[test]
fn configuration_errors_name_the_key() {
    let stderr = run_failing(
        slipway()
            .arg("serve")
            .env("SLIPWAY_LISTEN", "not-an-address"),
    );
    assert!(stderr.contains("`server.listen`"), "{stderr}");

    let stderr = run_failing(
        slipway()
            .arg("serve")
            .env("SLIPWAY_DATABASE_MAX_CONNECTIONS", "many"),
    );
    assert!(
        stderr.to_lowercase().contains("database_max_connections"),
        "{stderr}"
    );

    let stderr = run_failing(slipway().arg("serve").env("DATABASE_URL", "mysql://db/x"));
    assert!(stderr.contains("`database.url`"), "{stderr}");

    let stderr = run_failing(slipway().arg("serve"));
    assert!(stderr.contains("`database.url` is not set"), "{stderr}");

    // Authentication is on by default: serving without any key says which key to set.
    let stderr = run_failing(
        slipway()
            .arg("serve")
            .env("DATABASE_URL", "postgres://127.0.0.1:1/none"),
    );
    assert!(stderr.contains("`auth.jwt_secret`"), "{stderr}");
    assert!(stderr.contains("SLIPWAY_JWT_SECRET"), "{stderr}");
    let stderr = run_failing(
        slipway()
            .arg("serve")
            .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
            .env("SLIPWAY_JWKS_PATH", "/nonexistent/jwks.json"),
    );
    assert!(stderr.contains("`auth.jwks_path`"), "{stderr}");
    let stderr = run_failing(
        slipway()
            .arg("serve")
            .env("SLIPWAY_SECRETS_KEY", "c2hvcnQ="),
    );
    assert!(stderr.contains("`secrets.key`"), "{stderr}");
    let stderr = run_failing(
        slipway()
            .arg("serve")
            .env("SLIPWAY_GITHUB_API_URL", "ftp://x"),
    );
    assert!(stderr.contains("`github.api_url`"), "{stderr}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("slipway.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9\"\nrequest_timout = \"5s\"\n").expect("write");
    let stderr = run_failing(slipway().arg("--config").arg(&file).arg("serve"));
    assert!(stderr.contains("request_timout"), "{stderr}");

    let stderr = run_failing(
        slipway()
            .arg("--config")
            .arg(dir.path().join("missing.toml"))
            .arg("serve"),
    );
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn secrets_stay_out_of_the_logs() {
    let mut child = slipway()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "DATABASE_URL",
            "postgres://slipway:hunter2-secret@127.0.0.1:1/none",
        )
        .env("SLIPWAY_JWT_SECRET", SECRET)
        .env("SLIPWAY_LOG_LEVEL", "debug")
        .env(
            "SLIPWAY_SECRETS_KEY",
            "hunter2hunter2hunter2hunter2hunter2hunter2Q=",
        )
        .env("SLIPWAY_GITHUB_TOKEN", "ghp_hunter2-token")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "cannot connect to port 1");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("read");
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut logs)
        .expect("read");
    assert!(!logs.contains("hunter2"), "{logs}");
    assert!(logs.contains("configuration loaded"), "{logs}");
    assert!(!logs.contains(SECRET), "{logs}");
}

/// The HS256 secret of the tests that serve with authentication on.
const SECRET: &str = "cli-test-secret-cli-test-secret-0123";

/// `slipway token issue` with the test secret; the printed token.
fn issue(args: &[&str]) -> String {
    let out = slipway()
        .args(["token", "issue"])
        .args(args)
        .env("SLIPWAY_JWT_SECRET", SECRET)
        .output()
        .expect("run slipway token issue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).expect("UTF-8");
    let token = token.trim().to_owned();
    assert_eq!(
        token.split('.').count(),
        3,
        "one JWT and nothing else: {token:?}"
    );
    token
}

/// The token `slipway token issue --sub alice` prints under `file` and `env`, if it ran.
fn issued_with(file: &str, env: &[(&str, &str)]) -> Option<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("slipway.toml");
    std::fs::write(&path, file).expect("write");
    let out = slipway()
        .arg("--config")
        .arg(&path)
        .args(["token", "issue", "--sub", "alice"])
        .envs(env.iter().copied())
        .output()
        .expect("run slipway token issue");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether `token` carries issuer `iss` and is signed with the test secret.
fn issued_by(token: Option<String>, iss: &str) -> bool {
    let verifier = slipway_api::auth::TokenVerifier::new(iss, "slipway")
        .with_secret(SECRET.as_bytes())
        .expect("the test secret is long enough");
    token.is_some_and(|token| verifier.verify(&token).is_ok())
}

#[test]
fn configuration_keys_are_read_in_sections_and_under_their_flat_names() {
    let sectioned = format!("[auth]\njwt_secret = \"{SECRET}\"\njwt_issuer = \"sectioned\"\n");
    assert!(issued_by(issued_with(&sectioned, &[]), "sectioned"));
    let flat = format!("jwt_secret = \"{SECRET}\"\njwt_issuer = \"flat\"\n");
    assert!(issued_by(issued_with(&flat, &[]), "flat"));
    let env = [
        ("SLIPWAY_AUTH_JWT_SECRET", SECRET),
        ("SLIPWAY_AUTH_JWT_ISSUER", "sectioned-env"),
    ];
    assert!(issued_by(issued_with("", &env), "sectioned-env"));
    let env = [
        ("SLIPWAY_JWT_SECRET", SECRET),
        ("SLIPWAY_JWT_ISSUER", "flat-env"),
    ];
    assert!(issued_by(issued_with("", &env), "flat-env"));
    // The environment is over the file, whichever names either uses.
    let env = [("SLIPWAY_JWT_ISSUER", "env")];
    assert!(issued_by(issued_with(&sectioned, &env), "env"));
}

#[test]
fn token_issue_needs_the_secret() {
    let stderr = run_failing(slipway().args(["token", "issue", "--sub", "alice"]));
    assert!(stderr.contains("`auth.jwt_secret`"), "{stderr}");
    let stderr = run_failing(
        slipway()
            .args(["token", "issue", "--sub", "alice", "--ttl", "soon"])
            .env("SLIPWAY_JWT_SECRET", SECRET),
    );
    assert!(stderr.contains("--ttl"), "{stderr}");
}

fn request(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> String {
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    http(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn issued_tokens_are_accepted_by_the_server() {
    let url = fresh_database();
    let migrated = slipway()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .status()
        .expect("migrate");
    assert!(migrated.success());
    let mut server = start(
        slipway()
            .args(["serve", "--listen", "127.0.0.1:0", "--no-workers"])
            .env("DATABASE_URL", &url)
            .env("SLIPWAY_JWT_SECRET", SECRET)
            .env("SLIPWAY_BOOTSTRAP_ADMINS", "root,group:platform"),
        "addr",
    );
    let app = r#"{"name":"web"}"#;
    let answer = request(&server.addr, "POST", "/v1/apps", None, app);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        answer.to_lowercase().contains("www-authenticate: bearer"),
        "{answer}"
    );
    // A token of a bootstrap admin group creates the app, and its subject is audited.
    let admin = issue(&["--sub", "pat", "--group", "platform", "--ttl", "10m"]);
    let answer = request(&server.addr, "POST", "/v1/apps", Some(&admin), app);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let trail = request(&server.addr, "GET", "/v1/audit", Some(&admin), "");
    assert!(trail.contains(r#""subject":"pat""#), "{trail}");
    // Someone else's token is valid but grants nothing.
    let stranger = issue(&["--sub", "sam"]);
    let answer = request(
        &server.addr,
        "POST",
        "/v1/apps",
        Some(&stranger),
        r#"{"name":"x"}"#,
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let answer = request(&server.addr, "GET", "/v1/apps/web", Some(&stranger), "");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    // A token signed with another secret is refused.
    let out = slipway()
        .args(["token", "issue", "--sub", "root"])
        .env(
            "SLIPWAY_JWT_SECRET",
            "another-secret-another-secret-0123456",
        )
        .output()
        .expect("issue");
    let forged = String::from_utf8(out.stdout).expect("UTF-8");
    let answer = request(&server.addr, "GET", "/v1/apps", Some(forged.trim()), "");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child).success());
}

/// A fresh database on the test server, migrated by `slipway migrate`.
fn fresh_database() -> String {
    let admin = std::env::var("DATABASE_URL")
        .expect("DATABASE_URL (scripts/test starts a test PostgreSQL)");
    let name = format!("slipway_cli_{}", uuid::Uuid::new_v4().simple());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&admin).await.expect("connect admin");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create database");
    });
    let (base, _) = admin.rsplit_once('/').expect("URL has a database");
    format!("{base}/{name}")
}

/// Starts a child and waits (bounded) for the log line that names its address.
struct Running {
    child: Child,
    addr: String,
    lines: mpsc::Receiver<String>,
}

#[expect(
    clippy::zombie_processes,
    reason = "the child is handed back in `Running`; each test waits for it"
)]
fn start(cmd: &mut Command, marker: &str) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
        Box::new(child.stderr.take().expect("stderr")),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("no {marker:?} line within 60 s")
        });
        if let Some(rest) = line.split(marker).nth(1) {
            let addr: String = rest
                .trim_start_matches(['=', ' ', '"', ':'])
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            return Running {
                child,
                addr,
                lines: rx,
            };
        }
    }
}

fn http(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).expect("read");
    out
}

fn get(addr: &str, path: &str) -> String {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    for _ in 0..300 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("process did not exit within 30 s of SIGTERM");
}

#[test]
fn serve_answers_and_drains_in_flight_requests_on_sigterm() {
    let url = fresh_database();
    let migrated = slipway()
        .arg("migrate")
        .env("DATABASE_URL", &url)
        .status()
        .expect("migrate");
    assert!(migrated.success());

    let mut server = start(
        slipway()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("DATABASE_URL", &url)
            .env("SLIPWAY_JWT_SECRET", SECRET)
            .env("SLIPWAY_BOOTSTRAP_ADMINS", "root"),
        "addr",
    );
    let token = issue(&["--sub", "root"]);
    let ready = get(&server.addr, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // A request whose body is still arriving when SIGTERM comes must still be answered.
    let body = r#"{"name":"drained","description":"sent across a shutdown"}"#;
    let mut slow = TcpStream::connect(&server.addr).expect("connect");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        slow,
        "POST /v1/apps HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .expect("write head");
    slow.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&server.child);
    std::thread::sleep(Duration::from_millis(300));
    slow.write_all(&body.as_bytes()[10..]).expect("write rest");
    let mut answer = String::new();
    slow.read_to_string(&mut answer).expect("read answer");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");

    let status = wait_exit(&mut server.child);
    assert!(status.success(), "{status:?}");
    assert!(
        TcpStream::connect(&server.addr).is_err(),
        "stopped accepting"
    );
    let logs: Vec<String> = server.lines.try_iter().collect();
    assert!(logs.iter().any(|l| l.contains("drained")), "{logs:?}");
}

#[test]
fn dev_runs_its_own_database_and_stops_it_on_exit() {
    // The state directory must be reachable by the `postgres` user when tests run as root.
    let base = std::path::Path::new("/var/tmp");
    let dir = tempfile::Builder::new()
        .prefix("slipway-dev-test-")
        .tempdir_in(base)
        .expect("tempdir");
    let mut dev = start(
        slipway()
            .args(["dev", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path()),
        "Slipway is up at http://",
    );
    let ready = get(&dev.addr, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // Authentication is off in dev, and the log says so loudly.
    let apps = get(&dev.addr, "/v1/apps");
    assert!(apps.starts_with("HTTP/1.1 200"), "{apps}");
    let early: Vec<String> = dev.lines.try_iter().collect();
    assert!(
        early
            .iter()
            .any(|l| l.contains("WARN") && l.contains("AUTHENTICATION IS OFF")),
        "{early:?}"
    );
    let pid_file = dir.path().join("pgdata/postmaster.pid");
    assert!(
        pid_file.exists(),
        "the private PostgreSQL runs from the state directory"
    );

    sigterm(&dev.child);
    let status = wait_exit(&mut dev.child);
    assert!(status.success(), "{status:?}");
    assert!(!pid_file.exists(), "the private PostgreSQL was stopped");
}
