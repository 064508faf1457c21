//! One statement per write: a step write, a start included, is the batched statement with a
//! batch of one, and a create recorded in the caller's transaction is the batched create
//! statement, with its hints sent at the commit.

use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use slipway_core::rollout::{self, Observation, RolloutState};
use slipway_core::{DeploymentStatus, EventKind};
use slipway_store::events::NewEvent;
use slipway_store::rollouts::{self, Claimed, StepWrite};
use slipway_store::{PgPool, StoreError};
use uuid::Uuid;

use crate::common::*;

fn started_event() -> NewEvent<'static> {
    NewEvent {
        kind: EventKind::Started,
        actor: "slipway",
        message: "started".into(),
        data: json!({}),
    }
}

/// The write that starts a claimed deployment in `state`, with its one event.
fn start_of<'a>(c: &Claimed, state: &'a RolloutState, events: &'a [NewEvent<'a>]) -> StepWrite<'a> {
    StepWrite {
        claim: c.claim,
        state,
        events,
        seen: &[],
        consumed: &[],
        journal: None,
        wake: Some(Utc::now()),
        starts: true,
        hold: None,
    }
}

/// The start of two queued deployments claimed together, through one `write_steps`: the one
/// still queued starts, the one cancelled meanwhile is not brought back to life.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_batched_start_writes_only_while_the_deployment_is_queued(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "a", &env_spec("a", rolling(), json!({}))).await;
    put_env(&pool, "b", &env_spec("b", rolling(), json!({}))).await;
    let queued = deploy(&pool, "a", "1.0.0").await;
    let cancelled = deploy(&pool, "b", "1.0.0").await;
    let mut conn = pool.acquire().await.expect("acquire");
    let mut claimed = rollouts::claim_due(&mut conn, "w", Duration::from_secs(30), 10)
        .await
        .expect("claim");
    claimed.sort_by_key(|c| c.claim.id != queued);
    assert_eq!(claimed.len(), 2);
    // Cancelled while the worker looked at the cluster (as a supersede would do).
    sqlx::query("UPDATE deployments SET status = 'cancelled', outcome = 'cancelled' WHERE id = $1")
        .bind(cancelled)
        .execute(&pool)
        .await
        .expect("cancel");
    let before = row(&pool, cancelled).await;

    let states: Vec<_> = claimed
        .iter()
        .map(|c| rollout::start(&c.record.spec, &Observation::default(), Utc::now()))
        .collect();
    let events = [started_event()];
    let writes: Vec<StepWrite<'_>> = claimed
        .iter()
        .zip(&states)
        .map(|(c, state)| start_of(c, state, &events))
        .collect();
    let written = rollouts::write_steps(&mut conn, &writes)
        .await
        .expect("a batch may start deployments");
    assert_eq!(written.len(), 2);
    let first = written[0].expect("the queued one starts");
    assert_eq!(first.last_event_seq, 2);
    assert_eq!(get(&pool, queued).await.status, DeploymentStatus::Running);
    assert_eq!(written[1], None, "no longer queued: nothing written");
    assert_eq!(row(&pool, cancelled).await, before);
}

/// A lone start is the same statement: refused by the one-active index like any write, and
/// answered `LeaseLost` once the deployment is no longer queued.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_lone_start_is_a_batch_of_one(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "a", &env_spec("a", rolling(), json!({}))).await;
    let id = deploy(&pool, "a", "1.0.0").await;
    let mut conn = pool.acquire().await.expect("acquire");
    let claimed = rollouts::claim_due(&mut conn, "w", Duration::from_secs(30), 10)
        .await
        .expect("claim");
    let c = &claimed[0];
    assert_eq!(c.claim.id, id);
    let state = rollout::start(&c.record.spec, &Observation::default(), Utc::now());
    let events = [started_event()];
    let write = start_of(c, &state, &events);
    let written = rollouts::write_step(&mut conn, write).await.expect("start");
    assert_eq!(written.tick, c.record.tick + 1);
    // Running now: a second start with the same claim finds it no longer queued.
    let again = rollouts::write_step(&mut conn, write).await;
    assert!(matches!(again, Err(StoreError::LeaseLost)), "{again:?}");
}

/// A deployment recorded in the caller's transaction (a webhook delivery's) wakes the engines
/// and the event streams when that transaction commits, and not before.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_create_in_a_transaction_sends_its_hints_at_the_commit(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "a", &env_spec("a", rolling(), json!({}))).await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .expect("listener");
    listener
        .listen_all(["slipway_wake", "slipway_events"])
        .await
        .expect("listen");
    let mut tx = pool.begin().await.expect("begin");
    let id: Uuid = record(&mut tx, "a", "1.0.0").await;
    let early = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(early.is_err(), "a hint before the commit: {early:?}");
    tx.commit().await.expect("commit");
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let note = tokio::time::timeout(Duration::from_secs(5), listener.recv())
            .await
            .expect("a notification within 5 s")
            .expect("recv");
        heard.push((note.channel().to_owned(), note.payload().to_owned()));
    }
    heard.sort();
    assert_eq!(
        heard,
        [
            ("slipway_events".to_owned(), format!("{id}:1")),
            ("slipway_wake".to_owned(), id.to_string()),
        ]
    );
}

/// A cluster that refuses a deployment for good (here: its kubeconfig does not exist) fails
/// it with the reason, in one step write: the failed state and its event, the lease given
/// back, no wake-up left.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_cluster_that_refuses_for_good_fails_the_deployment(pool: PgPool) {
    seed_app(&pool).await;
    let mut conn = pool.acquire().await.expect("acquire");
    let gone = slipway_core::ClusterSpec {
        name: "gone".into(),
        kind: slipway_core::ClusterKind::Kubernetes,
        kubeconfig_path: Some("/nonexistent/kubeconfig".into()),
        context: None,
    };
    slipway_store::clusters::insert(&mut conn, &gone)
        .await
        .expect("the cluster");
    put_env(
        &pool,
        "k",
        &env_spec("k", rolling(), json!({"cluster": "gone"})),
    )
    .await;
    let id = deploy(&pool, "k", "1.0.0").await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("w"));
    let d = drive_to(&engine, &pool, id, DeploymentStatus::Failed).await;
    assert_eq!(d.outcome, Some(slipway_core::Outcome::Failed));
    let reason = d.reason.expect("a failure reason");
    let events = events_of(&pool, id).await;
    let last = events.last().expect("events");
    assert_eq!(last.kind.as_str(), "failed");
    assert_eq!(last.seq, i64::try_from(events.len()).expect("a count"));
    assert!(
        last.message.starts_with(&reason.code),
        "{last:?} vs {reason:?}"
    );
    let stored = row(&pool, id).await;
    assert_eq!(stored["lease_owner"], serde_json::Value::Null);
    assert_eq!(stored["next_wake_at"], serde_json::Value::Null);
    assert_eq!(stored["last_event_seq"], json!(events.len()));
}
