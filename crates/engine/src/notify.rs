//! Wake-up and event hints sent after the fact, many per transaction.
//!
//! A NOTIFY in a write's own transaction makes its commit take PostgreSQL's cluster-wide
//! notification lock, so every notifying commit waits for the others: with one-statement
//! steps and creates that lock was the bottleneck (bench/engine.md, bench/README.md). Hints
//! are only hints (engines poll, SSE streams read the events themselves), so the hot paths
//! hand theirs to a [`Notifier`] once their write has committed, and one task sends whatever
//! has gathered, in one statement (one commit) per batch: one round trip when idle, fewer
//! commits than writes under load. A hint lost to a crash in between delays, never loses,
//! anything: the engines' poll and the streams' own reads cover it.

use std::sync::{Arc, OnceLock};

use slipway_store::{PgPool, events, wake};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::held_connection::HeldConnection;

/// Most notifications sent in one statement.
const BATCH: usize = 512;

/// Queues hints and sends them from one background task (started on first use, inside the
/// Tokio runtime). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    pool: PgPool,
    queue: Arc<OnceLock<mpsc::UnboundedSender<(&'static str, String)>>>,
}

impl Notifier {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queue: Arc::new(OnceLock::new()),
        }
    }

    /// Engines should look at `deployment` now.
    pub fn wake(&self, deployment: Uuid) {
        self.send(wake::CHANNEL, deployment.to_string());
    }

    /// `deployment` has events up to `seq` (the `slipway_events` payload).
    pub fn events(&self, deployment: Uuid, seq: i64) {
        self.send(wake::EVENTS_CHANNEL, format!("{deployment}:{seq}"));
    }

    fn send(&self, channel: &'static str, payload: String) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(deliver(self.pool.clone(), rx));
            tx
        });
        // The task ends only when every sender is gone.
        let _ = queue.send((channel, payload));
    }
}

async fn deliver(pool: PgPool, mut rx: mpsc::UnboundedReceiver<(&'static str, String)>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut conn = HeldConnection::new(pool);
    while conn.wait(rx.recv_many(&mut batch, BATCH)).await > 0 {
        let sent = conn
            .with(async |c| events::notify_many(c, &batch).await)
            .await;
        if let Err(e) = sent {
            tracing::debug!(error = %e, dropped = batch.len(), "sending notifications failed; polling covers them");
        }
        batch.clear();
    }
}
