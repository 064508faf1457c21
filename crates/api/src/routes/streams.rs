//! Live events over Server-Sent Events: one deployment's log, or the feed of all of them.
//! Streams resume from `Last-Event-ID`, send keep-alives, and are woken by NOTIFY (with a
//! periodic re-read as the fallback).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use slipway_core::DeploymentEvent;
use slipway_store::{PgPool, events};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use uuid::Uuid;

use crate::event_hub::EventSignal;
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

const PAGE: i64 = 200;
const RECHECK: Duration = Duration::from_secs(5);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Which events a stream carries.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// One deployment's log; ids are its `seq`.
    Deployment(Uuid),
    /// Every deployment's events; ids are feed positions.
    All,
}

/// Whose view of the feed a stream carries (`None`: everything).
type Viewer = Option<crate::auth::Principal>;

struct Cursor {
    scope: Scope,
    viewer: Viewer,
    after: i64,
    pending: VecDeque<(i64, DeploymentEvent)>,
    signals: broadcast::Receiver<EventSignal>,
    /// The server is shutting down: the stream ends.
    closing: watch::Receiver<bool>,
    pool: PgPool,
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

/// An SSE response for `scope`, starting after `after`.
pub fn stream(
    state: &AppState,
    scope: Scope,
    viewer: Viewer,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let cursor = Cursor {
        scope,
        viewer,
        after,
        pending: VecDeque::new(),
        signals: state.events.subscribe(),
        closing: state.events.closing(),
        pool: state.pool.clone(),
    };
    let stream = futures::stream::unfold(cursor, next);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

async fn next(mut c: Cursor) -> Option<(Result<Event, Infallible>, Cursor)> {
    loop {
        if *c.closing.borrow() {
            return None;
        }
        if let Some((id, event)) = c.pending.pop_front() {
            c.after = id;
            return Some((Ok(sse_event(id, &event)), c));
        }
        match fetch(&c).await {
            Ok(found) if !found.is_empty() => {
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
        tokio::select! {
            _ = tokio::time::timeout(RECHECK, relevant) => {}
            Ok(_) = closing => return None,
        }
    }
}

async fn fetch(c: &Cursor) -> Result<Vec<(i64, DeploymentEvent)>, slipway_store::StoreError> {
    let mut conn = c.pool.acquire().await?;
    match c.scope {
        Scope::Deployment(id) => {
            let page = events::list(&mut conn, id, Some(c.after), PAGE).await?;
            Ok(page.items.into_iter().map(|e| (e.seq, e)).collect())
        }
        Scope::All => {
            let visible_to = c.viewer.as_ref().and_then(|p| p.visible_to());
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
    Ok(stream(&state, Scope::All, Some(principal), after))
}
