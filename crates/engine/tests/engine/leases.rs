//! Fencing: once another worker has claimed a deployment, the previous holder's claim writes
//! nothing, at the store and at the engine level.

use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use slipway_cluster::{Fault, FaultKind, FaultScope};
use slipway_core::rollout::{self, CommandKind, Observation, Track};
use slipway_core::{DeploymentStatus, Outcome};
use slipway_engine::step::{self, StepContext};
use slipway_engine::{Drivers, EngineSettings, StepOutcome};
use slipway_store::events::{self, NewEvent};
use slipway_store::leases::{self, Claim};
use slipway_store::{PgPool, StoreError, commands, journal, rollouts};
use uuid::Uuid;

use crate::common::*;

async fn count(pool: &PgPool, sql: &'static str, id: Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Claims whatever is due as `owner`; exactly one claim, of `id`.
async fn claim(pool: &PgPool, owner: &str, ttl: Duration, id: Uuid) -> Claim {
    let mut conn = pool.acquire().await.expect("acquire");
    let claims = rollouts::claim_due(&mut conn, owner, ttl, 10)
        .await
        .expect("claim");
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].claim.id, id);
    claims[0].claim
}

/// Ends `owner`'s lease as if its time had run out (a claim makes the row due again at the
/// lease's expiry).
async fn expire(pool: &PgPool, id: Uuid) {
    sqlx::query(
        "UPDATE deployments SET lease_expires_at = now() - interval '1 second',
             next_wake_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await
    .expect("expire the lease");
}

fn lost<T: std::fmt::Debug>(what: &str, result: Result<T, StoreError>) {
    assert!(
        matches!(result, Err(StoreError::LeaseLost)),
        "{what} with a stale claim: {result:?}"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_stale_claim_writes_nothing(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let id = deploy(&pool, "prod", "1.0.0").await;
    let mut conn = pool.acquire().await.expect("acquire");
    let command = commands::insert(&mut conn, id, CommandKind::Abort, "carol", None, None)
        .await
        .expect("a command");

    let a = claim(&pool, "a", Duration::from_millis(200), id).await;
    expire(&pool, id).await;
    let b = claim(&pool, "b", Duration::from_secs(30), id).await;
    assert!(b.epoch > a.epoch, "{a:?} then {b:?}");

    let before = row(&pool, id).await;
    assert_eq!(before["lease_owner"], "b");
    let record = rollouts::read(&mut conn, id).await.expect("read");
    let state = rollout::start(&record.spec, &Observation::default(), Utc::now());

    lost("load", rollouts::load(&mut conn, a).await);
    lost(
        "set_waiting",
        rollouts::set_waiting(&mut conn, a, "x", "y").await,
    );
    let cancelled = DeploymentStatus::Cancelled;
    lost(
        "finish_unstarted",
        rollouts::finish_unstarted(&mut conn, a, cancelled, Outcome::Cancelled).await,
    );
    lost("requeue", rollouts::requeue(&mut conn, a).await);
    lost(
        "heartbeat",
        leases::heartbeat(&mut conn, a, Duration::from_secs(30)).await,
    );
    lost("release", leases::release(&mut conn, a, None).await);
    let observed = json!({"workloads": {}});
    lost(
        "journal started",
        journal::started(&mut conn, a, 1, "a", &observed).await,
    );
    lost(
        "journal finished",
        journal::finished(&mut conn, a, 1, &json!([]), DeploymentStatus::Running).await,
    );
    lost(
        "consume",
        commands::consume(&mut conn, a, &[command], "applied").await,
    );
    // The one-statement step write: state, events, consumed command, journal and release.
    let stale_event = NewEvent {
        kind: slipway_core::EventKind::StepCompleted,
        actor: "a",
        message: "stale".into(),
        data: json!({}),
    };
    for starts in [false, true] {
        lost(
            "write_step",
            rollouts::write_step(
                &mut conn,
                rollouts::StepWrite {
                    claim: a,
                    state: &state,
                    events: std::slice::from_ref(&stale_event),
                    seen: &[command],
                    consumed: &[command],
                    journal: Some(rollouts::JournalEntry {
                        worker: "a",
                        started_at: Utc::now(),
                        observation: &observed,
                        actions: &json!([]),
                    }),
                    wake: Some(Utc::now()),
                    starts,
                    hold: None,
                },
            )
            .await,
        );
    }
    // Events are appended in the transaction of a fenced write: when the write finds the lease
    // gone, the event goes with it.
    {
        let mut tx = pool.begin().await.expect("begin");
        let event = NewEvent {
            kind: slipway_core::EventKind::Started,
            actor: "a",
            message: "stale".into(),
            data: json!({}),
        };
        events::append(&mut tx, id, &event).await.expect("append");
        lost(
            "set_waiting",
            rollouts::set_waiting(&mut tx, a, "x", "y").await,
        );
        tx.rollback().await.expect("rollback");
    }

    assert_eq!(
        row(&pool, id).await,
        before,
        "the stale claim changed the row"
    );
    let journal_rows = "SELECT count(*) FROM deployment_journal WHERE deployment_id = $1";
    assert_eq!(count(&pool, journal_rows, id).await, 0);
    let stale_events =
        "SELECT count(*) FROM deployment_events WHERE deployment_id = $1 AND actor = 'a'";
    assert_eq!(count(&pool, stale_events, id).await, 0);
    let pending = "SELECT count(*) FROM commands WHERE deployment_id = $1 AND consumed_at IS NULL";
    assert_eq!(count(&pool, pending, id).await, 1);

    // The holder's claim works.
    leases::heartbeat(&mut conn, b, Duration::from_secs(30))
        .await
        .expect("b's heartbeat");
    commands::consume(&mut conn, b, &[command], "applied")
        .await
        .expect("b consumes");
    leases::release(&mut conn, b, None)
        .await
        .expect("b releases");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn an_engine_step_with_a_stale_claim_is_lease_lost(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine_a = engine(&pool, &sim, settings("a"));
    let engine_b = engine(&pool, &sim, settings("b"));
    let id = deploy(&pool, "prod", "1.0.0").await;

    let a = claim(&pool, "a", Duration::from_millis(200), id).await;
    expire(&pool, id).await;
    let b = claim(&pool, "b", Duration::from_secs(30), id).await;
    let before = row(&pool, id).await;
    let calls = sim.api_calls();
    assert_eq!(
        engine_a.step(a).await.expect("a's step"),
        StepOutcome::LeaseLost
    );
    assert_eq!(row(&pool, id).await, before);
    assert_eq!(sim.api_calls(), calls, "a stale step calls no cluster");

    assert_eq!(
        engine_b.step(b).await.expect("b's step"),
        StepOutcome::Advanced
    );
    assert_eq!(get(&pool, id).await.status, DeploymentStatus::Running);
    drive_to(&engine_b, &pool, id, DeploymentStatus::Succeeded).await;
}

/// A step waiting on the cluster when its lease is taken over neither acts on the cluster nor
/// records anything once the call returns.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_step_in_flight_when_its_lease_is_taken_writes_nothing(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine_a = engine(&pool, &sim, settings("a"));
    let engine_b = engine(&pool, &sim, settings("b"));
    deploy_ok(&engine_b, &pool, "prod", "1.0.0").await;
    let id = deploy(&pool, "prod", "2.0.0").await;
    drive_to(&engine_b, &pool, id, DeploymentStatus::Running).await;

    sim.faults()
        .set(FaultScope::Cluster, Fault::Latency(Duration::from_secs(2)));
    let calls = sim.api_calls();
    let a = claim(&pool, "a", Duration::from_secs(30), id).await;
    let step = tokio::spawn({
        let engine_a = engine_a.clone();
        async move { engine_a.step(a).await }
    });
    let waited = Instant::now();
    while sim.api_calls().observe == calls.observe {
        assert!(
            waited.elapsed() < PATIENCE,
            "a's step never reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    expire(&pool, id).await;
    let b = claim(&pool, "b", Duration::from_secs(30), id).await;
    let before = row(&pool, id).await;

    let outcome = step.await.expect("a's task").expect("a's step");
    assert_eq!(outcome, StepOutcome::LeaseLost);
    assert_eq!(sim.api_calls().apply, calls.apply, "a applied nothing");
    assert_eq!(row(&pool, id).await, before);
    let by_a = "SELECT count(*) FROM deployment_journal WHERE deployment_id = $1 AND worker = 'a'";
    assert_eq!(count(&pool, by_a, id).await, 0);

    sim.faults().clear(&FaultScope::Cluster, FaultKind::Latency);
    assert_eq!(
        engine_b.step(b).await.expect("b's step"),
        StepOutcome::Advanced
    );
    let d = drive_to(&engine_b, &pool, id, DeploymentStatus::Succeeded).await;
    assert_eq!(d.serving.version.as_deref(), Some("2.0.0"));
}

/// A worker that passes its fence check and then stalls (here: in its write to the cluster)
/// until its lease has run out, another worker has taken the deployment over and acted on
/// the cluster, does not act when it resumes: its cluster call is bounded by the lease time
/// the check found left, so the cluster never sees the stale write.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_worker_stalled_after_its_fence_check_never_acts_after_its_successor(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine_b = engine(&pool, &sim, settings("b"));
    deploy_ok(&engine_b, &pool, "prod", "1.0.0").await;
    let id = deploy(&pool, "prod", "2.0.0").await;
    drive_to(&engine_b, &pool, id, DeploymentStatus::Running).await;
    let stable = |sim: &slipway_cluster::SimCluster| {
        sim.snapshot(&target("shop"))
            .release(Track::Stable)
            .cloned()
    };
    assert_eq!(stable(&sim), Some(release("1.0.0")), "nothing applied yet");

    // Worker a claims with a short lease, decides to apply 2.0.0, passes its fence check,
    // and stalls in the apply for far longer than its lease.
    let ttl = Duration::from_secs(2);
    sim.faults().set(
        FaultScope::Cluster,
        Fault::slow_next_apply(Duration::from_secs(10)),
    );
    let calls = sim.api_calls();
    let a = claim(&pool, "a", ttl, id).await;
    // Stepped by hand, without the heartbeat the engine runs beside its steps: a worker
    // whose heartbeats do not get through (a paused process, a starved runtime) is one
    // whose lease runs out while it works.
    let worker_a = StepContext::new(
        pool.clone(),
        Drivers::new(sim.clone()),
        &EngineSettings {
            lease_ttl: ttl,
            ..settings("a")
        },
    );
    let step_a = tokio::spawn(async move { step::run(&worker_a, a, 1).await });
    let waited = Instant::now();
    while sim.api_calls().apply == calls.apply {
        assert!(waited.elapsed() < PATIENCE, "a's step never reached apply");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Meanwhile the deployment is aborted; once a's lease has run out, b claims it and rolls
    // it back to 1.0.0 on the cluster.
    let mut conn = pool.acquire().await.expect("acquire");
    commands::insert(&mut conn, id, CommandKind::Abort, "carol", None, None)
        .await
        .expect("an abort");
    let d = drive_to(&engine_b, &pool, id, DeploymentStatus::RolledBack).await;
    assert_eq!(d.serving.version.as_deref(), Some("1.0.0"));
    assert_eq!(stable(&sim), Some(release("1.0.0")), "b rolled back");

    // Worker a resumes: whatever it does, 2.0.0 never reaches the cluster.
    let outcome = step_a.await.expect("a's task").expect("a's step");
    assert_ne!(outcome, StepOutcome::Advanced, "a's stale step counted");
    assert_eq!(
        stable(&sim),
        Some(release("1.0.0")),
        "the cluster saw a's stale apply after b had rolled back"
    );
    assert_eq!(get(&pool, id).await.status, DeploymentStatus::RolledBack);
}
