//! Intake: turning validated API requests into stored records, one use case per function.
//! Most take the caller's connection or transaction, so the caller can commit the write
//! together with the idempotency key and audit row that describe it. The API's deployment
//! create, [`request_deployment`], is the exception: it takes the pool and writes the
//! deployment, its first event, its key's response and its audit row itself, in the common
//! case by one autocommit statement shared with the other creates of the moment
//! (`create_batch`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use serde_json::json;
use slipway_core::rollout::{self, CommandKind, Release, RolloutSpec};
use slipway_core::{
    App, AppPatch, Channel, Cluster, ClusterSpec, Deployment, DeploymentRequest, Environment,
    EnvironmentSpec, NamespaceAllowlist, NewApp, PlanError, ValidationError,
};
use slipway_core::{DeploymentStatus, EventKind, Serving, ServingHealth};
use slipway_store::audit::NewAuditEntry;
use slipway_store::deployments::{KeyedResponse, NewDeployment, RecordRow, Recorded, Requester};
use slipway_store::environments::EnvironmentRef;
use slipway_store::events::NewEvent;
use slipway_store::idempotency::{self, KeyRef, RawResponse, Taken};

use crate::create_batch::CreateBatcher;
use crate::notify::Notifier;
use slipway_store::{
    PgConnection, PgPool, Revisioned, StoreError, apps, clusters, commands, deployments,
    environments, rollouts,
};

/// An `If-Match` condition on a stored revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// `If-Match: *`: the entity must exist.
    Exists,
    /// The entity must be at exactly this revision.
    Revision(i64),
    /// A tag that can never match (not one of ours).
    Unmatchable,
}

impl Precondition {
    fn check(self, current: Option<i64>) -> Result<(), IntakeError> {
        let ok = match (self, current) {
            (Self::None, _) => true,
            (Self::Exists, found) => found.is_some(),
            (Self::Revision(want), Some(found)) => want == found,
            (Self::Revision(_) | Self::Unmatchable, _) => false,
        };
        if ok {
            Ok(())
        } else {
            Err(IntakeError::PreconditionFailed)
        }
    }
}

/// Why a request was not taken.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The request asks for what the environment does not allow; names the field.
    #[error("not allowed: {0}")]
    Forbidden(ValidationError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    #[error("the If-Match condition does not hold")]
    PreconditionFailed,
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<PlanError> for IntakeError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Invalid(v) => Self::Invalid(v),
            PlanError::NotAllowed(v) => Self::Forbidden(v),
        }
    }
}

impl From<StoreError> for IntakeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::AlreadyExists(what) => Self::AlreadyExists(what),
            StoreError::Conflict(msg) => Self::Conflict(msg),
            other => Self::Store(other),
        }
    }
}

/// Registers a cluster.
pub async fn register_cluster(
    conn: &mut PgConnection,
    spec: &ClusterSpec,
) -> Result<Cluster, IntakeError> {
    spec.validate()?;
    Ok(clusters::insert(conn, spec).await?)
}

/// Sets which namespaces each app may use on the cluster `name` (for environments put from
/// now on; existing ones are not re-checked).
pub async fn set_cluster_namespaces(
    conn: &mut PgConnection,
    name: &str,
    list: &NamespaceAllowlist,
) -> Result<NamespaceAllowlist, IntakeError> {
    list.validate()?;
    clusters::set_namespaces(conn, name, list).await?;
    Ok(list.clone())
}

/// Creates an app.
pub async fn create_app(
    conn: &mut PgConnection,
    new: &NewApp,
) -> Result<Revisioned<App>, IntakeError> {
    new.validate()?;
    Ok(apps::insert(conn, &new.name, &new.description).await?)
}

/// Changes an app's mutable fields under an `If-Match` condition.
pub async fn update_app(
    conn: &mut PgConnection,
    name: &str,
    patch: &AppPatch,
    condition: Precondition,
) -> Result<Revisioned<App>, IntakeError> {
    patch.validate()?;
    let (id, _) = locked_app(conn, name, condition).await?;
    match &patch.description {
        Some(d) => Ok(apps::set_description(conn, id, d).await?),
        None => Ok(apps::get(conn, name).await?),
    }
}

/// Deletes an app and its environments. Refused while any of its deployments is unfinished:
/// nothing accepted may be dropped on the floor.
pub async fn delete_app(
    conn: &mut PgConnection,
    name: &str,
    condition: Precondition,
) -> Result<(), IntakeError> {
    let (id, _) = locked_app(conn, name, condition).await?;
    let unfinished = apps::unfinished_deployments(conn, id).await?;
    if unfinished > 0 {
        return Err(IntakeError::Conflict(format!(
            "app {name:?} has {unfinished} unfinished deployment(s); wait for them or cancel them first"
        )));
    }
    Ok(apps::delete(conn, id).await?)
}

async fn locked_app(
    conn: &mut PgConnection,
    name: &str,
    condition: Precondition,
) -> Result<(uuid::Uuid, i64), IntakeError> {
    match apps::lock(conn, name).await {
        Ok((id, revision)) => {
            condition.check(Some(revision))?;
            Ok((id, revision))
        }
        Err(StoreError::NotFound(what)) => {
            condition.check(None)?;
            Err(IntakeError::NotFound(what))
        }
        Err(e) => Err(e.into()),
    }
}

/// Creates or replaces an environment; says whether it was created.
pub async fn put_environment(
    conn: &mut PgConnection,
    app: &str,
    name: &str,
    spec: &EnvironmentSpec,
    condition: Precondition,
) -> Result<(Revisioned<Environment>, bool), IntakeError> {
    let mut violations = slipway_core::Violations::new();
    slipway_core::names::check_name(&mut violations, "/name", name);
    if !violations.is_empty() {
        // The environment's name is in the path: an invalid one cannot exist.
        return Err(IntakeError::NotFound("environment"));
    }
    spec.validate()?;
    let (app_id, _) = apps::lock(conn, app).await?;
    let cluster_id = match clusters::placement(conn, &spec.cluster, app, &spec.namespace).await {
        Ok((id, true)) => id,
        Ok((_, false)) => {
            return Err(ValidationError::single(
                "/namespace",
                format!(
                    "app {app:?} may not use namespace {:?} on cluster {:?} (its namespace allowlist)",
                    spec.namespace, spec.cluster
                ),
            )
            .into());
        }
        Err(StoreError::NotFound(_)) => {
            return Err(ValidationError::single(
                "/cluster",
                format!("no cluster named {:?} is registered", spec.cluster),
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    let existing = environments::lock(conn, app_id, name).await?;
    condition.check(existing.as_ref().map(|e| e.revision))?;
    let written = match existing {
        Some(env) => environments::replace(conn, env.id, cluster_id, spec)
            .await
            .map(|()| false),
        None => environments::insert(conn, app_id, name, cluster_id, spec)
            .await
            .map(|()| true),
    };
    let created = match written {
        Ok(created) => created,
        // One workload belongs to one environment. Which environment holds it is not said:
        // it may be another app's.
        Err(StoreError::WorkloadTaken) => {
            return Err(ValidationError::single(
                "/workload/name",
                format!(
                    "workload {:?} in namespace {:?} on cluster {:?} belongs to another environment",
                    spec.workload.name, spec.namespace, spec.cluster
                ),
            )
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    Ok((environments::get(conn, app, name).await?, created))
}

/// Records a deployment request that came in by `channel` as `queued`, with its first
/// event, in the caller's transaction (which keeps the environment share-locked until it
/// ends).
pub async fn record_deployment(
    conn: &mut PgConnection,
    app: &str,
    environment: &str,
    request: DeploymentRequest,
    channel: Channel,
    by: &Requester<'_>,
) -> Result<Deployment, IntakeError> {
    let env = environments::find(conn, app, environment).await?;
    let draft = Draft::new(app, environment, request, channel, &env, by)?;
    // In the caller's transaction: the hints go out when it commits.
    match deployments::record(conn, draft.as_new(&env, by, true, None), None).await? {
        Recorded::Recorded => Ok(draft.deployment),
        // The environment is locked by `find` for this transaction: it cannot have changed.
        other => Err(IntakeError::Conflict(format!(
            "the environment changed while the deployment was recorded ({other:?}); retry"
        ))),
    }
}

/// What a deployment request with its key came to.
#[derive(Debug)]
pub enum Requested {
    /// Recorded now; the response stored under the key (if any) is the one given.
    Created(Box<Deployment>, RawResponse),
    /// The key's earlier request was recorded: its stored response.
    Replay(RawResponse),
    /// The key was used with another request body.
    KeyReused,
    /// The key stayed taken by requests that never finished; the caller may retry.
    KeyInFlight,
}

/// How often a request re-plans after finding its environment changed, or re-reads a key
/// that vanished under it, before giving up.
const ATTEMPTS: usize = 4;

/// Records a deployment request of the API ([`Channel::Api`]) in one round trip in the common case (the environment known,
/// the key new): the plan is made from the cached environment, the deployment, its first
/// event and the key's stored response (`respond`, built here before the write) are written
/// by one autocommit statement that checks the environment is still the planned one, shared
/// with the other creates waiting at the time (`creates`, group commit; no connection is held
/// while waiting for it). The engines' and event streams' hints are sent by `notifier` once
/// it has committed.
///
/// A key already used answers its stored response (`Replay`) or `KeyReused`; a concurrent
/// request with the same key waits for the first to finish (one statement) and then replays
/// it. A request refused by the cached environment (invalid, not allowed) is planned again
/// from the stored one before it is answered: a cache entry never refuses what the
/// environment now allows. A request that fails (no such environment, invalid) is checked
/// against its key first, so a replay is answered even if it would no longer be valid;
/// failures store nothing.
/// `audit`, when given, is appended in the same statement as the deployment (only when the
/// deployment is recorded: the caller audits replays and failures itself).
#[expect(clippy::too_many_arguments, reason = "one request's whole context")]
pub async fn request_deployment(
    pool: &PgPool,
    creates: &CreateBatcher,
    cache: &EnvironmentCache,
    notifier: &Notifier,
    app: &str,
    environment: &str,
    request: DeploymentRequest,
    by: &Requester<'_>,
    key: Option<&KeyRef<'_>>,
    ttl: Duration,
    audit: Option<&NewAuditEntry<'_>>,
    respond: impl Fn(&Deployment) -> Result<RawResponse, IntakeError>,
) -> Result<Requested, IntakeError> {
    let mut request = Some(request);
    for attempt in 1..=ATTEMPTS {
        let (env, cached) = match cache.get(app, environment) {
            Some(env) => (env, true),
            None => {
                let mut conn = pool.acquire().await.map_err(StoreError::from)?;
                match environments::find(&mut conn, app, environment).await {
                    Ok(env) => (cache.put(app, environment, env), false),
                    Err(e) => return settle_failure(&mut conn, key, e.into()).await,
                }
            }
        };
        let this = if attempt == ATTEMPTS {
            request.take()
        } else {
            request.clone()
        };
        let Some(this) = this else { break };
        let draft = match Draft::new(app, environment, this, Channel::Api, &env, by) {
            Ok(d) => d,
            // Refused by the environment as this process last read it: it may have changed
            // since (an override allowed, the workload resized), so ask the stored one.
            Err(_) if cached && attempt < ATTEMPTS => {
                cache.forget(app, environment);
                continue;
            }
            Err(e) => {
                return settle_failure(
                    &mut *pool.acquire().await.map_err(StoreError::from)?,
                    key,
                    e,
                )
                .await;
            }
        };
        let response = respond(&draft.deployment)?;
        let keyed = key.map(|key| KeyedResponse {
            key,
            response: &response,
            ttl,
        });
        let row = RecordRow::new(draft.as_new(&env, by, false, audit), keyed)?;
        match creates.record(row).await? {
            Recorded::Recorded => {
                notifier.wake(draft.deployment.id);
                notifier.events(draft.deployment.id, 1);
                return Ok(Requested::Created(Box::new(draft.deployment), response));
            }
            Recorded::EnvironmentMissing => {
                cache.forget(app, environment);
                let mut conn = pool.acquire().await.map_err(StoreError::from)?;
                return settle_failure(&mut conn, key, IntakeError::NotFound("environment")).await;
            }
            Recorded::EnvironmentChanged => cache.forget(app, environment),
            Recorded::KeyTaken => {
                let Some(key) = key else { break };
                let mut conn = pool.acquire().await.map_err(StoreError::from)?;
                match idempotency::taken(&mut conn, key).await? {
                    Taken::Replay(stored) => return Ok(Requested::Replay(stored)),
                    Taken::Mismatch => return Ok(Requested::KeyReused),
                    Taken::Vacant => {}
                }
            }
        }
    }
    match key {
        Some(_) => Ok(Requested::KeyInFlight),
        None => Err(IntakeError::Conflict(
            "the environment kept changing while the deployment was recorded; retry".into(),
        )),
    }
}

/// A request that failed is answered from its key when the key holds an earlier success.
async fn settle_failure(
    conn: &mut PgConnection,
    key: Option<&KeyRef<'_>>,
    error: IntakeError,
) -> Result<Requested, IntakeError> {
    let Some(key) = key else { return Err(error) };
    match idempotency::taken(conn, key).await? {
        Taken::Replay(stored) => Ok(Requested::Replay(stored)),
        Taken::Mismatch => Ok(Requested::KeyReused),
        Taken::Vacant => Err(error),
    }
}

/// A planned deployment before it is written: the response is built from it.
struct Draft<'a> {
    deployment: Deployment,
    rollout: RolloutSpec,
    event: NewEvent<'a>,
}

impl<'a> Draft<'a> {
    fn new(
        app: &str,
        environment: &str,
        request: DeploymentRequest,
        channel: Channel,
        env: &EnvironmentRef,
        by: &Requester<'a>,
    ) -> Result<Self, IntakeError> {
        let plan = request.plan(&env.spec, channel)?;
        let rollout = RolloutSpec {
            namespace: env.spec.namespace.clone(),
            workload: env.spec.workload.clone(),
            strategy: plan.strategy.clone(),
            progress_deadline: env.spec.progress_deadline,
            approval: env.spec.approval.clone(),
            release: Release {
                image: plan.image.clone(),
                version: plan.version.clone(),
                pod_labels: env.spec.workload.pod_labels.clone(),
            },
        };
        let event = NewEvent {
            kind: EventKind::Queued,
            actor: by.principal,
            message: format!(
                "{} strategy deployment of {} ({}) to {app}/{environment} queued",
                plan.strategy.kind(),
                plan.image,
                plan.version
            ),
            data: json!({
                "image": plan.image,
                "version": plan.version,
                "strategy": plan.strategy.kind(),
                "strategy_overridden": plan.strategy_overridden,
                "source": plan.source.kind.as_str(),
            }),
        };
        // PostgreSQL keeps microseconds: the answer shows what a later read returns.
        let now = Utc::now().trunc_subsecs(6);
        let deployment = Deployment {
            id: uuid::Uuid::now_v7(),
            app: app.to_owned(),
            environment: environment.to_owned(),
            image: plan.image,
            version: plan.version,
            strategy: plan.strategy,
            strategy_overridden: plan.strategy_overridden,
            status: DeploymentStatus::Queued,
            phase: None,
            step: None,
            outcome: None,
            serving: Serving {
                health: ServingHealth::Unknown,
                version: None,
            },
            reason: None,
            request_reason: plan.reason,
            source: plan.source,
            created_by: by.principal.to_owned(),
            created_at: now,
            updated_at: now,
        };
        Ok(Self {
            deployment,
            rollout,
            event,
        })
    }

    fn as_new<'b>(
        &'b self,
        env: &'b EnvironmentRef,
        by: &'b Requester<'b>,
        notify: bool,
        audit: Option<&'b NewAuditEntry<'b>>,
    ) -> NewDeployment<'b> {
        NewDeployment {
            deployment: &self.deployment,
            environment: env,
            rollout: &self.rollout,
            by,
            event: &self.event,
            notify,
            audit,
        }
    }
}

/// Environments by app and name as last read, so that a deployment is planned without a
/// query; [`deployments::record`] refuses to write when the stored one has moved on (another
/// id or revision), and the entry is then read again. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct EnvironmentCache {
    entries: Arc<Mutex<ByApp>>,
}

/// Environments by app name, then by environment name.
type ByApp = HashMap<String, HashMap<String, Arc<EnvironmentRef>>>;

/// Entries kept at most; past it the cache starts over (entries of deleted environments are
/// only dropped then, or when a request finds them gone).
const CACHE_LIMIT: usize = 10_000;

impl EnvironmentCache {
    fn get(&self, app: &str, environment: &str) -> Option<Arc<EnvironmentRef>> {
        let entries = self.entries.lock().ok()?;
        entries.get(app)?.get(environment).cloned()
    }

    fn put(&self, app: &str, environment: &str, env: EnvironmentRef) -> Arc<EnvironmentRef> {
        let env = Arc::new(env);
        if let Ok(mut entries) = self.entries.lock() {
            if entries.values().map(HashMap::len).sum::<usize>() >= CACHE_LIMIT {
                entries.clear();
            }
            entries
                .entry(app.to_owned())
                .or_default()
                .insert(environment.to_owned(), env.clone());
        }
        env
    }

    fn forget(&self, app: &str, environment: &str) {
        if let Ok(mut entries) = self.entries.lock()
            && let Some(envs) = entries.get_mut(app)
        {
            envs.remove(environment);
        }
    }
}

/// Records a command for a deployment, after checking that it makes sense in the deployment's
/// current state (`IntakeError::Conflict` names the state when it does not).
pub async fn command(
    conn: &mut PgConnection,
    deployment_id: uuid::Uuid,
    kind: CommandKind,
    actor: &str,
    reason: Option<&str>,
    idempotency_key: Option<&str>,
) -> Result<(uuid::Uuid, Deployment), IntakeError> {
    let record = rollouts::read(conn, deployment_id).await?;
    match (&record.state, record.status) {
        (_, DeploymentStatus::Queued) => {
            // Not started: it can only be called off.
            if kind != CommandKind::Abort {
                return Err(IntakeError::Conflict(format!(
                    "cannot {} a deployment that is queued; only abort applies",
                    kind.as_str()
                )));
            }
        }
        (Some(state), _) => {
            // The requester as the distinct-approver rule knows it (a webhook delivery's
            // human actor, not the webhook principal): the one the API authorized against.
            let requester = slipway_store::access::deployment_place(conn, deployment_id)
                .await?
                .requester;
            rollout::accepts(&record.spec, state, kind, actor, &requester)
                .map_err(|rejected| IntakeError::Conflict(rejected.to_string()))?;
        }
        (None, status) => {
            return Err(IntakeError::Conflict(format!(
                "cannot {} a deployment that is {} (it never started)",
                kind.as_str(),
                status.as_str()
            )));
        }
    }
    let id = commands::insert(conn, deployment_id, kind, actor, reason, idempotency_key).await?;
    Ok((id, deployments::get(conn, deployment_id).await?))
}
