//! Triggers of apps, with their sealed webhook secrets (which only [`for_source`] reads).

use chrono::{DateTime, Utc};
use slipway_core::{Trigger, TriggerSource, TriggerSpec};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::StoreError;
use crate::page::{Page, fetch_limit};

#[derive(sqlx::FromRow)]
struct TriggerRow {
    id: Uuid,
    app: String,
    spec: serde_json::Value,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<TriggerRow> for Trigger {
    type Error = StoreError;

    fn try_from(r: TriggerRow) -> Result<Self, StoreError> {
        Ok(Trigger {
            id: r.id,
            app: r.app,
            spec: serde_json::from_value(r.spec)?,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const SELECT: &str = "SELECT t.id, a.name AS app, t.spec, t.created_by, t.created_at, t.updated_at
     FROM triggers t JOIN apps a ON a.id = t.app_id";

/// Triggers of a (locked) app.
pub async fn count(conn: &mut PgConnection, app_id: Uuid) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM triggers WHERE app_id = $1")
            .bind(app_id)
            .fetch_one(conn)
            .await?,
    )
}

/// Stores a trigger whose secret was sealed for `id`.
#[tracing::instrument(skip_all, fields(trigger = %id))]
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    app_id: Uuid,
    spec: &TriggerSpec,
    secret_sealed: &[u8],
    created_by: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO triggers (id, app_id, source, spec, secret_sealed, created_by)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id)
    .bind(app_id)
    .bind(spec.source.as_str())
    .bind(serde_json::to_value(spec)?)
    .bind(secret_sealed)
    .bind(created_by)
    .execute(conn)
    .await?;
    Ok(())
}

/// A trigger of the app `app`.
pub async fn get(conn: &mut PgConnection, app: &str, id: Uuid) -> Result<Trigger, StoreError> {
    let sql = format!("{SELECT} WHERE a.name = $1 AND t.id = $2");
    let row: Option<TriggerRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(app)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::NotFound("trigger"))?.try_into()
}

/// The app's triggers in creation order (ids are UUIDv7), after the id `after`.
pub async fn list(
    conn: &mut PgConnection,
    app: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<Trigger, Uuid>, StoreError> {
    let sql = format!(
        "{SELECT} WHERE a.name = $1 AND ($2::uuid IS NULL OR t.id > $2) ORDER BY t.id LIMIT $3"
    );
    let rows: Vec<TriggerRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(app)
        .bind(after)
        .bind(fetch_limit(limit))
        .fetch_all(conn)
        .await?;
    let items = rows
        .into_iter()
        .map(Trigger::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, limit, |t| t.id))
}

/// Deletes a trigger of the app `app`.
pub async fn delete(conn: &mut PgConnection, app: &str, id: Uuid) -> Result<(), StoreError> {
    let done = sqlx::query(
        "DELETE FROM triggers t USING apps a WHERE a.id = t.app_id AND a.name = $1 AND t.id = $2",
    )
    .bind(app)
    .bind(id)
    .execute(conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("trigger"));
    }
    Ok(())
}

/// A trigger with its sealed secret, to verify a delivery with.
#[derive(Debug, Clone)]
pub struct SealedTrigger {
    pub id: Uuid,
    pub app_id: Uuid,
    pub spec: TriggerSpec,
    pub secret_sealed: Vec<u8>,
}

/// Every trigger of `source` of the app `app` (none when there is no such app).
pub async fn for_source(
    conn: &mut PgConnection,
    app: &str,
    source: TriggerSource,
) -> Result<Vec<SealedTrigger>, StoreError> {
    let rows: Vec<(Uuid, Uuid, serde_json::Value, Vec<u8>)> = sqlx::query_as(
        "SELECT t.id, t.app_id, t.spec, t.secret_sealed FROM triggers t
         JOIN apps a ON a.id = t.app_id WHERE a.name = $1 AND t.source = $2 ORDER BY t.id",
    )
    .bind(app)
    .bind(source.as_str())
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(id, app_id, spec, secret_sealed)| {
            Ok(SealedTrigger {
                id,
                app_id,
                spec: serde_json::from_value(spec)?,
                secret_sealed,
            })
        })
        .collect()
}
