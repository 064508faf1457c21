//! kube-rs errors as [`DriverError`]s: what retrying can fix and what it cannot.

use kube::core::Status;

use crate::driver::DriverError;

/// Maps a kube-rs error. API answers keep the API server's message; transport failures are
/// retryable (`cluster_unreachable`, or `timeout`).
pub fn from_kube(err: kube::Error) -> DriverError {
    match err {
        kube::Error::Api(status) => from_status(&status),
        kube::Error::HyperError(e) => transport(&e),
        kube::Error::Service(e) => transport(e.as_ref()),
        kube::Error::Auth(e) => DriverError::permanent("auth_failed", chain(&e)),
        e @ (kube::Error::InferKubeconfig(_) | kube::Error::InferConfig(_)) => {
            DriverError::permanent("invalid_kubeconfig", chain(&e))
        }
        e @ (kube::Error::RustlsTls(_) | kube::Error::TlsRequired) => {
            DriverError::permanent("tls_config", chain(&e))
        }
        e @ (kube::Error::SerdeError(_) | kube::Error::FromUtf8(_)) => {
            DriverError::permanent("unexpected_response", chain(&e))
        }
        e @ kube::Error::ReadEvents(_) => DriverError::unreachable(chain(&e)),
        e => DriverError::permanent("client_error", chain(&e)),
    }
}

/// An API server's `Status`: client mistakes (400, 401, 403, 404, 422...) are permanent;
/// 408, 409 (conflict), 429 and 5xx are retryable.
pub fn from_status(status: &Status) -> DriverError {
    let code = status.code;
    let reason = if status.reason.is_empty() {
        default_reason(code).to_owned()
    } else {
        snake_case(&status.reason)
    };
    let message = if status.message.is_empty() {
        format!("the API server answered HTTP {code}")
    } else {
        status.message.clone()
    };
    match code {
        408 | 409 | 429 | 500..=599 => DriverError::retryable(reason, message),
        400..=499 => DriverError::permanent(reason, message),
        _ => DriverError::retryable(reason, message),
    }
}

fn default_reason(code: u16) -> &'static str {
    match code {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        408 | 504 => "timeout",
        409 => "conflict",
        410 => "gone",
        422 => "invalid",
        429 => "too_many_requests",
        503 => "service_unavailable",
        500..=599 => "internal_error",
        _ => "api_error",
    }
}

/// `Forbidden` → `forbidden`, `TooManyRequests` → `too_many_requests`.
fn snake_case(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len() + 4);
    for (i, ch) in reason.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Connection refused, DNS, TLS handshake, timeouts: the cluster could not be reached now.
fn transport(err: &(dyn std::error::Error + 'static)) -> DriverError {
    let message = chain(err);
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        let timed_out = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
            || e.to_string().contains("timed out");
        if timed_out {
            return DriverError::retryable("timeout", message);
        }
        source = e.source();
    }
    DriverError::unreachable(message)
}

/// An error and its sources, `outer: inner: root`.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        source = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> Status {
        let mut s = Status::failure(message, reason);
        s.code = code;
        s
    }

    #[test]
    fn client_mistakes_are_permanent() {
        for (code, reason, want) in [
            (400, "BadRequest", "bad_request"),
            (401, "Unauthorized", "unauthorized"),
            (403, "Forbidden", "forbidden"),
            (404, "NotFound", "not_found"),
            (422, "Invalid", "invalid"),
            (422, "", "invalid"),
        ] {
            let e = from_status(&status(code, reason, "nope"));
            assert!(!e.is_retryable(), "{code}");
            assert_eq!(e.reason(), want);
            assert_eq!(e.message(), "nope");
        }
    }

    #[test]
    fn server_trouble_is_retryable() {
        for (code, reason, want) in [
            (409, "Conflict", "conflict"),
            (429, "TooManyRequests", "too_many_requests"),
            (500, "InternalError", "internal_error"),
            (503, "", "service_unavailable"),
            (504, "Timeout", "timeout"),
        ] {
            let e = from_status(&status(code, reason, ""));
            assert!(e.is_retryable(), "{code}");
            assert_eq!(e.reason(), want);
            assert_eq!(e.message(), format!("the API server answered HTTP {code}"));
        }
    }

    #[test]
    fn transport_errors() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(transport(&refused).reason(), "cluster_unreachable");
        let slow = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        let e = transport(&slow);
        assert!(e.is_retryable());
        assert_eq!(e.reason(), "timeout");
    }
}
