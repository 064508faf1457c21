//! Apps.

use chrono::{DateTime, Utc};
use slipway_core::App;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::access::{self, Member};
use crate::page::{Page, fetch_limit};
use crate::{Revisioned, StoreError};

#[derive(sqlx::FromRow)]
struct AppRow {
    name: String,
    description: String,
    revision: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<AppRow> for Revisioned<App> {
    fn from(r: AppRow) -> Self {
        Revisioned {
            value: App {
                name: r.name,
                description: r.description,
                created_at: r.created_at,
                updated_at: r.updated_at,
            },
            revision: r.revision,
        }
    }
}

const COLUMNS: &str = "name, description, revision, created_at, updated_at";

/// Creates an app; a taken name fails on `apps_name_key`.
#[tracing::instrument(skip_all, fields(app = name))]
pub async fn insert(
    conn: &mut PgConnection,
    name: &str,
    description: &str,
) -> Result<Revisioned<App>, StoreError> {
    let sql =
        format!("INSERT INTO apps (id, name, description) VALUES ($1, $2, $3) RETURNING {COLUMNS}");
    let row: AppRow = sqlx::query_as(AssertSqlSafe(sql))
        .bind(Uuid::now_v7())
        .bind(name)
        .bind(description)
        .fetch_one(conn)
        .await?;
    Ok(row.into())
}

#[tracing::instrument(skip_all, fields(app = name))]
pub async fn get(conn: &mut PgConnection, name: &str) -> Result<Revisioned<App>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM apps WHERE name = $1");
    let row: Option<AppRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(name)
        .fetch_optional(conn)
        .await?;
    Ok(row.ok_or(StoreError::NotFound("app"))?.into())
}

/// Apps by name, after the name `after`; only those `visible_to` may see (all for `None`).
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    after: Option<&str>,
    limit: i64,
    visible_to: Option<&Member<'_>>,
) -> Result<Page<App, String>, StoreError> {
    let visible = access::app_visible_clause("apps.id", 3, 4);
    let sql = format!(
        "SELECT {COLUMNS} FROM apps WHERE ($1::text IS NULL OR name > $1) AND {visible}
         ORDER BY name LIMIT $2"
    );
    let (subject, groups) = access::binds(visible_to);
    let rows: Vec<AppRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(after)
        .bind(fetch_limit(limit))
        .bind(subject)
        .bind(groups)
        .fetch_all(conn)
        .await?;
    let items = rows
        .into_iter()
        .map(|r| Revisioned::from(r).value)
        .collect();
    Ok(Page::from_rows(items, limit, |a: &App| a.name.clone()))
}

/// Locks the app's row for the rest of the transaction and returns its id and revision.
pub async fn lock(conn: &mut PgConnection, name: &str) -> Result<(Uuid, i64), StoreError> {
    sqlx::query_as("SELECT id, revision FROM apps WHERE name = $1 FOR UPDATE")
        .bind(name)
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::NotFound("app"))
}

/// The id of the app named `name`.
pub async fn id_of(conn: &mut PgConnection, name: &str) -> Result<Uuid, StoreError> {
    sqlx::query_scalar("SELECT id FROM apps WHERE name = $1")
        .bind(name)
        .fetch_optional(conn)
        .await?
        .ok_or(StoreError::NotFound("app"))
}

/// Changes the description of a locked app, bumping its revision.
#[tracing::instrument(skip_all)]
pub async fn set_description(
    conn: &mut PgConnection,
    id: Uuid,
    description: &str,
) -> Result<Revisioned<App>, StoreError> {
    let sql = format!(
        "UPDATE apps SET description = $2, revision = revision + 1, updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    let row: AppRow = sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .bind(description)
        .fetch_one(conn)
        .await?;
    Ok(row.into())
}

/// Deployments of the app that have not finished.
pub async fn unfinished_deployments(conn: &mut PgConnection, id: Uuid) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM deployments d JOIN environments e ON e.id = d.environment_id
         WHERE e.app_id = $1 AND slipway_is_live(d.status)",
    )
    .bind(id)
    .fetch_one(conn)
    .await?)
}

/// Deletes an app with its environments and their finished deployments.
pub async fn delete(conn: &mut PgConnection, id: Uuid) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM apps WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}
