//! Commands sent over the real HTTP API, consumed by the engine.

use std::net::SocketAddr;
use std::sync::Once;

use reqwest::StatusCode;
use serde_json::{Value, json};
use slipway_api::{ApiSettings, AppState};
use slipway_core::rollout::Track;
use slipway_core::{DeploymentStatus, Outcome, ServingHealth};
use slipway_store::PgPool;
use uuid::Uuid;

use crate::common::*;

/// The API served on a loopback port; the server stops when this is dropped.
struct Api {
    base: String,
    client: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The HS256 secret of [`Api::start_with_tokens`].
const SECRET: &[u8] = b"engine-http-test-secret-engine-http!";

/// A bearer token of [`SECRET`] for `sub`, valid for an hour.
fn bearer(sub: &str) -> String {
    let token = slipway_api::auth::issue_hs256(
        SECRET,
        "slipway",
        "slipway",
        sub,
        &[],
        std::time::Duration::from_secs(3600),
    )
    .expect("issue a token");
    format!("Bearer {token}")
}

impl Api {
    async fn start(pool: &PgPool) -> Self {
        Self::serve(pool, ApiSettings::default()).await
    }

    /// With bearer tokens of [`SECRET`]; `admin` is the bootstrap admin.
    async fn start_with_tokens(pool: &PgPool) -> Self {
        let verifier = slipway_api::auth::TokenVerifier::new("slipway", "slipway")
            .with_secret(SECRET)
            .expect("a valid secret");
        let auth = slipway_api::auth::AuthSettings::jwt(
            verifier,
            slipway_api::auth::BootstrapAdmins::parse(&["admin"]),
        );
        let settings = ApiSettings {
            auth,
            ..ApiSettings::default()
        };
        Self::serve(pool, settings).await
    }

    /// `POST path` with `body` as `sub`: status and JSON body.
    async fn post_as(&self, sub: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("authorization", bearer(sub))
            .json(body)
            .send()
            .await
            .expect("send the request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn serve(pool: &PgPool, settings: ApiSettings) -> Self {
        static CRYPTO: Once = Once::new();
        CRYPTO.call_once(|| {
            // Another test may have installed it already: that is fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        let app = slipway_api::app(AppState::new(pool.clone(), settings));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                panic!("serving the API failed: {e}");
            }
        });
        let client = reqwest::Client::builder().build().expect("a client");
        Self {
            base: format!("http://{addr}"),
            client,
            server,
        }
    }

    /// `POST /v1/deployments/{id}/{command}` with a reason; status and JSON body.
    async fn command(&self, id: Uuid, command: &str) -> (StatusCode, Value, String) {
        let resp = self
            .client
            .post(format!("{}/v1/deployments/{id}/{command}", self.base))
            .json(&json!({"reason": format!("test {command}")}))
            .send()
            .await
            .expect("send the command");
        let status = resp.status();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body, content_type)
    }

    /// Sends a command that must be accepted; returns its id.
    async fn accepted(&self, id: Uuid, command: &str) -> Uuid {
        let (status, body, _) = self.command(id, command).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{command}: {body}");
        assert_eq!(body["deployment"]["id"], id.to_string(), "{body}");
        body["command_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{command}: no command_id in {body}"))
    }

    /// Sends a command that must be refused with 409; returns the problem's `detail`.
    async fn refused(&self, id: Uuid, command: &str) -> String {
        let (status, body, content_type) = self.command(id, command).await;
        assert_eq!(status, StatusCode::CONFLICT, "{command}: {body}");
        assert!(
            content_type.starts_with("application/problem+json"),
            "{content_type}"
        );
        assert_eq!(body["status"], 409, "{body}");
        assert!(
            body["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/conflict")),
            "{body}"
        );
        body["detail"].as_str().unwrap_or_default().to_owned()
    }
}

/// `command` events of the log, as (command, actor).
fn commands_seen(log: &[slipway_core::DeploymentEvent]) -> Vec<(String, String)> {
    log.iter()
        .filter(|e| e.kind == "command")
        .map(|e| {
            (
                e.data["command"].as_str().unwrap_or_default().to_owned(),
                e.actor.clone(),
            )
        })
        .collect()
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn commands_over_http_drive_a_canary(pool: PgPool) {
    seed_app(&pool).await;
    let strategy = json!({"type": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]});
    put_env(&pool, "prod", &env_spec("shop", strategy, json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    let api = Api::start(&pool).await;
    deploy_ok(&engine, &pool, "prod", "1.0.0").await;

    let id = deploy(&pool, "prod", "2.0.0").await;
    let detail = api.refused(id, "pause").await;
    assert!(detail.contains("queued"), "{detail}");
    let (status, _, _) = api.command(Uuid::now_v7(), "pause").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Started: pause it.
    drive_to(&engine, &pool, id, DeploymentStatus::Running).await;
    let detail = api.refused(id, "retry").await;
    assert!(detail.contains("running"), "{detail}");
    api.accepted(id, "pause").await;
    let d = drive(&engine, &pool, id, "paused by command", |d| {
        d.status == DeploymentStatus::Paused
    })
    .await;
    assert_eq!(d.phase.as_deref(), Some("canary_step"));
    let log = events_of(&pool, id).await;
    assert_eq!(
        commands_seen(&log),
        vec![("pause".to_owned(), "anonymous".to_owned())]
    );
    assert_eq!(first(&log, "command").data["reason"], "test pause");
    assert_eq!(first(&log, "paused").message, "paused by anonymous");

    // Paused by a command: promote makes no sense until it is resumed.
    let detail = api.refused(id, "promote").await;
    assert!(detail.contains("paused (canary_step)"), "{detail}");
    assert!(detail.contains("resume it first"), "{detail}");
    api.accepted(id, "resume").await;
    let d = drive_to_phase(&engine, &pool, id, DeploymentStatus::Paused, "paused_step").await;
    assert_eq!(d.step, Some(1));
    assert_eq!(
        sim.snapshot(&target("shop")).replicas(Track::Canary),
        Some(2)
    );

    // At the pause step, resume is not the way on.
    let detail = api.refused(id, "resume").await;
    assert!(detail.contains("paused (paused_step)"), "{detail}");

    // Abort: back to 1.0.0.
    api.accepted(id, "abort").await;
    let d = drive_to(&engine, &pool, id, DeploymentStatus::RolledBack).await;
    assert_eq!(d.outcome, Some(Outcome::Aborted));
    assert_eq!(d.serving.health, ServingHealth::Healthy);
    assert_eq!(d.serving.version.as_deref(), Some("1.0.0"));
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.release(Track::Stable), Some(&release("1.0.0")));
    assert_eq!(snap.replicas(Track::Stable), Some(REPLICAS));
    assert_eq!(snap.replicas(Track::Canary), Some(0));
    let detail = api.refused(id, "abort").await;
    assert!(detail.contains("rolled_back"), "{detail}");

    // Retry: queued again as attempt 2, then it runs again.
    api.accepted(id, "retry").await;
    let stepped = engine.run_once(4).await.expect("step");
    assert!(stepped.iter().any(|(c, _)| c.id == id), "{stepped:?}");
    let d = get(&pool, id).await;
    assert_eq!(d.status, DeploymentStatus::Queued);
    assert_eq!((d.outcome, d.reason), (None, None));
    let attempt: i32 = sqlx::query_scalar("SELECT attempt FROM deployments WHERE id = $1")
        .bind(id)
        .fetch_one(&pool)
        .await
        .expect("attempt");
    assert_eq!(attempt, 2);
    let retried = first(&events_of(&pool, id).await, "retried").clone();
    assert_eq!(retried.data["attempt"], 2);
    assert_eq!(retried.actor, "anonymous");

    drive_to_phase(&engine, &pool, id, DeploymentStatus::Paused, "paused_step").await;
    api.accepted(id, "promote").await;
    let d = drive_to(&engine, &pool, id, DeploymentStatus::Succeeded).await;
    assert_eq!(d.outcome, Some(Outcome::Promoted));
    assert_eq!(d.serving.version.as_deref(), Some("2.0.0"));
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.release(Track::Stable), Some(&release("2.0.0")));
    assert_eq!(snap.replicas(Track::Canary), Some(0));

    let log = events_of(&pool, id).await;
    let started: Vec<&Value> = log
        .iter()
        .filter(|e| e.kind == "started")
        .map(|e| &e.data["attempt"])
        .collect();
    assert_eq!(started, vec![&json!(1), &json!(2)]);
    let seen: Vec<String> = commands_seen(&log).into_iter().map(|(c, _)| c).collect();
    // Retry is consumed by the engine's re-queue, not by the machine: no `command` event.
    assert_eq!(seen, ["pause", "resume", "abort", "promote"]);
    let unconsumed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM commands WHERE deployment_id = $1
             AND (consumed_at IS NULL OR outcome <> 'applied')",
    )
    .bind(id)
    .fetch_one(&pool)
    .await
    .expect("count commands");
    assert_eq!(unconsumed, 0);
    drop(api);
}

/// The bucket boundaries (`le`) of histogram `name` in a Prometheus text page.
fn buckets(page: &str, name: &str) -> Vec<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut les: Vec<f64> = page
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
        .filter(|le: &f64| le.is_finite())
        .collect();
    les.sort_by(f64::total_cmp);
    les.dedup();
    les
}

/// `/metrics` describes every metric it shows (a HELP line for each), renders every
/// histogram with buckets (a summary's quantiles cannot be summed across replicas), and the
/// deployment duration's buckets span minutes to hours rather than ending at 10 s.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn metrics_are_described_and_histograms_have_fitting_buckets(pool: PgPool) {
    let api = Api::start(&pool).await;
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    let created = api
        .client
        .post(format!(
            "{}/v1/apps/{APP}/environments/prod/deployments",
            api.base
        ))
        .json(&json!({"image": image("1.0.0"), "version": "1.0.0"}))
        .send()
        .await
        .expect("create a deployment");
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.expect("the deployment");
    let id: Uuid = body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    drive_to(&engine, &pool, id, DeploymentStatus::Succeeded).await;

    let page = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("the page");
    for name in page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
    {
        assert!(
            page.contains(&format!("# HELP {name} ")),
            "{name} has no HELP line:\n{page}"
        );
    }
    assert!(!page.contains("quantile=\""), "a summary:\n{page}");
    for histogram in [
        "slipway_deployment_duration_seconds",
        "slipway_engine_step_write_batch",
        "slipway_create_batch_rows",
        "slipway_http_request_duration_seconds",
    ] {
        assert!(
            page.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram} is not a histogram:\n{page}"
        );
    }
    let deployment = buckets(&page, "slipway_deployment_duration_seconds");
    for le in [60.0, 600.0, 3600.0, 4.0 * 3600.0] {
        assert!(deployment.contains(&le), "no {le} s bucket: {deployment:?}");
    }
    assert!(
        deployment.last().is_some_and(|last| *last >= 86_400.0),
        "{deployment:?}"
    );
    let writes = buckets(&page, "slipway_engine_step_write_batch");
    assert!(
        writes.contains(&1.0) && writes.contains(&64.0),
        "step write batches: {writes:?}"
    );
    drop(api);
}

/// The reported bypass end to end (HTTP API, engine, simulated cluster): on an environment that
/// requires a distinct approver, a deployer's `{"strategy": {"type": "rolling"}}` is refused
/// unless the environment allows overrides; where it does, the rolling update, the first one
/// of the environment included, applies nothing until someone else approves.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn approval_gates_a_rolling_override_end_to_end(pool: PgPool) {
    seed_app(&pool).await;
    let canary = json!({"type": "canary", "steps": [{"set_weight": 50}, {"pause": {}}]});
    let approval = json!({"approval": {"required": true, "distinct_approver": true}});
    put_env(
        &pool,
        "prod",
        &env_spec("shop", canary.clone(), approval.clone()),
    )
    .await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    let api = Api::start_with_tokens(&pool).await;
    for (sub, role) in [("alice", "deployer"), ("bob", "approver")] {
        let (status, body) = api
            .post_as(
                "admin",
                "/v1/apps/web/role-bindings",
                &json!({"subject": sub, "role": role}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let deployments = "/v1/apps/web/environments/prod/deployments";
    let rolling = |version: &str| json!({"image": image(version), "strategy": {"type": "rolling"}});

    let (status, body) = api.post_as("alice", deployments, &rolling("6.6.6")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errors"][0]["pointer"], "/strategy", "{body}");

    let mut allowed = approval;
    allowed["allow_strategy_override"] = json!(true);
    put_env(&pool, "prod", &env_spec("shop", canary, allowed)).await;
    for (version, before) in [("1.0.0", None), ("6.6.6", Some(release("1.0.0")))] {
        let (status, body) = api.post_as("alice", deployments, &rolling(version)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["strategy_overridden"], true, "{body}");
        let id: Uuid = body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("an id");
        drive_to_phase(
            &engine,
            &pool,
            id,
            DeploymentStatus::Paused,
            "awaiting_approval",
        )
        .await;
        for _ in 0..5 {
            engine.run_once(16).await.expect("an engine step");
        }
        assert_eq!(get(&pool, id).await.status, DeploymentStatus::Paused);
        let snap = sim.snapshot(&target("shop"));
        assert_eq!(
            snap.release(Track::Stable),
            before.as_ref(),
            "{version} applied unapproved"
        );

        let approve = format!("/v1/deployments/{id}/approve");
        let (status, body) = api.post_as("alice", &approve, &json!({})).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "the requester approved: {body}"
        );
        let (status, body) = api.post_as("bob", &approve, &json!({})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let d = drive_to(&engine, &pool, id, DeploymentStatus::Succeeded).await;
        assert_eq!(d.serving.version.as_deref(), Some(version));
        let approved = first(&events_of(&pool, id).await, "approved").clone();
        assert_eq!(approved.message, "approved by bob");
    }
}
