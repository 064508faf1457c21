//! Request extractors that turn every client mistake into a precise problem.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use slipway_engine::Precondition;
use utoipa::openapi::Required;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::problem::{ApiError, ProblemType};

/// A JSON request body, parsed strictly: `Content-Type` must be JSON (415), the body must be
/// well-formed (400), and must match the schema with no unknown fields (422 naming the field).
/// Keeps a digest of the canonical document for idempotency checks.
#[derive(Debug)]
pub struct JsonBody<T> {
    pub value: T,
    /// SHA-256 of the body re-serialized with sorted keys: whitespace and key order do not count.
    pub digest: [u8; 32],
}

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(not_json());
        }
        parse(&read_body(req, state).await?)
    }
}

fn not_json() -> ApiError {
    ApiError::new(
        ProblemType::UnsupportedMediaType,
        "the request body must be JSON: send Content-Type: application/json",
    )
}

/// The whole body, within the body limit (413 above it).
async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ProblemType::PayloadTooLarge,
                "the request body is too large",
            )
        } else {
            ApiError::new(ProblemType::BadRequest, rejection.body_text())
        }
    })
}

/// Like [`JsonBody`], but an empty body (with or without a content type) stands for the
/// type's default.
#[derive(Debug)]
pub struct OptionalJsonBody<T> {
    pub value: T,
    pub digest: [u8; 32],
}

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self {
                value: T::default(),
                digest: Sha256::digest(b"{}").into(),
            });
        }
        if !is_json(content_type.as_ref()) {
            return Err(not_json());
        }
        let body = parse(&bytes)?;
        Ok(Self {
            value: body.value,
            digest: body.digest,
        })
    }
}

/// Parses and digests a JSON document (exposed for tests of the rules above).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<JsonBody<T>, ApiError> {
    let document: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            ProblemType::MalformedJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let canonical = serde_json::to_vec(&document)
        .map_err(|e| ApiError::new(ProblemType::MalformedJson, e.to_string()))?;
    let value = serde_path_to_error::deserialize(&document).map_err(|e| {
        let pointer = json_pointer(e.path());
        let detail = e.into_inner().to_string();
        // A tagged value (a strategy, a traffic router) reports where inside it the error is.
        let (pointer, detail) = match slipway_core::tagged::split_nested_error(&detail) {
            Some((below, message)) => (format!("{pointer}{below}"), message.to_owned()),
            None => (pointer, detail),
        };
        ApiError::invalid_field(missing_field_pointer(pointer, &detail), detail)
    })?;
    // Postgres cannot store a NUL character in text or jsonb: refuse it here, by field.
    if let Some(at) = nul_position(&document, "") {
        return Err(ApiError::invalid_field(
            at,
            "must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(JsonBody {
        value,
        digest: Sha256::digest(&canonical).into(),
    })
}

/// Converts serde_path_to_error's path (`strategy.steps[2].set_weight`) to a JSON pointer.
fn json_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out = slipway_core::validation::pointer(&out, index),
            Segment::Map { key } => out = slipway_core::validation::pointer(&out, key),
            // Externally tagged enums (canary steps) are keyed by their variant's name.
            Segment::Enum { variant } => out = slipway_core::validation::pointer(&out, variant),
            Segment::Unknown => {}
        }
    }
    out
}

/// serde reports a missing field at the object that lacks it; point at the field itself.
fn missing_field_pointer(at: String, detail: &str) -> String {
    match detail
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        Some(field) => slipway_core::validation::pointer(&at, field),
        None => at,
    }
}

/// The pointer of the first string or object key in `value` that holds a NUL character.
fn nul_position(value: &serde_json::Value, at: &str) -> Option<String> {
    use serde_json::Value;
    use slipway_core::validation::pointer;
    match value {
        Value::String(s) => s.contains('\0').then(|| at.to_owned()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_position(item, &pointer(at, i))),
        Value::Object(members) => members.iter().find_map(|(key, member)| {
            let here = pointer(at, key);
            if key.contains('\0') {
                Some(here)
            } else {
                nul_position(member, &here)
            }
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => None,
    }
}

fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// The query string, parsed like the body: a parameter the type cannot take (given twice,
/// not of its type) is a 422 naming it, never the framework's plain-text 400.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    #[expect(
        clippy::disallowed_types,
        reason = "the one place axum's query parser is used, its rejection turned into a 422"
    )]
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| {
                let detail = rejection.body_text();
                let detail = detail
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&detail);
                // serde names the parameter between backticks (`duplicate field `limit``).
                match detail.split('`').nth(1) {
                    Some(name) if !name.is_empty() => ApiError::invalid_parameter(name, detail),
                    _ => ApiError::new(ProblemType::ValidationFailed, detail.to_owned()),
                }
            })
    }
}

/// The `Idempotency-Key` header, when sent: 1–255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(raw) = parts.headers.get("idempotency-key") else {
            return Ok(Self(None));
        };
        let key = raw
            .to_str()
            .ok()
            .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::new(
                    ProblemType::BadRequest,
                    "Idempotency-Key must be 1-255 visible ASCII characters",
                )
            })?;
        Ok(Self(Some(key.to_owned())))
    }
}

/// The `Idempotency-Key` parameter as the document describes it (`params(IdempotencyKey)`).
impl utoipa::IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_parameter(
            "Idempotency-Key",
            "Makes retries safe: a replay with the same key and body returns the stored response.",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(255))
                .pattern(Some(IDEMPOTENCY_KEY_PATTERN)),
            Some(serde_json::json!("release-1.4.2-prod")),
        )]
    }
}

/// 1–255 visible ASCII characters, as [`IdempotencyKey`] checks.
pub const IDEMPOTENCY_KEY_PATTERN: &str = "^[!-~]{1,255}$";

/// What `If-Match` can hold: `*` or an ETag this API issued (`"<revision>"`).
pub const IF_MATCH_PATTERN: &str = r#"^(\*|"[0-9]{1,18}")$"#;

/// A header parameter of the document, optional.
pub(crate) fn header_parameter(
    name: &str,
    description: &str,
    schema: ObjectBuilder,
    example: Option<serde_json::Value>,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
        .example(example)
        .build()
}

/// The `If-Match` header as a condition on a stored revision.
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Precondition);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(raw) = parts.headers.get(header::IF_MATCH) else {
            return Ok(Self(Precondition::None));
        };
        let raw = raw.to_str().unwrap_or("").trim();
        if raw == "*" {
            return Ok(Self(Precondition::Exists));
        }
        // Only strong tags of our own form (`"<revision>"`) can match.
        let revision = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .and_then(|r| r.parse::<i64>().ok());
        Ok(Self(
            revision.map_or(Precondition::Unmatchable, Precondition::Revision),
        ))
    }
}

/// The `If-Match` parameter as the document describes it (`params(IfMatch)`).
impl utoipa::IntoParams for IfMatch {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![header_parameter(
            "If-Match",
            "The ETag the change is based on (412 when the resource has changed since), or `*` for \"it must exist\".",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(IF_MATCH_PATTERN)),
            Some(serde_json::json!("\"3\"")),
        )]
    }
}

/// The ETag of a stored revision.
pub fn etag(revision: i64) -> header::HeaderValue {
    header::HeaderValue::from_str(&format!("\"{revision}\""))
        .unwrap_or(header::HeaderValue::from_static("\"0\""))
}

pub use crate::auth::Principal;

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_core::EnvironmentSpec;

    #[test]
    fn errors_point_at_the_field() {
        let body = br#"{"cluster":"c","namespace":"n","workload":{"name":"w","container":"w","replicas":"four","port":80}}"#;
        let err = parse::<EnvironmentSpec>(body)
            .err()
            .map(|e| format!("{e:?}"));
        assert!(err.is_some_and(|e| e.contains("/workload/replicas")));
        let malformed = parse::<EnvironmentSpec>(b"{not json")
            .err()
            .map(|e| e.kind());
        assert_eq!(malformed, Some(ProblemType::MalformedJson));
    }

    fn pointers_of<T: DeserializeOwned + std::fmt::Debug>(body: &[u8]) -> String {
        format!("{:?}", parse::<T>(body).err())
    }

    #[test]
    fn a_missing_field_is_pointed_at() {
        let body =
            br#"{"cluster":"c","workload":{"name":"w","container":"w","replicas":1,"port":80}}"#;
        let err = pointers_of::<EnvironmentSpec>(body);
        assert!(err.contains("\"/namespace\""), "{err}");
        let body = br#"{"cluster":"c","namespace":"n","workload":{"name":"w","container":"w","replicas":1}}"#;
        let err = pointers_of::<EnvironmentSpec>(body);
        assert!(err.contains("\"/workload/port\""), "{err}");
    }

    #[test]
    fn a_nul_character_is_refused_where_it_is() {
        let err = pointers_of::<serde_json::Value>(br#"{"a":[1,{"b":"x\u0000"}]}"#);
        assert!(err.contains("\"/a/1/b\""), "{err}");
        assert!(parse::<serde_json::Value>(br#"{"a":["x\u0001"]}"#).is_ok());
    }

    #[test]
    fn digest_ignores_whitespace_and_key_order() {
        let a = parse::<serde_json::Value>(br#"{"a":1,"b":[1,2]}"#)
            .map(|b| b.digest)
            .ok();
        let b = parse::<serde_json::Value>(b"{ \"b\": [1, 2],\n \"a\": 1 }")
            .map(|b| b.digest)
            .ok();
        let c = parse::<serde_json::Value>(br#"{"a":2,"b":[1,2]}"#)
            .map(|b| b.digest)
            .ok();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
