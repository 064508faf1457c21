//! Environments: where an app runs (cluster, namespace, workload) and the policy that governs
//! deployments to it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::DurationSpec;
use crate::names::{check_label, check_name};
use crate::strategy::StrategySpec;
use crate::validation::{ValidationError, Violations, pointer};

/// Most replicas a workload may ask for.
pub(crate) const MAX_REPLICAS: u32 = 1_000;
/// Shortest and longest progress deadline.
pub(crate) const MIN_PROGRESS_DEADLINE: DurationSpec = DurationSpec::from_secs(10);
pub(crate) const MAX_PROGRESS_DEADLINE: DurationSpec = DurationSpec::from_secs(86_400);

/// The body of `PUT /v1/apps/{app}/environments/{env}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// Name of a registered cluster.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::names::name_schema))]
    pub cluster: String,
    /// Kubernetes namespace of the workload.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::names::name_schema))]
    pub namespace: String,
    pub workload: Workload,
    /// Strategy used when a deployment does not bring its own.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// How long a deployment may go without progress before it fails and rolls back.
    #[serde(default = "EnvironmentSpec::default_progress_deadline")]
    pub progress_deadline: DurationSpec,
    #[serde(default)]
    pub approval: ApprovalPolicy,
    /// A newer queued deployment supersedes older queued ones.
    #[serde(default)]
    pub supersede_queued: bool,
    /// A deployment request may bring its own `strategy` (otherwise it is refused with 403).
    /// The approval policy applies whatever the strategy.
    #[serde(default)]
    pub allow_strategy_override: bool,
    /// Take over a Deployment or Service of the workload's names that exists in the cluster
    /// without Slipway's labels (one made by hand or another tool). Off by default: Slipway
    /// then refuses such objects (`not_managed`). Only an app-wide admin may set it. Objects
    /// of another environment are never taken over (`owned_by_other_environment`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt: bool,
}

impl EnvironmentSpec {
    fn default_progress_deadline() -> DurationSpec {
        DurationSpec::from_secs(600)
    }

    /// Checks every field; the error names each bad one by JSON pointer.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Violations::new();
        check_name(&mut v, "/cluster", &self.cluster);
        check_name(&mut v, "/namespace", &self.namespace);
        self.workload.validate(&mut v, "/workload");
        self.strategy.validate(&mut v, "/strategy", &self.workload);
        if self.progress_deadline < MIN_PROGRESS_DEADLINE
            || self.progress_deadline > MAX_PROGRESS_DEADLINE
        {
            v.add(
                "/progress_deadline",
                format!("must be between {MIN_PROGRESS_DEADLINE} and {MAX_PROGRESS_DEADLINE}"),
            );
        }
        v.into_result()
    }
}

/// The Kubernetes workload an environment deploys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Base name of the Deployment and Services Slipway manages.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::names::name_schema))]
    pub name: String,
    /// The container whose image is replaced.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::names::name_schema))]
    pub container: String,
    /// Desired replicas of the serving version.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub replicas: u32,
    /// Container port the Services target.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
    pub port: u16,
    /// Extra labels on the pods (the Deployment's pod template), e.g. `team: payments`.
    /// Kubernetes label syntax; the labels Slipway sets itself (`app.kubernetes.io/name`,
    /// `app.kubernetes.io/managed-by`, `slipway.dev/track`) cannot be given. A deployment
    /// takes the labels the environment has when it is created, as part of its release, so a
    /// rollback restores the previous pod template exactly (labels included).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

/// Most extra pod labels a workload may carry.
pub(crate) const MAX_POD_LABELS: usize = 32;
/// Pod labels Slipway sets itself; a workload cannot set them.
pub(crate) const RESERVED_POD_LABELS: [&str; 3] = [
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/name",
    "slipway.dev/track",
];

impl Workload {
    fn validate(&self, v: &mut Violations, at: &str) {
        check_name(v, &pointer(at, "name"), &self.name);
        check_name(v, &pointer(at, "container"), &self.container);
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            v.add(
                pointer(at, "replicas"),
                format!("must be between 1 and {MAX_REPLICAS}"),
            );
        }
        if self.port == 0 {
            v.add(pointer(at, "port"), "must be between 1 and 65535");
        }
        let labels_at = pointer(at, "pod_labels");
        if self.pod_labels.len() > MAX_POD_LABELS {
            v.add(
                labels_at.clone(),
                format!("must have at most {MAX_POD_LABELS} labels"),
            );
        }
        for (key, value) in &self.pod_labels {
            let at = pointer(&labels_at, key);
            if RESERVED_POD_LABELS.contains(&key.as_str()) {
                v.add(at, "is set by Slipway and cannot be given");
            } else {
                check_label(v, &at, key, value);
            }
        }
    }
}

/// Who must agree before a deployment goes live.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    #[serde(default)]
    pub required: bool,
    /// The approver must be someone other than the requester.
    #[serde(default)]
    pub distinct_approver: bool,
}
