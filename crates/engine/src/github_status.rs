//! GitHub deployment statuses: a relay that reports the progress of deployments a GitHub
//! `deployment` event created back to GitHub.
//!
//! A database trigger queues every event of a GitHub-linked deployment in the transaction
//! that appends it (`github_status_queue`), so the engine's hot path is untouched and nothing
//! is missed. The relay maps those events to statuses (`started` → `in_progress`, `promoted`
//! → `success`, `failed` / `rolled_back` / `cancelled` → `failure`, `superseded` → `inactive`,
//! and a newer success in the same environment makes the older successful ones `inactive`),
//! writes them to an outbox, and posts them: per deployment in order, at least once, retrying
//! network errors, 429 and 5xx with exponential backoff. One relay runs per database (a
//! session advisory lock elects it); any process may take over when it dies.

use std::time::Duration;

use chrono::Utc;
use slipway_core::EventKind;
use slipway_store::outbox::{self, PendingStatus, QueuedEvent};
use slipway_store::{PgConnection, PgPool, StoreError};

/// GitHub's limit on a status description.
pub const MAX_DESCRIPTION: usize = 140;

/// Where and how statuses are posted.
#[derive(Clone)]
pub struct GithubStatusSettings {
    /// `https://api.github.com`, or a GitHub Enterprise Server's `https://HOST/api/v3`.
    pub api_url: String,
    /// A token allowed to write deployments (`repo_deployment` / "Deployments: write").
    pub token: String,
    /// Slipway's own URL, for the `log_url` of each status (`{public_url}/v1/deployments/{id}`).
    pub public_url: Option<String>,
    /// How often the relay looks for new events when idle.
    pub poll_interval: Duration,
    /// First retry delay; doubled after each failed attempt, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Attempts before a status is given up.
    pub max_attempts: i32,
    /// Longest wait for GitHub to answer one request.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for GithubStatusSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubStatusSettings")
            .field("api_url", &self.api_url)
            .field("token", &"***")
            .field("public_url", &self.public_url)
            .field("poll_interval", &self.poll_interval)
            .field("retry_base", &self.retry_base)
            .field("retry_max", &self.retry_max)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

impl GithubStatusSettings {
    pub fn new(api_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into(),
            token: token.into(),
            public_url: None,
            poll_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(300),
            max_attempts: 12,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// What stopped a relay round.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building the HTTP client: {0}")]
    Client(String),
}

impl From<sqlx::Error> for RelayError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(e.into())
    }
}

/// The status relay of one process.
#[derive(Debug, Clone)]
pub struct StatusRelay {
    pool: PgPool,
    settings: GithubStatusSettings,
    client: reqwest::Client,
}

/// The status an event of a deployment stands for, with its description.
pub fn status_for(kind: EventKind, message: &str) -> Option<(&'static str, String)> {
    let state = match kind {
        EventKind::Started => "in_progress",
        EventKind::Promoted => "success",
        EventKind::Failed | EventKind::RolledBack | EventKind::Cancelled => "failure",
        EventKind::Superseded => "inactive",
        _ => return None,
    };
    let description = match kind {
        EventKind::RolledBack => format!("rolled back: {message}"),
        _ => message.to_owned(),
    };
    Some((state, truncate(&description)))
}

/// At most [`MAX_DESCRIPTION`] characters, cut with an ellipsis.
fn truncate(text: &str) -> String {
    if text.chars().count() <= MAX_DESCRIPTION {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(MAX_DESCRIPTION - 1).collect();
    out.push('…');
    out
}

impl StatusRelay {
    pub fn new(pool: PgPool, settings: GithubStatusSettings) -> Result<Self, RelayError> {
        let client = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .user_agent(concat!("slipway/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RelayError::Client(e.to_string()))?;
        Ok(Self {
            pool,
            settings,
            client,
        })
    }

    /// Until `shutdown` resolves: become the database's relay (or wait for the one that is to
    /// go away), then move events to the outbox and post what is due.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        tracing::info!(api_url = %self.settings.api_url, "GitHub status relay started");
        loop {
            let leading = self.lead(&mut shutdown).await;
            match leading {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "GitHub status relay: round failed"),
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        tracing::info!("GitHub status relay stopped");
    }

    /// Holds the relay lock on its own connection and relays until shutdown (`Ok(true)`),
    /// or until another process holds the lock (`Ok(false)`).
    async fn lead(
        &self,
        shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<bool, RelayError> {
        let mut pooled = self.pool.acquire().await?;
        if !outbox::try_lock_relay(&mut pooled).await? {
            return Ok(false);
        }
        // The lock belongs to this session: keep the connection out of the pool while leading.
        let mut conn = pooled.detach();
        tracing::info!("this process relays GitHub deployment statuses");
        loop {
            let wait = match self.round(&mut conn).await {
                Ok(wait) => wait,
                Err(e) => {
                    // The connection (and with it the lock) may be gone: start over.
                    let _ = sqlx::Connection::close(conn).await;
                    return Err(e);
                }
            };
            tokio::select! {
                () = shutdown.as_mut() => {
                    let _ = outbox::unlock_relay(&mut conn).await;
                    let _ = sqlx::Connection::close(conn).await;
                    return Ok(true);
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round: queue → outbox, then post what is due. Returns how long to wait.
    pub async fn round(&self, conn: &mut PgConnection) -> Result<Duration, RelayError> {
        while self.collect(conn).await? > 0 {}
        self.deliver(conn).await?;
        let next = outbox::next_due(conn).await?;
        let until_next = next
            .and_then(|at| (at - Utc::now()).to_std().ok())
            .unwrap_or(Duration::ZERO);
        Ok(match next {
            Some(_) => until_next.min(self.settings.poll_interval),
            None => self.settings.poll_interval,
        })
    }

    /// Maps up to 100 queued events to statuses in the outbox; returns how many it took.
    async fn collect(&self, conn: &mut PgConnection) -> Result<usize, RelayError> {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let events: Vec<QueuedEvent> = outbox::queued_events(&mut tx, 100).await?;
        for event in &events {
            // A kind this version does not know stands for no status.
            let status = EventKind::parse(&event.kind).and_then(|k| status_for(k, &event.message));
            let Some((state, description)) = status else {
                continue;
            };
            outbox::push(&mut tx, event.deployment_id, state, &description).await?;
            if state == "success" {
                let replaced =
                    outbox::replaced_by(&mut tx, event.environment_id, event.deployment_id).await?;
                let description = truncate(&format!("replaced by {}", event.version));
                for older in replaced {
                    outbox::push(&mut tx, older, "inactive", &description).await?;
                }
            }
        }
        let ids: Vec<i64> = events.iter().map(|e| e.queue_id).collect();
        outbox::dequeue(&mut tx, &ids).await?;
        tx.commit().await?;
        Ok(events.len())
    }

    /// Posts the first due status of each deployment.
    async fn deliver(&self, conn: &mut PgConnection) -> Result<(), RelayError> {
        loop {
            let due = outbox::due(conn, 50).await?;
            if due.is_empty() {
                return Ok(());
            }
            let mut progressed = false;
            for status in due {
                match self.post(&status).await {
                    Ok(()) => {
                        metrics::counter!("slipway_github_statuses_total", "outcome" => "delivered").increment(1);
                        outbox::delivered(conn, status.id).await?;
                        progressed = true;
                    }
                    Err(Failure::Permanent(error)) => {
                        tracing::warn!(deployment = %status.deployment_id, state = %status.state, %error, "GitHub refused a deployment status; giving it up");
                        metrics::counter!("slipway_github_statuses_total", "outcome" => "abandoned").increment(1);
                        outbox::abandoned(conn, status.id, &error).await?;
                        progressed = true;
                    }
                    Err(Failure::Retry(error))
                        if status.attempts + 1 >= self.settings.max_attempts =>
                    {
                        tracing::warn!(deployment = %status.deployment_id, state = %status.state, %error, "a deployment status failed too often; giving it up");
                        metrics::counter!("slipway_github_statuses_total", "outcome" => "abandoned").increment(1);
                        outbox::abandoned(conn, status.id, &error).await?;
                        progressed = true;
                    }
                    Err(Failure::Retry(error)) => {
                        metrics::counter!("slipway_github_statuses_total", "outcome" => "retried")
                            .increment(1);
                        let delay = self.backoff(status.attempts);
                        tracing::info!(deployment = %status.deployment_id, state = %status.state, %error, retry_in = ?delay, "posting a deployment status failed; will retry");
                        let retry_at = Utc::now()
                            + chrono::Duration::from_std(delay)
                                .unwrap_or(chrono::Duration::seconds(1));
                        outbox::failed(conn, status.id, &error, retry_at).await?;
                    }
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let exp = u32::try_from(attempts.clamp(0, 20)).unwrap_or(0);
        self.settings
            .retry_base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.settings.retry_max)
    }

    async fn post(&self, status: &PendingStatus) -> Result<(), Failure> {
        let url = status_url(
            &self.settings.api_url,
            &status.repository,
            status.github_deployment_id,
        )
        .map_err(Failure::Permanent)?;
        let mut body = serde_json::json!({
            "state": status.state,
            "description": status.description,
            "environment": status.github_environment,
        });
        if let Some(base) = &self.settings.public_url {
            body["log_url"] = serde_json::Value::String(format!(
                "{}/v1/deployments/{}",
                base.trim_end_matches('/'),
                status.deployment_id
            ));
        }
        let response = self
            .client
            .post(url)
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .bearer_auth(&self.settings.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("request failed: {e}")))?;
        let code = response.status();
        if code.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let error = format!("GitHub answered {code}: {}", truncate(&text));
        if code.is_server_error() || code.as_u16() == 429 || code.as_u16() == 408 {
            Err(Failure::Retry(error))
        } else {
            Err(Failure::Permanent(error))
        }
    }
}

/// `{api_url}/repos/{owner}/{name}/deployments/{id}/statuses`, each part one path segment
/// (percent-encoded as such), for a repository that is a GitHub `owner/name`
/// ([`slipway_core::trigger::github_repository`]); an error otherwise.
pub fn status_url(
    api_url: &str,
    repository: &str,
    github_deployment_id: i64,
) -> Result<reqwest::Url, String> {
    let (owner, name) = slipway_core::trigger::github_repository(repository)
        .ok_or_else(|| format!("{repository:?} is not a GitHub owner/name"))?;
    let mut url = reqwest::Url::parse(api_url)
        .map_err(|e| format!("the GitHub API URL {api_url:?} does not parse: {e}"))?;
    let id = github_deployment_id.to_string();
    url.path_segments_mut()
        .map_err(|()| format!("the GitHub API URL {api_url:?} cannot take a path"))?
        .pop_if_empty()
        .extend(["repos", owner, name, "deployments", &id, "statuses"]);
    Ok(url)
}

enum Failure {
    Retry(String),
    Permanent(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_urls_are_built_from_segments_of_a_valid_repository() {
        let url = status_url("https://api.github.com", "acme/web", 42).map(String::from);
        assert_eq!(
            url.as_deref(),
            Ok("https://api.github.com/repos/acme/web/deployments/42/statuses")
        );
        // GitHub Enterprise Server's API lives under a path; a trailing slash is no segment.
        for base in ["https://ghe.example/api/v3", "https://ghe.example/api/v3/"] {
            let url = status_url(base, "Acme-Corp/web.site", 7).map(String::from);
            assert_eq!(
                url.as_deref(),
                Ok("https://ghe.example/api/v3/repos/Acme-Corp/web.site/deployments/7/statuses")
            );
        }
        // A repository that would climb out of /repos/{owner}/{name} never becomes a URL.
        for bad in [
            "../orgs",
            "acme/..",
            "acme/../../x",
            "acme/web?x=1",
            "acme/web#x",
            "acme",
        ] {
            assert!(
                status_url("https://api.github.com", bad, 1).is_err(),
                "{bad}"
            );
        }
    }
}
