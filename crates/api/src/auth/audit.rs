//! The audit layer: every mutating request (POST, PUT, PATCH, DELETE) that passed
//! authentication is recorded with its subject, path and answer, whatever the answer was
//! (a refusal is worth auditing too). Unauthenticated requests (401) are not recorded: they
//! name nobody, and recording them would let anyone fill the table.
//!
//! A change writes its row in its own transaction ([`AuditContext::commit`], or
//! `idempotency::run` for keyed creates and commands), so an acknowledged change always has
//! its row; the layer writes the rows of the requests that changed nothing (refusals,
//! replays), and answers 503 instead of a refusal whose row it could not write.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, IntoResponseParts, Response, ResponseParts};
use slipway_store::audit::{self, NewAuditEntry};
use slipway_store::{Postgres, Transaction};

use super::Principal;
use crate::problem::{ApiError, ProblemType};
use crate::state::AppState;

/// A request as its audit row names it, for handlers that append the row in the transaction
/// of their change (and then mark the response [`AuditWritten`]).
#[derive(Debug, Clone)]
pub struct AuditContext {
    subject: String,
    method: String,
    path: String,
    request_id: Option<String>,
}

impl AuditContext {
    /// The row for this request answered with `status`.
    pub fn entry(&self, status: StatusCode) -> NewAuditEntry<'_> {
        NewAuditEntry {
            subject: &self.subject,
            method: &self.method,
            path: &self.path,
            status: status.as_u16(),
            request_id: self.request_id.as_deref(),
        }
    }
}

impl AuditContext {
    /// Appends this request's row, answered with `status`, to the transaction of its change
    /// and commits both: the change is never acknowledged without its row, nor its row
    /// written without the change. The response carries the returned [`AuditWritten`].
    pub async fn commit(
        &self,
        mut tx: Transaction<'_, Postgres>,
        status: StatusCode,
    ) -> Result<AuditWritten, ApiError> {
        audit::append(&mut tx, &self.entry(status)).await?;
        tx.commit().await?;
        Ok(AuditWritten)
    }

    /// `principal`'s request: its method, path and `x-request-id`.
    fn of(principal: &Principal, method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        Self {
            subject: principal.subject.clone(),
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            request_id: headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuditContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let principal = Principal::from_request_parts(parts, state).await?;
        Ok(Self::of(
            &principal,
            &parts.method,
            &parts.uri,
            &parts.headers,
        ))
    }
}

/// Put in a response's extensions by a handler that wrote the request's audit row itself, in
/// the transaction of its change: the layer then writes none. As a response part it puts
/// itself there.
#[derive(Debug, Clone, Copy)]
pub struct AuditWritten;

impl IntoResponseParts for AuditWritten {
    type Error = std::convert::Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Self::Error> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let principal = req.extensions().get::<Principal>().cloned();
    let (Some(principal), true) = (principal, mutating) else {
        return next.run(req).await;
    };
    let context = AuditContext::of(&principal, req.method(), req.uri(), req.headers());
    let response = next.run(req).await;
    if response.extensions().get::<AuditWritten>().is_some() {
        return response;
    }
    let entry = context.entry(response.status());
    let written = match state.pool.acquire().await {
        Ok(mut conn) => audit::append(&mut conn, &entry).await,
        Err(e) => Err(e.into()),
    };
    match written {
        Ok(()) => response,
        // A refusal changed nothing: it is not answered unless it is on record.
        Err(e) if response.status().is_client_error() => {
            tracing::error!(error = %e, subject = %principal, method = %context.method, path = %context.path, status = response.status().as_u16(), "writing the audit trail failed; answering 503");
            ApiError::new(
                ProblemType::Unavailable,
                "the audit trail could not be written, so the request was not answered; nothing was changed, retry later",
            )
            .into_response()
        }
        // A success that did not write its row in its transaction (every change here does)
        // is done, so its answer stands; an error answer stands as it is.
        Err(e) => {
            tracing::error!(error = %e, subject = %principal, method = %context.method, path = %context.path, status = response.status().as_u16(), "writing the audit trail failed");
            response
        }
    }
}
