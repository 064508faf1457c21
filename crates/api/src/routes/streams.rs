//! Live events over Server-Sent Events: one deployment's log, or the feed of all of them.
//! Streams resume from `Last-Event-ID`, send keep-alives, and are woken by NOTIFY (with a
//! periodic re-read as the fallback).
//!
//! A stream carries only what its caller may read for as long as it is open: it ends when
//! the caller's token stops being accepted, a deployment's stream checks its caller may
//! still read the deployment before it sends what it read and every [`REAUTHORIZE`] (a role
//! binding removed, the app deleted: it ends), and the feed filters every read by the
//! caller's role bindings as they are at that moment.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use slipway_core::{DeploymentEvent, Role};
use slipway_store::events;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use crate::event_hub::EventSignal;
use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

const PAGE: i64 = 200;
const RECHECK: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a deployment's stream checks that its caller may still read the deployment.
pub const REAUTHORIZE: Duration = Duration::from_secs(5);

/// Which events a stream carries.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// One deployment's log; ids are its `seq`.
    Deployment(Uuid),
    /// Every deployment's events; ids are feed positions.
    All,
}

/// Who reads a stream.
type Viewer = crate::auth::Principal;

struct Cursor {
    scope: Scope,
    viewer: Viewer,
    after: i64,
    pending: VecDeque<(i64, DeploymentEvent)>,
    signals: broadcast::Receiver<EventSignal>,
    /// The server is shutting down: the stream ends.
    closing: watch::Receiver<bool>,
    state: AppState,
    /// When the viewer's right to read the deployment is checked again.
    reauthorize_at: Instant,
    /// When the viewer's token stops being accepted: the stream ends then.
    ends_at: Option<Instant>,
}

impl Cursor {
    fn expired(&self) -> bool {
        self.ends_at.is_some_and(|at| Instant::now() >= at)
    }

    /// Whether the viewer may still read what the stream carries. The feed filters each read
    /// by the viewer's current bindings; a deployment's stream asks again before it sends
    /// what it read (`now`) and otherwise every [`REAUTHORIZE`]. An error that says nothing
    /// about access (the database unreachable) keeps the stream, to ask again later.
    async fn still_allowed(&mut self, now: bool) -> bool {
        let Scope::Deployment(id) = self.scope else {
            return true;
        };
        if !now && Instant::now() < self.reauthorize_at {
            return true;
        }
        self.reauthorize_at = Instant::now() + REAUTHORIZE;
        match self
            .viewer
            .require_deployment(&self.state, id, Role::Viewer)
            .await
        {
            Ok(_) => true,
            Err(e) => !matches!(e.kind(), ProblemType::NotFound | ProblemType::Forbidden),
        }
    }
}

/// The instant `until` (wall-clock) falls on; now if it has passed.
fn instant_of(until: SystemTime) -> Instant {
    let left = until
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now()
        .checked_add(left)
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
}

/// The `Last-Event-ID` header as the document describes it (`params(LastEventId)`).
#[derive(Debug)]
pub struct LastEventId;

impl utoipa::IntoParams for LastEventId {
    fn into_params(
        _: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        vec![crate::extract::header_parameter(
            "Last-Event-ID",
            "Resume after this event id (the `id` of the last event received).",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some("^[0-9]{1,18}$")),
            None,
        )]
    }
}

/// The `Last-Event-ID` a client resumes from.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get("last-event-id") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    crate::problem::ProblemType::BadRequest,
                    "Last-Event-ID must be an event id this stream sent",
                )
            }),
    }
}

/// An SSE response for `scope` as `viewer` may read it (the caller checked they may now),
/// starting after `after`.
pub fn stream(
    state: &AppState,
    scope: Scope,
    viewer: Viewer,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let cursor = Cursor {
        scope,
        ends_at: viewer.accepted_until().map(instant_of),
        viewer,
        after,
        pending: VecDeque::new(),
        signals: state.events.subscribe(),
        closing: state.events.closing(),
        state: state.clone(),
        reauthorize_at: Instant::now() + REAUTHORIZE,
    };
    let stream = futures::stream::unfold(cursor, next);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

async fn next(mut c: Cursor) -> Option<(Result<Event, Infallible>, Cursor)> {
    loop {
        if *c.closing.borrow() || c.expired() || !c.still_allowed(false).await {
            return None;
        }
        if let Some((id, event)) = c.pending.pop_front() {
            c.after = id;
            return Some((Ok(sse_event(id, &event)), c));
        }
        match fetch(&c).await {
            Ok(found) if !found.is_empty() => {
                if !c.still_allowed(true).await {
                    return None;
                }
                c.pending.extend(found);
                continue;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading events for a stream failed; retrying"),
        }
        let scope = c.scope;
        let signals = &mut c.signals;
        let relevant = async move {
            loop {
                match signals.recv().await {
                    Ok(signal) => match scope {
                        Scope::All => return,
                        Scope::Deployment(id) if signal.deployment == id => return,
                        Scope::Deployment(_) => {}
                    },
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let closing = c.closing.wait_for(|closing| *closing);
        let ends_at = c.ends_at;
        let expiry = async move {
            match ends_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::timeout(RECHECK, relevant) => {}
            Ok(_) = closing => return None,
            () = expiry => return None,
        }
    }
}

async fn fetch(c: &Cursor) -> Result<Vec<(i64, DeploymentEvent)>, slipway_store::StoreError> {
    let mut conn = c.state.pool.acquire().await?;
    match c.scope {
        Scope::Deployment(id) => {
            let page = events::list(&mut conn, id, Some(c.after), PAGE).await?;
            Ok(page.items.into_iter().map(|e| (e.seq, e)).collect())
        }
        Scope::All => {
            let visible_to = c.viewer.visible_to();
            events::feed(&mut conn, c.after, PAGE, visible_to.as_ref()).await
        }
    }
}

fn sse_event(id: i64, event: &DeploymentEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .id(id.to_string())
        .event(&event.kind)
        .data(data)
}

/// Every deployment's events as they happen (Server-Sent Events).
///
/// Without `Last-Event-ID` the feed starts with the next event; with it, right after that one.
/// It carries the events of the deployments the caller's role bindings let them read when
/// each event is read, and ends when the caller's token stops being accepted.
#[utoipa::path(get, path = "/v1/events", operation_id = "streamEvents", tag = "deployments",
    params(LastEventId),
    responses(
        (status = 200, description = "An event stream; each event's data is a DeploymentEvent", body = DeploymentEvent, content_type = "text/event-stream"),
        (status = 400, description = "Invalid Last-Event-ID", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn all(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match last_event_id(&headers)? {
        Some(after) => after,
        None => {
            let mut conn = state.pool.acquire().await?;
            events::feed_head(&mut conn).await?
        }
    };
    Ok(stream(&state, Scope::All, principal, after))
}
