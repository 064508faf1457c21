//! Leases with fencing: how engines share deployments without running a step twice.
//!
//! A claim takes due, unleased rows with `FOR UPDATE SKIP LOCKED`, sets the lease and bumps
//! the row's `epoch`. Every later write by that worker names `(id, epoch)`; when another
//! worker has claimed the row since (after the lease expired), the epoch differs, the write
//! changes nothing, and the store answers [`StoreError::LeaseLost`].
//!
//! The cluster is not fenced by the epoch, so a lease also ends in time: [`holds`] answers
//! how long the claim still holds by the database's clock (the clock the claims read), and
//! the engine bounds its cluster calls by that, so that a worker that stalls after the check
//! cannot act once another worker may have claimed the deployment.

use std::sync::LazyLock;
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

/// Extends the lease; `LeaseLost` when another worker holds the row now.
pub async fn heartbeat(
    conn: &mut PgConnection,
    claim: Claim,
    ttl: Duration,
) -> Result<(), StoreError> {
    set_from_now(conn, claim, "lease_expires_at", ttl).await
}

/// Sets one timestamp column of the held deployment to now + `ttl`, fenced by the claim.
async fn set_from_now(
    conn: &mut PgConnection,
    claim: Claim,
    column: &'static str,
    ttl: Duration,
) -> Result<(), StoreError> {
    let sql = format!("UPDATE deployments SET {column} = now() + $3 WHERE id = $1 AND epoch = $2");
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(claim.id)
        .bind(claim.epoch)
        .bind(interval(ttl)?)
        .execute(conn)
        .await?;
    fenced(done.rows_affected())
}

/// The wake-up a release sets on the `deployments` row it updates: `wake` (the step's own),
/// unless the deployment was woken while the step ran — a command's insert or a finishing
/// deployment's queue wake-up set `next_wake_at` to now or earlier (the claim had set it to
/// the lease's expiry; the row's latest version is read under its lock), or an unconsumed
/// command the step did not read exists (one committed while the claim read the pending
/// commands): then it stays due at once, ahead of other work. The one definition, for every
/// statement that releases a lease: `deployment` is the SQL of the row's id, `wake` that of
/// the step's wake-up, `seen` a condition on `c.id` that holds for the commands the step read.
pub(crate) fn released_wake(deployment: &str, wake: &str, seen: &str) -> String {
    format!(
        "CASE
         WHEN next_wake_at <= now() THEN next_wake_at
         WHEN EXISTS (SELECT FROM commands c
                      WHERE c.deployment_id = {deployment} AND c.consumed_at IS NULL
                        AND NOT ({seen})) THEN 'epoch'::timestamptz
         ELSE {wake}::timestamptz END"
    )
}

/// The statement of [`release_after`].
static RELEASE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE deployments SET lease_owner = NULL, lease_expires_at = NULL,
             next_wake_at = {}
         WHERE id = $1 AND epoch = $2",
        released_wake("$1", "$3", "c.id = ANY($4)")
    )
});

/// Gives the lease back and says when the deployment is next due (`None`: only a command or
/// an event wakes it); a deployment woken while the step ran stays due (see
/// [`released_wake`]). Commands consumed earlier in the caller's transaction are not pending.
pub async fn release(
    conn: &mut PgConnection,
    claim: Claim,
    next_wake_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    release_after(conn, claim, next_wake_at, &[]).await
}

/// [`release`] by a step that read the commands `seen` and left them unconsumed: only another
/// command makes the deployment due at once.
pub async fn release_after(
    conn: &mut PgConnection,
    claim: Claim,
    next_wake_at: Option<DateTime<Utc>>,
    seen: &[Uuid],
) -> Result<(), StoreError> {
    let done = sqlx::query(sqlx::AssertSqlSafe(RELEASE.as_str()))
        .bind(claim.id)
        .bind(claim.epoch)
        .bind(next_wake_at)
        .bind(seen)
        .execute(conn)
        .await?;
    fenced(done.rows_affected())
}

/// Moves a held deployment's wake-up back to the lease's expiry, as a claim does, without a
/// new epoch: a worker that goes on with a deployment woken while it held it (a command came
/// in, `slipway_engine::step::run_claimed`) re-arms before it reads the pending commands, so
/// that only what is recorded after this counts as a new wake-up (and the final release does
/// not leave the deployment due for a command already read). `LeaseLost` when another worker
/// holds it now.
pub async fn rearm(conn: &mut PgConnection, claim: Claim, ttl: Duration) -> Result<(), StoreError> {
    set_from_now(conn, claim, "next_wake_at", ttl).await
}

/// How long the claim still holds, by the database's clock (`LeaseLost` when another worker
/// took the deployment over, or when its lease has run out: from then on any worker may
/// claim it). Checked before acting on a cluster, since only database writes are fenced by
/// the epoch; the caller bounds its cluster calls by the time left (a claim by another
/// worker cannot come before it has passed).
pub async fn holds(conn: &mut PgConnection, claim: Claim) -> Result<Duration, StoreError> {
    holding(conn, &[claim])
        .await?
        .pop()
        .flatten()
        .ok_or(StoreError::LeaseLost)
}

/// [`holds`] for several claims in one query: for each of them, in order, the lease time
/// left, or `None` when it no longer holds.
pub async fn holding(
    conn: &mut PgConnection,
    claims: &[Claim],
) -> Result<Vec<Option<Duration>>, StoreError> {
    let ids: Vec<Uuid> = claims.iter().map(|c| c.id).collect();
    let epochs: Vec<i64> = claims.iter().map(|c| c.epoch).collect();
    // The arrays are read through sub-selects so that the planner does not see their length:
    // a plan that knows it always looks cheaper than the generic one, and PostgreSQL would
    // plan this statement anew on every call, and planning cost more than the execution
    // (bench/engine.md, "Chained steps, 64 workers, generic plans"; decision 071).
    let held: Vec<(i64, f64)> = sqlx::query_as(
        "SELECT c.n, extract(epoch FROM d.lease_expires_at - now())::float8
         FROM unnest((SELECT $1::uuid[]), (SELECT $2::bigint[]))
             WITH ORDINALITY AS c (id, epoch, n)
         JOIN deployments d ON d.id = c.id AND d.epoch = c.epoch
                           AND d.lease_expires_at > now()",
    )
    .bind(&ids)
    .bind(&epochs)
    .fetch_all(conn)
    .await?;
    let mut out = vec![None; claims.len()];
    for (n, left) in held {
        if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = Duration::try_from_secs_f64(left).ok();
        }
    }
    Ok(out)
}

/// Gives back every lease `owner` holds, for a graceful shutdown: they are due at once for
/// whoever runs next.
pub async fn release_all(conn: &mut PgConnection, owner: &str) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE deployments SET lease_owner = NULL, lease_expires_at = NULL,
             next_wake_at = least(next_wake_at, now())
         WHERE lease_owner = $1",
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
