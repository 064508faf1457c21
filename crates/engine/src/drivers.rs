//! Which driver reaches which cluster.

use std::sync::Arc;

use slipway_cluster::{ClusterDriver, DriverError, SimCluster};
use slipway_core::ClusterKind;
use slipway_store::rollouts::ClusterRef;

/// The drivers of this process: one simulated cluster shared by every cluster registered as
/// `simulated`; Kubernetes clusters get their driver in the Kubernetes milestone.
#[derive(Debug, Clone)]
pub struct Drivers {
    sim: Arc<SimCluster>,
}

impl Drivers {
    pub fn new(sim: Arc<SimCluster>) -> Self {
        Self { sim }
    }

    /// The simulated cluster, for tests and `slipway dev`.
    pub fn sim(&self) -> &Arc<SimCluster> {
        &self.sim
    }

    /// The driver for a registered cluster.
    pub fn for_cluster(&self, cluster: &ClusterRef) -> Result<Arc<dyn ClusterDriver>, DriverError> {
        match cluster.kind {
            ClusterKind::Simulated => Ok(self.sim.clone()),
            ClusterKind::Kubernetes | ClusterKind::InCluster => Err(DriverError::Permanent {
                reason: "driver_unavailable".into(),
                message: format!(
                    "cluster {:?} is a Kubernetes cluster, and this build has no Kubernetes driver yet",
                    cluster.name
                ),
            }),
        }
    }
}
