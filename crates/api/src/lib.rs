//! Slipway's HTTP API: the v1 routes, their OpenAPI description, and the layers every request
//! passes through (request ids, tracing, timeouts, body limits, compression, CORS, metrics,
//! problem documents).

pub mod auth;
pub mod event_hub;
pub mod extract;
pub mod idempotency;
mod layers;
pub mod pagination;
pub mod problem;
pub mod rate_limit;
pub mod routes;
pub mod state;
pub mod webhook;

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
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
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
    )
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
    with_security(api)
}

/// Declares the bearer scheme, and that every operation under a path that needs a token
/// ([`auth::needs_token`]) requires it.
fn with_security(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{Content, Ref, ResponseBuilder};
    let components = api.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    for (path, item) in &mut api.paths.paths {
        if !auth::needs_token(path) {
            continue;
        }
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            operation.security = Some(vec![SecurityRequirement::new(
                "bearer",
                Vec::<String>::new(),
            )]);
            for (status, description) in [
                ("401", "No valid bearer token (see `WWW-Authenticate`)"),
                ("403", "The caller's role does not allow this"),
                (
                    "429",
                    "The caller sent more requests than its rate limit allows (see `Retry-After`)",
                ),
            ] {
                let problem = ResponseBuilder::new()
                    .description(description)
                    .content(
                        problem::PROBLEM_JSON,
                        Content::new(Some(Ref::from_schema_name("Problem"))),
                    )
                    .build();
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem.into());
            }
        }
    }
    api
}

/// The process-wide Prometheus recorder (installed on first use).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const BUCKETS: [f64; 12] = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ];
            let builder = PrometheusBuilder::new();
            let builder = match builder
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            {
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
            handle
        })
        .clone()
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let settings = state.settings.clone();
    let (router, api) = openapi_router().split_for_parts();
    let api = with_security(api);
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
        .layer(RequestBodyLimitLayer::new(settings.body_limit))
        .layer(CompressionLayer::new());
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
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
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
