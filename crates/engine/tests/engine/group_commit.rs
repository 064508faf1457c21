//! Group commit of step writes: several workers' writes go out as one statement, each fenced
//! by its own claim, each answered on its own; a batch the database refuses is written step
//! by step.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use slipway_core::DeploymentStatus;
use slipway_core::Outcome;
use slipway_core::rollout::CommandKind;
use slipway_engine::group_commit::{OwnedStepWrite, StepEvent, StepJournal, StepWriter};
use slipway_store::rollouts::{self, Claimed};
use slipway_store::{PgPool, StoreError, commands};
use uuid::Uuid;

use crate::common::*;

/// `n` canaries parked at an indefinite pause (one per environment), each with a promote
/// command waiting, all claimed by worker `w`: what `n` busy workers hold before they write.
async fn claimed_parked(pool: &PgPool, n: usize) -> Vec<Claimed> {
    seed_app(pool).await;
    let sim = sim();
    let engine = engine(pool, &sim, settings("a"));
    let strategy = json!({"type": "canary", "steps": [{"set_weight": 10}, {"pause": {}}]});
    let mut ids = Vec::new();
    for i in 0..n {
        let env = format!("e{i}");
        put_env(
            pool,
            &env,
            &env_spec(&format!("ns{i}"), strategy.clone(), json!({})),
        )
        .await;
        deploy_ok(&engine, pool, &env, "1.0.0").await;
        let id = deploy(pool, &env, "2.0.0").await;
        drive_to_phase(&engine, pool, id, DeploymentStatus::Paused, "paused_step").await;
        ids.push(id);
    }
    let mut conn = pool.acquire().await.expect("acquire");
    for id in &ids {
        commands::insert(&mut conn, *id, CommandKind::Promote, "carol", None, None)
            .await
            .expect("a command");
    }
    let mut claimed = rollouts::claim_due(&mut conn, "w", Duration::from_secs(30), 100)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), n);
    claimed.sort_by_key(|c| ids.iter().position(|id| *id == c.claim.id));
    claimed
}

/// What a worker would write for `c`: its state unchanged (or `status`), two events, its
/// command consumed, a journal row, due again at `wake`.
fn write_of(c: &Claimed, message: &str, wake: DateTime<Utc>) -> OwnedStepWrite {
    let seen: Vec<Uuid> = c.pending.iter().map(|p| p.id).collect();
    let event = |kind: slipway_core::EventKind| StepEvent {
        kind,
        actor: "w".into(),
        message: message.into(),
        data: json!({"k": kind.as_str()}),
    };
    OwnedStepWrite {
        claim: c.claim,
        state: c.record.state.clone().expect("a running state"),
        events: vec![
            event(slipway_core::EventKind::Command),
            event(slipway_core::EventKind::StepCompleted),
        ],
        consumed: seen.clone(),
        seen,
        journal: Some(StepJournal {
            worker: "w".into(),
            started_at: Utc::now(),
            observation: json!({"workloads": {}}),
            actions: json!([]),
        }),
        wake: Some(wake),
        hold: None,
    }
}

/// The transaction that last wrote the deployment row.
async fn writer_xid(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT xmin::text FROM deployments WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("xmin")
}

async fn by_w(pool: &PgPool, id: Uuid) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM deployment_events WHERE deployment_id = $1 AND actor = 'w'),
                (SELECT count(*) FROM deployment_journal WHERE deployment_id = $1 AND worker = 'w'),
                (SELECT count(*) FROM commands WHERE deployment_id = $1 AND consumed_at IS NOT NULL)",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("counts")
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn concurrent_step_writes_commit_together_each_fenced_by_its_own_claim(pool: PgPool) {
    let claimed = claimed_parked(&pool, 3).await;
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.claim.id).collect();

    // The second deployment's lease is taken over: w's claim on it is stale.
    sqlx::query(
        "UPDATE deployments SET lease_expires_at = now() - interval '1 second',
             next_wake_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(ids[1])
    .execute(&pool)
    .await
    .expect("expire");
    let mut conn = pool.acquire().await.expect("acquire");
    let taken = rollouts::claim_due(&mut conn, "other", Duration::from_secs(30), 10)
        .await
        .expect("claim");
    assert_eq!(
        taken.iter().map(|c| c.claim.id).collect::<Vec<_>>(),
        vec![ids[1]]
    );
    let stale_before = row(&pool, ids[1]).await;

    // The first one finishes: its environment's queued deployment must be woken.
    let queued = deploy(&pool, "e0", "3.0.0").await;
    sqlx::query("UPDATE deployments SET next_wake_at = now() + interval '1 hour' WHERE id = $1")
        .bind(queued)
        .execute(&pool)
        .await
        .expect("park the queued one");

    let wake = Utc::now() + chrono::Duration::hours(1);
    let mut w0 = write_of(&claimed[0], "zero", wake);
    w0.state.status = DeploymentStatus::Succeeded;
    w0.state.outcome = Some(Outcome::Promoted);
    w0.wake = None;
    let writer = StepWriter::new(pool.clone());
    let (r0, r1, r2) = tokio::join!(
        writer.write(w0),
        writer.write(write_of(&claimed[1], "one", wake)),
        writer.write(write_of(&claimed[2], "two", wake)),
    );

    // Each step its own answer: the stale one lost its lease, the others are written.
    assert!(matches!(r1, Err(StoreError::LeaseLost)), "{r1:?}");
    for (result, c) in [(r0, &claimed[0]), (r2, &claimed[2])] {
        let written = result.expect("a fenced write with a live claim");
        assert_eq!(written.tick, c.record.tick + 1);
        let (events, journal, consumed) = by_w(&pool, c.claim.id).await;
        assert_eq!((events, journal, consumed), (2, 1, 1));
        let (seqs, last, owner): (Vec<i64>, i64, Option<String>) = sqlx::query_as(
            "SELECT array(SELECT seq FROM deployment_events WHERE deployment_id = d.id
                          AND actor = 'w' ORDER BY seq),
                    d.last_event_seq, d.lease_owner
             FROM deployments d WHERE d.id = $1",
        )
        .bind(c.claim.id)
        .fetch_one(&pool)
        .await
        .expect("events");
        assert_eq!(
            seqs,
            vec![last - 1, last],
            "numbered after the previous events"
        );
        assert_eq!(written.last_event_seq, last);
        assert_eq!(owner, None, "lease released");
        let journal: (i64, i64, String) = sqlx::query_as(
            "SELECT tick, epoch, status_after::text FROM deployment_journal
             WHERE deployment_id = $1 AND worker = 'w'",
        )
        .bind(c.claim.id)
        .fetch_one(&pool)
        .await
        .expect("journal");
        assert_eq!((journal.0, journal.1), (written.tick, c.claim.epoch));
    }
    assert_eq!(get(&pool, ids[0]).await.status, DeploymentStatus::Succeeded);
    let (paused_wake, queued_due): (Option<DateTime<Utc>>, bool) = sqlx::query_as(
        "SELECT (SELECT next_wake_at FROM deployments WHERE id = $1),
                (SELECT next_wake_at <= now() FROM deployments WHERE id = $2)",
    )
    .bind(ids[2])
    .bind(queued)
    .fetch_one(&pool)
    .await
    .expect("wake-ups");
    let paused_wake = paused_wake.expect("a wake-up");
    assert!(
        (paused_wake - wake).num_milliseconds().abs() < 1,
        "{paused_wake} vs {wake}"
    );
    assert!(queued_due, "the finished deployment's queue was woken");

    // One statement: both rows were written by the same transaction.
    assert_eq!(
        writer_xid(&pool, ids[0]).await,
        writer_xid(&pool, ids[2]).await
    );
    // The stale claim wrote nothing at all.
    assert_eq!(row(&pool, ids[1]).await, stale_before);
    assert_eq!(by_w(&pool, ids[1]).await, (0, 0, 0));
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_batch_the_database_refuses_is_written_step_by_step(pool: PgPool) {
    let claimed = claimed_parked(&pool, 3).await;
    let ids: Vec<Uuid> = claimed.iter().map(|c| c.claim.id).collect();
    // One step's event is refused by the database (as any bad value would be).
    sqlx::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.message = 'poison' THEN RAISE EXCEPTION 'poisoned event'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON deployment_events
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&pool)
    .await
    .expect("the trigger");
    let poisoned_before = row(&pool, ids[1]).await;

    let wake = Utc::now() + chrono::Duration::hours(1);
    let writer = StepWriter::new(pool.clone());
    let (r0, r1, r2) = tokio::join!(
        writer.write(write_of(&claimed[0], "zero", wake)),
        writer.write(write_of(&claimed[1], "poison", wake)),
        writer.write(write_of(&claimed[2], "two", wake)),
    );
    assert!(
        matches!(&r1, Err(StoreError::Database(sqlx::Error::Database(e))) if e.message() == "poisoned event"),
        "{r1:?}"
    );
    for (result, c) in [(r0, &claimed[0]), (r2, &claimed[2])] {
        let written = result.expect("the good steps are written");
        assert_eq!(written.tick, c.record.tick + 1);
        assert_eq!(by_w(&pool, c.claim.id).await, (2, 1, 1), "written once");
    }
    // Written one by one after the batch failed: separate transactions.
    assert_ne!(
        writer_xid(&pool, ids[0]).await,
        writer_xid(&pool, ids[2]).await
    );
    assert_eq!(row(&pool, ids[1]).await, poisoned_before);
    assert_eq!(by_w(&pool, ids[1]).await, (0, 0, 0));
}
