//! `/v1/apps/{app}/environments/{env}/deployments` and `/v1/deployments`

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use slipway_core::{Deployment, DeploymentEvent, DeploymentRequest, DeploymentStatus, Role};
use slipway_engine::intake::{self, Requested};
use slipway_store::deployments::{self, DeploymentFilter, Requester};
use slipway_store::events;
use slipway_store::idempotency::{KeyRef, RawResponse};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::audit::{AuditContext, AuditWritten};
use crate::extract::{IdempotencyKey, JsonBody, Principal, Query};
use crate::pagination::{CursorKind, List, PageParams};
use crate::problem::{ApiError, Problem, ProblemType};
use crate::routes::streams;
use crate::state::AppState;

/// Request a deployment of a new version to an environment; it is recorded as `queued`.
#[utoipa::path(post, path = "/v1/apps/{app}/environments/{env}/deployments", operation_id = "createDeployment", tag = "deployments",
    params(("app" = String, Path, description = "App name"),
           ("env" = String, Path, description = "Environment name"),
           IdempotencyKey,
           ("traceparent" = Option<String>, Header, pattern = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$", description = "W3C trace context; stored so the deployment joins the caller's trace (ignored unless of the version 00 form).")),
    request_body(content = DeploymentRequest, example = json!({"image": "ghcr.io/acme/web:1.4.2", "version": "1.4.2", "reason": "release 1.4.2", "source": {"commit": "3f2a9c1", "repository": "acme/web", "user": "alice"}})),
    responses(
        (status = 201, description = "Recorded as queued", body = Deployment, headers(("Location" = String))),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Below the deployer role, or a strategy override the environment does not allow (`errors` names `/strategy`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such app or environment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The same Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Path((app, env)): Path<(String, String)>,
    principal: Principal,
    IdempotencyKey(key): IdempotencyKey,
    audit: AuditContext,
    headers: HeaderMap,
    body: JsonBody<DeploymentRequest>,
) -> Result<Response, ApiError> {
    principal
        .require(&state, &app, Some(&env), Role::Deployer)
        .await?;
    // The audit row goes in with the deployment; replays and failures are audited by the layer.
    let audit = audit.entry(StatusCode::CREATED);
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_traceparent(v));
    let scope = format!("{principal} POST /v1/apps/{app}/environments/{env}/deployments");
    let key = key.as_deref().map(|key| KeyRef {
        scope: &scope,
        key,
        request_hash: &body.digest,
    });
    let by = Requester {
        principal: principal.subject(),
        idempotency_key: key.as_ref().map(|k| k.key),
        traceparent,
    };
    let requested = intake::request_deployment(
        &state.pool,
        &state.creates,
        &state.environments,
        &state.notifier,
        &app,
        &env,
        body.value,
        &by,
        key.as_ref(),
        state.settings.idempotency_ttl,
        Some(&audit),
        |deployment| {
            Ok(RawResponse {
                status: StatusCode::CREATED.as_u16(),
                body: serde_json::to_string(deployment).map_err(|e| {
                    intake::IntakeError::Store(slipway_store::StoreError::Corrupt(e.to_string()))
                })?,
                location: Some(format!("/v1/deployments/{}", deployment.id)),
            })
        },
    )
    .await?;
    match requested {
        Requested::Created(_, response) => {
            let mut response = raw_response(response, false)?;
            response.extensions_mut().insert(AuditWritten);
            Ok(response)
        }
        Requested::Replay(stored) => raw_response(stored, true),
        Requested::KeyReused => Err(ApiError::new(
            ProblemType::IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request body; use a new key",
        )),
        Requested::KeyInFlight => Err(ApiError::new(
            ProblemType::IdempotencyKeyInFlight,
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )),
    }
}

/// A stored (or just stored) JSON answer, sent as it is.
fn raw_response(stored: RawResponse, replayed: bool) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(stored.status).map_err(|e| ApiError::internal(&e))?;
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        stored.body,
    )
        .into_response();
    let headers = response.headers_mut();
    if let Some(location) = stored.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `00-<32 hex>-<16 hex>-<2 hex>`, the W3C trace context version 00 form.
fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex =
        |s: &str, n: usize| s.len() == n && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'));
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
}

/// Filters of the deployment list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeploymentQuery {
    /// Only deployments of this app.
    #[param(schema_with = slipway_core::names::name_schema)]
    pub app: Option<String>,
    /// Only deployments to environments of this name.
    #[param(schema_with = slipway_core::names::name_schema)]
    pub environment: Option<String>,
    /// Only deployments in these statuses (comma-separated).
    pub status: Option<String>,
}

impl DeploymentQuery {
    fn filter(self) -> Result<DeploymentFilter, ApiError> {
        for (name, value) in [("app", &self.app), ("environment", &self.environment)] {
            if let Some(value) = value {
                slipway_core::names::dns_label(value)
                    .map_err(|e| ApiError::invalid_parameter(name, e))?;
            }
        }
        let statuses = match &self.status {
            None => Vec::new(),
            Some(raw) => raw
                .split(',')
                .map(|s| s.trim().parse::<DeploymentStatus>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ApiError::invalid_parameter("status", e))?,
        };
        Ok(DeploymentFilter {
            app: self.app,
            environment: self.environment,
            statuses,
        })
    }
}

/// List deployments, newest first.
#[utoipa::path(get, path = "/v1/deployments", operation_id = "listDeployments", tag = "deployments",
    params(DeploymentQuery, PageParams),
    responses(
        (status = 200, description = "A page of deployments", body = List<Deployment>),
        (status = 422, description = "Invalid filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<DeploymentQuery>,
    Query(page): Query<PageParams>,
) -> Result<Json<List<Deployment>>, ApiError> {
    let limit = page.limit()?;
    let after = page.after_parsed::<Uuid>(CursorKind::Deployment)?;
    let filter = query.filter()?;
    let mut conn = state.pool.acquire().await?;
    let found = deployments::list(
        &mut conn,
        &filter,
        after,
        limit,
        principal.visible_to().as_ref(),
    )
    .await?;
    Ok(Json(List::from_page(found, CursorKind::Deployment)))
}

fn deployment_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("deployment"))
}

/// Get a deployment.
#[utoipa::path(get, path = "/v1/deployments/{id}", operation_id = "getDeployment", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id")),
    responses(
        (status = 200, description = "The deployment", body = Deployment),
        (status = 404, description = "No such deployment", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Principal,
) -> Result<Json<Deployment>, ApiError> {
    let id = deployment_id(&id)?;
    principal
        .require_deployment(&state, id, Role::Viewer)
        .await?;
    let mut conn = state.pool.acquire().await?;
    Ok(Json(deployments::get(&mut conn, id).await?))
}

/// A deployment's events in order: a JSON page, or a live stream with
/// `Accept: text/event-stream` (resumable with `Last-Event-ID`).
///
/// A stream ends when the caller's token stops being accepted, and when the caller loses the
/// right to read the deployment (checked before events are sent, and every 5 s).
#[utoipa::path(get, path = "/v1/deployments/{id}/events", operation_id = "listDeploymentEvents", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"), PageParams, streams::LastEventId),
    responses(
        (status = 200, description = "A page of events, oldest first; or, for text/event-stream, the events as they happen (each event's data is a DeploymentEvent, its id the seq)",
            content((List<DeploymentEvent> = "application/json"), (DeploymentEvent = "text/event-stream"))),
        (status = 400, description = "Invalid Last-Event-ID", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such deployment", body = Problem, content_type = "application/problem+json"),
        (status = 406, description = "Neither JSON nor an event stream is acceptable", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    principal: Principal,
    headers: HeaderMap,
    Query(page): Query<PageParams>,
) -> Result<Response, ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let media: Vec<&str> = accept
        .split(',')
        .map(|a| a.split(';').next().unwrap_or("").trim())
        .collect();
    let wants_stream = media.contains(&"text/event-stream");
    let json_ok = media
        .iter()
        .any(|a| matches!(*a, "*/*" | "application/*" | "application/json"));
    if !wants_stream && !json_ok {
        return Err(ApiError::new(
            ProblemType::NotAcceptable,
            "this endpoint answers application/json or text/event-stream",
        ));
    }
    let id = deployment_id(&id)?;
    principal
        .require_deployment(&state, id, Role::Viewer)
        .await?;
    if wants_stream {
        let after = streams::last_event_id(&headers)?.unwrap_or(0);
        let mut conn = state.pool.acquire().await?;
        deployments::get(&mut conn, id).await?;
        let stream = streams::stream(&state, streams::Scope::Deployment(id), principal, after);
        return Ok(stream.into_response());
    }
    let limit = page.limit()?;
    let after = page.after_parsed::<i64>(CursorKind::Event)?;
    let mut conn = state.pool.acquire().await?;
    deployments::get(&mut conn, id).await?;
    let found = events::list(&mut conn, id, after, limit).await?;
    Ok(Json(List::from_page(found, CursorKind::Event)).into_response())
}
