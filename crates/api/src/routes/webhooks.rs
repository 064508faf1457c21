//! `/v1/webhooks/{github,gitlab,generic}`: CI deliveries, authenticated by their own scheme
//! over the raw body before anything parses it (not by a bearer token). `?app=` names the app
//! whose triggers hold the secrets. Answers: 202 with the deployments a delivery created (or,
//! for a redelivery of the same delivery id, the same answer with `Idempotent-Replayed:
//! true`), 204 with the reason in `Slipway-Reason` when nothing applies, 401 when no trigger's
//! secret verifies it, 429 when the app's deliveries are over their rate limit.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use slipway_core::DeliveryAccepted;

use crate::extract::Query;
use crate::problem::Problem;
use crate::state::AppState;
use crate::webhook::generic::GenericDelivery;
use crate::webhook::{WebhookError, WebhookQuery, generic, github, gitlab};

/// Counts a delivery by source and what became of it.
fn counted(
    source: &'static str,
    result: Result<Response, WebhookError>,
) -> Result<Response, WebhookError> {
    let outcome = match &result {
        Ok(r) if r.headers().contains_key("idempotent-replayed") => "replayed",
        Ok(r) if r.status() == axum::http::StatusCode::ACCEPTED => "accepted",
        Ok(_) => "ignored",
        Err(WebhookError::Unauthorized(_)) => "unauthorized",
        Err(WebhookError::RateLimited { .. }) => "rate_limited",
        Err(WebhookError::Api(_)) => "refused",
    };
    metrics::counter!("slipway_webhook_deliveries_total", "source" => source, "outcome" => outcome)
        .increment(1);
    result
}

/// Receive a GitHub webhook (`deployment`, `release`, `workflow_run`, `push`, `ping`).
#[utoipa::path(post, path = "/v1/webhooks/github", operation_id = "receiveGithubWebhook", tag = "webhooks",
    params(WebhookQuery,
        ("X-Hub-Signature-256" = String, Header, pattern = "^sha256=[0-9a-fA-F]{64}$", description = "sha256=<hex HMAC-SHA256 of the raw body under the trigger's secret>"),
        ("X-GitHub-Event" = String, Header, min_length = 1, description = "The event"),
        ("X-GitHub-Delivery" = String, Header, pattern = "^[!-~]{1,255}$", description = "The delivery id; a redelivery creates nothing new")),
    request_body(content = serde_json::Value, description = "GitHub's event payload", content_type = "application/json", example = json!({"ref": "refs/heads/main", "after": "3f2a9c1e8b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a", "repository": {"full_name": "acme/web"}, "sender": {"login": "alice"}})),
    responses(
        (status = 202, description = "Deployments recorded", body = DeliveryAccepted),
        (status = 204, description = "Nothing to do; the reason is in the Slipway-Reason header", headers(("Slipway-Reason" = String))),
        (status = 400, description = "A header is missing or the body is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "The signature is missing or verifies with no trigger's secret", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A matching trigger's deployment cannot be made", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The app has received more deliveries than its rate limit allows (checked before the signature)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until a delivery is accepted again"))),
        (status = 422, description = "Invalid `app` parameter or payload field", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn github(
    State(state): State<AppState>,
    Query(query): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    counted(
        "github",
        github::receive(&state, &query, &headers, &body).await,
    )
}

/// Receive a GitLab webhook (pipeline success, tag push).
#[utoipa::path(post, path = "/v1/webhooks/gitlab", operation_id = "receiveGitlabWebhook", tag = "webhooks",
    params(WebhookQuery,
        ("X-Gitlab-Token" = Option<String>, Header, min_length = 1, description = "The trigger's secret token"),
        ("webhook-signature" = Option<String>, Header, min_length = 1, description = "Standard Webhooks signature (with webhook-id and webhook-timestamp), for a trigger whose secret is a whsec_ signing token"),
        ("X-Gitlab-Event" = String, Header, min_length = 1, description = "Pipeline Hook or Tag Push Hook"),
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Delivery id (else webhook-id or X-Gitlab-Event-UUID)")),
    request_body(content = serde_json::Value, description = "GitLab's event payload", content_type = "application/json", example = json!({"object_kind": "pipeline", "object_attributes": {"status": "success", "ref": "main", "sha": "3f2a9c1e8b7d6c5a4f3e2d1c0b9a8f7e6d5c4b3a"}, "project": {"path_with_namespace": "acme/web"}, "user": {"username": "alice"}})),
    responses(
        (status = 202, description = "Deployments recorded", body = DeliveryAccepted),
        (status = 204, description = "Nothing to do; the reason is in the Slipway-Reason header", headers(("Slipway-Reason" = String))),
        (status = 400, description = "A header is missing or the body is malformed", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No token or signature, a stale timestamp, or none verifies", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A matching trigger's deployment cannot be made", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The app has received more deliveries than its rate limit allows (checked before the signature)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until a delivery is accepted again"))),
        (status = 422, description = "Invalid `app` parameter or payload field", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn gitlab(
    State(state): State<AppState>,
    Query(query): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    counted(
        "gitlab",
        gitlab::receive(&state, &query, &headers, &body).await,
    )
}

/// Receive a generic webhook signed by the Standard Webhooks scheme.
#[utoipa::path(post, path = "/v1/webhooks/generic", operation_id = "receiveGenericWebhook", tag = "webhooks",
    params(WebhookQuery,
        ("webhook-id" = String, Header, pattern = "^[!-~]{1,255}$", description = "The delivery id"),
        ("webhook-timestamp" = String, Header, pattern = "^[0-9]{1,19}$", description = "Unix seconds; within 5 minutes of now"),
        ("webhook-signature" = String, Header, min_length = 1, description = "v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">, space-separated")),
    request_body(content = GenericDelivery, example = json!({"app": "web", "environment": "prod", "image": "ghcr.io/acme/web:1.4.2", "metadata": {"commit": "3f2a9c1", "repository": "acme/web", "user": "alice"}})),
    responses(
        (status = 202, description = "Deployment recorded", body = DeliveryAccepted),
        (status = 204, description = "No generic trigger deploys to that environment; see Slipway-Reason", headers(("Slipway-Reason" = String))),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "A header is missing, the timestamp is stale, or the signature verifies with no trigger's secret", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such environment", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The app has received more deliveries than its rate limit allows (checked before the signature)", body = Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds until a delivery is accepted again"))),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn generic(
    State(state): State<AppState>,
    Query(query): Query<WebhookQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebhookError> {
    counted(
        "generic",
        generic::receive(&state, &query, &headers, &body).await,
    )
}
