//! Group commit of step writes: the workers of one process hand their steps' writes to one
//! task, which writes whatever has gathered as ONE statement (`rollouts::write_steps`). The
//! fence checks before acting on a cluster (`leases::holds`: the epoch and the time left on
//! the lease) are gathered the same way (`leases::holding`, one read for all waiting claims).
//!
//! Every step stays fenced by its own `(id, epoch)` and gets its own result: a stale epoch
//! fails only that step (`LeaseLost`, its worker stops as before), the others are written. A
//! lone write is a batch of one (the same statement). If a batch statement fails in the
//! database (so nothing of it was written), each write is retried on its own, as a batch of
//! one of the same statement (`rollouts::write_step`), so one bad step never fails the others; if the outcome is unknown (the connection broke), every
//! step of the batch fails as a single write would have, and nothing is written twice.
//! No transaction outlives the statement, and none spans a cluster call: a step's cluster
//! calls are over before it hands its write in.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use slipway_core::EventKind;
use slipway_core::rollout::RolloutState;
use slipway_store::events::NewEvent;
use slipway_store::leases::{self, Claim};
use slipway_store::rollouts::{self, JournalEntry, StepWrite, StepWritten};
use slipway_store::{PgPool, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::held_connection::HeldConnection;

/// Most step writes in one statement.
const BATCH: usize = 64;

/// Batches in flight at once (each on its own connection). One: while it is written, the next
/// batch gathers. Two lanes halved the batches and cost the database more per step than the
/// overlap saved (bench/engine.md).
const LANES: usize = 1;

/// An event of a step, owned (see [`NewEvent`]).
#[derive(Debug, Clone)]
pub struct StepEvent {
    pub kind: EventKind,
    pub actor: String,
    pub message: String,
    pub data: serde_json::Value,
}

/// The journal row of a step, owned (see [`JournalEntry`]).
#[derive(Debug, Clone)]
pub struct StepJournal {
    pub worker: String,
    pub started_at: DateTime<Utc>,
    pub observation: serde_json::Value,
    pub actions: serde_json::Value,
}

/// A step's write, owned so that it can wait for its batch (see [`StepWrite`]; a write that
/// starts a deployment is not batched).
#[derive(Debug, Clone)]
pub struct OwnedStepWrite {
    pub claim: Claim,
    pub state: RolloutState,
    pub events: Vec<StepEvent>,
    pub seen: Vec<Uuid>,
    pub consumed: Vec<Uuid>,
    pub journal: Option<StepJournal>,
    pub wake: Option<DateTime<Utc>>,
    /// Keep the lease this long and go on with the next step (see [`StepWrite::hold`]).
    pub hold: Option<std::time::Duration>,
}

impl OwnedStepWrite {
    fn events(&self) -> Vec<NewEvent<'_>> {
        self.events
            .iter()
            .map(|e| NewEvent {
                kind: e.kind,
                actor: &e.actor,
                message: e.message.clone(),
                data: e.data.clone(),
            })
            .collect()
    }

    fn borrow<'a>(&'a self, events: &'a [NewEvent<'a>]) -> StepWrite<'a> {
        StepWrite {
            claim: self.claim,
            state: &self.state,
            events,
            seen: &self.seen,
            consumed: &self.consumed,
            journal: self.journal.as_ref().map(|j| JournalEntry {
                worker: &j.worker,
                started_at: j.started_at,
                observation: &j.observation,
                actions: &j.actions,
            }),
            wake: self.wake,
            starts: false,
            hold: self.hold,
        }
    }
}

type Reply = oneshot::Sender<Result<StepWritten, StoreError>>;
type FenceReply = oneshot::Sender<Result<Duration, StoreError>>;

/// Collects step writes and writes them in batches from one background task (started on
/// first use, inside the Tokio runtime). Cheap to clone.
#[derive(Debug, Clone)]
pub struct StepWriter {
    pool: PgPool,
    queue: Arc<OnceLock<mpsc::UnboundedSender<(OwnedStepWrite, Reply)>>>,
    fences: Arc<OnceLock<mpsc::UnboundedSender<(Claim, FenceReply)>>>,
}

impl StepWriter {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queue: Arc::new(OnceLock::new()),
            fences: Arc::new(OnceLock::new()),
        }
    }

    /// `leases::holds`, checked for whatever claims are waiting in one query: the instant
    /// (by this process's monotonic clock) until which the claim surely holds, or `LeaseLost`
    /// when another worker took the deployment over or its lease has run out. The instant is
    /// counted from before the check was sent, so it never comes after the lease's end.
    pub async fn holds(&self, claim: Claim) -> Result<Instant, StoreError> {
        let asked = Instant::now();
        let queue = self.fences.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(check_fences(self.pool.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if queue.send((claim, reply)).is_ok()
            && let Ok(result) = answer.await
        {
            return result.map(|left| asked + left);
        }
        // The task is gone: a read can be asked again.
        let asked = Instant::now();
        let mut conn = self.pool.acquire().await?;
        leases::holds(&mut conn, claim)
            .await
            .map(|left| asked + left)
    }

    /// Writes one step, with whatever other steps are waiting; `LeaseLost` when its epoch is
    /// stale. Resolves once the write has committed.
    pub async fn write(&self, write: OwnedStepWrite) -> Result<StepWritten, StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            for _ in 0..LANES {
                tokio::spawn(run(self.pool.clone(), rx.clone()));
            }
            tx
        });
        let (reply, answer) = oneshot::channel();
        match queue.send((write, reply)) {
            Ok(()) => match answer.await {
                Ok(result) => result,
                // The task is gone (runtime shutting down): nothing is known of the write.
                Err(_) => Err(StoreError::OutcomeUnknown(
                    "the step writer stopped before answering".into(),
                )),
            },
            // The task is gone before the write was handed over: write it here.
            Err(mpsc::error::SendError((write, _))) => write_one(&self.pool, &write).await,
        }
    }
}

/// One lane: takes whatever has gathered (waiting for the first write if nothing has) and
/// writes it.
async fn run(
    pool: PgPool,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(OwnedStepWrite, Reply)>>>,
) {
    let mut jobs = Vec::with_capacity(BATCH);
    let mut conn = HeldConnection::new(pool);
    loop {
        let received = conn
            .wait(async { rx.lock().await.recv_many(&mut jobs, BATCH).await })
            .await;
        if received == 0 {
            break;
        }
        metrics::histogram!("slipway_engine_step_write_batch").record(jobs.len() as f64);
        write_batch(&mut conn, &mut jobs).await;
    }
}

async fn check_fences(pool: PgPool, mut rx: mpsc::UnboundedReceiver<(Claim, FenceReply)>) {
    let mut jobs = Vec::with_capacity(BATCH);
    let mut conn = HeldConnection::new(pool);
    while conn.wait(rx.recv_many(&mut jobs, BATCH)).await > 0 {
        let claims: Vec<Claim> = jobs.iter().map(|(c, _)| *c).collect();
        let held = conn.with(async |c| leases::holding(c, &claims).await).await;
        match held {
            Ok(held) => {
                for ((_, reply), held) in jobs.drain(..).zip(held) {
                    let _ = reply.send(held.ok_or(StoreError::LeaseLost));
                }
            }
            Err(e) => {
                for (_, reply) in jobs.drain(..) {
                    let _ = reply.send(Err(e.for_batch_member("fence checks")));
                }
            }
        }
    }
}

/// One write as a batch of one (`rollouts::write_step`: the statement batches use).
async fn write_one(pool: &PgPool, write: &OwnedStepWrite) -> Result<StepWritten, StoreError> {
    let events = write.events();
    let mut conn = pool.acquire().await?;
    rollouts::write_step(&mut conn, write.borrow(&events)).await
}

/// Writes `jobs` (drained) and answers each.
async fn write_batch(conn: &mut HeldConnection, jobs: &mut Vec<(OwnedStepWrite, Reply)>) {
    let result = {
        let events: Vec<Vec<NewEvent<'_>>> = jobs.iter().map(|(w, _)| w.events()).collect();
        let writes: Vec<StepWrite<'_>> = jobs
            .iter()
            .zip(&events)
            .map(|((w, _), e)| w.borrow(e))
            .collect();
        conn.with(async |c| rollouts::write_steps(c, &writes).await)
            .await
    };
    match result {
        Ok(written) => {
            for ((_, reply), written) in jobs.drain(..).zip(written) {
                let _ = reply.send(written.ok_or(StoreError::LeaseLost));
            }
        }
        Err(e) if e.wrote_nothing() => {
            tracing::warn!(error = %e, steps = jobs.len(), "a batch of step writes failed; writing each step on its own");
            metrics::counter!("slipway_engine_step_write_batch_fallbacks_total").increment(1);
            for (write, reply) in jobs.drain(..) {
                let _ = reply.send(write_one(conn.pool(), &write).await);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, steps = jobs.len(), "a batch of step writes failed with its outcome unknown");
            for (_, reply) in jobs.drain(..) {
                let _ = reply.send(Err(e.for_batch_member("step writes")));
            }
        }
    }
}
