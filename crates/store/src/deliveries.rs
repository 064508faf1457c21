//! Webhook deliveries that created deployments, by their sender's delivery id.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// Which delivery: the app it was sent for, its source and the sender's id.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryKey<'a> {
    pub app_id: Uuid,
    pub source: &'a str,
    pub delivery_id: &'a str,
}

/// The stored answer of a delivery already taken, if any.
pub async fn answered(
    conn: &mut PgConnection,
    key: DeliveryKey<'_>,
) -> Result<Option<serde_json::Value>, StoreError> {
    let row: Option<Option<serde_json::Value>> = sqlx::query_scalar(
        "SELECT response FROM webhook_deliveries
         WHERE app_id = $1 AND source = $2 AND delivery_id = $3",
    )
    .bind(key.app_id)
    .bind(key.source)
    .bind(key.delivery_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.flatten())
}

/// Claims the delivery id for this transaction. `false` when it was already taken: a
/// concurrent transaction claiming the same id waits here until the first one ends, and then
/// gets `false` if that one committed (or the claim, if it rolled back).
pub async fn claim(
    conn: &mut PgConnection,
    key: DeliveryKey<'_>,
    event: &str,
    metadata: Option<&serde_json::Value>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO webhook_deliveries (app_id, source, delivery_id, event, metadata)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(key.app_id)
    .bind(key.source)
    .bind(key.delivery_id)
    .bind(event)
    .bind(metadata)
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
