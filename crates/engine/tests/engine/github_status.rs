//! GitHub deployment statuses: deployments that a GitHub `deployment` event created report
//! their progress to a local server that checks GitHub's request format, through the outbox,
//! in order, retried after the server fails.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use slipway_core::DeploymentStatus;
use slipway_core::trigger_match::{GithubDeployment, Matched};
use slipway_core::{DeploymentRequest, Source, SourceKind, TriggerSource};
use slipway_engine::github_status::{GithubStatusSettings, StatusRelay};
use slipway_engine::webhooks::{self, Delivery, PlannedDeployment};
use slipway_store::PgPool;
use uuid::Uuid;

use crate::common::*;

/// One request the fake GitHub received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Value,
    answered: StatusCode,
}

#[derive(Debug, Clone, Default)]
struct FakeGithub {
    received: Arc<Mutex<Vec<Received>>>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<Mutex<usize>>,
}

async fn statuses(
    State(fake): State<FakeGithub>,
    Path((owner, repo, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Json<Value>,
) -> (StatusCode, Json<Value>) {
    let answered = {
        let mut fail = fake.fail_first.lock().expect("lock");
        if repo == "gone" {
            StatusCode::NOT_FOUND
        } else if *fail > 0 {
            *fail -= 1;
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::CREATED
        }
    };
    fake.received.lock().expect("lock").push(Received {
        path: format!("/repos/{owner}/{repo}/deployments/{id}/statuses"),
        headers,
        body: body.0.clone(),
        answered,
    });
    (answered, Json(json!({"id": 1, "state": body.0["state"]})))
}

impl FakeGithub {
    async fn start(fail_first: usize) -> (Self, String, tokio::task::JoinHandle<()>) {
        let fake = Self::default();
        *fake.fail_first.lock().expect("lock") = fail_first;
        let app = axum::Router::new()
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                axum::routing::post(statuses),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("serve the fake GitHub");
        });
        (fake, format!("http://{addr}"), server)
    }

    fn delivered(&self) -> Vec<Received> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.answered.is_success())
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

/// Records a deployment of `version` as a GitHub `deployment` event of `acme/web` (GitHub
/// deployment `github_id`, environment `production`) would.
async fn from_github(pool: &PgPool, version: &str, github_id: i64) -> Uuid {
    let app_id: Uuid = sqlx::query_scalar("SELECT id FROM apps WHERE name = $1")
        .bind(APP)
        .fetch_one(pool)
        .await
        .expect("the app");
    let delivery_id = format!("delivery-{github_id}");
    let delivery = Delivery {
        app: APP,
        app_id,
        source: TriggerSource::Github,
        delivery_id: &delivery_id,
        event: "deployment",
        metadata: None,
        content_digest: None,
    };
    let planned = PlannedDeployment {
        trigger: Uuid::now_v7(),
        matched: Matched {
            environment: "prod".into(),
            request: DeploymentRequest {
                image: image(version),
                version: Some(version.to_owned()),
                strategy: None,
                reason: None,
                source: Source {
                    kind: SourceKind::Github,
                    repository: Some("acme/web".into()),
                    ..Source::default()
                },
            },
        },
        github: Some((
            "acme/web".into(),
            GithubDeployment {
                id: github_id,
                environment: "production".into(),
            },
        )),
        committed_at: None,
        allow_older: false,
    };
    let mut tx = pool.begin().await.expect("begin");
    let taken = webhooks::take(&mut tx, &delivery, vec![planned])
        .await
        .expect("take the delivery");
    tx.commit().await.expect("commit");
    taken.answer["deployments"][0]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("a deployment id")
}

fn relay_settings(api_url: &str) -> GithubStatusSettings {
    let mut settings = GithubStatusSettings::new(api_url, "ghs_test_token");
    settings.public_url = Some("https://slipway.example".into());
    settings.poll_interval = Duration::from_millis(20);
    settings.retry_base = Duration::from_millis(20);
    settings.retry_max = Duration::from_millis(100);
    settings
}

/// Waits until the fake GitHub has accepted `n` statuses.
async fn wait_for(fake: &FakeGithub, n: usize) -> Vec<Received> {
    let started = Instant::now();
    loop {
        let delivered = fake.delivered();
        if delivered.len() >= n {
            return delivered;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "only {} of {n} statuses arrived: {:?}",
            delivered.len(),
            fake.all()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn states_for(received: &[Received], github_id: i64) -> Vec<String> {
    received
        .iter()
        .filter(|r| r.path == format!("/repos/acme/web/deployments/{github_id}/statuses"))
        .map(|r| r.body["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn statuses_are_posted_in_order_in_githubs_format_and_retried(pool: PgPool) {
    static CRYPTO: Once = Once::new();
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("gh-status", rolling(), json!({}))).await;
    let (fake, api_url, server) = FakeGithub::start(2).await;
    let relay = StatusRelay::new(pool.clone(), relay_settings(&api_url)).expect("a relay");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(async move {
        relay
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    let sim = sim();
    let engine = engine(&pool, &sim, settings("w1"));

    let first = from_github(&pool, "1.0.0", 41).await;
    drive_to(&engine, &pool, first, DeploymentStatus::Succeeded).await;
    let received = wait_for(&fake, 2).await;
    assert_eq!(states_for(&received, 41), ["in_progress", "success"]);
    // The first two attempts failed with 500 and were retried, in order.
    let all = fake.all();
    assert_eq!(all.len(), 4, "{all:?}");
    assert!(
        all[..2]
            .iter()
            .all(|r| r.answered == StatusCode::INTERNAL_SERVER_ERROR)
    );
    assert!(
        all.iter().take(3).all(|r| r.body["state"] == "in_progress"),
        "{all:?}"
    );

    // GitHub's exact request format.
    for r in &received {
        let h = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        assert_eq!(h("accept"), "application/vnd.github+json");
        assert_eq!(h("x-github-api-version"), "2022-11-28");
        assert_eq!(h("authorization"), "Bearer ghs_test_token");
        assert!(
            h("user-agent").starts_with("slipway/"),
            "{:?}",
            h("user-agent")
        );
        assert!(h("content-type").starts_with("application/json"));
        assert_eq!(r.body["environment"], "production");
        assert_eq!(
            r.body["log_url"],
            json!(format!("https://slipway.example/v1/deployments/{first}"))
        );
        let description = r.body["description"].as_str().unwrap_or_default();
        assert!(!description.is_empty() && description.chars().count() <= 140);
    }

    // A newer GitHub deployment to the environment replaces the first: it becomes inactive
    // after the newer one succeeds.
    let second = from_github(&pool, "1.1.0", 42).await;
    drive_to(&engine, &pool, second, DeploymentStatus::Succeeded).await;
    let received = wait_for(&fake, 5).await;
    assert_eq!(states_for(&received, 42), ["in_progress", "success"]);
    assert_eq!(
        states_for(&received, 41),
        ["in_progress", "success", "inactive"]
    );
    let inactive = received
        .iter()
        .find(|r| r.body["state"] == "inactive")
        .expect("an inactive status");
    assert_eq!(inactive.body["description"], "replaced by 1.1.0");

    // Nothing is posted twice, and the relay stops when asked.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(fake.delivered().len(), 5, "{:?}", fake.all());
    stop.send(()).expect("the relay runs");
    tokio::time::timeout(Duration::from_secs(5), relay_task)
        .await
        .expect("the relay stops")
        .expect("the relay task ends cleanly");
    server.abort();
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_superseded_github_deployment_is_inactive_and_a_refused_status_is_given_up(pool: PgPool) {
    static CRYPTO: Once = Once::new();
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    seed_app(&pool).await;
    put_env(
        &pool,
        "prod",
        &env_spec(
            "gh-superseded",
            rolling(),
            json!({"supersede_queued": true}),
        ),
    )
    .await;
    let (fake, api_url, server) = FakeGithub::start(0).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("w1"));
    // Two queued at once: starting the newer supersedes the older.
    let older = from_github(&pool, "2.0.0", 51).await;
    let newer = from_github(&pool, "2.1.0", 52).await;
    drive_to(&engine, &pool, newer, DeploymentStatus::Succeeded).await;
    assert_eq!(get(&pool, older).await.status, DeploymentStatus::Superseded);

    let relay = StatusRelay::new(pool.clone(), relay_settings(&api_url)).expect("a relay");
    let mut conn = pool.acquire().await.expect("acquire");
    relay.round(&mut conn).await.expect("a relay round");
    let received = fake.delivered();
    assert_eq!(states_for(&received, 51), ["inactive"]);
    assert_eq!(states_for(&received, 52), ["in_progress", "success"]);

    // GitHub refusing a status for good (the repository is gone there: 404) gives it up
    // after one attempt, and the deployment's later statuses still go out.
    let push = |state: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO github_status_outbox (deployment_id, state, description)
                 VALUES ($1, $2, 'test')",
            )
            .bind(newer)
            .bind(state)
            .execute(&pool)
            .await
            .expect("queue a status");
        }
    };
    let repository = |repo: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query("UPDATE github_deployments SET repository = $2 WHERE deployment_id = $1")
                .bind(newer)
                .bind(repo)
                .execute(&pool)
                .await
                .expect("point it elsewhere");
        }
    };
    repository("acme/gone").await;
    push("failure").await;
    relay.round(&mut conn).await.expect("a relay round");
    repository("acme/web").await;
    push("inactive").await;
    relay.round(&mut conn).await.expect("a relay round");
    let refused: Vec<_> = fake
        .all()
        .into_iter()
        .filter(|r| r.answered == StatusCode::NOT_FOUND)
        .collect();
    assert_eq!(refused.len(), 1, "tried once: {refused:?}");
    assert_eq!(
        states_for(&fake.delivered(), 52),
        ["in_progress", "success", "inactive"]
    );
    let abandoned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM github_status_outbox
         WHERE deployment_id = $1 AND abandoned_at IS NOT NULL AND last_error LIKE '%404%'",
    )
    .bind(newer)
    .fetch_one(&pool)
    .await
    .expect("read the outbox");
    assert_eq!(abandoned, 1);
    server.abort();
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn two_relays_on_one_database_post_each_status_once(pool: PgPool) {
    static CRYPTO: Once = Once::new();
    CRYPTO.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    seed_app(&pool).await;
    put_env(
        &pool,
        "prod",
        &env_spec("gh-two-relays", rolling(), json!({})),
    )
    .await;
    let (fake, api_url, server) = FakeGithub::start(0).await;
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let relay = StatusRelay::new(pool.clone(), relay_settings(&api_url)).expect("a relay");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        stops.push(stop);
        tasks.push(tokio::spawn(async move {
            relay
                .run(async {
                    let _ = stopped.await;
                })
                .await;
        }));
    }
    let sim = sim();
    let engine = engine(&pool, &sim, settings("w1"));
    let id = from_github(&pool, "3.0.0", 61).await;
    drive_to(&engine, &pool, id, DeploymentStatus::Succeeded).await;
    wait_for(&fake, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(states_for(&fake.all(), 61), ["in_progress", "success"]);
    for stop in stops {
        stop.send(()).expect("the relay runs");
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the relay stops")
            .expect("the relay task ends cleanly");
    }
    server.abort();
}
