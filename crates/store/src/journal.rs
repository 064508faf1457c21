//! The per-step journal: each engine step recorded as started and as done, with the
//! observation that decided it. Writes are fenced like every other engine write.

use slipway_core::DeploymentStatus;
use sqlx::PgConnection;

use crate::StoreError;
use crate::leases::{Claim, fenced};

/// Records that the holder of `claim` started step `tick`.
pub async fn started(
    conn: &mut PgConnection,
    claim: Claim,
    tick: i64,
    worker: &str,
    observation: &serde_json::Value,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "INSERT INTO deployment_journal (deployment_id, tick, epoch, worker, observation)
         SELECT $1, $3, $2, $4, $5 FROM deployments WHERE id = $1 AND epoch = $2",
    )
    .bind(claim.id)
    .bind(claim.epoch)
    .bind(tick)
    .bind(worker)
    .bind(observation)
    .execute(conn)
    .await?;
    fenced(done.rows_affected())
}

/// Records that step `tick` is done, with the actions it applied and where it left the
/// deployment.
pub async fn finished(
    conn: &mut PgConnection,
    claim: Claim,
    tick: i64,
    actions: &serde_json::Value,
    status_after: DeploymentStatus,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE deployment_journal j SET finished_at = now(), actions = $4,
             status_after = $5::deployment_status
         FROM deployments d
         WHERE j.deployment_id = $1 AND j.tick = $3 AND j.epoch = $2
           AND d.id = $1 AND d.epoch = $2",
    )
    .bind(claim.id)
    .bind(claim.epoch)
    .bind(tick)
    .bind(actions)
    .bind(status_after.as_str())
    .execute(conn)
    .await?;
    fenced(done.rows_affected())
}
