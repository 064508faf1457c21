//! The store against a real Postgres: the per-deployment event log.

#![expect(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

use std::sync::Arc;

use serde_json::json;
use slipway_core::{ClusterKind, ClusterSpec, DeploymentStatus, EnvironmentSpec};
use slipway_store::events::{self, NewEvent};
use slipway_store::{PgConnection, PgPool, apps, clusters, environments};
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::Barrier;
use uuid::Uuid;

/// Registers a cluster, an app and its environment `prod`.
async fn environment(conn: &mut PgConnection) -> Uuid {
    let cluster = ClusterSpec {
        name: "local".into(),
        kind: ClusterKind::Simulated,
        kubeconfig_path: None,
        context: None,
    };
    clusters::insert(conn, &cluster).await.expect("cluster");
    let cluster_id = clusters::id_of(conn, "local").await.expect("cluster id");
    apps::insert(conn, "web", "").await.expect("app");
    let app_id = apps::id_of(conn, "web").await.expect("app id");
    let spec: EnvironmentSpec = serde_json::from_value(json!({
        "cluster": "local",
        "namespace": "web",
        "workload": {"name": "web", "container": "web", "replicas": 2, "port": 8080}
    }))
    .expect("environment spec");
    environments::insert(conn, app_id, "prod", cluster_id, &spec)
        .await
        .expect("environment");
    environments::find(conn, "web", "prod")
        .await
        .expect("find")
        .id
}

/// A queued deployment without events. Written with SQL: these tests are about the event log,
/// not about how a deployment is planned.
async fn deployment(conn: &mut PgConnection, environment_id: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO deployments (id, environment_id, cluster_id, image, version, strategy,
             rollout, source_kind, source, created_by)
         SELECT $1, $2, e.cluster_id, 'web:1', '1', '{\"type\": \"rolling\"}', '{}', 'api',
             '{}', 'test'
         FROM environments e WHERE e.id = $2",
    )
    .bind(id)
    .bind(environment_id)
    .execute(conn)
    .await
    .expect("deployment");
    id
}

fn event(n: usize) -> NewEvent<'static> {
    NewEvent {
        kind: slipway_core::EventKind::StepCompleted,
        actor: "test",
        message: format!("event {n}"),
        data: json!({"n": n}),
    }
}

async fn seqs(conn: &mut PgConnection, id: Uuid) -> Vec<i64> {
    sqlx::query_scalar("SELECT seq FROM deployment_events WHERE deployment_id = $1 ORDER BY seq")
        .bind(id)
        .fetch_all(conn)
        .await
        .expect("seqs")
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn events_are_numbered_from_one_without_gaps(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("connection");
    let env = environment(&mut conn).await;
    let id = deployment(&mut conn, env).await;
    let other = deployment(&mut conn, env).await;

    for n in 1..=3 {
        let seq = events::append(&mut conn, id, &event(n))
            .await
            .expect("append");
        assert_eq!(seq, i64::try_from(n).expect("small"));
    }
    // Each deployment has its own sequence.
    assert_eq!(
        events::append(&mut conn, other, &event(1))
            .await
            .expect("append"),
        1
    );

    // An append that is rolled back leaves no gap.
    let mut tx = conn.begin().await.expect("begin");
    assert_eq!(
        events::append(&mut tx, id, &event(4))
            .await
            .expect("append"),
        4
    );
    tx.rollback().await.expect("rollback");
    assert_eq!(
        events::append(&mut conn, id, &event(4))
            .await
            .expect("append"),
        4
    );

    assert_eq!(seqs(&mut conn, id).await, [1, 2, 3, 4]);
    let page = events::list(&mut conn, id, Some(1), 2).await.expect("list");
    let listed: Vec<i64> = page.items.iter().map(|e| e.seq).collect();
    assert_eq!(listed, [2, 3]);
    assert_eq!(page.next, Some(3));
    assert_eq!(page.items[0].message, "event 2");
    assert_eq!(page.items[0].data, json!({"n": 2}));

    let missing = events::append(&mut conn, Uuid::now_v7(), &event(1)).await;
    assert!(matches!(
        missing,
        Err(slipway_store::StoreError::NotFound("deployment"))
    ));
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn concurrent_appends_never_leave_gaps_or_duplicates(pool: PgPool) {
    const WRITERS: usize = 10;
    let mut conn = pool.acquire().await.expect("connection");
    let env = environment(&mut conn).await;
    let id = deployment(&mut conn, env).await;
    assert_eq!(
        events::append(&mut conn, id, &event(0))
            .await
            .expect("first"),
        1
    );
    drop(conn);

    // Ten separate connections, each with its own transaction open before any appends, so
    // that every append races the others.
    let options: PgConnectOptions = (*pool.connect_options()).clone();
    let barrier = Arc::new(Barrier::new(WRITERS));
    let mut writers = tokio::task::JoinSet::new();
    for n in 1..=WRITERS {
        let options = options.clone();
        let barrier = barrier.clone();
        writers.spawn(async move {
            let mut conn = PgConnection::connect_with(&options).await.expect("connect");
            let seq = {
                let mut tx = conn.begin().await.expect("begin");
                barrier.wait().await;
                let seq = events::append(&mut tx, id, &event(n))
                    .await
                    .expect("append");
                tx.commit().await.expect("commit");
                seq
            };
            conn.close().await.expect("close");
            seq
        });
    }
    let mut got = writers.join_all().await;
    got.sort_unstable();
    let expected: Vec<i64> = (2..=11).collect();
    assert_eq!(got, expected, "each writer got its own next number");

    let mut conn = pool.acquire().await.expect("connection");
    let stored = seqs(&mut conn, id).await;
    assert_eq!(stored, (1..=11).collect::<Vec<i64>>());
    let last: i64 = sqlx::query_scalar("SELECT last_event_seq FROM deployments WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await
        .expect("counter");
    assert_eq!(last, 11);
}

/// The migration that makes a workload belong to one environment meets a database in which
/// two environments already share one: it stops, naming them, and changes nothing, rather
/// than choosing an owner (the older environment may be the one that took the workload over).
#[sqlx::test(migrations = false)]
async fn environments_sharing_a_workload_stop_the_migration_and_are_named(pool: PgPool) {
    let before = 20_261_208_000_019;
    slipway_store::MIGRATOR
        .run_to(before, &pool)
        .await
        .expect("migrate to just before the uniqueness");
    let mut conn = pool.acquire().await.expect("acquire");
    environment(&mut conn).await;
    let app_id = apps::id_of(&mut conn, "web").await.expect("app id");
    let cluster_id = clusters::id_of(&mut conn, "local")
        .await
        .expect("cluster id");
    let spec: EnvironmentSpec = serde_json::from_value(json!({
        "cluster": "local",
        "namespace": "web",
        "workload": {"name": "web", "container": "web", "replicas": 2, "port": 8080}
    }))
    .expect("environment spec");
    environments::insert(&mut conn, app_id, "staging", cluster_id, &spec)
        .await
        .expect("a second environment on prod's workload, as the old schema allowed");
    drop(conn);

    let err = slipway_store::MIGRATOR
        .run(&pool)
        .await
        .expect_err("the migration refuses the shared workload");
    let message = err.to_string();
    assert!(
        message.contains("web/prod, web/staging") && message.contains("workload web"),
        "{message}"
    );
    let environments: i64 = sqlx::query_scalar("SELECT count(*) FROM environments")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(environments, 2, "nothing was dropped");

    // Once one of them is pointed elsewhere, the migration goes through.
    sqlx::query(
        "UPDATE environments SET spec = jsonb_set(spec, '{workload,name}', '\"web-staging\"')
         WHERE name = 'staging'",
    )
    .execute(&pool)
    .await
    .expect("point staging elsewhere");
    slipway_store::MIGRATOR
        .run(&pool)
        .await
        .expect("the migration goes through");
}

/// Evaluates a boolean SQL expression over a deployment's `status` (and an `outcome`, set).
async fn holds_for(pool: &PgPool, expression: &str, status: DeploymentStatus) -> bool {
    let sql = format!(
        "SELECT coalesce(({expression}), false)
         FROM (SELECT $1::deployment_status AS status, 'failed'::deployment_outcome AS outcome) s"
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(status.as_str())
        .fetch_one(pool)
        .await
        .expect("the expression")
}

/// The SQL that names a set of statuses (the functions the statements use, the partial index
/// that keeps one active deployment per environment, the check that only a finished deployment
/// has an outcome) means what `DeploymentStatus::is_active` and `is_terminal` say, for every
/// status.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_status_sets_in_sql_are_the_rust_ones(pool: PgPool) {
    let (index, check): (String, String) = sqlx::query_as(
        "SELECT pg_get_expr(i.indpred, i.indrelid),
                (SELECT pg_get_expr(c.conbin, c.conrelid) FROM pg_constraint c
                 WHERE c.conname = 'deployments_outcome_only_when_terminal')
         FROM pg_index i
         WHERE i.indexrelid = 'deployments_one_active_per_environment'::regclass",
    )
    .fetch_one(&pool)
    .await
    .expect("the index predicate and the check");
    for status in DeploymentStatus::ALL {
        let active = status.is_active();
        let terminal = status.is_terminal();
        assert_eq!(
            holds_for(&pool, "slipway_is_active(status)", status).await,
            active,
            "slipway_is_active({status:?})"
        );
        assert_eq!(
            holds_for(&pool, "slipway_is_terminal(status)", status).await,
            terminal,
            "slipway_is_terminal({status:?})"
        );
        assert_eq!(
            holds_for(&pool, &index, status).await,
            active,
            "{index} for {status:?}"
        );
        assert_eq!(
            // `outcome IS NULL OR <terminal>`, with an outcome set.
            holds_for(&pool, &check, status).await,
            terminal,
            "{check} for {status:?}"
        );
    }
}
