//! Each strategy end to end on the simulated cluster, driven by a real engine over Postgres.

use serde_json::json;
use slipway_core::rollout::{CommandKind, ServiceRole, Track};
use slipway_core::{DeploymentStatus, Outcome, ServingHealth};
use slipway_engine::intake;
use slipway_store::PgPool;

use crate::common::*;

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn rolling_replaces_the_previous_release(pool: PgPool) {
    seed_app(&pool).await;
    put_env(&pool, "prod", &env_spec("shop", rolling(), json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));

    let v1 = deploy_ok(&engine, &pool, "prod", "1.0.0").await;
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.release(Track::Stable), Some(&release("1.0.0")));
    let v1_events = events_of(&pool, v1).await;
    assert_eq!(
        first(&v1_events, "started").data["previous"],
        json!(null),
        "nothing served before the first deployment"
    );

    let second = deploy(&pool, "prod", "2.0.0").await;
    let d = drive_to(&engine, &pool, second, DeploymentStatus::Succeeded).await;
    assert_eq!(d.outcome, Some(Outcome::Promoted));
    assert_eq!(d.phase.as_deref(), Some("succeeded"));
    assert_eq!(d.serving.health, ServingHealth::Healthy);
    assert_eq!(d.serving.version.as_deref(), Some("2.0.0"));
    assert_eq!(d.reason, None);

    let log = events_of(&pool, second).await;
    let kinds = kinds(&log);
    assert_eq!(kinds.first(), Some(&"queued"), "{kinds:?}");
    assert_eq!(kinds.get(1), Some(&"started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"promoted"), "{kinds:?}");
    let started = first(&log, "started");
    assert_eq!(started.data["previous"]["version"], "1.0.0");
    assert_eq!(started.data["attempt"], 1);
    assert!(log.windows(2).all(|w| w[1].seq == w[0].seq + 1));

    // The first deployment is untouched by the second; the cluster runs only the new release.
    let v1_now = get(&pool, v1).await;
    assert_eq!(v1_now.status, DeploymentStatus::Succeeded);
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.workloads.len(), 1, "{snap:?}");
    let stable = &snap.workloads[&Track::Stable];
    assert_eq!(stable.spec.release, release("2.0.0"));
    assert_eq!(stable.spec.replicas, REPLICAS);
    assert_eq!(stable.status.available, REPLICAS);
    assert_eq!(stable.status.old, 0);
    assert!(
        stable
            .templates
            .iter()
            .all(|t| t.release == release("2.0.0")),
        "{stable:?}"
    );
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn blue_green_waits_for_promote_then_switches(pool: PgPool) {
    seed_app(&pool).await;
    let strategy = json!({"type": "blue_green", "auto_promote": false, "scale_down_delay": "0s"});
    put_env(&pool, "prod", &env_spec("shop", strategy, json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));

    // First deployment: nothing served, Blue goes straight live.
    deploy_ok(&engine, &pool, "prod", "1.0.0").await;
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.services.get(&ServiceRole::Active), Some(&Track::Blue));
    assert_eq!(snap.replicas(Track::Blue), Some(REPLICAS));

    // Second: Green comes up on preview, then the deployment waits for a person.
    let id = deploy(&pool, "prod", "2.0.0").await;
    let d = drive_to_phase(
        &engine,
        &pool,
        id,
        DeploymentStatus::Paused,
        "awaiting_promotion",
    )
    .await;
    assert_eq!(d.outcome, None);
    assert_eq!(d.serving.version.as_deref(), Some("1.0.0"));
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.services.get(&ServiceRole::Active), Some(&Track::Blue));
    assert_eq!(
        snap.services.get(&ServiceRole::Preview),
        Some(&Track::Green)
    );
    assert_eq!(snap.release(Track::Green), Some(&release("2.0.0")));
    assert_eq!(snap.release(Track::Blue), Some(&release("1.0.0")));

    // Nothing moves while it waits, however often the engine looks.
    for _ in 0..3 {
        let mut conn = pool.acquire().await.expect("acquire");
        sqlx::query("UPDATE deployments SET next_wake_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *conn)
            .await
            .expect("wake");
        drop(conn);
        engine.run_once(4).await.expect("step");
    }
    assert_eq!(get(&pool, id).await.status, DeploymentStatus::Paused);
    assert_eq!(
        sim.snapshot(&target("shop"))
            .services
            .get(&ServiceRole::Active),
        Some(&Track::Blue)
    );

    let mut tx = pool.begin().await.expect("begin");
    intake::command(
        &mut tx,
        id,
        CommandKind::Promote,
        "bob",
        Some("looks good"),
        None,
    )
    .await
    .expect("promote accepted");
    tx.commit().await.expect("commit");

    let d = drive_to(&engine, &pool, id, DeploymentStatus::Succeeded).await;
    assert_eq!(d.outcome, Some(Outcome::Promoted));
    assert_eq!(d.serving.version.as_deref(), Some("2.0.0"));
    assert_eq!(d.serving.health, ServingHealth::Healthy);

    let snap = sim.snapshot(&target("shop"));
    let live: Vec<Track> = [Track::Blue, Track::Green]
        .into_iter()
        .filter(|t| snap.replicas(*t).unwrap_or(0) > 0)
        .collect();
    assert_eq!(live, vec![Track::Green], "exactly one color has replicas");
    assert_eq!(snap.replicas(Track::Green), Some(REPLICAS));
    assert_eq!(snap.replicas(Track::Blue), Some(0));
    assert_eq!(snap.services.get(&ServiceRole::Active), Some(&Track::Green));
    assert_eq!(
        snap.services.get(&ServiceRole::Preview),
        Some(&Track::Green)
    );

    let log = events_of(&pool, id).await;
    let command = first(&log, "command");
    assert_eq!(command.actor, "bob");
    assert_eq!(command.data["command"], "promote");
    assert_eq!(command.data["reason"], "looks good");
    let kinds = kinds(&log);
    assert!(kinds.contains(&"paused"), "{kinds:?}");
    assert!(kinds.contains(&"traffic_shifted"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"promoted"), "{kinds:?}");
}

#[sqlx::test(migrator = "slipway_store::MIGRATOR")]
async fn canary_walks_its_steps_and_promotes(pool: PgPool) {
    seed_app(&pool).await;
    let strategy = json!({"type": "canary", "steps": [
        {"set_weight": 25}, {"pause": {"duration": "1s"}}, {"set_weight": 50}, {"pause": {}}
    ]});
    put_env(&pool, "prod", &env_spec("shop", strategy, json!({}))).await;
    let sim = sim();
    let engine = engine(&pool, &sim, settings("a"));

    // First deployment: no stable yet, so straight to full size without steps.
    deploy_ok(&engine, &pool, "prod", "1.0.0").await;
    assert_eq!(sim.snapshot(&target("shop")).replicas(Track::Canary), None);

    let id = deploy(&pool, "prod", "2.0.0").await;
    // The timed pause passes by itself; the indefinite one holds.
    let d = drive_to_phase(&engine, &pool, id, DeploymentStatus::Paused, "paused_step").await;
    assert_eq!(d.step, Some(3));
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.release(Track::Canary), Some(&release("2.0.0")));
    assert_eq!(snap.replicas(Track::Canary), Some(2), "50% of 4 replicas");
    assert_eq!(snap.release(Track::Stable), Some(&release("1.0.0")));
    assert_eq!(snap.replicas(Track::Stable), Some(REPLICAS));

    let log = events_of(&pool, id).await;
    let messages: Vec<&str> = log.iter().map(|e| e.message.as_str()).collect();
    for expected in [
        "canary at 25% (1 replicas)",
        "step 1: pausing for 1s",
        "step 1: pause over",
        "canary at 50% (2 replicas)",
        "step 3: paused until promoted",
    ] {
        assert!(messages.contains(&expected), "{expected:?} in {messages:?}");
    }
    // The timed pause was not skipped (its second runs from the step's clock reading, the
    // events carry the database's).
    let pause_started = log
        .iter()
        .find(|e| e.message == "step 1: pausing for 1s")
        .map(|e| e.at);
    let pause_over = log
        .iter()
        .find(|e| e.message == "step 1: pause over")
        .map(|e| e.at);
    let waited = pause_over.zip(pause_started).map(|(b, a)| b - a);
    assert!(
        waited.is_some_and(|w| w >= chrono::Duration::milliseconds(500)),
        "{waited:?}"
    );

    let mut tx = pool.begin().await.expect("begin");
    intake::command(&mut tx, id, CommandKind::Promote, "bob", None, None)
        .await
        .expect("promote accepted");
    tx.commit().await.expect("commit");

    let d = drive_to(&engine, &pool, id, DeploymentStatus::Succeeded).await;
    assert_eq!(d.outcome, Some(Outcome::Promoted));
    assert_eq!(d.serving.version.as_deref(), Some("2.0.0"));
    assert_eq!(d.serving.health, ServingHealth::Healthy);
    let snap = sim.snapshot(&target("shop"));
    assert_eq!(snap.release(Track::Stable), Some(&release("2.0.0")));
    assert_eq!(snap.replicas(Track::Stable), Some(REPLICAS));
    assert_eq!(snap.workloads[&Track::Stable].status.available, REPLICAS);
    assert_eq!(snap.replicas(Track::Canary), Some(0));
    assert_eq!(snap.workloads[&Track::Canary].status.available, 0);
    let log = events_of(&pool, id).await;
    let kinds = kinds(&log);
    assert_eq!(kinds.last(), Some(&"promoted"), "{kinds:?}");
}
