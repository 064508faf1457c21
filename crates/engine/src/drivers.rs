//! Which driver reaches which cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use slipway_cluster::{ClusterDriver, DriverError, KubeDriver, KubeSettings, SimCluster};
use slipway_core::{ClusterKind, ClusterStatus, FailureReason};
use slipway_store::rollouts::ClusterRef;
use uuid::Uuid;

/// How long `GET /v1/clusters/{cluster}` waits for a cluster to say its version.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The drivers of this process: one simulated cluster shared by every cluster registered as
/// `simulated`, and one [`KubeDriver`] (so one API client, with its rate limit) per registered
/// Kubernetes cluster. Clones share the same drivers.
#[derive(Debug, Clone)]
pub struct Drivers {
    sim: Arc<SimCluster>,
    kube: Arc<Mutex<HashMap<Uuid, KubeEntry>>>,
    kube_settings: KubeSettings,
}

impl Default for Drivers {
    /// A default simulated cluster and default Kubernetes client settings.
    fn default() -> Self {
        Self::new(Arc::new(SimCluster::default()))
    }
}

/// A cached Kubernetes driver and the connection settings it was built from: a cluster whose
/// kubeconfig path or context changed gets a new driver.
#[derive(Debug)]
struct KubeEntry {
    kind: ClusterKind,
    kubeconfig_path: Option<String>,
    context: Option<String>,
    driver: Arc<KubeDriver>,
}

impl KubeEntry {
    fn matches(&self, cluster: &ClusterRef) -> bool {
        self.kind == cluster.kind
            && self.kubeconfig_path == cluster.kubeconfig_path
            && self.context == cluster.context
    }
}

impl Drivers {
    pub fn new(sim: Arc<SimCluster>) -> Self {
        Self {
            sim,
            kube: Arc::default(),
            kube_settings: KubeSettings::default(),
        }
    }

    /// The same, with these client settings (timeouts, rate limit, retries) for every
    /// Kubernetes cluster's driver built from now on.
    #[must_use]
    pub fn with_kube_settings(mut self, settings: KubeSettings) -> Self {
        self.kube_settings = settings;
        self
    }

    /// Whether `cluster` answers now, and its server version, within [`PROBE_TIMEOUT`]. Uses
    /// (and so warms) the cluster's cached driver.
    pub async fn status(&self, cluster: &ClusterRef) -> ClusterStatus {
        let answer = match self.for_cluster(cluster) {
            Ok(driver) => match tokio::time::timeout(PROBE_TIMEOUT, driver.probe()).await {
                Ok(answer) => answer,
                Err(_) => Err(DriverError::retryable(
                    "timeout",
                    format!(
                        "cluster {:?} did not answer within {PROBE_TIMEOUT:?}",
                        cluster.name
                    ),
                )),
            },
            Err(e) => Err(e),
        };
        let checked_at = chrono::Utc::now();
        match answer {
            Ok(server_version) => ClusterStatus {
                reachable: true,
                server_version,
                checked_at,
                error: None,
            },
            Err(e) => ClusterStatus {
                reachable: false,
                server_version: None,
                checked_at,
                error: Some(FailureReason {
                    code: e.reason().to_owned(),
                    message: e.message().to_owned(),
                }),
            },
        }
    }

    /// The simulated cluster, for tests and `slipway dev`.
    pub fn sim(&self) -> &Arc<SimCluster> {
        &self.sim
    }

    /// The driver for a registered cluster. A Kubernetes cluster's kubeconfig is read the
    /// first time (a missing file or context is a permanent error); the connection is made on
    /// the driver's first call.
    pub fn for_cluster(&self, cluster: &ClusterRef) -> Result<Arc<dyn ClusterDriver>, DriverError> {
        if cluster.kind == ClusterKind::Simulated {
            return Ok(self.sim.clone());
        }
        let mut cache = self.kube.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = cache.get(&cluster.id).filter(|e| e.matches(cluster)) {
            return Ok(entry.driver.clone());
        }
        let driver = Arc::new(build_kube(cluster)?.with_settings(self.kube_settings));
        cache.insert(
            cluster.id,
            KubeEntry {
                kind: cluster.kind,
                kubeconfig_path: cluster.kubeconfig_path.clone(),
                context: cluster.context.clone(),
                driver: driver.clone(),
            },
        );
        Ok(driver)
    }
}

fn build_kube(cluster: &ClusterRef) -> Result<KubeDriver, DriverError> {
    let prefix = |e: DriverError| {
        DriverError::permanent(
            e.reason(),
            format!("cluster {:?}: {}", cluster.name, e.message()),
        )
    };
    match cluster.kind {
        ClusterKind::InCluster => Ok(KubeDriver::in_cluster()),
        ClusterKind::Kubernetes => {
            let Some(path) = cluster.kubeconfig_path.as_deref() else {
                return Err(DriverError::permanent(
                    "invalid_kubeconfig",
                    format!(
                        "cluster {:?} is a Kubernetes cluster without a kubeconfig path",
                        cluster.name
                    ),
                ));
            };
            // Building a driver only fails on the kubeconfig itself: permanent either way.
            KubeDriver::from_kubeconfig(path, cluster.context.as_deref()).map_err(|e| {
                prefix(match e {
                    DriverError::Retryable { reason, message } => {
                        DriverError::permanent(reason, message)
                    }
                    permanent => permanent,
                })
            })
        }
        ClusterKind::Simulated => Err(DriverError::permanent(
            "driver_unavailable",
            "not a Kubernetes cluster",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(kind: ClusterKind, path: Option<&str>, context: Option<&str>) -> ClusterRef {
        ClusterRef {
            id: Uuid::nil(),
            name: "prod".into(),
            kind,
            kubeconfig_path: path.map(str::to_owned),
            context: context.map(str::to_owned),
        }
    }

    fn drivers() -> Drivers {
        Drivers::new(Arc::new(SimCluster::default()))
    }

    #[test]
    fn simulated_clusters_share_the_sim() {
        let d = drivers();
        assert!(
            d.for_cluster(&cluster(ClusterKind::Simulated, None, None))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn status_says_whether_a_cluster_answers() {
        let d = drivers();
        let sim = d.status(&cluster(ClusterKind::Simulated, None, None)).await;
        assert!(sim.reachable);
        assert_eq!((sim.server_version, sim.error), (None, None));

        let missing = d
            .status(&cluster(
                ClusterKind::Kubernetes,
                Some("/nonexistent/kubeconfig"),
                None,
            ))
            .await;
        assert!(!missing.reachable);
        assert_eq!(
            missing.error.map(|e| e.code).as_deref(),
            Some("invalid_kubeconfig")
        );

        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = std::env::temp_dir().join(format!(
            "slipway-drivers-status-{}.yaml",
            std::process::id()
        ));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:{closed}'}}\n\
                 users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: a\n  context: {{cluster: c, user: u}}\n\
                 current-context: a\n"
            ),
        )
        .unwrap();
        let down = d
            .status(&cluster(ClusterKind::Kubernetes, path.to_str(), None))
            .await;
        assert!(!down.reachable);
        let error = down.error.unwrap();
        assert_eq!(error.code, "cluster_unreachable", "{error:?}");
        assert!(!error.message.contains("token"), "{error:?}");
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn kubernetes_clusters_get_one_cached_driver() {
        let dir = std::env::temp_dir().join(format!("slipway-drivers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\n\
             users:\n- name: u\n  user: {token: t}\ncontexts:\n- name: a\n  context: {cluster: c, user: u}\n\
             - name: b\n  context: {cluster: c, user: u}\ncurrent-context: a\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let d = drivers();
        let one = d
            .for_cluster(&cluster(ClusterKind::Kubernetes, Some(p), None))
            .unwrap();
        let again = d
            .for_cluster(&cluster(ClusterKind::Kubernetes, Some(p), None))
            .unwrap();
        assert!(Arc::ptr_eq(&one, &again));
        let other = d
            .for_cluster(&cluster(ClusterKind::Kubernetes, Some(p), Some("b")))
            .unwrap();
        assert!(!Arc::ptr_eq(&one, &other));

        let e = d
            .for_cluster(&cluster(ClusterKind::Kubernetes, Some(p), Some("nope")))
            .unwrap_err();
        assert_eq!(
            (e.is_retryable(), e.reason()),
            (false, "invalid_kubeconfig")
        );
        assert!(e.message().starts_with("cluster \"prod\": "), "{e}");
        let e = d
            .for_cluster(&cluster(ClusterKind::Kubernetes, None, None))
            .unwrap_err();
        assert_eq!(
            (e.is_retryable(), e.reason()),
            (false, "invalid_kubeconfig")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
