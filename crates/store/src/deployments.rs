//! Deployments: recording requests and reading them back.

use chrono::{DateTime, Utc};
use slipway_core::{Deployment, DeploymentStatus, FailureReason, Outcome, Serving, ServingHealth};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::StoreError;
use slipway_core::rollout::RolloutSpec;

use crate::access::{self, Member};
use crate::codec::decode;
use crate::environments::EnvironmentRef;
use crate::events::NewEvent;
use crate::idempotency::{KeyRef, RawResponse};
use crate::page::{Page, fetch_limit};

#[derive(sqlx::FromRow)]
struct DeploymentRow {
    id: Uuid,
    app: String,
    environment: String,
    image: String,
    version: String,
    strategy: serde_json::Value,
    strategy_overridden: bool,
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
            strategy_overridden: r.strategy_overridden,
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
        d.strategy, d.strategy_overridden, d.status::text AS status, d.phase, d.step,
        d.outcome::text AS outcome, d.serving_health::text AS serving_health, d.serving_version,
        d.failure_code, d.failure_message, d.request_reason, d.source, d.created_by,
        d.created_at, d.updated_at
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

/// A deployment to record as `queued`: its row, its first event, and (with a key) the stored
/// response, all known before the statement runs.
#[derive(Debug, Clone, Copy)]
pub struct NewDeployment<'a> {
    /// The deployment as the API shows it (id, names, request, timestamps).
    pub deployment: &'a Deployment,
    /// The environment the plan was made from; recorded only while it is still at this id
    /// and revision.
    pub environment: &'a EnvironmentRef,
    pub rollout: &'a RolloutSpec,
    pub by: &'a Requester<'a>,
    /// The first event (`seq` 1).
    pub event: &'a NewEvent<'a>,
    /// NOTIFY engines and event streams in the statement (at commit). Without it the caller
    /// sends the hints once the write has committed.
    pub notify: bool,
    /// The audit row of the request that asks for it, written with the deployment (only when
    /// the deployment is).
    pub audit: Option<&'a crate::audit::NewAuditEntry<'a>>,
}

/// The response to store under an idempotency key, together with the write.
#[derive(Debug, Clone, Copy)]
pub struct KeyedResponse<'a> {
    pub key: &'a KeyRef<'a>,
    pub response: &'a RawResponse,
    pub ttl: std::time::Duration,
}

/// What [`record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The deployment, its first event and the key's response are stored.
    Recorded,
    /// No environment of that name in that app (any more): nothing was written.
    EnvironmentMissing,
    /// The environment changed since the plan was made (another id or revision): nothing was
    /// written; plan again from the current one.
    EnvironmentChanged,
    /// The key is taken by an earlier request (it waited for a concurrent one to finish):
    /// nothing was written; read the key's stored response.
    KeyTaken,
}

/// Records a new deployment: [`record_many`] with one row (the same statement). Either all
/// of it is written or none.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn record(
    conn: &mut PgConnection,
    new: NewDeployment<'_>,
    key: Option<KeyedResponse<'_>>,
) -> Result<Recorded, StoreError> {
    record_many(conn, &[RecordRow::new(new, key)?])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("no outcome".into()))
}

/// One create as the statement takes it ([`record_many`]): owned and with its JSON already
/// serialized, so it can be handed to the task that writes a batch.
#[derive(Debug, Clone)]
pub struct RecordRow {
    app: String,
    environment: String,
    environment_id: Uuid,
    environment_revision: i64,
    cluster_id: Uuid,
    key_scope: Option<String>,
    key: Option<String>,
    request_hash: Option<Vec<u8>>,
    response_status: Option<i16>,
    response_body: Option<String>,
    response_location: Option<String>,
    ttl_seconds: Option<f64>,
    id: Uuid,
    image: String,
    version: String,
    strategy: String,
    strategy_overridden: bool,
    rollout: String,
    source_kind: String,
    source: String,
    request_reason: Option<String>,
    created_by: String,
    idempotency_key: Option<String>,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
    event_kind: String,
    event_actor: String,
    event_message: String,
    event_data: String,
    audit_subject: Option<String>,
    audit_method: Option<String>,
    audit_path: Option<String>,
    audit_status: Option<i16>,
    audit_request_id: Option<String>,
    notify: bool,
}

impl RecordRow {
    /// The row for `new` and its key's response.
    pub fn new(new: NewDeployment<'_>, key: Option<KeyedResponse<'_>>) -> Result<Self, StoreError> {
        let d = new.deployment;
        let response_status = key
            .map(|k| i16::try_from(k.response.status))
            .transpose()
            .map_err(|_| StoreError::Corrupt("status".into()))?;
        Ok(Self {
            app: d.app.clone(),
            environment: d.environment.clone(),
            environment_id: new.environment.id,
            environment_revision: new.environment.revision,
            cluster_id: new.environment.cluster_id,
            key_scope: key.map(|k| k.key.scope.to_owned()),
            key: key.map(|k| k.key.key.to_owned()),
            request_hash: key.map(|k| k.key.request_hash.to_vec()),
            response_status,
            response_body: key.map(|k| k.response.body.clone()),
            response_location: key.and_then(|k| k.response.location.clone()),
            ttl_seconds: key.map(|k| k.ttl.as_secs_f64()),
            id: d.id,
            image: d.image.clone(),
            version: d.version.clone(),
            strategy: serde_json::to_string(&d.strategy)?,
            strategy_overridden: d.strategy_overridden,
            rollout: serde_json::to_string(new.rollout)?,
            source_kind: d.source.kind.as_str().to_owned(),
            source: serde_json::to_string(&d.source)?,
            request_reason: d.request_reason.clone(),
            created_by: new.by.principal.to_owned(),
            idempotency_key: new.by.idempotency_key.map(str::to_owned),
            traceparent: new.by.traceparent.map(str::to_owned),
            created_at: d.created_at,
            event_kind: new.event.kind.as_str().to_owned(),
            event_actor: new.event.actor.to_owned(),
            event_message: new.event.message.clone(),
            event_data: serde_json::to_string(&new.event.data)?,
            audit_subject: new.audit.map(|a| a.subject.to_owned()),
            audit_method: new.audit.map(|a| a.method.to_owned()),
            audit_path: new.audit.map(|a| a.path.to_owned()),
            audit_status: new
                .audit
                .map(|a| i16::try_from(a.status).unwrap_or(i16::MAX)),
            audit_request_id: new.audit.and_then(|a| a.request_id.map(str::to_owned)),
            notify: new.notify,
        })
    }

    /// The idempotency key's identity (scope and key), when the row has one: two rows with
    /// the same one cannot be in one [`record_many`] statement.
    pub fn key_id(&self) -> Option<(&str, &str)> {
        Some((self.key_scope.as_deref()?, self.key.as_deref()?))
    }

    /// The deployment's id.
    pub fn id(&self) -> Uuid {
        self.id
    }
}

/// Records creates in one statement (one round trip; a lone create is a batch of one, see
/// [`record`]). For each row: checks that the environment is still the one planned from
/// (its id and revision), key-share locking it and its app (an app deletion or environment
/// replacement waits for it, and then sees the deployment); takes the idempotency key
/// (`ON CONFLICT DO NOTHING`: a concurrent request with the same key waits for this one and
/// then finds the key taken; an expired key is taken over); inserts the deployment with
/// `last_event_seq = 1`, its first event, the key's response and the request's audit row
/// (with `audit`); and, for a row that asks for it ([`NewDeployment::notify`]), wakes the
/// engines and SSE streams when the transaction commits. Each row has its own outcome: a
/// row whose environment moved or whose key is taken writes nothing and does not stop the
/// others. Answers one [`Recorded`] per row, in order. No two rows may share a key
/// ([`RecordRow::key_id`]). An error (a constraint one row violates, a deadlock) fails the
/// whole statement and writes nothing: the caller may then write the rows one by one, with
/// this same statement.
#[tracing::instrument(level = "debug", skip_all, fields(rows = rows.len()))]
pub async fn record_many(
    conn: &mut PgConnection,
    rows: &[RecordRow],
) -> Result<Vec<Recorded>, StoreError> {
    fn col<T, F: Fn(&RecordRow) -> T>(rows: &[RecordRow], f: F) -> Vec<T> {
        rows.iter().map(f).collect()
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let found: Vec<(i64, bool, bool, bool, i64)> = sqlx::query_as(RECORD_MANY)
        .bind(col(rows, |r| r.app.clone()))
        .bind(col(rows, |r| r.environment.clone()))
        .bind(col(rows, |r| r.environment_id))
        .bind(col(rows, |r| r.environment_revision))
        .bind(col(rows, |r| r.cluster_id))
        .bind(col(rows, |r| r.key_scope.clone()))
        .bind(col(rows, |r| r.key.clone()))
        .bind(col(rows, |r| r.request_hash.clone()))
        .bind(col(rows, |r| r.response_status))
        .bind(col(rows, |r| r.response_body.clone()))
        .bind(col(rows, |r| r.response_location.clone()))
        .bind(col(rows, |r| r.ttl_seconds))
        .bind(col(rows, |r| r.id))
        .bind(col(rows, |r| r.image.clone()))
        .bind(col(rows, |r| r.version.clone()))
        .bind(col(rows, |r| r.strategy.clone()))
        .bind(col(rows, |r| r.rollout.clone()))
        .bind(col(rows, |r| r.source_kind.clone()))
        .bind(col(rows, |r| r.source.clone()))
        .bind(col(rows, |r| r.request_reason.clone()))
        .bind(col(rows, |r| r.created_by.clone()))
        .bind(col(rows, |r| r.idempotency_key.clone()))
        .bind(col(rows, |r| r.traceparent.clone()))
        .bind(col(rows, |r| r.created_at))
        .bind(col(rows, |r| r.event_kind.clone()))
        .bind(col(rows, |r| r.event_actor.clone()))
        .bind(col(rows, |r| r.event_message.clone()))
        .bind(col(rows, |r| r.event_data.clone()))
        .bind(col(rows, |r| r.audit_subject.clone()))
        .bind(col(rows, |r| r.audit_method.clone()))
        .bind(col(rows, |r| r.audit_path.clone()))
        .bind(col(rows, |r| r.audit_status))
        .bind(col(rows, |r| r.audit_request_id.clone()))
        .bind(col(rows, |r| r.strategy_overridden))
        .bind(col(rows, |r| r.notify))
        .fetch_all(conn)
        .await?;
    if found.len() != rows.len() {
        return Err(StoreError::Corrupt(format!(
            "{} outcomes for {} rows",
            found.len(),
            rows.len()
        )));
    }
    Ok(found
        .into_iter()
        .map(
            |(_, found, current, recorded, _)| match (recorded, found, current) {
                (true, _, _) => Recorded::Recorded,
                (false, false, _) => Recorded::EnvironmentMissing,
                (false, true, false) => Recorded::EnvironmentChanged,
                (false, true, true) => Recorded::KeyTaken,
            },
        )
        .collect())
}

// The statement of [`record_many`]: the rows come as one array per column ($1-$35), numbered
// by `WITH ORDINALITY`; each CTE works on all rows at once and joins back to its input by that
// number, by the key's scope and key (unique in a batch) or by the deployment id. Each
// environment named is looked up and key-share locked once, however many rows go to it.
// Data-modifying CTEs run to completion whether or not the final SELECT reads them; `woken`
// (a plain SELECT) runs because the final SELECT counts it. The channel names are those of
// `crate::wake`.
const RECORD_MANY: &str = "WITH input AS (
         SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::bigint[], $5::uuid[],
             $6::text[], $7::text[], $8::bytea[], $9::smallint[], $10::text[], $11::text[],
             $12::float8[], $13::uuid[], $14::text[], $15::text[], $16::text[], $17::text[],
             $18::text[], $19::text[], $20::text[], $21::text[], $22::text[], $23::text[],
             $24::timestamptz[], $25::text[], $26::text[], $27::text[], $28::text[],
             $29::text[], $30::text[], $31::text[], $32::smallint[], $33::text[],
             $34::boolean[], $35::boolean[])
             WITH ORDINALITY AS i(app, environment, environment_id, environment_revision,
                 cluster_id, key_scope, key, request_hash, response_status, response_body,
                 response_location, ttl_seconds, id, image, version, strategy, rollout,
                 source_kind, source, request_reason, created_by, idempotency_key, traceparent,
                 created_at, event_kind, event_actor, event_message, event_data, audit_subject,
                 audit_method, audit_path, audit_status, audit_request_id, strategy_overridden,
                 notify, n)
     ),
     named AS (SELECT DISTINCT app, environment FROM input),
     locked AS (
         SELECT n.app, n.environment, e.id, e.revision
         FROM named n
         JOIN apps a ON a.name = n.app
         JOIN environments e ON e.app_id = a.id AND e.name = n.environment
         FOR KEY SHARE OF e, a
     ),
     env AS (
         SELECT i.n, l.id, l.revision = i.environment_revision AND l.id = i.environment_id
                AS current
         FROM input i JOIN locked l ON l.app = i.app AND l.environment = i.environment
     ),
     target AS (SELECT n, id FROM env WHERE current),
     key AS (
         INSERT INTO idempotency_keys AS k (scope, key, request_hash, response_status,
             response_body, response_location, expires_at)
         SELECT i.key_scope, i.key, i.request_hash, i.response_status,
             i.response_body::jsonb, i.response_location,
             now() + make_interval(secs => i.ttl_seconds)
         FROM input i JOIN target t ON t.n = i.n
         WHERE i.key IS NOT NULL
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = excluded.request_hash,
             response_status = excluded.response_status, response_body = excluded.response_body,
             response_location = excluded.response_location, created_at = now(),
             expires_at = excluded.expires_at
           WHERE k.expires_at <= now()
         RETURNING k.scope, k.key
     ),
     go AS (
         SELECT t.n, t.id FROM target t JOIN input i ON i.n = t.n
         WHERE i.key IS NULL
            OR EXISTS (SELECT FROM key WHERE key.scope = i.key_scope AND key.key = i.key)
     ),
     dep AS (
         INSERT INTO deployments (id, environment_id, cluster_id, image, version, strategy,
             strategy_overridden, rollout, status, source_kind, source, request_reason,
             created_by, idempotency_key, traceparent, next_wake_at, last_event_seq,
             created_at, updated_at)
         SELECT i.id, go.id, i.cluster_id, i.image, i.version, i.strategy::jsonb,
             i.strategy_overridden, i.rollout::jsonb, 'queued', i.source_kind::source_kind, i.source::jsonb,
             i.request_reason, i.created_by, i.idempotency_key, i.traceparent, now(), 1,
             i.created_at, i.created_at
         FROM go JOIN input i ON i.n = go.n
         RETURNING id
     ),
     ev AS (
         INSERT INTO deployment_events (deployment_id, seq, at, kind, actor, message, data)
         SELECT i.id, 1, i.created_at, i.event_kind, i.event_actor, i.event_message,
             i.event_data::jsonb
         FROM dep JOIN input i ON i.id = dep.id
         RETURNING deployment_id
     ),
     audited AS (
         INSERT INTO audit_log (subject, method, path, status, request_id)
         SELECT i.audit_subject, i.audit_method, i.audit_path, i.audit_status,
             i.audit_request_id
         FROM dep JOIN input i ON i.id = dep.id
         WHERE i.audit_subject IS NOT NULL
     ),
     woken AS (
         SELECT pg_notify('slipway_wake', ev.deployment_id::text),
                pg_notify('slipway_events', ev.deployment_id::text || ':1')
         FROM ev JOIN input i ON i.id = ev.deployment_id
         WHERE i.notify
     )
     SELECT i.n, env.n IS NOT NULL, coalesce(env.current, false),
            ev.deployment_id IS NOT NULL, (SELECT count(*) FROM woken)
     FROM input i
     LEFT JOIN env ON env.n = i.n
     LEFT JOIN ev ON ev.deployment_id = i.id
     ORDER BY i.n";

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
