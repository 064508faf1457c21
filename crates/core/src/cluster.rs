//! Registered clusters and how Slipway reaches them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::names::check_name;
use crate::validation::{ValidationError, Violations, pointer};

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

/// Most apps one cluster's namespace allowlist may name.
pub(crate) const MAX_ALLOWLIST_APPS: usize = 1_000;
/// Most namespaces one app may be allowed on one cluster.
pub(crate) const MAX_ALLOWLIST_NAMESPACES: usize = 100;

/// The body (and answer) of `PUT /v1/clusters/{cluster}/namespaces`: which namespaces each
/// app's environments may use on the cluster. Once a cluster has one, an app it does not
/// name may use no namespace there; a cluster without one is not restricted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NamespaceAllowlist {
    /// App name → the namespaces its environments may use, e.g. `{"web": ["web", "web-staging"]}`.
    pub apps: BTreeMap<String, Vec<String>>,
}

/// A cluster's namespace allowlist as `GET /v1/clusters/{cluster}/namespaces` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterNamespaces {
    /// App name → the namespaces its environments may use; null when the cluster is not
    /// restricted.
    pub apps: Option<BTreeMap<String, Vec<String>>>,
}

impl NamespaceAllowlist {
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut v = Violations::new();
        if self.apps.len() > MAX_ALLOWLIST_APPS {
            v.add(
                "/apps",
                format!("must name at most {MAX_ALLOWLIST_APPS} apps"),
            );
        }
        for (app, namespaces) in &self.apps {
            let at = pointer("/apps", app);
            check_name(&mut v, &at, app);
            if namespaces.len() > MAX_ALLOWLIST_NAMESPACES {
                v.add(
                    at.clone(),
                    format!("must list at most {MAX_ALLOWLIST_NAMESPACES} namespaces"),
                );
            }
            for (i, ns) in namespaces.iter().enumerate() {
                check_name(&mut v, &pointer(&at, i), ns);
            }
        }
        v.into_result()
    }

    /// Whether `app` may use `namespace`.
    pub fn allows(&self, app: &str, namespace: &str) -> bool {
        self.apps
            .get(app)
            .is_some_and(|namespaces| namespaces.iter().any(|n| n == namespace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowlist_names_apps_and_their_namespaces() {
        let list = NamespaceAllowlist {
            apps: [(
                "web".to_owned(),
                vec!["web".to_owned(), "web-staging".to_owned()],
            )]
            .into(),
        };
        assert!(list.validate().is_ok());
        assert!(list.allows("web", "web-staging"));
        assert!(!list.allows("web", "shop"));
        assert!(
            !list.allows("shop", "web"),
            "an app it does not name may use nothing"
        );
        let bad = NamespaceAllowlist {
            apps: [("Web".to_owned(), vec!["ok".to_owned(), "No_Way".to_owned()])].into(),
        };
        let pointers: Vec<String> = bad
            .validate()
            .expect_err("invalid names")
            .errors
            .iter()
            .map(|e| e.pointer.clone())
            .collect();
        assert_eq!(pointers, ["/apps/Web", "/apps/Web/1"]);
    }
}
