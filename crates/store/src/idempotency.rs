//! Idempotency keys: the stored response of a request that created or commanded something,
//! replayed when the same key comes again.
//!
//! All of it runs inside the caller's transaction: [`begin`] takes a transaction-scoped
//! advisory lock on the key, so a second request with the same key while the first is still
//! running is told so at once, and [`complete`] stores the response in the same transaction
//! as the write it describes — the key and its effect commit together or not at all.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::StoreError;

/// The response stored under a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: serde_json::Value,
    pub location: Option<String>,
}

/// A response as stored and replayed by the one-statement create path: the JSON body as text,
/// exactly what the first answer sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

/// What a key that an insert found taken holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// The same request: answer with its stored response.
    Replay(RawResponse),
    /// Another request body.
    Mismatch,
    /// Nothing (any more): the key expired or its holder did not commit; try again.
    Vacant,
}

/// Reads the live (unexpired) response stored under a key, without locking.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn taken(conn: &mut PgConnection, key: &KeyRef<'_>) -> Result<Taken, StoreError> {
    let row: Option<(Vec<u8>, i16, String, Option<String>)> = sqlx::query_as(
        "SELECT request_hash, response_status, response_body::text, response_location
         FROM idempotency_keys WHERE scope = $1 AND key = $2 AND expires_at > now()",
    )
    .bind(key.scope)
    .bind(key.key)
    .fetch_optional(conn)
    .await?;
    let Some((hash, status, body, location)) = row else {
        return Ok(Taken::Vacant);
    };
    if hash != key.request_hash {
        return Ok(Taken::Mismatch);
    }
    Ok(Taken::Replay(RawResponse {
        status: u16::try_from(status).map_err(|_| StoreError::Corrupt("status".into()))?,
        body,
        location,
    }))
}

/// What to do with a request that carries an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// First use (or the earlier use expired): do the work, then [`complete`].
    Fresh,
    /// Seen before with the same request: answer with the stored response.
    Replay(StoredResponse),
    /// Seen before with a different request.
    Mismatch,
    /// Another request with this key is being processed right now.
    InFlight,
}

/// Identifies one key: who used it, on which operation.
#[derive(Debug, Clone)]
pub struct KeyRef<'a> {
    /// Principal, method and route, e.g. `anonymous POST /v1/apps`.
    pub scope: &'a str,
    pub key: &'a str,
    /// Digest of the canonical request body.
    pub request_hash: &'a [u8],
}

impl KeyRef<'_> {
    fn lock_id(&self) -> i64 {
        let digest = Sha256::new()
            .chain_update(self.scope.as_bytes())
            .chain_update([0u8])
            .chain_update(self.key.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: Vec<u8>,
    response_status: i16,
    response_body: serde_json::Value,
    response_location: Option<String>,
    expires_at: DateTime<Utc>,
}

/// Locks the key for this transaction and says whether the request is new, a replay, a
/// mismatch, or racing another request with the same key.
#[tracing::instrument(skip_all)]
pub async fn begin(conn: &mut PgConnection, key: &KeyRef<'_>) -> Result<KeyState, StoreError> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(key.lock_id())
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(KeyState::InFlight);
    }
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT request_hash, response_status, response_body, response_location, expires_at
         FROM idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(key.scope)
    .bind(key.key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(KeyRow {
        request_hash: hash,
        response_status: status,
        response_body: body,
        response_location: location,
        expires_at,
    }) = row
    else {
        return Ok(KeyState::Fresh);
    };
    if expires_at <= Utc::now() {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(key.scope)
            .bind(key.key)
            .execute(conn)
            .await?;
        return Ok(KeyState::Fresh);
    }
    if hash != key.request_hash {
        return Ok(KeyState::Mismatch);
    }
    Ok(KeyState::Replay(StoredResponse {
        status: u16::try_from(status).map_err(|_| StoreError::Corrupt("status".into()))?,
        body,
        location,
    }))
}

/// Stores the response for a key taken with [`begin`], valid for `ttl`.
#[tracing::instrument(skip_all)]
pub async fn complete(
    conn: &mut PgConnection,
    key: &KeyRef<'_>,
    response: &StoredResponse,
    ttl: std::time::Duration,
) -> Result<(), StoreError> {
    let ttl = chrono::Duration::from_std(ttl).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO idempotency_keys
             (scope, key, request_hash, response_status, response_body, response_location, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + $7)",
    )
    .bind(key.scope)
    .bind(key.key)
    .bind(key.request_hash)
    .bind(i16::try_from(response.status).map_err(|_| StoreError::Corrupt("status".into()))?)
    .bind(&response.body)
    .bind(&response.location)
    .bind(ttl)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes expired keys; returns how many went.
#[tracing::instrument(skip_all)]
pub async fn purge_expired(conn: &mut PgConnection) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= now()")
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
