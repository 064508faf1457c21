//! Environments of apps.

use chrono::{DateTime, Utc};
use slipway_core::{Environment, EnvironmentSpec};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::access::{self, Member};
use crate::page::{Page, fetch_limit};
use crate::{Revisioned, StoreError};

#[derive(sqlx::FromRow)]
struct EnvironmentRow {
    app: String,
    name: String,
    spec: serde_json::Value,
    revision: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<EnvironmentRow> for Revisioned<Environment> {
    type Error = StoreError;

    fn try_from(r: EnvironmentRow) -> Result<Self, StoreError> {
        Ok(Revisioned {
            value: Environment {
                app: r.app,
                name: r.name,
                spec: serde_json::from_value(r.spec)?,
                created_at: r.created_at,
                updated_at: r.updated_at,
            },
            revision: r.revision,
        })
    }
}

const SELECT: &str = "SELECT a.name AS app, e.name, e.spec, e.revision, e.created_at, e.updated_at
     FROM environments e JOIN apps a ON a.id = e.app_id";

/// An environment and the id it is stored under.
#[derive(Debug, Clone)]
pub struct EnvironmentRef {
    pub id: Uuid,
    pub cluster_id: Uuid,
    pub spec: EnvironmentSpec,
    pub revision: i64,
}

#[tracing::instrument(skip_all, fields(app, env = name))]
pub async fn get(
    conn: &mut PgConnection,
    app: &str,
    name: &str,
) -> Result<Revisioned<Environment>, StoreError> {
    let sql = format!("{SELECT} WHERE a.name = $1 AND e.name = $2");
    let row: Option<EnvironmentRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(app)
        .bind(name)
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::NotFound("environment"))?.try_into()
}

/// Environments of one app by name, after the name `after`.
///
/// Only the environments `visible_to` may read are listed (all for `None`): the ones a
/// direct read would show them, by the same bindings.
#[tracing::instrument(skip_all, fields(app))]
pub async fn list(
    conn: &mut PgConnection,
    app: &str,
    after: Option<&str>,
    limit: i64,
    visible_to: Option<&Member<'_>>,
) -> Result<Page<Environment, String>, StoreError> {
    let visible = access::visible_clause("e.app_id", "e.name", 4, 5);
    let sql = format!(
        "{SELECT} WHERE a.name = $1 AND ($2::text IS NULL OR e.name > $2) AND {visible}
         ORDER BY e.name LIMIT $3"
    );
    let (subject, groups) = access::binds(visible_to);
    let rows: Vec<EnvironmentRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(app)
        .bind(after)
        .bind(fetch_limit(limit))
        .bind(subject)
        .bind(groups)
        .fetch_all(conn)
        .await?;
    let items = rows
        .into_iter()
        .map(|r| Revisioned::<Environment>::try_from(r).map(|e| e.value))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, limit, |e| e.name.clone()))
}

/// Locks an environment row for the rest of the transaction, if it exists.
pub async fn lock(
    conn: &mut PgConnection,
    app_id: Uuid,
    name: &str,
) -> Result<Option<EnvironmentRef>, StoreError> {
    let row: Option<(Uuid, Uuid, serde_json::Value, i64)> = sqlx::query_as(
        "SELECT id, cluster_id, spec, revision FROM environments
         WHERE app_id = $1 AND name = $2 FOR UPDATE",
    )
    .bind(app_id)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.map(|(id, cluster_id, spec, revision)| {
        Ok(EnvironmentRef {
            id,
            cluster_id,
            spec: serde_json::from_value(spec)?,
            revision,
        })
    })
    .transpose()
}

/// Finds an environment by app and name for a new deployment, and share-locks it and its app
/// for the rest of the transaction: deleting the app or replacing the environment (which lock
/// them for update) waits until the deployment is recorded, and then sees it. Without the lock
/// a concurrent deletion either missed the new deployment and cascaded it away, or made its
/// insert fail on the foreign key.
pub async fn find(
    conn: &mut PgConnection,
    app: &str,
    name: &str,
) -> Result<EnvironmentRef, StoreError> {
    let row: Option<(Uuid, Uuid, serde_json::Value, i64)> = sqlx::query_as(
        "SELECT e.id, e.cluster_id, e.spec, e.revision FROM environments e
         JOIN apps a ON a.id = e.app_id WHERE a.name = $1 AND e.name = $2
         FOR SHARE",
    )
    .bind(app)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    let (id, cluster_id, spec, revision) = row.ok_or(StoreError::NotFound("environment"))?;
    Ok(EnvironmentRef {
        id,
        cluster_id,
        spec: serde_json::from_value(spec)?,
        revision,
    })
}

/// Creates an environment of a locked app.
#[tracing::instrument(skip_all, fields(env = name))]
pub async fn insert(
    conn: &mut PgConnection,
    app_id: Uuid,
    name: &str,
    cluster_id: Uuid,
    spec: &EnvironmentSpec,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO environments (id, app_id, name, cluster_id, spec) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(app_id)
    .bind(name)
    .bind(cluster_id)
    .bind(serde_json::to_value(spec)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces the spec of a locked environment, bumping its revision.
#[tracing::instrument(skip_all)]
pub async fn replace(
    conn: &mut PgConnection,
    id: Uuid,
    cluster_id: Uuid,
    spec: &EnvironmentSpec,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE environments SET cluster_id = $2, spec = $3, revision = revision + 1,
         updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(cluster_id)
    .bind(serde_json::to_value(spec)?)
    .execute(conn)
    .await?;
    Ok(())
}
