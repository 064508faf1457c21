//! RFC 9457 problem documents as the server sends them, printed for people.

use std::fmt;

use serde::Deserialize;

/// An `application/problem+json` answer. Every member is optional on the way in: a proxy or a
/// newer server may send less (or more) than Slipway's own documents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub type_uri: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub detail: Option<String>,
    /// Field errors of a `validation-failed` problem.
    #[serde(default)]
    pub errors: Vec<InvalidField>,
}

/// One invalid part of a request: a body field by JSON pointer or a query parameter by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct InvalidField {
    #[serde(default)]
    pub pointer: Option<String>,
    #[serde(default)]
    pub parameter: Option<String>,
    #[serde(default)]
    pub detail: String,
}

impl Problem {
    /// The last segment of the `type` URI (`validation-failed`, `idempotency-key-in-flight`).
    pub fn slug(&self) -> &str {
        self.type_uri
            .as_deref()
            .and_then(|t| t.rsplit('/').next())
            .unwrap_or("")
    }
}

impl fmt::Display for Problem {
    /// `title: detail`, then one indented line per field error (`/strategy/steps/1: ...`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A detail that only sums up the field errors listed below is left out.
        let detail = self.detail.as_ref().filter(|d| {
            self.errors.is_empty() || !self.errors.iter().all(|e| d.contains(&e.detail))
        });
        match (&self.title, detail) {
            (Some(title), Some(detail)) if !detail.is_empty() && detail != title => {
                write!(f, "{title}: {detail}")?;
            }
            (Some(title), _) => write!(f, "{title}")?,
            (None, Some(detail)) => write!(f, "{detail}")?,
            (None, None) => write!(f, "the server refused the request")?,
        }
        for e in &self.errors {
            let place = match (&e.pointer, &e.parameter) {
                (Some(pointer), _) if pointer.is_empty() => "(body)".to_owned(),
                (Some(pointer), _) => pointer.clone(),
                (None, Some(parameter)) => format!("?{parameter}"),
                (None, None) => "(request)".to_owned(),
            };
            write!(f, "\n  {place}: {}", e.detail)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_validation_problem_names_each_field() {
        let p: Problem = serde_json::from_str(
            r#"{"type":"https://slipway.dev/problems/validation-failed","title":"Invalid request",
                "status":422,"detail":"2 fields are invalid",
                "errors":[{"pointer":"/image","detail":"must not be empty"},
                          {"parameter":"limit","detail":"must be 1-500"}]}"#,
        )
        .unwrap_or_default();
        assert_eq!(p.slug(), "validation-failed");
        assert_eq!(
            p.to_string(),
            "Invalid request: 2 fields are invalid\n  /image: must not be empty\n  ?limit: must be 1-500"
        );
    }

    #[test]
    fn a_detail_that_repeats_the_field_errors_is_left_out() {
        let p = Problem {
            title: Some("Unprocessable Entity".into()),
            detail: Some("invalid request: /image: must pin a version".into()),
            errors: vec![InvalidField {
                pointer: Some("/image".into()),
                parameter: None,
                detail: "must pin a version".into(),
            }],
            ..Problem::default()
        };
        assert_eq!(
            p.to_string(),
            "Unprocessable Entity\n  /image: must pin a version"
        );
    }

    #[test]
    fn a_sparse_problem_still_reads() {
        let p: Problem = serde_json::from_str(r#"{"title":"Unauthorized"}"#).unwrap_or_default();
        assert_eq!(p.to_string(), "Unauthorized");
        assert_eq!(p.slug(), "");
    }
}
