//! The phase a rollout is in: the detail inside its coarse `status`.
//!
//! Stored (the `phase` column and the state's JSON) and returned by the API as the snake_case
//! text of its variant. A text this version does not know reads as [`Phase::Unknown`], which
//! every strategy fails as `invalid_state`, as it fails a phase of another strategy.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where a rollout is inside its status. Each strategy goes through its own phases (listed by
/// [`Phase::of_rolling`], [`Phase::of_blue_green`], [`Phase::of_canary`]); a few are shared:
/// a first deploy, the approval gate, promotion and the terminal phases.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Rolling: the Stable workload is being moved to the release.
    RollingUpdate,
    /// Rolling: the Stable workload is being moved back to the previous release.
    RollingBack,
    /// Blue-green or canary first deploy (nothing served before): deploy straight to full size.
    Deploying,
    /// Blue-green: the new color comes up beside the live one, on the preview Service.
    Preview,
    /// Any strategy: waiting for an `approve` command (status `paused`) before a phase that
    /// puts the release live ([`Phase::goes_live`]), when the environment requires approval.
    AwaitingApproval,
    /// Blue-green: waiting for a `promote` command (`auto_promote: false`; status `paused`).
    AwaitingPromotion,
    /// Blue-green: waiting `auto_promote_after` before promoting (status `running`; `promote`
    /// skips the wait).
    AutoPromoteWait,
    /// Blue-green: the new color is scaled to full size. Canary: the Stable workload is
    /// updated to the release.
    Promoting,
    /// Blue-green: the active Service is switched to the new color and verified.
    Switching,
    /// Blue-green: `scale_down_delay`, then the old color is scaled to zero.
    ScalingDownOld,
    /// Blue-green rollback: the old color is (re)made whole and both Services are pointed back
    /// at it.
    SwitchingBack,
    /// Blue-green rollback: the new color is scaled to zero.
    ScalingDownNew,
    /// Canary: working toward the goal of a `set_weight` or `set_canary_scale` step (`step`).
    CanaryStep,
    /// Canary: in a `pause` step, timed (status `running`) or until promoted (status `paused`).
    PausedStep,
    /// Canary promotion: traffic returns to Stable (which now runs the release) and is verified.
    ShiftingTraffic,
    /// Canary promotion: the canary is scaled to zero.
    ScalingDownCanary,
    /// Canary rollback: all traffic back to Stable at the previous release, verified.
    RestoringTraffic,
    /// Canary rollback: the canary is scaled to zero.
    RemovingCanary,
    /// Terminal, named like its status.
    Succeeded,
    /// Terminal, named like its status.
    RolledBack,
    /// Terminal, named like its status.
    Failed,
    /// A stored text this version does not know (kept as it was read): no strategy has it.
    Unknown(String),
}

impl Phase {
    /// Every phase this version knows.
    pub const ALL: [Self; 21] = [
        Self::RollingUpdate,
        Self::RollingBack,
        Self::Deploying,
        Self::Preview,
        Self::AwaitingApproval,
        Self::AwaitingPromotion,
        Self::AutoPromoteWait,
        Self::Promoting,
        Self::Switching,
        Self::ScalingDownOld,
        Self::SwitchingBack,
        Self::ScalingDownNew,
        Self::CanaryStep,
        Self::PausedStep,
        Self::ShiftingTraffic,
        Self::ScalingDownCanary,
        Self::RestoringTraffic,
        Self::RemovingCanary,
        Self::Succeeded,
        Self::RolledBack,
        Self::Failed,
    ];

    /// The phases that put the release in front of production traffic: the in-place rolling
    /// update, a first deploy at full size, and a canary's or blue-green's promotion with what
    /// follows it. None of them runs without the approval an environment requires.
    pub const LIVE: [Self; 7] = [
        Self::RollingUpdate,
        Self::Deploying,
        Self::Promoting,
        Self::Switching,
        Self::ScalingDownOld,
        Self::ShiftingTraffic,
        Self::ScalingDownCanary,
    ];

    /// The phases of a rolling update (the terminal ones included).
    pub const fn of_rolling() -> &'static [Self] {
        &[
            Self::RollingUpdate,
            Self::AwaitingApproval,
            Self::RollingBack,
            Self::Succeeded,
            Self::RolledBack,
            Self::Failed,
        ]
    }

    /// The phases of a blue-green rollout (the terminal ones included).
    pub const fn of_blue_green() -> &'static [Self] {
        &[
            Self::Deploying,
            Self::Preview,
            Self::AwaitingApproval,
            Self::AwaitingPromotion,
            Self::AutoPromoteWait,
            Self::Promoting,
            Self::Switching,
            Self::ScalingDownOld,
            Self::SwitchingBack,
            Self::ScalingDownNew,
            Self::Succeeded,
            Self::RolledBack,
            Self::Failed,
        ]
    }

    /// The phases of a canary (the terminal ones included).
    pub const fn of_canary() -> &'static [Self] {
        &[
            Self::Deploying,
            Self::CanaryStep,
            Self::PausedStep,
            Self::AwaitingApproval,
            Self::Promoting,
            Self::ShiftingTraffic,
            Self::ScalingDownCanary,
            Self::RestoringTraffic,
            Self::RemovingCanary,
            Self::Succeeded,
            Self::RolledBack,
            Self::Failed,
        ]
    }

    /// The stored text.
    pub fn as_str(&self) -> &str {
        match self {
            Self::RollingUpdate => "rolling_update",
            Self::RollingBack => "rolling_back",
            Self::Deploying => "deploying",
            Self::Preview => "preview",
            Self::AwaitingApproval => "awaiting_approval",
            Self::AwaitingPromotion => "awaiting_promotion",
            Self::AutoPromoteWait => "auto_promote_wait",
            Self::Promoting => "promoting",
            Self::Switching => "switching",
            Self::ScalingDownOld => "scaling_down_old",
            Self::SwitchingBack => "switching_back",
            Self::ScalingDownNew => "scaling_down_new",
            Self::CanaryStep => "canary_step",
            Self::PausedStep => "paused_step",
            Self::ShiftingTraffic => "shifting_traffic",
            Self::ScalingDownCanary => "scaling_down_canary",
            Self::RestoringTraffic => "restoring_traffic",
            Self::RemovingCanary => "removing_canary",
            Self::Succeeded => "succeeded",
            Self::RolledBack => "rolled_back",
            Self::Failed => "failed",
            Self::Unknown(text) => text,
        }
    }

    /// The phase a stored text names ([`Phase::Unknown`] when this version knows none).
    pub fn parse(text: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == text)
            .unwrap_or_else(|| Self::Unknown(text.to_owned()))
    }

    /// Whether the phase puts the release live (one of [`Phase::LIVE`]).
    pub fn goes_live(&self) -> bool {
        Self::LIVE.contains(self)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Phase {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Phase {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(Self::parse(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are what rows and the API have always carried.
    #[test]
    fn phases_keep_their_stored_text() {
        let texts: Vec<&str> = Phase::ALL.iter().map(Phase::as_str).collect();
        assert_eq!(
            texts,
            [
                "rolling_update",
                "rolling_back",
                "deploying",
                "preview",
                "awaiting_approval",
                "awaiting_promotion",
                "auto_promote_wait",
                "promoting",
                "switching",
                "scaling_down_old",
                "switching_back",
                "scaling_down_new",
                "canary_step",
                "paused_step",
                "shifting_traffic",
                "scaling_down_canary",
                "restoring_traffic",
                "removing_canary",
                "succeeded",
                "rolled_back",
                "failed",
            ]
        );
        for phase in Phase::ALL {
            let json = serde_json::to_value(&phase).unwrap_or_default();
            assert_eq!(json, serde_json::json!(phase.as_str()));
            let back: Phase = serde_json::from_value(json).unwrap_or(Phase::Failed);
            assert_eq!(back, phase);
        }
    }

    #[test]
    fn an_unknown_text_reads_as_unknown_and_writes_back_unchanged() {
        let phase: Phase = serde_json::from_str(r#""warp_drive""#).unwrap_or(Phase::Failed);
        assert_eq!(phase, Phase::Unknown("warp_drive".into()));
        assert_eq!(
            serde_json::to_string(&phase).unwrap_or_default(),
            r#""warp_drive""#
        );
    }

    #[test]
    fn every_known_phase_belongs_to_a_strategy() {
        for phase in Phase::ALL {
            assert!(
                Phase::of_rolling().contains(&phase)
                    || Phase::of_blue_green().contains(&phase)
                    || Phase::of_canary().contains(&phase),
                "{phase}"
            );
        }
    }
}
