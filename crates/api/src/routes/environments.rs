//! `/v1/apps/{app}/environments`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use slipway_core::{Environment, EnvironmentSpec, Role};
use slipway_engine::intake;
use slipway_store::{apps, environments};

use crate::auth::audit::AuditContext;
use crate::extract::{IfMatch, JsonBody, Principal, Query};
use crate::pagination::{CursorKind, List, PageParams};
use crate::problem::{ApiError, Problem};
use crate::routes::apps::with_etag;
use crate::state::AppState;

/// Create or replace an environment (`If-Match` optional; `*` requires that it exists).
///
/// Needs `admin` in the environment; `adopt: true` needs `admin` of the whole app. One
/// workload (cluster, namespace, name) belongs to one environment (422 on `/workload/name`),
/// and a cluster with a namespace allowlist takes only the namespaces it lists for the app
/// (422 on `/namespace`).
#[utoipa::path(put, path = "/v1/apps/{app}/environments/{env}", operation_id = "putEnvironment", tag = "environments",
    params(("app" = String, Path, description = "App name"),
           ("env" = String, Path, description = "Environment name"),
           IfMatch),
    request_body(content = EnvironmentSpec, example = json!({
        "cluster": "prod-eu", "namespace": "web",
        "workload": {"name": "web", "container": "web", "replicas": 4, "port": 8080},
        "strategy": {"type": "canary",
                     "steps": [{"set_weight": 10}, {"pause": {"duration": "5m"}}, {"set_weight": 50}, {"pause": {}}],
                     "traffic": {"router": "replicas"}},
        "progress_deadline": "10m",
        "approval": {"required": true, "distinct_approver": true},
        "supersede_queued": true})),
    responses(
        (status = 200, description = "Replaced", body = Environment, headers(("ETag" = String))),
        (status = 201, description = "Created", body = Environment, headers(("ETag" = String), ("Location" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin here (or `adopt: true` without admin of the app)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such app", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (each named by JSON pointer)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn put(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    principal: Principal,
    audit: AuditContext,
    IfMatch(condition): IfMatch,
    body: JsonBody<EnvironmentSpec>,
) -> Result<Response, ApiError> {
    principal
        .require(&state, &app, Some(&name), Role::Admin)
        .await?;
    if body.value.adopt {
        // Adopting objects Slipway does not manage is the app's decision, not one
        // environment's.
        principal.require(&state, &app, None, Role::Admin).await?;
    }
    let mut tx = state.pool.begin().await?;
    let (env, created) =
        intake::put_environment(&mut tx, &app, &name, &body.value, condition).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let audited = audit.commit(tx, status).await?;
    let mut response = with_etag(status, env);
    if created && let Ok(location) = format!("/v1/apps/{app}/environments/{name}").parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok((audited, response).into_response())
}

/// List an app's environments by name.
///
/// Only those the caller may read are listed: a binding limited to other environments of
/// the app does not show this one.
#[utoipa::path(get, path = "/v1/apps/{app}/environments", operation_id = "listEnvironments", tag = "environments",
    params(("app" = String, Path, description = "App name"), PageParams),
    responses(
        (status = 200, description = "A page of environments", body = List<Environment>),
        (status = 404, description = "No such app", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(app): Path<String>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> Result<Json<List<Environment>>, ApiError> {
    principal.require(&state, &app, None, Role::Viewer).await?;
    let limit = page.limit()?;
    let after = page.after(CursorKind::Name)?;
    let mut conn = state.pool.acquire().await?;
    apps::id_of(&mut conn, &app).await?;
    let found = environments::list(
        &mut conn,
        &app,
        after.as_deref(),
        limit,
        principal.visible_to().as_ref(),
    )
    .await?;
    Ok(Json(List::from_page(found, CursorKind::Name)))
}

/// Get an environment; its `ETag` guards updates.
#[utoipa::path(get, path = "/v1/apps/{app}/environments/{env}", operation_id = "getEnvironment", tag = "environments",
    params(("app" = String, Path, description = "App name"),
           ("env" = String, Path, description = "Environment name")),
    responses(
        (status = 200, description = "The environment", body = Environment, headers(("ETag" = String))),
        (status = 404, description = "No such app or environment", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path((app, name)): Path<(String, String)>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal
        .require(&state, &app, Some(&name), Role::Viewer)
        .await?;
    let mut conn = state.pool.acquire().await?;
    let env = environments::get(&mut conn, &app, &name).await?;
    Ok(with_etag(StatusCode::OK, env).into_response())
}
