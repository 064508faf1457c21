//! Which commands make sense in which state, and what they do to it.

use super::machine::{Tick, after, duration, failure, failure_code};
use super::phase::Phase;
use super::types::{
    Command, CommandKind, CommandRejected, RollbackCause, RolloutSpec, RolloutState,
};
use super::{blue_green, canary};
use crate::deployment::{DeploymentStatus, Outcome, ServingHealth};
use crate::event::EventKind;
use crate::strategy::StrategySpec;

/// Whether `kind` makes sense now; `actor`/`requested_by` for the distinct-approver rule.
///
/// - `promote`: in a pause step, `awaiting_promotion`, or the timed auto-promote wait;
/// - `approve`: in `awaiting_approval`, from someone other than the requester when the
///   environment requires a distinct approver;
/// - `pause`: while running (not paused, not rolling back, not finished);
/// - `resume`: only when paused by a `pause` command;
/// - `abort`, `rollback`: while running or paused;
/// - `retry`: only once failed or rolled back (the engine re-queues; `decide` ignores it).
pub fn accepts(
    spec: &RolloutSpec,
    state: &RolloutState,
    kind: CommandKind,
    actor: &str,
    requested_by: &str,
) -> Result<(), CommandRejected> {
    applies(state, kind)?;
    if kind == CommandKind::Approve && spec.approval.distinct_approver && actor == requested_by {
        return Err(rejected(
            state,
            kind,
            Some("the approver must be someone other than the requester"),
        ));
    }
    Ok(())
}

/// Whether `retry` applies to a deployment in `status`: once it failed or was rolled back.
/// The API refuses a `retry` otherwise, and the engine re-queues by the same rule.
pub fn retries(status: DeploymentStatus) -> bool {
    matches!(
        status,
        DeploymentStatus::Failed | DeploymentStatus::RolledBack
    )
}

/// The state-only part of [`accepts`], which `decide` re-checks when it consumes a command.
pub(super) fn applies(state: &RolloutState, kind: CommandKind) -> Result<(), CommandRejected> {
    let status = state.status;
    let at_gate =
        status.is_active() && status != DeploymentStatus::RollingBack && !state.paused_by_command;
    let ok = match kind {
        CommandKind::Promote => {
            at_gate
                && matches!(
                    state.phase,
                    Phase::PausedStep | Phase::AwaitingPromotion | Phase::AutoPromoteWait
                )
        }
        CommandKind::Approve => at_gate && state.phase == Phase::AwaitingApproval,
        CommandKind::Pause => status == DeploymentStatus::Running && !state.paused_by_command,
        CommandKind::Resume => status == DeploymentStatus::Paused && state.paused_by_command,
        CommandKind::Abort | CommandKind::Rollback => {
            matches!(status, DeploymentStatus::Running | DeploymentStatus::Paused)
        }
        CommandKind::Retry => retries(status),
    };
    if ok {
        Ok(())
    } else {
        let reason = match kind {
            CommandKind::Resume if status == DeploymentStatus::Paused => {
                Some("it waits at a step or gate, not for resume: promote or approve it")
            }
            CommandKind::Promote | CommandKind::Approve if state.paused_by_command => {
                Some("it was paused by a command: resume it first")
            }
            _ => None,
        };
        Err(rejected(state, kind, reason))
    }
}

fn rejected(state: &RolloutState, kind: CommandKind, reason: Option<&str>) -> CommandRejected {
    CommandRejected {
        command: kind.as_str(),
        status: state.status.as_str(),
        phase: state.phase.clone(),
        reason: reason.map(str::to_owned),
    }
}

/// Record that `command` was not applied.
pub(super) fn ignore(t: &mut Tick<'_>, command: &Command) {
    let why = match applies(&t.state, command.kind) {
        Err(e) => e.to_string(),
        Ok(()) => format!("{} is handled by the engine", command.kind.as_str()),
    };
    t.note(
        EventKind::CommandIgnored,
        format!(
            "{} by {} ignored: {why}",
            command.kind.as_str(),
            command.actor
        ),
    );
}

/// Apply `command` to the state when it still applies, else note that it was ignored.
pub(super) fn consume(t: &mut Tick<'_>, command: &Command) {
    if command.kind == CommandKind::Retry || applies(&t.state, command.kind).is_err() {
        ignore(t, command);
        return;
    }
    let actor = command.actor.as_str();
    let spec = t.spec;
    match command.kind {
        CommandKind::Promote => match &spec.strategy {
            StrategySpec::Canary(c) => canary::promote(t, c, actor),
            StrategySpec::BlueGreen(_) => blue_green::promote(t, actor),
            StrategySpec::Rolling(_) => ignore(t, command),
        },
        CommandKind::Approve => t.approved(actor),
        CommandKind::Pause => {
            t.state.paused_by_command = true;
            t.state.status = DeploymentStatus::Paused;
            t.state.progress_deadline_at = None;
            t.note(EventKind::Paused, format!("paused by {actor}"));
        }
        CommandKind::Resume => {
            t.state.paused_by_command = false;
            t.state.status = DeploymentStatus::Running;
            t.state.progress_deadline_at = Some(after(t.now, duration(t.spec.progress_deadline)));
            t.note(EventKind::Resumed, format!("resumed by {actor}"));
        }
        CommandKind::Abort => abort(t, RollbackCause::Aborted, actor),
        CommandKind::Rollback => abort(t, RollbackCause::RollbackRequested, actor),
        CommandKind::Retry => {}
    }
}

fn abort(t: &mut Tick<'_>, cause: RollbackCause, actor: &str) {
    t.state.paused_by_command = false;
    if t.state.previous.is_some() {
        t.begin_rollback(cause, None);
    } else {
        let verb = match cause {
            RollbackCause::Aborted => "aborted",
            _ => "rollback requested",
        };
        let message =
            format!("{verb} by {actor}, with no previous release to return to: left as it is");
        t.finish_failed(
            failure(failure_code::NO_PREVIOUS_RELEASE, message),
            Outcome::Aborted,
            ServingHealth::Unknown,
        );
    }
}
