//! Running a creating or commanding request under its `Idempotency-Key`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde::Serialize;
use slipway_store::idempotency::{self, KeyRef, KeyState, StoredResponse};
use slipway_store::{PgConnection, Postgres, Transaction};

use crate::auth::audit::AuditContext;
use crate::problem::{ApiError, ProblemType};
use crate::state::AppState;

/// A successful write: its status, JSON body and `Location`.
#[derive(Debug)]
pub(crate) struct Written {
    pub status: StatusCode,
    pub body: serde_json::Value,
    pub location: Option<String>,
}

impl Written {
    pub(crate) fn created(body: &impl Serialize, location: String) -> Result<Self, ApiError> {
        Ok(Self {
            status: StatusCode::CREATED,
            body: serde_json::to_value(body).map_err(|e| ApiError::internal(&e))?,
            location: Some(location),
        })
    }

    fn into_response(self, replayed: bool) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        let headers = response.headers_mut();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            headers.insert(header::LOCATION, location);
        }
        if replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

/// Who sends which key to which operation, and the digest of what they sent.
#[derive(Debug)]
pub(crate) struct KeyedRequest<'a> {
    pub key: Option<&'a str>,
    /// Principal, method and path.
    pub scope: String,
    pub digest: &'a [u8; 32],
    /// The request's audit row, appended in the transaction of a successful write.
    pub audit: &'a AuditContext,
}

/// Runs `work` in one transaction with the key's bookkeeping: a replay of a stored request
/// answers the stored response, the same key with another body 422, a key whose first request
/// is still running 409. Only successful writes are stored, together with their effect and
/// the request's audit row (replays and refusals are audited by the audit layer).
pub(crate) async fn run<F>(
    state: &AppState,
    request: KeyedRequest<'_>,
    work: F,
) -> Result<Response, ApiError>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Written, ApiError>>,
{
    let mut tx = state.pool.begin().await?;
    let key = request.key.map(|key| KeyRef {
        scope: &request.scope,
        key,
        request_hash: request.digest,
    });
    if let Some(key) = &key {
        let settled = match idempotency::begin(&mut tx, key).await? {
            KeyState::Fresh => None,
            KeyState::Replay(stored) => Some(
                StatusCode::from_u16(stored.status)
                    .map_err(|e| ApiError::internal(&e))
                    .map(|status| {
                        Written {
                            status,
                            body: stored.body,
                            location: stored.location,
                        }
                        .into_response(true)
                    }),
            ),
            KeyState::Mismatch => Some(Err(ApiError::new(
                ProblemType::IdempotencyKeyReused,
                "this Idempotency-Key was used with a different request body; use a new key",
            ))),
            KeyState::InFlight => Some(Err(ApiError::new(
                ProblemType::IdempotencyKeyInFlight,
                "a request with this Idempotency-Key is still being processed; retry shortly",
            ))),
        };
        if let Some(answer) = settled {
            end(tx).await;
            return answer;
        }
    }
    let written = match work(&mut tx).await {
        Ok(written) => written,
        Err(e) => {
            end(tx).await;
            return Err(e);
        }
    };
    if let Some(key) = &key {
        let stored = StoredResponse {
            status: written.status.as_u16(),
            body: written.body.clone(),
            location: written.location.clone(),
        };
        idempotency::complete(&mut tx, key, &stored, state.settings.idempotency_ttl).await?;
    }
    let audited = request.audit.commit(tx, written.status).await?;
    let mut response = written.into_response(false);
    response.extensions_mut().insert(audited);
    Ok(response)
}

/// Rolls `tx` back now. Dropping it would only queue the rollback until its connection is
/// next used, and until then the transaction keeps the key's advisory lock: a retry arriving
/// in that window would be told, wrongly, that the key is still in flight.
async fn end(tx: Transaction<'_, Postgres>) {
    if let Err(e) = tx.rollback().await {
        // The pool tests the connection before reusing it, and closes it if it is broken.
        tracing::warn!(error = %e, "rolling back a transaction failed");
    }
}
