//! Reading Postgres enum labels back into domain enums.

use crate::StoreError;

/// Finds the variant whose label is `label`.
pub(crate) fn decode<T: Copy>(
    label: &str,
    all: &[T],
    as_str: fn(T) -> &'static str,
) -> Result<T, StoreError> {
    all.iter()
        .copied()
        .find(|v| as_str(*v) == label)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown enum label {label:?}")))
}
