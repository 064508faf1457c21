//! Two engines sharing one database: every deployment finishes, and no step is done twice.

use std::time::{Duration, Instant};

use serde_json::json;
use slipway_core::rollout::Track;
use slipway_engine::EngineSettings;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::watch;

use crate::common::*;

const DEPLOYMENTS: usize = 200;
const DEADLINE: Duration = Duration::from_secs(120);

async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("a count")
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn two_engines_share_two_hundred_deployments(_: PgPoolOptions, connect: PgConnectOptions) {
    // Two engines with 8 steps each, their listeners, and the test itself: more connections
    // than the default test pool has.
    let pool = PgPoolOptions::new()
        .max_connections(24)
        .connect_with(connect)
        .await
        .expect("a pool");
    seed_app(&pool).await;
    let mut tx = pool.begin().await.expect("begin");
    for i in 0..DEPLOYMENTS {
        let spec = env_spec(&format!("ns-{i:03}"), rolling(), json!({}));
        let env = format!("env-{i:03}");
        slipway_engine::intake::put_environment(
            &mut tx,
            APP,
            &env,
            &spec,
            slipway_engine::Precondition::None,
        )
        .await
        .expect("an environment");
        record(&mut tx, &env, "1.0.0").await;
    }
    tx.commit().await.expect("commit");

    let sim = sim();
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for name in ["a", "b"] {
        let engine = engine(
            &pool,
            &sim,
            EngineSettings {
                concurrency: 8,
                ..settings(name)
            },
        );
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            engine
                .run(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        }));
    }

    let began = Instant::now();
    loop {
        let done = scalar(
            &pool,
            "SELECT count(*) FROM deployments WHERE status = 'succeeded'",
        )
        .await;
        if done == DEPLOYMENTS as i64 {
            break;
        }
        if began.elapsed() > DEADLINE {
            let by_status: Vec<(String, i64)> = sqlx::query_as(
                "SELECT status::text, count(*) FROM deployments GROUP BY 1 ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .expect("statuses");
            panic!("only {done} of {DEPLOYMENTS} succeeded within {DEADLINE:?}: {by_status:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = began.elapsed();
    stop.send(true).expect("stop the engines");
    for worker in workers {
        worker.await.expect("an engine stopped");
    }
    eprintln!("{DEPLOYMENTS} deployments on two engines took {took:?}");

    // No step was done twice: for each (deployment, tick), at most one finished journal row.
    let doubled = scalar(
        &pool,
        "SELECT count(*) FROM (SELECT deployment_id, tick FROM deployment_journal
             GROUP BY deployment_id, tick
             HAVING count(*) FILTER (WHERE finished_at IS NOT NULL) > 1) twice",
    )
    .await;
    assert_eq!(doubled, 0, "steps done by two workers");
    // Every persisted decision has its journal entry (tick 1 is the start, not journalled).
    let mismatched = scalar(
        &pool,
        "SELECT count(*) FROM deployments d WHERE d.tick - 1 <> (SELECT count(*)
             FROM deployment_journal j WHERE j.deployment_id = d.id AND j.finished_at IS NOT NULL)",
    )
    .await;
    assert_eq!(mismatched, 0);
    // Each deployment started once and was promoted once, and its log has no gaps.
    let odd = scalar(
        &pool,
        "SELECT count(*) FROM deployments d WHERE
             (SELECT count(*) FROM deployment_events e WHERE e.deployment_id = d.id AND e.kind = 'started') <> 1
          OR (SELECT count(*) FROM deployment_events e WHERE e.deployment_id = d.id AND e.kind = 'promoted') <> 1
          OR (SELECT count(*) FROM deployment_events e WHERE e.deployment_id = d.id) <> d.last_event_seq",
    )
    .await;
    assert_eq!(odd, 0);
    let leased = scalar(
        &pool,
        "SELECT count(*) FROM deployments WHERE lease_owner IS NOT NULL OR next_wake_at IS NOT NULL",
    )
    .await;
    assert_eq!(leased, 0, "finished deployments are neither leased nor due");

    let by_worker: Vec<(String, i64)> = sqlx::query_as(
        "SELECT worker, count(*) FROM deployment_journal GROUP BY worker ORDER BY worker",
    )
    .fetch_all(&pool)
    .await
    .expect("work by worker");
    eprintln!("journal rows by worker: {by_worker:?}");
    let workers: Vec<&str> = by_worker.iter().map(|(w, _)| w.as_str()).collect();
    assert_eq!(workers, ["a", "b"], "both engines did some of the work");
    assert!(by_worker.iter().all(|(_, n)| *n > 0));

    assert_eq!(sim.target_count(), DEPLOYMENTS);
    for i in [0, DEPLOYMENTS / 2, DEPLOYMENTS - 1] {
        let snap = sim.snapshot(&target(&format!("ns-{i:03}")));
        assert_eq!(snap.release(Track::Stable), Some(&release("1.0.0")));
        assert_eq!(snap.workloads[&Track::Stable].status.available, REPLICAS);
    }
    pool.close().await;
}
