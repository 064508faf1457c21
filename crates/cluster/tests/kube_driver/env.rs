//! Helpers of the kube driver tests: the test cluster's kubeconfig, a namespace per test,
//! bounded polling, and reads of Pods and EndpointSlices.
// Helpers, not #[test] functions: clippy's allow-*-in-tests does not cover them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;
use slipway_cluster::{ClusterDriver, KubeDriver, Target};
use slipway_core::rollout::{Action, Observation, Release, Track};
use slipway_core::{TrafficRouting, Workload};

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);
/// The environment the tests' targets belong to (the label `slipway.dev/environment`).
pub(crate) const ENVIRONMENT: &str = "0193f5b0-7e57-7000-8000-00000000000a";

pub(crate) use crate::kube_rbac::{grant_e2e, kubeconfig, kubeconfig_e2e};

/// A driver on the test cluster as `slipway-e2e`, bound to deploy/rbac's role in a fresh
/// namespace that `finish` deletes; `client` is the admin's, for setting up and checking.
pub(crate) struct Env {
    pub(crate) driver: KubeDriver,
    pub(crate) client: Client,
    pub(crate) namespace: String,
    started: Instant,
}

impl Env {
    pub(crate) async fn new(test: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let admin = KubeDriver::from_kubeconfig(kubeconfig(), None).expect("admin driver");
        let client = admin.client().await.expect("client").clone();
        let driver = KubeDriver::from_kubeconfig(kubeconfig_e2e(), None).expect("e2e driver");
        let namespace = format!(
            "slipway-{test}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns: Namespace =
            serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        // Pods need the namespace's default ServiceAccount (ServiceAccount admission).
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &namespace);
        poll("default ServiceAccount", || async {
            sa.get_opt("default").await.ok().flatten()
        })
        .await;
        grant_e2e(&client, &namespace).await;
        Self {
            driver,
            client,
            namespace,
            started: Instant::now(),
        }
    }

    pub(crate) fn routed(&self, name: &str, replicas: u32, traffic: TrafficRouting) -> Target {
        Target {
            traffic,
            ..self.target(name, replicas)
        }
    }

    pub(crate) fn target(&self, name: &str, replicas: u32) -> Target {
        Target {
            namespace: self.namespace.clone(),
            workload: Workload {
                name: name.into(),
                container: "app".into(),
                replicas,
                port: 8080,
                pod_labels: Default::default(),
            },
            traffic: TrafficRouting::Replicas,
            blue_green: false,
            environment: ENVIRONMENT.into(),
            adopt: false,
        }
    }

    pub(crate) async fn apply(&self, target: &Target, actions: &[Action]) {
        self.driver
            .apply(target, actions)
            .await
            .unwrap_or_else(|e| panic!("apply {actions:?}: {e}"));
    }

    pub(crate) async fn observe(&self, target: &Target) -> Observation {
        self.driver
            .observe(target)
            .await
            .unwrap_or_else(|e| panic!("observe: {e}"))
    }

    /// Observes until `done` holds; returns that observation.
    pub(crate) async fn observe_until(
        &self,
        target: &Target,
        what: &str,
        done: impl Fn(&Observation) -> bool,
    ) -> Observation {
        let t = Instant::now();
        let seen = poll(what, || async {
            let o = self.observe(target).await;
            done(&o).then_some(o)
        })
        .await;
        eprintln!("{}: {what} after {:.1?}", self.namespace, t.elapsed());
        seen
    }

    /// Ready pods of a track that are not terminating, by IP.
    pub(crate) async fn ready_pod_ips(&self, name: &str, track: Track) -> BTreeSet<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&format!(
            "app.kubernetes.io/name={name},slipway.dev/track={}",
            track.as_str()
        ));
        let list = pods.list(&lp).await.expect("list pods");
        list.items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| {
                let conds = p.status.as_ref().and_then(|s| s.conditions.as_ref());
                conds.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
            .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
            .collect()
    }

    pub(crate) async fn pods(&self, name: &str) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&format!("app.kubernetes.io/name={name}"));
        pods.list(&lp).await.expect("list pods").items
    }

    /// Ready addresses of the EndpointSlices behind a Service.
    pub(crate) async fn endpoint_ips(&self, service: &str) -> BTreeSet<String> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
        let list = slices.list(&lp).await.expect("list endpointslices");
        list.items
            .iter()
            .flat_map(|s| s.endpoints.iter().flatten())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
            .flat_map(|e| e.addresses.iter().cloned())
            .collect()
    }

    pub(crate) async fn finish(self) {
        eprintln!("{}: done in {:.1?}", self.namespace, self.started.elapsed());
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.namespace, &DeleteParams::default())
            .await
            .expect("delete namespace");
    }
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
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn release(version: &str) -> Release {
    Release {
        image: format!("registry.test/web:{version}"),
        version: version.into(),
        pod_labels: Default::default(),
    }
}

pub(crate) fn apply_workload(track: Track, version: &str, replicas: u32) -> Action {
    Action::ApplyWorkload {
        track,
        release: release(version),
        replicas,
        max_surge: 1,
        max_unavailable: 0,
    }
}

/// A copy of the test kubeconfig with another server or token.
pub(crate) fn kubeconfig_with(
    name: &str,
    edit: impl FnOnce(&mut kube::config::Kubeconfig),
) -> PathBuf {
    kubeconfig_with_base(&kubeconfig(), name, edit)
}

/// A copy of the kubeconfig at `base`, edited.
pub(crate) fn kubeconfig_with_base(
    base: &std::path::Path,
    name: &str,
    edit: impl FnOnce(&mut kube::config::Kubeconfig),
) -> PathBuf {
    let mut k = kube::config::Kubeconfig::read_from(base).unwrap();
    edit(&mut k);
    let path =
        std::env::temp_dir().join(format!("slipway-kube-{name}-{}.yaml", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&k).unwrap()).unwrap();
    path
}

/// A target in `default` (for clusters that are not reached).
pub(crate) fn plain_target() -> Target {
    Target {
        namespace: "default".into(),
        workload: Workload {
            name: "web".into(),
            container: "app".into(),
            replicas: 1,
            port: 80,
            pod_labels: Default::default(),
        },
        traffic: TrafficRouting::Replicas,
        blue_green: false,
        environment: ENVIRONMENT.into(),
        adopt: false,
    }
}
