//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use slipway_store::health::{SchemaState, schema_state};
use utoipa::ToSchema;

use crate::problem::{ApiError, Problem, ProblemType};
use crate::state::AppState;

/// The answer of a health probe.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: &'static str,
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", operation_id = "getHealth", tag = "ops",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the database answers and the schema is migrated.
#[utoipa::path(get, path = "/readyz", operation_id = "getReadiness", tag = "ops",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Database unreachable or schema behind", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match schema_state(&state.pool).await {
        Ok(SchemaState::Current) => Ok(Json(Health { status: "ready" })),
        Ok(SchemaState::Behind { applied, expected }) => Err(ApiError::new(
            ProblemType::Unavailable,
            format!(
                "database schema is at migration {} but this build needs {expected}: run `slipway migrate`",
                applied.map_or_else(|| "none".to_owned(), |v| v.to_string())
            ),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                ProblemType::Unavailable,
                "the database is unreachable",
            ))
        }
    }
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", operation_id = "getMetrics", tag = "ops",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
