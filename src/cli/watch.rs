//! Following a deployment to its end: its event stream (resumed with `Last-Event-ID` after a
//! lost connection) says when to look again, and a re-read every few seconds covers a stream
//! that stays quiet. Nothing is held in memory but the last event seen and the last state.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use uuid::Uuid;

use super::progress::Observer;
use super::view;
use crate::client::{Client, ClientError, SseParser};

/// Re-read the deployment at least this often, whatever the stream says.
const REFRESH: Duration = Duration::from_secs(5);
/// The server sends a keep-alive every 15 s: this much silence means the stream is dead.
const SILENCE: Duration = Duration::from_secs(45);
const TICK: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a watch ended.
#[derive(Debug)]
pub(super) enum Ended {
    /// The deployment reached a terminal status (the document is its last state).
    Finished(Value),
    /// The deadline passed first (the last state seen; null when none was).
    TimedOut(Value),
}

/// Follows deployment `id` until it ends or `deadline` passes, telling `observer` each event
/// and each state read. A terminal status counts as the end only once the log has grown
/// past `min_seq`: after a `retry`, the previous attempt's end is not the one waited for.
pub(super) async fn watch(
    client: &Client,
    id: Uuid,
    deadline: Option<Instant>,
    min_seq: i64,
    observer: &mut dyn Observer,
) -> Result<Ended, ClientError> {
    let mut w = Watch {
        client,
        deployment_path: format!("v1/deployments/{id}"),
        events_path: format!("v1/deployments/{id}/events"),
        deadline,
        last_seq: 0,
        min_seq,
        observer,
    };
    w.run().await
}

/// The `seq` of the last event of deployment `id` so far (0 when none).
pub(super) async fn last_seq(client: &Client, id: Uuid) -> Result<i64, ClientError> {
    let events = client
        .list_all(&format!("v1/deployments/{id}/events"), &[], None)
        .await?;
    Ok(events
        .iter()
        .filter_map(|e| e.get("seq").and_then(Value::as_i64))
        .max()
        .unwrap_or(0))
}

struct Watch<'a> {
    client: &'a Client,
    deployment_path: String,
    events_path: String,
    deadline: Option<Instant>,
    last_seq: i64,
    min_seq: i64,
    observer: &'a mut dyn Observer,
}

/// What a look at the deployment found.
enum Look {
    Going(Value),
    Ended(Value),
}

impl Watch<'_> {
    async fn run(&mut self) -> Result<Ended, ClientError> {
        let mut d = match within(self.deadline, self.client.get(&self.deployment_path, &[])).await {
            Some(got) => got?,
            None => return Ok(Ended::TimedOut(Value::Null)),
        };
        // The log so far, then the state it led to; the stream carries on after it.
        self.drain().await?;
        if let Some(fresh) = self.reread_if_stale(&d).await? {
            d = fresh;
        }
        self.observer.deployment(&d);
        if self.ended(&d) {
            return Ok(Ended::Finished(d));
        }
        let mut backoff = Duration::from_secs(1);
        loop {
            if self.expired() {
                return Ok(Ended::TimedOut(d));
            }
            let last = (self.last_seq > 0).then(|| self.last_seq.to_string());
            let opened = within(
                self.deadline,
                self.client.stream(&self.events_path, last.as_deref()),
            )
            .await;
            let mut resp = match opened {
                None => return Ok(Ended::TimedOut(d)),
                Some(Ok(resp)) => resp,
                Some(Err(e)) if e.is_retryable() => {
                    self.observer
                        .trouble(&format!("{e}; reconnecting in {}s", backoff.as_secs()));
                    self.sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Some(Err(e)) => return Err(e),
            };
            let mut parser = SseParser::new();
            let mut delivered = false;
            let mut heard = Instant::now();
            let mut refreshed = Instant::now();
            loop {
                let wait = self.remaining().map_or(TICK, |r| r.min(TICK));
                let mut changed = false;
                match tokio::time::timeout(wait, resp.chunk()).await {
                    Ok(Ok(Some(bytes))) => {
                        heard = Instant::now();
                        for sse in parser.push(&bytes) {
                            let Ok(event) = serde_json::from_str::<Value>(&sse.data) else {
                                continue;
                            };
                            let seq = sse
                                .id
                                .and_then(|id| id.parse::<i64>().ok())
                                .or_else(|| event.get("seq").and_then(Value::as_i64))
                                .unwrap_or(self.last_seq + 1);
                            if seq <= self.last_seq {
                                continue;
                            }
                            self.last_seq = seq;
                            self.observer.event(&event);
                            changed = true;
                            delivered = true;
                        }
                    }
                    Ok(Ok(None)) => {
                        self.observer
                            .trouble("the event stream ended; reconnecting");
                        break;
                    }
                    Ok(Err(e)) => {
                        self.observer.trouble(&format!(
                            "the event stream broke ({}); reconnecting",
                            crate::client::chain(&e)
                        ));
                        break;
                    }
                    Err(_) => self.observer.tick(),
                }
                if changed || refreshed.elapsed() >= REFRESH {
                    refreshed = Instant::now();
                    match self.look(d).await? {
                        Look::Ended(end) => return Ok(Ended::Finished(end)),
                        Look::Going(now) => d = now,
                    }
                }
                if self.expired() {
                    return Ok(Ended::TimedOut(d));
                }
                if heard.elapsed() >= SILENCE {
                    self.observer
                        .trouble("no keep-alive from the event stream; reconnecting");
                    break;
                }
            }
            // Whatever ended the stream, the deployment may have ended meanwhile.
            match self.look(d).await? {
                Look::Ended(end) => return Ok(Ended::Finished(end)),
                Look::Going(now) => d = now,
            }
            // A stream that ends before it delivers anything is not hammered.
            if delivered {
                backoff = Duration::from_secs(1);
            } else {
                self.sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Re-reads the deployment; keeps `last` when the server cannot be reached right now.
    /// When its state moved, the events that moved it are told first (the stream may not
    /// have delivered them yet), so a log reads in order.
    async fn look(&mut self, last: Value) -> Result<Look, ClientError> {
        let read = within(self.deadline, self.client.get(&self.deployment_path, &[])).await;
        let d = match read {
            None => return Ok(Look::Going(last)),
            Some(Ok(d)) => d,
            Some(Err(e)) if e.is_retryable() => {
                self.observer.trouble(&e.to_string());
                return Ok(Look::Going(last));
            }
            Some(Err(e)) => return Err(e),
        };
        let moved = ["status", "phase", "step"]
            .iter()
            .any(|k| d.get(k) != last.get(k));
        if view::is_terminal(&d) {
            self.drain().await?;
            let d = self.reread_if_stale(&d).await?.unwrap_or(d);
            self.observer.deployment(&d);
            if self.ended(&d) {
                return Ok(Look::Ended(d));
            }
            return Ok(Look::Going(d));
        }
        if moved {
            match within(self.deadline, self.drain()).await {
                Some(Err(e)) if !e.is_retryable() => return Err(e),
                _ => {}
            }
        }
        self.observer.deployment(&d);
        Ok(Look::Going(d))
    }

    /// A terminal state read *before* the log that passed `min_seq` may predate it: after a
    /// `retry`, the engine's `retried` event and the requeue commit together, so a state read
    /// earlier is still the old attempt's end. Reads the deployment again (now after the log)
    /// in that case; `None` when `d` is known to be current.
    async fn reread_if_stale(&self, d: &Value) -> Result<Option<Value>, ClientError> {
        if self.min_seq == 0 || !self.ended(d) {
            return Ok(None);
        }
        match within(self.deadline, self.client.get(&self.deployment_path, &[])).await {
            Some(got) => got.map(Some),
            None => Ok(None),
        }
    }

    /// Tells the events after the last one told, read from the JSON pages: they hold every
    /// event committed so far, which the stream may not have delivered yet.
    async fn drain(&mut self) -> Result<(), ClientError> {
        let events = self.client.list_all(&self.events_path, &[], None).await?;
        for e in events {
            let seq = e.get("seq").and_then(Value::as_i64).unwrap_or(0);
            if seq > self.last_seq {
                self.last_seq = seq;
                self.observer.event(&e);
            }
        }
        Ok(())
    }

    fn ended(&self, d: &Value) -> bool {
        view::is_terminal(d) && self.last_seq > self.min_seq
    }

    fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    fn expired(&self) -> bool {
        self.remaining().is_some_and(|r| r.is_zero())
    }

    async fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        let until = self.deadline.map_or(until, |dl| dl.min(until));
        tokio::time::sleep_until(until).await;
    }
}

/// `fut`, or `None` when `deadline` passes first.
async fn within<T>(deadline: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, fut).await.ok(),
        None => Some(fut.await),
    }
}
