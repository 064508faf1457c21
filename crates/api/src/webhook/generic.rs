//! Generic: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`, a
//! 5-minute window both ways); the body names app, environment, image, version and metadata.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use slipway_core::trigger_match::{Matched, signing_key};
use slipway_core::{DeploymentRequest, Source, SourceKind, TriggerSource, ValidationError};
use slipway_engine::IntakeError;
use slipway_engine::webhooks::{Delivery, PlannedDeployment};
use utoipa::ToSchema;

use super::signature::{self, StandardHeaders};
use super::{WebhookError, WebhookQuery, authenticate, header, ignored, parse_body};
use crate::problem::ApiError;
use crate::state::AppState;

/// The body of a generic delivery.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenericDelivery {
    /// Must be the app of `?app=`.
    #[schema(schema_with = slipway_core::names::name_schema)]
    pub app: String,
    #[schema(schema_with = slipway_core::names::name_schema)]
    pub environment: String,
    /// OCI image reference pinned by tag and/or digest.
    #[schema(min_length = 1)]
    pub image: String,
    /// Version label (default: the image tag).
    #[serde(default)]
    pub version: Option<String>,
    /// Free-form; the string members `commit`, `repository`, `user` and `url`, when present,
    /// become the deployment's source (`user` is also its requester for the distinct-approver
    /// rule). Kept with the delivery.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

fn text(metadata: &serde_json::Map<String, serde_json::Value>, key: &str) -> Option<String> {
    metadata
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// The request's errors point into the delivery: `/source/commit` is `/metadata/commit`.
fn in_body(e: IntakeError) -> WebhookError {
    match e {
        IntakeError::Invalid(v) => {
            let errors = v
                .errors
                .into_iter()
                .map(|mut f| {
                    if let Some(rest) = f.pointer.strip_prefix("/source/") {
                        f.pointer = format!("/metadata/{rest}");
                    }
                    f
                })
                .collect();
            ApiError::from(ValidationError { errors }).into()
        }
        other => other.into(),
    }
}

/// `POST /v1/webhooks/generic`
pub(crate) async fn receive(
    state: &AppState,
    query: &WebhookQuery,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, WebhookError> {
    let app = query.app()?;
    let missing = |name: &str| WebhookError::unauthorized(format!("missing header {name}"));
    let standard = StandardHeaders {
        id: header(headers, "webhook-id").ok_or_else(|| missing("webhook-id"))?,
        timestamp: header(headers, "webhook-timestamp")
            .ok_or_else(|| missing("webhook-timestamp"))?,
        signature: header(headers, "webhook-signature")
            .ok_or_else(|| missing("webhook-signature"))?,
    };
    let delivery_id = super::delivery_id("webhook-id", standard.id)?;
    if signature::standard_timestamp(&standard, chrono::Utc::now().timestamp()).is_err() {
        return Err(WebhookError::unauthorized(
            "webhook-timestamp is not within 5 minutes of now",
        ));
    }
    let (checked, sent) = (body.clone(), standard.owned());
    let triggers = authenticate(state, app, TriggerSource::Generic, move |t| {
        std::str::from_utf8(&t.secret)
            .ok()
            .and_then(signing_key)
            .is_some_and(|key| signature::standard(&key, &sent.borrowed(), &checked))
    })
    .await?;
    let delivery: GenericDelivery = parse_body(headers, body)?;
    if delivery.app != app {
        return Err(ApiError::invalid_field(
            "/app",
            format!("must be {app:?}, the app of the webhook URL"),
        )
        .into());
    }
    let Some(trigger) = triggers
        .iter()
        .find(|t| t.spec.environment == delivery.environment)
    else {
        return Ok(ignored(&format!(
            "no generic trigger of app {app} deploys to environment {}",
            delivery.environment
        )));
    };
    let record = Delivery {
        app,
        app_id: trigger.app_id,
        source: TriggerSource::Generic,
        delivery_id,
        event: "generic",
        metadata: Some(serde_json::Value::Object(delivery.metadata.clone())),
        // The signature covers the id (and a timestamp within 5 minutes).
        content_digest: None,
    };
    if let Some(replay) = super::replayed(state, &record).await? {
        return Ok(replay);
    }
    let m = &delivery.metadata;
    let request = DeploymentRequest {
        image: delivery.image,
        version: delivery.version,
        strategy: None,
        reason: Some(format!("generic webhook delivery {delivery_id}")),
        source: Source {
            kind: SourceKind::Webhook,
            commit: text(m, "commit"),
            repository: text(m, "repository"),
            user: text(m, "user"),
            url: text(m, "url"),
        },
    };
    let planned = vec![PlannedDeployment {
        trigger: trigger.id,
        matched: Matched {
            environment: delivery.environment,
            request,
        },
        github: None,
        committed_at: None,
        allow_older: false,
    }];
    let mut tx = state.pool.begin().await?;
    let taken = slipway_engine::webhooks::take(&mut tx, &record, planned)
        .await
        .map_err(in_body)?;
    tx.commit().await?;
    Ok(super::accepted(taken))
}
