//! A deployment as the engine drives it: its frozen rollout spec and machine state, and the
//! fenced writes that move it.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use slipway_core::rollout::{RolloutSpec, RolloutState};
use slipway_core::{ClusterKind, DeploymentStatus};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use slipway_core::rollout::CommandKind;
use sqlx::types::Json;

use crate::StoreError;
use crate::codec::decode;
use crate::commands::PendingCommand;
use crate::events::NewEvent;
use crate::leases::{Claim, fenced, released_wake};

/// How to reach the cluster a deployment targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterRef {
    pub id: Uuid,
    pub name: String,
    pub kind: ClusterKind,
    pub kubeconfig_path: Option<String>,
    pub context: Option<String>,
}

/// What the engine needs to run one step of a deployment.
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    pub id: Uuid,
    pub environment_id: Uuid,
    pub status: DeploymentStatus,
    pub spec: RolloutSpec,
    /// `None` until the deployment leaves the queue.
    pub state: Option<RolloutState>,
    pub created_by: String,
    pub attempt: i32,
    pub tick: i64,
    pub cluster: ClusterRef,
    pub supersede_queued: bool,
    /// The environment adopts objects of its workload that Slipway does not manage (read
    /// from the environment as it is now, like `supersede_queued`).
    pub adopt: bool,
    pub traceparent: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    environment_id: Uuid,
    status: String,
    rollout: Option<serde_json::Value>,
    state: serde_json::Value,
    created_by: String,
    attempt: i32,
    tick: i64,
    cluster_id: Uuid,
    cluster_name: String,
    cluster_kind: String,
    kubeconfig_path: Option<String>,
    context: Option<String>,
    supersede_queued: Option<bool>,
    adopt: Option<bool>,
    traceparent: Option<String>,
    created_at: DateTime<Utc>,
}

const KINDS: [ClusterKind; 3] = [
    ClusterKind::Kubernetes,
    ClusterKind::InCluster,
    ClusterKind::Simulated,
];

impl TryFrom<Row> for RolloutRecord {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let spec = r.rollout.ok_or_else(|| {
            StoreError::Corrupt(format!("deployment {} has no rollout spec", r.id))
        })?;
        let state = match &r.state {
            serde_json::Value::Object(map) if map.is_empty() => None,
            other => Some(serde_json::from_value(other.clone())?),
        };
        Ok(Self {
            id: r.id,
            environment_id: r.environment_id,
            status: decode(&r.status, &DeploymentStatus::ALL, DeploymentStatus::as_str)?,
            spec: serde_json::from_value(spec)?,
            state,
            created_by: r.created_by,
            attempt: r.attempt,
            tick: r.tick,
            cluster: ClusterRef {
                id: r.cluster_id,
                name: r.cluster_name,
                kind: decode(&r.cluster_kind, &KINDS, ClusterKind::as_str)?,
                kubeconfig_path: r.kubeconfig_path,
                context: r.context,
            },
            supersede_queued: r.supersede_queued.unwrap_or(false),
            adopt: r.adopt.unwrap_or(false),
            traceparent: r.traceparent,
            created_at: r.created_at,
        })
    }
}

const SELECT: &str = "SELECT d.id, d.environment_id, d.status::text AS status, d.rollout, d.state,
        d.created_by, d.attempt, d.tick, c.id AS cluster_id, c.name AS cluster_name,
        c.kind::text AS cluster_kind, c.kubeconfig_path, c.context,
        (e.spec->>'supersede_queued')::boolean AS supersede_queued,
        (e.spec->>'adopt')::boolean AS adopt, d.traceparent, d.created_at
     FROM deployments d
     JOIN environments e ON e.id = d.environment_id
     JOIN clusters c ON c.id = d.cluster_id";

/// Loads a deployment for the holder of `claim`.
pub async fn load(conn: &mut PgConnection, claim: Claim) -> Result<RolloutRecord, StoreError> {
    let sql = format!("{SELECT} WHERE d.id = $1 AND d.epoch = $2");
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(claim.id)
        .bind(claim.epoch)
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::LeaseLost)?.try_into()
}

/// A deployment leased by [`claim_due`], loaded with its unconsumed commands.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub claim: Claim,
    pub record: RolloutRecord,
    /// Unconsumed commands, oldest first.
    pub pending: Vec<PendingCommand>,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    epoch: i64,
    #[sqlx(flatten)]
    row: Row,
    cmd_ids: Option<Vec<Uuid>>,
    cmd_kinds: Option<Vec<String>>,
    cmd_actors: Option<Vec<String>>,
    cmd_reasons: Option<Vec<Option<String>>>,
    cmd_created: Option<Vec<DateTime<Utc>>>,
}

impl TryFrom<ClaimedRow> for Claimed {
    type Error = StoreError;

    fn try_from(r: ClaimedRow) -> Result<Self, StoreError> {
        let claim = Claim {
            id: r.row.id,
            epoch: r.epoch,
        };
        let ids = r.cmd_ids.unwrap_or_default();
        let kinds = r.cmd_kinds.unwrap_or_default();
        let actors = r.cmd_actors.unwrap_or_default();
        let reasons = r.cmd_reasons.unwrap_or_default();
        let created = r.cmd_created.unwrap_or_default();
        if [kinds.len(), actors.len(), reasons.len(), created.len()] != [ids.len(); 4] {
            return Err(StoreError::Corrupt("pending commands".into()));
        }
        let pending = ids
            .into_iter()
            .zip(kinds)
            .zip(actors)
            .zip(reasons)
            .zip(created)
            .map(|((((id, kind), actor), reason), created_at)| {
                Ok(PendingCommand {
                    id,
                    kind: decode(&kind, &CommandKind::ALL, CommandKind::as_str)?,
                    actor,
                    reason,
                    created_at,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Self {
            claim,
            record: r.row.try_into()?,
            pending,
        })
    }
}

/// Leases up to `limit` deployments whose wake-up time has come and loads each with its
/// pending commands, in one statement. The claim bumps the fencing epoch and moves the
/// wake-up to the lease's expiry (due again if the holder dies), so a wake-up time at or
/// before now at release means someone woke the deployment while the step ran (see
/// [`crate::leases::release`]).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn claim_due(
    conn: &mut PgConnection,
    owner: &str,
    ttl: std::time::Duration,
    limit: i64,
) -> Result<Vec<Claimed>, StoreError> {
    let ttl = chrono::Duration::from_std(ttl).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    // The limit is written into the statement, rounded down to a power of two (at most
    // eleven statements): with `LIMIT $n` PostgreSQL plans the claim anew on every call (a
    // plan that knows the limit always looks cheaper than the generic one), and planning
    // cost as much as running it. A literal limit gets one plan per connection.
    let limit = claim_batch(limit);
    let sql = format!(
        "WITH due AS (
             SELECT id FROM deployments
             WHERE next_wake_at <= now()
               AND (lease_expires_at IS NULL OR lease_expires_at < now())
             ORDER BY next_wake_at
             LIMIT {limit}
             FOR UPDATE SKIP LOCKED
         ),
         d AS (
             UPDATE deployments d
                SET lease_owner = $1, lease_expires_at = now() + $2, next_wake_at = now() + $2,
                    epoch = d.epoch + 1
               FROM due WHERE d.id = due.id
             RETURNING d.id, d.epoch, d.environment_id, d.status, d.rollout, d.state,
                 d.created_by, d.attempt, d.tick, d.cluster_id, d.traceparent, d.created_at
         )
         SELECT d.id, d.epoch, d.environment_id, d.status::text AS status, d.rollout, d.state,
             d.created_by, d.attempt, d.tick, c.id AS cluster_id, c.name AS cluster_name,
             c.kind::text AS cluster_kind, c.kubeconfig_path, c.context,
             (e.spec->>'supersede_queued')::boolean AS supersede_queued,
             (e.spec->>'adopt')::boolean AS adopt, d.traceparent,
             d.created_at, p.cmd_ids, p.cmd_kinds, p.cmd_actors, p.cmd_reasons, p.cmd_created
         FROM d
         JOIN environments e ON e.id = d.environment_id
         JOIN clusters c ON c.id = d.cluster_id
         LEFT JOIN LATERAL (
             SELECT array_agg(m.id ORDER BY m.created_at, m.id) AS cmd_ids,
                 array_agg(m.kind::text ORDER BY m.created_at, m.id) AS cmd_kinds,
                 array_agg(m.actor ORDER BY m.created_at, m.id) AS cmd_actors,
                 array_agg(m.reason ORDER BY m.created_at, m.id) AS cmd_reasons,
                 array_agg(m.created_at ORDER BY m.created_at, m.id) AS cmd_created
             FROM commands m WHERE m.deployment_id = d.id AND m.consumed_at IS NULL
         ) p ON true"
    );
    let rows: Vec<ClaimedRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(owner)
        .bind(ttl)
        .fetch_all(conn)
        .await?;
    rows.into_iter().map(Claimed::try_from).collect()
}

/// The most [`claim_due`] takes when `limit` are wanted: the largest power of two not above
/// it, between 1 and 1024 (a caller that wants more claims again).
pub fn claim_batch(limit: i64) -> i64 {
    let limit = limit.clamp(1, 1024);
    1 << (63 - limit.leading_zeros())
}

/// Where a queued deployment stands in its environment's queue (see [`queue_turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct QueueTurn {
    /// It is the head of the queue (`queue_head`, migration 80: the newest queued with
    /// `supersede_queued`, else the oldest).
    pub is_head: bool,
    /// A deployment of the environment is active.
    pub environment_busy: bool,
}

impl QueueTurn {
    /// Its turn has come: it is the head and the environment is free.
    pub fn may_start(self) -> bool {
        self.is_head && !self.environment_busy
    }
}

/// Where a queued deployment stands: whether it is the head of its environment's queue and
/// whether a deployment of the environment is active. One query.
pub async fn queue_turn(
    conn: &mut PgConnection,
    environment_id: Uuid,
    id: Uuid,
) -> Result<QueueTurn, StoreError> {
    Ok(sqlx::query_as(
        "SELECT $2 = queue_head($1) IS TRUE AS is_head,
             EXISTS (SELECT 1 FROM deployments WHERE environment_id = $1
                     AND slipway_is_active(status)) AS environment_busy",
    )
    .bind(environment_id)
    .bind(id)
    .fetch_one(conn)
    .await?)
}

/// The journal entry of a step, written with its result.
#[derive(Debug, Clone, Copy)]
pub struct JournalEntry<'a> {
    pub worker: &'a str,
    pub started_at: DateTime<Utc>,
    pub observation: &'a serde_json::Value,
    pub actions: &'a serde_json::Value,
}

/// Everything one step writes, in one statement: see [`write_steps`].
#[derive(Debug, Clone, Copy)]
pub struct StepWrite<'a> {
    pub claim: Claim,
    pub state: &'a RolloutState,
    /// Appended in order, numbered after the deployment's last event.
    pub events: &'a [NewEvent<'a>],
    /// Commands the step read: those listed in `consumed` are marked consumed (`applied`);
    /// any other unconsumed command makes the deployment due at once.
    pub seen: &'a [Uuid],
    pub consumed: &'a [Uuid],
    pub journal: Option<JournalEntry<'a>>,
    /// When the deployment is next due (`None`: only a command wakes it).
    pub wake: Option<DateTime<Utc>>,
    /// The deployment leaves the queue with this write: it must still be `queued`.
    pub starts: bool,
    /// Keep the lease for this long instead of releasing it: the worker goes on with the
    /// deployment's next step at once (see [`StepWritten::woken`]). `wake` is then unused:
    /// `next_wake_at` keeps the claim's value, so a holder that dies leaves the deployment
    /// due once the lease has expired.
    pub hold: Option<std::time::Duration>,
}

/// A held lease's length in whole milliseconds, as the write statements take it.
fn hold_ms(hold: Option<std::time::Duration>) -> Option<i64> {
    hold.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Persists a step in one statement, fenced by the claim's epoch: [`write_steps`] with a
/// batch of one (the same statement). Returns the new tick and last event `seq`; with a stale
/// epoch, or a start of a deployment no longer `queued`, nothing is written (`LeaseLost`). A
/// start refused by the one-active index is `StoreError::Constraint` and writes nothing either.
pub async fn write_step(
    conn: &mut PgConnection,
    w: StepWrite<'_>,
) -> Result<StepWritten, StoreError> {
    write_steps(conn, std::slice::from_ref(&w))
        .await?
        .pop()
        .flatten()
        .ok_or(StoreError::LeaseLost)
}

/// Persists steps in ONE statement (group commit; a lone step is a batch of one, see
/// [`write_step`]), each fenced by its own `(id, epoch)` (a start also by the deployment
/// still being `queued`): the machine state and the columns the API shows (tick + 1), the
/// events (numbered after the deployment's `last_event_seq`, which moves by their count), the
/// consumed commands, the journal row (started and finished), the lease released with the
/// next wake-up (as [`crate::leases::release`]) or held, and the head of a finished one's
/// environment queue woken (with its `slipway_wake` NOTIFY; see [`wake_queued`]), all in one
/// commit. The events' `slipway_events` hint is the caller's to send once this has committed
/// (see `slipway_engine::Notifier`): in the statement it would make the commit take the
/// cluster-wide notification lock.
///
/// Returns one entry per write, in order: `None` where the epoch was stale or a start found
/// the deployment no longer queued (that step wrote nothing; the others are not affected).
/// The writes must be to distinct deployments. An error means the statement wrote nothing,
/// for any step (a start refused by the one-active index is `StoreError::Constraint`).
#[tracing::instrument(level = "debug", skip_all, fields(steps = writes.len()))]
pub async fn write_steps(
    conn: &mut PgConnection,
    writes: &[StepWrite<'_>],
) -> Result<Vec<Option<StepWritten>>, StoreError> {
    let k = writes.len();
    let mut ids = Vec::with_capacity(k);
    let mut epochs = Vec::with_capacity(k);
    let mut wakes = Vec::with_capacity(k);
    let mut statuses = Vec::with_capacity(k);
    let mut phases = Vec::with_capacity(k);
    let mut steps = Vec::with_capacity(k);
    let mut outcomes = Vec::with_capacity(k);
    let mut healths = Vec::with_capacity(k);
    let mut serving = Vec::with_capacity(k);
    let mut failure_codes = Vec::with_capacity(k);
    let mut failure_messages = Vec::with_capacity(k);
    let mut states = Vec::with_capacity(k);
    let mut event_counts = Vec::with_capacity(k);
    let mut workers = Vec::with_capacity(k);
    let mut started = Vec::with_capacity(k);
    let mut observations = Vec::with_capacity(k);
    let mut actions = Vec::with_capacity(k);
    let mut holds = Vec::with_capacity(k);
    let mut starts = Vec::with_capacity(k);
    // Per-step lists, flattened with the step's 1-based position (`n`) beside each item.
    let (mut ev_step, mut ev_n) = (Vec::new(), Vec::new());
    let (mut kinds, mut actors, mut messages, mut data) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut seen_step, mut seen_ids) = (Vec::new(), Vec::new());
    let (mut consumed_step, mut consumed_ids) = (Vec::new(), Vec::new());
    for (i, w) in writes.iter().enumerate() {
        let n = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let state = w.state;
        ids.push(w.claim.id);
        epochs.push(w.claim.epoch);
        wakes.push(w.wake);
        statuses.push(state.status.as_str());
        phases.push(state.phase.as_str());
        steps.push(i32::try_from(state.step).unwrap_or(i32::MAX));
        outcomes.push(state.outcome.map(|o| o.as_str()));
        healths.push(state.serving_health.as_str());
        serving.push(state.serving.as_ref().map(|r| r.version.as_str()));
        failure_codes.push(state.failure.as_ref().map(|f| f.code.as_str()));
        failure_messages.push(state.failure.as_ref().map(|f| f.message.as_str()));
        states.push(Json(state));
        event_counts.push(i32::try_from(w.events.len()).unwrap_or(i32::MAX));
        workers.push(w.journal.map(|j| j.worker));
        started.push(w.journal.map(|j| j.started_at));
        observations.push(w.journal.map(|j| Json(j.observation)));
        actions.push(w.journal.map(|j| Json(j.actions)));
        holds.push(hold_ms(w.hold));
        starts.push(w.starts);
        for (e, event) in w.events.iter().enumerate() {
            ev_step.push(n);
            ev_n.push(i32::try_from(e + 1).unwrap_or(i32::MAX));
            kinds.push(event.kind.as_str());
            actors.push(event.actor);
            messages.push(event.message.as_str());
            data.push(Json(&event.data));
        }
        seen_step.extend(std::iter::repeat_n(n, w.seen.len()));
        seen_ids.extend_from_slice(w.seen);
        consumed_step.extend(std::iter::repeat_n(n, w.consumed.len()));
        consumed_ids.extend_from_slice(w.consumed);
    }
    let rows: Vec<(i64, i64, i64, bool, i64)> = sqlx::query_as(AssertSqlSafe(WRITE_STEPS.as_str()))
        .bind(&ids)
        .bind(&epochs)
        .bind(&wakes)
        .bind(&statuses)
        .bind(&phases)
        .bind(&steps)
        .bind(&outcomes)
        .bind(&healths)
        .bind(&serving)
        .bind(&failure_codes)
        .bind(&failure_messages)
        .bind(&states)
        .bind(&event_counts)
        .bind(&workers)
        .bind(&started)
        .bind(&observations)
        .bind(&actions)
        .bind(ev_step.iter().map(|n| i64::from(*n)).collect::<Vec<_>>())
        .bind(&ev_n)
        .bind(&kinds)
        .bind(&actors)
        .bind(&messages)
        .bind(&data)
        .bind(seen_step.iter().map(|n| i64::from(*n)).collect::<Vec<_>>())
        .bind(&seen_ids)
        .bind(
            consumed_step
                .iter()
                .map(|n| i64::from(*n))
                .collect::<Vec<_>>(),
        )
        .bind(&consumed_ids)
        .bind(&holds)
        .bind(&starts)
        .fetch_all(conn)
        .await?;
    let mut out = vec![None; k];
    for (n, tick, last_event_seq, woken, _) in rows {
        if let Some(slot) = usize::try_from(n - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = Some(StepWritten {
                tick,
                last_event_seq,
                woken,
            });
        }
    }
    Ok(out)
}

// The statement of [`write_steps`]: $1-$17, $28 and $29 one entry per step (id, epoch,
// wake-up, the state and shown columns, event count, journal, held lease, whether it
// starts); $18-$23 the events, $24-$25 the commands seen and $26-$27 those consumed, each
// item beside its step's 1-based position `n`.
static WRITE_STEPS: LazyLock<String> = LazyLock::new(|| {
    let wake = released_wake(
        "dep.id",
        "w.wake",
        "EXISTS (SELECT FROM unnest($24::bigint[], $25::uuid[]) AS s (n, id)
                 WHERE s.n = w.n AND s.id = c.id)",
    );
    format!(
        "WITH w AS (
             SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::timestamptz[], $4::text[],
                 $5::text[], $6::int[], $7::text[], $8::text[], $9::text[], $10::text[],
                 $11::text[], $12::jsonb[], $13::int[], $14::text[], $15::timestamptz[],
                 $16::jsonb[], $17::jsonb[], $28::bigint[], $29::boolean[])
             WITH ORDINALITY AS w (id, epoch, wake, status, phase, step, outcome, health,
                 serving, failure_code, failure_message, state, events, worker, started_at,
                 observation, actions, hold_ms, starts, n)
         ),
         d AS (
             UPDATE deployments dep SET
                 status = w.status::deployment_status, phase = w.phase, step = w.step,
                 outcome = w.outcome::deployment_outcome,
                 serving_health = w.health::serving_health, serving_version = w.serving,
                 failure_code = w.failure_code, failure_message = w.failure_message,
                 state = w.state, waiting_reason = NULL, tick = dep.tick + 1,
                 updated_at = now(), last_event_seq = dep.last_event_seq + w.events,
                 lease_owner = CASE WHEN w.hold_ms IS NULL THEN NULL ELSE dep.lease_owner END,
                 lease_expires_at = now() + w.hold_ms * interval '1 millisecond',
                 next_wake_at = CASE WHEN w.hold_ms IS NULL THEN {wake}
                     ELSE dep.next_wake_at END
             FROM w
             WHERE dep.id = w.id AND dep.epoch = w.epoch
               AND (NOT w.starts OR dep.status = 'queued')
             RETURNING w.n, dep.id, dep.environment_id, dep.tick, dep.last_event_seq,
                 w.events, w.status, w.epoch, w.worker, w.started_at, w.observation, w.actions,
                 coalesce(dep.next_wake_at <= now(), false) AS woken
         ),
         ev AS (
             INSERT INTO deployment_events (deployment_id, seq, kind, actor, message, data)
             SELECT d.id, d.last_event_seq - d.events + e.i, e.kind, e.actor, e.message, e.data
             FROM unnest($18::bigint[], $19::int[], $20::text[], $21::text[], $22::text[],
                     $23::jsonb[]) AS e (n, i, kind, actor, message, data)
                 JOIN d ON d.n = e.n
             RETURNING seq
         ),
         cmd AS (
             UPDATE commands c SET consumed_at = now(), outcome = 'applied'
             FROM unnest($26::bigint[], $27::uuid[]) AS k (n, id) JOIN d ON d.n = k.n
             WHERE c.id = k.id AND c.deployment_id = d.id
             RETURNING c.id
         ),
         j AS (
             INSERT INTO deployment_journal (deployment_id, tick, epoch, worker, started_at,
                 finished_at, observation, actions, status_after)
             SELECT d.id, d.tick, d.epoch, d.worker, d.started_at, now(), d.observation,
                 d.actions, d.status::deployment_status
             FROM d WHERE d.worker IS NOT NULL
             RETURNING tick
         ),
         woke AS (
             UPDATE deployments q SET next_wake_at = now()
             FROM d
             WHERE slipway_is_terminal(d.status::deployment_status)
               AND q.id = queue_head(d.environment_id)
               AND NOT (q.id = ANY($1))
             RETURNING q.id
         ),
         note AS (SELECT pg_notify('slipway_wake', woke.id::text) FROM woke)
         SELECT d.n, d.tick, d.last_event_seq, d.woken, (SELECT count(*) FROM ev)
             + (SELECT count(*) FROM cmd) + (SELECT count(*) FROM j)
             + (SELECT count(*) FROM note) AS written
         FROM d"
    )
});

/// What [`write_steps`] left on a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepWritten {
    pub tick: i64,
    /// The `seq` of its newest event.
    pub last_event_seq: i64,
    /// With a held lease ([`StepWrite::hold`]): the deployment was woken while the step ran
    /// (a command came in), so the next step must read its pending commands first.
    pub woken: bool,
}

/// Loads a deployment to check a command against it (no lease needed to read).
pub async fn read(conn: &mut PgConnection, id: Uuid) -> Result<RolloutRecord, StoreError> {
    let sql = format!("{SELECT} WHERE d.id = $1");
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.ok_or(StoreError::NotFound("deployment"))?.try_into()
}

/// Marks a queued deployment finished without running (superseded or cancelled).
pub async fn finish_unstarted(
    conn: &mut PgConnection,
    claim: Claim,
    status: DeploymentStatus,
    outcome: slipway_core::Outcome,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE deployments SET status = $3::deployment_status, outcome = $4::deployment_outcome,
             updated_at = now()
         WHERE id = $1 AND epoch = $2 AND status = 'queued'",
    )
    .bind(claim.id)
    .bind(claim.epoch)
    .bind(status.as_str())
    .bind(outcome.as_str())
    .execute(conn)
    .await?;
    fenced(done.rows_affected())
}

/// Puts a failed or rolled-back deployment back in the queue as a new attempt.
pub async fn requeue(conn: &mut PgConnection, claim: Claim) -> Result<i32, StoreError> {
    let attempt: Option<i32> = sqlx::query_scalar(
        "UPDATE deployments SET status = 'queued', phase = NULL, step = NULL, outcome = NULL,
             failure_code = NULL, failure_message = NULL, waiting_reason = NULL,
             state = '{}'::jsonb, attempt = attempt + 1, updated_at = now()
         WHERE id = $1 AND epoch = $2 AND status IN ('failed', 'rolled_back')
         RETURNING attempt",
    )
    .bind(claim.id)
    .bind(claim.epoch)
    .fetch_optional(conn)
    .await?;
    attempt.ok_or(StoreError::LeaseLost)
}

/// Records why a deployment is waiting (e.g. `cluster_unreachable`) without changing its state.
pub async fn set_waiting(
    conn: &mut PgConnection,
    claim: Claim,
    code: &str,
    message: &str,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE deployments SET waiting_reason = $3, failure_code = CASE WHEN outcome IS NULL
             THEN $3 ELSE failure_code END,
             failure_message = CASE WHEN outcome IS NULL THEN $4 ELSE failure_message END,
             updated_at = now()
         WHERE id = $1 AND epoch = $2",
    )
    .bind(claim.id)
    .bind(claim.epoch)
    .bind(code)
    .bind(message)
    .execute(conn)
    .await?;
    fenced(done.rows_affected())
}

/// Makes the head of the environment's queue (`queue_head`, migration 80: the deployment that
/// goes next) due now and tells the engines. The others wait for their turn to come: each is
/// woken as the head when the deployment ahead of it has started and ended.
pub async fn wake_queued(conn: &mut PgConnection, environment_id: Uuid) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE deployments SET next_wake_at = now()
         WHERE id = queue_head($1) AND status = 'queued' RETURNING id",
    )
    .bind(environment_id)
    .fetch_all(&mut *conn)
    .await?;
    for id in ids {
        crate::wake::notify(conn, id).await?;
    }
    Ok(())
}

/// When a deployment is next due, for tests and diagnostics.
pub async fn next_wake_at(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT next_wake_at FROM deployments WHERE id = $1")
            .bind(id)
            .fetch_one(conn)
            .await?,
    )
}

/// Supersedes the environment's queued deployments older than `newest`. Their epochs are
/// bumped so that a worker holding one of them can no longer write to it.
pub async fn supersede_older(
    conn: &mut PgConnection,
    environment_id: Uuid,
    newest: Uuid,
) -> Result<Vec<Uuid>, StoreError> {
    let ids: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE deployments SET status = 'superseded', outcome = 'superseded',
             epoch = epoch + 1, lease_owner = NULL, lease_expires_at = NULL, next_wake_at = NULL,
             updated_at = now()
         WHERE environment_id = $1 AND status = 'queued' AND id < $2
         RETURNING id",
    )
    .bind(environment_id)
    .bind(newest)
    .fetch_all(&mut *conn)
    .await?;
    for id in &ids {
        crate::events::append(
            conn,
            *id,
            &crate::events::NewEvent {
                kind: slipway_core::EventKind::Superseded,
                actor: "slipway",
                message: format!("superseded by the newer deployment {newest}"),
                data: serde_json::json!({ "superseded_by": newest }),
            },
        )
        .await?;
    }
    Ok(ids)
}

/// Queue depth and the age of the oldest queued deployment (seconds), and how many are active.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    pub queued: i64,
    pub oldest_queued_age_seconds: f64,
    pub active: i64,
}

pub async fn queue_stats(conn: &mut PgConnection) -> Result<QueueStats, StoreError> {
    let (queued, age, active): (i64, Option<f64>, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status = 'queued'),
                extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued'))::float8,
                count(*) FILTER (WHERE slipway_is_active(status))
         FROM deployments WHERE slipway_is_live(status)",
    )
    .fetch_one(conn)
    .await?;
    Ok(QueueStats {
        queued,
        oldest_queued_age_seconds: age.unwrap_or(0.0),
        active,
    })
}

#[cfg(test)]
mod tests {
    use super::claim_batch;

    #[test]
    fn a_claim_takes_the_largest_power_of_two_it_may() {
        let got: Vec<i64> = [-3, 0, 1, 2, 3, 5, 8, 31, 1024, 5000]
            .into_iter()
            .map(claim_batch)
            .collect();
        assert_eq!(got, [1, 1, 1, 2, 2, 4, 8, 16, 1024, 1024]);
    }
}
