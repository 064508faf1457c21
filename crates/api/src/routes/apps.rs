//! `/v1/apps`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use slipway_core::{App, AppPatch, NewApp, Role};
use slipway_engine::intake;
use slipway_store::{Revisioned, apps};

use crate::auth::audit::AuditContext;
use crate::extract::{IdempotencyKey, IfMatch, JsonBody, Principal, Query, etag};
use crate::idempotency::{self, KeyedRequest, Written};
use crate::pagination::{CursorKind, List, PageParams};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// Create an app.
#[utoipa::path(post, path = "/v1/apps", operation_id = "createApp", tag = "apps",
    params(IdempotencyKey),
    request_body(content = NewApp, example = json!({"name": "web", "description": "storefront"})),
    responses(
        (status = 201, description = "Created", body = App, headers(("Location" = String), ("ETag" = String))),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken, or the same Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    audit: AuditContext,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewApp>,
) -> Result<Response, ApiError> {
    principal.require_admin()?;
    let request = KeyedRequest {
        key: key.as_deref(),
        scope: format!("{principal} POST /v1/apps"),
        digest: &body.digest,
        audit: &audit,
    };
    let new = body.value;
    let mut response = idempotency::run(&state, request, move |conn| {
        Box::pin(async move {
            let app = intake::create_app(conn, &new).await?;
            let location = format!("/v1/apps/{}", app.value.name);
            Written::created(&app.value, location)
        })
    })
    .await?;
    // A new app is always at its first revision, replayed or not.
    response.headers_mut().insert(header::ETAG, etag(1));
    Ok(response)
}

/// List apps by name.
#[utoipa::path(get, path = "/v1/apps", operation_id = "listApps", tag = "apps",
    params(PageParams),
    responses(
        (status = 200, description = "A page of apps", body = List<App>),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> Result<Json<List<App>>, ApiError> {
    let limit = page.limit()?;
    let after = page.after(CursorKind::Name)?;
    let mut conn = state.pool.acquire().await?;
    let found = apps::list(
        &mut conn,
        after.as_deref(),
        limit,
        principal.visible_to().as_ref(),
    )
    .await?;
    Ok(Json(List::from_page(found, CursorKind::Name)))
}

/// Get an app; its `ETag` guards updates.
#[utoipa::path(get, path = "/v1/apps/{app}", operation_id = "getApp", tag = "apps",
    params(("app" = String, Path, description = "App name")),
    responses(
        (status = 200, description = "The app", body = App, headers(("ETag" = String))),
        (status = 404, description = "No such app", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(name): Path<String>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(&state, &name, None, Role::Viewer).await?;
    let mut conn = state.pool.acquire().await?;
    Ok(with_etag(
        StatusCode::OK,
        apps::get(&mut conn, &name).await?,
    ))
}

/// Change an app's description (`If-Match` optional).
#[utoipa::path(patch, path = "/v1/apps/{app}", operation_id = "updateApp", tag = "apps",
    params(("app" = String, Path, description = "App name"),
           IfMatch),
    request_body(content = AppPatch, example = json!({"description": "storefront (EU)"})),
    responses(
        (status = 200, description = "Changed", body = App, headers(("ETag" = String))),
        (status = 400, description = "Malformed JSON", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such app", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    principal: Principal,
    audit: AuditContext,
    IfMatch(condition): IfMatch,
    body: JsonBody<AppPatch>,
) -> Result<Response, ApiError> {
    principal.require(&state, &name, None, Role::Admin).await?;
    let mut tx = state.pool.begin().await?;
    let app = intake::update_app(&mut tx, &name, &body.value, condition).await?;
    let audited = audit.commit(tx, StatusCode::OK).await?;
    Ok((audited, with_etag(StatusCode::OK, app)).into_response())
}

/// Delete an app with its environments (refused while a deployment of it is unfinished).
#[utoipa::path(delete, path = "/v1/apps/{app}", operation_id = "deleteApp", tag = "apps",
    params(("app" = String, Path, description = "App name"),
           IfMatch),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The app has unfinished deployments", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not match", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    principal: Principal,
    audit: AuditContext,
    IfMatch(condition): IfMatch,
) -> Result<Response, ApiError> {
    principal.require(&state, &name, None, Role::Admin).await?;
    let mut tx = state.pool.begin().await?;
    intake::delete_app(&mut tx, &name, condition).await?;
    let audited = audit.commit(tx, StatusCode::NO_CONTENT).await?;
    Ok((audited, StatusCode::NO_CONTENT).into_response())
}

pub(crate) fn with_etag<T: serde::Serialize>(
    status: StatusCode,
    entity: Revisioned<T>,
) -> Response {
    (
        status,
        [(header::ETAG, etag(entity.revision))],
        Json(entity.value),
    )
        .into_response()
}
