//! `/v1/apps/{app}/triggers`: which CI event deploys what where. Secrets are write-only.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use slipway_core::{NewTrigger, Role, Trigger};
use slipway_engine::webhooks;
use slipway_store::{apps, triggers};
use uuid::Uuid;

use crate::auth::audit::AuditContext;
use crate::extract::{IdempotencyKey, JsonBody, Principal, Query};
use crate::idempotency::{self, KeyedRequest, Written};
use crate::pagination::{CursorKind, List, PageParams};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

fn trigger_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("trigger"))
}

/// The request hash of a body with a write-only field (the secret): keyed by the secrets key,
/// so the hash stored with an idempotency key cannot be tested against guessed secrets
/// offline, while the same body still replays and another secret under the same key is still
/// refused. Without a key no trigger is created, so no hash of one is ever stored.
fn write_only_digest(
    key: Option<&slipway_engine::secrets::SecretsKey>,
    digest: &[u8; 32],
) -> [u8; 32] {
    key.map_or(*digest, |k| {
        k.keyed_digest("idempotency request hash", digest)
    })
}

/// Create a trigger. Its `secret` is sealed at rest and never returned.
#[utoipa::path(post, path = "/v1/apps/{app}/triggers", operation_id = "createTrigger", tag = "triggers",
    params(("app" = String, Path, description = "App name"),
           IdempotencyKey),
    request_body(content = NewTrigger, example = json!({
        "source": "github", "event": "push", "repository": "acme/web", "branch": "main",
        "image": "ghcr.io/acme/web:${sha}", "environment": "prod",
        "secret": "a-webhook-secret-of-16-or-more"})),
    responses(
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the app", body = Problem, content_type = "application/problem+json"),
        (status = 201, description = "Created", body = Trigger, headers(("Location" = String))),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such app (or not visible to the caller)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No secrets key is configured, the app has the most triggers it may have, or the same Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Path(app): Path<String>,
    principal: Principal,
    audit: AuditContext,
    IdempotencyKey(key): IdempotencyKey,
    body: JsonBody<NewTrigger>,
) -> Result<Response, ApiError> {
    principal.require(&state, &app, None, Role::Admin).await?;
    let secrets = state.settings.secrets_key.clone();
    let digest = write_only_digest(secrets.as_ref(), &body.digest);
    let request = KeyedRequest {
        key: key.as_deref(),
        scope: format!("{principal} POST /v1/apps/{app}/triggers"),
        digest: &digest,
        audit: &audit,
    };
    let new = body.value;
    let subject = principal.subject().to_owned();
    idempotency::run(&state, request, move |conn| {
        Box::pin(async move {
            let trigger =
                webhooks::create_trigger(conn, &app, new, secrets.as_ref(), &subject).await?;
            let location = format!("/v1/apps/{app}/triggers/{}", trigger.id);
            Written::created(&trigger, location)
        })
    })
    .await
}

/// List an app's triggers, oldest first.
#[utoipa::path(get, path = "/v1/apps/{app}/triggers", operation_id = "listTriggers", tag = "triggers",
    params(("app" = String, Path, description = "App name"), PageParams),
    responses(
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the app", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "A page of triggers", body = List<Trigger>),
        (status = 404, description = "No such app (or not visible to the caller)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(app): Path<String>,
    principal: Principal,
    Query(page): Query<PageParams>,
) -> Result<Json<List<Trigger>>, ApiError> {
    principal.require(&state, &app, None, Role::Admin).await?;
    let limit = page.limit()?;
    let after = page.after_parsed::<Uuid>(CursorKind::Trigger)?;
    let mut conn = state.pool.acquire().await?;
    apps::id_of(&mut conn, &app).await?;
    let found = triggers::list(&mut conn, &app, after, limit).await?;
    Ok(Json(List::from_page(found, CursorKind::Trigger)))
}

/// Get a trigger (without its secret).
#[utoipa::path(get, path = "/v1/apps/{app}/triggers/{id}", operation_id = "getTrigger", tag = "triggers",
    params(("app" = String, Path, description = "App name"),
           ("id" = String, Path, description = "Trigger id")),
    responses(
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the app", body = Problem, content_type = "application/problem+json"),
        (status = 200, description = "The trigger", body = Trigger),
        (status = 404, description = "No such app or trigger (or the app is not visible to the caller)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    principal: Principal,
) -> Result<Json<Trigger>, ApiError> {
    principal.require(&state, &app, None, Role::Admin).await?;
    let id = trigger_id(&id)?;
    let mut conn = state.pool.acquire().await?;
    Ok(Json(triggers::get(&mut conn, &app, id).await?))
}

/// Delete a trigger: its webhooks no longer verify or deploy.
#[utoipa::path(delete, path = "/v1/apps/{app}/triggers/{id}", operation_id = "deleteTrigger", tag = "triggers",
    params(("app" = String, Path, description = "App name"),
           ("id" = String, Path, description = "Trigger id")),
    responses(
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin of the app", body = Problem, content_type = "application/problem+json"),
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such app or trigger (or the app is not visible to the caller)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    principal: Principal,
    audit: AuditContext,
) -> Result<Response, ApiError> {
    principal.require(&state, &app, None, Role::Admin).await?;
    let id = trigger_id(&id)?;
    let mut tx = state.pool.begin().await?;
    triggers::delete(&mut tx, &app, id).await?;
    let audited = audit.commit(tx, StatusCode::NO_CONTENT).await?;
    Ok((audited, StatusCode::NO_CONTENT).into_response())
}
