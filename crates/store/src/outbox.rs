//! The GitHub deployment status outbox: events of GitHub-linked deployments waiting to be
//! looked at (`github_status_queue`, filled by a database trigger), and the statuses to post
//! (`github_status_outbox`), delivered in order per deployment with retries.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// The advisory lock the single status relay of a database holds for as long as it runs.
const RELAY_LOCK: i64 = 0x5_1197_0a75;

/// Tries to become the database's status relay; held until the session ends or
/// [`unlock_relay`].
pub async fn try_lock_relay(conn: &mut PgConnection) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(RELAY_LOCK)
        .fetch_one(conn)
        .await?)
}

pub async fn unlock_relay(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(RELAY_LOCK)
        .execute(conn)
        .await?;
    Ok(())
}

/// An event of a GitHub-linked deployment, waiting to be mapped to a status.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedEvent {
    pub queue_id: i64,
    pub deployment_id: Uuid,
    pub seq: i64,
    pub kind: String,
    pub message: String,
    pub version: String,
    pub environment_id: Uuid,
}

/// The oldest waiting events, in queue order (per deployment, that is `seq` order).
pub async fn queued_events(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<QueuedEvent>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT q.id AS queue_id, q.deployment_id, q.seq, e.kind, e.message, d.version,
                d.environment_id
         FROM github_status_queue q
         JOIN deployment_events e ON e.deployment_id = q.deployment_id AND e.seq = q.seq
         JOIN deployments d ON d.id = q.deployment_id
         ORDER BY q.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Removes events that were looked at.
pub async fn dequeue(conn: &mut PgConnection, queue_ids: &[i64]) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM github_status_queue WHERE id = ANY($1)")
        .bind(queue_ids)
        .execute(conn)
        .await?;
    Ok(())
}

/// Adds a status to post for a deployment, after the ones already waiting.
pub async fn push(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    state: &str,
    description: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO github_status_outbox (deployment_id, state, description) VALUES ($1, $2, $3)",
    )
    .bind(deployment_id)
    .bind(state)
    .bind(description)
    .execute(conn)
    .await?;
    Ok(())
}

/// GitHub-linked deployments of the environment that succeeded before `newer` and have no
/// `inactive` status yet: `newer` replaces them.
pub async fn replaced_by(
    conn: &mut PgConnection,
    environment_id: Uuid,
    newer: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT d.id FROM deployments d JOIN github_deployments g ON g.deployment_id = d.id
         WHERE d.environment_id = $1 AND d.id <> $2 AND d.id < $2 AND d.status = 'succeeded'
           AND NOT EXISTS (SELECT 1 FROM github_status_outbox o
                           WHERE o.deployment_id = d.id AND o.state = 'inactive')
         ORDER BY d.id",
    )
    .bind(environment_id)
    .bind(newer)
    .fetch_all(conn)
    .await?)
}

/// A status to post, with where it goes.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PendingStatus {
    pub id: i64,
    pub deployment_id: Uuid,
    pub state: String,
    pub description: String,
    pub attempts: i32,
    pub repository: String,
    pub github_deployment_id: i64,
    pub github_environment: String,
}

/// The first undelivered status of each deployment, when it is due; later ones of the same
/// deployment wait for it (statuses arrive in order).
pub async fn due(conn: &mut PgConnection, limit: i64) -> Result<Vec<PendingStatus>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT h.* FROM (
             SELECT DISTINCT ON (o.deployment_id) o.id, o.deployment_id, o.state, o.description,
                    o.attempts, o.next_attempt_at, g.repository, g.github_deployment_id,
                    g.github_environment
             FROM github_status_outbox o
             JOIN github_deployments g ON g.deployment_id = o.deployment_id
             WHERE o.delivered_at IS NULL AND o.abandoned_at IS NULL
             ORDER BY o.deployment_id, o.id) h
         WHERE h.next_attempt_at <= now() ORDER BY h.id LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// When the next undelivered status is due (`None` when there is none).
pub async fn next_due(conn: &mut PgConnection) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM github_status_outbox
         WHERE delivered_at IS NULL AND abandoned_at IS NULL",
    )
    .fetch_one(conn)
    .await?)
}

pub async fn delivered(conn: &mut PgConnection, id: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE github_status_outbox SET delivered_at = now(), attempts = attempts + 1
         WHERE id = $1",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A failed attempt, tried again at `retry_at`.
pub async fn failed(
    conn: &mut PgConnection,
    id: i64,
    error: &str,
    retry_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE github_status_outbox
         SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .bind(retry_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// A status that will never be accepted (GitHub refused it for good, or retries ran out): the
/// deployment's later statuses go ahead.
pub async fn abandoned(conn: &mut PgConnection, id: i64, error: &str) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE github_status_outbox
         SET attempts = attempts + 1, last_error = $2, abandoned_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}
