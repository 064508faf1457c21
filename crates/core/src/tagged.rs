//! Internally tagged documents (`{"type": "canary", ...}`) read so that an error inside a
//! variant still says where it is.
//!
//! serde's own `#[serde(tag = ...)]` buffers the document and loses the path of an error
//! inside it, so a client would only learn that `/strategy` is wrong. Here the variant's body
//! is read with `serde_path_to_error`, and the error message carries the pointer below the
//! tagged value in the form [`nested_error`] writes and [`split_nested_error`] reads.

use serde::de::{DeserializeOwned, Error};
use serde_json::{Map, Value};

use crate::validation::pointer;

const MARK: char = '@';

/// `@<pointer>: <message>`: an error at `pointer` below the value that reported it.
pub fn nested_error(at: &str, message: impl std::fmt::Display) -> String {
    format!("{MARK}{at}: {message}")
}

/// Splits a message written by [`nested_error`] into its pointer and the message proper.
pub fn split_nested_error(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix(MARK)?;
    rest.split_once(": ")
}

/// Takes the tag field out of an object: `(tag, rest of the object)`.
pub(crate) fn split<E: Error>(value: Value, tag: &str) -> Result<(String, Map<String, Value>), E> {
    let Value::Object(mut object) = value else {
        return Err(E::custom("expected an object"));
    };
    match object.remove(tag) {
        Some(Value::String(name)) => Ok((name, object)),
        Some(_) => Err(E::custom(nested_error(
            &pointer("", tag),
            "must be a string",
        ))),
        None => Err(E::custom(format_args!("missing field `{tag}`"))),
    }
}

/// Reads one variant's body, keeping the path of any error inside it.
pub(crate) fn variant<T: DeserializeOwned, E: Error>(body: Map<String, Value>) -> Result<T, E> {
    serde_path_to_error::deserialize(Value::Object(body)).map_err(|e| {
        let mut at = String::new();
        for segment in e.path().iter() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => at = pointer(&at, index),
                serde_path_to_error::Segment::Map { key } => at = pointer(&at, key),
                // Externally tagged enums (canary steps) are keyed by their variant's name.
                serde_path_to_error::Segment::Enum { variant } => at = pointer(&at, variant),
                serde_path_to_error::Segment::Unknown => {}
            }
        }
        let inner = e.into_inner().to_string();
        match split_nested_error(&inner) {
            Some((deeper, message)) => E::custom(nested_error(&format!("{at}{deeper}"), message)),
            None if at.is_empty() => E::custom(inner),
            None => E::custom(nested_error(&at, inner)),
        }
    })
}

/// The error for a tag naming no variant.
pub(crate) fn unknown<E: Error>(tag: &str, name: &str, expected: &[&str]) -> E {
    E::custom(nested_error(
        &pointer("", tag),
        format_args!(
            "unknown variant `{name}`, expected one of {}",
            expected.join(", ")
        ),
    ))
}
