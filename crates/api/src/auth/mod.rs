//! Authentication and authorization.
//!
//! - [`authenticate`], a layer on every `/v1` route except webhooks and chatops (which carry
//!   their own signatures), turns `Authorization: Bearer <JWT>` into a [`Principal`] (401 with
//!   `WWW-Authenticate: Bearer` otherwise). With authentication off, every caller is
//!   `anonymous` and admin everywhere.
//! - Handlers authorize with [`Principal::require`] (a role in an app, optionally in one
//!   environment), [`Principal::require_deployment`], [`Principal::require_command`] and
//!   [`Principal::require_admin`]; lists filter with [`Principal::visible_to`]. An app in which
//!   the caller holds no binding answers 404, as if it did not exist.
//! - [`audit`] records every mutating request that passed authentication.
//! - The authenticated subject then takes a token from its bucket ([`crate::rate_limit`]):
//!   `429` with `Retry-After` when it has sent too many.

pub mod access;
pub mod audit;
pub mod jwt;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use jwt::{Claims, KeyError, TokenError, TokenVerifier, issue_hs256};
pub use slipway_core::Role;

use crate::problem::{ApiError, ProblemType, problem_response};
use crate::state::AppState;

/// Subjects and groups that are admin of everything (and the only ones who may create apps
/// and register clusters).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootstrapAdmins {
    pub subjects: Vec<String>,
    pub groups: Vec<String>,
}

impl BootstrapAdmins {
    /// Parses entries: `NAME` is a subject, `group:NAME` a group.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Self {
        let mut admins = Self::default();
        for entry in entries {
            let entry = entry.as_ref().trim();
            match entry.strip_prefix("group:") {
                Some(group) if !group.is_empty() => admins.groups.push(group.to_owned()),
                Some(_) => {}
                None if !entry.is_empty() => admins.subjects.push(entry.to_owned()),
                None => {}
            }
        }
        admins
    }

    fn include(&self, subject: &str, groups: &[String]) -> bool {
        self.subjects.iter().any(|s| s == subject) || groups.iter().any(|g| self.groups.contains(g))
    }
}

/// How callers are authenticated.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// `None`: authentication is off, every caller is `anonymous` and admin everywhere
    /// (`slipway dev`, and the default of [`crate::ApiSettings`]; `slipway serve` always sets
    /// a verifier unless configured off).
    pub verifier: Option<Arc<TokenVerifier>>,
    pub bootstrap_admins: BootstrapAdmins,
}

impl AuthSettings {
    pub fn disabled() -> Self {
        Self::default()
    }

    pub fn jwt(verifier: TokenVerifier, bootstrap_admins: BootstrapAdmins) -> Self {
        Self {
            verifier: Some(Arc::new(verifier)),
            bootstrap_admins,
        }
    }

    pub fn enabled(&self) -> bool {
        self.verifier.is_some()
    }
}

/// The caller of a request: the token's subject and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub groups: Vec<String>,
    /// Admin of everything: a bootstrap admin, or anyone when authentication is off.
    superuser: bool,
    /// When the token stops being accepted (its `exp` plus the verifier's leeway); `None`
    /// when authentication is off. A response that outlives its request (an event stream)
    /// ends then.
    accepted_until: Option<SystemTime>,
}

impl Principal {
    /// The caller when authentication is off.
    pub fn anonymous() -> Self {
        Self {
            subject: "anonymous".to_owned(),
            groups: Vec::new(),
            superuser: true,
            accepted_until: None,
        }
    }

    /// When the caller's token stops being accepted (`None`: never, authentication is off).
    pub fn accepted_until(&self) -> Option<SystemTime> {
        self.accepted_until
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.subject)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        // Set by `authenticate` on every route that needs a caller.
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::new(ProblemType::Unauthorized, "authentication required"))
    }
}

/// Whether `path` needs a bearer token: everything under `/v1` except the routes that
/// authenticate by their own signatures.
pub fn needs_token(path: &str) -> bool {
    path.starts_with("/v1/")
        && !path.starts_with("/v1/webhooks/")
        && !path.starts_with("/v1/chatops/")
}

/// The layer that authenticates a request and stores its [`Principal`] in its extensions.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    if !needs_token(req.uri().path()) {
        return next.run(req).await;
    }
    let auth = &state.settings.auth;
    let Some(verifier) = &auth.verifier else {
        let principal = Principal::anonymous();
        if let Err(wait) = state.rate_limiter.check(&principal.subject) {
            return too_many_requests(&principal.subject, wait);
        }
        req.extensions_mut().insert(principal);
        return next.run(req).await;
    };
    let token = match bearer(req.headers()) {
        Ok(token) => token,
        Err(detail) => return unauthorized(detail, false),
    };
    match verifier.verify(token) {
        Ok(claims) => {
            if let Err(wait) = state.rate_limiter.check(&claims.sub) {
                return too_many_requests(&claims.sub, wait);
            }
            let superuser = auth.bootstrap_admins.include(&claims.sub, &claims.groups);
            // The verifier accepts the token through the whole second `exp + leeway`.
            let accepted_until = UNIX_EPOCH
                .checked_add(Duration::from_secs(
                    claims
                        .exp
                        .saturating_add(jwt::LEEWAY_SECS)
                        .saturating_add(1),
                ))
                .unwrap_or(UNIX_EPOCH);
            req.extensions_mut().insert(Principal {
                subject: claims.sub,
                groups: claims.groups,
                superuser,
                accepted_until: Some(accepted_until),
            });
            next.run(req).await
        }
        Err(e) => {
            tracing::info!(reason = %e, "bearer token refused");
            unauthorized(e.to_string(), true)
        }
    }
}

fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, String> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err("this endpoint needs a bearer token: send Authorization: Bearer <JWT>".into());
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not readable text".to_owned())?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err("the Authorization header must be: Bearer <JWT>".into()),
    }
}

/// A 429 problem with `Retry-After` in whole seconds (at least 1).
pub(crate) fn too_many_requests(subject: &str, wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    tracing::info!(
        subject,
        retry_after = seconds,
        "request refused by the rate limit"
    );
    let mut response = problem_response(
        ProblemType::TooManyRequests,
        format!("too many requests from {subject}; try again in {seconds} s"),
        Vec::new(),
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

/// A 401 problem with the `WWW-Authenticate` challenge of RFC 6750.
fn unauthorized(detail: String, token_sent: bool) -> Response {
    let mut response = problem_response(ProblemType::Unauthorized, detail, Vec::new());
    let challenge = if token_sent {
        r#"Bearer realm="slipway", error="invalid_token""#
    } else {
        r#"Bearer realm="slipway""#
    };
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response.into_response()
}
