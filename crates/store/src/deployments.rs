//! Deployments: recording requests and reading them back.

use chrono::{DateTime, Utc};
use slipway_core::{
    Deployment, DeploymentPlan, DeploymentStatus, FailureReason, Outcome, Serving, ServingHealth,
};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::StoreError;
use slipway_core::rollout::RolloutSpec;

use crate::access::{self, Member};
use crate::codec::decode;
use crate::environments::EnvironmentRef;
use crate::page::{Page, fetch_limit};

#[derive(sqlx::FromRow)]
struct DeploymentRow {
    id: Uuid,
    app: String,
    environment: String,
    image: String,
    version: String,
    strategy: serde_json::Value,
    status: String,
    phase: Option<String>,
    step: Option<i32>,
    outcome: Option<String>,
    serving_health: String,
    serving_version: Option<String>,
    failure_code: Option<String>,
    failure_message: Option<String>,
    request_reason: Option<String>,
    source: serde_json::Value,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<DeploymentRow> for Deployment {
    type Error = StoreError;

    fn try_from(r: DeploymentRow) -> Result<Self, StoreError> {
        let reason = match (r.failure_code, r.failure_message) {
            (Some(code), Some(message)) => Some(FailureReason { code, message }),
            _ => None,
        };
        Ok(Deployment {
            id: r.id,
            app: r.app,
            environment: r.environment,
            image: r.image,
            version: r.version,
            strategy: serde_json::from_value(r.strategy)?,
            status: decode(&r.status, &DeploymentStatus::ALL, DeploymentStatus::as_str)?,
            phase: r.phase,
            step: r.step.and_then(|s| u32::try_from(s).ok()),
            outcome: r
                .outcome
                .map(|o| decode(&o, &Outcome::ALL, Outcome::as_str))
                .transpose()?,
            serving: Serving {
                health: decode(
                    &r.serving_health,
                    &ServingHealth::ALL,
                    ServingHealth::as_str,
                )?,
                version: r.serving_version,
            },
            reason,
            request_reason: r.request_reason,
            source: serde_json::from_value(r.source)?,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

const SELECT: &str = "SELECT d.id, a.name AS app, e.name AS environment, d.image, d.version,
        d.strategy, d.status::text AS status, d.phase, d.step, d.outcome::text AS outcome,
        d.serving_health::text AS serving_health, d.serving_version, d.failure_code,
        d.failure_message, d.request_reason, d.source, d.created_by, d.created_at, d.updated_at
     FROM deployments d
     JOIN environments e ON e.id = d.environment_id
     JOIN apps a ON a.id = e.app_id";

/// Who asked for a deployment and how.
#[derive(Debug, Clone)]
pub struct Requester<'a> {
    pub principal: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub traceparent: Option<&'a str>,
}

/// Records a new deployment as `queued`; returns its id. The caller appends its first event
/// in the same transaction.
#[tracing::instrument(skip_all, fields(environment_id = %environment.id))]
pub async fn insert_queued(
    conn: &mut PgConnection,
    environment: &EnvironmentRef,
    plan: &DeploymentPlan,
    rollout: &RolloutSpec,
    by: &Requester<'_>,
) -> Result<Uuid, StoreError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO deployments (id, environment_id, cluster_id, image, version, strategy,
             rollout, status, source_kind, source, request_reason, created_by, idempotency_key,
             traceparent, next_wake_at)
         VALUES ($1, $2, $12, $3, $4, $5, $13, 'queued', $6::source_kind, $7, $8, $9, $10, $11,
             now())",
    )
    .bind(id)
    .bind(environment.id)
    .bind(&plan.image)
    .bind(&plan.version)
    .bind(serde_json::to_value(&plan.strategy)?)
    .bind(plan.source.kind.as_str())
    .bind(serde_json::to_value(&plan.source)?)
    .bind(&plan.reason)
    .bind(by.principal)
    .bind(by.idempotency_key)
    .bind(by.traceparent)
    .bind(environment.cluster_id)
    .bind(serde_json::to_value(rollout)?)
    .execute(&mut *conn)
    .await?;
    crate::wake::notify(conn, id).await?;
    Ok(id)
}

#[tracing::instrument(skip_all, fields(deployment = %id))]
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Deployment, StoreError> {
    let sql = format!("{SELECT} WHERE d.id = $1");
    let row: Option<DeploymentRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::NotFound("deployment"))?.try_into()
}

/// What to list: every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct DeploymentFilter {
    pub app: Option<String>,
    pub environment: Option<String>,
    pub statuses: Vec<DeploymentStatus>,
}

/// Deployments newest first (ids are time-ordered UUIDv7), after the id `after`.
#[tracing::instrument(skip_all)]
///
/// Only deployments `visible_to` may see are listed (all for `None`).
pub async fn list(
    conn: &mut PgConnection,
    filter: &DeploymentFilter,
    after: Option<Uuid>,
    limit: i64,
    visible_to: Option<&Member<'_>>,
) -> Result<Page<Deployment, Uuid>, StoreError> {
    let visible = access::visible_clause("e.app_id", "e.name", 6, 7);
    let sql = format!(
        "{SELECT}
         WHERE ($1::text IS NULL OR a.name = $1)
           AND ($2::text IS NULL OR e.name = $2)
           AND (cardinality($3::text[]) = 0 OR d.status::text = ANY($3))
           AND ($4::uuid IS NULL OR d.id < $4)
           AND {visible}
         ORDER BY d.id DESC
         LIMIT $5"
    );
    let statuses: Vec<&str> = filter.statuses.iter().map(|s| s.as_str()).collect();
    let (subject, groups) = access::binds(visible_to);
    let rows: Vec<DeploymentRow> = sqlx::query_as(AssertSqlSafe(sql))
        .bind(&filter.app)
        .bind(&filter.environment)
        .bind(&statuses)
        .bind(after)
        .bind(fetch_limit(limit))
        .bind(subject)
        .bind(groups)
        .fetch_all(conn)
        .await?;
    let items = rows
        .into_iter()
        .map(Deployment::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Page::from_rows(items, limit, |d| d.id))
}

/// Moves a deployment to `status` (the engine's transitions build on this; tests use it to
/// exercise the one-active-per-environment index).
#[tracing::instrument(skip_all, fields(deployment = %id, status = status.as_str()))]
pub async fn set_status(
    conn: &mut PgConnection,
    id: Uuid,
    status: DeploymentStatus,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE deployments SET status = $2::deployment_status, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .execute(conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("deployment"));
    }
    Ok(())
}
