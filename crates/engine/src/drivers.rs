//! Which driver reaches which cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use slipway_cluster::{ClusterDriver, DriverError, KubeDriver, SimCluster};
use slipway_core::ClusterKind;
use slipway_store::rollouts::ClusterRef;
use uuid::Uuid;

/// The drivers of this process: one simulated cluster shared by every cluster registered as
/// `simulated`, and one [`KubeDriver`] (so one API client) per registered Kubernetes cluster.
#[derive(Debug, Clone)]
pub struct Drivers {
    sim: Arc<SimCluster>,
    kube: Arc<Mutex<HashMap<Uuid, KubeEntry>>>,
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
        let driver = Arc::new(build_kube(cluster)?);
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
