//! The resources the API reads back: what is stored, in the shape clients see.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::ClusterKind;
use crate::deployment::{DeploymentStatus, FailureReason, Outcome, Serving, Source};
use crate::environment::EnvironmentSpec;
use crate::strategy::StrategySpec;

/// A registered cluster. Credentials stay on the server: only references are shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Cluster {
    pub name: String,
    pub kind: ClusterKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A registered cluster with whether it answers, as `GET /v1/clusters/{cluster}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterDetail {
    #[serde(flatten)]
    pub cluster: Cluster,
    pub status: ClusterStatus,
}

/// Whether a cluster's API server answered just now (with a short timeout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterStatus {
    pub reachable: bool,
    /// The API server's version (`GET /version`), e.g. `v1.36.3`; null for a simulated cluster
    /// or when it did not answer.
    pub server_version: Option<String>,
    pub checked_at: DateTime<Utc>,
    /// Why it is not reachable (`cluster_unreachable`, `timeout`, `unauthorized`,
    /// `invalid_kubeconfig`, ...); null when it is.
    pub error: Option<FailureReason>,
}

/// An application: a set of environments deployed together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct App {
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An environment of an app, with its full spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Environment {
    pub app: String,
    pub name: String,
    #[serde(flatten)]
    pub spec: EnvironmentSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A deployment and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    pub id: Uuid,
    pub app: String,
    pub environment: String,
    pub image: String,
    pub version: String,
    /// The strategy frozen when the deployment was created.
    pub strategy: StrategySpec,
    /// The strategy is the request's own (the environment allows overrides), not the
    /// environment's.
    #[serde(default)]
    pub strategy_overridden: bool,
    pub status: DeploymentStatus,
    /// Detail inside `status`, e.g. `canary_step`.
    pub phase: Option<String>,
    /// Index of the current strategy step.
    pub step: Option<u32>,
    pub outcome: Option<Outcome>,
    pub serving: Serving,
    /// Why the deployment failed, when it did.
    pub reason: Option<FailureReason>,
    /// The requester's own words on why this change is made.
    pub request_reason: Option<String>,
    pub source: Source,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a deployment's append-only event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentEvent {
    /// Position in this deployment's log, from 1, without gaps.
    pub seq: i64,
    pub deployment_id: Uuid,
    pub at: DateTime<Utc>,
    /// What happened, e.g. `queued`, `step_completed`.
    pub kind: String,
    pub actor: String,
    pub message: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}
