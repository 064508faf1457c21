//! The `phase` values a rollout passes through: the detail inside its coarse `status`.

/// Rolling: the Stable workload is being moved to the release.
pub const ROLLING_UPDATE: &str = "rolling_update";
/// Rolling: the Stable workload is being moved back to the previous release.
pub const ROLLING_BACK: &str = "rolling_back";

/// Blue-green or canary first deploy (nothing served before): deploy straight to full size.
pub const DEPLOYING: &str = "deploying";

/// Blue-green: the new color comes up beside the live one, on the preview Service.
pub const PREVIEW: &str = "preview";
/// Any strategy: waiting for an `approve` command (status `paused`) before a phase that puts
/// the release live ([`goes_live`]), when the environment requires approval.
pub const AWAITING_APPROVAL: &str = "awaiting_approval";
/// Blue-green: waiting for a `promote` command (`auto_promote: false`; status `paused`).
pub const AWAITING_PROMOTION: &str = "awaiting_promotion";
/// Blue-green: waiting `auto_promote_after` before promoting (status `running`; `promote`
/// skips the wait).
pub const AUTO_PROMOTE_WAIT: &str = "auto_promote_wait";
/// Blue-green: the new color is scaled to full size. Canary: the Stable workload is updated to
/// the release.
pub const PROMOTING: &str = "promoting";
/// Blue-green: the active Service is switched to the new color and verified.
pub const SWITCHING: &str = "switching";
/// Blue-green: `scale_down_delay`, then the old color is scaled to zero.
pub const SCALING_DOWN_OLD: &str = "scaling_down_old";
/// Blue-green rollback: the old color is (re)made whole and both Services are pointed back at it.
pub const SWITCHING_BACK: &str = "switching_back";
/// Blue-green rollback: the new color is scaled to zero.
pub const SCALING_DOWN_NEW: &str = "scaling_down_new";

/// Canary: working toward the goal of a `set_weight` or `set_canary_scale` step (`step`).
pub const CANARY_STEP: &str = "canary_step";
/// Canary: in a `pause` step, timed (status `running`) or until promoted (status `paused`).
pub const PAUSED_STEP: &str = "paused_step";
/// Canary promotion: traffic returns to Stable (which now runs the release) and is verified.
pub const SHIFTING_TRAFFIC: &str = "shifting_traffic";
/// Canary promotion: the canary is scaled to zero.
pub const SCALING_DOWN_CANARY: &str = "scaling_down_canary";
/// Canary rollback: all traffic back to Stable at the previous release, verified.
pub const RESTORING_TRAFFIC: &str = "restoring_traffic";
/// Canary rollback: the canary is scaled to zero.
pub const REMOVING_CANARY: &str = "removing_canary";

/// Terminal phases, named like their status.
pub const SUCCEEDED: &str = "succeeded";
pub const ROLLED_BACK: &str = "rolled_back";
pub const FAILED: &str = "failed";

/// The phases that put the release in front of production traffic: the in-place rolling
/// update, a first deploy at full size, and a canary's or blue-green's promotion with what
/// follows it. None of them runs without the approval an environment requires.
pub const LIVE: [&str; 7] = [
    ROLLING_UPDATE,
    DEPLOYING,
    PROMOTING,
    SWITCHING,
    SCALING_DOWN_OLD,
    SHIFTING_TRAFFIC,
    SCALING_DOWN_CANARY,
];

/// Whether `phase` puts the release live (one of [`LIVE`]).
pub fn goes_live(phase: &str) -> bool {
    LIVE.contains(&phase)
}

/// Every phase, for documentation and tests.
pub const ALL: [&str; 21] = [
    ROLLING_UPDATE,
    ROLLING_BACK,
    DEPLOYING,
    PREVIEW,
    AWAITING_APPROVAL,
    AWAITING_PROMOTION,
    AUTO_PROMOTE_WAIT,
    PROMOTING,
    SWITCHING,
    SCALING_DOWN_OLD,
    SWITCHING_BACK,
    SCALING_DOWN_NEW,
    CANARY_STEP,
    PAUSED_STEP,
    SHIFTING_TRAFFIC,
    SCALING_DOWN_CANARY,
    RESTORING_TRAFFIC,
    REMOVING_CANARY,
    SUCCEEDED,
    ROLLED_BACK,
    FAILED,
];
