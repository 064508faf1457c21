//! `/v1/apps/{app}/role-bindings`: who holds which role in an app (admin of the app only).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use slipway_core::{NewRoleBinding, Role, RoleBinding};
use slipway_engine::IntakeError;
use slipway_store::{apps, role_bindings};
use uuid::Uuid;

use crate::auth::audit::AuditContext;
use crate::extract::{JsonBody, Principal, Query};
use crate::pagination::{CursorKind, List, PageParams};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Bind a role to a subject or a group in the app, or in one of its environments.
///
/// Roles: `viewer < deployer < approver < admin`. A caller's role in an environment is the
/// highest of their bindings for the app as a whole, for that environment, and those of their
/// groups.
#[utoipa::path(post, path = "/v1/apps/{app}/role-bindings", operation_id = "createRoleBinding", tag = "access",
    params(("app" = String, Path, description = "App name")),
    request_body(content = NewRoleBinding, example = json!({"subject": "bob", "role": "approver", "environment": "prod"})),
    responses(
        (status = 201, description = "Bound", body = RoleBinding, headers(("Location" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the app", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such app (or not visible to the caller)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same principal is already bound there", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Path(app): Path<String>,
    principal: Principal,
    audit: AuditContext,
    body: JsonBody<NewRoleBinding>,
) -> Result<Response, ApiError> {
    principal.require(&state, &app, None, Role::Admin).await?;
    let new = body.value;
    new.validate().map_err(IntakeError::from)?;
    let mut tx = state.pool.begin().await?;
    let app_id = apps::id_of(&mut tx, &app).await?;
    let binding = role_bindings::insert(&mut tx, app_id, &new, principal.subject()).await?;
    let audited = audit.commit(tx, StatusCode::CREATED).await?;
    let location = format!("/v1/apps/{app}/role-bindings/{}", binding.id);
    Ok((
        StatusCode::CREATED,
        audited,
        [(header::LOCATION, location)],
        Json(binding),
    )
        .into_response())
}

/// List the app's role bindings, oldest first.
#[utoipa::path(get, path = "/v1/apps/{app}/role-bindings", operation_id = "listRoleBindings", tag = "access",
    params(("app" = String, Path, description = "App name"), PageParams),
    responses(
        (status = 200, description = "A page of role bindings", body = List<RoleBinding>),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the app", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such app (or not visible to the caller)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(app): Path<String>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> Result<Json<List<RoleBinding>>, ApiError> {
    principal.require(&state, &app, None, Role::Admin).await?;
    let limit = page.limit()?;
    let after = page.after_parsed::<Uuid>(CursorKind::RoleBinding)?;
    let mut conn = state.pool.acquire().await?;
    apps::id_of(&mut conn, &app).await?;
    let found = role_bindings::list(&mut conn, &app, after, limit).await?;
    Ok(Json(List::from_page(found, CursorKind::RoleBinding)))
}

/// Remove a role binding.
#[utoipa::path(delete, path = "/v1/apps/{app}/role-bindings/{id}", operation_id = "deleteRoleBinding", tag = "access",
    params(("app" = String, Path, description = "App name"),
           ("id" = String, Path, description = "Role binding id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the app", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such app or binding", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    principal: Principal,
    audit: AuditContext,
) -> Result<Response, ApiError> {
    principal.require(&state, &app, None, Role::Admin).await?;
    let id: Uuid = id
        .parse()
        .map_err(|_| ApiError::not_found("role binding"))?;
    let mut tx = state.pool.begin().await?;
    role_bindings::delete(&mut tx, &app, id).await?;
    let audited = audit.commit(tx, StatusCode::NO_CONTENT).await?;
    Ok((audited, StatusCode::NO_CONTENT).into_response())
}
