//! The queue of an environment: one active deployment at a time, in creation order, or only
//! the newest when `supersede_queued` is set; a queued deployment can be called off.

use serde_json::json;
use slipway_core::rollout::{CommandKind, Track};
use slipway_core::{DeploymentStatus, Outcome};
use slipway_engine::{IntakeError, intake};
use slipway_store::PgPool;
use uuid::Uuid;

use crate::common::*;

/// Records several deployments to `env` in one transaction, in order.
async fn queue(pool: &PgPool, env: &str, versions: &[&str]) -> Vec<Uuid> {
    let mut tx = pool.begin().await.expect("begin");
    let mut ids = Vec::new();
    for v in versions {
        ids.push(record(&mut tx, env, v).await);
    }
    tx.commit().await.expect("commit");
    ids
}

async fn command(pool: &PgPool, id: Uuid, kind: CommandKind) -> Result<Uuid, IntakeError> {
    let mut tx = pool.begin().await.expect("begin");
    let result = intake::command(&mut tx, id, kind, "carol", Some("not now"), None).await;
    tx.commit().await.expect("commit");
    result.map(|(command, _)| command)
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn queued_deployments_run_one_at_a_time_in_creation_order(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    let ids = queue(&pool, "prod", &["1.0.0", "2.0.0", "3.0.0"]).await;

    for id in &ids {
        drive(&engine, &pool, *id, "a terminal status", |d| {
            d.status.is_terminal()
        })
        .await;
    }
    let mut spans = Vec::new();
    for (id, version) in ids.iter().zip(["1.0.0", "2.0.0", "3.0.0"]) {
        let d = get(&pool, *id).await;
        assert_eq!(d.status, DeploymentStatus::Succeeded, "{version}");
        assert_eq!(d.serving.version.as_deref(), Some(version));
        let log = events_of(&pool, *id).await;
        let started = first(&log, "started");
        spans.push((started.at, first(&log, "promoted").at));
        assert_eq!(
            log.iter().filter(|e| e.kind == "started").count(),
            1,
            "{version}"
        );
    }
    // Each started after the one before it finished: in order, never two at once.
    for pair in spans.windows(2) {
        let ((_, done), (next_start, _)) = (pair[0], pair[1]);
        assert!(done <= next_start, "{spans:?}");
    }
    let previous: Vec<serde_json::Value> = {
        let mut out = Vec::new();
        for id in &ids {
            out.push(
                first(&events_of(&pool, *id).await, "started").data["previous"]["version"].clone(),
            );
        }
        out
    };
    assert_eq!(previous, vec![json!(null), json!("1.0.0"), json!("2.0.0")]);
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.release(Track::Stable), Some(&release("3.0.0")));
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn the_newest_queued_deployment_supersedes_older_ones(pool: PgPool) {
    seed_app(&pool).await;
    let spec = env_spec("shop", rolling(), json!({"supersede_queued": true}));
    put_env(&pool, "prod", &spec).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));

    let active = deploy(&pool, "prod", "1.0.0").await;
    drive_to(&engine, &pool, active, DeploymentStatus::Running).await;
    let queued = queue(&pool, "prod", &["2.0.0", "3.0.0"]).await;
    let (older, newest) = (queued[0], queued[1]);

    drive_to(&engine, &pool, newest, DeploymentStatus::Succeeded).await;
    assert_eq!(get(&pool, active).await.status, DeploymentStatus::Succeeded);
    let d = get(&pool, older).await;
    assert_eq!(d.status, DeploymentStatus::Superseded);
    assert_eq!(d.outcome, Some(Outcome::Superseded));
    let log = events_of(&pool, older).await;
    assert_eq!(kinds(&log), ["queued", "superseded"]);
    assert_eq!(
        first(&log, "superseded").data["superseded_by"],
        newest.to_string()
    );

    // The newest went straight from 1.0.0 to 3.0.0.
    let log = events_of(&pool, newest).await;
    assert_eq!(first(&log, "started").data["previous"]["version"], "1.0.0");
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.release(Track::Stable), Some(&release("3.0.0")));
    let ever_ran: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deployment_journal WHERE deployment_id = $1")
            .bind(older)
            .fetch_one(&pool)
            .await
            .expect("journal");
    assert_eq!(ever_ran, 0, "the superseded deployment never ran a step");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_queued_deployment_aborted_by_command_is_cancelled(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    let active = deploy(&pool, "prod", "1.0.0").await;
    drive_to(&engine, &pool, active, DeploymentStatus::Running).await;
    let waiting = deploy(&pool, "prod", "2.0.0").await;

    // Only abort makes sense for a queued deployment.
    match command(&pool, waiting, CommandKind::Pause).await {
        Err(IntakeError::Conflict(detail)) => assert!(detail.contains("queued"), "{detail}"),
        other => panic!("pause of a queued deployment: {other:?}"),
    }
    let abort = command(&pool, waiting, CommandKind::Abort)
        .await
        .expect("abort accepted");

    let d = drive_to(&engine, &pool, waiting, DeploymentStatus::Cancelled).await;
    assert_eq!(d.outcome, Some(Outcome::Cancelled));
    assert_eq!(d.serving.version, None);
    let log = events_of(&pool, waiting).await;
    assert_eq!(kinds(&log), ["queued", "cancelled"]);
    let cancelled = first(&log, "cancelled");
    assert_eq!(cancelled.actor, "carol");
    assert_eq!(cancelled.data["reason"], "not now");
    let (consumed, outcome): (bool, Option<String>) =
        sqlx::query_as("SELECT consumed_at IS NOT NULL, outcome FROM commands WHERE id = $1")
            .bind(abort)
            .fetch_one(&pool)
            .await
            .expect("the command");
    assert!(consumed);
    assert_eq!(outcome.as_deref(), Some("applied"));

    // The active deployment is not affected; the cluster never saw 2.0.0.
    let d = drive_to(&engine, &pool, active, DeploymentStatus::Succeeded).await;
    assert_eq!(d.serving.version.as_deref(), Some("1.0.0"));
    assert_eq!(
        get(&pool, waiting).await.status,
        DeploymentStatus::Cancelled
    );
    let snap = sim.snapshot(&target("shop"));
    let stable = &snap.workloads[&Track::Stable];
    assert!(
        stable
            .templates
            .iter()
            .all(|t| t.release == release("1.0.0"))
    );
}

/// Backends of this database waiting for a lock.
async fn lock_waiters(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

async fn until_lock_waiters(pool: &PgPool, n: i64) {
    let began = std::time::Instant::now();
    while lock_waiters(pool).await < n {
        assert!(began.elapsed() < PATIENCE, "never {n} lock waiters");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Claims exactly `id` as `owner` (whatever else is due stays due).
async fn claim_only(pool: &PgPool, owner: &str, id: Uuid) -> slipway_store::leases::Claim {
    let mut tx = pool.begin().await.expect("begin");
    let others: Vec<(Uuid, Option<chrono::DateTime<chrono::Utc>>)> = sqlx::query_as(
        "SELECT id, next_wake_at FROM deployments WHERE id <> $1 AND lease_owner IS NULL",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .expect("others");
    sqlx::query("UPDATE deployments SET next_wake_at = NULL WHERE id <> $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("hide the others");
    sqlx::query("UPDATE deployments SET next_wake_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .expect("make it due");
    let claims =
        slipway_store::rollouts::claim_due(&mut tx, owner, std::time::Duration::from_secs(30), 10)
            .await
            .expect("claim");
    for (other, wake) in others {
        sqlx::query("UPDATE deployments SET next_wake_at = $2 WHERE id = $1")
            .bind(other)
            .bind(wake)
            .execute(&mut *tx)
            .await
            .expect("restore");
    }
    tx.commit().await.expect("commit");
    assert_eq!(claims.len(), 1, "{claims:?}");
    claims[0].claim
}

/// The active deployment finishes (and wakes the queue) while a queued one is deciding that
/// it has to wait: the queued one must not sleep through that wake-up.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_queued_deployment_does_not_miss_the_end_of_the_active_one(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    let active = deploy(&pool, "prod", "1.0.0").await;
    drive_to(&engine, &pool, active, DeploymentStatus::Running).await;
    engine.run_once(4).await.expect("apply 1.0.0");
    let waiting = deploy(&pool, "prod", "2.0.0").await;

    // The next step of `active` finishes it. Hold the queued row so that step's wake-up of
    // the queue, then the queued deployment's own release, queue up behind the lock in turn.
    let claim_active = claim_only(&pool, "a", active).await;
    let claim_waiting = claim_only(&pool, "b", waiting).await;
    let mut hold = pool.begin().await.expect("begin");
    sqlx::query("SELECT 1 FROM deployments WHERE id = $1 FOR UPDATE")
        .bind(waiting)
        .execute(&mut *hold)
        .await
        .expect("lock the queued row");
    let finishing = tokio::spawn({
        let engine = engine.clone();
        async move { engine.step(claim_active).await }
    });
    until_lock_waiters(&pool, 1).await;
    let deciding = tokio::spawn({
        let engine = engine.clone();
        async move { engine.step(claim_waiting).await }
    });
    until_lock_waiters(&pool, 2).await;
    hold.rollback().await.expect("release the row");
    finishing.await.expect("task").expect("step");
    deciding.await.expect("task").expect("step");
    assert_eq!(get(&pool, active).await.status, DeploymentStatus::Succeeded);

    let mut conn = pool.acquire().await.expect("acquire");
    let wake = slipway_store::rollouts::next_wake_at(&mut conn, waiting)
        .await
        .expect("wake");
    drop(conn);
    assert!(
        wake.is_some_and(|w| w <= chrono::Utc::now()),
        "the queued deployment sleeps until {wake:?}"
    );
    drive_to(&engine, &pool, waiting, DeploymentStatus::Succeeded).await;
}

/// Each of `ids`' epoch (bumped by every claim) and when it is next due, in seconds from now
/// (negative: due).
async fn parked(pool: &PgPool, ids: &[Uuid]) -> Vec<(i64, f64)> {
    sqlx::query_as(
        "SELECT d.epoch, extract(epoch FROM d.next_wake_at - now())::float8
         FROM unnest($1::uuid[]) WITH ORDINALITY AS i(id, n)
         JOIN deployments d ON d.id = i.id ORDER BY i.n",
    )
    .bind(ids)
    .fetch_all(pool)
    .await
    .expect("epochs and wake-ups")
}

async fn due_in(pool: &PgPool, ids: &[Uuid]) -> Vec<f64> {
    parked(pool, ids)
        .await
        .into_iter()
        .map(|(_, due)| due)
        .collect()
}

async fn epochs(pool: &PgPool, ids: &[Uuid]) -> Vec<i64> {
    parked(pool, ids)
        .await
        .into_iter()
        .map(|(epoch, _)| epoch)
        .collect()
}

/// Runs the engine until the due times of `ids` (see [`due_in`]) satisfy `ready`.
async fn run_until_due(
    engine: &slipway_engine::Engine,
    pool: &PgPool,
    ids: &[Uuid],
    what: &str,
    ready: impl Fn(&[f64]) -> bool,
) -> Vec<f64> {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let due = due_in(pool, ids).await;
        if ready(&due) {
            return due;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not {what}: due in {due:?} s"
        );
        if engine.run_once(16).await.expect("a step").is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_deployment_that_ends_wakes_only_the_head_of_its_queue(pool: PgPool) {
    seed_app(&pool).await;
    // Each deployment stops at an open pause until promoted: the active one stays active.
    let canary = json!({"type": "canary", "steps": [{"set_weight": 10}, {"pause": {}}]});
    put_env(&pool, "prod", &env_spec("shop", canary, json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));
    deploy_ok(&engine, &pool, "prod", "1.0.0").await;
    let paused =
        |engine, id| drive_to_phase(engine, &pool, id, DeploymentStatus::Paused, "paused_step");
    let active = deploy(&pool, "prod", "2.0.0").await;
    paused(&engine, active).await;
    let queued = queue(&pool, "prod", &["3.0.0", "4.0.0", "5.0.0"]).await;
    // Each is looked at once and parks: the head (3.0.0) until the queue re-check (30 s), the
    // ones behind it ten times as long.
    let due = run_until_due(&engine, &pool, &queued, "all parked", |due| {
        due.iter().all(|s| *s > 0.0)
    })
    .await;
    assert!((20.0..=31.0).contains(&due[0]), "{due:?}");
    assert!(
        due[1..].iter().all(|s| (290.0..=301.0).contains(s)),
        "{due:?}"
    );
    let parked = epochs(&pool, &queued).await;

    // 2.0.0 ends: 3.0.0 is woken and starts; 4.0.0 and 5.0.0 are not even claimed.
    command(&pool, active, CommandKind::Promote)
        .await
        .expect("promote accepted");
    drive_to(&engine, &pool, active, DeploymentStatus::Succeeded).await;
    paused(&engine, queued[0]).await;
    let after = epochs(&pool, &queued).await;
    assert_eq!(after[1..], parked[1..], "the ones behind were left alone");
    let due = due_in(&pool, &queued[1..]).await;
    assert!(due.iter().all(|s| *s > 200.0), "{due:?}");

    // The new head (4.0.0), called off while 3.0.0 runs, hands the turn to 5.0.0 as it goes,
    // and the queue goes on in order when 3.0.0 ends.
    command(&pool, queued[1], CommandKind::Abort)
        .await
        .expect("abort accepted");
    drive_to(&engine, &pool, queued[1], DeploymentStatus::Cancelled).await;
    // 5.0.0 was woken as the new head, found 3.0.0 active and parks as the head does.
    run_until_due(
        &engine,
        &pool,
        &queued[2..],
        "5.0.0 parked as the head",
        |due| (0.0..=31.0).contains(&due[0]),
    )
    .await;
    command(&pool, queued[0], CommandKind::Promote)
        .await
        .expect("promote accepted");
    drive_to(&engine, &pool, queued[0], DeploymentStatus::Succeeded).await;
    paused(&engine, queued[2]).await;
    command(&pool, queued[2], CommandKind::Promote)
        .await
        .expect("promote accepted");
    let d = drive_to(&engine, &pool, queued[2], DeploymentStatus::Succeeded).await;
    assert_eq!(d.serving.version.as_deref(), Some("5.0.0"));
}
