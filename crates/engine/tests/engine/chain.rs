//! Chained steps: a worker goes on with a deployment it holds while it is due again at once,
//! without giving the lease back in between, and every step is still written and fenced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use slipway_cluster::{Fault, FaultScope, SimCluster};
use slipway_core::rollout::CommandKind;
use slipway_core::{DeploymentStatus, Outcome};
use slipway_engine::{Engine, EngineSettings, intake};
use slipway_store::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::common::*;

/// The production loop of `engine`, until the returned sender says stop.
fn running(engine: Engine) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        engine
            .run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
    });
    (stop, task)
}

async fn stop(engine: (watch::Sender<bool>, JoinHandle<()>)) {
    engine.0.send(true).expect("stop the engine");
    engine.1.await.expect("the engine stopped");
}

/// Waits until the deployment has finished; returns it.
async fn finished(pool: &PgPool, id: Uuid) -> slipway_core::Deployment {
    let began = Instant::now();
    loop {
        let d = get(pool, id).await;
        if d.status.is_terminal() {
            return d;
        }
        assert!(
            began.elapsed() < PATIENCE,
            "deployment {id} still {} after {PATIENCE:?}",
            d.status.as_str()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(tick, epoch)` of every journal row of the deployment, in tick order.
async fn journal(pool: &PgPool, id: Uuid) -> Vec<(i64, i64)> {
    sqlx::query_as(
        "SELECT tick, epoch FROM deployment_journal WHERE deployment_id = $1 ORDER BY tick",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .expect("the journal")
}

/// The distinct epochs of journal rows, in order.
fn epochs(rows: &[(i64, i64)]) -> Vec<i64> {
    let mut epochs: Vec<i64> = rows.iter().map(|(_, e)| *e).collect();
    epochs.dedup();
    epochs
}

fn chained(name: &str, chain_steps: usize) -> EngineSettings {
    EngineSettings {
        chain_steps,
        ..settings(name)
    }
}

/// Runs a deployment of `version` to `env` to its end on a fresh engine.
async fn run_to_end(
    pool: &PgPool,
    sim: &Arc<SimCluster>,
    settings: EngineSettings,
    env: &str,
    version: &str,
) -> Uuid {
    let id = deploy(pool, env, version).await;
    let engine = running(engine(pool, sim, settings));
    let d = finished(pool, id).await;
    stop(engine).await;
    assert_eq!(d.status, DeploymentStatus::Succeeded, "{:?}", d.reason);
    id
}

/// A 4-step canary in `prod` whose 1.0.0 ran without chaining; then, with every cluster call
/// taking `latency`, 2.0.0 is requested and a chaining engine started on it.
async fn slow_canary_running(
    pool: &PgPool,
    latency: Duration,
) -> (Uuid, (watch::Sender<bool>, JoinHandle<()>)) {
    seed_app(pool).await;
    let canary = json!({"type": "canary", "steps": [
        {"set_weight": 20}, {"set_weight": 40}, {"set_weight": 60}, {"set_weight": 80}
    ]});
    put_env(pool, "prod", &env_spec("shop", canary, json!({}))).await;
    let sim = sim();
    run_to_end(pool, &sim, chained("setup", 1), "prod", "1.0.0").await;
    sim.faults()
        .set(FaultScope::Cluster, Fault::Latency(latency));
    let id = deploy(pool, "prod", "2.0.0").await;
    let engine = running(engine(pool, &sim, chained("a", 64)));
    (id, engine)
}

/// Waits until the deployment has at least `n` journal rows; returns them.
async fn journal_of_at_least(pool: &PgPool, id: Uuid, n: usize) -> Vec<(i64, i64)> {
    let began = Instant::now();
    loop {
        let rows = journal(pool, id).await;
        if rows.len() >= n {
            return rows;
        }
        assert!(began.elapsed() < PATIENCE, "the canary never stepped");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn steps_due_at_once_run_on_one_claim_and_log_what_single_steps_log(pool: PgPool) {
    seed_app(&pool).await;
    let canary = json!({"type": "canary", "steps": [{"set_weight": 25}, {"set_weight": 50}]});
    put_env(&pool, "single", &env_spec("one", canary.clone(), json!({}))).await;
    put_env(&pool, "chained", &env_spec("two", canary, json!({}))).await;
    let sim = sim();
    for env in ["single", "chained"] {
        run_to_end(&pool, &sim, chained("setup", 1), env, "1.0.0").await;
    }

    let single = run_to_end(&pool, &sim, chained("single", 1), "single", "2.0.0").await;
    let chain = run_to_end(&pool, &sim, chained("chained", 32), "chained", "2.0.0").await;

    // One step per claim: a new epoch for each.
    let one_by_one = journal(&pool, single).await;
    assert!(one_by_one.len() >= 5, "{one_by_one:?}");
    assert_eq!(
        epochs(&one_by_one).len(),
        one_by_one.len(),
        "{one_by_one:?}"
    );
    // Chained: the start and the first look share a claim, then the first look waits a
    // readiness poll (the pods it made were not there when it observed), and every later
    // step follows at once, on the second claim.
    let steps = journal(&pool, chain).await;
    assert_eq!(epochs(&steps).len(), 2, "{steps:?}");

    // The same steps, the same log (after the `queued` event, which names the environment).
    assert_eq!(steps.len(), one_by_one.len());
    let log = |events: Vec<slipway_core::DeploymentEvent>| -> Vec<(String, String)> {
        events
            .into_iter()
            .skip(1)
            .map(|e| (e.kind, e.message))
            .collect()
    };
    assert_eq!(
        log(events_of(&pool, chain).await),
        log(events_of(&pool, single).await)
    );
    // The last step gave the lease back.
    let (owner, expires): (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT lease_owner, lease_expires_at FROM deployments WHERE id = $1")
            .bind(chain)
            .fetch_one(&pool)
            .await
            .expect("the lease");
    assert_eq!((owner, expires), (None, None));
}

/// A command recorded while a chained step is in flight is read by the chain's next step.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_command_sent_during_a_chain_is_applied_by_its_next_step(pool: PgPool) {
    let (id, engine) = slow_canary_running(&pool, Duration::from_millis(150)).await;
    // Once the chain is on (the second claim, see above), a step is always in flight.
    let before = journal_of_at_least(&pool, id, 3).await;
    let mut tx = pool.begin().await.expect("begin");
    intake::command(&mut tx, id, CommandKind::Abort, "bob", None, None)
        .await
        .expect("abort accepted");
    tx.commit().await.expect("commit");
    let d = finished(&pool, id).await;
    // The command's wake-up was used by the chain: the finished deployment is not claimed
    // again for it (the epoch stays the chain's).
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(engine).await;
    let (epoch, wake): (i64, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT epoch, next_wake_at FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("the deployment's lease columns");
    assert_eq!(Some(epoch), before.last().map(|(_, e)| *e), "claimed again");
    assert_eq!(wake, None);

    assert_eq!(d.outcome, Some(Outcome::Aborted), "{:?}", d.status);
    let steps = journal(&pool, id).await;
    let held = before.last().map(|(_, e)| *e);
    assert!(
        steps[before.len()..].iter().all(|(_, e)| Some(*e) == held),
        "the abort was applied by another claim: {before:?} then {steps:?}"
    );
    let events = events_of(&pool, id).await;
    first(&events, "command");
    assert!(
        !kinds(&events).contains(&"promoted"),
        "{:?}",
        kinds(&events)
    );
}

/// A chain whose lease is taken over stops: no step of its epoch is written afterwards.
#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn a_chain_whose_lease_is_taken_over_writes_nothing_more(pool: PgPool) {
    let (id, engine) = slow_canary_running(&pool, Duration::from_millis(100)).await;
    let held = journal_of_at_least(&pool, id, 1).await[0].1;
    // Another worker claims it (as after an expired lease) and holds it.
    sqlx::query(
        "UPDATE deployments SET epoch = epoch + 1, lease_owner = 'thief',
             lease_expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .expect("take the lease over");
    let written = journal(&pool, id).await;
    let tick = get(&pool, id).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop(engine).await;

    assert_eq!(journal(&pool, id).await, written, "the old holder went on");
    assert!(written.iter().all(|(_, e)| *e == held), "{written:?}");
    let after = get(&pool, id).await;
    assert_eq!(
        (after.status, after.phase, after.step),
        (tick.status, tick.phase, tick.step)
    );
    assert!(!after.status.is_terminal());
}
