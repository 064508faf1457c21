//! CI webhooks: each source's authentication (over the raw body, before parsing) and payloads.
//!
//! A delivery names its app in the query (`?app=web`): the app's triggers of that source hold
//! the secrets it may be signed with, so it is authenticated without trusting its body. The
//! triggers whose secret verifies it are the only ones it can set off.

pub(crate) mod generic;
pub(crate) mod github;
pub(crate) mod gitlab;
pub(crate) mod signature;
pub(crate) mod verify;

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use slipway_core::TriggerSource;
use slipway_core::trigger_match::DeliveryFacts;
use slipway_engine::IntakeError;
use slipway_engine::webhooks::{self, Delivery, OpenTrigger, PlannedDeployment, Taken};
use slipway_store::StoreError;
use utoipa::IntoParams;

use crate::problem::{ApiError, ProblemType};
use crate::state::AppState;

/// The header a 204 answer gives its reason in (a 204 has no body).
pub(crate) const REASON_HEADER: &str = "slipway-reason";

/// The query every webhook takes.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookQuery {
    /// The app whose triggers the delivery is for (its triggers hold the secrets).
    #[param(required = true, schema_with = slipway_core::names::name_schema)]
    pub app: Option<String>,
}

impl WebhookQuery {
    pub fn app(&self) -> Result<&str, WebhookError> {
        let app = self.app.as_deref().ok_or_else(|| {
            ApiError::invalid_parameter(
                "app",
                "required: the webhook URL names the app, e.g. /v1/webhooks/github?app=web",
            )
        })?;
        slipway_core::names::dns_label(app).map_err(|e| ApiError::invalid_parameter("app", e))?;
        Ok(app)
    }
}

/// Why a delivery was refused.
#[derive(Debug)]
pub enum WebhookError {
    /// Not authenticated: 401.
    Unauthorized(String),
    /// The app's deliveries are over their rate limit: 429 with `Retry-After`.
    RateLimited {
        app: String,
        wait: Duration,
    },
    Api(ApiError),
}

impl WebhookError {
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::Unauthorized(detail.into())
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::Api(ApiError::new(ProblemType::BadRequest, detail))
    }
}

impl From<ApiError> for WebhookError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<IntakeError> for WebhookError {
    fn from(e: IntakeError) -> Self {
        Self::Api(e.into())
    }
}

impl From<StoreError> for WebhookError {
    fn from(e: StoreError) -> Self {
        Self::Api(e.into())
    }
}

impl From<sqlx::Error> for WebhookError {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Unauthorized(detail) => {
                crate::problem::problem_response(ProblemType::Unauthorized, detail, Vec::new())
            }
            Self::RateLimited { app, wait } => {
                crate::auth::too_many_requests(&format!("the webhooks of app {app}"), wait)
            }
        }
    }
}

/// A header's value as text, when present and visible ASCII.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A required header: 400 naming it when it is missing.
pub(crate) fn required<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, WebhookError> {
    header(headers, name).ok_or_else(|| WebhookError::bad_request(format!("missing header {name}")))
}

/// A delivery id: 1–255 visible ASCII characters.
pub(crate) fn delivery_id<'a>(name: &str, value: &'a str) -> Result<&'a str, WebhookError> {
    if value.len() > 255 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WebhookError::bad_request(format!(
            "header {name} must be 1-255 visible ASCII characters"
        )));
    }
    Ok(value)
}

/// The app's triggers of `source` whose secret verifies the delivery (`verifies`); 401 when
/// none does. An unknown app and an app without such triggers answer the same.
///
/// First the app's deliveries take a token from its bucket (429 when they are over the
/// limit, before any database or signature work); the checks then run off the async worker
/// threads, a bounded number at once ([`verify::Verifier`]).
pub(crate) async fn authenticate(
    state: &AppState,
    app: &str,
    source: TriggerSource,
    verifies: impl Fn(&OpenTrigger) -> bool + Send + 'static,
) -> Result<Vec<OpenTrigger>, WebhookError> {
    state
        .webhook_rate_limiter
        .check(app)
        .map_err(|wait| WebhookError::RateLimited {
            app: app.to_owned(),
            wait,
        })?;
    let mut conn = state.pool.acquire().await?;
    let triggers =
        webhooks::triggers_for(&mut conn, app, source, state.settings.secrets_key.as_ref()).await?;
    drop(conn);
    let verified: Vec<OpenTrigger> = state
        .verifier
        .run(move || {
            triggers
                .into_iter()
                .filter(|t| verifies(t))
                .collect::<Vec<_>>()
        })
        .await?;
    if verified.is_empty() {
        return Err(WebhookError::unauthorized(format!(
            "the delivery's signature does not verify with the secret of any {} trigger of app {app:?}",
            source.as_str()
        )));
    }
    Ok(verified)
}

/// The JSON body of a verified delivery: 415 unless JSON; 400 / 422 (by pointer) unless it
/// has the shape `T`.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, WebhookError> {
    let essence = header(headers, "content-type")
        .and_then(|ct| ct.split(';').next())
        .map(|ct| ct.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::new(
            ProblemType::UnsupportedMediaType,
            "the delivery must be JSON: configure the webhook's content type as application/json",
        )
        .into());
    }
    Ok(crate::extract::parse::<T>(body)?.value)
}

/// 204 with the reason nothing was done.
pub(crate) fn ignored(reason: &str) -> Response {
    let mut text: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(500)
        .collect();
    if text.is_empty() {
        text.push_str("ignored");
    }
    let value = HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("ignored"));
    (StatusCode::NO_CONTENT, [(REASON_HEADER, value)]).into_response()
}

pub(crate) fn accepted(taken: Taken) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(taken.answer)).into_response();
    if taken.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The stored answer when this delivery id was taken before.
pub(crate) async fn replayed(
    state: &AppState,
    delivery: &Delivery<'_>,
) -> Result<Option<Response>, WebhookError> {
    let mut conn = state.pool.acquire().await?;
    Ok(webhooks::replay(&mut conn, delivery).await?.map(accepted))
}

/// Records the planned deployments of a delivery, once per delivery id: 202 with them.
pub(crate) async fn take(
    state: &AppState,
    delivery: &Delivery<'_>,
    planned: Vec<PlannedDeployment>,
) -> Result<Response, WebhookError> {
    let mut tx = state.pool.begin().await?;
    let taken = webhooks::take(&mut tx, delivery, planned).await?;
    tx.commit().await?;
    Ok(accepted(taken))
}

/// Matches a CI delivery against the triggers that verified it: 204 with every trigger's
/// reason when none applies, else 202 with the deployments (or the stored answer of a
/// redelivery).
pub(crate) async fn deliver_ci(
    state: &AppState,
    delivery: &Delivery<'_>,
    triggers: &[OpenTrigger],
    facts: &DeliveryFacts,
) -> Result<Response, WebhookError> {
    if let Some(replay) = replayed(state, delivery).await? {
        return Ok(replay);
    }
    let mut planned = Vec::new();
    let mut reasons = Vec::new();
    for trigger in triggers {
        match facts.apply(&trigger.spec) {
            Ok(matched) => planned.push(PlannedDeployment {
                trigger: trigger.id,
                matched,
                // Statuses go to the trigger's repository (validated as GitHub's owner/name
                // when the trigger was made), not to the spelling the body used.
                github: facts.github_deployment.clone().map(|g| {
                    let repository = trigger.spec.repository.clone();
                    (repository.unwrap_or_else(|| facts.repository.clone()), g)
                }),
                committed_at: facts.committed_at,
                allow_older: trigger.spec.allow_older,
            }),
            Err(reason) => reasons.push(format!("trigger {} {reason}", trigger.id)),
        }
    }
    if !planned.is_empty() {
        let mut conn = state.pool.acquire().await?;
        let (kept, refused) = webhooks::refuse_older(&mut conn, planned).await?;
        planned = kept;
        reasons.extend(refused);
    }
    if planned.is_empty() {
        return Ok(ignored(&format!(
            "no trigger matched: {}",
            reasons.join("; ")
        )));
    }
    take(state, delivery, planned).await
}
