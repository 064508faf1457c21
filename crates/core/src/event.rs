//! What an event of a deployment's log says happened: its `kind`.
//!
//! The log stores the kind as text (`deployment_events.kind`) and the API returns it as a
//! string ([`crate::DeploymentEvent::kind`]), so rows written by older versions, and kinds a
//! newer version adds, still read; code that acts on a kind parses it with [`EventKind::parse`].

use serde::{Deserialize, Serialize};

/// The kind of an event, written as the snake_case text of its variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A deployment was recorded and waits its turn.
    Queued,
    /// It left the queue: its rollout began.
    Started,
    /// A newer queued deployment of the environment replaced it before it started.
    Superseded,
    /// It was aborted before it started.
    Cancelled,
    /// A failed or rolled-back deployment was queued again by `retry`.
    Retried,
    /// A person's command reached the engine.
    Command,
    /// A retryable cluster error: the step is tried again.
    ClusterError,
    /// A phase or a canary step began.
    StepStarted,
    /// A phase or a canary step reached its goal.
    StepCompleted,
    /// Traffic moved (canary weight, a blue-green Service's selector and endpoints).
    TrafficShifted,
    /// Held at the approval gate.
    AwaitingApproval,
    /// The approval was given.
    Approved,
    /// The release is live: the deployment succeeded.
    Promoted,
    /// Going back to the previous release.
    RollbackStarted,
    /// The previous release serves again.
    RolledBack,
    /// The deployment failed.
    Failed,
    /// Paused (by a command, or at a step or gate that waits for a person).
    Paused,
    /// Resumed after a `pause` command.
    Resumed,
    /// A command that no longer applied was not carried out.
    CommandIgnored,
}

impl EventKind {
    pub const ALL: [Self; 19] = [
        Self::Queued,
        Self::Started,
        Self::Superseded,
        Self::Cancelled,
        Self::Retried,
        Self::Command,
        Self::ClusterError,
        Self::StepStarted,
        Self::StepCompleted,
        Self::TrafficShifted,
        Self::AwaitingApproval,
        Self::Approved,
        Self::Promoted,
        Self::RollbackStarted,
        Self::RolledBack,
        Self::Failed,
        Self::Paused,
        Self::Resumed,
        Self::CommandIgnored,
    ];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Started => "started",
            Self::Superseded => "superseded",
            Self::Cancelled => "cancelled",
            Self::Retried => "retried",
            Self::Command => "command",
            Self::ClusterError => "cluster_error",
            Self::StepStarted => "step_started",
            Self::StepCompleted => "step_completed",
            Self::TrafficShifted => "traffic_shifted",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Approved => "approved",
            Self::Promoted => "promoted",
            Self::RollbackStarted => "rollback_started",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Paused => "paused",
            Self::Resumed => "resumed",
            Self::CommandIgnored => "command_ignored",
        }
    }

    /// The kind a stored text names; `None` for a kind this version does not know.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are what the log has always stored and the API has always returned: a
    /// renamed variant must not rename the rows.
    #[test]
    fn kinds_keep_their_stored_text() {
        let texts: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            texts,
            [
                "queued",
                "started",
                "superseded",
                "cancelled",
                "retried",
                "command",
                "cluster_error",
                "step_started",
                "step_completed",
                "traffic_shifted",
                "awaiting_approval",
                "approved",
                "promoted",
                "rollback_started",
                "rolled_back",
                "failed",
                "paused",
                "resumed",
                "command_ignored",
            ]
        );
        for kind in EventKind::ALL {
            let json = serde_json::to_value(kind).unwrap_or_default();
            assert_eq!(json, serde_json::json!(kind.as_str()));
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("note"), None);
    }
}
