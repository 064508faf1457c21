//! `POST /v1/deployments/{id}/{command}`: promote, approve, pause, resume, abort, rollback,
//! retry. A command is stored as a record and consumed by the engine; it never edits a
//! deployment's status directly.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use slipway_core::Deployment;
use slipway_core::rollout::CommandKind;
use slipway_engine::intake;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::auth::audit::AuditContext;
use crate::extract::{IdempotencyKey, OptionalJsonBody, Principal};
use crate::idempotency::{self, KeyedRequest, Written};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// The optional body of a command.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// Why, for the audit trail (at most 1000 bytes).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A command was accepted; the engine applies it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAccepted {
    pub command_id: Uuid,
    /// The deployment as it was when the command was recorded.
    pub deployment: Deployment,
}

/// Send a command to a deployment.
///
/// `promote` moves past a pause or promotion gate; `approve` gives a required approval (from
/// someone other than the requester when the environment says so); `pause`/`resume` hold and
/// release progress; `abort` returns traffic and replicas to the previous version (and cancels
/// a queued deployment); `rollback` does the same, recorded as a rollback; `retry` starts a
/// failed or rolled-back deployment again as a new attempt.
#[utoipa::path(post, path = "/v1/deployments/{id}/{command}", operation_id = "sendDeploymentCommand", tag = "deployments",
    params(("id" = String, Path, description = "Deployment id"),
           ("command" = CommandKind, Path, description = "The command"),
           IdempotencyKey),
    request_body(content = Option<CommandRequest>, description = "Optional; `{}` or no body at all", example = json!({"reason": "metrics look good"})),
    responses(
        (status = 202, description = "Recorded; the engine applies it", body = CommandAccepted),
        (status = 400, description = "Malformed JSON or header", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such deployment or command", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The command makes no sense in the deployment's state (named in `detail`), or the same Idempotency-Key is in flight", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, or Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn send(
    State(state): State<AppState>,
    Path((id, command)): Path<(String, String)>,
    principal: Principal,
    audit: AuditContext,
    IdempotencyKey(key): IdempotencyKey,
    body: OptionalJsonBody<CommandRequest>,
) -> Result<Response, ApiError> {
    let id: Uuid = id.parse().map_err(|_| ApiError::not_found("deployment"))?;
    let kind = CommandKind::ALL
        .into_iter()
        .find(|k| k.as_str() == command)
        .ok_or_else(|| ApiError::not_found("command"))?;
    principal.require_command(&state, id, kind).await?;
    let reason = body.value.reason;
    if reason
        .as_ref()
        .is_some_and(|r| r.len() > slipway_core::deployment::MAX_REASON_LEN)
    {
        return Err(ApiError::invalid_field(
            "/reason",
            "must be at most 1000 bytes",
        ));
    }
    let request = KeyedRequest {
        key: key.as_deref(),
        scope: format!("{principal} POST /v1/deployments/{id}/{}", kind.as_str()),
        digest: &body.digest,
        audit: &audit,
    };
    let idempotency_key = key.clone();
    idempotency::run(&state, request, move |conn| {
        Box::pin(async move {
            let (command_id, deployment) = intake::command(
                conn,
                id,
                kind,
                principal.subject(),
                reason.as_deref(),
                idempotency_key.as_deref(),
            )
            .await?;
            let accepted = CommandAccepted {
                command_id,
                deployment,
            };
            Ok(Written {
                status: StatusCode::ACCEPTED,
                body: serde_json::to_value(&accepted).map_err(|e| ApiError::internal(&e))?,
                location: None,
            })
        })
    })
    .await
}
