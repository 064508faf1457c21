//! The vocabulary shared by the state machines, the engine and the cluster drivers.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::phase::Phase;
use crate::deployment::{DeploymentStatus, FailureReason, Outcome, ServingHealth};
use crate::duration::DurationSpec;
use crate::environment::{ApprovalPolicy, Workload};
use crate::event::EventKind;
use crate::strategy::StrategySpec;

/// A version of the workload: the image, its label, and the extra pod labels it runs with
/// (the environment's `workload.pod_labels` when the deployment was created). Two releases
/// are the same only with the same pod labels: a rollback re-applies the previous pod
/// template exactly, so Kubernetes scales the previous ReplicaSet back up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Release {
    pub image: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

/// Everything fixed for the life of one deployment attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub namespace: String,
    pub workload: Workload,
    pub strategy: StrategySpec,
    pub progress_deadline: DurationSpec,
    pub approval: ApprovalPolicy,
    /// What is being deployed.
    pub release: Release,
}

/// A Kubernetes Deployment Slipway manages for a workload, by role.
///
/// Rolling updates use `Stable` only. Canaries use `Stable` (named like the workload) and
/// `Canary` (`<name>-canary`). Blue-green uses `Blue` (`<name>-blue`) and `Green`
/// (`<name>-green`), selected by the active Service `<name>` and the preview Service
/// `<name>-preview`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Track {
    Stable,
    Canary,
    Blue,
    Green,
}

impl Track {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Canary => "canary",
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }

    /// The other color of a blue-green pair.
    pub fn other_color(self) -> Self {
        match self {
            Self::Blue => Self::Green,
            Self::Green => Self::Blue,
            other => other,
        }
    }
}

/// The Services a blue-green rollout switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceRole {
    /// `<name>`: takes production traffic.
    Active,
    /// `<name>-preview`: reaches the new color before the switch.
    Preview,
}

/// What the driver saw of one managed workload (a Kubernetes Deployment and its ReplicaSets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    /// The release of the workload's current pod template.
    pub release: Option<Release>,
    /// Replicas asked for in the spec.
    pub desired: u32,
    /// `metadata.generation` and `status.observedGeneration`.
    pub generation: i64,
    pub observed_generation: i64,
    /// Pods of the current template.
    pub updated: u32,
    /// Ready pods, and ready for `minReadySeconds` (available), of any template.
    pub ready: u32,
    pub available: u32,
    /// Pods of older templates still present (scaling down or terminating).
    pub old: u32,
    /// `Progressing` is false with reason `ProgressDeadlineExceeded`.
    pub progress_deadline_exceeded: bool,
}

impl WorkloadStatus {
    /// The controller has seen the latest spec and every pod runs it and is available.
    pub fn is_complete(&self, release: &Release, replicas: u32) -> bool {
        self.release.as_ref() == Some(release)
            && self.desired == replicas
            && self.observed_generation >= self.generation
            && self.updated == replicas
            && self.available == replicas
            && self.old == 0
    }
}

/// What the driver saw of the environment at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// Managed workloads that exist, by track.
    pub workloads: BTreeMap<Track, WorkloadStatus>,
    /// Which color each blue-green Service selects, when the Service exists.
    pub services: BTreeMap<ServiceRole, Track>,
    /// What the EndpointSlices behind each blue-green Service hold (blue-green only; a
    /// Service with no slices has no entry). Observations stored before this field read as
    /// empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<ServiceRole, ServiceEndpoints>,
    /// The canary's traffic weight as the traffic router reports it (0–100), when a router
    /// other than replica ratio is in use.
    pub canary_weight: Option<u32>,
}

impl Observation {
    pub fn workload(&self, track: Track) -> Option<&WorkloadStatus> {
        self.workloads.get(&track)
    }

    /// The ready endpoints behind `service` that are pods of `track`.
    pub fn ready_endpoints(&self, service: ServiceRole, track: Track) -> u32 {
        self.endpoints
            .get(&service)
            .map_or(0, |e| e.ready_of(track))
    }
}

/// The endpoints a Service's EndpointSlices hold: what actually receives its traffic, which
/// lags behind the Service's selector while the endpoint controller catches up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoints {
    /// Ready endpoints by the track whose workload's pod backs them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ready: BTreeMap<Track, u32>,
    /// Ready endpoints backed by no pod of a managed workload.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub other: u32,
}

impl ServiceEndpoints {
    pub fn ready_of(&self, track: Track) -> u32 {
        self.ready.get(&track).copied().unwrap_or(0)
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An idempotent intent for the cluster driver. Applying the same action twice is harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Server-side apply the workload of `track` at `release` with `replicas`.
    ApplyWorkload {
        track: Track,
        release: Release,
        replicas: u32,
        /// Rolling-update budget in replicas (already resolved from percentages).
        max_surge: u32,
        max_unavailable: u32,
    },
    /// Change only the replica count of an existing workload.
    ScaleWorkload { track: Track, replicas: u32 },
    /// Point a blue-green Service at a color (creating the Service if needed).
    SelectTrack { service: ServiceRole, track: Track },
    /// Send `canary_weight` percent of traffic to the canary and the rest to stable, through
    /// the environment's traffic router.
    SetCanaryWeight { canary_weight: u32 },
    /// Remove a workload Slipway created.
    DeleteWorkload { track: Track },
}

/// A person's instruction to a running deployment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// Move past the current pause or gate.
    Promote,
    /// Give the approval the environment requires before going live.
    Approve,
    /// Stop making progress until resumed.
    Pause,
    Resume,
    /// Stop and return traffic and replicas to the previous version.
    Abort,
    /// Like abort, recorded as a rollback.
    Rollback,
    /// Start a failed or aborted deployment again (handled by the engine, not `decide`).
    Retry,
}

impl CommandKind {
    pub const ALL: [Self; 7] = [
        Self::Promote,
        Self::Approve,
        Self::Pause,
        Self::Resume,
        Self::Abort,
        Self::Rollback,
        Self::Retry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Promote => "promote",
            Self::Approve => "approve",
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Abort => "abort",
            Self::Rollback => "rollback",
            Self::Retry => "retry",
        }
    }
}

/// A command as `decide` receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub kind: CommandKind,
    pub actor: String,
}

/// Where a rollout is: the stored state of the machine. Every timer is an absolute instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    pub status: DeploymentStatus,
    /// Detail inside `status`, e.g. `canary_step`, `awaiting_promotion`, `scaling_down_old`.
    pub phase: Phase,
    /// Index of the current canary step.
    pub step: u32,
    pub outcome: Option<Outcome>,
    pub failure: Option<FailureReason>,
    pub serving_health: ServingHealth,
    /// The release the environment serves, as far as the machine knows.
    pub serving: Option<Release>,
    /// The release that served before this rollout began: what a rollback returns to.
    pub previous: Option<Release>,
    /// Blue-green: the color that served when the rollout began, and the new color.
    pub live_color: Option<Track>,
    /// When the whole rollout gives up for lack of progress.
    pub progress_deadline_at: Option<DateTime<Utc>>,
    /// When the current timed pause, auto-promotion or scale-down delay ends.
    pub timer_at: Option<DateTime<Utc>>,
    /// A person paused the rollout (as opposed to a pause step).
    pub paused_by_command: bool,
    /// Approval given, by whom.
    pub approved_by: Option<String>,
    /// At the approval gate (`awaiting_approval`): the phase an approval opens, which puts
    /// the release live. `None` in states stored before it existed: their gate opened onto
    /// `promoting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gated_phase: Option<Phase>,
    /// Why the machine is rolling back, once it is.
    pub rollback_cause: Option<RollbackCause>,
}

/// Why a rollout is going back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RollbackCause {
    /// A person aborted it.
    Aborted,
    /// A person asked for a rollback.
    RollbackRequested,
    /// It failed (deadline, unhealthy); `failure` says how.
    Failed,
}

/// Something worth telling people, for the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub kind: EventKind,
    pub message: String,
}

/// The result of one decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub state: RolloutState,
    pub actions: Vec<Action>,
    pub notes: Vec<Note>,
    /// Look again no later than this (a timer, or a poll while waiting on the cluster).
    pub wake_at: Option<DateTime<Utc>>,
}

/// A command refused in the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot {command} a deployment that is {status} ({phase}){}",
    .reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
)]
pub struct CommandRejected {
    pub command: &'static str,
    pub status: &'static str,
    pub phase: Phase,
    /// Why, when the state alone does not say (e.g. the approver must differ from the requester).
    pub reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_stored_before_endpoints_still_read() {
        let stored = r#"{"workloads": {}, "services": {"active": "blue"}, "canary_weight": null}"#;
        let o: Observation =
            serde_json::from_str(stored).unwrap_or_else(|e| panic!("old observation: {e}"));
        assert!(o.endpoints.is_empty());
        assert_eq!(o.ready_endpoints(ServiceRole::Active, Track::Blue), 0);

        let mut o = Observation::default();
        o.endpoints.insert(
            ServiceRole::Active,
            ServiceEndpoints {
                ready: [(Track::Green, 3)].into(),
                other: 0,
            },
        );
        let json = serde_json::to_value(&o).unwrap_or_default();
        assert_eq!(
            json["endpoints"],
            serde_json::json!({"active": {"ready": {"green": 3}}})
        );
        let back: Observation =
            serde_json::from_value(json).unwrap_or_else(|e| panic!("round trip: {e}"));
        assert_eq!(back, o);
    }
}
