//! Deployments: one request to move an environment to a new version.

use serde::{Deserialize, Serialize};

use crate::environment::EnvironmentSpec;
use crate::image::ImageRef;
use crate::strategy::StrategySpec;
use crate::validation::{ValidationError, Violations, pointer};

/// Longest free-text `reason` a request may carry.
pub const MAX_REASON_LEN: usize = 1_000;
/// Longest version label.
pub const MAX_VERSION_LEN: usize = 128;

/// The coarse, API-visible state of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeploymentStatus {
    Queued,
    Running,
    Paused,
    RollingBack,
    Succeeded,
    Failed,
    RolledBack,
    Cancelled,
    Superseded,
}

impl DeploymentStatus {
    pub const ALL: [Self; 9] = [
        Self::Queued,
        Self::Running,
        Self::Paused,
        Self::RollingBack,
        Self::Succeeded,
        Self::Failed,
        Self::RolledBack,
        Self::Cancelled,
        Self::Superseded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::RollingBack => "rolling_back",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::RolledBack => "rolled_back",
            Self::Cancelled => "cancelled",
            Self::Superseded => "superseded",
        }
    }

    /// Holds the environment: at most one deployment per environment is in such a state.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Paused | Self::RollingBack)
    }

    /// Will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::RolledBack | Self::Cancelled | Self::Superseded
        )
    }
}

impl std::str::FromStr for DeploymentStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|st| st.as_str()).collect();
                format!("unknown status {s:?}; one of {}", names.join(", "))
            })
    }
}

/// How a finished deployment ended, separate from how the environment is serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Promoted,
    Aborted,
    RolledBack,
    Superseded,
    Failed,
    Cancelled,
}

/// The environment's serving health as last observed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServingHealth {
    Healthy,
    Degraded,
    #[default]
    Unknown,
}

/// Serving health and the version that serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Serving {
    pub health: ServingHealth,
    pub version: Option<String>,
}

/// Why a deployment failed: a stable machine-readable code and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FailureReason {
    /// e.g. `progress_deadline_exceeded`, `analysis_failed`, `cluster_unreachable`.
    pub code: String,
    pub message: String,
}

/// Where a deployment request came from. The route a request comes in by decides it, never
/// the request: see [`Channel`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    #[default]
    Api,
    Github,
    Gitlab,
    Slack,
    Cli,
    /// A signed delivery to `POST /v1/webhooks/generic` (any CI system).
    Webhook,
}

/// The route a deployment request came in by: it decides the request's `source.kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The deployments API (`POST /v1/apps/{app}/environments/{env}/deployments`), called
    /// with a token: `source.kind` is `api`, or `cli` when the Slipway CLI says so; any
    /// other kind is refused (422 at `/source/kind`).
    Api,
    /// A delivery whose signature was verified, of this kind (`github`, `gitlab` or
    /// `webhook`): recorded as that kind, whatever the request says.
    Delivery(SourceKind),
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Slack => "slack",
            Self::Cli => "cli",
            Self::Webhook => "webhook",
        }
    }
}

/// Provenance of a deployment request: which change, from which repository, started by whom.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Set by the route a deployment came by: a request to the API may give `api` (the
    /// default) or `cli`, and is refused (422) with any other; webhook deliveries record
    /// `github`, `gitlab` or `webhook`.
    #[serde(default)]
    pub kind: SourceKind,
    /// Commit SHA (7–64 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Repository, e.g. `acme/web`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// The user who triggered the change in the source system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A link back to the pipeline run, pull request or message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl Source {
    fn validate(&self, v: &mut Violations, at: &str) {
        if let Some(commit) = &self.commit {
            let hex = commit.chars().all(|c| c.is_ascii_hexdigit());
            if !(7..=64).contains(&commit.len()) || !hex {
                v.add(
                    pointer(at, "commit"),
                    "must be a commit SHA of 7-64 hex digits",
                );
            }
        }
        if let Some(repo) = &self.repository {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "._-/".contains(c);
            if repo.is_empty() || repo.len() > 255 || !repo.chars().all(ok_char) {
                v.add(
                    pointer(at, "repository"),
                    "must be 1-255 characters of letters, digits, '.', '_', '-' and '/'",
                );
            }
        }
        if let Some(user) = &self.user
            && (user.is_empty() || user.len() > 255 || user.chars().any(char::is_control))
        {
            v.add(pointer(at, "user"), "must be 1-255 printable characters");
        }
        if let Some(url) = &self.url {
            let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
            if !scheme_ok || url.len() > 2_048 || url.chars().any(char::is_whitespace) {
                v.add(
                    pointer(at, "url"),
                    "must be an http(s) URL of at most 2048 characters",
                );
            }
        }
    }
}

/// The body of `POST /v1/apps/{app}/environments/{env}/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeploymentRequest {
    /// OCI image reference pinned by tag and/or digest.
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub image: String,
    /// Version label (default: the image tag, else the digest's first 12 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Overrides the environment's strategy for this deployment only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<StrategySpec>,
    /// Why this change is made, for the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub source: Source,
}

/// A validated deployment request with everything frozen that later changes to the
/// environment must not affect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentPlan {
    pub image: String,
    pub version: String,
    pub strategy: StrategySpec,
    /// The strategy is the request's own, not the environment's.
    pub strategy_overridden: bool,
    pub reason: Option<String>,
    pub source: Source,
}

/// Why a deployment request was not planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A field is invalid (422).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A field asks for what the environment does not allow (403); the error names it.
    #[error("not allowed by the environment: {0}")]
    NotAllowed(ValidationError),
}

impl DeploymentRequest {
    /// Validates the request against the environment it targets and freezes its strategy.
    /// A strategy of the request's own needs the environment's `allow_strategy_override`;
    /// `source.kind` is the one `channel` allows or sets.
    pub fn plan(
        mut self,
        env: &EnvironmentSpec,
        channel: Channel,
    ) -> Result<DeploymentPlan, PlanError> {
        if self.strategy.is_some() && !env.allow_strategy_override {
            return Err(PlanError::NotAllowed(ValidationError::single(
                "/strategy",
                "this environment does not allow a deployment to override its strategy \
                 (allow_strategy_override is false): leave strategy out",
            )));
        }
        let mut v = Violations::new();
        match channel {
            Channel::Api => {
                if !matches!(self.source.kind, SourceKind::Api | SourceKind::Cli) {
                    v.add(
                        "/source/kind",
                        format!(
                            "must be \"api\" or \"cli\" here: {:?} is recorded only for \
                             verified deliveries to its webhook",
                            self.source.kind.as_str()
                        ),
                    );
                }
            }
            Channel::Delivery(kind) => self.source.kind = kind,
        }
        let image = match ImageRef::parse(&self.image) {
            Ok(image) => Some(image),
            Err(e) => {
                v.add("/image", e.to_string());
                None
            }
        };
        if let Some(version) = &self.version {
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
            if version.is_empty()
                || version.len() > MAX_VERSION_LEN
                || !version.chars().all(ok_char)
            {
                v.add(
                    "/version",
                    format!(
                        "must be 1-{MAX_VERSION_LEN} characters of letters, digits, '.', '_', '+' and '-'"
                    ),
                );
            }
        }
        if let Some(reason) = &self.reason
            && reason.len() > MAX_REASON_LEN
        {
            v.add("/reason", format!("must be at most {MAX_REASON_LEN} bytes"));
        }
        if let Some(strategy) = &self.strategy {
            strategy.validate(&mut v, "/strategy", &env.workload);
        }
        self.source.validate(&mut v, "/source");
        v.into_result()?;
        let version = self
            .version
            .or_else(|| image.as_ref().map(ImageRef::version_label))
            .unwrap_or_default();
        Ok(DeploymentPlan {
            image: self.image,
            version,
            strategy_overridden: self.strategy.is_some(),
            strategy: self.strategy.unwrap_or_else(|| env.strategy.clone()),
            reason: self.reason,
            source: self.source,
        })
    }
}

impl Outcome {
    pub const ALL: [Self; 6] = [
        Self::Promoted,
        Self::Aborted,
        Self::RolledBack,
        Self::Superseded,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promoted => "promoted",
            Self::Aborted => "aborted",
            Self::RolledBack => "rolled_back",
            Self::Superseded => "superseded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl ServingHealth {
    pub const ALL: [Self; 3] = [Self::Healthy, Self::Degraded, Self::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unknown => "unknown",
        }
    }
}
