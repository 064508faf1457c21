//! Failures a test injects into a [`SimCluster`](super::SimCluster) at run time.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use slipway_core::rollout::Release;

use crate::driver::{DriverError, Target};

/// Which targets a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FaultScope {
    /// Every target of the cluster.
    Cluster,
    /// One target, by namespace and workload name.
    Target { namespace: String, workload: String },
}

impl FaultScope {
    /// The scope of exactly this target.
    pub fn target(target: &Target) -> Self {
        Self::Target {
            namespace: target.namespace.clone(),
            workload: target.workload.name.clone(),
        }
    }

    fn covers(&self, namespace: &str, workload: &str) -> bool {
        match self {
            Self::Cluster => true,
            Self::Target {
                namespace: n,
                workload: w,
            } => n == namespace && w == workload,
        }
    }
}

impl From<&Target> for FaultScope {
    fn from(target: &Target) -> Self {
        Self::target(target)
    }
}

/// Something that goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Pods of this release never become ready.
    NeverReady(Release),
    /// The ready (and available) count of every workload alternates between its true value and
    /// one less on successive observes.
    FlappingReadiness,
    /// API calls (observe and apply) fail with `error`: the next `remaining` calls, or every
    /// call until cleared when `remaining` is `None`.
    ApiErrors {
        error: DriverError,
        remaining: Option<u32>,
    },
    /// Each API call waits this long (`tokio::time::sleep`) before doing anything.
    Latency(Duration),
    /// The next `remaining` apply calls (every one until cleared when `None`) wait `delay`
    /// before changing anything, after any `Latency`: a worker that stalls between its
    /// fence check and its write to the cluster.
    SlowApplies {
        delay: Duration,
        remaining: Option<u32>,
    },
}

impl Fault {
    /// The next `n` calls fail with `error`.
    pub fn fail_next(n: u32, error: DriverError) -> Self {
        Self::ApiErrors {
            error,
            remaining: Some(n),
        }
    }

    /// Every call fails with `error` until the fault is cleared.
    pub fn fail_all(error: DriverError) -> Self {
        Self::ApiErrors {
            error,
            remaining: None,
        }
    }

    /// Every call fails as if the API server were unreachable, until cleared.
    pub fn unreachable() -> Self {
        Self::fail_all(DriverError::unreachable(
            "simulated: API server unreachable",
        ))
    }

    /// The next apply call waits `delay` before changing anything.
    pub fn slow_next_apply(delay: Duration) -> Self {
        Self::SlowApplies {
            delay,
            remaining: Some(1),
        }
    }

    pub fn kind(&self) -> FaultKind {
        match self {
            Self::NeverReady(_) => FaultKind::NeverReady,
            Self::FlappingReadiness => FaultKind::FlappingReadiness,
            Self::ApiErrors { .. } => FaultKind::ApiErrors,
            Self::Latency(_) => FaultKind::Latency,
            Self::SlowApplies { .. } => FaultKind::SlowApplies,
        }
    }

    /// Two faults with the same slot replace each other in a scope.
    fn same_slot(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::NeverReady(a), Self::NeverReady(b)) => a == b,
            _ => self.kind() == other.kind(),
        }
    }
}

/// The kinds of [`Fault`], for clearing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    NeverReady,
    FlappingReadiness,
    ApiErrors,
    Latency,
    SlowApplies,
}

/// The faults in force. A target-scoped fault takes precedence over a cluster-wide one of the
/// same kind; never-ready releases of both scopes add up.
#[derive(Debug, Default)]
pub struct Faults {
    active: Mutex<Vec<(FaultScope, Fault)>>,
}

impl Faults {
    /// Puts `fault` in force for `scope`, replacing one of the same kind (for `NeverReady`, of
    /// the same release) already set there.
    pub fn set(&self, scope: FaultScope, fault: Fault) {
        let mut active = self.lock();
        active.retain(|(s, f)| !(*s == scope && f.same_slot(&fault)));
        active.push((scope, fault));
    }

    /// Removes the faults of `kind` set for `scope`.
    pub fn clear(&self, scope: &FaultScope, kind: FaultKind) {
        self.lock()
            .retain(|(s, f)| !(s == scope && f.kind() == kind));
    }

    /// Removes every fault set for `scope`.
    pub fn clear_scope(&self, scope: &FaultScope) {
        self.lock().retain(|(s, _)| s != scope);
    }

    /// Removes every fault.
    pub fn clear_all(&self) {
        self.lock().clear();
    }

    /// The faults in force, in the order they were set.
    pub fn active(&self) -> Vec<(FaultScope, Fault)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(FaultScope, Fault)>> {
        self.active.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latency to apply to a call for this target.
    pub(crate) fn latency(&self, namespace: &str, workload: &str) -> Option<Duration> {
        let active = self.lock();
        most_specific(&active, namespace, workload, FaultKind::Latency).and_then(|i| match &active
            [i]
            .1
        {
            Fault::Latency(d) => Some(*d),
            _ => None,
        })
    }

    /// The error this call fails with, if any; consumes one of a counted fault.
    pub(crate) fn take_error(&self, namespace: &str, workload: &str) -> Option<DriverError> {
        let mut active = self.lock();
        let i = most_specific(&active, namespace, workload, FaultKind::ApiErrors)?;
        let Fault::ApiErrors { error, remaining } = &mut active[i].1 else {
            return None;
        };
        let error = error.clone();
        if used_up(remaining) {
            active.remove(i);
        }
        Some(error)
    }

    /// How long this apply call waits before changing anything, if at all; consumes one of
    /// a counted fault.
    pub(crate) fn take_apply_delay(&self, namespace: &str, workload: &str) -> Option<Duration> {
        let mut active = self.lock();
        let i = most_specific(&active, namespace, workload, FaultKind::SlowApplies)?;
        let Fault::SlowApplies { delay, remaining } = &mut active[i].1 else {
            return None;
        };
        let delay = *delay;
        if used_up(remaining) {
            active.remove(i);
        }
        Some(delay)
    }

    /// Releases whose pods never become ready in this target.
    pub(crate) fn never_ready(&self, namespace: &str, workload: &str) -> Vec<Release> {
        self.lock()
            .iter()
            .filter(|(s, _)| s.covers(namespace, workload))
            .filter_map(|(_, f)| match f {
                Fault::NeverReady(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn flapping(&self, namespace: &str, workload: &str) -> bool {
        most_specific(
            &self.lock(),
            namespace,
            workload,
            FaultKind::FlappingReadiness,
        )
        .is_some()
    }
}

/// Counts one use of a fault that lasts `remaining` calls (`None`: until cleared); true
/// when that was its last.
fn used_up(remaining: &mut Option<u32>) -> bool {
    match remaining {
        None => false,
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        Some(_) => true,
    }
}

/// Index of the fault of `kind` that applies: the target's own, else the cluster-wide one.
fn most_specific(
    active: &[(FaultScope, Fault)],
    namespace: &str,
    workload: &str,
    kind: FaultKind,
) -> Option<usize> {
    let mut cluster_wide = None;
    for (i, (scope, fault)) in active.iter().enumerate() {
        if fault.kind() != kind || !scope.covers(namespace, workload) {
            continue;
        }
        match scope {
            FaultScope::Target { .. } => return Some(i),
            FaultScope::Cluster => cluster_wide = cluster_wide.or(Some(i)),
        }
    }
    cluster_wide
}
