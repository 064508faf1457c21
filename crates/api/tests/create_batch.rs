//! Group commit of deployment creates: concurrent creates are written by one statement, each
//! with its own outcome. A transaction holding the environment `FOR UPDATE` stops the batch
//! task's statement (it key-share locks the environment), so the requests sent meanwhile all
//! wait in one batch: that makes the batches these tests look at deterministic.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{DEPLOYMENTS, Resp, TestApp, deployment_request};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Sends `requests` while the environment web/prod is locked: the first one alone, so the batch
/// task is stuck on it, then the others, which wait together for the next batch; then lets go
/// (after 3 s: time for every request to reach the batcher even on a loaded machine).
async fn while_stuck<F, Fut>(app: &TestApp, requests: Vec<F>) -> Vec<Resp>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    // Plans from the cache from now on: no request reads the locked environment itself.
    app.deploy("web", "prod", "ghcr.io/acme/web:0.0.1").await;
    let mut lock = app.pool.begin().await.expect("begin");
    sqlx::query(
        "SELECT e.id FROM environments e JOIN apps a ON a.id = e.app_id
         WHERE a.name = 'web' AND e.name = 'prod' FOR UPDATE OF e",
    )
    .execute(&mut *lock)
    .await
    .expect("lock the environment");
    let mut requests = requests.into_iter();
    let first = requests.next().expect("a request");
    let rest: Vec<Fut> = requests.map(|f| f()).collect();
    let (first, rest, ()) = tokio::join!(
        first(),
        async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            futures::future::join_all(rest).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(3000)).await;
            lock.commit().await.expect("unlock");
        }
    );
    let mut all = vec![first];
    all.extend(rest);
    all
}

/// The transaction id that wrote each of `ids`' deployment.
async fn xmins(pool: &PgPool, ids: &[String]) -> Vec<String> {
    sqlx::query_scalar("SELECT xmin::text FROM deployments WHERE id = ANY($1::uuid[])")
        .bind(ids)
        .fetch_all(pool)
        .await
        .expect("xmins")
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn concurrent_creates_are_written_together_each_whole(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let requests: Vec<_> = (0..64)
        .map(|i| {
            let app = &app;
            move || async move {
                app.post_keyed(
                    DEPLOYMENTS,
                    &format!("key-{i}"),
                    &json!({"image": format!("ghcr.io/acme/web:1.{i}.0")}),
                )
                .await
            }
        })
        .collect();
    let answers = while_stuck(&app, requests).await;
    let mut ids = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert!(a.header("idempotent-replayed").is_none());
        assert_eq!(a.body["image"], format!("ghcr.io/acme/web:1.{i}.0"));
        ids.push(a.body["id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 64);
    // The warm-up deployment and these 64, each with event 1, its key and its audit row.
    assert_eq!(app.count("deployments").await, 65);
    assert_eq!(
        app.count("deployment_events WHERE seq = 1").await,
        65,
        "event 1 of each"
    );
    assert_eq!(app.count("deployment_events").await, 65);
    assert_eq!(app.count("idempotency_keys").await, 64);
    assert_eq!(
        app.count("audit_log WHERE path LIKE '%/deployments' AND status = 201")
            .await,
        65
    );
    // The 63 sent while the first was stuck went in one statement (one transaction).
    let distinct: HashSet<String> = xmins(&app.pool, &ids[1..]).await.into_iter().collect();
    assert_eq!(distinct.len(), 1, "one commit for the batch: {distinct:?}");

    // Each deployment's key row, event and audit row committed with it, and the stored
    // response is the answer given.
    for (i, a) in answers.iter().enumerate() {
        let (same_tx, body): (bool, serde_json::Value) = sqlx::query_as(
            "SELECT d.xmin::text = k.xmin::text AND d.xmin::text = ev.xmin::text,
                    k.response_body
             FROM deployments d
             JOIN idempotency_keys k ON k.key = d.idempotency_key
             JOIN deployment_events ev ON ev.deployment_id = d.id AND ev.seq = 1
             WHERE d.id = $1::uuid",
        )
        .bind(&ids[i])
        .fetch_one(&app.pool)
        .await
        .expect("the deployment's rows");
        assert!(
            same_tx,
            "key row and event 1 in the deployment's transaction"
        );
        assert_eq!(body, a.body);
    }
    let audited_with: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log a
         WHERE a.status = 201 AND a.xmin::text = ANY(
             SELECT xmin::text FROM deployments WHERE id = ANY($1::uuid[]))",
    )
    .bind(&ids)
    .fetch_one(&app.pool)
    .await
    .expect("audit rows");
    assert_eq!(
        audited_with, 64,
        "each audit row in its deployment's transaction"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn duplicate_keys_in_one_batch_record_once_and_replay(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let body = deployment_request();
    let requests: Vec<_> = (0..24)
        .map(|i| {
            let (app, body) = (&app, &body);
            move || async move {
                if i % 2 == 1 {
                    app.post_keyed(DEPLOYMENTS, "same", body).await
                } else {
                    app.post_keyed(DEPLOYMENTS, &format!("own-{i}"), body).await
                }
            }
        })
        .collect();
    let answers = while_stuck(&app, requests).await;
    let same: Vec<&Resp> = answers.iter().skip(1).step_by(2).collect();
    let fresh: Vec<&&Resp> = same
        .iter()
        .filter(|a| a.header("idempotent-replayed").is_none())
        .collect();
    assert_eq!(fresh.len(), 1, "one of the duplicates is recorded");
    for a in &same {
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert_eq!(
            a.body, fresh[0].body,
            "the replays answer the same deployment"
        );
    }
    for a in answers.iter().step_by(2) {
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        assert!(a.header("idempotent-replayed").is_none());
    }
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deployments WHERE idempotency_key = 'same'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(recorded, 1);
    // The warm-up, 12 own keys and one for the shared key.
    assert_eq!(app.count("deployments").await, 14);
    assert_eq!(app.count("deployment_events").await, 14);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn one_failing_create_does_not_fail_its_batch(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    // A constraint only one request violates: the batch's statement fails as a whole.
    sqlx::query(
        "ALTER TABLE deployments ADD CONSTRAINT poison
         CHECK (image <> 'ghcr.io/acme/web:6.6.6') NOT VALID",
    )
    .execute(&app.pool)
    .await
    .expect("add the constraint");
    let requests: Vec<_> = (0..12)
        .map(|i| {
            let app = &app;
            move || async move {
                let image = if i == 6 {
                    "ghcr.io/acme/web:6.6.6".to_owned()
                } else {
                    format!("ghcr.io/acme/web:2.{i}.0")
                };
                // Not `send`, which fails the test on a 500.
                let response = app
                    .json_request(reqwest::Method::POST, DEPLOYMENTS, &json!({"image": image}))
                    .header("idempotency-key", format!("k-{i}"))
                    .send()
                    .await
                    .expect("send");
                let status = response.status();
                let headers = response.headers().clone();
                let text = response.text().await.expect("body");
                Resp {
                    status,
                    headers,
                    body: serde_json::from_str(&text).unwrap_or_default(),
                    text,
                }
            }
        })
        .collect();
    let answers = while_stuck(&app, requests).await;
    let mut ids = Vec::new();
    for (i, a) in answers.iter().enumerate() {
        if i == 6 {
            assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.text);
            assert_eq!(
                a.headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("application/problem+json")
            );
        } else {
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
            ids.push(a.body["id"].as_str().expect("id").to_owned());
        }
    }
    assert_eq!(app.count("deployments").await, 12, "the warm-up and 11");
    assert_eq!(app.count("deployment_events").await, 12);
    assert_eq!(
        app.count("idempotency_keys").await,
        11,
        "no key for the failed one"
    );
    let failed_key: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE key = 'k-6'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(failed_key, 0);
    // The batch of 11 was written again one statement each.
    let distinct: HashSet<String> = xmins(&app.pool, &ids[1..]).await.into_iter().collect();
    assert_eq!(
        distinct.len(),
        10,
        "written one by one after the batch failed"
    );

    // The failed request can be retried with its key once the cause is gone.
    sqlx::query("ALTER TABLE deployments DROP CONSTRAINT poison")
        .execute(&app.pool)
        .await
        .expect("drop the constraint");
    let retried = app
        .post_keyed(
            DEPLOYMENTS,
            "k-6",
            &json!({"image": "ghcr.io/acme/web:6.6.6"}),
        )
        .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text);
    assert!(retried.header("idempotent-replayed").is_none());
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_environment_changed_under_a_batch_replans_only_its_rows(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    app.seed_env("web", "staging").await;
    let staging = "/v1/apps/web/environments/staging/deployments";
    // Plan staging's creates from the cache, then move staging to a new revision behind the
    // cache's back: its rows in the batch find it changed, re-plan, and are written next.
    app.deploy("web", "staging", "ghcr.io/acme/web:0.0.1").await;
    sqlx::query(
        "UPDATE environments SET revision = revision + 1
         WHERE name = 'staging'",
    )
    .execute(&app.pool)
    .await
    .expect("bump staging");
    let requests: Vec<_> = (0..10)
        .map(|i| {
            let app = &app;
            move || async move {
                let path = if i % 2 == 0 { DEPLOYMENTS } else { staging };
                app.post_keyed(
                    path,
                    &format!("k-{i}"),
                    &json!({"image": format!("web:3.{i}")}),
                )
                .await
            }
        })
        .collect();
    let answers = while_stuck(&app, requests).await;
    for a in &answers {
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    }
    let prod: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deployments d JOIN environments e ON e.id = d.environment_id
         WHERE e.name = 'prod'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    let staged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deployments d JOIN environments e ON e.id = d.environment_id
         WHERE e.name = 'staging'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!((prod, staged), (6, 6), "the warm-ups and five each");
    assert_eq!(app.count("idempotency_keys").await, 10);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_create_whose_caller_gives_up_is_neither_lost_nor_doubled(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    app.seed().await;
    let body = json!({"image": "ghcr.io/acme/web:4.0.0"});
    let requests: Vec<_> = (0..6)
        .map(|i| {
            let (app, body) = (&app, &body);
            move || async move {
                if i != 3 {
                    return app.post_keyed(DEPLOYMENTS, &format!("k-{i}"), body).await;
                }
                // This caller hangs up while its create waits for the stuck batch.
                let sent = app
                    .json_request(reqwest::Method::POST, DEPLOYMENTS, body)
                    .header("idempotency-key", "impatient")
                    .timeout(Duration::from_millis(200))
                    .send()
                    .await;
                assert!(sent.is_err(), "the caller gave up before any answer");
                Resp {
                    status: StatusCode::REQUEST_TIMEOUT,
                    headers: Default::default(),
                    body: serde_json::Value::Null,
                    text: String::new(),
                }
            }
        })
        .collect();
    let answers = while_stuck(&app, requests).await;
    for (i, a) in answers.iter().enumerate() {
        if i != 3 {
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        }
    }
    // Its retry is answered: recorded now or replayed, but one deployment either way.
    let retried = app.post_keyed(DEPLOYMENTS, "impatient", &body).await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text);
    let again = app.post_keyed(DEPLOYMENTS, "impatient", &body).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body["id"], retried.body["id"]);
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deployments WHERE idempotency_key = 'impatient'")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(recorded, 1);
    // The warm-up, the five others and the impatient one.
    assert_eq!(app.count("deployments").await, 7);
    assert_eq!(app.count("deployment_events").await, 7);
}

/// A pool of the default size on the test's database (the test's own has 5 connections, too
/// few for the batch task to keep one: `held_connection::SMALL_POOL`).
async fn pool_of_20(pool: &PgPool) -> PgPool {
    PgPoolOptions::new()
        .max_connections(20)
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("pool")
}

/// The backend that writes the batches: the one whose last statement was the create statement.
async fn batch_backends(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'WITH input AS%'",
    )
    .fetch_all(pool)
    .await
    .expect("backends")
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn creates_go_on_after_the_database_drops_the_writers_connection(pool: PgPool) {
    let app = TestApp::spawn(pool_of_20(&pool).await).await;
    app.seed().await;
    app.deploy("web", "prod", "ghcr.io/acme/web:0.0.1").await;
    // The batch task keeps the connection it wrote with; the database drops it (a restart, a
    // failover, an operator's pg_terminate_backend).
    let writers = batch_backends(&app.pool).await;
    assert_eq!(
        writers.len(),
        1,
        "one backend writes the creates: {writers:?}"
    );
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(writers[0])
        .fetch_one(&app.pool)
        .await
        .expect("terminate");
    assert!(killed);

    // The next create may find the connection gone: it is answered 503 (never 500), and its
    // retry with the same key is written once.
    let body = json!({"image": "ghcr.io/acme/web:1.0.0"});
    let mut answers = Vec::new();
    for _ in 0..3 {
        let r = app.post_keyed(DEPLOYMENTS, "after-the-drop", &body).await;
        let status = r.status;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            r.assert_problem(503, "unavailable");
        }
        answers.push(status);
        if status == StatusCode::CREATED {
            break;
        }
    }
    assert_eq!(
        answers.last(),
        Some(&StatusCode::CREATED),
        "the retries were answered {answers:?}"
    );
    assert!(
        answers[..answers.len() - 1]
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE),
        "{answers:?}"
    );
    let recorded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM deployments WHERE idempotency_key = 'after-the-drop'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert_eq!(recorded, 1);

    // The creates after it are written, on a connection that works.
    for i in 0..3 {
        app.deploy("web", "prod", &format!("ghcr.io/acme/web:2.{i}.0"))
            .await;
    }
    let now = batch_backends(&app.pool).await;
    assert!(!now.contains(&writers[0]), "{now:?}");
    assert_eq!(app.count("deployments").await, 5);
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_idle_create_writer_gives_its_connection_back(pool: PgPool) {
    let app = TestApp::spawn(pool_of_20(&pool).await).await;
    app.seed().await;
    app.deploy("web", "prod", "ghcr.io/acme/web:0.0.1").await;
    let in_use = |pool: &PgPool| pool.size() as usize - pool.num_idle();
    // Right after its batch the writer keeps its connection for the next one...
    assert!(
        in_use(&app.pool) > listeners(&app.pool).await,
        "a connection held"
    );
    // ...and once nothing has been written for a while, only the event hub's LISTEN
    // connection is out of the pool: a server with nothing to write holds no other (and
    // closing the pool does not wait for it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (held, listening) = (in_use(&app.pool), listeners(&app.pool).await);
        if held == listening {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{held} connections out of the pool after 10 s, {listening} of them listening"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connections of this database that are listening for notifications.
async fn listeners(pool: &PgPool) -> usize {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN %'",
    )
    .fetch_one(pool)
    .await
    .expect("listeners");
    usize::try_from(n).unwrap_or(0)
}
