//! The driver shared by every strategy: `start`, `decide`, the progress deadline, and the
//! transitions into rollback and the terminal states.

use chrono::{DateTime, Duration, Utc};

use super::budget::default_budget;
use super::phase::Phase;
use super::types::{
    Action, Command, Decision, Note, Observation, Release, RollbackCause, RolloutSpec,
    RolloutState, ServiceRole, Track,
};
use super::{blue_green, canary, commands, rolling};
use crate::deployment::{DeploymentStatus, FailureReason, Outcome, ServingHealth};
use crate::duration::DurationSpec;
use crate::event::EventKind;
use crate::strategy::StrategySpec;

/// Poll interval while waiting on the cluster.
pub const POLL: Duration = Duration::seconds(2);
/// The first look at the cluster after a phase begins: a rollout that takes a second is seen
/// done within a quarter of a second, not up to [`POLL`] later. Later looks slow down (half
/// the time waited so far) until they are [`POLL`] apart.
pub const FIRST_POLL: Duration = Duration::milliseconds(250);
/// Poll interval while waiting for a person (a command also wakes the engine up).
pub const HOLD_POLL: Duration = Duration::seconds(60);

/// Failure codes the machines record.
pub mod failure_code {
    pub const PROGRESS_DEADLINE_EXCEEDED: &str = "progress_deadline_exceeded";
    pub const ROLLBACK_FAILED: &str = "rollback_failed";
    /// Aborted (or rolled back by request) with no previous release to return to.
    pub const NO_PREVIOUS_RELEASE: &str = "no_previous_release";
    /// A canary `analysis` step, with no analysis provider to run it.
    pub const ANALYSIS_UNAVAILABLE: &str = "analysis_unavailable";
    /// The stored state does not fit the strategy (e.g. an unknown phase).
    pub const INVALID_STATE: &str = "invalid_state";
    /// A cluster object of the workload belongs to another environment (its
    /// `slipway.dev/environment` label names another one): the driver leaves it alone.
    pub const OWNED_BY_OTHER_ENVIRONMENT: &str = "owned_by_other_environment";
    /// A cluster object of the workload exists without Slipway's labels and the environment
    /// does not adopt it (`adopt: false`).
    pub const NOT_MANAGED: &str = "not_managed";
}

/// What a phase handler found.
#[derive(Debug)]
pub(super) enum Flow {
    /// The state moved on: evaluate the new phase in the same tick.
    Next,
    /// Waiting on the cluster (actions were emitted as needed); the progress deadline runs.
    Wait,
    /// Waiting for a timer (the progress deadline does not run).
    Timer(DateTime<Utc>),
    /// Waiting for a person (the progress deadline does not run).
    Hold,
    /// The phase cannot succeed.
    Fail(FailureReason),
}

/// One tick in the making: the inputs, and the state, actions and notes so far.
#[derive(Debug)]
pub(super) struct Tick<'a> {
    pub spec: &'a RolloutSpec,
    pub obs: &'a Observation,
    pub now: DateTime<Utc>,
    pub state: RolloutState,
    pub actions: Vec<Action>,
    pub notes: Vec<Note>,
}

/// `now + d`, saturating instead of panicking.
pub(super) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now.checked_add_signed(d)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

pub(super) fn duration(d: DurationSpec) -> Duration {
    i64::try_from(d.as_secs())
        .ok()
        .and_then(Duration::try_seconds)
        .unwrap_or(Duration::MAX)
}

pub(super) fn failure(code: &str, message: impl Into<String>) -> FailureReason {
    FailureReason {
        code: code.to_owned(),
        message: message.into(),
    }
}

impl Tick<'_> {
    pub(super) fn replicas(&self) -> u32 {
        self.spec.workload.replicas
    }

    pub(super) fn release(&self) -> &Release {
        &self.spec.release
    }

    pub(super) fn note(&mut self, kind: EventKind, message: impl Into<String>) {
        self.notes.push(Note {
            kind,
            message: message.into(),
        });
    }

    pub(super) fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// The workload of `track` runs `release` with exactly `replicas`, all available.
    pub(super) fn complete(&self, track: Track, release: &Release, replicas: u32) -> bool {
        self.obs
            .workload(track)
            .is_some_and(|w| w.is_complete(release, replicas))
    }

    /// The workload of `track` is absent, or asks for no replicas and has none available.
    pub(super) fn is_zero(&self, track: Track) -> bool {
        self.obs.workload(track).is_none_or(|w| {
            w.desired == 0 && w.available == 0 && w.observed_generation >= w.generation
        })
    }

    /// The workload of `track` has replicas asked for.
    pub(super) fn has_replicas(&self, track: Track) -> bool {
        self.obs.workload(track).is_some_and(|w| w.desired > 0)
    }

    pub(super) fn selects(&self, service: ServiceRole, track: Track) -> bool {
        self.obs.services.get(&service) == Some(&track)
    }

    /// The EndpointSlices behind `service` hold ready endpoints of `color` and none of the
    /// other color: traffic has left the other color, not just the selector.
    pub(super) fn serves_only(&self, service: ServiceRole, color: Track) -> bool {
        self.obs.ready_endpoints(service, color) > 0
            && self.obs.ready_endpoints(service, color.other_color()) == 0
    }

    /// The workload of `track`, driven toward `release`, reports `ProgressDeadlineExceeded`.
    pub(super) fn stalled(&self, track: Track, release: &Release) -> Option<FailureReason> {
        let w = self.obs.workload(track)?;
        (w.progress_deadline_exceeded && w.release.as_ref() == Some(release)).then(|| {
            failure(
                failure_code::PROGRESS_DEADLINE_EXCEEDED,
                format!(
                    "the {} workload at {} reports ProgressDeadlineExceeded",
                    track.as_str(),
                    release.version
                ),
            )
        })
    }

    /// Ask for `track` at `release` with `replicas` (budget: the rolling defaults).
    pub(super) fn apply(&mut self, track: Track, release: &Release, replicas: u32) {
        let budget = default_budget(replicas);
        self.push(Action::ApplyWorkload {
            track,
            release: release.clone(),
            replicas,
            max_surge: budget.max_surge,
            max_unavailable: budget.max_unavailable,
        });
    }

    /// Apply `track` at `release`/`replicas` unless it is complete. `Ok(true)` when complete,
    /// `Err` when the workload reports it cannot progress.
    pub(super) fn ensure(
        &mut self,
        track: Track,
        release: &Release,
        replicas: u32,
    ) -> Result<bool, FailureReason> {
        if self.complete(track, release, replicas) {
            return Ok(true);
        }
        if let Some(reason) = self.stalled(track, release) {
            return Err(reason);
        }
        self.apply(track, release, replicas);
        Ok(false)
    }

    /// Enter a phase in which the machine waits on the cluster: status running, a fresh
    /// progress deadline, no timer.
    pub(super) fn enter(&mut self, phase: Phase) {
        self.state.phase = phase;
        self.state.status = if self.state.status == DeploymentStatus::RollingBack {
            DeploymentStatus::RollingBack
        } else {
            DeploymentStatus::Running
        };
        self.state.timer_at = None;
        self.state.progress_deadline_at =
            Some(after(self.now, duration(self.spec.progress_deadline)));
    }

    /// Whether `phase` must wait: it puts the release live ([`Phase::goes_live`]) and the
    /// environment requires an approval not given yet. A rollback never waits for one.
    pub(super) fn awaits_approval(&self, phase: &Phase) -> bool {
        self.spec.approval.required
            && self.state.approved_by.is_none()
            && self.state.status != DeploymentStatus::RollingBack
            && phase.goes_live()
    }

    /// Enter `phase`, which puts the release live, announcing it with `message`; while the
    /// approval the environment requires is missing, hold at the approval gate instead, to
    /// enter `phase` once approved.
    pub(super) fn go_live(&mut self, phase: Phase, message: impl Into<String>) {
        if self.awaits_approval(&phase) {
            self.hold_for_approval(phase);
        } else {
            self.enter(phase);
            self.note(EventKind::StepStarted, message);
        }
    }

    /// Hold at the approval gate; `approve` then enters `then`.
    fn hold_for_approval(&mut self, then: Phase) {
        self.state.gated_phase = Some(then);
        self.hold_in(Phase::AwaitingApproval);
        self.note(
            EventKind::AwaitingApproval,
            "waiting for approval to go live",
        );
    }

    /// `approve` at the gate: enter the phase it holds back (`promoting` for a gate stored
    /// before [`RolloutState::gated_phase`] existed).
    pub(super) fn approved(&mut self, actor: &str) {
        self.state.approved_by = Some(actor.to_owned());
        self.note(EventKind::Approved, format!("approved by {actor}"));
        let then = self.state.gated_phase.take().unwrap_or(Phase::Promoting);
        let message = then.as_str().replace('_', " ");
        self.enter(then);
        self.note(EventKind::StepStarted, message);
    }

    /// Enter a phase that waits for a person: status paused, no deadline.
    pub(super) fn hold_in(&mut self, phase: Phase) {
        self.state.phase = phase;
        self.state.status = DeploymentStatus::Paused;
        self.state.timer_at = None;
        self.state.progress_deadline_at = None;
    }

    /// Enter a phase that waits until `at`: status running, no deadline.
    pub(super) fn wait_until(&mut self, phase: Phase, at: DateTime<Utc>) {
        self.state.phase = phase;
        self.state.status = DeploymentStatus::Running;
        self.state.timer_at = Some(at);
        self.state.progress_deadline_at = None;
    }

    pub(super) fn succeed(&mut self) {
        let s = &mut self.state;
        s.status = DeploymentStatus::Succeeded;
        s.phase = Phase::Succeeded;
        s.outcome = Some(Outcome::Promoted);
        s.serving = Some(self.spec.release.clone());
        s.serving_health = ServingHealth::Healthy;
        s.timer_at = None;
        s.progress_deadline_at = None;
        s.paused_by_command = false;
        let version = self.spec.release.version.clone();
        self.note(EventKind::Promoted, format!("{version} is live"));
    }

    pub(super) fn rolled_back(&mut self) {
        let s = &mut self.state;
        s.status = DeploymentStatus::RolledBack;
        s.phase = Phase::RolledBack;
        s.outcome = Some(match s.rollback_cause {
            Some(RollbackCause::Aborted) => Outcome::Aborted,
            _ => Outcome::RolledBack,
        });
        s.serving = s.previous.clone();
        s.serving_health = ServingHealth::Healthy;
        s.timer_at = None;
        s.progress_deadline_at = None;
        s.paused_by_command = false;
        let version = s
            .previous
            .as_ref()
            .map_or_else(String::new, |r| r.version.clone());
        self.note(
            EventKind::RolledBack,
            format!("{version} serves again, healthy"),
        );
    }

    /// End in `failed`; the strategy leaves the cluster in a consistent shape.
    pub(super) fn finish_failed(
        &mut self,
        reason: FailureReason,
        outcome: Outcome,
        health: ServingHealth,
    ) {
        let message = reason.message.clone();
        let s = &mut self.state;
        s.status = DeploymentStatus::Failed;
        s.phase = Phase::Failed;
        s.outcome = Some(outcome);
        s.failure = Some(reason);
        s.serving_health = health;
        s.timer_at = None;
        s.progress_deadline_at = None;
        s.paused_by_command = false;
        if let StrategySpec::BlueGreen(_) = self.spec.strategy {
            blue_green::settle(self);
        }
        self.note(EventKind::Failed, message);
    }

    /// Start going back to `previous` (which the caller checked exists).
    pub(super) fn begin_rollback(&mut self, cause: RollbackCause, reason: Option<FailureReason>) {
        let message = match (&reason, cause) {
            (Some(r), _) => format!("rolling back: {}", r.message),
            (None, RollbackCause::Aborted) => "aborted: rolling back".to_owned(),
            (None, _) => "rollback requested".to_owned(),
        };
        if reason.is_some() {
            self.state.failure = reason;
        }
        self.state.rollback_cause = Some(cause);
        self.state.status = DeploymentStatus::RollingBack;
        self.state.paused_by_command = false;
        let rollback_phase = match self.spec.strategy {
            StrategySpec::Rolling(_) => Phase::RollingBack,
            StrategySpec::BlueGreen(_) => Phase::SwitchingBack,
            StrategySpec::Canary(_) => Phase::RestoringTraffic,
        };
        self.enter(rollback_phase);
        self.note(EventKind::RollbackStarted, message);
    }

    /// The current phase cannot succeed: roll back when there is something to go back to,
    /// else fail. A rollback that fails ends the rollout as `rollback_failed`.
    pub(super) fn fail(&mut self, reason: FailureReason) {
        self.state.timer_at = None;
        if self.state.status == DeploymentStatus::RollingBack {
            let message = format!("the rollback did not complete: {}", reason.message);
            let reason = failure(failure_code::ROLLBACK_FAILED, message);
            self.finish_failed(reason, Outcome::Failed, ServingHealth::Degraded);
        } else if self.state.previous.is_some() {
            self.begin_rollback(RollbackCause::Failed, Some(reason));
        } else {
            self.finish_failed(reason, Outcome::Failed, ServingHealth::Degraded);
        }
    }
}

/// The cluster refused the deployment for good (a permanent driver error): the rollout ends
/// `failed` where it stands (`state`; `None` when it had not started, which fails the state
/// it would have started in), with the cluster's reason and serving health unknown, since
/// nothing more can be observed. Like every terminal state, `decide` never changes it.
pub fn refused(
    spec: &RolloutSpec,
    state: Option<&RolloutState>,
    reason: FailureReason,
    now: DateTime<Utc>,
) -> RolloutState {
    let mut failed = state
        .cloned()
        .unwrap_or_else(|| super::start(spec, &Observation::default(), now));
    failed.status = DeploymentStatus::Failed;
    failed.phase = Phase::Failed;
    failed.outcome = Some(Outcome::Failed);
    failed.failure = Some(reason);
    failed.serving_health = ServingHealth::Unknown;
    failed
}

/// How long to wait before looking at the cluster again, `waited` into a phase.
fn wait_poll(waited: Duration) -> Duration {
    (waited / 2).clamp(FIRST_POLL, POLL)
}

/// One tick. Consumes `commands` (in order; a command that no longer applies is ignored with a
/// Note), never panics.
pub fn decide(
    spec: &RolloutSpec,
    state: &RolloutState,
    observation: &Observation,
    commands: &[Command],
    now: DateTime<Utc>,
) -> Decision {
    let mut t = Tick {
        spec,
        obs: observation,
        now,
        state: state.clone(),
        actions: Vec::new(),
        notes: Vec::new(),
    };
    if !state.status.is_active() {
        for command in commands {
            commands::ignore(&mut t, command);
        }
        return Decision {
            state: state.clone(),
            actions: Vec::new(),
            notes: t.notes,
            wake_at: None,
        };
    }
    for command in commands {
        commands::consume(&mut t, command);
    }
    let wake_at = run(&mut t);
    Decision {
        state: t.state,
        actions: t.actions,
        notes: t.notes,
        wake_at,
    }
}

/// The strategy's work on the current phase (a phase handler, not a canary step).
fn run_phase(t: &mut Tick<'_>) -> Flow {
    let spec = t.spec;
    match &spec.strategy {
        StrategySpec::Rolling(r) => rolling::run_phase(t, r),
        StrategySpec::BlueGreen(b) => blue_green::run_phase(t, b),
        StrategySpec::Canary(c) => canary::run_phase(t, c),
    }
}

/// Evaluate phases until the machine has to wait; returns when to look again.
fn run(t: &mut Tick<'_>) -> Option<DateTime<Utc>> {
    let steps = match &t.spec.strategy {
        StrategySpec::Canary(c) => c.steps.len(),
        _ => 0,
    };
    let limit = steps.saturating_mul(3).saturating_add(32);
    for _ in 0..limit {
        if !t.state.status.is_active() {
            return None;
        }
        if t.state.paused_by_command {
            t.state.progress_deadline_at = None;
            return Some(after(t.now, HOLD_POLL));
        }
        if t.awaits_approval(&t.state.phase) {
            // Whatever led here (the phase a rollout starts in, a state stored before the
            // gate existed), a phase that puts the release live waits for the approval.
            let then = t.state.phase.clone();
            t.hold_for_approval(then);
        }
        let mark = t.actions.len();
        match run_phase(t) {
            Flow::Next => {}
            Flow::Fail(reason) => {
                t.actions.truncate(mark);
                t.fail(reason);
            }
            Flow::Wait => {
                let fresh = after(t.now, duration(t.spec.progress_deadline));
                let deadline = *t.state.progress_deadline_at.get_or_insert(fresh);
                if t.now >= deadline {
                    t.actions.truncate(mark);
                    let message = format!(
                        "no progress in phase {} within the progress deadline ({})",
                        t.state.phase, t.spec.progress_deadline
                    );
                    t.fail(failure(failure_code::PROGRESS_DEADLINE_EXCEEDED, message));
                } else {
                    let waited = t.now - (deadline - duration(t.spec.progress_deadline));
                    return Some(deadline.min(after(t.now, wait_poll(waited))));
                }
            }
            Flow::Timer(at) => {
                t.state.progress_deadline_at = None;
                return Some(if t.actions.is_empty() {
                    at
                } else {
                    at.min(after(t.now, POLL))
                });
            }
            Flow::Hold => {
                t.state.progress_deadline_at = None;
                return Some(after(
                    t.now,
                    if t.actions.is_empty() {
                        HOLD_POLL
                    } else {
                        POLL
                    },
                ));
            }
        }
    }
    Some(after(t.now, POLL))
}
