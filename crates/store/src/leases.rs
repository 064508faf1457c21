//! Leases with fencing: how engines share deployments without running a step twice.
//!
//! A claim takes due, unleased rows with `FOR UPDATE SKIP LOCKED`, sets the lease and bumps
//! the row's `epoch`. Every later write by that worker names `(id, epoch)`; when another
//! worker has claimed the row since (after the lease expired), the epoch differs, the write
//! changes nothing, and the store answers [`StoreError::LeaseLost`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// The wake-up time of work that goes before everything else due (a new command): claims
/// take the earliest `next_wake_at` first, and this is earlier than any timer.
pub const URGENT: DateTime<Utc> = DateTime::UNIX_EPOCH;

/// A deployment leased to one worker, at one fencing epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub id: Uuid,
    pub epoch: i64,
}

fn interval(ttl: Duration) -> Result<chrono::Duration, StoreError> {
    chrono::Duration::from_std(ttl).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Leases up to `limit` deployments whose wake-up time has come.
#[tracing::instrument(skip_all, fields(owner))]
pub async fn claim_due(
    conn: &mut PgConnection,
    owner: &str,
    ttl: Duration,
    limit: i64,
) -> Result<Vec<Claim>, StoreError> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH due AS (
             SELECT id FROM deployments
             WHERE next_wake_at <= now()
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             ORDER BY next_wake_at
             LIMIT $3
             FOR UPDATE SKIP LOCKED
         )
         UPDATE deployments d
            SET lease_owner = $1, lease_expires_at = now() + $2, epoch = d.epoch + 1
           FROM due WHERE d.id = due.id
         RETURNING d.id, d.epoch",
    )
    .bind(owner)
    .bind(interval(ttl)?)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, epoch)| Claim { id, epoch })
        .collect())
}

/// Extends the lease; `LeaseLost` when another worker holds the row now.
pub async fn heartbeat(
    conn: &mut PgConnection,
    claim: Claim,
    ttl: Duration,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE deployments SET lease_expires_at = now() + $3 WHERE id = $1 AND epoch = $2",
    )
    .bind(claim.id)
    .bind(claim.epoch)
    .bind(interval(ttl)?)
    .execute(conn)
    .await?;
    fenced(done.rows_affected())
}

/// Gives the lease back and says when the deployment is next due (`None`: only a command or
/// an event wakes it).
pub async fn release(
    conn: &mut PgConnection,
    claim: Claim,
    next_wake_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE deployments SET lease_owner = NULL, lease_expires_at = NULL, next_wake_at = $3
         WHERE id = $1 AND epoch = $2",
    )
    .bind(claim.id)
    .bind(claim.epoch)
    .bind(next_wake_at)
    .execute(conn)
    .await?;
    fenced(done.rows_affected())
}

/// Gives back every lease `owner` holds, for a graceful shutdown: they are due at once for
/// whoever runs next.
pub async fn release_all(conn: &mut PgConnection, owner: &str) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE deployments SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1",
    )
    .bind(owner)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Turns "no row had that epoch" into `LeaseLost`.
pub(crate) fn fenced(rows: u64) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::LeaseLost)
    } else {
        Ok(())
    }
}
