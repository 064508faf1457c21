//! Who may see what: the bindings that name a caller in an app, a deployment's place (app,
//! environment, requester), and the clause that filters lists to what a caller may see.

use slipway_core::Role;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// An authenticated caller, as role bindings name them: a subject and its groups.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub subject: &'a str,
    pub groups: &'a [String],
}

/// The SQL condition "a binding of the caller covers environment `{env}` of app `{app}`",
/// with the subject as `${subject}` and the groups as `${groups}`; true for everyone when
/// the subject parameter is NULL (an unrestricted caller). Values are always bound.
pub(crate) fn visible_clause(
    app_id: &str,
    env_name: &str,
    subject: usize,
    groups: usize,
) -> String {
    format!(
        "(${subject}::text IS NULL OR EXISTS (
             SELECT 1 FROM role_bindings rb
             WHERE rb.app_id = {app_id}
               AND (rb.environment IS NULL OR rb.environment = {env_name})
               AND (rb.subject = ${subject} OR rb.group_name = ANY(${groups}::text[]))))"
    )
}

/// Like [`visible_clause`], for an app: any binding in it, whatever its environment.
pub(crate) fn app_visible_clause(app_id: &str, subject: usize, groups: usize) -> String {
    format!(
        "(${subject}::text IS NULL OR EXISTS (
             SELECT 1 FROM role_bindings rb
             WHERE rb.app_id = {app_id}
               AND (rb.subject = ${subject} OR rb.group_name = ANY(${groups}::text[]))))"
    )
}

/// The bind values of a visibility clause: NULL and an empty list for an unrestricted caller.
pub(crate) fn binds<'a>(member: Option<&Member<'a>>) -> (Option<&'a str>, Vec<&'a str>) {
    match member {
        None => (None, Vec::new()),
        Some(m) => (
            Some(m.subject),
            m.groups.iter().map(String::as_str).collect(),
        ),
    }
}

/// The bindings of `member` in the app `app`: each role and the environment it is limited
/// to. Empty when there are none, or when the app does not exist.
#[tracing::instrument(skip_all, fields(app))]
pub async fn bindings_in_app(
    conn: &mut PgConnection,
    app: &str,
    member: &Member<'_>,
) -> Result<Vec<(Role, Option<String>)>, StoreError> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT rb.role, rb.environment FROM role_bindings rb JOIN apps a ON a.id = rb.app_id
         WHERE a.name = $1 AND (rb.subject = $2 OR rb.group_name = ANY($3::text[]))",
    )
    .bind(app)
    .bind(member.subject)
    .bind(member.groups)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(role, env)| {
            role.parse::<Role>()
                .map(|r| (r, env))
                .map_err(StoreError::Corrupt)
        })
        .collect()
}

/// Where a deployment is and who asked for it, for authorizing reads of it and commands.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeploymentPlace {
    pub app: String,
    pub environment: String,
    pub created_by: String,
    /// Who the distinct-approver rule takes as the requester: the human a webhook delivery
    /// names as its actor (its `created_by` is the webhook principal), else `created_by`.
    pub requester: String,
    /// The frozen approval policy says the approver must not be the requester.
    pub distinct_approver: bool,
}

#[tracing::instrument(skip_all, fields(deployment = %id))]
pub async fn deployment_place(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<DeploymentPlace, StoreError> {
    let place: Option<DeploymentPlace> = sqlx::query_as(
        "SELECT a.name AS app, e.name AS environment, d.created_by,
                coalesce(w.actor, d.created_by) AS requester,
                coalesce((d.rollout -> 'approval' ->> 'distinct_approver')::boolean, false)
                    AS distinct_approver
         FROM deployments d
         JOIN environments e ON e.id = d.environment_id
         JOIN apps a ON a.id = e.app_id
         LEFT JOIN webhook_deployments w ON w.deployment_id = d.id
         WHERE d.id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?;
    place.ok_or(StoreError::NotFound("deployment"))
}
