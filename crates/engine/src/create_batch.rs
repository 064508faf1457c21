//! Group commit for deployment creates.
//!
//! A create is one autocommit statement ([`deployments::record_many`] of one row), and at
//! high rates PostgreSQL's cost per statement and per commit, not the rows, is what limits
//! them (bench/README.md). So concurrent creates are written together: each request hands
//! its prepared row to a [`CreateBatcher`] and waits for its own outcome; one task takes
//! whatever rows are waiting (at most `max_batch`, and no waiting for more: a lone request
//! is written at once, batches come only from concurrency), writes them with one statement
//! (one round trip, one commit) and answers each request with its row's [`Recorded`]. The
//! answer is sent only after the commit, so nothing is acknowledged before it is stored; a
//! request that goes away while its batch is written changes nothing (the batch commits or
//! not as a whole, the answer is dropped, and a retry with its key replays).
//!
//! Each row keeps its own outcome: an environment changed or gone, or a key already taken,
//! writes nothing for that row only. Two rows with the same idempotency key never share a
//! statement: the later one waits for the next batch, where it finds the key taken and
//! replays. When the batch statement fails as a whole (a constraint one row violates, a
//! deadlock), nothing of it is written, and its rows are written again one statement each,
//! so one bad request fails alone.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use slipway_store::deployments::{self, RecordRow, Recorded};
use slipway_store::{PgPool, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::held_connection::HeldConnection;

/// Most creates written by one statement unless configured otherwise.
pub const DEFAULT_MAX_BATCH: usize = 64;

/// Largest `max_batch` accepted: the statement binds one array per column, and a batch this
/// size already amortizes the per-statement cost to nothing.
pub const MAX_BATCH_LIMIT: usize = 1024;

/// A create waiting for its batch.
struct Pending {
    row: RecordRow,
    reply: oneshot::Sender<Result<Recorded, StoreError>>,
}

/// Hands creates to the task that writes them in batches (started on first use, inside the
/// Tokio runtime). Cheap to clone.
#[derive(Debug, Clone)]
pub struct CreateBatcher {
    pool: PgPool,
    max_batch: usize,
    queue: Arc<OnceLock<mpsc::Sender<Pending>>>,
}

impl CreateBatcher {
    /// A batcher writing at most `max_batch` creates per statement (at least 1; 1 writes
    /// each create alone).
    pub fn new(pool: PgPool, max_batch: usize) -> Self {
        Self {
            pool,
            max_batch: max_batch.clamp(1, MAX_BATCH_LIMIT),
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Writes `row` with whatever other creates are waiting, and answers once the statement
    /// that carried it has committed (or failed).
    pub async fn record(&self, row: RecordRow) -> Result<Recorded, StoreError> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(self.max_batch * 4);
            tokio::spawn(run(self.pool.clone(), rx, self.max_batch));
            tx
        });
        let (reply, answer) = oneshot::channel();
        queue.send(Pending { row, reply }).await.map_err(|_| {
            StoreError::Unavailable("the create writer has stopped (shutting down)".into())
        })?;
        answer.await.map_err(|_| {
            StoreError::OutcomeUnknown("the create writer stopped before answering".into())
        })?
    }
}

/// The batch task: one batch at a time, so batches never wait for each other's key rows (and
/// the batches are as large as they can be: with two writers they were smaller and the rate
/// lower, bench/README.md), on a connection it keeps while there is work ([`HeldConnection`]).
async fn run(pool: PgPool, mut rx: mpsc::Receiver<Pending>, max_batch: usize) {
    let mut waiting: Vec<Pending> = Vec::with_capacity(max_batch);
    let mut deferred: Vec<Pending> = Vec::new();
    let mut conn = HeldConnection::new(pool);
    loop {
        if deferred.is_empty() {
            if conn.wait(rx.recv_many(&mut waiting, max_batch)).await == 0 {
                return;
            }
        } else {
            // Rows held back from the last batch go now, with whatever else is waiting.
            while waiting.len() < max_batch {
                match rx.try_recv() {
                    Ok(p) => waiting.push(p),
                    Err(_) => break,
                }
            }
        }
        let mut batch = Vec::with_capacity(max_batch);
        let mut keys: HashSet<(String, String)> = HashSet::new();
        let mut held = Vec::new();
        for p in deferred.drain(..).chain(waiting.drain(..)) {
            if p.reply.is_closed() {
                // Its request is gone: nothing was acknowledged, so nothing is written.
                continue;
            }
            let duplicate = p
                .row
                .key_id()
                .is_some_and(|(scope, key)| !keys.insert((scope.to_owned(), key.to_owned())));
            if duplicate || batch.len() >= max_batch {
                held.push(p);
            } else {
                batch.push(p);
            }
        }
        deferred = held;
        let (rows, replies): (Vec<RecordRow>, Vec<_>) =
            batch.into_iter().map(|p| (p.row, p.reply)).unzip();
        if rows.is_empty() {
            continue;
        }
        let outcomes = write_batch(&mut conn, &rows).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A request that went away meanwhile simply does not hear its answer.
            let _ = reply.send(outcome);
        }
    }
}

/// Writes `rows` (no two with the same key) in one statement and answers one outcome per row,
/// in order. If that statement fails, each row is written again by a statement of its own, so
/// that only the rows that fail by themselves answer an error. That is safe even when the
/// failure left the outcome unknown (the connection broke): a row that did commit finds its
/// key taken (and replays) or, without a key, its deployment id taken (an error), so no
/// create is recorded twice.
async fn write_batch(
    conn: &mut HeldConnection,
    rows: &[RecordRow],
) -> Vec<Result<Recorded, StoreError>> {
    let written = write(conn, rows).await;
    metrics::histogram!("slipway_create_batch_rows").record(rows.len() as f64);
    match written {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(e) if rows.len() == 1 => vec![Err(e)],
        Err(e) => {
            metrics::counter!("slipway_create_batch_fallbacks_total").increment(1);
            tracing::warn!(error = %e, rows = rows.len(),
                "a batch of creates failed as a whole; writing its rows one by one");
            let mut outcomes = Vec::with_capacity(rows.len());
            for row in rows {
                let one = write(conn, std::slice::from_ref(row))
                    .await
                    .and_then(|mut o| {
                        o.pop()
                            .ok_or_else(|| StoreError::Corrupt("no outcome".into()))
                    });
                outcomes.push(one);
            }
            outcomes
        }
    }
}

/// One statement on the held connection.
async fn write(conn: &mut HeldConnection, rows: &[RecordRow]) -> Result<Vec<Recorded>, StoreError> {
    conn.with(async |c| deployments::record_many(c, rows).await)
        .await
}
