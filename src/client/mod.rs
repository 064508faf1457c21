//! An HTTP client of the Slipway API for the command line: bearer token, problem documents,
//! safe retries, paged lists and event streams.

mod problem;
mod sse;

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;

pub use problem::{InvalidField, Problem};
pub use sse::{SseEvent, SseParser};

/// The longest a plain request may take; the server's own limit is 30 s by default.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(40);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to the API did not give the answer asked for.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL given is not one the client can use.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// No answer: connection refused or reset, DNS, TLS, a timeout.
    #[error("{what}: {message}")]
    Transport { what: String, message: String },
    /// The server answered with an error status and a problem document (or a body that we
    /// read as one).
    #[error("{what}: {status} {problem}")]
    Problem {
        what: String,
        status: u16,
        problem: Box<Problem>,
    },
    /// A success status with a body that is not what the API documents.
    #[error("{what}: unexpected answer: {message}")]
    Decode { what: String, message: String },
}

impl ClientError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Problem { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Trying again may succeed (and, with the same Idempotency-Key, does no harm): no
    /// answer, a 5xx, 408, 429, or the same key still being processed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Problem {
                status, problem, ..
            } => {
                matches!(*status, 408 | 429 | 500..=599)
                    || (*status == 409 && problem.slug() == "idempotency-key-in-flight")
            }
            Self::InvalidUrl { .. } | Self::Decode { .. } => false,
        }
    }
}

/// How often and how patiently failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Six tries over about 13 s: enough to ride out a server restart.
    fn default() -> Self {
        Self {
            attempts: 6,
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// A client of one Slipway server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    retry: RetryPolicy,
    page_size: usize,
}

impl Client {
    /// A client of the server at `url` (`http://host:port`, optionally with a path prefix),
    /// sending `Authorization: Bearer <token>` when a token is given. The process must have
    /// installed a rustls crypto provider first.
    pub fn new(url: &str, token: Option<String>) -> Result<Self, ClientError> {
        let invalid = |reason: String| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let mut base = Url::parse(url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".into()));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("no query or fragment, please".into()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("slipway-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| ClientError::Transport {
                what: "building the HTTP client".into(),
                message: chain(&e),
            })?;
        Ok(Self {
            http,
            base,
            token: token.filter(|t| !t.is_empty()),
            retry: RetryPolicy::default(),
            page_size: 500,
        })
    }

    /// Items asked for per page by [`Client::list_all`] (the API allows 1–500).
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size.clamp(1, 500);
        self
    }

    /// The URL of `path` (relative, like `v1/apps`) with `query` pairs appended.
    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, ClientError> {
        let mut url =
            self.base
                .join(path.trim_start_matches('/'))
                .map_err(|e| ClientError::InvalidUrl {
                    url: format!("{}{path}", self.base),
                    reason: e.to_string(),
                })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// `GET path?query` answered with JSON; retried while retrying may help.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, ClientError> {
        let url = self.url(path, query)?;
        let what = format!("GET {}", url.path());
        let resp = self
            .send_retrying(&what, || {
                self.request(Method::GET, url.clone())
                    .header(ACCEPT, "application/json")
                    .timeout(REQUEST_TIMEOUT)
            })
            .await?;
        json_body(&what, resp).await
    }

    /// `POST path` with a JSON body and an `Idempotency-Key`, so that a retry after a lost
    /// answer replays the first answer instead of doing the work twice.
    pub async fn post(
        &self,
        path: &str,
        body: &Value,
        idempotency_key: &str,
    ) -> Result<Value, ClientError> {
        let url = self.url(path, &[])?;
        let what = format!("POST {}", url.path());
        let key = HeaderValue::from_str(idempotency_key).map_err(|_| ClientError::Decode {
            what: what.clone(),
            message: "the Idempotency-Key must be visible ASCII".into(),
        })?;
        let resp = self
            .send_retrying(&what, || {
                self.request(Method::POST, url.clone())
                    .header(ACCEPT, "application/json")
                    .header("idempotency-key", key.clone())
                    .json(body)
                    .timeout(REQUEST_TIMEOUT)
            })
            .await?;
        json_body(&what, resp).await
    }

    /// Every item of a paged list, following `next_cursor`, up to `max` items.
    pub async fn list_all(
        &self,
        path: &str,
        query: &[(&str, &str)],
        max: Option<usize>,
    ) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let left = max.map(|m| m.saturating_sub(items.len()));
            if left == Some(0) {
                return Ok(items);
            }
            let limit = left
                .unwrap_or(self.page_size)
                .min(self.page_size)
                .to_string();
            let mut q: Vec<(&str, &str)> = query.to_vec();
            q.push(("limit", &limit));
            if let Some(c) = &cursor {
                q.push(("cursor", c));
            }
            let page = self.get(path, &q).await?;
            let Some(found) = page.get("items").and_then(Value::as_array) else {
                return Err(ClientError::Decode {
                    what: format!("GET /{path}"),
                    message: "a list without `items`".into(),
                });
            };
            items.extend(found.iter().cloned());
            match page.get("next_cursor").and_then(Value::as_str) {
                Some(next) if !found.is_empty() => cursor = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }

    /// Opens an event stream (`Accept: text/event-stream`), resuming after `last_event_id`.
    /// One attempt: the caller decides when to reconnect.
    pub async fn stream(
        &self,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<Response, ClientError> {
        let url = self.url(path, &[])?;
        let what = format!("GET {} (event stream)", url.path());
        let mut req = self
            .request(Method::GET, url)
            .header(ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        // No overall timeout: the stream lasts, and its reader times out idle reads. Only
        // the wait for the response head is bounded.
        match tokio::time::timeout(REQUEST_TIMEOUT, req.send()).await {
            Ok(sent) => checked(&what, sent).await,
            Err(_) => Err(ClientError::Transport {
                what,
                message: format!("no response within {}s", REQUEST_TIMEOUT.as_secs()),
            }),
        }
    }

    async fn send_retrying(
        &self,
        what: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            let (result, retry_after) = match make().send().await {
                Ok(resp) => {
                    let retry_after = retry_after(&resp);
                    (checked(what, Ok(resp)).await, retry_after)
                }
                Err(e) => (checked(what, Err(e)).await, None),
            };
            match result {
                Err(e) if e.is_retryable() && attempt < self.retry.attempts => {
                    let wait = retry_after.unwrap_or(delay).min(self.retry.max_delay * 6);
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// A `Retry-After` in seconds, when the server sent one.
fn retry_after(resp: &Response) -> Option<Duration> {
    let status = resp.status();
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    resp.headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// A 2xx response, or the error it stands for.
async fn checked(
    what: &str,
    sent: Result<Response, reqwest::Error>,
) -> Result<Response, ClientError> {
    let resp = sent.map_err(|e| ClientError::Transport {
        what: what.to_owned(),
        message: chain(&e),
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let is_json = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let body = resp.text().await.unwrap_or_default();
    let problem = is_json
        .then(|| serde_json::from_str::<Problem>(&body).ok())
        .flatten()
        .unwrap_or_else(|| Problem {
            title: Some(
                status
                    .canonical_reason()
                    .unwrap_or("Unexpected status")
                    .to_owned(),
            ),
            detail: Some(body.trim().chars().take(500).collect()),
            status: Some(status.as_u16()),
            ..Problem::default()
        });
    Err(ClientError::Problem {
        what: what.to_owned(),
        status: status.as_u16(),
        problem: Box::new(problem),
    })
}

async fn json_body(what: &str, resp: Response) -> Result<Value, ClientError> {
    let bytes = resp.bytes().await.map_err(|e| ClientError::Transport {
        what: what.to_owned(),
        message: chain(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

/// An error and its causes, `outer: inner: innermost`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
