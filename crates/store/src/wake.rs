//! Wake-up hints for the engine over LISTEN/NOTIFY. A hint only shortens a wait: engines
//! also poll for due work, so a lost notification delays, never loses, anything.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::StoreError;

/// The channel engines listen on; the payload is a deployment id.
pub const CHANNEL: &str = "slipway_wake";
/// The channel SSE streams listen on; the payload is `<deployment id>:<seq>`.
pub const EVENTS_CHANNEL: &str = "slipway_events";

/// Asks engines to look at `deployment` now (delivered when the transaction commits).
pub async fn notify(conn: &mut PgConnection, deployment: Uuid) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(deployment.to_string())
        .execute(conn)
        .await?;
    Ok(())
}
