//! GitLab: the secret token (`X-Gitlab-Token`, constant time) or a signing token (Standard
//! Webhooks signature); events pipeline (success) and tag push. De-duplicated by
//! `webhook-id`, else `Idempotency-Key`, else `X-Gitlab-Event-UUID`.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use slipway_core::trigger_match::{DeliveryFacts, GitRef, signing_key};
use slipway_core::{TriggerEvent, TriggerSource};
use slipway_engine::webhooks::Delivery;

use super::signature::{self, StandardHeaders};
use super::{WebhookError, WebhookQuery, authenticate, deliver_ci, header, ignored, parse_body};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
struct Project {
    path_with_namespace: String,
    #[serde(default)]
    web_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct GitlabUser {
    username: String,
}

#[derive(Debug, Deserialize)]
struct PipelineAttributes {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    tag: bool,
    sha: String,
    status: String,
    #[serde(default)]
    url: Option<String>,
}

/// The pipeline's commit.
#[derive(Debug, Deserialize)]
struct PipelineCommit {
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct PipelineHook {
    object_attributes: PipelineAttributes,
    project: Project,
    #[serde(default)]
    user: Option<GitlabUser>,
    #[serde(default)]
    commit: Option<PipelineCommit>,
}

#[derive(Debug, Deserialize)]
struct TagPushHook {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    checkout_sha: Option<String>,
    project: Project,
    #[serde(default)]
    user_username: Option<String>,
}

fn read(
    event: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<DeliveryFacts, String>, WebhookError> {
    Ok(match event {
        "Pipeline Hook" => {
            let p: PipelineHook = parse_body(headers, body)?;
            let a = p.object_attributes;
            if a.status != "success" {
                return Ok(Err(format!(
                    "pipeline status {:?} is not success",
                    a.status
                )));
            }
            let git_ref = if a.tag {
                GitRef::Tag(a.git_ref)
            } else {
                GitRef::Branch(a.git_ref)
            };
            Ok(DeliveryFacts {
                source: TriggerSource::Gitlab,
                event: TriggerEvent::Pipeline,
                repository: p.project.path_with_namespace,
                git_ref,
                sha: Some(a.sha),
                workflow: None,
                user: p.user.map(|u| u.username),
                url: a.url.or(p.project.web_url),
                github_deployment: None,
                committed_at: p.commit.and_then(|c| c.timestamp),
            })
        }
        "Tag Push Hook" => {
            let t: TagPushHook = parse_body(headers, body)?;
            let Some(sha) = t.checkout_sha else {
                return Ok(Err(format!("tag push deleted {}", t.git_ref)));
            };
            Ok(DeliveryFacts {
                source: TriggerSource::Gitlab,
                event: TriggerEvent::TagPush,
                repository: t.project.path_with_namespace,
                git_ref: GitRef::from_full(&t.git_ref),
                sha: Some(sha),
                workflow: None,
                user: t.user_username,
                url: t.project.web_url,
                github_deployment: None,
                committed_at: None,
            })
        }
        other => Err(format!("GitLab event {other:?} is not one Slipway acts on")),
    })
}

/// `POST /v1/webhooks/gitlab`
pub(crate) async fn receive(
    state: &AppState,
    query: &WebhookQuery,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, WebhookError> {
    let app = query.app()?;
    let token = header(headers, "x-gitlab-token");
    let standard = match (
        header(headers, "webhook-id"),
        header(headers, "webhook-timestamp"),
        header(headers, "webhook-signature"),
    ) {
        (Some(id), Some(timestamp), Some(signature)) => Some(StandardHeaders {
            id,
            timestamp,
            signature,
        }),
        _ => None,
    };
    if token.is_none() && standard.is_none() {
        return Err(WebhookError::unauthorized(
            "missing header X-Gitlab-Token (or webhook-id, webhook-timestamp and webhook-signature)",
        ));
    }
    if let Some(h) = &standard
        && signature::standard_timestamp(h, chrono::Utc::now().timestamp()).is_err()
    {
        return Err(WebhookError::unauthorized(
            "webhook-timestamp is not within 5 minutes of now",
        ));
    }
    let event = super::required(headers, "x-gitlab-event")?;
    let delivery_id = [
        "webhook-id",
        "idempotency-key",
        "x-gitlab-event-uuid",
    ]
    .into_iter()
    .find_map(|name| header(headers, name).map(|v| (name, v)))
    .ok_or_else(|| {
        WebhookError::bad_request(
            "missing delivery id: one of the headers webhook-id, Idempotency-Key, X-Gitlab-Event-UUID",
        )
    })
    .and_then(|(name, v)| super::delivery_id(name, v))?;
    let checked = body.clone();
    let sent_token = token.map(str::to_owned);
    let sent_standard = standard.map(|h| h.owned());
    let triggers =
        authenticate(
            state,
            app,
            TriggerSource::Gitlab,
            move |t| match std::str::from_utf8(&t.secret).ok().and_then(signing_key) {
                Some(key) => sent_standard
                    .as_ref()
                    .is_some_and(|h| signature::standard(&key, &h.borrowed(), &checked)),
                None => sent_token
                    .as_ref()
                    .is_some_and(|sent| signature::token(&t.secret, sent.as_bytes())),
            },
        )
        .await?;
    let facts = match read(event, headers, body)? {
        Ok(facts) => facts,
        Err(reason) => return Ok(ignored(&reason)),
    };
    let delivery = Delivery {
        app,
        app_id: triggers[0].app_id,
        source: TriggerSource::Gitlab,
        delivery_id,
        event,
        metadata: None,
        // The secret token signs nothing, and a Standard Webhooks signature covers the id.
        content_digest: None,
    };
    deliver_ci(state, &delivery, &triggers, &facts).await
}
