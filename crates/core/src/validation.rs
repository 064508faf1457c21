//! Field-level validation errors, addressed by JSON pointer (RFC 6901).

use std::fmt;

/// One invalid field: where it is in the request document and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldError {
    /// JSON pointer into the request body, e.g. `/strategy/steps/2/set_weight`.
    pub pointer: String,
    /// What is wrong, for a human.
    pub detail: String,
}

/// Collects every problem of a document instead of stopping at the first one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations {
    errors: Vec<FieldError>,
}

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, pointer: impl Into<String>, detail: impl Into<String>) {
        self.errors.push(FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// `Ok(())` when nothing was recorded, the collected errors otherwise.
    pub fn into_result(self) -> Result<(), ValidationError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                errors: self.errors,
            })
        }
    }
}

/// A document failed validation; `errors` names every bad field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub errors: Vec<FieldError>,
}

impl ValidationError {
    pub fn single(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError {
                pointer: pointer.into(),
                detail: detail.into(),
            }],
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.pointer, e.detail))
            .collect();
        write!(f, "invalid request: {}", parts.join("; "))
    }
}

/// Joins a pointer prefix and a child key, escaping per RFC 6901.
pub fn pointer(prefix: &str, key: impl fmt::Display) -> String {
    let key = key.to_string().replace('~', "~0").replace('/', "~1");
    format!("{prefix}/{key}")
}
