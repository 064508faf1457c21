//! The connection a writing task keeps from one statement to the next.
//!
//! The engine's background writers (the create batcher, the step writer, the fence checker,
//! the notifier) each send one statement after another. Taking a connection from the pool for
//! each statement hands them round the pool's backends in turn: every statement then runs in
//! a PostgreSQL process whose caches went cold while the others ran, on a machine where the
//! server and the database share the cores. Keeping one connection per task gave more
//! creates per second (bench/README.md, "One connection per writer task"; decision 062).
//!
//! So a task keeps its connection while it has work, and gives it back to the pool:
//! - when it has waited [`IDLE`] for work (an idle process holds nothing, and `pool.close()`
//!   at shutdown does not wait for it);
//! - after holding it for [`HOLD_AT_MOST`], so that the pool's lifetime limits still recycle
//!   it under constant load;
//! - at once, when the pool is smaller than [`SMALL_POOL`] connections: there a held
//!   connection would be missed by the requests.
//!
//! After an error that may have left the connection broken (anything but an answer from the
//! server), the connection is closed instead of given back.

use std::future::Future;
use std::time::{Duration, Instant};

use slipway_store::{PgPool, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};

/// How long a task waits for work before it gives its connection back.
pub const IDLE: Duration = Duration::from_secs(1);

/// Longest a task keeps one connection.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// Pools with fewer connections than this lend one per statement.
pub const SMALL_POOL: u32 = 8;

/// A pool connection kept by one task between its statements.
#[derive(Debug)]
pub struct HeldConnection {
    pool: PgPool,
    held: Option<(PoolConnection<Postgres>, Instant)>,
}

impl HeldConnection {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, held: None }
    }

    /// The pool the connection comes from.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs `statement` on the held connection (taken from the pool if none is held), then
    /// keeps the connection for the next statement, gives it back, or closes it (after an
    /// error the server did not answer).
    pub async fn with<T>(
        &mut self,
        statement: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (mut conn, since) = match self.held.take() {
            Some(held) => held,
            None => (self.pool.acquire().await?, Instant::now()),
        };
        let result = statement(&mut conn).await;
        if result.as_ref().is_err_and(|e| !answered_by_server(e)) {
            conn.close_on_drop();
        } else if since.elapsed() < HOLD_AT_MOST
            && self.pool.options().get_max_connections() >= SMALL_POOL
        {
            self.held = Some((conn, since));
        }
        result
    }

    /// Awaits `work` (the task's wait for its next job), giving the connection back if that
    /// takes longer than [`IDLE`].
    pub async fn wait<F: Future>(&mut self, work: F) -> F::Output {
        if self.held.is_none() {
            return work.await;
        }
        let mut work = std::pin::pin!(work);
        match tokio::time::timeout(IDLE, work.as_mut()).await {
            Ok(out) => out,
            Err(_) => {
                // Given back to the pool.
                self.held = None;
                work.await
            }
        }
    }
}

/// The error is the server's answer to the statement: the connection is as good as before.
fn answered_by_server(e: &StoreError) -> bool {
    match e {
        StoreError::Database(e) => {
            matches!(e, sqlx::Error::Database(_)) && !slipway_store::error::connection_lost(e)
        }
        StoreError::NotFound(_)
        | StoreError::AlreadyExists(_)
        | StoreError::WorkloadTaken
        | StoreError::EnvironmentBusy
        | StoreError::Constraint { .. }
        | StoreError::RevisionMismatch { .. }
        | StoreError::Conflict(_)
        | StoreError::LeaseLost => true,
        // Also what a row that does not decode gives: the answer may not have been read whole.
        StoreError::Corrupt(_) => false,
        // Not answers of the server to this connection's statement.
        StoreError::Unavailable(_) | StoreError::OutcomeUnknown(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_the_server_sent_keep_the_connection() {
        assert!(answered_by_server(&StoreError::LeaseLost));
        assert!(answered_by_server(&StoreError::Constraint {
            constraint: "x".into()
        }));
        assert!(!answered_by_server(&StoreError::Database(sqlx::Error::Io(
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "gone")
        ))));
        assert!(!answered_by_server(&StoreError::Database(
            sqlx::Error::Protocol("unexpected message".into())
        )));
    }
}
