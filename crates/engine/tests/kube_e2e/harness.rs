//! The end-to-end harness on the real test cluster: a per-test database (`#[sqlx::test]`),
//! the real HTTP API on a loopback port, the real engine (`Engine::run`, its worker loop) with
//! the Kubernetes driver, and a fresh namespace. The test cluster is registered as a
//! `kubernetes` cluster with the kubeconfig of user `slipway-e2e`, bound in the namespace to
//! exactly deploy/rbac's role (`kube_rbac::grant_e2e`, shared with the kube driver tests), so
//! Slipway runs as that role, not as cluster-admin; the test's own setup and checks use the
//! admin's client. Tests act over HTTP and assert what the Kubernetes API shows (Deployments,
//! ReplicaSets, Pods, EndpointSlices), read with kube-rs.
// Helpers, not #[test] functions: clippy's allow-*-in-tests does not cover them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test helpers fail the test with a message"
)]

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use slipway_api::{ApiSettings, AppState};
use slipway_cluster::SimCluster;
use slipway_engine::{Drivers, Engine, EngineSettings};
use slipway_store::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

/// How long a test waits for a deployment or for the cluster before giving up.
pub(crate) const PATIENCE: Duration = Duration::from_secs(90);
/// The app and environment every test deploys.
pub(crate) const APP: &str = "web";
pub(crate) const ENV: &str = "prod";
/// The pod label the test cluster's kwok stage `slipway-pod-never-ready` keeps unready.
pub(crate) const NEVER_READY_LABEL: &str = "slipway.dev/test-never-ready";

#[path = "../../../cluster/tests/support/kube_rbac.rs"]
mod kube_rbac;
pub(crate) use kube_rbac::{kubeconfig, kubeconfig_e2e};

pub(crate) fn image(version: &str) -> String {
    format!("registry.test/web:{version}")
}

/// A test's world: database, API, engine, namespace.
pub(crate) struct E2e {
    pub(crate) pool: PgPool,
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
    pub(crate) kube: kube::Client,
    pub(crate) namespace: String,
    server: tokio::task::JoinHandle<()>,
    engine: Option<tokio::task::JoinHandle<()>>,
    stop_engine: watch::Sender<bool>,
    started: Instant,
    finished: bool,
}

/// A test that failed before `finish` still deletes its namespace (from a thread of its own:
/// the test's runtime is unwinding).
impl Drop for E2e {
    fn drop(&mut self) {
        let _ = self.stop_engine.send(true);
        self.server.abort();
        if self.finished {
            return;
        }
        let namespace = self.namespace.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let client = kube_rbac::client_from(&kubeconfig()).await;
                let deleted = Api::<Namespace>::all(client)
                    .delete(&namespace, &DeleteParams::default())
                    .await;
                eprintln!(
                    "{namespace}: test failed; namespace deleted: {}",
                    deleted.is_ok()
                );
            });
        });
        let _ = cleanup.join();
    }
}

impl E2e {
    /// Creates the namespace, serves the API, starts the engine, registers the cluster `e2e`
    /// and the app `web`.
    pub(crate) async fn start(pool: PgPool, test: &str) -> Self {
        static CRYPTO: Once = Once::new();
        CRYPTO.call_once(|| {
            let _ = rustls::crypto::ring::default_provider().install_default();
        });
        // The admin's client sets up and checks; Slipway gets the e2e user's kubeconfig.
        let kube = kube_rbac::client_from(&kubeconfig()).await;
        static N: AtomicU32 = AtomicU32::new(0);
        let namespace = format!(
            "e2e-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap();
        Api::<Namespace>::all(kube.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the namespace");
        // Pods need the namespace's default ServiceAccount (ServiceAccount admission).
        let sa: Api<ServiceAccount> = Api::namespaced(kube.clone(), &namespace);
        poll("the default ServiceAccount", || async {
            sa.get_opt("default").await.ok().flatten()
        })
        .await;
        kube_rbac::grant_e2e(&kube, &namespace).await;

        let app = slipway_api::app(AppState::new(pool.clone(), ApiSettings::default()));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve the API");
        });

        let settings = EngineSettings {
            worker: format!("e2e-{test}"),
            concurrency: 4,
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_millis(200),
            retry_after: Duration::from_secs(1),
            queue_recheck: Duration::from_secs(5),
            chain_steps: 32,
        };
        let engine = Engine::new(
            pool.clone(),
            Drivers::new(Arc::new(SimCluster::default())),
            settings,
        );
        let (stop_engine, mut stopped) = watch::channel(false);
        let engine = tokio::spawn(async move {
            engine
                .run(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });

        let e2e = Self {
            pool,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            kube,
            namespace,
            server,
            engine: Some(engine),
            stop_engine,
            started: Instant::now(),
            finished: false,
        };
        let path = kubeconfig_e2e();
        let path = path.to_str().expect("a UTF-8 kubeconfig path").to_owned();
        e2e.expect(
            "POST",
            "/v1/clusters",
            json!({"name": "e2e", "kind": "kubernetes", "kubeconfig_path": path}),
            StatusCode::CREATED,
        )
        .await;
        e2e.expect(
            "POST",
            "/v1/apps",
            json!({"name": APP, "description": "e2e"}),
            StatusCode::CREATED,
        )
        .await;
        e2e
    }

    /// Stops the harness's engine (its running steps finish, its leases are released), for a
    /// test that steps deployments with engines of its own from then on.
    pub(crate) async fn stop_workers(&mut self) {
        let _ = self.stop_engine.send(true);
        if let Some(engine) = self.engine.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), engine).await;
        }
    }

    /// Stops the engine and the API, then deletes the namespace.
    pub(crate) async fn finish(mut self) {
        self.stop_workers().await;
        self.server.abort();
        eprintln!("{}: done in {:.1?}", self.namespace, self.started.elapsed());
        Api::<Namespace>::all(self.kube.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await
            .expect("delete the namespace");
        self.finished = true;
    }

    // --- HTTP -----------------------------------------------------------------------------

    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("send a request");
        let status = resp.status();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    pub(crate) async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Value,
        want: StatusCode,
    ) -> Value {
        let (status, answer) = self.call(method, path, Some(body)).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        answer
    }

    /// `PUT` the environment `prod`: namespace of the test, workload `web` (container `app`,
    /// port 8080) with `replicas`, the strategy, and `extra` fields merged in (and into the
    /// workload when `extra` has `workload`).
    pub(crate) async fn put_env(&self, replicas: u32, strategy: Value, extra: Value) {
        let mut spec = json!({
            "cluster": "e2e",
            "namespace": self.namespace,
            "workload": {"name": "web", "container": "app", "replicas": replicas, "port": 8080},
            "strategy": strategy,
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            if k == "workload" {
                for (wk, wv) in v.as_object().cloned().unwrap_or_default() {
                    spec["workload"][wk] = wv;
                }
            } else {
                spec[k] = v;
            }
        }
        let (status, body) = self
            .call(
                "PUT",
                &format!("/v1/apps/{APP}/environments/{ENV}"),
                Some(spec),
            )
            .await;
        assert!(status.is_success(), "PUT environment: {status} {body}");
    }

    /// Requests a deployment of `version`; `extra` fields are merged into the request.
    pub(crate) async fn deploy(&self, version: &str, extra: Value) -> Uuid {
        let mut body = json!({"image": image(version), "version": version, "reason": format!("e2e {version}")});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let d = self
            .expect(
                "POST",
                &format!("/v1/apps/{APP}/environments/{ENV}/deployments"),
                body,
                StatusCode::CREATED,
            )
            .await;
        d["id"].as_str().unwrap().parse().unwrap()
    }

    pub(crate) async fn deployment(&self, id: Uuid) -> Value {
        let (status, body) = self
            .call("GET", &format!("/v1/deployments/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub(crate) async fn events(&self, id: Uuid) -> Vec<Value> {
        let (status, body) = self
            .call(
                "GET",
                &format!("/v1/deployments/{id}/events?limit=500"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// The event log as `seq kind: message` lines, for failure messages.
    pub(crate) async fn log(&self, id: Uuid) -> String {
        self.events(id)
            .await
            .iter()
            .map(|e| format!("{} {}: {}", e["seq"], e["kind"], e["message"]))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Steps `engine` by hand (claiming whatever is due, as its workers would) until the
    /// deployment has `status`; for a test that has stopped the harness's engine.
    pub(crate) async fn step_until(&self, engine: &Engine, id: Uuid, status: &str) {
        let started = Instant::now();
        loop {
            if self.deployment(id).await["status"] == status {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{id} never reached {status}:\n{}",
                self.log(id).await
            );
            if engine.run_once(4).await.expect("a step").is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Polls the deployment until `done` holds. Panics with its event log after [`PATIENCE`],
    /// or at once when it finished without satisfying `done`.
    pub(crate) async fn wait(&self, id: Uuid, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.wait_inner(id, what, true, done).await
    }

    /// [`wait`](Self::wait) that keeps polling past a finished state (e.g. right after `retry`,
    /// before the engine has re-queued the deployment).
    pub(crate) async fn wait_past_end(
        &self,
        id: Uuid,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_inner(id, what, false, done).await
    }

    async fn wait_inner(
        &self,
        id: Uuid,
        what: &str,
        stop_at_end: bool,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let d = self.deployment(id).await;
            if done(&d) {
                eprintln!("{}: {what} after {:.1?}", self.namespace, start.elapsed());
                return d;
            }
            let terminal = matches!(
                d["status"].as_str(),
                Some("succeeded" | "failed" | "rolled_back" | "cancelled" | "superseded")
            );
            if (terminal && stop_at_end) || start.elapsed() > PATIENCE {
                panic!(
                    "deployment {id} did not reach {what}: {d}\n{}",
                    self.log(id).await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(crate) async fn wait_status(&self, id: Uuid, status: &str) -> Value {
        self.wait(id, status, |d| d["status"] == status).await
    }

    pub(crate) async fn wait_phase(&self, id: Uuid, status: &str, phase: &str) -> Value {
        self.wait(id, &format!("{status}/{phase}"), |d| {
            d["status"] == status && d["phase"] == phase
        })
        .await
    }

    /// `POST /v1/deployments/{id}/{command}`; status and body.
    pub(crate) async fn command(&self, id: Uuid, command: &str) -> (StatusCode, Value) {
        self.call(
            "POST",
            &format!("/v1/deployments/{id}/{command}"),
            Some(json!({"reason": format!("e2e {command}")})),
        )
        .await
    }

    pub(crate) async fn accepted(&self, id: Uuid, command: &str) {
        let (status, body) = self.command(id, command).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{command}: {body}");
    }

    // --- Kubernetes -----------------------------------------------------------------------

    pub(crate) async fn k8s_deployment(&self, name: &str) -> Option<Deployment> {
        Api::<Deployment>::namespaced(self.kube.clone(), &self.namespace)
            .get_opt(name)
            .await
            .expect("get a Deployment")
    }

    /// The ReplicaSets a Deployment owns, oldest first.
    pub(crate) async fn replica_sets(&self, deployment: &str) -> Vec<ReplicaSet> {
        let Some(d) = self.k8s_deployment(deployment).await else {
            return Vec::new();
        };
        let uid = d.metadata.uid.clone();
        let mut owned: Vec<ReplicaSet> =
            Api::<ReplicaSet>::namespaced(self.kube.clone(), &self.namespace)
                .list(&ListParams::default())
                .await
                .expect("list ReplicaSets")
                .items
                .into_iter()
                .filter(|rs| {
                    rs.metadata
                        .owner_references
                        .iter()
                        .flatten()
                        .any(|o| Some(&o.uid) == uid.as_ref())
                })
                .collect();
        owned.sort_by_key(|rs| rs.metadata.creation_timestamp.clone().map(|t| t.0));
        owned
    }

    /// Pods matching a label selector that are not being deleted.
    pub(crate) async fn pods(&self, selector: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.kube.clone(), &self.namespace)
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list Pods")
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    }

    /// Every pod matching the selector, terminating ones included.
    pub(crate) async fn all_pods(&self, selector: &str) -> Vec<Pod> {
        Api::<Pod>::namespaced(self.kube.clone(), &self.namespace)
            .list(&ListParams::default().labels(selector))
            .await
            .expect("list Pods")
            .items
    }

    /// IPs of the Ready, not terminating pods of a track of `web`.
    pub(crate) async fn ready_ips(&self, track: &str) -> BTreeSet<String> {
        self.pods(&format!(
            "app.kubernetes.io/name=web,slipway.dev/track={track}"
        ))
        .await
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect()
    }

    /// Ready addresses of the EndpointSlices behind a Service.
    pub(crate) async fn endpoint_ips(&self, service: &str) -> BTreeSet<String> {
        Api::<EndpointSlice>::namespaced(self.kube.clone(), &self.namespace)
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
            .await
            .expect("list EndpointSlices")
            .items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect()
    }

    /// Creates a Service that Slipway does not manage.
    pub(crate) async fn create_service(&self, name: &str, selector: Value) {
        let s: Service = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "selector": selector, "ports": [{ "name": "http", "port": 80, "targetPort": 8080 }] },
        }))
        .unwrap();
        Api::<Service>::namespaced(self.kube.clone(), &self.namespace)
            .create(&PostParams::default(), &s)
            .await
            .expect("create a Service");
    }

    /// Polls until `f` gives a value (up to [`PATIENCE`]).
    pub(crate) async fn until<T, F, Fut>(&self, what: &str, f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        let v = poll(what, f).await;
        eprintln!("{}: {what} after {:.1?}", self.namespace, start.elapsed());
        v
    }
}

pub(crate) fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The image of a Deployment's (or ReplicaSet's) first container.
pub(crate) fn template_image(spec: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> String {
    spec.and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

pub(crate) fn rs_image(rs: &ReplicaSet) -> String {
    template_image(rs.spec.template.as_ref())
}

pub(crate) fn deployment_image(d: &Deployment) -> String {
    template_image(Some(&d.spec.template))
}

/// `(spec.replicas, status.replicas, status.readyReplicas)` of a ReplicaSet.
pub(crate) fn rs_counts(rs: &ReplicaSet) -> (i32, i32, i32) {
    let spec = rs.spec.replicas.unwrap_or(1);
    let status = rs.status.as_ref();
    (
        spec,
        status.map_or(0, |s| s.replicas),
        status.and_then(|s| s.ready_replicas).unwrap_or(0),
    )
}

/// `(spec.replicas, status.readyReplicas, status.updatedReplicas)` of a Deployment.
pub(crate) fn deployment_counts(d: &Deployment) -> (i32, i32, i32) {
    let spec = d.spec.replicas.unwrap_or(1);
    let status = d.status.as_ref();
    (
        spec,
        status.and_then(|s| s.ready_replicas).unwrap_or(0),
        status.and_then(|s| s.updated_replicas).unwrap_or(0),
    )
}

pub(crate) async fn poll<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "timed out after {PATIENCE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
