//! Role bindings: which subject or group holds which role in an app (optionally in one of
//! its environments).

use chrono::{DateTime, Utc};
use slipway_core::{NewRoleBinding, Role, RoleBinding};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::StoreError;
use crate::page::{Page, fetch_limit};

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    app: String,
    environment: Option<String>,
    subject: Option<String>,
    group_name: Option<String>,
    role: String,
    created_by: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<Row> for RoleBinding {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        Ok(RoleBinding {
            id: r.id,
            app: r.app,
            environment: r.environment,
            subject: r.subject,
            group: r.group_name,
            role: r.role.parse::<Role>().map_err(StoreError::Corrupt)?,
            created_by: r.created_by,
            created_at: r.created_at,
        })
    }
}

const SELECT: &str = "SELECT rb.id, a.name AS app, rb.environment, rb.subject, rb.group_name,
        rb.role, rb.created_by, rb.created_at
     FROM role_bindings rb JOIN apps a ON a.id = rb.app_id";

/// Binds a role in the app `app_id`; the same principal bound twice in one place fails on
/// `role_bindings_unique`.
#[tracing::instrument(skip_all)]
pub async fn insert(
    conn: &mut PgConnection,
    app_id: Uuid,
    new: &NewRoleBinding,
    created_by: &str,
) -> Result<RoleBinding, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO role_bindings (id, app_id, environment, subject, group_name, role, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(app_id)
    .bind(&new.environment)
    .bind(&new.subject)
    .bind(&new.group)
    .bind(new.role.as_str())
    .bind(created_by)
    .execute(&mut *conn)
    .await?;
    get(conn, id).await
}

#[tracing::instrument(skip_all, fields(binding = %id))]
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<RoleBinding, StoreError> {
    let sql = format!("{SELECT} WHERE rb.id = $1");
    let row: Option<Row> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::NotFound("role binding"))?.try_into()
}

/// The bindings of app `app`, oldest first, after the id `after`.
#[tracing::instrument(skip_all, fields(app))]
pub async fn list(
    conn: &mut PgConnection,
    app: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Page<RoleBinding, Uuid>, StoreError> {
    let sql = format!(
        "{SELECT} WHERE a.name = $1 AND ($2::uuid IS NULL OR rb.id > $2) ORDER BY rb.id LIMIT $3"
    );
    let rows: Vec<Row> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(app)
        .bind(after)
        .bind(fetch_limit(limit))
        .fetch_all(conn)
        .await?;
    let items = rows
        .into_iter()
        .map(RoleBinding::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, limit, |b| b.id))
}

/// Removes a binding of app `app`.
#[tracing::instrument(skip_all, fields(binding = %id))]
pub async fn delete(conn: &mut PgConnection, app: &str, id: Uuid) -> Result<(), StoreError> {
    let done = sqlx::query(
        "DELETE FROM role_bindings rb USING apps a
         WHERE rb.id = $1 AND a.id = rb.app_id AND a.name = $2",
    )
    .bind(id)
    .bind(app)
    .execute(conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("role binding"));
    }
    Ok(())
}
