//! Fans NOTIFYs about new events out to the SSE streams of this process. A notification only
//! says "look again": streams read the events themselves from the store, so a missed or
//! lagged notification delays, never loses, an event.

use std::sync::Arc;
use std::time::Duration;

use slipway_store::{PgPool, wake};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

/// A new event's deployment (the payload of a `slipway_events` notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSignal {
    pub deployment: Uuid,
}

/// One listener per process, many subscribers.
#[derive(Debug, Clone)]
pub struct EventHub {
    tx: broadcast::Sender<EventSignal>,
    closing: Arc<watch::Sender<bool>>,
}

impl EventHub {
    /// Starts the listener task (inside a Tokio runtime).
    pub fn start(pool: PgPool) -> Self {
        let (tx, _) = broadcast::channel(4096);
        tokio::spawn(listen(pool, tx.clone()));
        Self {
            tx,
            closing: Arc::new(watch::channel(false).0),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EventSignal> {
        self.tx.subscribe()
    }

    /// Ends every open stream (the server is shutting down): a graceful shutdown waits for
    /// open responses, and a stream would otherwise keep it waiting forever. Clients resume
    /// elsewhere with `Last-Event-ID`.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once [`EventHub::close`] was called.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

async fn listen(pool: PgPool, tx: broadcast::Sender<EventSignal>) {
    loop {
        let connected = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(wake::EVENTS_CHANNEL).await?;
            loop {
                let note = listener.recv().await?;
                let id = note
                    .payload()
                    .split(':')
                    .next()
                    .and_then(|id| id.parse().ok());
                if let Some(deployment) = id {
                    // No subscriber is fine: nobody is streaming right now.
                    let _ = tx.send(EventSignal { deployment });
                }
            }
            #[expect(unreachable_code, reason = "the loop only ends with an error")]
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if let Err(e) = connected {
            tracing::warn!(error = %e, "event listener lost its connection; reconnecting");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
