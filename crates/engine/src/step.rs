//! One engine step for one leased deployment: observe → decide → act → persist.
//!
//! No transaction is held across a cluster call. Every write names the claim's fencing epoch;
//! the first one that finds the lease gone ends the step without touching anything else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde_json::json;
use slipway_cluster::{DriverError, Target};
use slipway_core::rollout::{self, Command, CommandKind, Decision, RolloutState};
use slipway_core::{
    DeploymentStatus, EventKind, FailureReason, Outcome, StrategySpec, TrafficRouting,
};
use slipway_store::commands::{self, PendingCommand};
use slipway_store::events::{self, NewEvent};
use slipway_store::leases::{self, Claim};
use slipway_store::rollouts::{self, Claimed, RolloutRecord, StepWrite};
use slipway_store::{PgConnection, PgPool, StoreError};

use crate::drivers::Drivers;
use crate::group_commit::{OwnedStepWrite, StepEvent, StepJournal};

/// The actor recorded for what the engine does on its own.
pub const ENGINE_ACTOR: &str = "slipway";

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    /// The deployment moved (or was checked) and is due again at the recorded time.
    Advanced,
    /// It is waiting for its environment or for a retryable cluster error to clear.
    Waiting,
    /// Another worker took the lease; nothing was written.
    LeaseLost,
}

/// Why a step failed without being the deployment's fault.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Everything one step needs.
#[derive(Debug, Clone)]
pub struct StepContext {
    pub pool: PgPool,
    /// Sends the events' hints once a step's write has committed.
    pub notifier: crate::notify::Notifier,
    /// Writes the steps' results, many in one statement under load.
    pub writer: crate::group_commit::StepWriter,
    pub drivers: Drivers,
    pub worker: String,
    /// Delay before retrying after a retryable cluster error.
    pub retry_after: chrono::Duration,
    /// Fallback wake-up of a queued deployment that waits for its environment.
    pub queue_recheck: chrono::Duration,
    /// How long a claim lasts without a heartbeat; a chained step holds the lease this long.
    pub lease_ttl: std::time::Duration,
    /// A worker goes on with a deployment it holds, step after step, for at most this long
    /// after the claim (see [`run_claimed`]).
    pub chain_time: std::time::Duration,
    /// Set when the engine is shutting down: chains end with their current step.
    pub stopping: Arc<AtomicBool>,
}

/// What one step left to do.
enum Stepped {
    /// The step released the lease (or lost it).
    Done(StepOutcome),
    /// The step kept the lease and its deployment is due again at once: go on with it.
    Again {
        state: Box<RolloutState>,
        tick: i64,
        /// A command came in while the step ran (the deployment was woken).
        woken: bool,
        /// Commands may be waiting (woken, or the step left some unconsumed): read them
        /// before the next step.
        reload: bool,
    },
}

/// Loads the leased deployment and runs its steps (see [`run_claimed`]); a lost lease is an
/// outcome, not an error.
pub async fn run(
    ctx: &StepContext,
    claim: Claim,
    max_steps: usize,
) -> Result<StepOutcome, StepError> {
    let loaded = async {
        let mut conn = ctx.pool.acquire().await?;
        let record = rollouts::load(&mut conn, claim).await?;
        let pending = commands::pending(&mut conn, claim.id).await?;
        Ok::<_, StepError>(Claimed {
            claim,
            record,
            pending,
        })
    }
    .await;
    match loaded {
        Ok(claimed) => run_claimed(ctx, claimed, max_steps).await,
        Err(e) => lease_lost_is_an_outcome(claim, Err(e)),
    }
}

/// Runs the steps of a deployment loaded by its claim ([`rollouts::claim_due`]): one, and
/// while the deployment is due again at once (the step changed the cluster, or started it),
/// the next ones without giving the lease back, up to `max_steps` and [`StepContext::chain_time`]
/// after the claim. Each step is still written on its own, fenced by the claim's epoch, and
/// keeps the lease for another `lease_ttl`; the last one releases it with the next wake-up.
/// This saves a claim (a new version of the deployment row) per step for work that follows
/// at once, as on a fast cluster; a worker that dies mid-chain leaves the deployment due when
/// its lease expires, as any holder.
pub async fn run_claimed(
    ctx: &StepContext,
    claimed: Claimed,
    max_steps: usize,
) -> Result<StepOutcome, StepError> {
    let Claimed {
        claim,
        mut record,
        mut pending,
    } = claimed;
    let began = std::time::Instant::now();
    let mut steps = 1;
    loop {
        let hold = (steps < max_steps
            && began.elapsed() < ctx.chain_time
            && !ctx.stopping.load(Ordering::Relaxed))
        .then_some(ctx.lease_ttl);
        let stepped = run_inner(ctx, claim, &record, &pending, hold).await;
        match stepped {
            Ok(Stepped::Done(outcome)) => return Ok(outcome),
            Ok(Stepped::Again {
                state,
                tick,
                woken,
                reload,
            }) => {
                record.status = state.status;
                record.state = Some(*state);
                record.tick = tick;
                pending = if reload {
                    let mut conn = ctx.pool.acquire().await?;
                    // Re-armed first, then read (two statements): a command recorded after
                    // the re-arm wakes the deployment anew; one recorded before is read.
                    let rearmed = if woken {
                        leases::rearm(&mut conn, claim, ctx.lease_ttl).await
                    } else {
                        Ok(())
                    };
                    match rearmed {
                        Ok(()) => commands::pending(&mut conn, claim.id).await?,
                        Err(e) => return lease_lost_is_an_outcome(claim, Err(e.into())),
                    }
                } else {
                    Vec::new()
                };
                steps += 1;
                metrics::counter!("slipway_engine_chained_steps_total").increment(1);
            }
            Err(e) => return lease_lost_is_an_outcome(claim, Err(e)),
        }
    }
}

fn lease_lost_is_an_outcome(
    claim: Claim,
    outcome: Result<StepOutcome, StepError>,
) -> Result<StepOutcome, StepError> {
    match outcome {
        Err(StepError::Store(StoreError::LeaseLost)) => {
            tracing::warn!(deployment = %claim.id, epoch = claim.epoch, "lease lost; leaving the deployment to its new holder");
            metrics::counter!("slipway_lease_losses_total").increment(1);
            Ok(StepOutcome::LeaseLost)
        }
        other => other,
    }
}

/// One step; `hold`: the lease may be kept for this long if the deployment is due again at
/// once.
async fn run_inner(
    ctx: &StepContext,
    claim: Claim,
    record: &RolloutRecord,
    pending: &[PendingCommand],
    hold: Option<std::time::Duration>,
) -> Result<Stepped, StepError> {
    let now = Utc::now();
    match (record.status, &record.state) {
        (DeploymentStatus::Queued, _) | (_, None) => {
            match pending.iter().find(|c| c.kind == CommandKind::Abort) {
                Some(abort) => cancel(ctx, claim, record, abort, pending)
                    .await
                    .map(Stepped::Done),
                None => start(ctx, claim, record, pending, now, hold).await,
            }
        }
        (status, Some(_)) if status.is_terminal() => finished(ctx, claim, record, pending)
            .await
            .map(Stepped::Done),
        (_, Some(state)) => advance(ctx, claim, record, state, pending, now, hold).await,
    }
}

fn target(record: &RolloutRecord) -> Target {
    let traffic = match &record.spec.strategy {
        StrategySpec::Canary(canary) => canary.traffic.clone(),
        _ => TrafficRouting::Replicas,
    };
    Target {
        namespace: record.spec.namespace.clone(),
        workload: record.spec.workload.clone(),
        traffic,
        blue_green: matches!(record.spec.strategy, StrategySpec::BlueGreen(_)),
        environment: record.environment_id.to_string(),
        adopt: record.adopt,
    }
}

fn event<'a>(
    kind: EventKind,
    actor: &'a str,
    message: String,
    data: serde_json::Value,
) -> NewEvent<'a> {
    NewEvent {
        kind,
        actor,
        message,
        data,
    }
}

/// A queued deployment: start it when its environment is free and its turn has come.
async fn start(
    ctx: &StepContext,
    claim: Claim,
    record: &RolloutRecord,
    pending: &[PendingCommand],
    now: DateTime<Utc>,
    hold: Option<std::time::Duration>,
) -> Result<Stepped, StepError> {
    let turn = {
        let mut conn = ctx.pool.acquire().await?;
        rollouts::queue_turn(&mut conn, record.environment_id, record.id).await?
    };
    if !turn.may_start() {
        // The head is woken when the deployment ahead of it ends; its re-check only covers a
        // wake-up that did not come. The ones behind it are woken when they become the head,
        // so theirs is rarer: with a long queue it would otherwise be most of the work.
        let recheck = if turn.is_head {
            ctx.queue_recheck
        } else {
            ctx.queue_recheck * BEHIND_RECHECK_FACTOR
        };
        return wait_in_queue(ctx, claim, pending, now + recheck)
            .await
            .map(Stepped::Done);
    }

    let target = target(record);
    let observed = match ctx.drivers.for_cluster(&record.cluster) {
        Ok(driver) => driver.observe(&target).await,
        Err(e) => Err(e),
    };
    let observation = match observed {
        Ok(o) => o,
        Err(e) => {
            return cluster_error(ctx, claim, record, None, e, now)
                .await
                .map(Stepped::Done);
        }
    };
    let state = rollout::start(&record.spec, &observation, now);
    let message = format!(
        "{} of {} started (attempt {})",
        record.spec.strategy.kind(),
        record.spec.release.version,
        record.attempt
    );
    let data = json!({ "previous": state.previous, "attempt": record.attempt });
    let events = [event(EventKind::Started, ENGINE_ACTOR, message, data)];
    let seen = ids(pending);
    let write = StepWrite {
        claim,
        state: &state,
        events: &events,
        seen: &seen,
        consumed: &[],
        journal: None,
        wake: Some(now),
        starts: true,
        hold,
    };
    let written = if record.supersede_queued {
        let mut tx = ctx.pool.begin().await?;
        rollouts::supersede_older(&mut tx, record.environment_id, record.id).await?;
        let written = rollouts::write_step(&mut tx, write).await;
        if written.is_ok() {
            tx.commit().await?;
        }
        written
    } else {
        let mut conn = ctx.pool.acquire().await?;
        rollouts::write_step(&mut conn, write).await
    };
    match written {
        Err(StoreError::EnvironmentBusy) => {
            wait_in_queue(ctx, claim, pending, now + ctx.queue_recheck)
                .await
                .map(Stepped::Done)
        }
        Ok(written) => {
            ctx.notifier.events(claim.id, written.last_event_seq);
            Ok(match hold {
                Some(_) => Stepped::Again {
                    state: Box::new(state),
                    tick: written.tick,
                    woken: written.woken,
                    // The commands it saw are still pending (a start consumes none).
                    reload: written.woken || !pending.is_empty(),
                },
                None => Stepped::Done(StepOutcome::Advanced),
            })
        }
        Err(e) => Err(e.into()),
    }
}

fn ids(commands: &[PendingCommand]) -> Vec<uuid::Uuid> {
    commands.iter().map(|c| c.id).collect()
}

/// How many queue re-checks a deployment behind the head of its queue waits between its own
/// re-checks (a safety net: it is woken when it becomes the head).
const BEHIND_RECHECK_FACTOR: i32 = 10;

/// A queued deployment waits its turn: due again at `recheck`, when the deployment ahead of
/// it ends and it is the head of the queue (`rollouts::wake_queued`), or when a command comes
/// in. A wake-up that came while this step ran (the active one finished after the step found
/// the environment busy) is kept by the release.
async fn wait_in_queue(
    ctx: &StepContext,
    claim: Claim,
    pending: &[PendingCommand],
    recheck: DateTime<Utc>,
) -> Result<StepOutcome, StepError> {
    let mut conn = ctx.pool.acquire().await?;
    leases::release_after(&mut conn, claim, Some(recheck), &ids(pending)).await?;
    Ok(StepOutcome::Waiting)
}

/// A queued deployment that was aborted before it started: cancelled. If it was the head of
/// its queue, the next one is now: it is woken (it may find the environment free).
async fn cancel(
    ctx: &StepContext,
    claim: Claim,
    record: &RolloutRecord,
    abort: &PendingCommand,
    pending: &[PendingCommand],
) -> Result<StepOutcome, StepError> {
    let mut tx = ctx.pool.begin().await?;
    rollouts::finish_unstarted(
        &mut tx,
        claim,
        DeploymentStatus::Cancelled,
        Outcome::Cancelled,
    )
    .await?;
    let message = format!("cancelled by {} before it started", abort.actor);
    events::append(
        &mut tx,
        claim.id,
        &event(
            EventKind::Cancelled,
            &abort.actor,
            message,
            json!({"reason": abort.reason}),
        ),
    )
    .await?;
    let ids: Vec<_> = pending.iter().map(|c| c.id).collect();
    commands::consume(&mut tx, claim, &ids, "applied").await?;
    leases::release(&mut tx, claim, None).await?;
    rollouts::wake_queued(&mut tx, record.environment_id).await?;
    tx.commit().await?;
    Ok(StepOutcome::Advanced)
}

/// A finished deployment: only `retry` does anything; other commands are recorded as ignored.
async fn finished(
    ctx: &StepContext,
    claim: Claim,
    record: &RolloutRecord,
    pending: &[PendingCommand],
) -> Result<StepOutcome, StepError> {
    let mut tx = ctx.pool.begin().await?;
    let retry = pending.iter().find(|c| c.kind == CommandKind::Retry);
    let retryable = rollout::retries(record.status);
    let ids: Vec<_> = pending.iter().map(|c| c.id).collect();
    match retry {
        Some(cmd) if retryable => {
            let attempt = rollouts::requeue(&mut tx, claim).await?;
            let message = format!("retry by {}: attempt {attempt} queued", cmd.actor);
            events::append(
                &mut tx,
                claim.id,
                &event(
                    EventKind::Retried,
                    &cmd.actor,
                    message,
                    json!({"attempt": attempt, "actor": cmd.actor}),
                ),
            )
            .await?;
            commands::consume(&mut tx, claim, &ids, "applied").await?;
            rollouts::wake_queued(&mut tx, record.environment_id).await?;
            leases::release(&mut tx, claim, Some(Utc::now())).await?;
        }
        _ => {
            commands::consume(&mut tx, claim, &ids, "ignored: deployment finished").await?;
            release_unless_woken(&mut tx, claim, None, pending).await?;
        }
    }
    tx.commit().await?;
    Ok(StepOutcome::Advanced)
}

/// An active deployment: one decision of its state machine.
async fn advance(
    ctx: &StepContext,
    claim: Claim,
    record: &RolloutRecord,
    state: &RolloutState,
    pending: &[PendingCommand],
    now: DateTime<Utc>,
    hold: Option<std::time::Duration>,
) -> Result<Stepped, StepError> {
    let failed = |e| cluster_error(ctx, claim, record, Some(state), e, now);
    let driver = match ctx.drivers.for_cluster(&record.cluster) {
        Ok(d) => d,
        Err(e) => return failed(e).await.map(Stepped::Done),
    };
    let target = target(record);
    let observation = match driver.observe(&target).await {
        Ok(o) => o,
        Err(e) => return failed(e).await.map(Stepped::Done),
    };
    // Decide at the moment of the observation, not before it (a rate-limited observe can
    // take seconds, and timers started from an earlier instant would end early).
    let now = Utc::now().max(now);
    let observed = serde_json::to_value(&observation).unwrap_or_default();
    let commands: Vec<Command> = pending
        .iter()
        .map(|c| Command {
            kind: c.kind,
            actor: c.actor.clone(),
        })
        .collect();
    let decision = rollout::decide(&record.spec, state, &observation, &commands, now);
    let applied = if decision.actions.is_empty() {
        driver.apply(&target, &decision.actions).await
    } else {
        // Only database writes are fenced by the epoch: a holder whose lease was taken over
        // while it observed (paused past its expiry) must not act on the cluster either, nor
        // one that stalls after this check until another worker may have claimed.
        let lease_end = ctx.writer.holds(claim).await?;
        within_lease(ctx, lease_end, driver.apply(&target, &decision.actions)).await
    };
    if let Err(e) = applied {
        return failed(e).await.map(Stepped::Done);
    }
    persist(
        ctx, claim, record, state, pending, decision, observed, now, hold,
    )
    .await
}

/// Runs a cluster call that changes the cluster, cut off a margin (a tenth of the lease's
/// length) before `lease_end`, the instant until which the fence check found the claim
/// holding: no other worker can claim the deployment before then, so whatever the call does
/// happens while this worker alone may act. The margin leaves time for a request sent just
/// before the cut-off to reach the API server. A call that is cut off (or that would start
/// after the cut-off) is a retryable `timeout`; its actions are idempotent, so whoever steps
/// the deployment next applies them again.
async fn within_lease(
    ctx: &StepContext,
    lease_end: tokio::time::Instant,
    call: impl Future<Output = Result<(), DriverError>>,
) -> Result<(), DriverError> {
    let margin = ctx.lease_ttl / 10;
    let cut_off = lease_end.checked_sub(margin).unwrap_or(lease_end);
    let cut = || {
        metrics::counter!("slipway_cluster_calls_cut_off_total").increment(1);
        DriverError::retryable(
            "timeout",
            format!(
                "the cluster call did not finish within the worker's lease (cut off {} ms before it ends); retrying",
                margin.as_millis()
            ),
        )
    };
    if tokio::time::Instant::now() >= cut_off {
        return Err(cut());
    }
    tokio::time::timeout_at(cut_off, call)
        .await
        .unwrap_or_else(|_| Err(cut()))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one step's whole context, used once"
)]
async fn persist(
    ctx: &StepContext,
    claim: Claim,
    record: &RolloutRecord,
    before: &RolloutState,
    pending: &[PendingCommand],
    decision: Decision,
    observed: serde_json::Value,
    now: DateTime<Utc>,
    hold: Option<std::time::Duration>,
) -> Result<Stepped, StepError> {
    let mut events = Vec::with_capacity(pending.len() + decision.notes.len());
    for cmd in pending {
        let message = format!("{} by {}", cmd.kind.as_str(), cmd.actor);
        let data = json!({"command": cmd.kind.as_str(), "actor": cmd.actor, "reason": cmd.reason});
        events.push(StepEvent {
            kind: EventKind::Command,
            actor: cmd.actor.clone(),
            message,
            data,
        });
    }
    for note in &decision.notes {
        let data = json!({"phase": decision.state.phase, "step": decision.state.step, "status": decision.state.status.as_str()});
        events.push(StepEvent {
            kind: note.kind,
            actor: ENGINE_ACTOR.into(),
            message: note.message.clone(),
            data,
        });
    }
    let seen = ids(pending);
    let actions = serde_json::to_value(&decision.actions).unwrap_or_default();
    // A changed state may have made new work possible at once; otherwise wait as decided.
    // Actions that moved the machine on changed the cluster: look again at once. Otherwise the
    // machine has gone as far as it can (it chains phases within a step) and says when to look.
    let wake = if decision.state != *before && !decision.actions.is_empty() {
        Some(now)
    } else {
        decision.wake_at
    };
    let wake = if decision.state.status.is_terminal() {
        None
    } else {
        wake
    };
    let any_events = !events.is_empty();
    let terminal = decision.state.status.is_terminal();
    let outcome = decision.state.outcome;
    // Due again at once: keep the lease and go on (see `run_claimed`).
    let hold = hold.filter(|_| wake.is_some_and(|w| w <= now));
    let next = hold.map(|_| decision.state.clone());
    let write = OwnedStepWrite {
        claim,
        state: decision.state,
        events,
        consumed: seen.clone(),
        seen,
        journal: Some(StepJournal {
            worker: ctx.worker.clone(),
            started_at: now,
            observation: observed,
            actions,
        }),
        wake,
        hold,
    };
    let written = ctx.writer.write(write).await?;
    if any_events {
        ctx.notifier.events(claim.id, written.last_event_seq);
    }
    if terminal {
        let outcome = outcome.map_or("none", Outcome::as_str);
        if let Ok(total) = (Utc::now() - record.created_at).to_std() {
            let strategy = record.spec.strategy.kind();
            metrics::histogram!("slipway_deployment_duration_seconds", "strategy" => strategy)
                .record(total.as_secs_f64());
        }
        metrics::counter!("slipway_deployments_finished_total", "strategy" => record.spec.strategy.kind(), "outcome" => outcome).increment(1);
    }
    metrics::counter!("slipway_engine_steps_total").increment(1);
    if let Ok(elapsed) = (Utc::now() - now).to_std() {
        metrics::histogram!("slipway_engine_step_duration_seconds", "strategy" => record.spec.strategy.kind())
            .record(elapsed.as_secs_f64());
    }
    Ok(match next {
        Some(state) => Stepped::Again {
            state: Box::new(state),
            tick: written.tick,
            woken: written.woken,
            reload: written.woken,
        },
        None => Stepped::Done(StepOutcome::Advanced),
    })
}

/// Gives the lease back, due at `wake`, unless the deployment was woken while the step ran
/// or a command the step did not see (it read `seen`) is waiting: that command's insert made
/// the deployment due at once, and the release must not push it back to the step's own
/// schedule (up to a long pause, or never once finished). See `leases::release_after`.
async fn release_unless_woken(
    conn: &mut PgConnection,
    claim: Claim,
    wake: Option<DateTime<Utc>>,
    seen: &[PendingCommand],
) -> Result<(), StoreError> {
    leases::release_after(conn, claim, wake, &ids(seen)).await
}

/// A cluster call failed: retryable errors make the deployment wait with the reason shown;
/// permanent ones fail it with the API's message.
async fn cluster_error(
    ctx: &StepContext,
    claim: Claim,
    record: &RolloutRecord,
    state: Option<&RolloutState>,
    error: DriverError,
    now: DateTime<Utc>,
) -> Result<StepOutcome, StepError> {
    metrics::counter!("slipway_cluster_errors_total", "cluster" => record.cluster.name.clone())
        .increment(1);
    let mut tx = ctx.pool.begin().await?;
    match error {
        DriverError::Retryable { reason, message } => {
            tracing::warn!(deployment = %claim.id, %reason, %message, "cluster call failed; will retry");
            rollouts::set_waiting(&mut tx, claim, &reason, &message).await?;
            let data = json!({"reason": reason, "retry_in_ms": ctx.retry_after.num_milliseconds()});
            events::append(
                &mut tx,
                claim.id,
                &event(
                    EventKind::ClusterError,
                    ENGINE_ACTOR,
                    format!("{reason}: {message}; retrying"),
                    data,
                ),
            )
            .await?;
            leases::release(&mut tx, claim, Some(now + ctx.retry_after)).await?;
            tx.commit().await?;
            Ok(StepOutcome::Waiting)
        }
        DriverError::Permanent { reason, message } => {
            tracing::error!(deployment = %claim.id, %reason, %message, "cluster refused the deployment");
            let failed = rollout::refused(
                &record.spec,
                state,
                FailureReason {
                    code: reason.clone(),
                    message: message.clone(),
                },
                Utc::now(),
            );
            let events = [event(
                EventKind::Failed,
                ENGINE_ACTOR,
                format!("{reason}: {message}"),
                json!({"reason": reason}),
            )];
            // The step write, as a batch of one: the failed state, its event, the lease
            // released, the environment's queue woken.
            let write = StepWrite {
                claim,
                state: &failed,
                events: &events,
                seen: &[],
                consumed: &[],
                journal: None,
                wake: None,
                starts: record.status == DeploymentStatus::Queued,
                hold: None,
            };
            let written = rollouts::write_step(&mut tx, write).await?;
            tx.commit().await?;
            ctx.notifier.events(claim.id, written.last_event_seq);
            Ok(StepOutcome::Advanced)
        }
    }
}
