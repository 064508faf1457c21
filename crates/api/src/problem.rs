//! RFC 9457 problem details: the one error format of the API.
//!
//! Every error answer is `application/problem+json` with a stable `type` URI (listed in
//! [`ProblemType`]), a `title`, the HTTP `status`, a `detail` for humans, and for invalid
//! input an `errors` array naming each bad field by JSON pointer (body) or name (query).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use slipway_core::ValidationError;
use slipway_engine::IntakeError;
use slipway_store::StoreError;
use utoipa::ToSchema;

pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// The kinds of problem the API reports; each has a stable `type` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemType {
    MalformedJson,
    ValidationFailed,
    UnsupportedMediaType,
    NotAcceptable,
    NotFound,
    MethodNotAllowed,
    AlreadyExists,
    Conflict,
    IdempotencyKeyReused,
    IdempotencyKeyInFlight,
    PreconditionFailed,
    PayloadTooLarge,
    RequestTimeout,
    Unavailable,
    Internal,
    BadRequest,
    Unauthorized,
    Forbidden,
    TooManyRequests,
}

impl ProblemType {
    pub fn slug(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed-json",
            Self::ValidationFailed => "validation-failed",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::NotAcceptable => "not-acceptable",
            Self::NotFound => "not-found",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::AlreadyExists => "already-exists",
            Self::Conflict => "conflict",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
            Self::IdempotencyKeyInFlight => "idempotency-key-in-flight",
            Self::PreconditionFailed => "precondition-failed",
            Self::PayloadTooLarge => "payload-too-large",
            Self::RequestTimeout => "request-timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::BadRequest => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::TooManyRequests => "too-many-requests",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Self::MalformedJson | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::ValidationFailed | Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::AlreadyExists | Self::Conflict | Self::IdempotencyKeyInFlight => {
                StatusCode::CONFLICT
            }
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The problem type that stands for a bare status code from the framework or a layer.
    pub fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout,
            StatusCode::UNPROCESSABLE_ENTITY => Self::ValidationFailed,
            StatusCode::SERVICE_UNAVAILABLE => Self::Unavailable,
            StatusCode::NOT_ACCEPTABLE => Self::NotAcceptable,
            StatusCode::PRECONDITION_FAILED => Self::PreconditionFailed,
            StatusCode::CONFLICT => Self::Conflict,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::TOO_MANY_REQUESTS => Self::TooManyRequests,
            s if s.is_server_error() => Self::Internal,
            _ => Self::BadRequest,
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Problem {
    /// Stable URI of the problem type, e.g. `https://slipway.dev/problems/validation-failed`.
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Each invalid field, for `validation-failed`; the field refused, for a `forbidden` one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<InvalidField>,
}

/// One invalid part of a request: a body field by JSON pointer, or a query parameter by name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct InvalidField {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter: Option<String>,
    pub detail: String,
}

/// Every error a handler returns; it becomes a problem response.
#[derive(Debug)]
pub struct ApiError {
    kind: ProblemType,
    detail: String,
    errors: Vec<InvalidField>,
}

impl ApiError {
    pub fn new(kind: ProblemType, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ProblemType::NotFound, format!("{what} not found"))
    }

    pub fn invalid_parameter(name: &str, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        Self {
            kind: ProblemType::ValidationFailed,
            detail: format!("query parameter {name:?} is invalid: {detail}"),
            errors: vec![InvalidField {
                pointer: None,
                parameter: Some(name.to_owned()),
                detail,
            }],
        }
    }

    pub fn invalid_field(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        ValidationError::single(pointer, detail).into()
    }

    pub fn kind(&self) -> ProblemType {
        self.kind
    }

    /// An internal failure: the cause is logged, the client sees a generic message.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            ProblemType::Internal,
            "an internal error occurred; it has been logged",
        )
    }
}

impl ApiError {
    /// A problem of `kind` that names each field of `e` by JSON pointer.
    fn with_fields(kind: ProblemType, detail: String, e: ValidationError) -> Self {
        Self {
            kind,
            detail,
            errors: e
                .errors
                .into_iter()
                .map(|f| InvalidField {
                    pointer: Some(f.pointer),
                    parameter: None,
                    detail: f.detail,
                })
                .collect(),
        }
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::with_fields(ProblemType::ValidationFailed, e.to_string(), e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        IntakeError::from(e).into()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<IntakeError> for ApiError {
    fn from(e: IntakeError) -> Self {
        match e {
            IntakeError::Invalid(v) => v.into(),
            IntakeError::Forbidden(v) => {
                let detail = v
                    .errors
                    .iter()
                    .map(|f| format!("{}: {}", f.pointer, f.detail))
                    .collect::<Vec<_>>()
                    .join("; ");
                Self::with_fields(ProblemType::Forbidden, detail, v)
            }
            IntakeError::NotFound(what) => Self::not_found(what),
            IntakeError::AlreadyExists(what) => Self::new(
                ProblemType::AlreadyExists,
                format!("{what} with that name already exists"),
            ),
            IntakeError::PreconditionFailed => Self::new(
                ProblemType::PreconditionFailed,
                "If-Match does not match the current ETag; read the resource again and retry",
            ),
            IntakeError::Conflict(msg) => Self::new(ProblemType::Conflict, msg),
            IntakeError::Store(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "database unavailable");
                Self::new(
                    ProblemType::Unavailable,
                    "the database is unavailable; retry later",
                )
            }
            IntakeError::Store(other) => Self::internal(&other),
        }
    }
}

/// Renders a problem for `kind` with `detail`.
pub(crate) fn problem_response(
    kind: ProblemType,
    detail: String,
    errors: Vec<InvalidField>,
) -> Response {
    let status = kind.status();
    let body = Problem {
        type_uri: format!("https://slipway.dev/problems/{}", kind.slug()),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail,
        errors,
    };
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.kind;
        let mut response = problem_response(kind, self.detail, self.errors);
        match kind {
            ProblemType::Unauthorized => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="slipway""#),
                );
            }
            // The document promises a wait with every 503 (crate::openapi).
            ProblemType::Unavailable => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::openapi::UNAVAILABLE_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}
