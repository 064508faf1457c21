//! Intake: turning validated API requests into stored records, one use case per function.
//! Each takes the caller's transaction, so the caller can commit it together with the
//! idempotency key that describes it.

use serde_json::json;
use slipway_core::DeploymentStatus;
use slipway_core::rollout::{self, CommandKind, Release, RolloutSpec};
use slipway_core::{
    App, AppPatch, Cluster, ClusterSpec, Deployment, DeploymentRequest, Environment,
    EnvironmentSpec, NewApp, ValidationError,
};
use slipway_store::deployments::Requester;
use slipway_store::events::NewEvent;
use slipway_store::{
    PgConnection, Revisioned, StoreError, apps, clusters, commands, deployments, environments,
    events, rollouts,
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

impl From<StoreError> for IntakeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => Self::NotFound(what),
            StoreError::Constraint { constraint } => match constraint.as_str() {
                "clusters_name_key" => Self::AlreadyExists("cluster"),
                "apps_name_key" => Self::AlreadyExists("app"),
                "environments_app_name_key" => Self::AlreadyExists("environment"),
                "role_bindings_unique" => Self::AlreadyExists("role binding"),
                _ => Self::Store(StoreError::Constraint { constraint }),
            },
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
    let cluster_id = match clusters::id_of(conn, &spec.cluster).await {
        Ok(id) => id,
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
    let created = match existing {
        Some(env) => {
            environments::replace(conn, env.id, cluster_id, spec).await?;
            false
        }
        None => {
            environments::insert(conn, app_id, name, cluster_id, spec).await?;
            true
        }
    };
    Ok((environments::get(conn, app, name).await?, created))
}

/// Records a deployment request as `queued`, with its first event.
pub async fn record_deployment(
    conn: &mut PgConnection,
    app: &str,
    environment: &str,
    request: DeploymentRequest,
    by: &Requester<'_>,
) -> Result<Deployment, IntakeError> {
    let env = environments::find(conn, app, environment).await?;
    let plan = request.plan(&env.spec)?;
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
    let id = deployments::insert_queued(conn, &env, &plan, &rollout, by).await?;
    let event = NewEvent {
        kind: "queued",
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
            "source": plan.source.kind.as_str(),
        }),
    };
    events::append(conn, id, &event).await?;
    Ok(deployments::get(conn, id).await?)
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
            rollout::accepts(&record.spec, state, kind, actor, &record.created_by)
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
