//! Replica arithmetic: rolling-update budgets and canary sizes.

use crate::strategy::{IntOrPercent, RollingSpec};

/// A rolling-update budget in replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub max_surge: u32,
    pub max_unavailable: u32,
}

/// Resolve a rolling budget (IntOrPercent) against replicas: surge rounds up, unavailable rounds
/// down (as Kubernetes). As Kubernetes does, when both come out 0 `max_unavailable` becomes 1,
/// so that the update can always progress.
pub fn resolve_budget(
    max_surge: IntOrPercent,
    max_unavailable: IntOrPercent,
    replicas: u32,
) -> Budget {
    let surge = match max_surge {
        IntOrPercent::Count(n) => n,
        IntOrPercent::Percent(p) => percent_up(replicas, p),
    };
    let unavailable = match max_unavailable {
        IntOrPercent::Count(n) => n,
        IntOrPercent::Percent(p) => percent_down(replicas, p),
    };
    Budget {
        max_surge: surge,
        max_unavailable: if surge == 0 && unavailable == 0 {
            1
        } else {
            unavailable
        },
    }
}

/// The budget used when Slipway applies a workload outside a rolling strategy (canary tracks,
/// blue-green colors): the rolling defaults, 25% surge and nothing unavailable.
pub(super) fn default_budget(replicas: u32) -> Budget {
    let d = RollingSpec::default();
    resolve_budget(d.max_surge, d.max_unavailable, replicas)
}

/// `ceil(replicas * percent / 100)`, saturating.
pub(super) fn percent_up(replicas: u32, percent: u32) -> u32 {
    let product = u64::from(replicas) * u64::from(percent);
    u32::try_from(product.div_ceil(100)).unwrap_or(u32::MAX)
}

/// `floor(replicas * percent / 100)`, saturating.
pub(super) fn percent_down(replicas: u32, percent: u32) -> u32 {
    let product = u64::from(replicas) * u64::from(percent);
    u32::try_from(product / 100).unwrap_or(u32::MAX)
}
