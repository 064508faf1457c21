//! The per-deployment, append-only event log.

use chrono::{DateTime, Utc};
use slipway_core::{DeploymentEvent, EventKind};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::StoreError;
use crate::access::{self, Member};
use crate::page::{Page, fetch_limit};

/// An event to append.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: EventKind,
    pub actor: &'a str,
    pub message: String,
    pub data: serde_json::Value,
}

/// Appends an event with the deployment's next sequence number. The counter lives on the
/// deployment row, so appends to one deployment serialize on that row and never leave a gap.
#[tracing::instrument(skip_all, fields(deployment = %deployment_id, kind = event.kind.as_str()))]
pub async fn append(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    event: &NewEvent<'_>,
) -> Result<i64, StoreError> {
    let seq: i64 = sqlx::query_scalar(
        "UPDATE deployments SET last_event_seq = last_event_seq + 1, updated_at = now()
         WHERE id = $1 RETURNING last_event_seq",
    )
    .bind(deployment_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound("deployment"))?;
    sqlx::query(
        "INSERT INTO deployment_events (deployment_id, seq, kind, actor, message, data)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(deployment_id)
    .bind(seq)
    .bind(event.kind.as_str())
    .bind(event.actor)
    .bind(&event.message)
    .bind(&event.data)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::wake::EVENTS_CHANNEL)
        .bind(format!("{deployment_id}:{seq}"))
        .execute(conn)
        .await?;
    Ok(seq)
}

/// Sends many notifications, `(channel, payload)`, in one statement (one commit).
pub async fn notify_many(
    conn: &mut PgConnection,
    notes: &[(&str, String)],
) -> Result<(), StoreError> {
    let channels: Vec<&str> = notes.iter().map(|(c, _)| *c).collect();
    let payloads: Vec<&str> = notes.iter().map(|(_, p)| p.as_str()).collect();
    sqlx::query("SELECT count(pg_notify(c, p)) FROM unnest($1::text[], $2::text[]) AS n (c, p)")
        .bind(&channels)
        .bind(&payloads)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    deployment_id: Uuid,
    at: DateTime<Utc>,
    kind: String,
    actor: String,
    message: String,
    data: serde_json::Value,
}

impl From<EventRow> for DeploymentEvent {
    fn from(r: EventRow) -> Self {
        DeploymentEvent {
            seq: r.seq,
            deployment_id: r.deployment_id,
            at: r.at,
            kind: r.kind,
            actor: r.actor,
            message: r.message,
            data: r.data,
        }
    }
}

/// A deployment's events in order, after the sequence number `after`.
#[tracing::instrument(skip_all, fields(deployment = %deployment_id))]
pub async fn list(
    conn: &mut PgConnection,
    deployment_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Page<DeploymentEvent, i64>, StoreError> {
    let rows: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, deployment_id, at, kind, actor, message, data FROM deployment_events
         WHERE deployment_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(deployment_id)
    .bind(after.unwrap_or(0))
    .bind(fetch_limit(limit))
    .fetch_all(conn)
    .await?;
    let items = rows.into_iter().map(DeploymentEvent::from).collect();
    Ok(Page::from_rows(items, limit, |e: &DeploymentEvent| e.seq))
}

#[derive(sqlx::FromRow)]
struct FeedRow {
    position: i64,
    #[sqlx(flatten)]
    event: EventRow,
}

/// Events of every deployment after the feed position `after`, in position order, with
/// their positions.
///
/// Only events of deployments `visible_to` may see are returned (all for `None`).
pub async fn feed(
    conn: &mut PgConnection,
    after: i64,
    limit: i64,
    visible_to: Option<&Member<'_>>,
) -> Result<Vec<(i64, DeploymentEvent)>, StoreError> {
    let sql = match visible_to {
        None => "SELECT position, seq, deployment_id, at, kind, actor, message, data
                 FROM deployment_events WHERE position > $1 ORDER BY position LIMIT $2"
            .to_owned(),
        Some(_) => format!(
            "SELECT ev.position, ev.seq, ev.deployment_id, ev.at, ev.kind, ev.actor, ev.message,
                    ev.data
             FROM deployment_events ev
             JOIN deployments d ON d.id = ev.deployment_id
             JOIN environments e ON e.id = d.environment_id
             WHERE ev.position > $1 AND {}
             ORDER BY ev.position LIMIT $2",
            access::visible_clause("e.app_id", "e.name", 3, 4)
        ),
    };
    let mut query = sqlx::query_as::<_, FeedRow>(AssertSqlSafe(sql))
        .bind(after)
        .bind(limit);
    if visible_to.is_some() {
        let (subject, groups) = access::binds(visible_to);
        query = query.bind(subject).bind(groups);
    }
    let rows: Vec<FeedRow> = query.fetch_all(conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.position, DeploymentEvent::from(r.event)))
        .collect())
}

/// The feed position of the newest event (0 when there is none).
pub async fn feed_head(conn: &mut PgConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM deployment_events")
            .fetch_one(conn)
            .await?,
    )
}
