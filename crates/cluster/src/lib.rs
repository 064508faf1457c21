//! Cluster drivers: how Slipway observes and changes the workloads it manages.
//!
//! [`ClusterDriver`] is the seam between the engine and a cluster: `observe` reports what a
//! [`Target`] looks like as an [`Observation`](slipway_core::rollout::Observation), and `apply`
//! carries out idempotent [`Action`](slipway_core::rollout::Action)s, failing with a
//! [`DriverError`] that says whether retrying can help.
//!
//! [`SimCluster`] is an in-memory cluster that behaves like Kubernetes Deployments for
//! Slipway's purposes (generations, gradual readiness, rolling replacement within the surge
//! and unavailability budget, progress deadlines) with faults a test can inject. Its time comes
//! from a [`Clock`], so tests step it by hand with a [`ManualClock`].

mod driver;
pub mod kube;
mod sim;

pub use self::kube::{KubeDriver, KubeSettings};
pub use driver::{BoxFuture, ClusterDriver, DriverError, Target};
pub use sim::{
    ApiCalls, Clock, Fault, FaultKind, FaultScope, Faults, ManualClock, SimCluster, SimSettings,
    SystemClock, TargetSnapshot, TemplatePods, WorkloadSnapshot, WorkloadSpec,
};
