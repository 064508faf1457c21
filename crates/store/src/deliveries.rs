//! Webhook deliveries that created deployments, by their sender's delivery id (and, where
//! the id is not signed, by a digest of what is), and what each said about its deployments.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// Which delivery: the app it was sent for, its source and the sender's id, and for a
/// source whose id is not signed (GitHub) the digest of its signed content, which identifies
/// it as well.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryKey<'a> {
    pub app_id: Uuid,
    pub source: &'a str,
    pub delivery_id: &'a str,
    pub content_digest: Option<&'a [u8; 32]>,
}

/// The stored answer of a delivery already taken (by its id or its content), if any.
pub async fn answered(
    conn: &mut PgConnection,
    key: DeliveryKey<'_>,
) -> Result<Option<serde_json::Value>, StoreError> {
    let row: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "SELECT response FROM webhook_deliveries
         WHERE app_id = $1 AND source = $2 AND (delivery_id = $3 OR content_digest = $4)
         ORDER BY received_at LIMIT 1",
    )
    .bind(key.app_id)
    .bind(key.source)
    .bind(key.delivery_id)
    .bind(key.content_digest.map(|d| d.as_slice()))
    .fetch_optional(conn)
    .await?;
    Ok(row.flatten())
}

/// Claims the delivery id (and content digest) for this transaction. `false` when either was
/// already taken: a concurrent transaction claiming the same id or content waits here until
/// the first one ends, and then gets `false` if that one committed (or the claim, if it
/// rolled back).
pub async fn claim(
    conn: &mut PgConnection,
    key: DeliveryKey<'_>,
    event: &str,
    metadata: Option<&serde_json::Value>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (app_id, source, delivery_id, event, metadata,
             content_digest)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(key.app_id)
    .bind(key.source)
    .bind(key.delivery_id)
    .bind(event)
    .bind(metadata)
    .bind(key.content_digest.map(|d| d.as_slice()))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Stores the answer of a claimed delivery.
pub async fn complete(
    conn: &mut PgConnection,
    key: DeliveryKey<'_>,
    response: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET response = $4
         WHERE app_id = $1 AND source = $2 AND delivery_id = $3",
    )
    .bind(key.app_id)
    .bind(key.source)
    .bind(key.delivery_id)
    .bind(response)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deliveries older than `days` days: their ids are no longer de-duplicated.
pub async fn purge_older_than(conn: &mut PgConnection, days: i32) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "DELETE FROM webhook_deliveries WHERE received_at < now() - make_interval(days => $1)",
    )
    .bind(days)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Links a deployment to the GitHub deployment that asked for it, so its statuses are posted.
pub async fn link_github(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    repository: &str,
    github_deployment_id: i64,
    github_environment: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO github_deployments
             (deployment_id, repository, github_deployment_id, github_environment)
         VALUES ($1, $2, $3, $4)",
    )
    .bind(deployment_id)
    .bind(repository)
    .bind(github_deployment_id)
    .bind(github_environment)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a delivery said about a deployment it created.
#[derive(Debug, Clone, Copy)]
pub struct WebhookDeployment<'a> {
    pub deployment_id: Uuid,
    pub trigger_id: Uuid,
    /// The human the delivery names as its actor.
    pub actor: Option<&'a str>,
    pub commit_sha: Option<&'a str>,
    pub committed_at: Option<DateTime<Utc>>,
}

/// Records what the delivery said about the deployment it created.
pub async fn record_webhook_deployment(
    conn: &mut PgConnection,
    w: WebhookDeployment<'_>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_deployments
             (deployment_id, trigger_id, actor, commit_sha, committed_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(w.deployment_id)
    .bind(w.trigger_id)
    .bind(w.actor)
    .bind(w.commit_sha)
    .bind(w.committed_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// The commit time of the newest succeeded deployment `trigger` made (what it serves), when
/// there is one and its time is known.
pub async fn serving_commit_time(
    conn: &mut PgConnection,
    trigger_id: Uuid,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "SELECT w.committed_at FROM webhook_deployments w
         JOIN deployments d ON d.id = w.deployment_id
         WHERE w.trigger_id = $1 AND d.status = 'succeeded'
         ORDER BY w.deployment_id DESC LIMIT 1",
    )
    .bind(trigger_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.flatten())
}
