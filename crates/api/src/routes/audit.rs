//! `GET /v1/audit`: the audit trail of mutating requests (bootstrap admins only).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slipway_store::audit;
use utoipa::{IntoParams, ToSchema};

use crate::extract::Principal;
use crate::extract::Query;
use crate::pagination::{CursorKind, List, PageParams};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

/// One mutating request: who sent what, and the status it was answered with.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The token's subject.
    pub subject: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// The `x-request-id` of the request.
    pub request_id: Option<String>,
}

/// Filters of the audit trail.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this subject's requests.
    pub subject: Option<String>,
}

/// The audit trail, newest first.
#[utoipa::path(get, path = "/v1/audit", operation_id = "listAuditEntries", tag = "access",
    params(AuditQuery, PageParams),
    responses(
        (status = 200, description = "A page of audit entries", body = List<AuditEntry>),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a bootstrap admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<AuditQuery>,
    Query(page): Query<PageParams>,
) -> Result<Json<List<AuditEntry>>, ApiError> {
    principal.require_admin()?;
    let limit = page.limit()?;
    let before = page.after_parsed::<i64>(CursorKind::Audit)?;
    let mut conn = state.pool.acquire().await?;
    let found = audit::list(&mut conn, query.subject.as_deref(), before, limit).await?;
    let page = slipway_store::Page {
        items: found
            .items
            .into_iter()
            .map(|e| AuditEntry {
                id: e.id,
                at: e.at,
                subject: e.subject,
                method: e.method,
                path: e.path,
                status: u16::try_from(e.status).unwrap_or_default(),
                request_id: e.request_id,
            })
            .collect(),
        next: found.next,
    };
    Ok(Json(List::from_page(page, CursorKind::Audit)))
}
