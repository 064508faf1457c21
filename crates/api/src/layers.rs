//! Middleware of our own: problem documents for every bare error, and HTTP metrics.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use crate::problem::{PROBLEM_JSON, ProblemType, problem_response};

/// Turns error responses made by the framework or a layer (unknown route 404, 405, 408
/// timeout, 413 body limit, a caught panic's 500) into problem documents, so that every
/// error the API gives has the same shape.
pub(crate) async fn problem_for_bare_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with(PROBLEM_JSON));
    if is_problem {
        return response;
    }
    let kind = ProblemType::for_status(status);
    let detail = match kind {
        ProblemType::NotFound => "no such resource".to_owned(),
        ProblemType::MethodNotAllowed => "this method is not allowed on this resource".to_owned(),
        ProblemType::RequestTimeout => "the request took too long and was cancelled".to_owned(),
        ProblemType::PayloadTooLarge => "the request body is too large".to_owned(),
        ProblemType::Internal => "an internal error occurred; it has been logged".to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut problem = problem_response(kind, detail, Vec::new());
    *problem.status_mut() = status;
    // Keep headers such as `Allow` that the original answer carried, but not those that
    // describe its body (its type, length and encoding are not the new body's).
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE
            && name != header::CONTENT_LENGTH
            && name != header::CONTENT_ENCODING
        {
            problem.headers_mut().insert(name.clone(), value.clone());
        }
    }
    problem
}

/// A path holding a NUL character (`%00`) names nothing: no name can hold one (Postgres text
/// cannot store it), so answer 404 before the name reaches a query and fails there.
pub(crate) async fn not_found_for_nul_in_path(request: Request, next: Next) -> Response {
    if request.uri().path().contains("%00") {
        return problem_response(
            ProblemType::NotFound,
            "no such resource".to_owned(),
            Vec::new(),
        );
    }
    next.run(request).await
}

/// Counts requests and times them by method, route template and status.
pub(crate) async fn record_metrics(request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("slipway_http_requests_total", &labels).increment(1);
    metrics::histogram!("slipway_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
