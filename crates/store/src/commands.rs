//! Commands people issue to deployments: stored as records, consumed by the engine.

use chrono::{DateTime, Utc};
use slipway_core::rollout::CommandKind;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;
use crate::codec::decode;
use crate::leases::{Claim, fenced};

/// A command not yet consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCommand {
    pub id: Uuid,
    pub kind: CommandKind,
    pub actor: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Records a command and wakes the engine for its deployment.
#[tracing::instrument(skip_all, fields(deployment = %deployment_id, kind = kind.as_str()))]
pub async fn insert(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    kind: CommandKind,
    actor: &str,
    reason: Option<&str>,
    idempotency_key: Option<&str>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO commands (id, deployment_id, kind, actor, reason, idempotency_key)
         VALUES ($1, $2, $3::command_kind, $4, $5, $6)",
    )
    .bind(id)
    .bind(deployment_id)
    .bind(kind.as_str())
    .bind(actor)
    .bind(reason)
    .bind(idempotency_key)
    .execute(&mut *conn)
    .await?;
    // Due before any other work: claims take the earliest `next_wake_at` first.
    sqlx::query("UPDATE deployments SET next_wake_at = 'epoch' WHERE id = $1")
        .bind(deployment_id)
        .execute(&mut *conn)
        .await?;
    crate::wake::notify(conn, deployment_id).await?;
    Ok(id)
}

#[derive(sqlx::FromRow)]
struct CommandRow {
    id: Uuid,
    kind: String,
    actor: String,
    reason: Option<String>,
    created_at: DateTime<Utc>,
}

/// Unconsumed commands of a deployment, oldest first.
pub async fn pending(
    conn: &mut PgConnection,
    deployment_id: Uuid,
) -> Result<Vec<PendingCommand>, StoreError> {
    let rows: Vec<CommandRow> = sqlx::query_as(
        "SELECT id, kind::text AS kind, actor, reason, created_at FROM commands
         WHERE deployment_id = $1 AND consumed_at IS NULL ORDER BY created_at, id",
    )
    .bind(deployment_id)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(PendingCommand {
                id: r.id,
                kind: decode(&r.kind, &CommandKind::ALL, CommandKind::as_str)?,
                actor: r.actor,
                reason: r.reason,
                created_at: r.created_at,
            })
        })
        .collect()
}

/// Marks commands consumed by the holder of `claim`.
pub async fn consume(
    conn: &mut PgConnection,
    claim: Claim,
    ids: &[Uuid],
    outcome: &str,
) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    let done = sqlx::query(
        "UPDATE commands c SET consumed_at = now(), outcome = $4
         FROM deployments d
         WHERE c.id = ANY($3) AND c.deployment_id = d.id AND d.id = $1 AND d.epoch = $2",
    )
    .bind(claim.id)
    .bind(claim.epoch)
    .bind(ids)
    .bind(outcome)
    .execute(conn)
    .await?;
    fenced(done.rows_affected())
}
