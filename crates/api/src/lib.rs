//! Slipway's HTTP API: the v1 routes, their OpenAPI description, and the layers every request
//! passes through (request ids, tracing, timeouts, body limits, compression, CORS, metrics,
//! problem documents).

pub mod auth;
mod event_hub;
pub mod extract;
mod idempotency;
mod layers;
pub mod openapi;
mod pagination;
mod problem;
pub mod rate_limit;
pub mod routes;
pub mod state;
mod webhook;

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

pub use state::{ApiSettings, AppState};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Slipway",
        description = "Deployment control plane: register clusters, apps and environments, and request deployments.\n\nErrors are RFC 9457 `application/problem+json` documents with a stable `type`; invalid input lists each bad field by JSON pointer.\n\nEvery `/v1` route except webhooks takes `Authorization: Bearer <JWT>` (401 without a valid one), and each caller is rate-limited (429 with `Retry-After`). Roles `viewer < deployer < approver < admin` are bound per app (optionally per environment) through role bindings; objects of an app in which the caller holds no role answer 404.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "clusters", description = "Kubernetes clusters Slipway deploys to"),
        (name = "apps", description = "Applications"),
        (name = "environments", description = "Where an app runs and the policy of deploying there"),
        (name = "deployments", description = "Deployment requests and their progress"),
        (name = "access", description = "Role bindings and the audit trail"),
        (name = "triggers", description = "Which CI event deploys what where"),
        (name = "webhooks", description = "CI deliveries, authenticated by their own signatures"),
        (name = "ops", description = "Health and metrics"),
    ),
    // Named by a path parameter, which utoipa does not collect on its own.
    components(schemas(slipway_core::rollout::CommandKind)),
)]
struct ApiDoc;

fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::ops::healthz))
        .routes(routes!(routes::ops::readyz))
        .routes(routes!(routes::ops::metrics))
        .routes(routes!(routes::clusters::create, routes::clusters::list))
        .routes(routes!(routes::clusters::get))
        .routes(routes!(
            routes::clusters::get_namespaces,
            routes::clusters::set_namespaces
        ))
        .routes(routes!(routes::apps::create, routes::apps::list))
        .routes(routes!(
            routes::apps::get,
            routes::apps::update,
            routes::apps::delete
        ))
        .routes(routes!(routes::environments::list))
        .routes(routes!(
            routes::environments::put,
            routes::environments::get
        ))
        .routes(routes!(routes::deployments::create))
        .routes(routes!(routes::deployments::list))
        .routes(routes!(routes::deployments::get))
        .routes(routes!(routes::deployments::events))
        .routes(routes!(routes::commands::send))
        .routes(routes!(routes::streams::all))
        .routes(routes!(
            routes::role_bindings::create,
            routes::role_bindings::list
        ))
        .routes(routes!(routes::role_bindings::delete))
        .routes(routes!(routes::audit::list))
        .routes(routes!(routes::triggers::create, routes::triggers::list))
        .routes(routes!(routes::triggers::get, routes::triggers::delete))
        .routes(routes!(routes::webhooks::github))
        .routes(routes!(routes::webhooks::gitlab))
        .routes(routes!(routes::webhooks::generic))
}

/// The OpenAPI document of the API, as `slipway openapi` prints it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, api) = openapi_router().split_for_parts();
    openapi::finish(api)
}

/// Bucket boundaries of request-like durations (every `*_seconds` histogram without its own).
const REQUEST_SECONDS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Bucket boundaries of a whole deployment's duration: 10 s to a day (a rollout with
/// pauses and analysis takes minutes to hours).
const DEPLOYMENT_SECONDS: [f64; 14] = [
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0,
    43200.0, 86400.0,
];

/// Bucket boundaries of every other histogram: counts (rows per batch, ...), by powers of two.
const COUNTS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The process-wide Prometheus recorder (installed on first use), with the HELP line of
/// every metric. Every histogram gets buckets (one without would be rendered as a summary,
/// whose quantiles cannot be aggregated across replicas).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&COUNTS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("slipway_deployment_duration_seconds".into()),
                        &DEPLOYMENT_SECONDS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &REQUEST_SECONDS)
                });
            let builder = match builder {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "histogram buckets refused; using summaries");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe_metrics();
            slipway_engine::describe_metrics();
            handle
        })
        .clone()
}

/// The HELP lines of the API's metrics.
fn describe_metrics() {
    metrics::describe_counter!(
        "slipway_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    metrics::describe_histogram!(
        "slipway_http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by method, route template and status"
    );
    metrics::describe_counter!(
        "slipway_webhook_deliveries_total",
        "CI webhook deliveries received, by source and outcome"
    );
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let (router, api) = openapi_router().split_for_parts();
    let api = openapi::finish(api);
    let request_id = HeaderName::from_static("x-request-id");
    let mut router = router
        .merge(SwaggerUi::new("/docs").url("/openapi.json", api))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::audit::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state)
        .layer(axum::middleware::from_fn(layers::not_found_for_nul_in_path))
        .layer(axum::middleware::from_fn(layers::record_metrics))
        .layer(axum::extract::DefaultBodyLimit::max(settings.body_limit))
        .layer(RequestBodyLimitLayer::new(settings.body_limit));
    if let Some(cors) = cors(&settings.cors_allowed_origins) {
        router = router.layer(cors);
    }
    router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            settings.request_timeout,
        ))
        .layer(axum::middleware::from_fn(layers::problem_for_bare_errors))
        .layer(CatchPanicLayer::new())
        // Outside every layer that makes or rewrites a body (problem documents for bare
        // errors, caught panics, timeouts), so what it compresses is what the client gets.
        .layer(CompressionLayer::new())
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// The span of one request, which every log line of the request carries: its method, URI,
/// HTTP version and `x-request-id` (set by the outer layer when the caller sent none, and
/// returned in the response), so that a caller's id finds the server's log lines.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        method = %request.method(),
        uri = %request.uri(),
        version = ?request.version(),
        request_id = %request_id,
    )
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::IF_MATCH,
                HeaderName::from_static("idempotency-key"),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                HeaderName::from_static("x-request-id"),
            ]),
    )
}
