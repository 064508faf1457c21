//! Registered clusters and how Slipway reaches them.

use serde::{Deserialize, Serialize};

use crate::names::check_name;
use crate::validation::{ValidationError, Violations};

/// How Slipway connects to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ClusterKind {
    /// Through a kubeconfig file and context.
    Kubernetes,
    /// Through the service account of the pod Slipway runs in.
    InCluster,
    /// An in-memory cluster for development and tests.
    Simulated,
}

impl ClusterKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kubernetes => "kubernetes",
            Self::InCluster => "in_cluster",
            Self::Simulated => "simulated",
        }
    }
}

/// The body of `POST /v1/clusters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::names::name_schema))]
    pub name: String,
    pub kind: ClusterKind,
    /// Path of the kubeconfig file on the Slipway server (kind `kubernetes` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_path: Option<String>,
    /// Context inside the kubeconfig (kind `kubernetes` only; default: its current context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

impl ClusterSpec {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Violations::new();
        check_name(&mut v, "/name", &self.name);
        match self.kind {
            ClusterKind::Kubernetes => match &self.kubeconfig_path {
                None => v.add("/kubeconfig_path", "required for kind `kubernetes`"),
                Some(p) if !p.starts_with('/') || p.len() > 4096 => v.add(
                    "/kubeconfig_path",
                    "must be an absolute path on the Slipway server",
                ),
                Some(_) => {}
            },
            ClusterKind::InCluster | ClusterKind::Simulated => {
                if self.kubeconfig_path.is_some() {
                    v.add("/kubeconfig_path", "only allowed for kind `kubernetes`");
                }
                if self.context.is_some() {
                    v.add("/context", "only allowed for kind `kubernetes`");
                }
            }
        }
        if let Some(ctx) = &self.context
            && (ctx.is_empty() || ctx.len() > 253 || ctx.chars().any(char::is_control))
        {
            v.add("/context", "must be 1-253 printable characters");
        }
        v.into_result()
    }
}
