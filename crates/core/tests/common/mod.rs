//! A tiny pure "cluster" that applies actions to an observation, and a harness that steps a
//! rollout by hand.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use slipway_core::rollout::{
    Action, Command, CommandKind, Decision, Observation, Phase, Release, RolloutSpec, RolloutState,
    ServiceEndpoints, ServiceRole, Track, WorkloadStatus, accepts, decide, start,
};
use slipway_core::{ApprovalPolicy, DeploymentStatus, DurationSpec, StrategySpec, Workload};

pub(crate) const REPLICAS: u32 = 4;
pub(crate) const DEADLINE_SECS: i64 = 60;
pub(crate) const REQUESTER: &str = "alice";

pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .unwrap_or_else(|| panic!("a valid instant"))
}

pub(crate) fn release(version: &str) -> Release {
    Release {
        image: format!("ghcr.io/acme/web:{version}"),
        version: version.to_owned(),
        pod_labels: Default::default(),
    }
}

pub(crate) fn v1() -> Release {
    release("1.0.0")
}

pub(crate) fn v2() -> Release {
    release("2.0.0")
}

pub(crate) fn strategy(value: Value) -> StrategySpec {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn spec(strategy: StrategySpec) -> RolloutSpec {
    RolloutSpec {
        namespace: "web".into(),
        workload: Workload {
            name: "web".into(),
            container: "web".into(),
            replicas: REPLICAS,
            port: 8080,
            pod_labels: Default::default(),
        },
        strategy,
        progress_deadline: DurationSpec::from_secs(DEADLINE_SECS as u64),
        approval: ApprovalPolicy::default(),
        release: v2(),
    }
}

pub(crate) fn rolling() -> RolloutSpec {
    spec(strategy(
        json!({"type": "rolling", "max_surge": "25%", "max_unavailable": 0}),
    ))
}

/// A workload that runs `release` with `replicas`, all available.
pub(crate) fn complete(release: &Release, replicas: u32) -> WorkloadStatus {
    WorkloadStatus {
        release: Some(release.clone()),
        desired: replicas,
        generation: 1,
        observed_generation: 1,
        updated: replicas,
        ready: replicas,
        available: replicas,
        old: 0,
        progress_deadline_exceeded: false,
    }
}

/// A simulated cluster: selector and weight changes apply at once (as an API write does);
/// workload changes become available `lag` settles later, or never for `stuck` tracks.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cluster {
    pub(crate) obs: Observation,
    pub(crate) lag: u32,
    pub(crate) stuck: BTreeSet<Track>,
    /// Stuck workloads report `ProgressDeadlineExceeded`.
    pub(crate) report_stuck: bool,
    /// The endpoint controller does not run: the Services' endpoints stay as they are.
    pub(crate) endpoints_stale: bool,
    pending: BTreeMap<Track, u32>,
}

impl Cluster {
    pub(crate) fn empty() -> Self {
        Self::default()
    }

    /// Stable serves v1 at full size.
    pub(crate) fn with_stable() -> Self {
        let mut c = Self::default();
        c.obs
            .workloads
            .insert(Track::Stable, complete(&v1(), REPLICAS));
        c
    }

    /// `live` serves v1 at full size; both Services select it.
    pub(crate) fn with_live(live: Track) -> Self {
        let mut c = Self::default();
        c.obs.workloads.insert(live, complete(&v1(), REPLICAS));
        c.obs.services.insert(ServiceRole::Active, live);
        c.obs.services.insert(ServiceRole::Preview, live);
        c.sync_endpoints();
        c
    }

    pub(crate) fn workload(&self, track: Track) -> Option<&WorkloadStatus> {
        self.obs.workload(track)
    }

    pub(crate) fn desired(&self, track: Track) -> u32 {
        self.workload(track).map_or(0, |w| w.desired)
    }

    pub(crate) fn active(&self) -> Option<Track> {
        self.obs.services.get(&ServiceRole::Active).copied()
    }

    fn changed(&mut self, track: Track) {
        if let Some(w) = self.obs.workloads.get_mut(&track) {
            w.generation += 1;
            w.observed_generation = w.generation - 1;
            self.pending.insert(track, self.lag);
        }
    }

    pub(crate) fn apply(&mut self, actions: &[Action]) {
        for action in actions {
            match action {
                Action::ApplyWorkload {
                    track,
                    release,
                    replicas,
                    ..
                } => {
                    let w = self.obs.workloads.entry(*track).or_default();
                    if w.release.as_ref() != Some(release) || w.desired != *replicas {
                        if w.release.as_ref() != Some(release) {
                            w.old = w.updated;
                            w.updated = 0;
                        }
                        w.release = Some(release.clone());
                        w.desired = *replicas;
                        self.changed(*track);
                    }
                }
                Action::ScaleWorkload { track, replicas } => {
                    if let Some(w) = self.obs.workloads.get_mut(track)
                        && w.desired != *replicas
                    {
                        w.desired = *replicas;
                        self.changed(*track);
                    }
                }
                Action::SelectTrack { service, track } => {
                    self.obs.services.insert(*service, *track);
                }
                Action::SetCanaryWeight { canary_weight } => {
                    self.obs.canary_weight = Some(*canary_weight);
                }
                Action::DeleteWorkload { track } => {
                    self.obs.workloads.remove(track);
                }
            }
        }
        self.settle_ready();
    }

    /// Time passes for pods: pending changes count down and complete; then the endpoint
    /// controller catches up (unless stale), so a selector change reaches the endpoints one
    /// settle after the write, as it does a moment after it in Kubernetes.
    pub(crate) fn settle(&mut self) {
        for left in self.pending.values_mut() {
            *left = left.saturating_sub(1);
        }
        self.settle_ready();
        if !self.endpoints_stale {
            self.sync_endpoints();
        }
    }

    /// Each Service's endpoints become the ready pods of the color it selects.
    pub(crate) fn sync_endpoints(&mut self) {
        let endpoints = self
            .obs
            .services
            .iter()
            .map(|(role, track)| {
                let ready = self.obs.workload(*track).map_or(0, |w| w.ready);
                let mut e = ServiceEndpoints::default();
                if ready > 0 {
                    e.ready.insert(*track, ready);
                }
                (*role, e)
            })
            .collect();
        self.obs.endpoints = endpoints;
    }

    fn settle_ready(&mut self) {
        let tracks: Vec<Track> = self.pending.keys().copied().collect();
        for track in tracks {
            let Some(w) = self.obs.workloads.get_mut(&track) else {
                self.pending.remove(&track);
                continue;
            };
            if self.stuck.contains(&track) && w.desired > 0 {
                w.observed_generation = w.generation;
                w.available = 0;
                w.ready = 0;
                w.progress_deadline_exceeded = self.report_stuck;
                continue;
            }
            if self.pending.get(&track).copied().unwrap_or(0) == 0 {
                w.observed_generation = w.generation;
                w.updated = w.desired;
                w.ready = w.desired;
                w.available = w.desired;
                w.old = 0;
                w.progress_deadline_exceeded = false;
                self.pending.remove(&track);
            }
        }
    }

    pub(crate) fn stick(&mut self, track: Track) {
        self.stuck.insert(track);
        self.pending.entry(track).or_insert(0);
        self.settle_ready();
    }

    pub(crate) fn unstick(&mut self, track: Track) {
        self.stuck.remove(&track);
        if self.obs.workloads.contains_key(&track) {
            self.pending.entry(track).or_insert(0);
        }
        self.settle_ready();
    }
}

/// A rollout stepped by hand against a [`Cluster`].
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) spec: RolloutSpec,
    pub(crate) state: RolloutState,
    pub(crate) cluster: Cluster,
    pub(crate) now: DateTime<Utc>,
    pub(crate) history: Vec<Decision>,
}

impl Run {
    pub(crate) fn new(spec: RolloutSpec, cluster: Cluster) -> Self {
        let now = t0();
        let state = start(&spec, &cluster.obs, now);
        Self {
            spec,
            state,
            cluster,
            now,
            history: Vec::new(),
        }
    }

    /// One tick: decide on what the cluster shows, apply the actions, let pods settle.
    pub(crate) fn tick_with(&mut self, commands: &[Command]) -> Decision {
        let d = decide(
            &self.spec,
            &self.state,
            &self.cluster.obs,
            commands,
            self.now,
        );
        self.cluster.apply(&d.actions);
        self.cluster.settle();
        self.state = d.state.clone();
        self.history.push(d.clone());
        d
    }

    pub(crate) fn tick(&mut self) -> Decision {
        self.tick_with(&[])
    }

    /// A tick carrying one command by `actor`.
    pub(crate) fn command(&mut self, kind: CommandKind, actor: &str) -> Decision {
        self.tick_with(&[Command {
            kind,
            actor: actor.to_owned(),
        }])
    }

    pub(crate) fn advance(&mut self, secs: i64) {
        self.now += Duration::seconds(secs);
    }

    pub(crate) fn at(&self, secs: i64) -> DateTime<Utc> {
        self.now + Duration::seconds(secs)
    }

    pub(crate) fn status(&self) -> DeploymentStatus {
        self.state.status
    }

    pub(crate) fn phase(&self) -> Phase {
        self.state.phase.clone()
    }

    /// Ticks (at most `max`) until the state is terminal or matches `until`.
    pub(crate) fn tick_until(
        &mut self,
        max: usize,
        until: impl Fn(&RolloutState) -> bool,
    ) -> Decision {
        let mut last = self.tick();
        for _ in 1..max {
            if until(&self.state) || self.state.status.is_terminal() {
                break;
            }
            last = self.tick();
        }
        last
    }

    /// The commands `accepts` lets through now, for `actor`.
    pub(crate) fn accepted(&self, actor: &str) -> Vec<CommandKind> {
        CommandKind::ALL
            .into_iter()
            .filter(|k| accepts(&self.spec, &self.state, *k, actor, REQUESTER).is_ok())
            .collect()
    }
}

pub(crate) fn note_kinds(d: &Decision) -> Vec<&str> {
    d.notes.iter().map(|n| n.kind.as_str()).collect()
}

pub(crate) fn apply(track: Track, release: &Release, replicas: u32) -> Action {
    let surge = replicas.div_ceil(4);
    Action::ApplyWorkload {
        track,
        release: release.clone(),
        replicas,
        max_surge: surge,
        max_unavailable: if surge == 0 { 1 } else { 0 },
    }
}

pub(crate) fn scale(track: Track, replicas: u32) -> Action {
    Action::ScaleWorkload { track, replicas }
}

pub(crate) fn select(service: ServiceRole, track: Track) -> Action {
    Action::SelectTrack { service, track }
}

pub(crate) fn weight(canary_weight: u32) -> Action {
    Action::SetCanaryWeight { canary_weight }
}

/// Requires a distinct approver for `run` and ticks it: it must hold at `awaiting_approval`
/// (paused, no progress deadline) applying nothing, an hour later still, and take `approve`
/// from someone other than the requester only.
pub(crate) fn assert_held_for_approval(run: &mut Run) {
    run.spec.approval.required = true;
    run.spec.approval.distinct_approver = true;
    let d = run.tick();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(note_kinds(&d), vec!["awaiting_approval"]);
    assert_eq!(run.phase(), Phase::AwaitingApproval);
    assert_eq!(run.status(), DeploymentStatus::Paused);
    assert_eq!(
        run.state.progress_deadline_at, None,
        "waiting is not a lack of progress"
    );
    run.advance(3600);
    let d = run.tick();
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(run.phase(), Phase::AwaitingApproval);
    use CommandKind::{Abort, Approve, Rollback};
    assert_eq!(run.accepted(REQUESTER), vec![Abort, Rollback]);
    assert_eq!(run.accepted("bob"), vec![Approve, Abort, Rollback]);
}
