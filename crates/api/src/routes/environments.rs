//! `/v1/apps/{app}/environments`

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use slipway_core::{Environment, EnvironmentSpec, Role};
use slipway_engine::intake;
use slipway_store::{apps, environments};

use crate::extract::{IfMatch, JsonBody, Principal};
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
#[utoipa::path(put, path = "/v1/apps/{app}/environments/{env}", tag = "environments",
    params(("app" = String, Path, description = "App name"),
           ("env" = String, Path, description = "Environment name"),
           ("If-Match" = Option<String>, Header, description = "ETag the change is based on")),
    request_body = EnvironmentSpec,
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
    tx.commit().await?;
    if created {
        let mut response = with_etag(StatusCode::CREATED, env);
        if let Ok(location) = format!("/v1/apps/{app}/environments/{name}").parse() {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Ok(response)
    } else {
        Ok(with_etag(StatusCode::OK, env))
    }
}

/// List an app's environments by name.
#[utoipa::path(get, path = "/v1/apps/{app}/environments", tag = "environments",
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
    let found = environments::list(&mut conn, &app, after.as_deref(), limit).await?;
    Ok(Json(List::from_page(found, CursorKind::Name)))
}

/// Get an environment; its `ETag` guards updates.
#[utoipa::path(get, path = "/v1/apps/{app}/environments/{env}", tag = "environments",
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
