//! GitHub: `X-Hub-Signature-256` over the raw body; events `deployment` (created), `release`
//! (published), `workflow_run` (completed with success), `push`, and `ping`.

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use slipway_core::trigger_match::{DeliveryFacts, GitRef, GithubDeployment};
use slipway_core::{TriggerEvent, TriggerSource};
use slipway_engine::webhooks::Delivery;

use super::{WebhookError, WebhookQuery, authenticate, deliver_ci, ignored, parse_body, required};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Debug, Deserialize)]
struct User {
    login: String,
}

/// A commit as push and workflow run payloads describe it.
#[derive(Debug, Deserialize)]
struct Commit {
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    compare: Option<String>,
    #[serde(default)]
    head_commit: Option<Commit>,
    repository: Repository,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Debug, Deserialize)]
struct DeploymentPayload {
    id: i64,
    sha: String,
    #[serde(rename = "ref")]
    git_ref: String,
    environment: String,
}

#[derive(Debug, Deserialize)]
struct DeploymentEvent {
    #[serde(default)]
    action: Option<String>,
    deployment: DeploymentPayload,
    repository: Repository,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Debug, Deserialize)]
struct Release {
    tag_name: String,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    published_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct ReleaseEvent {
    action: String,
    release: Release,
    repository: Repository,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Debug, Deserialize)]
struct WorkflowRun {
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    head_branch: Option<String>,
    head_sha: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    head_commit: Option<Commit>,
}

#[derive(Debug, Deserialize)]
struct WorkflowRunEvent {
    action: String,
    workflow_run: WorkflowRun,
    repository: Repository,
    #[serde(default)]
    sender: Option<User>,
}

fn facts(
    event: TriggerEvent,
    repository: Repository,
    git_ref: GitRef,
    sha: Option<String>,
    sender: Option<User>,
    url: Option<String>,
) -> DeliveryFacts {
    DeliveryFacts {
        source: TriggerSource::Github,
        event,
        repository: repository.full_name,
        git_ref,
        sha,
        workflow: None,
        user: sender.map(|s| s.login),
        url,
        github_deployment: None,
        committed_at: None,
    }
}

/// Reads what a verified delivery says; `Err(reason)` when it asks for nothing.
fn read(
    event: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Result<DeliveryFacts, String>, WebhookError> {
    Ok(match event {
        "push" => {
            let p: Push = parse_body(headers, body)?;
            if p.deleted {
                return Ok(Err(format!("push deleted {}", p.git_ref)));
            }
            let mut f = facts(
                TriggerEvent::Push,
                p.repository,
                GitRef::from_full(&p.git_ref),
                Some(p.after),
                p.sender,
                p.compare,
            );
            f.committed_at = p.head_commit.and_then(|c| c.timestamp);
            Ok(f)
        }
        "deployment" => {
            let d: DeploymentEvent = parse_body(headers, body)?;
            if d.action.as_deref().is_some_and(|a| a != "created") {
                return Ok(Err(format!(
                    "deployment action {:?} is not \"created\"",
                    d.action.unwrap_or_default()
                )));
            }
            let github = GithubDeployment {
                id: d.deployment.id,
                environment: d.deployment.environment,
            };
            let mut f = facts(
                TriggerEvent::Deployment,
                d.repository,
                GitRef::from_full(&d.deployment.git_ref),
                Some(d.deployment.sha),
                d.sender,
                None,
            );
            f.github_deployment = Some(github);
            Ok(f)
        }
        "release" => {
            let r: ReleaseEvent = parse_body(headers, body)?;
            if r.action != "published" {
                return Ok(Err(format!(
                    "release action {:?} is not \"published\"",
                    r.action
                )));
            }
            let mut f = facts(
                TriggerEvent::Release,
                r.repository,
                GitRef::Tag(r.release.tag_name),
                None,
                r.sender,
                r.release.html_url,
            );
            f.committed_at = r.release.published_at;
            Ok(f)
        }
        "workflow_run" => {
            let w: WorkflowRunEvent = parse_body(headers, body)?;
            let conclusion = w.workflow_run.conclusion.clone().unwrap_or_default();
            if w.action != "completed" || conclusion != "success" {
                return Ok(Err(format!(
                    "workflow run {} with conclusion {conclusion:?}, not completed with success",
                    w.action
                )));
            }
            let run = w.workflow_run;
            let mut f = facts(
                TriggerEvent::WorkflowRun,
                w.repository,
                GitRef::Branch(run.head_branch.unwrap_or_default()),
                Some(run.head_sha),
                w.sender,
                run.html_url,
            );
            f.workflow = run.name;
            f.committed_at = run.head_commit.and_then(|c| c.timestamp);
            Ok(f)
        }
        other => Err(format!("GitHub event {other:?} is not one Slipway acts on")),
    })
}

/// `POST /v1/webhooks/github`
pub(crate) async fn receive(
    state: &AppState,
    query: &WebhookQuery,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, WebhookError> {
    let app = query.app()?;
    let signature = super::header(headers, "x-hub-signature-256")
        .ok_or_else(|| WebhookError::unauthorized("missing header X-Hub-Signature-256"))?;
    let event = required(headers, "x-github-event")?;
    let delivery_id =
        super::delivery_id("X-GitHub-Delivery", required(headers, "x-github-delivery")?)?;
    let (checked, signature) = (body.clone(), signature.to_owned());
    let triggers = authenticate(state, app, TriggerSource::Github, move |t| {
        super::signature::github(&t.secret, &checked, &signature)
    })
    .await?;
    if event == "ping" {
        return Ok(ignored("pong: the signature verifies"));
    }
    let facts = match read(event, headers, body)? {
        Ok(facts) => facts,
        Err(reason) => return Ok(ignored(&reason)),
    };
    let delivery = Delivery {
        app,
        app_id: triggers[0].app_id,
        source: TriggerSource::Github,
        delivery_id,
        event,
        metadata: None,
        // GitHub signs the body, not X-GitHub-Delivery: the signed content is the identity.
        content_digest: Some(super::signature::content_digest(event, body)),
    };
    deliver_ci(state, &delivery, &triggers, &facts).await
}
