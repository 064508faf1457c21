//! The harness: seeds clusters, apps, environments and deployments through `intake` (as the
//! API does), builds engines over a shared `SimCluster`, and steps them until a condition
//! holds, bounded in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use slipway_cluster::{SimCluster, SystemClock, Target};
use slipway_core::rollout::Release;
use slipway_core::{
    Channel, ClusterSpec, Deployment, DeploymentEvent, DeploymentRequest, DeploymentStatus,
    EnvironmentSpec, NewApp, TrafficRouting, Workload,
};
use slipway_engine::intake::{self, Precondition};
use slipway_engine::{Drivers, Engine, EngineSettings};
use slipway_store::deployments::{self, Requester};
use slipway_store::{PgPool, events};
use uuid::Uuid;

/// The app every test deploys.
pub(crate) const APP: &str = "web";
/// Who asks for deployments.
pub(crate) const REQUESTER: &str = "alice";
/// Replicas of every test workload.
pub(crate) const REPLICAS: u32 = 4;
/// How long a test waits for the engine before giving up.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

/// A simulated cluster on wall-clock time: instant readiness, default faults none.
pub(crate) fn sim() -> Arc<SimCluster> {
    Arc::new(SimCluster::new(Arc::new(SystemClock)))
}

/// Engine settings for tests: fast polling and retries, a long lease.
pub(crate) fn settings(worker: &str) -> EngineSettings {
    EngineSettings {
        worker: worker.to_owned(),
        concurrency: 8,
        lease_ttl: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
        retry_after: Duration::from_millis(500),
        queue_recheck: Duration::from_secs(30),
        chain_steps: 32,
    }
}

pub(crate) fn engine(pool: &PgPool, sim: &Arc<SimCluster>, settings: EngineSettings) -> Engine {
    Engine::new(pool.clone(), Drivers::new(sim.clone()), settings)
}

/// Registers the simulated cluster `local` and the app `web`.
pub(crate) async fn seed_app(pool: &PgPool) {
    let mut tx = pool.begin().await.expect("begin");
    let cluster = ClusterSpec {
        name: "local".into(),
        kind: slipway_core::ClusterKind::Simulated,
        kubeconfig_path: None,
        context: None,
    };
    intake::register_cluster(&mut tx, &cluster)
        .await
        .expect("register the cluster");
    let app = NewApp {
        name: APP.into(),
        description: "storefront".into(),
    };
    intake::create_app(&mut tx, &app)
        .await
        .expect("create the app");
    tx.commit().await.expect("commit");
}

/// An environment spec as the API takes it: namespace `ns`, workload `web` with
/// [`REPLICAS`], the given strategy; `extra` fields are merged in (e.g. `supersede_queued`).
pub(crate) fn env_spec(ns: &str, strategy: Value, extra: Value) -> EnvironmentSpec {
    let mut spec = json!({
        "cluster": "local",
        "namespace": ns,
        "workload": {"name": "web", "container": "web", "replicas": REPLICAS, "port": 8080},
        "strategy": strategy,
        "progress_deadline": "10m",
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(spec).expect("a valid environment spec")
}

/// Creates (or replaces) the environment `name` of the app.
pub(crate) async fn put_env(pool: &PgPool, name: &str, spec: &EnvironmentSpec) {
    let mut tx = pool.begin().await.expect("begin");
    intake::put_environment(&mut tx, APP, name, spec, Precondition::None)
        .await
        .expect("put the environment");
    tx.commit().await.expect("commit");
}

/// The image of a version.
pub(crate) fn image(version: &str) -> String {
    format!("ghcr.io/acme/web:{version}")
}

pub(crate) fn release(version: &str) -> Release {
    Release {
        image: image(version),
        version: version.to_owned(),
        pod_labels: Default::default(),
    }
}

/// Requests a deployment of `version` to `env`, as [`REQUESTER`]; returns its id.
pub(crate) async fn deploy(pool: &PgPool, env: &str, version: &str) -> Uuid {
    let mut tx = pool.begin().await.expect("begin");
    let id = record(&mut tx, env, version).await;
    tx.commit().await.expect("commit");
    id
}

/// Records a deployment in the caller's transaction.
pub(crate) async fn record(
    conn: &mut slipway_store::PgConnection,
    env: &str,
    version: &str,
) -> Uuid {
    let request: DeploymentRequest = serde_json::from_value(json!({
        "image": image(version),
        "version": version,
        "reason": format!("release {version}"),
    }))
    .expect("a valid deployment request");
    let by = Requester {
        principal: REQUESTER,
        idempotency_key: None,
        traceparent: None,
    };
    intake::record_deployment(conn, APP, env, request, Channel::Api, &by)
        .await
        .expect("record the deployment")
        .id
}

pub(crate) async fn get(pool: &PgPool, id: Uuid) -> Deployment {
    let mut conn = pool.acquire().await.expect("acquire");
    deployments::get(&mut conn, id)
        .await
        .expect("read the deployment")
}

/// The deployment's whole event log, in order.
pub(crate) async fn events_of(pool: &PgPool, id: Uuid) -> Vec<DeploymentEvent> {
    let mut conn = pool.acquire().await.expect("acquire");
    events::list(&mut conn, id, None, 500)
        .await
        .expect("list events")
        .items
}

pub(crate) fn kinds(events: &[DeploymentEvent]) -> Vec<&str> {
    events.iter().map(|e| e.kind.as_str()).collect()
}

/// The first event of `kind`.
pub(crate) fn first<'a>(events: &'a [DeploymentEvent], kind: &str) -> &'a DeploymentEvent {
    events
        .iter()
        .find(|e| e.kind == kind)
        .unwrap_or_else(|| panic!("no {kind:?} event in {:?}", kinds(events)))
}

/// The sim target of the workload `web` in namespace `ns`.
pub(crate) fn target(ns: &str) -> Target {
    Target {
        namespace: ns.to_owned(),
        workload: Workload {
            name: "web".into(),
            container: "web".into(),
            replicas: REPLICAS,
            port: 8080,
            pod_labels: Default::default(),
        },
        traffic: TrafficRouting::Replicas,
        blue_green: false,
        // Snapshots (all the tests take of it) do not check who owns the target.
        environment: String::new(),
        adopt: false,
    }
}

/// Steps `engine` (claiming whatever is due, like a worker would) until the deployment
/// satisfies `done`; panics with its event log after [`PATIENCE`]. Wake-up times are honoured:
/// when nothing is due, it looks again a little later.
pub(crate) async fn drive(
    engine: &Engine,
    pool: &PgPool,
    id: Uuid,
    what: &str,
    done: impl Fn(&Deployment) -> bool,
) -> Deployment {
    let started = Instant::now();
    loop {
        let d = get(pool, id).await;
        if done(&d) {
            return d;
        }
        if started.elapsed() > PATIENCE {
            let log: Vec<String> = events_of(pool, id)
                .await
                .iter()
                .map(|e| format!("{} {}: {}", e.seq, e.kind, e.message))
                .collect();
            panic!(
                "deployment {id} did not reach {what} within {PATIENCE:?}: status {} phase {:?}\n{}",
                d.status.as_str(),
                d.phase,
                log.join("\n")
            );
        }
        let stepped = engine.run_once(16).await.expect("an engine step");
        if stepped.is_empty() {
            // Nothing due: the deployment waits for a timer or a poll. Look again shortly.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// [`drive`] until the deployment has `status`.
pub(crate) async fn drive_to(
    engine: &Engine,
    pool: &PgPool,
    id: Uuid,
    status: DeploymentStatus,
) -> Deployment {
    drive(engine, pool, id, status.as_str(), |d| d.status == status).await
}

/// [`drive`] until the deployment is in `status` and `phase`.
pub(crate) async fn drive_to_phase(
    engine: &Engine,
    pool: &PgPool,
    id: Uuid,
    status: DeploymentStatus,
    phase: &str,
) -> Deployment {
    drive(engine, pool, id, &format!("{status:?}/{phase}"), |d| {
        d.status == status && d.phase.as_deref() == Some(phase)
    })
    .await
}

/// A plain rolling strategy.
pub(crate) fn rolling() -> Value {
    json!({"type": "rolling", "max_surge": "25%", "max_unavailable": 0})
}

/// Deploys `version` to `env` and runs it to success.
pub(crate) async fn deploy_ok(engine: &Engine, pool: &PgPool, env: &str, version: &str) -> Uuid {
    let id = deploy(pool, env, version).await;
    let d = drive_to(engine, pool, id, DeploymentStatus::Succeeded).await;
    assert_eq!(d.serving.version.as_deref(), Some(version));
    id
}

/// The whole stored row of a deployment, to compare before and after.
pub(crate) async fn row(pool: &PgPool, id: Uuid) -> Value {
    sqlx::query_scalar("SELECT to_jsonb(d) FROM deployments d WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("the deployment row")
}
