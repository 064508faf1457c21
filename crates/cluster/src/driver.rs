//! The contract every cluster driver fulfils.

use slipway_core::rollout::{Action, Observation, failure_code};

pub use futures::future::BoxFuture;

/// Where a rollout acts: one environment's workload in one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub workload: slipway_core::Workload,
    pub traffic: slipway_core::TrafficRouting,
    /// The strategy is blue-green: observations report which color its active and preview
    /// Services select. Other strategies never read them, so a driver may skip looking them up
    /// (the Kubernetes driver does: two fewer API requests per observation).
    pub blue_green: bool,
    /// The id of the environment the target belongs to. Every object the driver writes
    /// carries it (`slipway.dev/environment`), and the driver touches no object that carries
    /// another (`owned_by_other_environment`).
    pub environment: String,
    /// The environment adopts objects of the workload's names that exist without Slipway's
    /// labels; otherwise the driver refuses them (`not_managed`).
    pub adopt: bool,
}

impl Target {
    /// Whether an object whose environment label is `owner` may be touched for this target:
    /// objects of another environment may not (a permanent `owned_by_other_environment`).
    /// An object without the label (made by a Slipway from before the label, or adopted) is
    /// claimed by the first environment that writes it.
    pub fn check_owner(&self, what: &str, owner: Option<&str>) -> Result<(), DriverError> {
        match owner {
            Some(owner) if owner != self.environment => Err(DriverError::permanent(
                failure_code::OWNED_BY_OTHER_ENVIRONMENT,
                format!(
                    "{what} in namespace {} belongs to another environment ({owner}); Slipway leaves it alone",
                    self.namespace
                ),
            )),
            _ => Ok(()),
        }
    }
}

/// A cluster Slipway can observe and change. Used as `Arc<dyn ClusterDriver>`.
pub trait ClusterDriver: Send + Sync + std::fmt::Debug {
    /// What the cluster shows for this target's managed workloads, Services and traffic weight.
    fn observe<'a>(&'a self, target: &'a Target)
    -> BoxFuture<'a, Result<Observation, DriverError>>;

    /// Applies idempotent actions in order; stops at the first error.
    fn apply<'a>(
        &'a self,
        target: &'a Target,
        actions: &'a [Action],
    ) -> BoxFuture<'a, Result<(), DriverError>>;

    /// Whether the cluster answers now, and its server version when it has one (Kubernetes:
    /// `GET /version`, e.g. `v1.36.3`). Callers bound it with their own timeout. The default,
    /// for clusters without an API server to ask, is reachable without a version.
    fn probe(&self) -> BoxFuture<'_, Result<Option<String>, DriverError>> {
        Box::pin(async { Ok(None) })
    }
}

/// Why a driver call failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// Worth retrying with backoff (unreachable, 409, 429, 5xx, timeout). `reason` is
    /// machine-readable, e.g. `cluster_unreachable`.
    #[error("{reason}: {message}")]
    Retryable { reason: String, message: String },
    /// Will not succeed by retrying (401/403/404/422...).
    #[error("{reason}: {message}")]
    Permanent { reason: String, message: String },
}

impl DriverError {
    pub fn retryable(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Retryable {
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn permanent(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Permanent {
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// The cluster's API server could not be reached (retryable, `cluster_unreachable`).
    pub fn unreachable(message: impl Into<String>) -> Self {
        Self::retryable("cluster_unreachable", message)
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    /// The machine-readable reason.
    pub fn reason(&self) -> &str {
        match self {
            Self::Retryable { reason, .. } | Self::Permanent { reason, .. } => reason,
        }
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. } | Self::Permanent { message, .. } => message,
        }
    }
}
