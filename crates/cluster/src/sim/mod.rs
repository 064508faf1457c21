//! `SimCluster`: an in-memory cluster that behaves like Kubernetes Deployments, Services and a
//! traffic router for Slipway's purposes, with faults a test can inject.
//!
//! One instance serves any number of targets (keyed by namespace and workload name, then by
//! [`Track`]). State is plain data behind one mutex and is brought up to the [`Clock`]'s
//! `now` lazily, when a target is observed, changed or snapshotted: there are no background
//! tasks, so 10,000 targets cost a few hundred bytes each.
//!
//! Simplifications, compared with Kubernetes:
//! - a pod is ready `ready_after` after it is created and available as soon as it is ready;
//! - the controller acts on a spec only once it has observed it (`observe_delay` after the
//!   change), and then on the latest spec;
//! - pods being terminated count as `old` until `terminate_after` has passed, and count
//!   against `max_surge`;
//! - the progress deadline runs from the last spec change (not from the last progress);
//! - a Service's endpoints are the ready pods of the color it selects, from the moment the
//!   selector changes (no endpoint controller lag).

mod clock;
mod faults;
mod shared;
mod workload;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use slipway_core::TrafficRouting;
use slipway_core::rollout::{
    Action, Observation, Release, ServiceEndpoints, ServiceRole, Track, WorkloadStatus,
};

use crate::driver::{BoxFuture, ClusterDriver, DriverError, Target};
pub use clock::{Clock, ManualClock, SystemClock};
pub use faults::{Fault, FaultKind, FaultScope, Faults};
use shared::SharedDir;
pub use workload::WorkloadSpec;
use workload::{Env, WorkloadSim};

/// How the simulated cluster paces itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimSettings {
    /// How long a new pod takes to become ready (and available).
    pub ready_after: Duration,
    /// How long a removed pod takes to go away.
    pub terminate_after: Duration,
    /// How long the controller takes to observe a spec change (`observedGeneration` lags
    /// `generation` this long).
    pub observe_delay: Duration,
    /// How long the current template has to become complete after a spec change before the
    /// workload reports `progress_deadline_exceeded`.
    pub progress_deadline: Duration,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            ready_after: Duration::ZERO,
            terminate_after: Duration::ZERO,
            observe_delay: Duration::ZERO,
            progress_deadline: Duration::from_secs(600),
        }
    }
}

/// How many API calls the simulated cluster has answered (failed ones included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiCalls {
    pub observe: u64,
    pub apply: u64,
    /// Actions carried out by `apply` calls.
    pub actions: u64,
    /// Calls that returned an error.
    pub failed: u64,
}

/// What exists for one target, for tests to assert on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSnapshot {
    pub workloads: BTreeMap<Track, WorkloadSnapshot>,
    pub services: BTreeMap<ServiceRole, Track>,
    /// The weight last set by `SetCanaryWeight`, whatever the router.
    pub canary_weight: Option<u32>,
}

impl TargetSnapshot {
    /// Replicas asked for on `track`, if the workload exists.
    pub fn replicas(&self, track: Track) -> Option<u32> {
        self.workloads.get(&track).map(|w| w.spec.replicas)
    }

    /// The release `track` runs, if the workload exists.
    pub fn release(&self, track: Track) -> Option<&Release> {
        self.workloads.get(&track).map(|w| &w.spec.release)
    }
}

/// One workload's spec, status (as observed without faults) and pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSnapshot {
    pub spec: WorkloadSpec,
    pub status: WorkloadStatus,
    /// Pods per pod template, oldest template first.
    pub templates: Vec<TemplatePods>,
    /// Pods removed but not gone yet.
    pub terminating: u32,
}

/// The pods of one pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplatePods {
    pub release: Release,
    pub pods: u32,
    pub ready: u32,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct TargetState {
    workloads: BTreeMap<Track, WorkloadSim>,
    services: BTreeMap<ServiceRole, Track>,
    canary_weight: Option<u32>,
    /// Observes answered, for flapping readiness.
    observes: u64,
    /// The environment that wrote the target (what the Kubernetes driver's
    /// `slipway.dev/environment` label says); none in state written before it was kept, and
    /// then the next environment that writes claims it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

impl TargetState {
    fn is_empty(&self) -> bool {
        self.workloads.is_empty() && self.services.is_empty() && self.canary_weight.is_none()
    }
}

type Key = (String, String);

fn key(target: &Target) -> Key {
    (target.namespace.clone(), target.workload.name.clone())
}

#[derive(Debug)]
struct State {
    settings: SimSettings,
    targets: HashMap<Key, TargetState>,
}

/// An in-memory cluster. Share it as `Arc<SimCluster>` (or `Arc<dyn ClusterDriver>`).
pub struct SimCluster {
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    /// Set by [`SimCluster::shared`]: targets live in files there instead of `state.targets`.
    shared: Option<SharedDir>,
    faults: Faults,
    observe_calls: AtomicU64,
    apply_calls: AtomicU64,
    actions: AtomicU64,
    failed_calls: AtomicU64,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("SimCluster")
            .field("clock", &self.clock)
            .field("settings", &state.settings)
            .field("targets", &state.targets.len())
            .field("shared", &self.shared.as_ref().map(SharedDir::path))
            .field("faults", &self.faults)
            .finish()
    }
}

impl Default for SimCluster {
    /// Default settings, wall-clock time.
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl SimCluster {
    /// A cluster with default settings (instant readiness and termination, 600 s deadline).
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_settings(clock, SimSettings::default())
    }

    pub fn with_settings(clock: Arc<dyn Clock>, settings: SimSettings) -> Self {
        Self {
            clock,
            state: Mutex::new(State {
                settings,
                targets: HashMap::new(),
            }),
            shared: None,
            faults: Faults::default(),
            observe_calls: AtomicU64::new(0),
            apply_calls: AtomicU64::new(0),
            actions: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
        }
    }

    /// A cluster whose targets live in `dir`, shared with every other `SimCluster` (in this
    /// process or another on the same machine) opened on the same directory: what one applies,
    /// the others observe. Each call on a target reads and rewrites the target's file under an
    /// exclusive file lock. Settings, faults and API call counts stay per instance; all
    /// instances should use the same settings. A development and benchmark feature (several
    /// engine processes on one simulated cluster), not a model of a real cluster's latency.
    pub fn shared(
        clock: Arc<dyn Clock>,
        settings: SimSettings,
        dir: &Path,
    ) -> std::io::Result<Self> {
        let mut sim = Self::with_settings(clock, settings);
        sim.shared = Some(SharedDir::open(dir)?);
        Ok(sim)
    }

    /// The directory the state is shared in, if it is.
    pub fn shared_dir(&self) -> Option<&Path> {
        self.shared.as_ref().map(SharedDir::path)
    }

    /// The faults in force; set and clear them at any time.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn settings(&self) -> SimSettings {
        self.lock().settings.clone()
    }

    /// Changes the pace. Pods already created keep the readiness time they were given.
    pub fn set_settings(&self, settings: SimSettings) {
        self.lock().settings = settings;
    }

    /// API calls answered so far.
    pub fn api_calls(&self) -> ApiCalls {
        ApiCalls {
            observe: self.observe_calls.load(Ordering::Relaxed),
            apply: self.apply_calls.load(Ordering::Relaxed),
            actions: self.actions.load(Ordering::Relaxed),
            failed: self.failed_calls.load(Ordering::Relaxed),
        }
    }

    pub fn reset_api_calls(&self) {
        for counter in [
            &self.observe_calls,
            &self.apply_calls,
            &self.actions,
            &self.failed_calls,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Targets with anything in the cluster.
    pub fn target_count(&self) -> usize {
        match &self.shared {
            None => self.lock().targets.len(),
            Some(dir) => dir.count().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot list the shared simulated cluster");
                0
            }),
        }
    }

    /// What exists for `target` now (empty if nothing does). Not an API call: no faults apply.
    pub fn snapshot(&self, target: &Target) -> TargetSnapshot {
        let now = self.clock.now();
        let result = self.with_target(target, false, |ts, env| {
            let workloads = ts
                .workloads
                .iter_mut()
                .map(|(track, w)| {
                    w.advance(now, env);
                    let (templates, terminating) = w.pods(env);
                    let templates = templates
                        .into_iter()
                        .map(|(release, pods, ready)| TemplatePods {
                            release,
                            pods,
                            ready,
                        })
                        .collect();
                    let snapshot = WorkloadSnapshot {
                        spec: w.spec().clone(),
                        status: w.status(env),
                        templates,
                        terminating,
                    };
                    (*track, snapshot)
                })
                .collect();
            TargetSnapshot {
                workloads,
                services: ts.services.clone(),
                canary_weight: ts.canary_weight,
            }
        });
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the shared simulated cluster");
            TargetSnapshot::default()
        })
    }

    /// Runs `f` on `target`'s state (empty if nothing exists for it), brought in from the
    /// shared directory when there is one and, if `changes`, written back to it under the
    /// target's lock; a target left empty is forgotten. Bringing a workload up to `now`
    /// ([`WorkloadSim::advance`]) replays what happened since its last change, whenever it is
    /// done, so a call that changes nothing else reads the latest file (renamed into place
    /// whole) without the lock and writes nothing back.
    fn with_target<R>(
        &self,
        target: &Target,
        changes: bool,
        f: impl FnOnce(&mut TargetState, Env<'_>) -> R,
    ) -> Result<R, DriverError> {
        let never_ready = self.never_ready(target);
        match &self.shared {
            None => {
                let mut state = self.lock();
                let State { settings, targets } = &mut *state;
                let env = Env {
                    settings,
                    never_ready: &never_ready,
                };
                let k = key(target);
                let ts = targets.entry(k.clone()).or_default();
                let result = f(ts, env);
                if ts.is_empty() {
                    targets.remove(&k);
                }
                Ok(result)
            }
            Some(dir) => {
                let settings = self.settings();
                let env = Env {
                    settings: &settings,
                    never_ready: &never_ready,
                };
                let unavailable = |e: std::io::Error| {
                    DriverError::retryable(
                        "sim_state_unavailable",
                        format!(
                            "the shared simulated cluster in {} failed: {e}",
                            dir.path().display()
                        ),
                    )
                };
                let (namespace, name) = (&target.namespace, &target.workload.name);
                if !changes {
                    let mut ts = dir.read(namespace, name).map_err(unavailable)?;
                    return Ok(f(&mut ts, env));
                }
                let (locked, mut ts) = dir.load(namespace, name).map_err(unavailable)?;
                let result = f(&mut ts, env);
                locked.store(&ts).map_err(unavailable)?;
                Ok(result)
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn never_ready(&self, target: &Target) -> Vec<Release> {
        self.faults
            .never_ready(&target.namespace, &target.workload.name)
    }

    /// Latency, then an injected error if there is one.
    async fn enter(&self, target: &Target, counter: &AtomicU64) -> Result<(), DriverError> {
        counter.fetch_add(1, Ordering::Relaxed);
        let (namespace, name) = (&target.namespace, &target.workload.name);
        if let Some(d) = self.faults.latency(namespace, name) {
            tokio::time::sleep(d).await;
        }
        match self.faults.take_error(namespace, name) {
            Some(e) => {
                self.failed_calls.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
            None => Ok(()),
        }
    }

    fn observe_now(&self, target: &Target) -> Result<Observation, DriverError> {
        let flapping = self
            .faults
            .flapping(&target.namespace, &target.workload.name);
        let now = self.clock.now();
        // Only the flapping fault's count of observes is state an observe changes.
        self.with_target(target, flapping, |ts, env| {
            if ts.is_empty() {
                return Ok(Observation {
                    canary_weight: reported_weight(target, None),
                    ..Observation::default()
                });
            }
            check_owner(target, ts)?;
            ts.observes += 1;
            let dip = flapping && ts.observes % 2 == 0;
            let workloads = ts
                .workloads
                .iter_mut()
                .map(|(track, w)| {
                    w.advance(now, env);
                    let mut status = w.status(env);
                    if dip {
                        status.ready = status.ready.saturating_sub(1);
                        status.available = status.available.saturating_sub(1);
                    }
                    (*track, status)
                })
                .collect();
            let endpoints = service_endpoints(&ts.services, &workloads);
            Ok(Observation {
                workloads,
                services: ts.services.clone(),
                endpoints,
                canary_weight: reported_weight(target, ts.canary_weight),
            })
        })?
    }

    fn apply_now(&self, target: &Target, actions: &[Action]) -> Result<(), DriverError> {
        let now = self.clock.now();
        self.with_target(target, true, |ts, env| {
            if !ts.is_empty() {
                check_owner(target, ts)?;
            }
            ts.owner = Some(target.environment.clone());
            for action in actions {
                apply_one(ts, action, now, env)?;
                self.actions.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })?
    }
}

/// What the Kubernetes driver refuses, the simulated cluster refuses too: a target whose
/// objects another environment wrote (`owned_by_other_environment`).
fn check_owner(target: &Target, ts: &TargetState) -> Result<(), DriverError> {
    target.check_owner(
        &format!("workload {}", target.workload.name),
        ts.owner.as_deref(),
    )
}

/// The weight the router reports: none on the replica-ratio router, otherwise the last weight
/// set (0 until then: all traffic on stable).
fn reported_weight(target: &Target, stored: Option<u32>) -> Option<u32> {
    match target.traffic {
        TrafficRouting::Replicas => None,
        _ => Some(stored.unwrap_or(0)),
    }
}

fn apply_one(
    ts: &mut TargetState,
    action: &Action,
    now: chrono::DateTime<chrono::Utc>,
    env: Env<'_>,
) -> Result<(), DriverError> {
    match action {
        Action::ApplyWorkload {
            track,
            release,
            replicas,
            max_surge,
            max_unavailable,
        } => {
            let spec = WorkloadSpec {
                release: release.clone(),
                replicas: *replicas,
                max_surge: *max_surge,
                max_unavailable: *max_unavailable,
            };
            match ts.workloads.get_mut(track) {
                Some(w) => {
                    w.set_spec(spec, now, env);
                }
                None => {
                    ts.workloads
                        .insert(*track, WorkloadSim::new(spec, now, env));
                }
            }
        }
        Action::ScaleWorkload { track, replicas } => {
            let Some(w) = ts.workloads.get_mut(track) else {
                return Err(DriverError::permanent(
                    "workload_not_found",
                    format!(
                        "cannot scale the {} workload: it does not exist",
                        track.as_str()
                    ),
                ));
            };
            let spec = WorkloadSpec {
                replicas: *replicas,
                ..w.spec().clone()
            };
            w.set_spec(spec, now, env);
        }
        Action::SelectTrack { service, track } => {
            ts.services.insert(*service, *track);
        }
        Action::SetCanaryWeight { canary_weight } => {
            if *canary_weight > 100 {
                return Err(DriverError::permanent(
                    "invalid_weight",
                    format!("canary weight {canary_weight} is not between 0 and 100"),
                ));
            }
            ts.canary_weight = Some(*canary_weight);
        }
        Action::DeleteWorkload { track } => {
            ts.workloads.remove(track);
        }
    }
    Ok(())
}

impl ClusterDriver for SimCluster {
    fn observe<'a>(
        &'a self,
        target: &'a Target,
    ) -> BoxFuture<'a, Result<Observation, DriverError>> {
        Box::pin(async move {
            self.enter(target, &self.observe_calls).await?;
            let result = self.observe_now(target);
            if result.is_err() {
                self.failed_calls.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    }

    fn apply<'a>(
        &'a self,
        target: &'a Target,
        actions: &'a [Action],
    ) -> BoxFuture<'a, Result<(), DriverError>> {
        Box::pin(async move {
            self.enter(target, &self.apply_calls).await?;
            let stall = (self.faults).take_apply_delay(&target.namespace, &target.workload.name);
            if let Some(delay) = stall {
                tokio::time::sleep(delay).await;
            }
            let result = self.apply_now(target, actions);
            if result.is_err() {
                self.failed_calls.fetch_add(1, Ordering::Relaxed);
            }
            result
        })
    }
}

/// What a Service's EndpointSlices would hold: the ready pods of the color it selects (the
/// simulated endpoint controller follows a selector change at once).
fn service_endpoints(
    services: &BTreeMap<ServiceRole, Track>,
    workloads: &BTreeMap<Track, WorkloadStatus>,
) -> BTreeMap<ServiceRole, ServiceEndpoints> {
    services
        .iter()
        .map(|(role, track)| {
            let mut e = ServiceEndpoints::default();
            if let Some(ready) = workloads.get(track).map(|w| w.ready).filter(|n| *n > 0) {
                e.ready.insert(*track, ready);
            }
            (*role, e)
        })
        .collect()
}
