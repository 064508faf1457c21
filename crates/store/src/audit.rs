//! The audit trail: one row per mutating API request, with the subject who sent it.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::StoreError;
use crate::page::{Page, fetch_limit};

/// What an audit row records.
#[derive(Debug, Clone)]
pub struct NewAuditEntry<'a> {
    pub subject: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub request_id: Option<&'a str>,
}

/// A stored audit row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub subject: String,
    pub method: String,
    pub path: String,
    pub status: i16,
    pub request_id: Option<String>,
}

#[tracing::instrument(skip_all)]
pub async fn append(conn: &mut PgConnection, entry: &NewAuditEntry<'_>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (subject, method, path, status, request_id)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(entry.subject)
    .bind(entry.method)
    .bind(entry.path)
    .bind(i16::try_from(entry.status).unwrap_or(i16::MAX))
    .bind(entry.request_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first, optionally only one subject's, before the id `before`.
#[tracing::instrument(skip_all)]
pub async fn list(
    conn: &mut PgConnection,
    subject: Option<&str>,
    before: Option<i64>,
    limit: i64,
) -> Result<Page<AuditEntry, i64>, StoreError> {
    let rows: Vec<AuditEntry> = sqlx::query_as(
        "SELECT id, at, subject, method, path, status, request_id FROM audit_log
         WHERE ($1::text IS NULL OR subject = $1) AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
    )
    .bind(subject)
    .bind(before)
    .bind(fetch_limit(limit))
    .fetch_all(conn)
    .await?;
    Ok(Page::from_rows(rows, limit, |e| e.id))
}
